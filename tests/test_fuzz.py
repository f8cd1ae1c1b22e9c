"""Fuzzing the readers of untrusted files: only the project's own errors, nothing hangs, no garbage passes.

Every coordinate format and the MRC reader get valid files mutated by hypothesis: random bytes,
truncation, swapped or extra columns, NaN/inf/1e308/negative values, changed header fields. A
reader may refuse a file (InputError) or return data; anything it returns must be finite, within
0..MAX_COORDINATE_PX, with plain micrograph names, and an MRC image must fill exactly the file the
header describes. ``make test`` runs a few dozen examples per reader; ``make test-slow`` more.
"""

from __future__ import annotations

import os
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topaz_lightning.errors import InputError
from topaz_lightning.geometry import MAX_COORDINATE_PX
from topaz_lightning.io.coordinates import read_coordinates
from topaz_lightning.io.formats.common import MAX_ABS_SCORE, control_characters
from topaz_lightning.io.micrographs import MAX_PIXEL_MAGNITUDE, read_micrograph, write_micrograph
from topaz_lightning.utils.atomic import safe_output_name

FAST = int(os.environ.get("TZL_FUZZ_EXAMPLES", "30"))
SLOW = 400
# a reader that takes a second on a tiny file is as bad as one that hangs
DEADLINE_MS = 3000


def _fuzz_settings(n: int):
    return settings(
        max_examples=n,
        deadline=DEADLINE_MS,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=n == FAST,  # make test is reproducible; the slow run explores
    )


# ------------------------------------------------------------------------------ valid files

NAMES = st.sampled_from(["mic_1", "data_0001", "loop_7", "_rln", "x", "001"])
COORD = st.floats(0, 5000, allow_nan=False).map(lambda v: round(v, 2))
ROWS = st.lists(st.tuples(NAMES, COORD, COORD, st.floats(-20, 20).map(lambda v: round(v, 3))), min_size=1, max_size=6)  # fmt: skip


def _render(fmt: str, rows) -> str:
    if fmt == "tsv":
        return "image_name\tx_coord\ty_coord\tscore\n" + "".join(f"{n}\t{x}\t{y}\t{s}\n" for n, x, y, s in rows)  # fmt: skip
    if fmt == "csv":
        return "micrograph,x,y,score\n" + "".join(f"{n},{x},{y},{s}\n" for n, x, y, s in rows)
    if fmt == "cryoppp":
        return "X-Coordinate,Y-Coordinate,Diameter\n" + "".join(f"{x},{y},40\n" for _, x, y, _ in rows)  # fmt: skip
    if fmt == "box":
        return "".join(f"{x}\t{y}\t20\t20\n" for _, x, y, _ in rows)
    if fmt == "star":
        head = (
            "\n# version 30001\n\ndata_\n\nloop_\n_rlnMicrographName #1\n_rlnCoordinateX #2\n"
            "_rlnCoordinateY #3\n_rlnAutopickFigureOfMerit #4\n"
        )
        return head + "".join(f"{n}.mrc {x} {y} {s}\n" for n, x, y, s in rows)
    if fmt == "star31":
        head = (
            "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnOpticsGroupName #2\n1 opticsGroup1\n\n"
            "data_particles\n\nloop_\n_rlnMicrographName #1\n_rlnCoordinateX #2\n"
            "_rlnCoordinateY #3\n_rlnOpticsGroup #4\n"
        )
        return head + "".join(f"{n}.mrc {x} {y} 1\n" for n, x, y, _ in rows)
    raise AssertionError(fmt)


SUFFIX = {"tsv": ".tsv", "csv": ".csv", "cryoppp": ".csv", "box": ".box", "star": ".star", "star31": ".star"}  # fmt: skip
FORMATS = list(SUFFIX)

BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e7", "-5", "-0.5", "", "0x10", "1e-400", "9" * 400, "1.2e11", "3.4e38", "-3.4e38", "1e31", "1.7976931348623157e308"]  # fmt: skip
# control characters and line separators: a name holding one would split the rows it is written to
CONTROL = ["\t", "\x0b", "\x0c", "\r", "\x1b", "\x1c", "\x1f", "\x7f", "\x85", "\u2028"]
BAD_NAMES = ["../../ESCAPED", "/abs/path", "a/b", "..", ".", ""] + [f"mic{c}1" for c in CONTROL]


