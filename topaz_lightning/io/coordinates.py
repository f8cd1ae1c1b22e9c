"""Particle coordinate files: read, write and detect Topaz TSV, RELION STAR, EMAN BOX, CryoPPP and CSV."""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from topaz_lightning.errors import InputError
from topaz_lightning.geometry import MAX_COORDINATE_PX, rescale_coordinates
from topaz_lightning.utils.atomic import (
    atomic_output,
    check_output_dir,
    check_writable,
    make_temp_dir,
    safe_output_name,
)

log = logging.getLogger(__name__)

#: Format names accepted by ``fmt`` (``star`` means RELION 3.1 when writing, either when reading).
FORMATS = ("tsv", "star3.0", "star3.1", "box", "cryoppp", "csv")
_ALIASES = {
    "topaz": "tsv",
    "txt": "tsv",
    "star": "star3.1",
    "relion": "star3.1",
    "star30": "star3.0",
    "star31": "star3.1",
    "relion3.0": "star3.0",
    "relion3.1": "star3.1",
    "eman": "box",
    "cryoppp_csv": "cryoppp",
}
#: File extension written for each format (one file per micrograph uses ``<micrograph><ext>``).
EXTENSIONS = {
    "tsv": ".tsv",
    "star3.0": ".star",
    "star3.1": ".star",
    "box": ".box",
    "cryoppp": ".csv",
    "csv": ".csv",
}
_EXT_FORMAT = {".tsv": "tsv", ".txt": "tsv", ".star": "star3.0", ".box": "box", ".csv": "csv"}
#: Formats with no micrograph column: the file name is the micrograph name.
ONE_MICROGRAPH_PER_FILE = ("box", "cryoppp")
# Image extensions removed from micrograph references such as _rlnMicrographName.
_IMAGE_EXTENSIONS = (".mrc", ".mrcs", ".tif", ".tiff", ".png", ".jpg", ".jpeg")
# Suffixes RELION appends to per-micrograph pick files (Micrograph_autopick.star).
_RELION_PICK_SUFFIXES = ("_autopick", "_manualpick", "_pick")

_COLUMNS = ["micrograph", "x", "y"]
_UNKNOWN_FORMAT = (
    "unknown coordinate format; expected one of: Topaz TSV (header 'image_name x_coord y_coord'), "
    "RELION STAR (.star with _rlnCoordinateX/_rlnCoordinateY), EMAN .box (x y w h per line), "
    "CryoPPP CSV (header 'X-Coordinate,Y-Coordinate,Diameter') or CSV (header 'micrograph,x,y')"
)


# ----------------------------------------------------------------------------------------------
# names and formats


def canonical_format(fmt: str) -> str:
    """Return the canonical format name for ``fmt`` (case-insensitive, aliases allowed)."""
    key = str(fmt).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise InputError(
            f"unknown coordinate format '{fmt}'; choose one of {', '.join(FORMATS)} "
            f"(aliases: {', '.join(sorted(_ALIASES))})"
        )
    return key


def micrograph_name_from_reference(reference: str) -> str:
    """Micrograph name from a path-like reference: directory and image extension removed."""
    name = str(reference).replace("\\", "/").rsplit("/", 1)[-1]
    lower = name.lower()
    for ext in _IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def _name_from_file(path: Path, fmt: str) -> str:
    name = path.name[: -len(path.suffix)] if path.suffix else path.name
    if fmt.startswith("star"):
        for suffix in _RELION_PICK_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)]
    return name


