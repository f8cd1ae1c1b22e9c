"""Coordinate I/O: real-data reads, round trips through every format, detection and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topaz_lightning.errors import InputError, OutputExistsError
from topaz_lightning.io import (
    FORMATS,
    detect_format,
    micrograph_name_from_reference,
    read_coordinates,
    transform_coordinates,
    validate_coordinates,
    write_coordinates,
)
from topaz_lightning.io.coordinates import EXTENSIONS, format_extension

UCSF_STAR = "Ucsf_stack_1142_DW_autopick.star"
UCSF_NAME = "Ucsf_stack_1142_DW"
UCSF_SHAPE = (927, 959)  # (H, W) = (ny, nx) from the data README
EMPIAR_SHAPE = (4096, 4096)
# formats that keep a score column
SCORED = {"tsv", "star3.0", "star3.1", "csv"}


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["micrograph", "x", "y"], kind="stable").reset_index(drop=True)


def _star_numbers(path: Path) -> np.ndarray:
    """The numeric rows of a STAR loop, parsed with plain numpy as an independent reference."""
    rows = [
        ln.split()
        for ln in path.read_text().splitlines()
        if ln.strip() and ln.strip()[0].isdigit() or ln.strip()[:1] == "-"
    ]
    return np.array(rows, dtype=float)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------ real data


def test_read_empiar10017_cryoppp_directory(empiar10017_dir):
    coords = empiar10017_dir / "coords"
    assert detect_format(coords) == "cryoppp"
    df = read_coordinates(coords)
    assert list(df.columns) == ["micrograph", "x", "y"]
    assert len(df) == 2591
    jpeg_stems = sorted(p.stem for p in (empiar10017_dir / "images").glob("*.jpg"))
    assert sorted(df["micrograph"].unique()) == jpeg_stems
    counts = df["micrograph"].value_counts()
    assert counts.min() >= 621 and counts.max() <= 694
    # compare against numpy's own reading of each CSV
    for f in sorted(coords.glob("*.csv")):
        ref = np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2)
        got = df[df["micrograph"] == f.stem]
        np.testing.assert_array_equal(got[["x", "y"]].to_numpy(), ref[:, :2])
    validate_coordinates(df, dict.fromkeys(jpeg_stems, EMPIAR_SHAPE), source=coords)


def test_read_ucsf_relion30_star(ucsf_dir):
    path = ucsf_dir / UCSF_STAR
    assert detect_format(path) == "star3.0"
    df = read_coordinates(path)
    assert list(df.columns) == ["micrograph", "x", "y", "score"]
    assert len(df) == 45
    # no _rlnMicrographName: the name is the file name minus RELION's _autopick suffix
    assert set(df["micrograph"]) == {UCSF_NAME}
    ref = _star_numbers(path)
    assert ref.shape == (45, 5)
    np.testing.assert_allclose(df[["x", "y", "score"]].to_numpy(), ref[:, :3])
    validate_coordinates(df, {UCSF_NAME: UCSF_SHAPE}, source=path)


def test_ucsf_picks_lie_inside_the_real_mrc(ucsf_dir):
    micrographs = pytest.importorskip("topaz_lightning.io.micrographs")
    found = micrographs.list_micrographs(ucsf_dir)
    shapes = {name: micrographs.read_micrograph(p).shape for name, p in found.items()}
    assert shapes == {UCSF_NAME: UCSF_SHAPE}
    validate_coordinates(read_coordinates(ucsf_dir / UCSF_STAR), shapes, source=UCSF_STAR)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dataset", ["empiar10017", "ucsf"])
def test_round_trip_real_data(fmt, dataset, tmp_path, request):
    if dataset == "empiar10017":
        source = request.getfixturevalue("empiar10017_dir") / "coords"
    else:
        source = request.getfixturevalue("ucsf_dir") / UCSF_STAR
    original = read_coordinates(source)
    n_mic = original["micrograph"].nunique()
    per_micrograph = fmt in ("box", "cryoppp") and n_mic > 1
    if per_micrograph:
        out = tmp_path / "out"
    else:
        # single-micrograph formats take the micrograph name from the file name
        stem = original["micrograph"].iloc[0] if fmt in ("box", "cryoppp") else "picks"
        out = tmp_path / f"{stem}{format_extension(fmt)}"
    write_coordinates(original, out, fmt=fmt, per_micrograph=per_micrograph, box_size=108)
    assert detect_format(out) == fmt
    back = read_coordinates(out)  # auto-detected
    a, b = _sorted(original), _sorted(back)
    assert list(a["micrograph"]) == list(b["micrograph"])
    np.testing.assert_allclose(b[["x", "y"]].to_numpy(), a[["x", "y"]].to_numpy(), atol=1e-3)
    if fmt in SCORED and "score" in original:
        np.testing.assert_allclose(b["score"].to_numpy(), a["score"].to_numpy(), atol=1e-6)
    if fmt not in SCORED:
        assert "score" not in back.columns


def test_per_micrograph_star_directory_round_trip(empiar10017_dir, tmp_path):
    df = read_coordinates(empiar10017_dir / "coords")
    out = write_coordinates(df, tmp_path / "stars", fmt="star3.0", per_micrograph=True)
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"{m}.star" for m in sorted(df["micrograph"].unique())]
    back = read_coordinates(out)
    np.testing.assert_allclose(_sorted(back)[["x", "y"]], _sorted(df)[["x", "y"]], atol=1e-3)


@settings(max_examples=25, deadline=None)
@given(
    xy=st.lists(
        st.tuples(
            st.floats(0, 1e5, allow_nan=False),
            st.floats(0, 1e5, allow_nan=False),
            st.floats(-50, 50),
        ),
        min_size=1,
        max_size=20,
    ),
    fmt=st.sampled_from(["tsv", "star3.0", "star3.1", "csv"]),
)
def test_round_trip_random_values(xy, fmt, tmp_path_factory):
    arr = np.array(xy)
    df = pd.DataFrame(
        {
            "micrograph": [["mic_a", "mic.b 2"][i % 2] for i in range(len(arr))],
            "x": arr[:, 0],
            "y": arr[:, 1],
            "score": arr[:, 2],
        }
    )
    out = tmp_path_factory.mktemp("rt") / f"p{format_extension(fmt)}"
    write_coordinates(df, out, fmt=fmt)
    back = read_coordinates(out)
    assert list(back["micrograph"]) == list(df["micrograph"])
    np.testing.assert_allclose(back[["x", "y"]], df[["x", "y"]], atol=1e-3)
    np.testing.assert_allclose(back["score"], df["score"], atol=1e-5)


# ------------------------------------------------------------------------------ formats


def test_box_corner_centre_conversion(tmp_path):
    box = _write(tmp_path, "mic1.box", "10\t20\t30\t40\n-5 -5 10 10\n")
    df = read_coordinates(box)
    assert list(df["micrograph"]) == ["mic1", "mic1"]
    np.testing.assert_allclose(df[["x", "y"]], [[25, 40], [0, 0]])
    out = write_coordinates(
        pd.DataFrame({"micrograph": ["m"], "x": [100.0], "y": [200.5]}),
        tmp_path / "m.box",
        box_size=50,
    )
    assert out.read_text() == "75\t175.5\t50\t50\n"


def test_star31_with_optics_and_paths(tmp_path):
    text = (
        "# version 30001\n\ndata_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnOpticsGroupName #2\n"
        "1 opticsGroup1\n\ndata_particles\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n"
        "_rlnMicrographName #3\n_rlnOpticsGroup #4\n_rlnAutopickFigureOfMerit #5\n"
        "12.5 30.25 MotionCorr/job002/Movies/mic_001.mrc 1 0.9\n"
        "40 50 MotionCorr/job002/Movies/mic.002.mrc 1 -0.1\n"
    )
    path = _write(tmp_path, "particles.star", text)
    assert detect_format(path) == "star3.1"
    df = read_coordinates(path)
    assert list(df["micrograph"]) == ["mic_001", "mic.002"]
    np.testing.assert_allclose(df[["x", "y", "score"]], [[12.5, 30.25, 0.9], [40, 50, -0.1]])


@pytest.mark.parametrize("fmt", ["star3.0", "star3.1", "tsv", "csv"])
def test_numeric_looking_names_stay_strings(tmp_path, fmt):
    df = pd.DataFrame({"micrograph": ["001", "1e3"], "x": [1.0, 2.0], "y": [3.0, 4.0]})
    out = write_coordinates(df, tmp_path / f"p{format_extension(fmt)}", fmt=fmt)
    assert read_coordinates(out)["micrograph"].tolist() == ["001", "1e3"]


def test_written_star31_has_optics_block(tmp_path):
    df = pd.DataFrame({"micrograph": ["a"], "x": [1.0], "y": [2.0], "score": [0.5]})
    text = write_coordinates(df, tmp_path / "p.star").read_text()  # .star defaults to 3.1
    assert "data_optics" in text and "data_particles" in text
    assert "_rlnAutopickFigureOfMerit" in text and "_rlnMicrographName" in text
    text30 = write_coordinates(df, tmp_path / "p30.star", fmt="star3.0").read_text()
    assert "data_optics" not in text30


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("a.tsv", "image_name\tx_coord\ty_coord\nm\t1\t2\n", "tsv"),
        ("a.txt", "image_name\tx_coord\ty_coord\tscore\nm\t1\t2\t3\n", "tsv"),
        ("a.dat", "image_name x_coord y_coord\nm 1 2\n", "tsv"),  # header decides
        ("a.txt", "micrograph,x,y\nm,1,2\n", "csv"),  # header beats extension
        ("a.csv", "X-Coordinate,Y-Coordinate,Diameter\n1,2,3\n", "cryoppp"),
        ("a.csv", "micrograph,x,y,score\nm,1,2,0.5\n", "csv"),
        ("a.box", "1 2 3 4\n", "box"),
        ("a.coords", "1 2 3 4\n", "box"),
        ("a.star", "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 2\n", "star3.0"),
    ],
)
def test_detect_format(tmp_path, name, text, fmt):
    path = _write(tmp_path, name, text)
    assert detect_format(path) == fmt
    assert len(read_coordinates(path)) == 1


def test_topaz_tsv_whitespace_and_comments(tmp_path):
    path = _write(tmp_path, "a.txt", "# picks\nimage_name x_coord y_coord score\n\nm1 1.5 2 -3\n")
    df = read_coordinates(path)
    assert df.iloc[0].tolist() == ["m1", 1.5, 2.0, -3.0]


def test_micrograph_name_from_reference():
    assert micrograph_name_from_reference("Movies/job/mic_001.mrc") == "mic_001"
    assert micrograph_name_from_reference("a.b.TIFF") == "a.b"
    assert micrograph_name_from_reference("mic.001") == "mic.001"
    assert micrograph_name_from_reference("C:\\data\\x.jpg") == "x"


def test_transform_flip_then_scale():
    df = pd.DataFrame({"micrograph": ["a", "b"], "x": [10.0, 20.0], "y": [0.0, 99.0]})
    out = transform_coordinates(df, scale=0.5, flip_y=True, heights={"a": 100, "b": 200})
    np.testing.assert_allclose(out[["x", "y"]], [[5, 49.5], [10, 50]])
    out = transform_coordinates(df, flip_y=True, heights=100)
    np.testing.assert_allclose(out["y"], [99, 0])
    assert df["y"].tolist() == [0.0, 99.0]  # input untouched
    with pytest.raises(InputError, match="heights"):
        transform_coordinates(df, flip_y=True)
    with pytest.raises(InputError, match="'b'"):
        transform_coordinates(df, flip_y=True, heights={"a": 100})


# ------------------------------------------------------------------------------ writers


def _table(n_mic: int = 1) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "micrograph": [f"m{i % n_mic}" for i in range(4)],
            "x": [1.0, 2, 3, 4],
            "y": [5.0, 6, 7, 8],
        }
    )


def test_writer_refuses_to_overwrite(tmp_path):
    out = tmp_path / "p.tsv"
    write_coordinates(_table(), out)
    before = out.read_text()
    changed = _table().assign(x=9.0)
    with pytest.raises(OutputExistsError, match="p.tsv"):
        write_coordinates(changed, out)
    assert out.read_text() == before
    write_coordinates(changed, out, overwrite=True)
    assert read_coordinates(out)["x"].tolist() == [9.0] * 4


def test_per_micrograph_writer_refuses_nonempty_directory(tmp_path):
    out = write_coordinates(_table(2), tmp_path / "d", fmt="box", per_micrograph=True, box_size=4)
    assert sorted(p.name for p in out.iterdir()) == ["m0.box", "m1.box"]
    with pytest.raises(OutputExistsError):
        write_coordinates(_table(2), out, fmt="box", per_micrograph=True, box_size=4)
    write_coordinates(_table(2), out, fmt="box", per_micrograph=True, box_size=4, overwrite=True)
    assert len(read_coordinates(out)) == 4


def test_check_coordinate_output_matches_the_writer(tmp_path):
    from topaz_lightning.io.coordinates import check_coordinate_output

    assert check_coordinate_output(tmp_path / "new.tsv") == tmp_path / "new.tsv"
    assert check_coordinate_output(tmp_path / "d", per_micrograph=True) == tmp_path / "d"
    (tmp_path / "empty").mkdir()
    check_coordinate_output(tmp_path / "empty", per_micrograph=True)
    out = write_coordinates(_table(2), tmp_path / "d", fmt="box", per_micrograph=True, box_size=4)
    with pytest.raises(OutputExistsError):
        check_coordinate_output(out, per_micrograph=True)
    check_coordinate_output(out, overwrite=True, per_micrograph=True)
    single = write_coordinates(_table(2), tmp_path / "p.tsv")
    with pytest.raises(OutputExistsError):
        check_coordinate_output(single)
    for overwrite in (False, True):
        with pytest.raises(InputError, match="must be a directory"):
            check_coordinate_output(single, overwrite=overwrite, per_micrograph=True)
        with pytest.raises(InputError, match="must be a directory"):
            write_coordinates(
                _table(2), single, fmt="tsv", overwrite=overwrite, per_micrograph=True
            )


def test_failed_write_leaves_nothing(tmp_path):
    bad = _table().astype({"x": object})
    bad.loc[1, "x"] = "oops"
    with pytest.raises((TypeError, ValueError)):
        write_coordinates(bad, tmp_path / "p.tsv")
    with pytest.raises((TypeError, ValueError)):
        write_coordinates(bad, tmp_path / "d", fmt="tsv", per_micrograph=True)
    assert list(tmp_path.iterdir()) == []


def test_writer_setting_errors(tmp_path):
    with pytest.raises(InputError, match="box_size"):
        write_coordinates(_table(), tmp_path / "m0.box")
    with pytest.raises(InputError, match="per_micrograph"):
        write_coordinates(_table(2), tmp_path / "x.box", box_size=10)
    with pytest.raises(InputError, match="extension"):
        write_coordinates(_table(), tmp_path / "x.dat")
    with pytest.raises(InputError, match="unknown coordinate format 'xyz'"):
        write_coordinates(_table(), tmp_path / "x.tsv", fmt="xyz")
    with pytest.raises(InputError, match="lacks column"):
        write_coordinates(_table().drop(columns="y"), tmp_path / "x.tsv")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ bad input


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.star: coordinate file not found"):
        read_coordinates(tmp_path / "nope.star")
    with pytest.raises(InputError, match="not found"):
        detect_format(tmp_path / "nope.tsv")


def test_unknown_format(tmp_path):
    path = _write(tmp_path, "picks.dat", "hello world\n")
    with pytest.raises(InputError, match=r"picks\.dat: unknown coordinate format"):
        read_coordinates(path)
    binary = tmp_path / "picks.bin"
    binary.write_bytes(b"\x00\x01\x02")
    with pytest.raises(InputError, match="not a text file"):
        read_coordinates(binary)
    with pytest.raises(InputError, match="unknown coordinate format 'pdb'"):
        read_coordinates(_write(tmp_path, "ok.box", "1 2 3 4\n"), fmt="pdb")


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        (
            "a.tsv",
            "image_name\tx\ty\nm\t1\t2\n",
            r"a\.tsv: line 1: missing required column.*'x_coord'",
        ),
        ("a.csv", "name,x,y\nm,1,2\n", r"a\.csv: line 1: missing required column.*'micrograph'"),
        (
            "a.csv",
            "X-Coordinate,Diameter\n1,2\n",
            r"line 1: missing required column.*'Y-Coordinate'",
        ),
        ("a.star", "data_\nloop_\n_rlnCoordinateX\n1\n", r"a\.star: .*key _rlnCoordinateY"),
        ("a.star", "data_\nloop_\n_rlnAnglePsi\n1\n", r"a\.star: key _rlnCoordinateX"),
    ],
)
def test_missing_columns(tmp_path, name, text, match):
    with pytest.raises(InputError, match=match):
        read_coordinates(_write(tmp_path, name, text))


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("a.tsv", "image_name\tx_coord\ty_coord\nm\t1\t2\nm\tabc\t2\n", r"a\.tsv: line 3: .*'abc'"),
        ("a.csv", "micrograph,x,y,score\nm,1,2,high\n", r"line 2: .*'high'.*'score'"),
        (
            "m.csv",
            "X-Coordinate,Y-Coordinate,Diameter\n1,2,108\n3,4.4.4,108\n",
            "line 3: .*'4.4.4'",
        ),
        ("m.box", "1 2 3 4\n1 2 x 4\n", r"m\.box: line 2: .*'x'.*box width"),
        ("m.box", "1 2 3 4\n1 2 3\n", r"m\.box: line 2: expected 4 numbers"),
        ("a.tsv", "image_name\tx_coord\ty_coord\nm\t1\n", r"line 2: expected at least 3 fields"),
        (
            "a.star",
            "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 2\n3 y3\n",
            r"a\.star: data_, row 2, key _rlnCoordinateY: .*'y3'",
        ),
    ],
)
def test_unparsable_numbers(tmp_path, name, text, match):
    with pytest.raises(InputError, match=match):
        read_coordinates(_write(tmp_path, name, text))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("a.tsv", ""),
        ("a.tsv", "image_name\tx_coord\ty_coord\n"),
        ("a.star", ""),
        ("a.star", "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n"),
        ("a.box", ""),
        ("a.box", "\n\n"),
        ("a.csv", "X-Coordinate,Y-Coordinate,Diameter\n"),
        ("a.csv", "micrograph,x,y\n"),
    ],
)
def test_empty_file(tmp_path, name, text):
    path = _write(tmp_path, name, text)
    with pytest.raises(InputError, match=rf"{name.replace('.', '[.]')}.*(empty|no coordinates)"):
        read_coordinates(path)


def test_directory_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no coordinate files"):
        read_coordinates(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _write(mixed, "a.box", "1 2 3 4\n")
    _write(mixed, "b.csv", "X-Coordinate,Y-Coordinate,Diameter\n1,2,3\n")
    with pytest.raises(InputError, match="mixes coordinate formats"):
        read_coordinates(mixed)
    blank = tmp_path / "blank"
    blank.mkdir()
    _write(blank, "a.csv", "X-Coordinate,Y-Coordinate,Diameter\n")
    _write(blank, "b.csv", "")
    with pytest.raises(InputError, match="no coordinates in any file"):
        read_coordinates(blank, fmt="cryoppp")


def test_directory_skips_micrographs_without_picks(tmp_path):
    _write(tmp_path, "a.csv", "X-Coordinate,Y-Coordinate,Diameter\n1,2,3\n")
    _write(tmp_path, "b.csv", "X-Coordinate,Y-Coordinate,Diameter\n")
    df = read_coordinates(tmp_path)
    assert df["micrograph"].tolist() == ["a"]


# ------------------------------------------------------------------------------ validation


SHAPES = {"m0": (100, 200), "m1": (50, 60)}


def test_validate_accepts_corners():
    df = pd.DataFrame({"micrograph": ["m0", "m0", "m1"], "x": [0, 199.9, 59], "y": [0, 99.5, 49]})
    validate_coordinates(df, SHAPES, source="p.tsv")


def test_validate_empty_table():
    df = pd.DataFrame({"micrograph": [], "x": [], "y": []})
    with pytest.raises(InputError, match=r"p\.tsv: coordinate table is empty"):
        validate_coordinates(df, SHAPES, source="p.tsv")


def test_validate_unknown_micrograph():
    df = pd.DataFrame({"micrograph": ["m0", "ghost"], "x": [1.0, 1.0], "y": [1.0, 1.0]})
    with pytest.raises(InputError, match=r"p\.tsv: row 2 \(micrograph 'ghost'.*not among"):
        validate_coordinates(df, SHAPES, source="p.tsv")


@pytest.mark.parametrize(
    ("x", "y"), [(-0.5, 10), (10, -1), (200, 10), (10, 100), (250, 150)], ids=str
)
def test_validate_outside_image(x, y):
    df = pd.DataFrame({"micrograph": ["m0", "m0"], "x": [5.0, x], "y": [5.0, y]})
    with pytest.raises(InputError, match=r"p\.tsv: row 2 .*outside the image.*200 x 100"):
        validate_coordinates(df, SHAPES, source="p.tsv")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_validate_nan(bad):
    df = pd.DataFrame({"micrograph": ["m1", "m1"], "x": [5.0, 5.0], "y": [5.0, bad]})
    with pytest.raises(InputError, match=r"p\.tsv: row 2 .*NaN or infinite"):
        validate_coordinates(df, SHAPES, source="p.tsv")


def test_validate_catches_unscaled_real_coordinates(empiar10017_dir):
    # full-size picks against 4x-downsampled images: a typical mistake, caught with the file named
    coords = empiar10017_dir / "coords"
    df = read_coordinates(coords)
    shapes = dict.fromkeys(df["micrograph"].unique(), (1024, 1024))
    with pytest.raises(InputError, match="coords: row .*outside the image"):
        validate_coordinates(df, shapes, source=coords)


def test_io_package_reexports_micrograph_functions():
    import topaz_lightning.io as tio

    micrographs = pytest.importorskip("topaz_lightning.io.micrographs")
    for name in ("read_micrograph", "read_pixel_size", "write_micrograph", "list_micrographs"):
        assert getattr(tio, name) is getattr(micrographs, name)
    assert tio.micrograph_name("a/b/mic_001.mrc") == "mic_001"
    with pytest.raises(AttributeError):
        tio.no_such_function  # noqa: B018


# ------------------------------------------------------------------------------ issue 8


def test_row_named_like_a_star_block_does_not_make_a_star_file(tmp_path):
    text = "image_name\tx_coord\ty_coord\tscore\ndata_0001\t10\t20\t0.5\nloop_\t5\t6\t0.1\n"
    path = _write(tmp_path, "picks.tsv", text)
    assert detect_format(path) == "tsv"
    df = read_coordinates(path)
    assert df["micrograph"].tolist() == ["data_0001", "loop_"]
    csv_path = _write(tmp_path, "picks.csv", "micrograph,x,y\ndata_0001,1,2\n")
    assert detect_format(csv_path) == "csv"
    # a real STAR file may open with comments and blank lines
    star = _write(
        tmp_path, "a.star", "# RELION\n\ndata_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 2\n"
    )
    assert detect_format(star) == "star3.0"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("m\t-3\t4", "outside 0..1e\\+06"),
        ("m\t3\t2e6", "outside 0..1e\\+06"),
        ("m\tnan\t4", "finite"),
        ("m\t3\tinf", "finite"),
        ("m\t3\t4\tnan", "score is nan"),
        ("../m\t3\t4", "path separator"),
        ("..\t3\t4", "directory reference"),
    ],
)
def test_tsv_values_and_names_refused_at_read_with_the_line(tmp_path, row, message):
    path = _write(tmp_path, "p.tsv", f"image_name\tx_coord\ty_coord\tscore\nok\t1\t1\t0\n{row}\n")
    if row.count("\t") == 2:
        path.write_text(f"image_name\tx_coord\ty_coord\nok\t1\t1\n{row}\n")
    with pytest.raises(InputError, match=message) as err:
        read_coordinates(path)
    assert str(err.value).startswith(f"{path}: line 3:")


def test_star_names_reduce_to_file_names_and_empty_ones_are_refused(tmp_path):
    head = "data_\nloop_\n_rlnMicrographName\n_rlnCoordinateX\n_rlnCoordinateY\n"
    ok = _write(tmp_path, "a.star", head + "../../up/mic_1.mrc 1 2\n")
    assert read_coordinates(ok)["micrograph"].tolist() == ["mic_1"]
    bad = _write(tmp_path, "b.star", head + "mic_1.mrc 1 2\nsome/dir/ 3 4\n")
    with pytest.raises(InputError, match="row 2, key _rlnMicrographName.*is empty"):
        read_coordinates(bad)
    neg = _write(tmp_path, "c.star", head + "mic_1.mrc 1 -2\n")
    with pytest.raises(InputError, match="row 1, key _rlnCoordinateY"):
        read_coordinates(neg)


def test_box_corner_may_be_negative_but_not_the_centre(tmp_path):
    ok = _write(tmp_path, "m.box", "-5\t-5\t20\t20\n")
    assert read_coordinates(ok)[["x", "y"]].to_numpy().tolist() == [[5.0, 5.0]]
    bad = _write(tmp_path, "n.box", "1\t1\t20\t20\n-25\t1\t20\t20\n")
    with pytest.raises(InputError, match="line 2.*x centre"):
        read_coordinates(bad)
    with pytest.raises(InputError, match="box width"):
        read_coordinates(_write(tmp_path, "w.box", "1\t1\t-20\t20\n"))


def test_writer_refuses_non_finite_coordinates(tmp_path):
    df = pd.DataFrame({"micrograph": ["a", "a"], "x": [1.0, np.nan], "y": [1.0, 2.0]})
    with pytest.raises(InputError, match="row 2"):
        write_coordinates(df, tmp_path / "o.tsv")
    assert not (tmp_path / "o.tsv").exists()


# ------------------------------------------------------------------------------ the format registry


def test_old_table_names_are_derived_from_the_registry():
    """cli/pick.py, cli/convert.py, simulate/dataset.py import these: same values as before."""
    from topaz_lightning.io import coordinates

    assert coordinates.FORMATS == ("tsv", "star3.0", "star3.1", "box", "cryoppp", "csv")
    assert coordinates.EXTENSIONS == {
        "tsv": ".tsv",
        "star3.0": ".star",
        "star3.1": ".star",
        "box": ".box",
        "cryoppp": ".csv",
        "csv": ".csv",
    }
    assert coordinates.ONE_MICROGRAPH_PER_FILE == ("box", "cryoppp")
    assert coordinates._EXT_FORMAT == {
        ".tsv": "tsv",
        ".txt": "tsv",
        ".star": "star3.0",
        ".box": "box",
        ".csv": "csv",
    }
    assert coordinates._format_for_output is coordinates.format_for_output
    with pytest.raises(AttributeError):
        coordinates.NO_SUCH_TABLE  # noqa: B018


@pytest.mark.parametrize(
    ("alias", "name"),
    [("topaz", "tsv"), ("TXT", "tsv"), ("star", "star3.1"), ("relion3.0", "star3.0"),
     ("EMAN", "box"), ("cryoppp_csv", "cryoppp"), (" csv ", "csv")],
)  # fmt: skip
def test_aliases_and_format_facts(alias, name):
    from topaz_lightning.io.coordinates import (
        canonical_format,
        format_extension,
        one_micrograph_per_file,
    )

    assert canonical_format(alias) == name
    assert format_extension(alias) == EXTENSIONS[name]
    assert one_micrograph_per_file(alias) == (name in ("box", "cryoppp"))


@pytest.mark.parametrize(
    ("file", "fmt"),
    [("p.tsv", "tsv"), ("p.TXT", "tsv"), ("p.star", "star3.1"), ("p.box", "box"), ("p.csv", "csv")],
)
def test_format_for_output(file, fmt):
    from topaz_lightning.io.coordinates import format_for_output

    assert format_for_output(Path("out") / file) == fmt


def test_format_for_output_refuses_an_unknown_extension():
    from topaz_lightning.io.coordinates import format_for_output

    with pytest.raises(InputError, match=r"out/p\.json: cannot tell the output format"):
        format_for_output("out/p.json")


# the header line of each built-in format (what its sniff must claim, and no other sniff before it)
HEADERS = {
    "tsv": ["image_name\tx_coord\ty_coord", "m\t1\t2"],
    "star3.0": ["data_", "loop_", "_rlnCoordinateX #1"],
    "star3.1": ["data_optics", "loop_", "data_particles"],
    "box": ["1 2 3 4"],
    "cryoppp": ["X-Coordinate,Y-Coordinate,Diameter"],
    "csv": ["micrograph,x,y,score"],
}


@pytest.mark.parametrize("fmt", sorted(HEADERS))
def test_each_sniff_claims_its_own_header_only(fmt):
    from topaz_lightning.io.formats import all_formats, sniff_format

    assert sniff_format(HEADERS[fmt]) == fmt
    claims = [f.name for f in all_formats() if f.sniff(HEADERS[fmt])]
    assert claims == [fmt]


def test_every_record_is_complete_and_its_module_is_one_file():
    """A format's facts live in its record, in one module of io/formats/."""
    import inspect

    from topaz_lightning.io.formats import all_formats

    for fmt in all_formats():
        assert fmt.extension.startswith(".") and fmt.description
        assert all(e.startswith(".") and e == e.lower() for e in fmt.read_extensions)
        module = inspect.getmodule(fmt.read)
        assert module.__name__.startswith("topaz_lightning.io.formats.")
        assert fmt in module.FORMATS


