"""STAR hand-off: full micrograph names (_rlnMicrographName) and RELION coordinate files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import starfile

from tests.helpers import admit_pixel_logit_net, blob_micrograph, pick_config
from topaz_lightning.errors import ConfigError
from topaz_lightning.io.coordinates import read_coordinates, write_coordinates
from topaz_lightning.io.formats.common import (
    MICROGRAPH_FILE_COLUMN,
    check_micrograph_dir,
    micrograph_references,
    with_micrograph_files,
)


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "micrograph": ["mic001", "mic001", "mic002"],
            "x": [10.5, 20.0, 30.25],
            "y": [5.0, 6.0, 7.0],
            "score": [1.5, -0.5, 0.25],
        }
    )


FILES = {"mic001": Path("/data/run/mic001.mrc"), "mic002": Path("/data/run/mic002.tiff")}


def test_references_are_file_names_with_extension_under_the_directory():
    assert micrograph_references(FILES) == {"mic001": "mic001.mrc", "mic002": "mic002.tiff"}
    got = micrograph_references(FILES, "MotionCorr/job002/Movies/")
    assert got == {
        "mic001": "MotionCorr/job002/Movies/mic001.mrc",
        "mic002": "MotionCorr/job002/Movies/mic002.tiff",
    }
    # a name without a file keeps its bare name; the original table is untouched
    df = _table()
    out = with_micrograph_files(df, {"mic001": FILES["mic001"]})
    assert list(out[MICROGRAPH_FILE_COLUMN]) == ["mic001.mrc", "mic001.mrc", "mic002"]
    assert MICROGRAPH_FILE_COLUMN not in df.columns


@pytest.mark.parametrize("bad", ["Motion Corr/job002", "a\nb", "/", 3])
def test_bad_micrograph_dir_names_the_key(bad):
    with pytest.raises(ConfigError, match="star_micrograph_dir"):
        check_micrograph_dir(bad)
    assert check_micrograph_dir(None) is None and check_micrograph_dir("") is None


@pytest.mark.parametrize("fmt", ["star3.0", "star3.1"])
def test_star_writes_full_names_and_reads_back_the_bare_names(tmp_path, fmt):
    df = with_micrograph_files(_table(), FILES, "MotionCorr/job002/Movies")
    path = write_coordinates(df, tmp_path / "picks.star", fmt=fmt)
    blocks = starfile.read(path, always_dict=True)
    particles = blocks["particles"] if fmt == "star3.1" else next(iter(blocks.values()))
    assert list(particles["rlnMicrographName"]) == [
        "MotionCorr/job002/Movies/mic001.mrc",
        "MotionCorr/job002/Movies/mic001.mrc",
        "MotionCorr/job002/Movies/mic002.tiff",
    ]
    back = read_coordinates(path)
    assert list(back["micrograph"]) == ["mic001", "mic001", "mic002"]
    pd.testing.assert_frame_equal(back, _table(), check_exact=False, atol=1e-6)


def test_other_formats_ignore_the_file_column(tmp_path):
    df = with_micrograph_files(_table(), FILES, "MotionCorr/job002/Movies")
    back = read_coordinates(write_coordinates(df, tmp_path / "picks.tsv"))
    assert list(back.columns) == ["micrograph", "x", "y", "score"]
    assert list(back["micrograph"]) == ["mic001", "mic001", "mic002"]


def test_old_star_files_with_bare_names_still_read(tmp_path):
    path = write_coordinates(_table(), tmp_path / "old.star")
    assert list(starfile.read(path)["particles"]["rlnMicrographName"])[0] == "mic001"
    assert list(read_coordinates(path)["micrograph"]) == ["mic001", "mic001", "mic002"]


def test_per_micrograph_star_files_are_relion_coordinate_files(tmp_path):
    """RELION's Extract reads the FIRST data block of a coordinate file: the coordinates must
    come first, with no optics block and no optics-group column (as AutoPick writes them)."""
    df = with_micrograph_files(_table(), FILES, "MotionCorr/job002/Movies")
    out = write_coordinates(df, tmp_path / "Movies", fmt="star", per_micrograph=True, suffix="tzl")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["mic001_tzl.star", "mic002_tzl.star"]
    text = (out / "mic001_tzl.star").read_text()
    assert "data_optics" not in text and "_rlnOpticsGroup" not in text
    first_block = [ln for ln in text.splitlines() if ln.startswith("data_")][0]
    assert first_block == "data_"
    table = next(iter(starfile.read(out / "mic001_tzl.star", always_dict=True).values()))
    assert list(table.columns) == [
        "rlnMicrographName",
        "rlnCoordinateX",
        "rlnCoordinateY",
        "rlnAutopickFigureOfMerit",
    ]
    assert list(table["rlnCoordinateX"]) == [10.5, 20.0]
    assert list(table["rlnMicrographName"]) == ["MotionCorr/job002/Movies/mic001.mrc"] * 2
    back = read_coordinates(out)
    assert sorted(back["micrograph"].unique()) == ["mic001", "mic002"]
    # one combined file keeps RELION 3.1's optics block
    combined = write_coordinates(df, tmp_path / "all.star", fmt="star").read_text()
    assert combined.index("data_optics") < combined.index("data_particles")


# ------------------------------------------------------------------------------ tzl-pick


@pytest.fixture
def pick_run(tmp_path, monkeypatch):
    from tests.helpers import PixelLogitNet
    from topaz_lightning.io.micrographs import write_micrograph
    from topaz_lightning.models import save_model

    admit_pixel_logit_net(monkeypatch)
    mics = tmp_path / "micrographs"
    for k, name in enumerate(["mic_a", "mic_b"]):
        write_micrograph(mics / f"{name}.mrc", blob_micrograph([(30, 40, 2.5)], seed=k))
    extra = {"preprocess": {"downsample": 1.0, "normalize": "none"}, "radius_px": 3}
    model = save_model(tmp_path / "model.pt", PixelLogitNet(), extra=extra, overwrite=True)
    return model, mics


def test_tzl_pick_writes_the_micrograph_path_relion_knows(pick_run, tmp_path):
    from topaz_lightning.pick import pick

    model, mics = pick_run
    out = tmp_path / "run"
    cfg = pick_config(
        model, mics, out, "output=picks.star", "particles_per_micrograph=5", "nms_radius_px_model=3"
    )
    pick(cfg)
    names = starfile.read(out / "picks.star")["particles"]["rlnMicrographName"]
    assert set(names) == {"mic_a.mrc", "mic_b.mrc"}
    parts = {p: p.stat().st_mtime_ns for p in (out / "picks_by_micrograph").glob("*.tsv")}
    assert len(parts) == 2
    # the directory option, re-extracted from the stored maxima (a layout key: no scoring)
    cfg = pick_config(
        model,
        mics,
        out,
        "output=Movies",
        "format=star",
        "per_micrograph=true",
        "suffix=tzl",
        "particles_per_micrograph=5",
        "nms_radius_px_model=3",
        "star_micrograph_dir=MotionCorr/job002/Movies",
    )
    pick(cfg)
    table = starfile.read(out / "Movies" / "mic_a_tzl.star")
    assert set(table["rlnMicrographName"]) == {"MotionCorr/job002/Movies/mic_a.mrc"}
    assert "rlnOpticsGroup" not in table.columns
    # nothing was scored again: the stored maxima are untouched
    assert {p: p.stat().st_mtime_ns for p in parts} == parts


def test_tzl_pick_refuses_a_bad_directory_before_scoring(pick_run, tmp_path):
    from topaz_lightning.pick import pick

    model, mics = pick_run
    cfg = pick_config(
        model, mics, tmp_path / "run", "star_micrograph_dir=a b", "nms_radius_px_model=3"
    )
    with pytest.raises(ConfigError, match="star_micrograph_dir"):
        pick(cfg)
    assert not (tmp_path / "run" / "picks_by_micrograph").exists()


# ------------------------------------------------------------------------------ tzl-convert


def test_tzl_convert_names_micrograph_files_when_it_knows_them(tmp_path):
    from topaz_lightning.cli.convert import convert
    from topaz_lightning.io.micrographs import write_micrograph

    mics = tmp_path / "mics"
    for name in ("mic001", "mic002"):
        write_micrograph(mics / f"{name}.mrc", blob_micrograph([(30, 40, 1.0)], shape=(64, 64)))
    picks = write_coordinates(_table(), tmp_path / "picks.tsv")
    out = convert(picks, tmp_path / "a.star", micrographs=mics, star_micrograph_dir="Movies")
    names = starfile.read(out)["particles"]["rlnMicrographName"]
    assert list(names) == ["Movies/mic001.mrc", "Movies/mic001.mrc", "Movies/mic002.mrc"]
    out = convert(picks, tmp_path / "b.star", micrographs=mics)
    assert list(starfile.read(out)["particles"]["rlnMicrographName"])[0] == "mic001.mrc"
    out = convert(picks, tmp_path / "c.star")  # no micrographs: the bare names, as before
    assert list(starfile.read(out)["particles"]["rlnMicrographName"])[0] == "mic001"
    with pytest.raises(ConfigError, match="star_micrograph_dir.*needs micrographs"):
        convert(picks, tmp_path / "d.star", star_micrograph_dir="Movies")
    assert not (tmp_path / "d.star").exists()
