"""CryoPPP CSV: one micrograph per file, header ``X-Coordinate,Y-Coordinate,Diameter``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from topaz_lightning.io.formats.common import (
    format_number,
    make_table,
    name_from_file,
    read_header_table,
)
from topaz_lightning.io.formats.registry import CoordinateFormat


def _sniff(lines: list[str]) -> bool:
    first = lines[0]
    if first.startswith(("data_", "loop_", "_rln")):
        return False
    tokens = [t.strip().strip('"').lower() for t in first.replace(",", " ").split()]
    return "x-coordinate" in tokens and "image_name" not in tokens


def _read(path: Path) -> pd.DataFrame:
    cols = read_header_table(
        path,
        delimiter=",",
        required={"x": ("X-Coordinate",), "y": ("Y-Coordinate",)},
        optional={"diameter": ("Diameter",)},
        header_hint="X-Coordinate,Y-Coordinate,Diameter",
    )
    name = name_from_file(path)
    return make_table([name] * len(cols["x"]), cols["x"], cols["y"])


def _write(df: pd.DataFrame, target: Path, box_size_px: float | None) -> None:
    diameter = "" if box_size_px is None else format_number(box_size_px)
    lines = ["X-Coordinate,Y-Coordinate,Diameter"]
    for x, y in zip(df["x"], df["y"], strict=True):
        lines.append(f"{format_number(x)},{format_number(y)},{diameter}")
    target.write_text("\n".join(lines) + "\n")


FORMATS = (
    CoordinateFormat(
        name="cryoppp",
        extension=".csv",
        read=_read,
        write=_write,
        sniff=_sniff,
        description="CryoPPP CSV (header 'X-Coordinate,Y-Coordinate,Diameter')",
        aliases=("cryoppp_csv",),
        one_micrograph_per_file=True,
        has_score=False,
        order=50,
    ),
)