@pytest.fixture
def xyz_format():
    """A format added at run time the way a plug-in would: one record, nothing else changed."""
    from topaz_lightning.io.formats import CoordinateFormat, register_format, registry
    from topaz_lightning.io.formats.common import checked_name, make_table, read_text, text_lines

    def read(path):
        rows = [line.split(";") for _, line in text_lines(read_text(path))[1:]]
        return make_table([checked_name(r[0], path, "") for r in rows],
                          [float(r[1]) for r in rows], [float(r[2]) for r in rows])  # fmt: skip

    def write(df, target, box_size_px):
        rows = [f"{m};{x};{y}" for m, x, y in zip(df["micrograph"], df["x"], df["y"], strict=True)]
        target.write_text("XYZ\n" + "\n".join(rows) + "\n")

    record = CoordinateFormat(
        name="xyz", extension=".xyz", read=read, write=write,
        sniff=lambda lines: lines[0] == "XYZ", description="XYZ (header 'XYZ')",
        aliases=("semicolons",), read_extensions=(".xyz",), output_extensions=(".xyz",),
        has_score=False, order=99,
    )  # fmt: skip
    register_format(record)
    yield record
    registry._REGISTRY.pop("xyz", None)


def test_a_registered_format_works_everywhere(tmp_path, xyz_format):
    from topaz_lightning.io import coordinates

    assert "xyz" in coordinates.FORMATS and coordinates.canonical_format("SEMICOLONS") == "xyz"
    df = pd.DataFrame({"micrograph": ["a", "b"], "x": [1.0, 2.0], "y": [3.0, 4.0]})
    out = write_coordinates(df, tmp_path / "p.xyz")  # format from the extension
    assert detect_format(out) == "xyz"
    pd.testing.assert_frame_equal(read_coordinates(out), df)
    per = write_coordinates(df, tmp_path / "d", fmt="xyz", per_micrograph=True)
    assert sorted(p.name for p in per.iterdir()) == ["a.xyz", "b.xyz"]
    assert detect_format(per) == "xyz"
    with pytest.raises(ValueError, match="already"):
        from topaz_lightning.io.formats import register_format

        register_format(xyz_format)