def _read_head(path: Path, nbytes: int = 65536) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(nbytes)
    except OSError as err:
        raise InputError(f"cannot read file ({err.strerror})", path) from err
    if b"\x00" in raw:
        raise InputError("not a text file (binary content); " + _UNKNOWN_FORMAT, path)
    return raw.decode("utf-8-sig", errors="replace")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _sniff(head: str) -> str | None:
    """Format implied by the first lines of a file, or None if they say nothing definite."""
    lines = [ln.strip() for ln in head.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return None
    content = [ln for ln in lines if not ln.startswith("#")]
    if not content:
        return None
    first = content[0]
    # the header line decides: a STAR file opens with a data_ block (or a loop_/_rln key); a
    # row of another format that starts with data_ (a micrograph called data_0001) does not count
    if first.startswith(("data_", "loop_", "_rln")):
        return "star3.1" if any(ln.startswith("data_optics") for ln in content) else "star3.0"
    tokens = [t.strip().strip('"').lower() for t in first.replace(",", " ").split()]
    if "image_name" in tokens:
        return "tsv"
    if "x-coordinate" in tokens:
        return "cryoppp"
    if "," in first:
        cols = [t.strip().strip('"').lower() for t in first.split(",")]
        if "micrograph" in cols:
            return "csv"
    if len(tokens) >= 4 and all(_is_number(t) for t in tokens):
        return "box"
    return None


def _coordinate_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _EXT_FORMAT
    )


