"""EMAN .box: one micrograph per file, ``x_corner y_corner width height`` per line, no header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from topaz_lightning.errors import InputError
from topaz_lightning.geometry import MAX_COORDINATE_PX
from topaz_lightning.io.formats.common import (
    check_value,
    format_number,
    make_table,
    name_from_file,
    parse_float,
    read_text,
    text_lines,
)
from topaz_lightning.io.formats.registry import CoordinateFormat

_LABELS = ("x corner", "y corner", "box width", "box height")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _sniff(lines: list[str]) -> bool:
    tokens = [t.strip().strip('"') for t in lines[0].replace(",", " ").split()]
    return len(tokens) >= 4 and all(_is_number(t) for t in tokens)


def _read(path: Path) -> pd.DataFrame:
    lines = text_lines(read_text(path))
    name = name_from_file(path)
    xs, ys = [], []
    for lineno, line in lines:
        where = f"line {lineno}"
        fields = line.split()
        if len(fields) < 4:
            raise InputError(
                f"expected 4 numbers 'x_corner y_corner width height', found {len(fields)} field(s)",
                path,
                where,
            )
        x0, y0, w, h = (
            parse_float(t, path, lineno, c) for t, c in zip(fields[:4], _LABELS, strict=True)
        )
        for value, label in ((x0, "x corner"), (y0, "y corner")):
            if not np.isfinite(value) or abs(value) > MAX_COORDINATE_PX:
                check_value(value, path, where, label)
        for value, label in ((w, "box width"), (h, "box height")):
            if not (np.isfinite(value) and 0 <= value <= MAX_COORDINATE_PX):
                raise InputError(
                    f"{label} = {value:g}; expected a size in 0..{MAX_COORDINATE_PX:g} px",
                    path,
                    where,
                )
        # a box may stick out of the image (corner < 0), its centre may not
        xs.append(check_value(x0 + w / 2.0, path, where, "x centre"))
        ys.append(check_value(y0 + h / 2.0, path, where, "y centre"))
    if not xs:
        raise InputError("empty coordinate file (no boxes)", path)
    return make_table([name] * len(xs), xs, ys)


def _write(df: pd.DataFrame, target: Path, box_size_px: float | None) -> None:
    if box_size_px is None:
        raise InputError("writing EMAN .box files needs a positive box_size (pixels)", target)
    half = box_size_px / 2.0
    size = format_number(box_size_px)
    lines = [
        f"{format_number(x - half)}\t{format_number(y - half)}\t{size}\t{size}"
        for x, y in zip(df["x"], df["y"], strict=True)
    ]
    target.write_text("\n".join(lines) + ("\n" if lines else ""))


FORMATS = (
    CoordinateFormat(
        name="box",
        extension=".box",
        read=_read,
        write=_write,
        sniff=_sniff,
        description="EMAN .box (x y w h per line)",
        aliases=("eman",),
        read_extensions=(".box",),
        output_extensions=(".box",),
        one_micrograph_per_file=True,
        needs_box_size=True,
        has_score=False,
        order=40,
    ),
)