def test_entry_point_formats_are_loaded_and_a_broken_one_is_skipped(monkeypatch, caplog):
    import importlib.metadata

    from topaz_lightning.io.formats import CoordinateFormat, registry

    class Entry:
        def __init__(self, name, value):
            self.name, self._value = name, value

        def load(self):
            if isinstance(self._value, Exception):
                raise self._value
            return self._value

    tsv = registry.get_format("tsv")
    plug = CoordinateFormat(
        name="plug", extension=".plug", read=tsv.read, write=tsv.write,
        sniff=lambda lines: False, description="plug",
    )  # fmt: skip
    entries = [Entry("plug", (plug,)), Entry("broken", ImportError("no module named nowhere"))]
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: entries if group == registry.ENTRY_POINT_GROUP else [],
    )
    saved = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_LOADED", False)
    assert set(registry.format_names()) == {*saved, "plug"}
    assert registry.get_format("plug") is plug
    assert "broken" in caplog.text and "not loaded" in caplog.text


@pytest.mark.parametrize(
    ("name", "problem"),
    [("a\nb", "control character"), ("a\tb", "control character"), ("a" * 201, "too long"),
     ("é" * 101, "too long"), ("../x", "path separator")],
)  # fmt: skip
def test_per_micrograph_paths_refuse_unsafe_names(tmp_path, name, problem):
    from topaz_lightning.io.coordinates import per_micrograph_paths

    with pytest.raises(InputError, match=problem) as err:
        per_micrograph_paths(["ok", name], tmp_path, "star")
    assert "row 2" in str(err.value)
    assert per_micrograph_paths(["a" * 200], tmp_path, "box") == {
        "a" * 200: tmp_path / ("a" * 200 + ".box")
    }


def test_lines_end_at_newline_only(tmp_path):
    """A form feed or \\x1c inside a name is refused on its own line, not split silently."""
    path = _write(tmp_path, "p.tsv", "image_name\tx_coord\ty_coord\nm\t1\t2\nm\x0cq\t3\t4\n")
    with pytest.raises(InputError, match=r"line 3: micrograph name 'm\\x0cq' contains control"):
        read_coordinates(path)
    crlf = _write(tmp_path, "crlf.tsv", "image_name\tx_coord\ty_coord\r\nm\t1\t2\r\n")
    assert read_coordinates(crlf).iloc[0].tolist() == ["m", 1.0, 2.0]