def detect_format(path: str | os.PathLike) -> str:
    """Detect the coordinate format of a file (or a directory of files) from its header and extension.

    Returns one of ``tsv``, ``star3.0``, ``star3.1``, ``box``, ``cryoppp``, ``csv``. The header
    decides when it is conclusive; otherwise the extension (``.tsv``/``.txt``, ``.star``, ``.box``,
    ``.csv``) does. A directory must hold files of a single format.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("coordinate file not found", path)
    if path.is_dir():
        files = _coordinate_files(path)
        if not files:
            raise InputError(
                f"directory holds no coordinate files (looked for {', '.join(sorted(_EXT_FORMAT))})",
                path,
            )
        found: dict[str, Path] = {}
        for f in files:
            found.setdefault(detect_format(f), f)
        if len(found) > 1:
            desc = ", ".join(f"{fmt} ({p.name})" for fmt, p in found.items())
            raise InputError(f"directory mixes coordinate formats: {desc}", path)
        return next(iter(found))
    sniffed = _sniff(_read_head(path))
    if sniffed is not None:
        return sniffed
    ext_fmt = _EXT_FORMAT.get(path.suffix.lower())
    if ext_fmt is not None:
        # header said nothing definite (empty file, wrong columns): the reader reports what is wrong
        return ext_fmt
    raise InputError(_UNKNOWN_FORMAT, path)


# ----------------------------------------------------------------------------------------------
# reading


def _make_table(names, xs, ys, scores=None) -> pd.DataFrame:
    data = {
        "micrograph": pd.Series([str(n) for n in names], dtype=str),
        "x": np.asarray(xs, dtype=np.float64),
        "y": np.asarray(ys, dtype=np.float64),
    }
    if scores is not None:
        data["score"] = np.asarray(scores, dtype=np.float64)
    return pd.DataFrame(data)


def _parse_float(token: str, path: Path, lineno: int, column: str) -> float:
    try:
        return float(token)
    except ValueError:
        raise InputError(
            f"cannot parse {token!r} as a number in column '{column}'", path, f"line {lineno}"
        ) from None


def _check_value(value: float, path: Path, where: str, column: str) -> float:
    """Refuse at read what no micrograph can hold: NaN/inf, negative or absurd coordinates."""
    if not np.isfinite(value):
        raise InputError(f"{column} is {value}; expected a finite number", path, where)
    if column != "score" and not 0.0 <= value <= MAX_COORDINATE_PX:
        raise InputError(
            f"{column} = {value:g} is outside 0..{MAX_COORDINATE_PX:g} px; coordinates are pixel "
            "positions in the micrograph (check the column order and units)",
            path,
            where,
        )
    return value


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read file ({err.strerror})", path) from err
    if b"\x00" in raw:
        raise InputError("not a text file (binary content)", path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text (byte {err.start})", path) from None


def _read_header_table(
    path: Path,
    *,
    delimiter: str | None,
    required: dict[str, tuple[str, ...]],
    optional: dict[str, tuple[str, ...]],
    header_hint: str,
) -> tuple[dict[str, list], int]:
    """Parse a text table with a header line; return column lists keyed by our names, and row count.

    ``delimiter=None`` means tab if the header has one, else runs of whitespace; "," uses the csv
    module (quoted names allowed). Blank lines and lines starting with '#' are skipped.
    """
    text = _read_text(path)
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines())]
    lines = [(i, ln) for i, ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"empty coordinate file (expected a header '{header_hint}')", path)

    if delimiter == ",":

        def split(s: str) -> list[str]:
            return next(csv.reader([s]))
    else:
        tab = "\t" in lines[0][1]

        def split(s: str) -> list[str]:
            return s.rstrip("\r\n").split("\t") if tab else s.split()

    header_line, header = lines[0]
    header_cols = [h.strip().lower() for h in split(header)]
    index: dict[str, int] = {}
    for key, names in {**required, **optional}.items():
        for name in names:
            if name.lower() in header_cols:
                index[key] = header_cols.index(name.lower())
                break
    missing = [names[0] for key, names in required.items() if key not in index]
    if missing:
        raise InputError(
            f"missing required column(s) {', '.join(repr(m) for m in missing)}; "
            f"expected a header '{header_hint}', found {header.strip()!r}",
            path,
            f"line {header_line}",
        )
    numeric = {k for k in index if k != "micrograph"}
    out: dict[str, list] = {k: [] for k in index}
    header_names = {k: split(header)[i].strip() for k, i in index.items()}
    width = max(index.values()) + 1
    for lineno, line in lines[1:]:
        fields = split(line)
        if len(fields) < width:
            raise InputError(
                f"expected at least {width} fields, found {len(fields)}", path, f"line {lineno}"
            )
        for key, col in index.items():
            tok = fields[col].strip()
            if key in numeric:
                if key == "diameter" and tok == "":
                    out[key].append(np.nan)
                    continue
                value = _parse_float(tok, path, lineno, header_names[key])
                if key in ("x", "y", "score"):
                    name = "score" if key == "score" else header_names[key]
                    _check_value(value, path, f"line {lineno}", name)
                out[key].append(value)
            else:
                # a micrograph name becomes a file name in per-micrograph outputs: refuse at read
                # what could point outside an output directory
                out[key].append(safe_output_name(tok, path, f"line {lineno}"))
    return out, len(lines) - 1


def _read_tsv(path: Path) -> pd.DataFrame:
    cols, _ = _read_header_table(
        path,
        delimiter=None,
        required={"micrograph": ("image_name",), "x": ("x_coord",), "y": ("y_coord",)},
        optional={"score": ("score",)},
        header_hint="image_name<TAB>x_coord<TAB>y_coord[<TAB>score]",
    )
    return _make_table(cols["micrograph"], cols["x"], cols["y"], cols.get("score"))


def _read_csv(path: Path) -> pd.DataFrame:
    cols, _ = _read_header_table(
        path,
        delimiter=",",
        required={"micrograph": ("micrograph",), "x": ("x",), "y": ("y",)},
        optional={"score": ("score",)},
        header_hint="micrograph,x,y[,score]",
    )
    return _make_table(cols["micrograph"], cols["x"], cols["y"], cols.get("score"))


def _read_cryoppp(path: Path) -> pd.DataFrame:
    cols, _ = _read_header_table(
        path,
        delimiter=",",
        required={"x": ("X-Coordinate",), "y": ("Y-Coordinate",)},
        optional={"diameter": ("Diameter",)},
        header_hint="X-Coordinate,Y-Coordinate,Diameter",
    )
    name = _name_from_file(path, "cryoppp")
    return _make_table([name] * len(cols["x"]), cols["x"], cols["y"])


def _read_box(path: Path) -> pd.DataFrame:
    text = _read_text(path)
    name = _name_from_file(path, "box")
    xs, ys = [], []
    labels = ("x corner", "y corner", "box width", "box height")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 4:
            raise InputError(
                f"expected 4 numbers 'x_corner y_corner width height', found {len(fields)} field(s)",
                path,
                f"line {lineno}",
            )
        x0, y0, w, h = (
            _parse_float(t, path, lineno, c) for t, c in zip(fields[:4], labels, strict=True)
        )
        for value, label in ((x0, "x corner"), (y0, "y corner")):
            if not np.isfinite(value) or abs(value) > MAX_COORDINATE_PX:
                _check_value(value, path, f"line {lineno}", label)
        for value, label in ((w, "box width"), (h, "box height")):
            if not (np.isfinite(value) and 0 <= value <= MAX_COORDINATE_PX):
                raise InputError(
                    f"{label} = {value:g}; expected a size in 0..{MAX_COORDINATE_PX:g} px",
                    path,
                    f"line {lineno}",
                )
        # a box may stick out of the image (corner < 0), its centre may not
        xs.append(_check_value(x0 + w / 2.0, path, f"line {lineno}", "x centre"))
        ys.append(_check_value(y0 + h / 2.0, path, f"line {lineno}", "y centre"))
    if not xs:
        raise InputError("empty coordinate file (no boxes)", path)
    return _make_table([name] * len(xs), xs, ys)


def _star_blocks(path: Path) -> dict:
    import starfile

    try:
        # names such as 001 must stay strings, not become the integer 1
        blocks = starfile.read(path, always_dict=True, parse_as_string=["rlnMicrographName"])
    except Exception as err:  # starfile raises assorted parser errors
        raise InputError(f"cannot parse STAR file ({type(err).__name__}: {err})", path) from err
    return blocks


def _read_star(path: Path) -> pd.DataFrame:
    blocks = _star_blocks(path)
    if not blocks:
        text = _read_text(path)
        if not text.strip():
            raise InputError("empty coordinate file", path)
        raise InputError("no data_ block found in STAR file", path)
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
    block_name, block = next(((n, b) for n, b in candidates if n == "particles"), candidates[0])
    where = f"data_{block_name}"
    if "rlnCoordinateY" not in block.columns:
        raise InputError(
            "missing required key _rlnCoordinateY", path, f"{where}, key _rlnCoordinateY"
        )
    if len(block) == 0:
        raise InputError("empty coordinate file (STAR loop has no rows)", path, where)

    def numeric(key: str, column: str) -> np.ndarray:
        values = pd.to_numeric(block[key], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(values) & ~block[key].astype(str).str.strip().str.lower().isin(["nan"])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"cannot parse {str(block[key].iloc[row])!r} as a number",
                path,
                f"{where}, row {row + 1}, key _{key}",
            )
        if column == "score":
            wrong = ~np.isfinite(values)
        else:
            wrong = ~(np.isfinite(values) & (values >= 0) & (values <= MAX_COORDINATE_PX))
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            _check_value(float(values[row]), path, f"{where}, row {row + 1}, key _{key}", column)
        return values

    xs, ys = numeric("rlnCoordinateX", "x"), numeric("rlnCoordinateY", "y")
    has_score = "rlnAutopickFigureOfMerit" in block
    scores = numeric("rlnAutopickFigureOfMerit", "score") if has_score else None
    if "rlnMicrographName" in block.columns:
        names = [
            safe_output_name(
                micrograph_name_from_reference(v),
                path,
                f"{where}, row {i + 1}, key _rlnMicrographName",
            )
            for i, v in enumerate(block["rlnMicrographName"].astype(str))
        ]
    else:
        names = [_name_from_file(path, "star3.0")] * len(xs)
    return _make_table(names, xs, ys, scores)


_READERS = {
    "tsv": _read_tsv,
    "star3.0": _read_star,
    "star3.1": _read_star,
    "box": _read_box,
    "cryoppp": _read_cryoppp,
    "csv": _read_csv,
}


def read_coordinates(path: str | os.PathLike, fmt: str | None = None) -> pd.DataFrame:
    """Read particle coordinates into a DataFrame with columns micrograph, x, y (and score if stored).

    ``path`` is one file or a directory of per-micrograph files (all of one format). ``fmt`` is
    one of :data:`FORMATS` (or an alias such as ``star``); ``None`` detects it from the header and
    extension. Box files are converted from corners to centres. Formats without a micrograph
    column (box, CryoPPP, STAR without _rlnMicrographName) take the micrograph name from the file
    name (RELION's ``_autopick``/``_manualpick`` suffix removed for STAR). Bad input raises
    :class:`InputError` naming the file and line or key.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("coordinate file not found", path)
    fmt = canonical_format(fmt) if fmt is not None else detect_format(path)
    reader = _READERS[fmt]
    if not path.is_dir():
        df = reader(path)
        if len(df) == 0:
            raise InputError("empty coordinate file (header but no coordinates)", path)
        return df
    files = _coordinate_files(path)
    if not files:
        raise InputError("directory holds no coordinate files", path)
    tables = []
    for f in files:
        if f.stat().st_size == 0:
            log.warning("%s: empty coordinate file, no particles for this micrograph", f)
            continue
        try:
            tables.append(reader(f))
        except InputError as err:
            # a header-only file is a micrograph without particles; anything else is an error
            if str(err.problem).startswith("empty coordinate file"):
                log.warning("%s: %s", f, err.problem)
                continue
            raise
    tables = [t for t in tables if len(t)]
    if not tables:
        raise InputError("no coordinates in any file of the directory", path)
    with_score = all("score" in t.columns for t in tables)
    if not with_score:
        tables = [t.drop(columns="score", errors="ignore") for t in tables]
    return pd.concat(tables, ignore_index=True)


# ----------------------------------------------------------------------------------------------
# validation


def _check_columns(df: pd.DataFrame, source: str | os.PathLike | None) -> None:
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"coordinate table lacks column(s) {', '.join(missing)} (need micrograph, x, y)", source
        )


