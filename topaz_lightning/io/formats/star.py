"""RELION STAR: 3.0 (one loop with _rlnCoordinateX/Y) and 3.1 (data_optics + data_particles).

``_rlnMicrographName`` holds the micrograph's file (the table's ``micrograph_file`` column when
present, e.g. ``MotionCorr/job002/Movies/mic001.mrc``, else the bare name); reading keeps only the
name (directory and image extension removed), so files written either way read back alike.
A per-micrograph file (``<micrograph>_<suffix>.star``) is a RELION coordinate file: one ``data_``
block, no optics, as AutoPick writes them, because RELION's Extract reads the FIRST block of a
coordinate file and would find an optics block's lines empty of coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from topaz_lightning.errors import InputError
from topaz_lightning.io.formats.common import (
    MICROGRAPH_FILE_COLUMN,
    check_value,
    checked_name,
    make_table,
    micrograph_name_from_reference,
    name_from_file,
    read_text,
    values_ok,
)
from topaz_lightning.io.formats.registry import CoordinateFormat

_STAR_START = ("data_", "loop_", "_rln")


def _is_star(lines: list[str]) -> bool:
    # the header line decides: a STAR file opens with a data_ block (or a loop_/_rln key); a
    # row of another format that starts with data_ (a micrograph called data_0001) does not count
    return lines[0].startswith(_STAR_START)


def _has_optics(lines: list[str]) -> bool:
    return any(line.startswith("data_optics") for line in lines)


def _blocks(path: Path) -> dict:
    import starfile

    try:
        # names such as 001 must stay strings, not become the integer 1
        return starfile.read(path, always_dict=True, parse_as_string=["rlnMicrographName"])
    except Exception as err:  # noqa: BLE001 - starfile raises assorted parser errors
        raise InputError(f"cannot parse STAR file ({type(err).__name__}: {err})", path) from err


def _coordinate_block(path: Path, blocks: dict) -> tuple[str, pd.DataFrame]:
    candidates = []
    for block_name, block in blocks.items():
        if isinstance(block, Mapping):  # a single-row, non-loop block
            block = pd.DataFrame({k: [v] for k, v in block.items()})
        if isinstance(block, pd.DataFrame) and "rlnCoordinateX" in block.columns:
            candidates.append((block_name, block))
    if not candidates:
        names = ", ".join(f"data_{b}" for b in blocks)
        raise InputError(
            f"no block with _rlnCoordinateX (blocks: {names}); "
            "expected a RELION coordinate/particle STAR file",
            path,
            "key _rlnCoordinateX",
        )
    # RELION 3.1 puts coordinates in data_particles; otherwise take the first coordinate block
    return next(((n, b) for n, b in candidates if n == "particles"), candidates[0])


def _numeric(block: pd.DataFrame, key: str, column: str, path: Path, where: str) -> np.ndarray:
    values = pd.to_numeric(block[key], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(values) & ~block[key].astype(str).str.strip().str.lower().isin(["nan"])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"cannot parse {str(block[key].iloc[row])!r} as a number",
            path,
            f"{where}, row {row + 1}, key _{key}",
        )
    wrong = ~values_ok(values, column)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        check_value(float(values[row]), path, f"{where}, row {row + 1}, key _{key}", column)
    return values


def _read(path: Path) -> pd.DataFrame:
    blocks = _blocks(path)
    if not blocks:
        if not read_text(path).strip():
            raise InputError("empty coordinate file", path)
        raise InputError("no data_ block found in STAR file", path)
    block_name, block = _coordinate_block(path, blocks)
    where = f"data_{block_name}"
    if "rlnCoordinateY" not in block.columns:
        raise InputError(
            "missing required key _rlnCoordinateY", path, f"{where}, key _rlnCoordinateY"
        )
    if len(block) == 0:
        raise InputError("empty coordinate file (STAR loop has no rows)", path, where)
    xs = _numeric(block, "rlnCoordinateX", "x", path, where)
    ys = _numeric(block, "rlnCoordinateY", "y", path, where)
    scores = None
    if "rlnAutopickFigureOfMerit" in block:
        scores = _numeric(block, "rlnAutopickFigureOfMerit", "score", path, where)
    if "rlnMicrographName" in block.columns:
        names = []
        for i, value in enumerate(block["rlnMicrographName"].astype(str)):
            place = f"{where}, row {i + 1}, key _rlnMicrographName"
            try:
                names.append(checked_name(micrograph_name_from_reference(value), path, place))
            except InputError as err:
                raise InputError(err.problem, path, _with_line(path, value, place)) from None
    else:
        names = [name_from_file(path, strip_relion_suffix=True)] * len(xs)
    return make_table(names, xs, ys, scores)


def _with_line(path: Path, value: str, place: str) -> str:
    """``place`` with the line of the file where ``value`` first appears (for a bad value whose
    row the parser knows but not the line: a quoted name may span lines)."""
    text = read_text(path)
    at = text.find(value)
    return place if at < 0 else f"line {text.count(chr(10), 0, at) + 1} ({place})"


def _particles(df: pd.DataFrame) -> pd.DataFrame:
    names = df[MICROGRAPH_FILE_COLUMN] if MICROGRAPH_FILE_COLUMN in df.columns else df["micrograph"]
    out = pd.DataFrame(
        {
            "rlnMicrographName": names.astype(str).to_numpy(),
            "rlnCoordinateX": df["x"].to_numpy(dtype=np.float64),
            "rlnCoordinateY": df["y"].to_numpy(dtype=np.float64),
        }
    )
    if "score" in df.columns:
        out["rlnAutopickFigureOfMerit"] = df["score"].to_numpy(dtype=np.float64)
    return out


def _write_30(df: pd.DataFrame, target: Path, box_size_px: float | None) -> None:
    import starfile

    starfile.write({"": _particles(df)}, target, float_format="%.6f")


def _write_31(df: pd.DataFrame, target: Path, box_size_px: float | None) -> None:
    import starfile

    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"]})
    particles = _particles(df)
    particles["rlnOpticsGroup"] = 1
    starfile.write({"optics": optics, "particles": particles}, target, float_format="%.6f")


_DESCRIPTION = "RELION STAR (.star with _rlnCoordinateX/_rlnCoordinateY)"

FORMATS = (
    CoordinateFormat(
        name="star3.0",
        extension=".star",
        read=_read,
        write=_write_30,
        sniff=lambda lines: _is_star(lines) and not _has_optics(lines),
        description=_DESCRIPTION,
        aliases=("star30", "relion3.0"),
        # a .star file whose header says nothing is read as 3.0 (the reader takes either)
        read_extensions=(".star",),
        order=20,
    ),
    CoordinateFormat(
        name="star3.1",
        extension=".star",
        read=_read,
        write=_write_31,
        sniff=lambda lines: _is_star(lines) and _has_optics(lines),
        description=_DESCRIPTION,
        aliases=("star", "relion", "star31", "relion3.1"),
        # one micrograph's file in a per-micrograph directory: a RELION coordinate file
        write_per_micrograph=_write_30,
        # a new .star output is RELION 3.1 (with an optics block)
        output_extensions=(".star",),
        order=30,
    ),
)
