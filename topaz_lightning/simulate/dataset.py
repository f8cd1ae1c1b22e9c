"""Write a simulated dataset: MRC micrographs, complete truth, split, labeled subsets, metadata."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from topaz_lightning.errors import ConfigError, OutputExistsError
from topaz_lightning.geometry import disk_area
from topaz_lightning.simulate.micrograph import (
    SimulatedMicrograph,
    make_molecule,
    simulate_micrograph,
)
from topaz_lightning.simulate.settings import SimulationSettings, get_preset


def resolve_settings(
    preset: str | SimulationSettings | dict, **overrides: Any
) -> SimulationSettings:
    """Settings from a preset name, a ``SimulationSettings`` or a dict of settings, plus overrides."""
    if isinstance(preset, SimulationSettings):
        return preset.replace(**overrides) if overrides else preset
    if isinstance(preset, dict):
        return SimulationSettings().replace(**{**preset, **overrides})
    return get_preset(str(preset), **overrides)


def micrograph_seeds(
    seed: int, count: int
) -> tuple[np.random.SeedSequence, list[np.random.SeedSequence]]:
    """The molecule's seed and one independent seed per micrograph, all derived from ``seed``."""
    root = np.random.SeedSequence(int(seed))
    molecule_seed, *per_micrograph = root.spawn(count + 1)
    return molecule_seed, per_micrograph


def simulate_micrographs(
    settings: SimulationSettings,
    seed: int = 0,
    num_workers: int = 1,
    indices: Iterable[int] | None = None,
) -> list[SimulatedMicrograph]:
    """Simulate the dataset's micrographs in memory (all, or those at ``indices``).

    Each micrograph has its own seed derived from ``seed``, so the result is the same for any
    ``num_workers``.
    """
    molecule_seed, seeds = micrograph_seeds(seed, settings.num_micrographs)
    molecule = make_molecule(settings, np.random.default_rng(molecule_seed))
    chosen = list(range(settings.num_micrographs)) if indices is None else list(indices)
    if num_workers <= 1 or len(chosen) <= 1:
        return [simulate_micrograph(settings, molecule, seeds[i]) for i in chosen]
    with ProcessPoolExecutor(max_workers=int(num_workers)) as pool:
        futures = [pool.submit(simulate_micrograph, settings, molecule, seeds[i]) for i in chosen]
        return [f.result() for f in futures]


def _labeled_writer(settings: SimulationSettings):
    """(extension, write(df, path_without_extension)) for the labeled subsets' format."""
    from topaz_lightning.errors import InputError
    from topaz_lightning.io.coordinates import (
        EXTENSIONS,
        ONE_MICROGRAPH_PER_FILE,
        canonical_format,
        write_coordinates,
    )

    try:
        fmt = canonical_format(settings.coordinate_format)
    except InputError as err:
        raise ConfigError("coordinate_format", str(err)) from None
    # one-micrograph-per-file formats become a directory of files per subset
    per_micrograph = fmt in ONE_MICROGRAPH_PER_FILE
    ext = "" if per_micrograph else EXTENSIONS[fmt]
    box_size = int(2 * round(1.5 * settings.particle_radius_px))

    def write(df: pd.DataFrame, path: Path) -> None:
        write_coordinates(df, path, fmt=fmt, per_micrograph=per_micrograph, box_size=box_size)

    return ext, write


def _write_mrc(path: Path, image: np.ndarray, pixel_size_a: float) -> None:
    from topaz_lightning.io.micrographs import write_micrograph

    write_micrograph(path, image, pixel_size_a=pixel_size_a)