def validate_coordinates(
    df: pd.DataFrame,
    shapes: Mapping[str, tuple[int, int]],
    source: str | os.PathLike | None = None,
) -> None:
    """Check a coordinate table against micrograph shapes ``{name: (H, W)}``; raise InputError if bad.

    Errors (each naming ``source``, the row, micrograph and coordinates): empty table, NaN or
    infinite coordinates, micrographs not in ``shapes``, positions outside the image
    (x < 0, y < 0, x >= W or y >= H). Row numbers count data rows from 1 in table order.
    """
    _check_columns(df, source)
    if len(df) == 0:
        raise InputError("coordinate table is empty (no particles)", source)
    xs = df["x"].to_numpy(dtype=np.float64)
    ys = df["y"].to_numpy(dtype=np.float64)
    names = df["micrograph"].astype(str).to_numpy()

    def row_desc(i: int) -> str:
        return f"row {i + 1} (micrograph '{names[i]}', x={xs[i]:g}, y={ys[i]:g})"

    bad = ~(np.isfinite(xs) & np.isfinite(ys))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{int(bad.sum())} coordinate(s) are NaN or infinite", source, row_desc(i))
    unknown = sorted(set(names) - set(shapes))
    if unknown:
        i = int(np.flatnonzero(names == unknown[0])[0])
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        known = ", ".join(repr(k) for k in list(shapes)[:5]) + (" ..." if len(shapes) > 5 else "")
        raise InputError(
            f"{len(unknown)} micrograph name(s) not among the micrographs: {shown} "
            f"(known: {known or 'none'})",
            source,
            row_desc(i),
        )
    heights = np.array([shapes[n][0] for n in names], dtype=np.float64)
    widths = np.array([shapes[n][1] for n in names], dtype=np.float64)
    outside = (xs < 0) | (ys < 0) | (xs >= widths) | (ys >= heights)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise InputError(
            f"{int(outside.sum())} coordinate(s) outside the image; this one lies outside "
            f"{int(widths[i])} x {int(heights[i])} (W x H) - check scale or flip_y",
            source,
            row_desc(i),
        )


