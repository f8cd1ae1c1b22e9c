"""Where a tzl-pick run writes, which files are its job's, and how the output is assembled from parts.

:class:`PickOutputs` checks the configured paths once (no ``..`` out of the run directory, no
symlinked directory on a write path), knows this job's files (for ``overwrite=true``) and opens
the job record (``<picks_dir>/settings.json``) through :mod:`topaz_lightning.utils.jobs`.
:func:`extract` applies the threshold and top k to parts that keep every NMS maximum.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.utils import jobs
from topaz_lightning.utils.atomic import unwritable_ancestor

#: the job record of a pick run (in picks_dir)
STATE_FILE = "settings.json"
#: the run's output directory file that says how the micrographs were normalized
NORMALIZATION_FILE = "normalization.json"
_COMMAND = "tzl-pick"


def output_format(
    output: Path,
    fmt: str | None,
    per_micrograph: bool,
    box_size: float | None,
    num_micrographs: int,
) -> str:
    """The canonical coordinate format; refuse now what writing the output would refuse."""
    from topaz_lightning.io import coordinates as coords

    if fmt is None:
        if per_micrograph:
            raise InputError("writing one file per micrograph needs an explicit format=", output)
        fmt = coords._format_for_output(output)
    else:
        fmt = coords.canonical_format(str(fmt))
    if fmt == "box":
        try:
            ok = box_size is not None and float(box_size) > 0 and math.isfinite(float(box_size))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError("box_size", "EMAN .box output needs a positive box_size (pixels)")
    if fmt in coords.ONE_MICROGRAPH_PER_FILE and not per_micrograph and num_micrographs > 1:
        raise ConfigError(
            "per_micrograph",
            f"the {fmt} format holds one micrograph per file; use per_micrograph=true",
        )
    if per_micrograph and output.exists() and not output.is_dir():
        raise InputError("per-micrograph output must be a directory, found a file", output)
    if not per_micrograph and output.is_dir():
        raise InputError("output is a directory; expected a file path", output)
    # the nearest existing folder above the output must let us create files
    parent, problem = unwritable_ancestor(output if per_micrograph else output.parent)
    if problem:
        raise InputError(f"cannot write the output here: this path {problem}", parent)
    return fmt


class PickOutputs:
    """Where a pick run writes (checked paths) and which files are this job's.

    ``<picks_dir>/settings.json`` is the job record: the resolved settings, and the combined
    outputs and score maps it wrote, so that ``overwrite=true`` removes exactly those.
    """

    def __init__(
        self,
        run_dir: Path,
        output: str,
        picks_dir: str,
        fmt: str,
        names: list[str],
        per_micrograph: bool = False,
        score_map_dir: str = "score_maps",
        save_score_maps: bool = False,
        plot_score_maps: bool = False,
        suffix: str | None = None,
    ):
        from topaz_lightning.io.coordinates import check_suffix, format_extension

        self.run_dir = Path(run_dir)
        self.output = jobs.output_path(self.run_dir, output, "output")
        self.picks_dir = jobs.output_path(self.run_dir, picks_dir, "picks_dir")
        self.per_micrograph = bool(per_micrograph)
        #: what follows a micrograph name in a per-micrograph file name: [_<suffix>]<ext>
        self.suffix = check_suffix(suffix)[1:] or None
        self.extension = check_suffix(suffix) + format_extension(fmt)
        self.score_exts = [
            ext for ext, on in ((".mrc", save_score_maps), (".png", plot_score_maps)) if on
        ]
        self.score_dir = (
            jobs.output_path(self.run_dir, score_map_dir, "score_map_dir")
            if self.score_exts
            else None
        )
        self.names = names
        checks = [
            (self.picks_dir, "picks_dir", True),
            (self.output, "output", self.per_micrograph),
            (self.run_dir / NORMALIZATION_FILE, "output_dir", False),
        ]
        if self.score_dir is not None:
            checks.append((self.score_dir, "score_map_dir", True))
        for path, key, directory in checks:
            jobs.refuse_symlinked_dirs(self.run_dir, path, key, directory=directory)
        self.state = self.picks_dir / STATE_FILE

    # file names derived from micrograph names
    def suffixes(self) -> list[str]:
        from topaz_lightning.picking.predict import FAILED_SUFFIX, PART_SUFFIX

        out = [PART_SUFFIX, FAILED_SUFFIX, *self.score_exts]
        return out + ([self.extension] if self.per_micrograph else [])

    def check_name(self, name: str) -> None:
        """InputError if a file named after ``name`` cannot be written safely."""
        for suffix in self.suffixes():
            jobs.safe_file_name(name, suffix, where="micrograph name")

    def parts(self) -> set[str]:
        """Names of the micrographs with a part in picks_dir (any run's)."""
        from topaz_lightning.picking.predict import PART_SUFFIX

        if not self.picks_dir.is_dir():
            return set()
        return {p.name[: -len(PART_SUFFIX)] for p in self.picks_dir.glob(f"*{PART_SUFFIX}")}

    def done(self) -> set[str]:
        """Micrographs of this run whose part is on disk (complete: parts are written last)."""
        return self.parts() & set(self.names)

    def written(self) -> dict[str, Any]:
        """What this run writes besides its parts (kept in the job record)."""
        return {
            "outputs": [],
            "score_maps": None
            if self.score_dir is None
            else {"dir": str(self.score_dir.resolve()), "extensions": self.score_exts},
        }

    def owned(self, old: dict | None) -> list[Path]:
        """This job's files (now and by the earlier record ``old``), for ``overwrite=true``:
        parts, failure notes and temporaries in picks_dir, the per-micrograph and combined
        coordinate files and score maps of the micrographs picked now or before (never every file
        of a folder)."""
        from topaz_lightning.picking.predict import FAILED_SUFFIX, PART_SUFFIX

        old = old or {}
        names = sorted(self.parts() | set(self.names))
        files: list[Path] = [self.state]
        if self.picks_dir.is_dir():
            for pattern in (f"*{PART_SUFFIX}", f"*{FAILED_SUFFIX}"):
                files += self.picks_dir.glob(pattern)
            files += [
                self.picks_dir / e
                for e in os.listdir(self.picks_dir)
                if jobs.temporary_target(e) is not None
            ]
        outputs = [(self.output, self.per_micrograph, self.extension)]
        for entry in old.get("outputs", []) or []:
            try:
                outputs.append(
                    (Path(entry["path"]), bool(entry["per_micrograph"]), str(entry["extension"]))
                )
            except (KeyError, TypeError):
                continue
        for path, per_micrograph, ext in outputs:
            if per_micrograph:
                files += [path / f"{n}{ext}" for n in names if _plain_name(n)]
            elif path != self.output:
                files.append(path)  # an earlier combined output of this job
        score_maps = [(self.score_dir, self.score_exts)]
        recorded = old.get("score_maps")
        if isinstance(recorded, dict) and "dir" in recorded:
            score_maps.append((Path(recorded["dir"]), list(recorded.get("extensions", []))))
        for directory, exts in score_maps:
            if directory is not None:
                files += [directory / f"{n}{e}" for n in names if _plain_name(n) for e in exts]
        return files

    def open(self, record: dict, overwrite: bool) -> jobs.Job:
        """Decide (rank 0, before any work) whether this run continues, starts or starts over."""
        from topaz_lightning.io.coordinates import check_coordinate_output
        from topaz_lightning.utils.atomic import check_writable

        if overwrite:
            check_coordinate_output(self.output, True, per_micrograph=self.per_micrograph)
            if self.output.is_file():
                check_writable(self.output, overwrite=True)  # refuses a read-only one
        job = jobs.open_job(
            self.state,
            _COMMAND,
            record,
            overwrite=overwrite,
            data=self.written(),
            owned=self.owned,
            targets=self.owned(None) if not overwrite else (),
            save=False,
        )
        if job.continuing:
            # the same command: continue; its combined outputs are rebuilt from the parts
            job.data["outputs"] = list((job.previous or {}).get("outputs", []))
            jobs.remove_temporaries(self.picks_dir)
            if self.score_dir is not None:
                names = {f"{n}{e}" for n in self.names for e in self.score_exts}
                jobs.remove_temporaries(self.score_dir, names)
            if not self._recorded(job):
                check_coordinate_output(self.output, False, per_micrograph=self.per_micrograph)
        elif not overwrite:
            check_coordinate_output(self.output, False, per_micrograph=self.per_micrograph)
        self.picks_dir.mkdir(parents=True, exist_ok=True)
        job.save()
        return job

    def _recorded(self, job: jobs.Job) -> bool:
        return str(self.output.resolve()) in {
            o.get("path") for o in job.data.get("outputs", []) if isinstance(o, dict)
        }

    def remember_output(self, job: jobs.Job) -> None:
        """Record the combined output as this job's (a rerun may replace it)."""
        entry = {
            "path": str(self.output.resolve()),
            "per_micrograph": self.per_micrograph,
            "extension": self.extension,
        }
        others = [o for o in job.data.get("outputs", []) if o.get("path") != entry["path"]]
        job.update(outputs=[*others, entry])


def _plain_name(name: str) -> bool:
    try:
        jobs.safe_file_name(name)
    except InputError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# assembling the output


def extract(
    parts: pd.DataFrame, threshold: float, max_picks: int | Mapping[str, int] | None
) -> pd.DataFrame:
    """Picks of stored parts (every maximum, best first per micrograph) at ``threshold`` (logit,
    kept if ``>=``) and the best ``max_picks`` per micrograph (one number, or one per micrograph
    name): the very picks that scoring with that threshold and top k gives (NMS never lets a
    lower maximum suppress a higher one)."""
    picks = parts
    if threshold > -math.inf:
        picks = picks[picks["score"].to_numpy(np.float64) >= threshold]
    if isinstance(max_picks, Mapping):
        rank = picks.groupby("micrograph", sort=False).cumcount().to_numpy()
        limit = picks["micrograph"].map(max_picks).fillna(np.inf).to_numpy(np.float64)
        picks = picks[rank < limit]
    elif max_picks is not None:
        picks = picks.groupby("micrograph", sort=False, group_keys=False).head(int(max_picks))
    return picks.reset_index(drop=True)


def write_output(
    picks: pd.DataFrame, outputs: PickOutputs, fmt: str, good: list[str], box_size=None
) -> None:
    """Write the combined output (this job's to replace: decided by the job record)."""
    from topaz_lightning.io.coordinates import write_coordinates

    if outputs.per_micrograph and outputs.output.is_dir():
        # this job's file of a micrograph that now has no picks would otherwise stay behind
        with_picks = set(picks["micrograph"])
        for name in good:
            if name not in with_picks:
                (outputs.output / f"{name}{outputs.extension}").unlink(missing_ok=True)
    write_coordinates(
        picks,
        outputs.output,
        fmt=fmt,
        overwrite=True,  # decided by the job: a fresh output, or this job's own
        per_micrograph=outputs.per_micrograph,
        box_size=box_size,
        suffix=outputs.suffix,
    )


def pick_run_parts(path) -> Path | None:
    """A tzl-pick output directory -> its per-micrograph parts (every local maximum, full
    precision, micrograph frame), so its PR curve is complete whatever the run kept in its
    combined output (by default the expected number per micrograph); None for anything else."""
    from omegaconf import OmegaConf

    run = Path(path)
    if not run.is_dir():
        return None
    picks_dir = "picks_by_micrograph"
    stamp = run / "config.yaml"
    if stamp.is_file():
        try:
            picks_dir = str(OmegaConf.load(stamp).get("picks_dir") or picks_dir)
        except Exception:  # an unreadable stamp: the default place is still worth a look
            pass
    if Path(picks_dir).is_absolute() or ".." in Path(picks_dir).parts:
        return None  # a stamp is untrusted: never follow it out of the run directory
    parts = run / picks_dir
    return parts if (parts / STATE_FILE).is_file() else None
