"""tzl-pick's predict loop: same picks as the in-memory reference, defaults from model.pt, continue, skip-and-report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import compose_config
from topaz_lightning.errors import ConfigError, InputError, PartialFailureError

NAMES = ["m0", "m1", "m2", "m3"]


def _micrograph(seed: int, shape=(72, 80)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.gamma(4.0, 1.0 + 0.3 * seed, size=shape)
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    for x, y in rng.uniform(8, min(shape) - 8, size=(5, 2)):
        image += 6 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 18.0)
    return image.astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.io.micrographs import write_micrograph
    from topaz_lightning.models import Conv31, save_model

    root = tmp_path_factory.mktemp("pick_predict")
    for k, name in enumerate(NAMES):
        write_micrograph(root / "mics" / f"{name}.mrc", _micrograph(k))
    torch.manual_seed(0)
    net = Conv31(widths=(2, 3, 4))
    geometry = RunGeometry(downsample=2.0, nms_radius_px_model=4.0, normalize="gmm")
    extra = {"preprocess": {"downsample": 2.0, "normalize": "gmm"}, "geometry": geometry.to_dict()}
    save_model(root / "model.pt", net, extra=extra)
    # the same model as trained before the run geometry was stored
    save_model(root / "old_model.pt", net, extra={"preprocess": extra["preprocess"]})
    return root


def _cfg(data: Path, out: str, *overrides: str, model: str = "model.pt"):
    return compose_config(
        "pick",
        [
            f"model_path={data / model}",
            f"micrographs={data / 'mics'}",
            f"output_dir={data / out}",
            "progress=false",
            "device=cpu",
            "num_workers=0",
            "scoring=dense",  # these tests compare with the dense in-memory reference
            *overrides,
        ],
    )


def _pick(data: Path, out: str, *overrides: str, model: str = "model.pt") -> pd.DataFrame:
    from topaz_lightning.cli.pick import run

    return run(_cfg(data, out, *overrides, model=model))


def _reference(data: Path, radius: float = 4.0, k: int | None = None) -> pd.DataFrame:
    """The picks of the earlier implementation: all micrographs in memory, one GMM fit."""
    from topaz_lightning.io.micrographs import read_micrograph
    from topaz_lightning.models import load_model
    from topaz_lightning.picking import pick_micrographs
    from topaz_lightning.preprocess import preprocess_images

    net, _ = load_model(data / "model.pt")
    raw = {n: read_micrograph(data / "mics" / f"{n}.mrc") for n in NAMES}
    images = preprocess_images(raw, downsample=2.0, normalize="gmm", seed=0)
    return pick_micrographs(net, images, radius, max_picks=k, downsample=2.0)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False
    )


def test_picks_equal_the_in_memory_reference_with_radius_from_model(data):
    picks = _pick(data, "ref", "particles_per_micrograph=6")
    _same(picks, _reference(data, k=6))
    assert sorted(picks["micrograph"].unique()) == NAMES
    # the normalization record says which fit was used, over which micrographs
    record = json.loads((data / "ref" / "normalization.json").read_text())
    assert record["normalize_fit"] == "run" and sorted(record["fit"]["names"]) == NAMES
    assert len(record["fit"]["alpha"]) == len(NAMES)
    # every micrograph's part is there, and the combined file holds them all
    assert sorted(p.stem for p in (data / "ref" / "picks_by_micrograph").glob("*.tsv")) == NAMES
    written = pd.read_csv(data / "ref" / "picks.tsv", sep="\t")
    assert len(written) == len(picks)


def test_picks_do_not_depend_on_batch_workers_or_chunks(data):
    base = _pick(data, "b1")
    _same(base, _reference(data))
    other = _pick(data, "b2", "batch_size=3", "num_workers=2", "tile_size=16")
    _same(base, other)


def test_radius_keys_and_model_without_geometry(data):
    base = _pick(data, "r_model", "particles_per_micrograph=5")
    # the same radius in micrograph pixels (x2), or given for a model without geometry
    _same(base, _pick(data, "r_px", "particles_per_micrograph=5", "nms_radius_px=8"))
    _same(
        base,
        _pick(
            data,
            "r_old",
            "particles_per_micrograph=5",
            "nms_radius_px_model=4",
            model="old_model.pt",
        ),
    )
    with pytest.raises(ConfigError, match="nms_radius_px_model"):
        _pick(data, "r_none", model="old_model.pt")
    with pytest.raises(ConfigError, match="once"):
        _pick(data, "r_two", "nms_radius_px_model=4", "nms_radius_px=8")
    wider = _pick(data, "r_wide", "nms_radius_px_model=9")
    assert len(wider) < len(_pick(data, "r_all"))


def test_training_normalization_fit(data, tmp_path):
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.models import load_model, save_model
    from topaz_lightning.preprocess import fit_gmm

    net, extra = load_model(data / "model.pt")
    with pytest.raises(ConfigError, match="normalize_fit"):
        _pick(data, "t_missing", "normalize_fit=training")
    from topaz_lightning.io.micrographs import read_micrograph
    from topaz_lightning.preprocess import downsample

    small = {n: downsample(read_micrograph(data / "mics" / f"{n}.mrc"), 2.0) for n in NAMES}
    fit = fit_gmm(small)
    extra = {**extra, "normalize_fit": fit.as_dict(), "geometry": RunGeometry(
        downsample=2.0, nms_radius_px_model=4.0).to_dict()}  # fmt: skip
    model = tmp_path / "with_fit.pt"
    save_model(model, net, extra=extra)
    picks = _pick(data, "t_fit", f"model_path={model}", "normalize_fit=training")
    assert len(picks) > 0
    record = json.loads((data / "t_fit" / "normalization.json").read_text())
    assert record["normalize_fit"] == "training"
    # a micrograph's picks do not depend on which others are picked with it
    alone = _pick(data, "t_alone", f"model_path={model}", "normalize_fit=training", "subset=[m2]")
    _same(alone, picks[picks["micrograph"] == "m2"])


def test_fit_scale_recovers_a_known_scale():
    from topaz_lightning.picking.normalization import fit_scale

    rng = np.random.default_rng(1)
    z = rng.random(200_000) < 0.3
    y = np.where(z, rng.normal(2.0, 0.5, z.size), rng.normal(-1.0, 1.0, z.size))
    alpha = fit_scale(3.5 * y, 0.3, [-1.0, 2.0], [1.0, 0.5])
    assert alpha == pytest.approx(3.5, rel=0.01)


def test_rerun_continues_and_other_commands_are_refused(data, tmp_path):
    from topaz_lightning.io.coordinates import read_coordinates

    out = data / "cont"
    first = _pick(
        data, "cont", "threshold=-5", "per_micrograph=true", "format=star", "output=stars"
    )
    parts = out / "picks_by_micrograph"
    stars = sorted(p.name for p in (out / "stars").iterdir())
    reference = read_coordinates(out / "stars")
    # an interrupted run: two micrographs not done yet, no combined output
    for name in ("m1", "m3"):
        (parts / f"{name}.tsv").unlink()
        (out / "stars" / f"{name}.star").unlink()
    stamp = (parts / "m0.tsv").stat().st_mtime_ns
    again = _pick(
        data, "cont", "threshold=-5", "per_micrograph=true", "format=star", "output=stars"
    )
    _same(again, first)
    assert (parts / "m0.tsv").stat().st_mtime_ns == stamp  # done micrographs are not redone
    # (STAR files carry their writing time: compare their tables)
    pd.testing.assert_frame_equal(read_coordinates(out / "stars"), reference)
    # another threshold: re-extracted from the stored maxima (tests/test_pick_jobs.py); another
    # pick-deciding key into the same directory: refused before any work, naming it
    with pytest.raises(InputError, match="changed: nms_radius_px_model"):
        _pick(data, "cont", "nms_radius_px_model=7", "per_micrograph=true", "format=star",
              "output=stars")  # fmt: skip
    # starting over with fewer micrographs removes the old per-micrograph outputs
    _pick(data, "cont", "threshold=-5", "per_micrograph=true", "format=star", "output=stars",
          "subset=[m0]", "overwrite=true")  # fmt: skip
    assert stars == [f"{n}.star" for n in NAMES]
    assert sorted(p.name for p in (out / "stars").iterdir()) == ["m0.star"]
    assert sorted(p.name for p in parts.glob("*.tsv")) == ["m0.tsv"]


def test_output_is_checked_before_any_scoring(data, tmp_path):
    with pytest.raises(ConfigError, match="box_size"):
        _pick(data, "chk1", "output=picks.box", "per_micrograph=true", "format=box")
    assert not (data / "chk1" / "picks_by_micrograph").exists()
    with pytest.raises(ConfigError, match="per_micrograph"):
        _pick(data, "chk2", "output=picks.box", "box_size=10")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="cannot write"):
        _pick(data, "chk3", f"output={blocker / 'sub' / 'picks.tsv'}")
    with pytest.raises(InputError, match="format"):
        _pick(data, "chk4", "output=picks.xyz")
    for name in ("chk1", "chk2", "chk3", "chk4"):
        assert not (data / name / "picks_by_micrograph").exists()


def test_corrupt_micrograph_is_skipped_and_reported(data, tmp_path):
    import shutil

    mics = tmp_path / "mics"
    shutil.copytree(data / "mics", mics)
    (mics / "bad.mrc").write_bytes(b"not an MRC file at all" * 10)
    base = [f"micrographs={mics}", "threshold=-5"]
    with pytest.raises(PartialFailureError) as err:
        _pick(data, "bad", *base)
    assert [name for name, _ in err.value.failures] == ["bad"]
    out = data / "bad"
    failures = (out / "failures.tsv").read_text().splitlines()
    assert failures[0] == "name\treason" and failures[1].startswith("bad\t")
    written = pd.read_csv(out / "picks.tsv", sep="\t")
    assert sorted(written["image_name"].unique()) == NAMES
    # the good micrographs give the picks they give without the bad one
    # (these micrographs are smaller than the GMM sample: every pixel is sampled either way)
    clean = _pick(data, "clean", "threshold=-5")
    good = pd.read_csv(data / "clean" / "picks.tsv", sep="\t")
    assert len(clean) == len(written)
    pd.testing.assert_frame_equal(written, good)
    # strict: the first bad file stops the run
    with pytest.raises(InputError):
        _pick(data, "bad_strict", *base, "strict=true")
    # a rerun retries the bad one (still bad) and keeps the rest
    with pytest.raises(PartialFailureError):
        _pick(data, "bad", *base)
    pd.testing.assert_frame_equal(pd.read_csv(out / "picks.tsv", sep="\t"), written)


def test_top_k_is_taken_after_the_band_mask(monkeypatch):
    """particles_per_micrograph=k gives k picks outside the masked bands, not k minus the
    masked ones (the mask used to be applied after the top k)."""
    from topaz_lightning.picking import predict

    rng = np.random.default_rng(0)
    image = rng.normal(size=(96, 96)).astype(np.float32)
    image[:12] = image[12]  # a striped band along the top edge: rows repeat their neighbour
    score = np.full((96, 96), -10.0, dtype=np.float32)
    peaks = [(5, 20, 9.0), (6, 60, 8.0), (40, 30, 5.0), (60, 70, 4.0), (80, 20, 3.0)]
    for row, col, value in peaks:
        score[row, col] = value
    monkeypatch.setattr(predict, "score_micrograph", lambda *args, **kwargs: score)

    def pick(bands: bool) -> pd.DataFrame:
        settings = predict.PickSettings(
            nms_radius_px_model=4.0, max_picks=3, border_bands=bands, border_padding_px_model=2.0
        )
        return predict.pick_micrograph(None, image, settings, name="m").picks

    masked = pick(True)
    assert masked["score"].tolist() == [5.0, 4.0, 3.0]
    assert (masked["y"] > 12).all()
    assert pick(False)["score"].tolist() == [9.0, 8.0, 5.0]


def test_strided_picks_do_not_depend_on_batch_workers_or_tiles(data):
    base = _pick(data, "s1", "scoring=strided")
    other = _pick(data, "s2", "scoring=strided", "batch_size=3", "num_workers=2", "tile_size=16")
    pd.testing.assert_frame_equal(base, other)