# ----------------------------------------------------------------------------------------------
# transforms


def transform_coordinates(
    df: pd.DataFrame,
    scale: float = 1.0,
    flip_y: bool = False,
    heights: Mapping[str, float] | float | None = None,
) -> pd.DataFrame:
    """Return a copy with y flipped (y' = H - 1 - y, before scaling) and x, y multiplied by ``scale``.

    ``heights`` is the image height H in the frame of the input coordinates: one number for
    all micrographs or ``{name: H}``; it is required when ``flip_y`` is true.
    """
    if not np.isfinite(scale) or scale <= 0:
        raise InputError(f"scale must be a positive number, got {scale}")
    out = df.copy()
    if flip_y:
        if heights is None:
            raise InputError("flip_y needs the image heights (image_height or micrographs)")
        if isinstance(heights, Mapping):
            missing = sorted(set(out["micrograph"].astype(str)) - set(heights))
            if missing:
                raise InputError(
                    f"no image height for micrograph(s) {', '.join(repr(m) for m in missing[:5])}"
                )
            h = out["micrograph"].astype(str).map(dict(heights)).to_numpy(dtype=np.float64)
        else:
            h = float(heights)
        out["y"] = h - 1.0 - out["y"].to_numpy(dtype=np.float64)
    # the one place that multiplies coordinates (geometry); x, y become float64 either way
    out["x"] = out["x"].to_numpy(dtype=np.float64)
    out["y"] = out["y"].to_numpy(dtype=np.float64)
    return rescale_coordinates(out, scale)


