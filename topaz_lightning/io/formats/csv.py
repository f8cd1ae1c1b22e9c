"""Plain CSV: a header ``micrograph,x,y[,score]`` (quoted names allowed)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from topaz_lightning.io.formats.common import format_number, make_table, read_header_table
from topaz_lightning.io.formats.registry import CoordinateFormat


def _sniff(lines: list[str]) -> bool:
    first = lines[0]
    if "," not in first or first.startswith(("data_", "loop_", "_rln")):
        return False
    return "micrograph" in [t.strip().strip('"').lower() for t in first.split(",")]


def _read(path: Path) -> pd.DataFrame:
    cols = read_header_table(
        path,
        delimiter=",",
        required={"micrograph": ("micrograph",), "x": ("x",), "y": ("y",)},
        optional={"score": ("score",)},
        header_hint="micrograph,x,y[,score]",
    )
    return make_table(cols["micrograph"], cols["x"], cols["y"], cols.get("score"))


def _write(df: pd.DataFrame, target: Path, box_size_px: float | None) -> None:
    score = "score" in df.columns
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["micrograph", "x", "y"] + (["score"] if score else []))
    cols = [df["micrograph"].astype(str), df["x"], df["y"]] + ([df["score"]] if score else [])
    for row in zip(*cols, strict=True):
        writer.writerow([row[0]] + [format_number(v) for v in row[1:]])
    target.write_text(buf.getvalue())


FORMATS = (
    CoordinateFormat(
        name="csv",
        extension=".csv",
        read=_read,
        write=_write,
        sniff=_sniff,
        description="CSV (header 'micrograph,x,y')",
        read_extensions=(".csv",),
        output_extensions=(".csv",),
        order=60,
    ),
)