def simulate_dataset(
    out_dir: str | os.PathLike,
    preset: str | SimulationSettings | dict = "tiny",
    seed: int = 0,
    overwrite: bool = False,
    num_workers: int = 1,
    **overrides: Any,
) -> Path:
    """Simulate a dataset into ``out_dir`` and return its path.

    Layout: ``micrographs/<name>.mrc`` (pixel size in the header), ``particles.tsv`` (complete
    truth, Topaz TSV), ``contaminants.tsv`` (the hard negatives, for analysis), ``train.txt`` and
    ``test.txt`` (micrograph names), ``labeled/particles_<N>.<ext>`` (seeded nested subsets of the
    training micrographs' particles, N in ``labeled_sizes`` below the total, plus ``_all``; in
    ``coordinate_format``, a directory of per-micrograph files for box/cryoppp) and
    ``dataset.yaml`` (settings and what training and evaluation need). The directory is built
    beside ``out_dir`` and renamed into place; an existing one is refused unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(out_dir)
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError("num_workers", f"must be an integer >= 1; got {num_workers!r}")
    settings = resolve_settings(preset, **overrides)
    ext, write_labeled = _labeled_writer(settings)

    micrographs = simulate_micrographs(settings, seed, num_workers)
    digits = max(3, len(str(settings.num_micrographs - 1)))
    names = [f"{settings.name}_{i:0{digits}d}" for i in range(settings.num_micrographs)]
    # the split is seeded too: the last num_test of a seeded permutation are held out
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 1])).permutation(len(names))
    test_names = sorted(names[i] for i in order[len(names) - settings.num_test :])
    train_names = [n for n in names if n not in set(test_names)]

    truth = pd.concat(
        [
            pd.DataFrame({"micrograph": name, "x": m.particles_xy[:, 0], "y": m.particles_xy[:, 1]})
            for name, m in zip(names, micrographs, strict=True)
        ],
        ignore_index=True,
    )
    contaminants = pd.DataFrame(
        [
            dict(micrograph=name, **c)
            for name, m in zip(names, micrographs, strict=True)
            for c in m.contaminants
        ],
        columns=["micrograph", "kind", "x", "y", "radius_px"],
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    from topaz_lightning.utils.atomic import make_temp_dir

    # umask permissions, not mkdtemp's 0700: the dataset is renamed into place as it is
    tmp = make_temp_dir(out_dir)
    try:
        (tmp / "micrographs").mkdir()
        for name, m in zip(names, micrographs, strict=True):
            _write_mrc(tmp / "micrographs" / f"{name}.mrc", m.image, settings.pixel_size_a)
        from topaz_lightning.io.coordinates import write_coordinates

        write_coordinates(truth, tmp / "particles.tsv", fmt="tsv")
        contaminants.to_csv(tmp / "contaminants.tsv", sep="\t", index=False, float_format="%.2f")
        (tmp / "train.txt").write_text("".join(f"{n}\n" for n in train_names))
        (tmp / "test.txt").write_text("".join(f"{n}\n" for n in test_names))

        train_truth = truth[truth["micrograph"].isin(train_names)].reset_index(drop=True)
        subset_order = np.random.default_rng(np.random.SeedSequence([int(seed), 2])).permutation(
            len(train_truth)
        )
        (tmp / "labeled").mkdir()
        labeled: dict[str, str] = {}
        for size in sorted(set(settings.labeled_sizes)):
            if size >= len(train_truth):
                continue
            # prefixes of one permutation: the 10 are among the 100, which are among the 1000
            subset = train_truth.iloc[np.sort(subset_order[:size])]
            rel = f"labeled/particles_{size}{ext}"
            write_labeled(subset, tmp / rel)
            labeled[str(size)] = rel
        rel = f"labeled/particles_all{ext}"
        write_labeled(train_truth, tmp / rel)
        labeled["all"] = rel

        height, width = settings.shape
        counts = truth.groupby("micrograph").size().reindex(names, fill_value=0)
        positive_fraction = (
            float(counts.mean()) * disk_area(settings.label_radius_px) / (height * width)
        )
        metadata = dict(
            preset=settings.name,
            seed=int(seed),
            num_micrographs=settings.num_micrographs,
            num_train=len(train_names),
            num_test=len(test_names),
            shape=[height, width],
            pixel_size_a=settings.pixel_size_a,
            particle_kind=settings.particle_kind,
            particle_radius_px=round(settings.particle_radius_px, 3),
            particles_per_micrograph=float(settings.particles_per_micrograph),
            mean_particles_per_micrograph=round(float(counts.mean()), 2),
            num_particles=len(truth),
            num_train_particles=len(train_truth),
            label_radius_px=settings.label_radius_px,
            positive_fraction=round(positive_fraction, 5),
            suggested_pi=round(
                settings.suggested_pi if settings.suggested_pi is not None else positive_fraction, 5
            ),
            nms_radius_px=settings.nms_radius_px,
            match_distance_px=settings.match_distance_px,
            micrograph_dir="micrographs",
            truth="particles.tsv",
            contaminants="contaminants.tsv",
            train="train.txt",
            test="test.txt",
            labeled=labeled,
            settings=settings.to_dict(),
            micrographs={name: m.meta for name, m in zip(names, micrographs, strict=True)},
        )
        (tmp / "dataset.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
        _move_into_place(tmp, out_dir, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not overwrite:
            raise OutputExistsError(out_dir)
        trash = Path(
            tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent)
        )
        os.replace(out_dir, trash / out_dir.name)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            os.replace(trash / out_dir.name, out_dir)  # keep the earlier dataset
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def load_dataset_info(path: str | os.PathLike) -> dict[str, Any]:
    """Read a simulated dataset's ``dataset.yaml`` (path to the file or its directory)."""
    from topaz_lightning.errors import InputError

    path = Path(path)
    if path.is_dir():
        path = path / "dataset.yaml"
    if not path.exists():
        raise InputError("no dataset.yaml here; is this a simulated dataset?", path=path)
    try:
        info = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"not valid YAML: {err}", path=path) from None
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror})", path=path) from None
    if not isinstance(info, dict) or "shape" not in info:
        raise InputError("expected a mapping with the dataset's metadata (shape, ...)", path=path)
    return info