@st.composite
def mutated_text(draw, fmt: str) -> bytes:
    """A valid file of ``fmt`` with one or more mutations applied."""
    text = _render(fmt, draw(ROWS))
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["number", "name", "swap", "extra", "drop", "truncate", "bytes", "header", "dupline"]))  # fmt: skip
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        tokens = lines[i].replace(",", "\t").replace(" ", "\t").split("\t")
        sep = "," if "," in lines[i] else ("\t" if "\t" in lines[i] else " ")
        if kind == "number" and tokens:
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(st.sampled_from(BAD_NUMBERS))
            lines[i] = sep.join(tokens)
        elif kind == "name" and tokens:
            tokens[0] = draw(st.sampled_from(BAD_NAMES)) + (
                ".mrc" if fmt.startswith("star") else ""
            )
            lines[i] = sep.join(tokens)
        elif kind == "swap" and len(tokens) >= 2:
            a, b = draw(st.permutations(range(len(tokens))))[:2]
            tokens[a], tokens[b] = tokens[b], tokens[a]
            lines[i] = sep.join(tokens)
        elif kind == "extra":
            lines[i] = lines[i] + sep + draw(st.sampled_from(["7", "x", "nan", "", '"q,"']))
        elif kind == "drop" and tokens:
            del tokens[draw(st.integers(0, len(tokens) - 1))]
            lines[i] = sep.join(tokens)
        elif kind == "header":
            lines[i] = draw(st.sampled_from(["image_name\tx\ty", "X-Coordinate", "data_", "loop_", "_rlnCoordinateX #9", "# comment", "micrograph,y,x"]))  # fmt: skip
        elif kind == "dupline":
            lines.insert(i, lines[i])
        text = "\n".join(lines)
        raw = text.encode()
        if kind == "truncate":
            raw = raw[: draw(st.integers(0, len(raw)))]
            lines = raw.decode(errors="replace").split("\n")
        elif kind == "bytes":
            pos = draw(st.integers(0, len(raw)))
            raw = raw[:pos] + draw(st.binary(min_size=1, max_size=8)) + raw[pos:]
            lines = raw.decode(errors="replace").split("\n")
    return "\n".join(lines).encode() if kind not in ("truncate", "bytes") else raw


def _check_table(df) -> None:
    assert len(df) > 0
    for column in ("x", "y"):
        values = df[column].to_numpy(dtype=np.float64)
        assert np.isfinite(values).all(), f"non-finite {column} returned"
        assert ((values >= 0) & (values <= MAX_COORDINATE_PX)).all(), f"{column} out of range"
    if "score" in df.columns:
        scores = df["score"].to_numpy(dtype=np.float64)
        assert np.isfinite(scores).all(), "non-finite score"
        assert (np.abs(scores) <= MAX_ABS_SCORE).all(), "absurd score returned"
    for name in df["micrograph"]:
        safe_output_name(name)  # raises if a name could leave an output directory
        assert not control_characters(name), f"name {name!r} with a control character returned"


