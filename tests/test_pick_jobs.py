"""tzl-pick's job service: overwrite, changed keys, paths and links, unsafe names, GMM with a bad
file, strict JSON after continuing, and re-thresholding from the stored maxima without scoring."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import REPO, compose_config
from tests.helpers import pick_overrides
from topaz_lightning.errors import InputError, PartialFailureError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _dataset(root: Path, count: int = 4, size: int = 64) -> Path:
    """``count`` gamma-noise micrographs with bright blobs and a small Conv31 model (gmm, x2)."""
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.io.micrographs import write_micrograph
    from topaz_lightning.models import Conv31, save_model

    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:size, :size]
    for k in range(count):
        image = rng.gamma(4.0, 1.0, size=(size, size))
        for x, y in rng.uniform(8, size - 8, size=(6, 2)):
            image += 6 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 8.0)
        write_micrograph(root / "mics" / f"mic{k:03d}.mrc", image.astype(np.float32))
    torch.manual_seed(0)
    geometry = RunGeometry(downsample=2.0, nms_radius_px_model=3.0, normalize="gmm")
    extra = {"preprocess": {"downsample": 2.0, "normalize": "gmm"}, "geometry": geometry.to_dict()}
    save_model(root / "model.pt", Conv31(widths=(2, 3, 4)), extra=extra)
    return root


@pytest.fixture
def data(tmp_path) -> Path:
    return _dataset(tmp_path)


def _args(root: Path, out: Path, *extra: str, mics: Path | None = None) -> list[str]:
    return pick_overrides(root / "model.pt", mics or root / "mics", out, "num_workers=0", *extra)


def _pick(root: Path, out: Path, *extra: str, mics: Path | None = None):
    from topaz_lightning.pick import pick

    return pick(compose_config("pick", _args(root, out, *extra, mics=mics)))


def _tzl_pick(root: Path, out: Path, *extra: str, mics: Path | None = None):
    command = [
        sys.executable,
        "-m",
        "topaz_lightning.cli.pick",
        *_args(root, out, *extra, mics=mics),
    ]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# overwrite and changed settings


def test_overwrite_of_per_micrograph_box_output_keeps_the_new_outputs(data):
    """Issue 18: the second run with overwrite=true crashed (FileNotFoundError), pm/ left empty."""
    out = data / "out"
    box = ("per_micrograph=true", "output=pm/", "format=box", "box_size=20")
    first = _tzl_pick(data, out, *box)
    assert first.returncode == 0, first.stderr
    before = _files(out / "pm")
    assert sorted(before) == [f"mic{k:03d}.box" for k in range(4)]

    again = _tzl_pick(data, out, *box, "overwrite=true")
    assert again.returncode == 0, again.stderr
    assert _files(out / "pm") == before

    # ... and with other micrographs: only theirs remain (the others' files were this job's)
    (data / "two.txt").write_text("mic001\nmic003\n")
    _pick(data, out, *box, "overwrite=true", f"subset={data / 'two.txt'}")
    # (their GMM fit is over these two now, so their picks may differ from before)
    assert sorted(_files(out / "pm")) == ["mic001.box", "mic003.box"]
    # a file that is not this job's is never removed
    (out / "pm" / "notes.txt").write_text("mine")
    _pick(data, out, *box, "overwrite=true")
    assert (out / "pm" / "notes.txt").read_text() == "mine"


def test_a_changed_pick_deciding_key_is_named(data):
    out = data / "out"
    _pick(data, out, "nms_radius_px_model=3")
    with pytest.raises(InputError, match=r"changed: nms_radius_px_model 3\.0 -> 5\.0"):
        _pick(data, out, "nms_radius_px_model=5")
    proc = _tzl_pick(data, out, "nms_radius_px_model=5", "tta=8")
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "nms_radius_px_model" in error[0] and "tta" in error[0]


def test_job_record_and_normalization_are_strict_json_after_continuing(data):
    out = data / "out"
    _pick(data, out, "threshold=0")
    first = json.loads((out / "normalization.json").read_text())
    # an interrupted run: one part missing, a temporary left behind
    (out / "picks_by_micrograph" / "mic002.tsv").unlink()
    (out / "picks_by_micrograph" / ".mic002.tsv.abcd1234.tmp.tsv").write_text("half")
    metrics, _ = _pick(data, out, "threshold=0")
    assert metrics["pick/scored"] == 1
    assert not list((out / "picks_by_micrograph").glob(".*.tmp*"))

    def strict(path: Path):
        return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path}: {c}"))

    norm = strict(out / "normalization.json")
    strict(out / "picks_by_micrograph" / "settings.json")
    assert norm == first
    assert norm["fit"]["n_iter"] > 0 and math.isfinite(norm["fit"]["log_likelihood"])


# ------------------------------------------------------------------------------------------------
# paths, links and names


def test_symlinked_directory_below_output_dir_is_refused_naming_the_link(data):
    out = data / "out"
    out.mkdir()
    (data / "elsewhere").mkdir()
    os.symlink("../elsewhere", out / "picks_by_micrograph")
    proc = _tzl_pick(data, out)
    assert proc.returncode == 2, proc.stderr
    assert "picks_by_micrograph" in proc.stderr and "symbolic link" in proc.stderr
    assert list((data / "elsewhere").iterdir()) == []


@pytest.mark.parametrize("key", ["output", "picks_dir", "score_map_dir"])
def test_relative_path_climbing_out_of_output_dir_is_refused(data, key):
    value = "../escaped.tsv" if key == "output" else "../escaped"
    extra = [f"{key}={value}", "save_score_maps=true"]
    with pytest.raises(InputError, match=key):
        _pick(data, data / "out", *extra)
    assert not (data / "escaped").exists() and not (data / "escaped.tsv").exists()


def test_absolute_path_outside_output_dir_is_allowed_and_logged(data, caplog):
    target = data / "elsewhere" / "picks.tsv"
    with caplog.at_level(logging.INFO, logger="topaz_lightning"):
        _pick(data, data / "out", f"output={target}", "threshold=0")
    assert target.is_file()
    assert "outside output_dir" in caplog.text


def test_long_or_control_character_names_are_skipped_and_reported(data):
    mics = data / "mics"
    long_name = "m" * 240
    (mics / "mic000.mrc").rename(mics / f"{long_name}.mrc")
    (mics / "mic001.mrc").rename(mics / "tab\there.mrc")
    out = data / "out"
    proc = _tzl_pick(data, out, "threshold=0", "per_micrograph=true", "output=pm", "format=star")
    assert proc.returncode == 3, proc.stderr
    report = (out / "failures.tsv").read_text().splitlines()
    assert len(report) == 3  # header + the two names
    assert "too long" in report[1] + report[2] and "control characters" in report[1] + report[2]
    assert sorted(p.name for p in (out / "pm").iterdir()) == ["mic002.star", "mic003.star"]
    # a rerun continues the same way (no crash on its own files)
    with pytest.raises(PartialFailureError, match="2 input"):
        _pick(data, out, "threshold=0", "per_micrograph=true", "output=pm", "format=star")


# ------------------------------------------------------------------------------------------------
# a skipped micrograph has no effect on the others


def test_a_corrupt_micrograph_does_not_change_the_gmm_fit_or_the_others_picks(tmp_path):
    good = _dataset(tmp_path / "good", count=5)
    with_bad = _dataset(tmp_path / "bad", count=5)
    path = with_bad / "mics" / "mic002.mrc"
    path.write_bytes(path.read_bytes()[:600])  # truncated
    (good / "mics" / "mic002.mrc").unlink()
    _, clean = _pick(good, tmp_path / "out_good", "threshold=-5")
    with pytest.raises(PartialFailureError, match="mic002"):
        _pick(with_bad, tmp_path / "out_bad", "threshold=-5")
    fit_good = json.loads((tmp_path / "out_good" / "normalization.json").read_text())["fit"]
    fit_bad = json.loads((tmp_path / "out_bad" / "normalization.json").read_text())["fit"]
    assert fit_bad == fit_good
    a = (tmp_path / "out_good" / "picks.tsv").read_bytes()
    b = (tmp_path / "out_bad" / "picks.tsv").read_bytes()
    assert a == b and len(clean["picks"]) > 0


# ------------------------------------------------------------------------------------------------
# re-thresholding from the stored maxima


def test_rerun_with_another_threshold_re_extracts_without_scoring(data, monkeypatch, caplog):
    import topaz_lightning.pick as task

    out = data / "out"
    metrics, _ = _pick(data, out)  # every maximum
    assert metrics["pick/scored"] == 4

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(task, "_score", no_scoring)
    changes = ("threshold=0.5", "particles_per_micrograph=3", "score=probability", "output=p.star")
    with caplog.at_level(logging.INFO, logger="topaz_lightning"):
        metrics, objects = _pick(data, out, *changes)
    assert "re-extracting from 4 stored micrograph(s) (no scoring)" in caplog.text
    assert metrics["pick/scored"] == 0
    monkeypatch.undo()
    # the very output a fresh run with these settings writes
    _pick(data, data / "fresh", *changes)

    def body(path: Path) -> list[str]:  # the header comment holds the time of writing
        return [line for line in path.read_text().splitlines() if not line.startswith("#")]

    assert body(out / "p.star") == body(data / "fresh" / "p.star")
    picks = objects["picks"]
    assert (picks.groupby("micrograph").size() <= 3).all() and (picks["score"] >= 0.5).all()
    # parts keep every maximum: more than the extracted picks
    from topaz_lightning.picking.predict import read_parts

    parts = read_parts(out / "picks_by_micrograph", [f"mic{k:03d}" for k in range(4)])
    assert len(parts) > len(picks)


def test_per_micrograph_re_extraction_drops_files_of_micrographs_without_picks(data):
    out = data / "out"
    _pick(data, out, "per_micrograph=true", "output=pm", "format=star")
    assert len(list((out / "pm").iterdir())) == 4
    _pick(data, out, "per_micrograph=true", "output=pm", "format=star", "threshold=1e6")
    assert list((out / "pm").iterdir()) == []


def test_coarse_to_fine_keeps_the_threshold_in_the_record(data):
    out = data / "out"
    _pick(data, out, "scoring=coarse_to_fine", "threshold=0")
    with pytest.raises(InputError, match="changed: threshold"):
        _pick(data, out, "scoring=coarse_to_fine", "threshold=1")


def test_extract_equals_scoring_with_the_threshold():
    from topaz_lightning.pick import extract
    from topaz_lightning.picking.pick import picks_from_score_map

    rng = np.random.default_rng(3)
    score_map = rng.normal(0, 2, (80, 90)).astype(np.float32)
    every = picks_from_score_map("m", score_map, 4.0)
    for threshold in (-1.0, 0.0, float(score_map.max())):
        expected = picks_from_score_map("m", score_map, 4.0, threshold=threshold)
        pd.testing.assert_frame_equal(extract(every, threshold, None), expected)
        pd.testing.assert_frame_equal(extract(every, threshold, 2), expected.head(2))


def test_which_scoring_modes_keep_every_maximum_in_the_parts():
    from topaz_lightning.picking.settings import threshold_free

    assert threshold_free("dense")
    assert not threshold_free("coarse_to_fine")
    # strided keeps every refined coarse maximum (thresholding afterwards keeps a superset of a
    # thresholded run's picks), so a new threshold re-extracts without scoring
    assert threshold_free("strided", "window")
    assert threshold_free("strided", "none") and threshold_free("strided", "centroid")
