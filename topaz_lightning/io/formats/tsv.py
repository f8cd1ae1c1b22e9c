"""Topaz TSV: a header ``image_name  x_coord  y_coord [score]``, tab- or whitespace-separated."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from topaz_lightning.io.formats.common import format_number, make_table, read_header_table
from topaz_lightning.io.formats.registry import CoordinateFormat


def _sniff(lines: list[str]) -> bool:
    first = lines[0]
    if first.startswith(("data_", "loop_", "_rln")):  # a STAR block, whatever follows
        return False
    tokens = [t.strip().strip('"').lower() for t in first.replace(",", " ").split()]
    return "image_name" in tokens


def _read(path: Path) -> pd.DataFrame:
    cols = read_header_table(
        path,
        delimiter=None,
        required={"micrograph": ("image_name",), "x": ("x_coord",), "y": ("y_coord",)},
        optional={"score": ("score",)},
        header_hint="image_name<TAB>x_coord<TAB>y_coord[<TAB>score]",
    )
    return make_table(cols["micrograph"], cols["x"], cols["y"], cols.get("score"))


def _write(df: pd.DataFrame, target: Path, box_size_px: float | None) -> None:
    score = "score" in df.columns
    buf = io.StringIO()
    buf.write("image_name\tx_coord\ty_coord" + ("\tscore" if score else "") + "\n")
    cols = [df["micrograph"].astype(str), df["x"], df["y"]] + ([df["score"]] if score else [])
    for row in zip(*cols, strict=True):
        buf.write(row[0] + "\t" + "\t".join(format_number(v) for v in row[1:]) + "\n")
    target.write_text(buf.getvalue())


FORMATS = (
    CoordinateFormat(
        name="tsv",
        extension=".tsv",
        read=_read,
        write=_write,
        sniff=_sniff,
        description="Topaz TSV (header 'image_name x_coord y_coord')",
        aliases=("topaz", "txt"),
        read_extensions=(".tsv", ".txt"),
        output_extensions=(".tsv", ".txt"),
        order=10,
    ),
)