def _read_coordinate_bytes(fmt: str, raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"mic_9{SUFFIX[fmt]}"
        path.write_bytes(raw)
        for given_fmt in (None, {"star31": "star", "cryoppp": "cryoppp"}.get(fmt, fmt)):
            try:
                df = read_coordinates(path, fmt=given_fmt)
            except InputError:
                continue
            _check_table(df)


@pytest.mark.parametrize("fmt", FORMATS)
@_fuzz_settings(FAST)
@given(data=st.data())
def test_coordinate_readers_fuzz(fmt, data):
    _read_coordinate_bytes(fmt, data.draw(mutated_text(fmt)))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@_fuzz_settings(SLOW)
@given(data=st.data())
def test_coordinate_readers_fuzz_long(fmt, data):
    _read_coordinate_bytes(fmt, data.draw(mutated_text(fmt)))


@_fuzz_settings(FAST)
@given(raw=st.binary(max_size=300), suffix=st.sampled_from(sorted(set(SUFFIX.values()))))
def test_coordinate_readers_random_bytes(raw, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"m{suffix}"
        path.write_bytes(raw)
        try:
            df = read_coordinates(path)
        except InputError:
            return
        _check_table(df)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "-1", "2e6", "1.2e11", "1e300"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_reader_refuses_bad_values_with_the_line(tmp_path, fmt, value):
    """The deterministic core of the fuzz property: one bad x is refused, naming where."""
    text = _render(fmt, [("mic_1", 10.0, 20.0, 1.0), ("mic_1", 30.0, 40.0, 2.0)])
    lines = text.rstrip("\n").split("\n")
    last = lines[-1]
    sep = "," if "," in last else ("\t" if "\t" in last else " ")
    tokens = last.split(sep)
    x_index = 0 if fmt in ("box", "cryoppp") else 1
    if fmt == "box" and value == "-1":
        value = "-11"  # a box corner may be negative; this puts the centre at x = -1
    tokens[x_index] = value
    lines[-1] = sep.join(tokens)
    path = tmp_path / f"mic_1{SUFFIX[fmt]}"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        read_coordinates(path)
    assert str(path) in str(err.value)
    assert "line" in str(err.value) or "row 2" in str(err.value)


# ------------------------------------------------------------------------------ MRC

# MRC2014 header words (4-byte little-endian) by byte offset
HEADER_FIELDS = {
    0: "nx", 4: "ny", 8: "nz", 12: "mode", 16: "nxstart", 28: "mx", 40: "cella_x",
    64: "mapc", 68: "mapr", 72: "maps", 92: "nsymbt", 208: "map", 212: "machst",
}  # fmt: skip
INT_VALUES = [0, 1, 2, 3, 4, 6, 12, 16, 101, -1, 2**31 - 1, 7, 13, 1024]
# finite float32 values that turn inf after any arithmetic (3.4e38 is float32's largest)
HUGE_PIXELS = [3.4e38, -3.4e38, 1e31, -2e35]


def _valid_mrc(dtype: str, shape: tuple[int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = (rng.standard_normal(shape) * 10).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        import mrcfile

        path = Path(tmp) / "m.mrc"
        if dtype == "float32":
            write_micrograph(path, image)
        else:
            with mrcfile.new(path) as mrc:
                mrc.set_data(image)
        return path.read_bytes()


@st.composite
def mutated_mrc(draw) -> bytes:
    dtype = draw(st.sampled_from(["float32", "int16", "uint16", "int8"]))
    shape = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    raw = bytearray(_valid_mrc(dtype, shape, draw(st.integers(0, 3))))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "truncate", "append", "bytes", "nan", "huge"]))
        if kind == "field":
            offset = draw(st.sampled_from(sorted(HEADER_FIELDS)))
            raw[offset : offset + 4] = struct.pack("<i", draw(st.sampled_from(INT_VALUES)))
        elif kind == "truncate":
            raw = raw[: draw(st.integers(0, len(raw)))]
        elif kind == "append":
            raw += draw(st.binary(min_size=1, max_size=64))
        elif kind == "bytes":
            pos = draw(st.integers(0, len(raw)))
            chunk = draw(st.binary(min_size=1, max_size=8))
            raw[pos : pos + len(chunk)] = chunk
        elif kind == "nan" and len(raw) >= 1028:
            pos = 1024 + 4 * draw(st.integers(0, (len(raw) - 1028) // 4))
            raw[pos : pos + 4] = struct.pack("<f", draw(st.sampled_from([np.nan, np.inf, -np.inf])))  # fmt: skip
        elif kind == "huge" and len(raw) >= 1028:
            pos = 1024 + 4 * draw(st.integers(0, (len(raw) - 1028) // 4))
            raw[pos : pos + 4] = struct.pack("<f", draw(st.sampled_from(HUGE_PIXELS)))
    return bytes(raw)


def _read_mrc_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.mrc"
        path.write_bytes(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a tolerated header quirk warns; the result is checked
            try:
                image = read_micrograph(path)
            except InputError:
                return
        assert image.ndim == 2 and image.dtype == np.float32 and image.size > 0
        assert np.isfinite(image).all()
        assert float(np.abs(image).max()) <= MAX_PIXEL_MAGNITUDE
        nx, ny, nz, mode = struct.unpack("<4i", raw[:16])
        nsymbt = struct.unpack("<i", raw[92:96])[0]
        itemsize = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}[mode]
        # what was returned is exactly what the header describes, filling the file
        assert image.shape == (ny, nx) and nz == 1
        assert len(raw) == 1024 + nsymbt + nx * ny * nz * itemsize


@_fuzz_settings(FAST)
@given(raw=mutated_mrc())
def test_mrc_reader_fuzz(raw):
    _read_mrc_bytes(raw)


@pytest.mark.slow
@_fuzz_settings(SLOW)
@given(raw=mutated_mrc())
def test_mrc_reader_fuzz_long(raw):
    _read_mrc_bytes(raw)


@_fuzz_settings(FAST)
@given(raw=st.binary(max_size=2048))
def test_mrc_reader_random_bytes(raw):
    _read_mrc_bytes(raw)


def test_mode_changed_from_2_to_1_is_refused(tmp_path):
    """The issue's case: mode 2 -> 1 gave exit 0 and garbage pixels."""
    path = tmp_path / "m.mrc"
    write_micrograph(path, np.ones((8, 10), np.float32))
    raw = bytearray(path.read_bytes())
    raw[12:16] = struct.pack("<i", 1)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="larger than expected") as err:
        read_micrograph(path)
    assert str(path) in str(err.value)


def test_non_standard_axis_order_is_refused(tmp_path):
    path = tmp_path / "m.mrc"
    write_micrograph(path, np.ones((8, 10), np.float32))
    raw = bytearray(path.read_bytes())
    raw[64:72] = struct.pack("<2i", 2, 1)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="axis order"):
        read_micrograph(path)


def test_huge_extended_header_is_refused_without_reading_it(tmp_path):
    """Found by the fuzz run: NSYMBT = 2**31 - 1 made mrcfile allocate 2 GiB (seconds) first."""
    path = tmp_path / "m.mrc"
    write_micrograph(path, np.ones((4, 4), np.float32))
    raw = bytearray(path.read_bytes())
    raw[92:96] = struct.pack("<i", 2**31 - 1)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="extended header of 2147483647 bytes"):
        read_micrograph(path)


# ------------------------------------------------------------------------------ issue 18's garbage


@pytest.mark.parametrize("value", [3.4e38, -3.4e38, 1.0e31])
def test_huge_finite_pixels_are_refused_naming_the_file(tmp_path, value):
    """Pixels near float32's limit are finite but turn inf after any arithmetic."""
    path = tmp_path / "m.mrc"
    image = np.ones((8, 10), np.float32)
    image[3, 4] = value
    write_micrograph(path, image)
    with pytest.raises(InputError, match=r"magnitude above 1e\+30 \(first at x=4, y=3") as err:
        read_micrograph(path)
    assert str(path) in str(err.value)


def test_pixels_at_the_bound_stay_finite_through_preprocessing(tmp_path):
    """The bound is low enough: an image at +-MAX_PIXEL_MAGNITUDE is read and every
    preprocessing (Fourier downsampling, GMM, standardize) keeps it finite."""
    from topaz_lightning.preprocess.pipeline import NORMALIZATIONS, preprocess_images

    rng = np.random.default_rng(0)
    image = np.clip(rng.standard_normal((64, 64)), -1, 1) * MAX_PIXEL_MAGNITUDE
    path = tmp_path / "m.mrc"
    write_micrograph(path, image.astype(np.float32))
    read = read_micrograph(path)
    for normalize in NORMALIZATIONS:
        out = preprocess_images({"m": read, "n": read[::-1].copy()}, 2.0, normalize)
        assert all(np.isfinite(v).all() for v in out.values()), normalize


def test_unset_axis_order_is_read_as_standard_with_a_warning(tmp_path):
    """MAPC/MAPR/MAPS = 0,0,0 is outside MRC2014: read as 1,2,3, saying so with the file."""
    path = tmp_path / "m.mrc"
    image = np.arange(80, dtype=np.float32).reshape(8, 10)
    write_micrograph(path, image)
    raw = bytearray(path.read_bytes())
    raw[64:76] = struct.pack("<3i", 0, 0, 0)
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match=r"unset \(0, 0, 0\); read as 1, 2, 3") as caught:
        out = read_micrograph(path)
    assert str(path) in str(caught[0].message)
    np.testing.assert_array_equal(out, image)  # no transpose


@pytest.mark.parametrize("axes", [(0, 0, 3), (1, 1, 3), (3, 2, 1), (0, 2, 3)])
def test_other_axis_orders_are_refused(tmp_path, axes):
    path = tmp_path / "m.mrc"
    write_micrograph(path, np.ones((8, 10), np.float32))
    raw = bytearray(path.read_bytes())
    raw[64:76] = struct.pack("<3i", *axes)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="axis order") as err:
        read_micrograph(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("char", CONTROL)
@pytest.mark.parametrize("fmt", ["tsv", "csv", "star", "star31"])
def test_control_characters_in_names_are_refused_with_the_line(tmp_path, fmt, char):
    """A name with a tab, escape, line separator... is refused at read, naming file and line."""
    text = _render(fmt, [("mic_1", 10.0, 20.0, 1.0), ("mic_2", 30.0, 40.0, 2.0)])
    name = f"mic{char}2"
    if fmt in ("star", "star31") or (fmt == "csv" and char in "\r\x85\u2028"):
        name = f'"{name}"'  # quoted: the STAR and CSV parsers keep it as one field
    if fmt == "tsv" and char == "\t":
        pytest.skip("a tab is the TSV separator: the row gets an extra field instead")
    path = tmp_path / f"picks{SUFFIX[fmt]}"
    path.write_bytes(text.replace("mic_2", name, 1).encode())
    with pytest.raises(InputError) as err:
        read_coordinates(path)
    message = str(err.value)
    # refused naming the file and line; a STAR parser that chokes on the character itself says so
    assert str(path) in message, message
    assert "line" in message or "cannot parse STAR file" in message, message


def test_star_name_with_a_quoted_newline_is_refused_with_the_line(tmp_path):
    """The issue's case: a quoted newline in _rlnMicrographName was read and split a TSV row."""
    text = _render("star", [("mic_1", 10.0, 20.0, 1.0), ("mic_2", 30.0, 40.0, 2.0)])
    path = tmp_path / "picks.star"
    path.write_text(text.replace("mic_2.mrc", '"mic\n2.mrc"'))
    line = text.split("\n").index(next(ln for ln in text.split("\n") if ln.startswith("mic_2")))
    with pytest.raises(InputError, match="control character") as err:
        read_coordinates(path)
    assert f"line {line + 1}" in str(err.value) and "row 2" in str(err.value)


@pytest.mark.parametrize("char", ["\n", "\t", "\x1b"])
def test_file_names_with_control_characters_are_refused(tmp_path, char):
    """Box and CryoPPP take the micrograph name from the file name: the same rule holds."""
    path = tmp_path / f"mic{char}1.box"
    path.write_text("10\t20\t20\t20\n")
    with pytest.raises(InputError, match="control character"):
        read_coordinates(path)


@pytest.mark.parametrize("score", ["1e31", "-3e38", "1e308"])
def test_absurd_scores_are_refused_with_the_line(tmp_path, score):
    path = tmp_path / "picks.tsv"
    path.write_text(f"image_name\tx_coord\ty_coord\tscore\nm\t1\t2\t0.5\nm\t3\t4\t{score}\n")
    with pytest.raises(InputError, match="score") as err:
        read_coordinates(path)
    assert "line 3" in str(err.value)


def test_carriage_return_inside_a_csv_line_is_refused_with_the_line(tmp_path):
    """Found by the long fuzz run: the csv module raised its own error for a stray \\r."""
    path = tmp_path / "p.csv"
    path.write_bytes(b"micrograph,x,y\nm,1,2\nm\r1,1,2\n")
    with pytest.raises(InputError, match=r"line 3: not a CSV line: a carriage return"):
        read_coordinates(path)


@pytest.mark.parametrize("fmt", ["tsv", "csv", "box"])
def test_files_with_old_mac_line_endings_are_read(tmp_path, fmt):
    text = _render(fmt, [("mic_1", 10.0, 20.0, 1.0), ("mic_1", 30.0, 40.0, 2.0)])
    path = tmp_path / f"mic_1{SUFFIX[fmt]}"
    path.write_bytes(text.replace("\n", "\r").encode())
    shift = 10 if fmt == "box" else 0  # box rows are corners of 20 px boxes
    expected = [[10 + shift, 20 + shift], [30 + shift, 40 + shift]]
    assert read_coordinates(path)[["x", "y"]].to_numpy().tolist() == expected