# ----------------------------------------------------------------------------------------------
# writing


def _fmt_number(value: float) -> str:
    if not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return np.format_float_positional(float(value), precision=6, trim="-")


def _has_score(df: pd.DataFrame) -> bool:
    return "score" in df.columns


def _write_tsv(df: pd.DataFrame, target: Path, box_size: float | None) -> None:
    score = _has_score(df)
    buf = io.StringIO()
    buf.write("image_name\tx_coord\ty_coord" + ("\tscore" if score else "") + "\n")
    cols = [df["micrograph"].astype(str), df["x"], df["y"]] + ([df["score"]] if score else [])
    for row in zip(*cols, strict=True):
        buf.write(row[0] + "\t" + "\t".join(_fmt_number(v) for v in row[1:]) + "\n")
    target.write_text(buf.getvalue())


def _write_csv(df: pd.DataFrame, target: Path, box_size: float | None) -> None:
    score = _has_score(df)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["micrograph", "x", "y"] + (["score"] if score else []))
    cols = [df["micrograph"].astype(str), df["x"], df["y"]] + ([df["score"]] if score else [])
    for row in zip(*cols, strict=True):
        writer.writerow([row[0]] + [_fmt_number(v) for v in row[1:]])
    target.write_text(buf.getvalue())


def _write_cryoppp(df: pd.DataFrame, target: Path, box_size: float | None) -> None:
    diameter = "" if box_size is None else _fmt_number(box_size)
    lines = ["X-Coordinate,Y-Coordinate,Diameter"]
    for x, y in zip(df["x"], df["y"], strict=True):
        lines.append(f"{_fmt_number(x)},{_fmt_number(y)},{diameter}")
    target.write_text("\n".join(lines) + "\n")


def _write_box(df: pd.DataFrame, target: Path, box_size: float | None) -> None:
    assert box_size is not None
    half = box_size / 2.0
    size = _fmt_number(box_size)
    lines = [
        f"{_fmt_number(x - half)}\t{_fmt_number(y - half)}\t{size}\t{size}"
        for x, y in zip(df["x"], df["y"], strict=True)
    ]
    target.write_text("\n".join(lines) + ("\n" if lines else ""))


def _star_particles(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "rlnMicrographName": df["micrograph"].astype(str).to_numpy(),
            "rlnCoordinateX": df["x"].to_numpy(dtype=np.float64),
            "rlnCoordinateY": df["y"].to_numpy(dtype=np.float64),
        }
    )
    if _has_score(df):
        out["rlnAutopickFigureOfMerit"] = df["score"].to_numpy(dtype=np.float64)
    return out


def _write_star30(df: pd.DataFrame, target: Path, box_size: float | None) -> None:
    import starfile

    starfile.write({"": _star_particles(df)}, target, float_format="%.6f")


def _write_star31(df: pd.DataFrame, target: Path, box_size: float | None) -> None:
    import starfile

    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"]})
    particles = _star_particles(df)
    particles["rlnOpticsGroup"] = 1
    starfile.write({"optics": optics, "particles": particles}, target, float_format="%.6f")


_WRITERS = {
    "tsv": _write_tsv,
    "star3.0": _write_star30,
    "star3.1": _write_star31,
    "box": _write_box,
    "cryoppp": _write_cryoppp,
    "csv": _write_csv,
}


def _format_for_output(path: Path) -> str:
    # as when reading, except that a new .star file is RELION 3.1
    fmt = {**_EXT_FORMAT, ".star": "star3.1"}.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"cannot tell the output format from the extension '{path.suffix}'; pass fmt= one of "
            f"{', '.join(FORMATS)}",
            path,
        )
    return fmt


