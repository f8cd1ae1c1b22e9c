"""tzl-convert: format conversion with scale, flip_y and overwrite protection, on the shared data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from topaz_lightning.cli.convert import convert, main
from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.io import read_coordinates

UCSF_STAR = "Ucsf_stack_1142_DW_autopick.star"


def _raw_cryoppp(coords: Path) -> dict[str, np.ndarray]:
    return {
        f.stem: np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2)[:, :2]
        for f in sorted(coords.glob("*.csv"))
    }


def _by_micrograph(df) -> dict[str, np.ndarray]:
    return {m: g[["x", "y"]].to_numpy() for m, g in df.groupby("micrograph")}


def test_scale_to_star(empiar10017_dir, tmp_path):
    coords = empiar10017_dir / "coords"
    out = convert(coords, tmp_path / "bin4.star", scale=0.25)
    df = read_coordinates(out)
    assert len(df) == 2591
    got = _by_micrograph(df)
    for name, ref in _raw_cryoppp(coords).items():
        np.testing.assert_allclose(got[name], ref * 0.25, atol=1e-6)


def test_downsample_alias_equals_scale(empiar10017_dir, tmp_path):
    coords = empiar10017_dir / "coords"
    a = read_coordinates(convert(coords, tmp_path / "a.tsv", scale=0.25))
    b = read_coordinates(convert(coords, tmp_path / "b.tsv", downsample=4))
    np.testing.assert_array_equal(a[["x", "y"]], b[["x", "y"]])
    with pytest.raises(ConfigError, match="downsample"):
        convert(coords, tmp_path / "c.tsv", scale=0.5, downsample=4)
    with pytest.raises(ConfigError, match="scale"):
        convert(coords, tmp_path / "c.tsv", scale=0)


def test_flip_y_with_image_height(empiar10017_dir, tmp_path):
    # the JPEGs are a vertical flip of the EMPIAR MRCs: y_mrc = 4095 - y_jpg (data README)
    coords = empiar10017_dir / "coords"
    df = read_coordinates(convert(coords, tmp_path / "mrc.csv", flip_y=True, image_height=4096))
    got = _by_micrograph(df)
    for name, ref in _raw_cryoppp(coords).items():
        np.testing.assert_allclose(got[name][:, 0], ref[:, 0])
        np.testing.assert_allclose(got[name][:, 1], 4095 - ref[:, 1])


def test_flip_y_then_scale_with_heights_from_micrographs(ucsf_dir, tmp_path):
    pytest.importorskip("topaz_lightning.io.micrographs")
    star = ucsf_dir / UCSF_STAR
    out = convert(star, tmp_path / "f.tsv", flip_y=True, micrographs=ucsf_dir, scale=0.5)
    original, flipped = read_coordinates(star), read_coordinates(out)
    np.testing.assert_allclose(flipped["x"], original["x"] * 0.5, atol=1e-6)
    # the MRC is 959 x 927 (nx x ny): H = 927
    np.testing.assert_allclose(flipped["y"], (926 - original["y"]) * 0.5, atol=1e-6)
    np.testing.assert_allclose(flipped["score"], original["score"], atol=1e-6)


def test_flip_y_needs_heights(ucsf_dir, tmp_path):
    with pytest.raises(ConfigError, match="flip_y"):
        convert(ucsf_dir / UCSF_STAR, tmp_path / "f.tsv", flip_y=True)
    assert not (tmp_path / "f.tsv").exists()


def test_box_output_per_micrograph(empiar10017_dir, tmp_path):
    coords = empiar10017_dir / "coords"
    with pytest.raises(ConfigError, match="box_size"):
        convert(coords, tmp_path / "boxes", output_format="box")
    out = convert(coords, tmp_path / "boxes", output_format="box", box_size=27, scale=0.25)
    assert sorted(p.stem for p in out.iterdir()) == sorted(_raw_cryoppp(coords))
    first = sorted(out.iterdir())[0]
    ref = _raw_cryoppp(coords)[first.stem] * 0.25 - 13.5
    np.testing.assert_allclose(np.loadtxt(first)[:, :2], ref, atol=1e-6)


def test_validation_against_micrographs(ucsf_dir, tmp_path):
    pytest.importorskip("topaz_lightning.io.micrographs")
    bad = tmp_path / "bad.tsv"
    bad.write_text("image_name\tx_coord\ty_coord\nUcsf_stack_1142_DW\t10\t930\n")
    with pytest.raises(InputError, match=r"bad\.tsv: row 1 .*outside the image"):
        convert(bad, tmp_path / "out.star", micrographs=ucsf_dir)
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("image_name\tx_coord\ty_coord\nother\t10\t10\n")
    with pytest.raises(InputError, match="'other'"):
        convert(unknown, tmp_path / "out.star", micrographs=ucsf_dir)
    assert not (tmp_path / "out.star").exists()


def _run_cli(monkeypatch, run_dir: Path, *overrides: str) -> None:
    monkeypatch.setattr(sys, "argv", ["tzl-convert", *overrides, f"hydra.run.dir={run_dir}"])
    main()


def test_cli_refuses_to_overwrite_and_keeps_no_stamps(ucsf_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "picks.star"
    args = (f"input={ucsf_dir / UCSF_STAR}", f"output={out}", "output_format=star3.0")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["tzl-convert", *args])
    main()
    first = out.read_text()
    assert len(read_coordinates(out)) == 45
    # nothing in the caller's working directory (no outputs/convert/<time>/), no stamps
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picks.star", "work"]

    with pytest.raises(SystemExit) as exc:
        _run_cli(monkeypatch, tmp_path / "run2", *args, "scale=2")
    assert exc.value.code == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == first

    _run_cli(monkeypatch, tmp_path / "run3", *args, "scale=2", "overwrite=true")
    np.testing.assert_allclose(
        read_coordinates(out)["x"], read_coordinates(ucsf_dir / UCSF_STAR)["x"] * 2, atol=1e-5
    )
    assert not (tmp_path / "run3" / "config.yaml").exists()


def test_cli_skips_a_bad_coordinate_file_and_reports_it(empiar10017_dir, tmp_path, monkeypatch):
    coords = tmp_path / "coords"
    coords.mkdir()
    files = sorted((empiar10017_dir / "coords").glob("*.csv"))
    for f in files:
        (coords / f.name).write_bytes(f.read_bytes())
    (coords / files[1].name).write_bytes(b"\x00\x01 binary garbage")
    out = tmp_path / "boxes"
    args = (f"input={coords}", f"output={out}/", "output_format=box", "box_size=20")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        monkeypatch.setattr(sys, "argv", ["tzl-convert", *args])
        main()
    assert exc.value.code == 3
    good = sorted(f.stem for f in files if f != files[1])
    assert sorted(p.stem for p in out.iterdir()) == good
    rows = (tmp_path / "boxes.failures.tsv").read_text().splitlines()
    assert rows[0] == "name\treason" and rows[1].startswith(files[1].name + "\t")
    assert "binary" in rows[1]
    # strict: the bad file stops it
    with pytest.raises(InputError, match="binary"):
        convert(coords, tmp_path / "strict", output_format="box", box_size=20, per_micrograph=True)


def test_overwrite_removes_stale_per_micrograph_files(empiar10017_dir, tmp_path):
    coords = empiar10017_dir / "coords"
    out = convert(coords, tmp_path / "boxes", output_format="box", box_size=27)
    assert len(list(out.iterdir())) == 4
    one = tmp_path / "one.tsv"
    df = read_coordinates(coords)
    first = sorted(df["micrograph"].unique())[0]
    one.write_text(
        "image_name\tx_coord\ty_coord\n"
        + "".join(f"{first}\t{x}\t{y}\n" for x, y in df[df.micrograph == first][["x", "y"]].values)
    )
    convert(one, out, output_format="box", box_size=27, per_micrograph=True, overwrite=True)
    # the three other micrographs' boxes would otherwise be read back with the new one
    assert [p.stem for p in out.iterdir()] == [first]
    assert len(read_coordinates(out)) == int((df.micrograph == first).sum())


def test_unreadable_micrograph_drops_its_particles_and_is_reported(ucsf_dir, tmp_path):
    from topaz_lightning.errors import PartialFailureError

    mics = tmp_path / "mics"
    mics.mkdir()
    mrc = (ucsf_dir / "Ucsf_stack_1142_DW.mrc").read_bytes()
    (mics / "Ucsf_stack_1142_DW.mrc").write_bytes(mrc[: len(mrc) // 2])
    with pytest.raises(PartialFailureError, match="Ucsf_stack_1142_DW"):
        convert(
            ucsf_dir / UCSF_STAR, tmp_path / "o.tsv", micrographs=mics, flip_y=True, strict=False
        )
    assert not (tmp_path / "o.tsv").exists()  # its only micrograph failed: nothing to write
    assert "Ucsf_stack_1142_DW" in (tmp_path / "o.tsv.failures.tsv").read_text()


def test_cli_reports_bad_input(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exc:
        _run_cli(
            monkeypatch, tmp_path / "run", f"input={tmp_path / 'missing.star'}", "output=x.tsv"
        )
    assert exc.value.code == 2
    assert "missing.star: coordinate file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        _run_cli(monkeypatch, tmp_path / "run2", "output=x.tsv")
    assert exc.value.code == 2
    assert "input" in capsys.readouterr().err
    assert not (tmp_path / "x.tsv").exists()


def test_existing_output_is_refused_before_reading_micrographs(ucsf_dir, tmp_path, monkeypatch):
    import topaz_lightning.cli.convert as convert_module
    from topaz_lightning.errors import OutputExistsError

    def no_reading(source):
        raise AssertionError("micrographs read before the output was checked")

    monkeypatch.setattr(convert_module, "_micrograph_shapes", no_reading)
    existing = tmp_path / "picks.tsv"
    existing.write_text("keep me")
    with pytest.raises(OutputExistsError, match="picks.tsv"):
        convert(ucsf_dir / UCSF_STAR, existing, micrographs=ucsf_dir)
    assert existing.read_text() == "keep me"
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    (boxes / "old.box").write_text("1 2 3 4\n")
    with pytest.raises(OutputExistsError, match="boxes"):
        convert(ucsf_dir / UCSF_STAR, boxes, output_format="box", box_size=64, micrographs=ucsf_dir)


def test_per_micrograph_output_skips_names_that_cannot_be_file_names(tmp_path):
    from topaz_lightning.errors import PartialFailureError

    long_name = "m" * 300
    table = tmp_path / "in.tsv"
    table.write_text(f"image_name\tx_coord\ty_coord\nok\t1\t2\n{long_name}\t3\t4\nok\t5\t6\n")
    with pytest.raises(PartialFailureError, match="too long"):
        convert(table, tmp_path / "out", output_format="tsv", per_micrograph=True, strict=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok.tsv"]
    report = (tmp_path / "out.failures.tsv").read_text().splitlines()
    assert len(report) == 2 and report[1].startswith(long_name)
    with pytest.raises(InputError, match="too long"):
        convert(table, tmp_path / "strict", output_format="tsv", per_micrograph=True)


def test_threshold_and_top_k_filter_a_scored_picks_file(tmp_path):
    table = tmp_path / "picks.tsv"
    rows = [
        ("a", 1, 1, 0.5),
        ("a", 2, 2, 3.0),
        ("a", 3, 3, -1.0),
        ("a", 4, 4, 2.0),
        ("b", 5, 5, 1.0),
    ]
    table.write_text(
        "image_name\tx_coord\ty_coord\tscore\n"
        + "".join(f"{n}\t{x}\t{y}\t{s}\n" for n, x, y, s in rows)
    )
    out = read_coordinates(convert(table, tmp_path / "t.tsv", threshold=0.5, top_k=2))
    assert list(zip(out["micrograph"], out["score"], strict=True)) == [
        ("a", 3.0),
        ("a", 2.0),
        ("b", 1.0),
    ]
    assert len(read_coordinates(convert(table, tmp_path / "k.tsv", top_k=1))) == 2
    unscored = tmp_path / "u.tsv"
    unscored.write_text("image_name\tx_coord\ty_coord\na\t1\t2\n")
    with pytest.raises(InputError, match="score column"):
        convert(unscored, tmp_path / "u_out.tsv", threshold=0)
    with pytest.raises(ConfigError, match="top_k"):
        convert(table, tmp_path / "bad.tsv", top_k=0)
