"""tzl-pick's default keeps the number of particles the model's pi expects; every maximum is one
setting away and is what tzl-evaluate reads from a pick run's directory."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import pick_config
from topaz_lightning.errors import ConfigError


def _dataset(root: Path, pi: float | None, size: int = 96) -> Path:
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.io.micrographs import write_micrograph
    from topaz_lightning.models import Conv31, save_model

    rng = np.random.default_rng(1)
    ys, xs = np.mgrid[:size, :size]
    for k, shape in enumerate([(size, size), (size, size // 2)]):
        image = rng.gamma(4.0, 1.0, size=(size, size))
        for x, y in rng.uniform(8, size - 8, size=(10, 2)):
            image += 6 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 8.0)
        write_micrograph(
            root / "mics" / f"m{k}.mrc", image[: shape[0], : shape[1]].astype(np.float32)
        )
    torch.manual_seed(0)
    geometry = RunGeometry(
        downsample=1.0,
        nms_radius_px_model=3.0,
        label_radius_px_model=2.0,
        normalize="none",
        pi=pi,
        particle_radius_px=5.0,
    )
    save_model(root / "model.pt", Conv31(widths=(2, 3, 4)), extra={"geometry": geometry.to_dict()})
    return root


def _pick(root: Path, out: Path, *extra: str):
    from topaz_lightning.pick import pick

    settings = ("num_workers=0", "border_bands=false", *extra)
    return pick(pick_config(root / "model.pt", root / "mics", out, *settings))


def test_default_keeps_the_expected_count_per_micrograph(tmp_path, caplog):
    from topaz_lightning.data.prior import expected_particles_per_micrograph

    root = _dataset(tmp_path, pi=0.02)
    with caplog.at_level(logging.INFO, logger="topaz_lightning"):
        _, objects = _pick(root, tmp_path / "out")
    counts = objects["picks"]["micrograph"].value_counts().to_dict()
    # pi x model pixels / disk area (13 px at r = 2): 0.02 * 96 * 96 / 13 = 14.2, half for m1
    expected = {
        "m0": expected_particles_per_micrograph(0.02, (96, 96), 2.0),
        "m1": expected_particles_per_micrograph(0.02, (96, 48), 2.0),
    }
    assert counts == {n: round(e) for n, e in expected.items()}
    assert counts["m0"] == 14 and counts["m1"] == 7
    assert "the model's pi expects" in caplog.text
    # every maximum is one setting away, and it re-extracts from the stored maxima
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="topaz_lightning"):
        _, everything = _pick(root, tmp_path / "out", "particles_per_micrograph=all")
    assert "no scoring" in caplog.text
    assert len(everything["picks"]) > 3 * len(objects["picks"])
    assert "more than twice" in caplog.text  # far more picks than expected: warned
    # the default picks are the best of every maximum
    best = everything["picks"].groupby("micrograph").head(14)
    assert set(objects["picks"]["score"]) <= set(best["score"])


def test_a_threshold_keeps_everything_above_it_and_expected_needs_a_prior(tmp_path):
    root = _dataset(tmp_path, pi=None)
    _, objects = _pick(root, tmp_path / "out")  # no prior: every maximum, with a warning
    scores = objects["picks"]["score"].to_numpy()
    threshold = float(np.median(scores))
    _, above = _pick(root, tmp_path / "out", f"threshold={threshold}")
    assert len(above["picks"]) == int((scores >= threshold).sum())
    with pytest.raises(ConfigError, match="particles_per_micrograph"):
        _pick(root, tmp_path / "out", "particles_per_micrograph=expected")


def test_evaluate_reads_every_maximum_of_a_pick_run(tmp_path):
    from topaz_lightning.cli.evaluate import _read
    from topaz_lightning.picking.outputs import pick_run_parts

    root = _dataset(tmp_path, pi=0.02)
    _, objects = _pick(root, tmp_path / "out")
    parts = pick_run_parts(tmp_path / "out")
    assert parts == tmp_path / "out" / "picks_by_micrograph"
    table = _read(tmp_path / "out", None, "picks")
    assert len(table) > len(objects["picks"])
    assert math.isclose(table["score"].max(), objects["picks"]["score"].max())
    assert pick_run_parts(root / "mics") is None  # a plain directory is read as coordinates


def test_box_size_from_the_model_and_relion_suffix(tmp_path):
    from topaz_lightning.io.coordinates import read_coordinates

    root = _dataset(tmp_path, pi=0.02)
    _pick(root, tmp_path / "out", "output=boxes/", "per_micrograph=true", "format=box")
    lines = (tmp_path / "out" / "boxes" / "m0.box").read_text().split("\n")
    assert lines[0].split()[2:4] == ["10", "10"]  # box = the particle diameter, 2 x 5 px
    _pick(
        root,
        tmp_path / "out",
        "output=star/",
        "per_micrograph=true",
        "format=star",
        "suffix=autopick",
    )
    files = sorted(p.name for p in (tmp_path / "out" / "star").iterdir())
    assert files == ["m0_autopick.star", "m1_autopick.star"]
    table = read_coordinates(tmp_path / "out" / "star" / "m0_autopick.star")
    assert len(table) == 14
    with pytest.raises(ConfigError, match="suffix"):
        _pick(
            root,
            tmp_path / "out",
            "output=s2/",
            "per_micrograph=true",
            "format=star",
            "suffix=../x",
        )


def test_pick_writes_the_browser_page_unless_asked_not_to(tmp_path):
    root = _dataset(tmp_path, pi=0.02)
    _pick(root, tmp_path / "out")
    page = (tmp_path / "out" / "picks.html").read_text(encoding="utf-8")
    assert "m0" in page and "m1" in page and "<script" in page
    _pick(root, tmp_path / "quiet", "browser=false")
    assert not (tmp_path / "quiet" / "picks.html").exists()