def check_coordinate_output(
    path: str | os.PathLike, overwrite: bool = False, per_micrograph: bool = False
) -> Path:
    """Refuse now an output that :func:`write_coordinates` would refuse; return it as a Path.

    One file: it must not exist unless ``overwrite``. One file per micrograph: ``path`` must be
    a directory (or not exist yet), and a non-empty one is refused unless ``overwrite``.
    """
    path = Path(path)
    if not per_micrograph:
        return check_writable(path, overwrite)
    return check_output_dir(path, overwrite)


def per_micrograph_paths(
    names: list[str] | pd.Series, directory: str | os.PathLike, fmt: str
) -> dict[str, Path]:
    """``{name: directory/<name><ext>}`` for one-file-per-micrograph output, refusing any name
    that is not a plain file name (InputError naming the first bad row) so data can never
    choose a path outside ``directory``."""
    directory = Path(directory)
    ext = EXTENSIONS[canonical_format(fmt)]
    out: dict[str, Path] = {}
    for row, name in enumerate(pd.Series(names).astype(str), start=1):
        if name not in out:
            safe_output_name(name, source=None, where=f"row {row}")
            out[name] = directory / f"{name}{ext}"
    return out


def _check_finite_xy(df: pd.DataFrame, path: Path) -> None:
    xy = df[["x", "y"]].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{int(bad.sum())} coordinate(s) are NaN or infinite; not writing them",
            path,
            f"row {row + 1} (micrograph {str(df['micrograph'].iloc[row])!r})",
        )


def write_coordinates(
    df: pd.DataFrame,
    path: str | os.PathLike,
    fmt: str | None = None,
    overwrite: bool = False,
    per_micrograph: bool = False,
    box_size: float | None = None,
) -> Path:
    """Write a coordinate table (micrograph, x, y[, score]) to ``path``; return the path written.

    ``fmt`` is one of :data:`FORMATS` or an alias (``star`` = RELION 3.1 with an optics block);
    ``None`` takes it from the extension (``.csv`` means plain CSV; pass ``fmt="cryoppp"`` for
    CryoPPP). ``per_micrograph=True`` writes ``path/<micrograph><ext>`` for each micrograph
    (required for box and CryoPPP when the table holds several micrographs). ``box_size`` (px) is
    required for .box (corner = centre - box_size/2) and fills CryoPPP's Diameter column.
    Outputs are written atomically and an existing output is refused unless ``overwrite``.
    """
    path = Path(path)
    _check_columns(df, path)
    if fmt is None:
        if per_micrograph:
            raise InputError("writing one file per micrograph needs an explicit fmt", path)
        fmt = _format_for_output(path)
    fmt = canonical_format(fmt)
    if fmt == "box" and (box_size is None or not np.isfinite(box_size) or box_size <= 0):
        raise InputError("writing EMAN .box files needs a positive box_size (pixels)", path)
    writer = _WRITERS[fmt]
    _check_finite_xy(df, path)
    names = list(dict.fromkeys(df["micrograph"].astype(str)))

    if not per_micrograph:
        if fmt in ONE_MICROGRAPH_PER_FILE and len(names) > 1:
            raise InputError(
                f"the {fmt} format holds one micrograph per file but the table has {len(names)}; "
                "use per_micrograph=true with a directory output",
                path,
            )
        with atomic_output(path, overwrite=overwrite) as tmp:
            writer(df, tmp, box_size)
        return path

    groups = {name: group for name, group in df.groupby(df["micrograph"].astype(str), sort=False)}
    try:
        targets = per_micrograph_paths(df["micrograph"], path, fmt)
    except InputError as err:
        raise InputError(err.problem, path, f"table {err.where}") from None
    check_coordinate_output(path, overwrite, per_micrograph=True)
    if path.is_dir() and any(path.iterdir()):  # overwrite: replace file by file
        for name in names:
            with atomic_output(targets[name], overwrite=True) as tmp:
                writer(groups[name], tmp, box_size)
        return path
    # fresh directory: build it beside the target, then rename it into place in one step
    tmp_dir = make_temp_dir(path)
    try:
        for name in names:
            writer(groups[name], tmp_dir / targets[name].name, box_size)
        if path.is_dir():
            path.rmdir()  # empty (checked above)
        os.replace(tmp_dir, path)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return path
