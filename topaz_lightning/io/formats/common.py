"""What every coordinate format shares: reading text safely, checking values and names, tables."""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from topaz_lightning.errors import InputError
from topaz_lightning.geometry import MAX_COORDINATE_PX
from topaz_lightning.utils.atomic import safe_output_name

#: Scores are logits or probabilities; anything larger is garbage, and keeping scores far below
#: the float64 limit keeps the threshold arithmetic of the PR curve (midpoints) finite.
MAX_ABS_SCORE = 1.0e30
#: The longest micrograph name whose per-micrograph file (name + extension) fits the 255-byte
#: file-name limit of common file systems, with room for an extension and a temporary prefix.
MAX_NAME_BYTES = 200
# Image extensions removed from micrograph references such as _rlnMicrographName.
IMAGE_EXTENSIONS = (".mrc", ".mrcs", ".tif", ".tiff", ".png", ".jpg", ".jpeg")
# Suffixes RELION appends to per-micrograph pick files (Micrograph_autopick.star).
RELION_PICK_SUFFIXES = ("_autopick", "_manualpick", "_pick")


def micrograph_name_from_reference(reference: str) -> str:
    """Micrograph name from a path-like reference: directory and image extension removed."""
    name = str(reference).replace("\\", "/").rsplit("/", 1)[-1]
    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def control_characters(text: str) -> list[str]:
    """The control characters in ``text`` (Unicode category Cc: newline, tab, carriage return,
    escape, ...; and the line/paragraph separators U+2028/U+2029, which line-splitting readers
    break at), each once, in order of appearance."""
    found: dict[str, None] = {}
    for char in text:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            found.setdefault(char, None)
    return list(found)


def checked_name(name: object, source: str | os.PathLike | None, where: str | None) -> str:
    """A micrograph name read from data, refused (InputError naming ``source`` and ``where``)
    unless it can be a file name inside an output directory: no directory part, no NUL, and no
    control characters (a newline or tab would split a row of every table it is written to)."""
    text = safe_output_name(name, source, where)
    bad = control_characters(text)
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InputError(
            f"micrograph name {text!r} contains control character(s) {shown}; names must be "
            "printable (a newline or tab would split the row in every table it is written to)",
            source,
            where,
        )
    return text


def name_from_file(path: Path, strip_relion_suffix: bool = False) -> str:
    """The micrograph name of a one-micrograph coordinate file: its name without the extension
    (and without RELION's ``_autopick``/``_manualpick``/``_pick`` for STAR files), checked."""
    name = path.name[: -len(path.suffix)] if path.suffix else path.name
    if strip_relion_suffix:
        for suffix in RELION_PICK_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return checked_name(name, path, "file name")


def make_table(names, xs, ys, scores=None) -> pd.DataFrame:
    """The coordinate table every reader returns: micrograph (str), x, y (float64)[, score]."""
    data = {
        "micrograph": pd.Series([str(n) for n in names], dtype=str),
        "x": np.asarray(xs, dtype=np.float64),
        "y": np.asarray(ys, dtype=np.float64),
    }
    if scores is not None:
        data["score"] = np.asarray(scores, dtype=np.float64)
    return pd.DataFrame(data)


def parse_float(token: str, path: Path, lineno: int, column: str) -> float:
    """``float(token)``, or InputError naming the file, line and column."""
    try:
        return float(token)
    except ValueError:
        raise InputError(
            f"cannot parse {token!r} as a number in column '{column}'", path, f"line {lineno}"
        ) from None


def check_value(value: float, path: Path, where: str, column: str) -> float:
    """Refuse at read what no micrograph can hold: NaN/inf, negative or absurd coordinates
    (outside 0..MAX_COORDINATE_PX), and scores beyond +-MAX_ABS_SCORE."""
    if not np.isfinite(value):
        raise InputError(f"{column} is {value}; expected a finite number", path, where)
    if column == "score":
        if abs(value) > MAX_ABS_SCORE:
            raise InputError(
                f"score = {value:g} is beyond +-{MAX_ABS_SCORE:g}; expected a logit or a "
                "probability",
                path,
                where,
            )
    elif not 0.0 <= value <= MAX_COORDINATE_PX:
        raise InputError(
            f"{column} = {value:g} is outside 0..{MAX_COORDINATE_PX:g} px; coordinates are pixel "
            "positions in the micrograph (check the column order and units)",
            path,
            where,
        )
    return value


def values_ok(values: np.ndarray, column: str) -> np.ndarray:
    """Vectorized :func:`check_value`: True where a value would pass it."""
    values = np.asarray(values, dtype=np.float64)
    if column == "score":
        return np.isfinite(values) & (np.abs(values) <= MAX_ABS_SCORE)
    return np.isfinite(values) & (values >= 0.0) & (values <= MAX_COORDINATE_PX)


def read_text(path: Path) -> str:
    """The file as UTF-8 text (a BOM dropped); InputError for unreadable, binary or non-UTF-8."""
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


def text_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of the lines that hold data: not blank, not a ``#`` comment.

    Lines end at ``\\n`` only (a trailing ``\\r`` is dropped; a file without any ``\\n`` ends
    its lines at ``\\r``, as old Mac files do): ``str.splitlines`` would also break at form
    feeds, ``\\x1c``-``\\x1e`` and U+2028, silently cutting a name in two; here such a
    character stays in its line and is refused with that line's number.
    """
    lines = []
    ending = "\r" if "\r" in text and "\n" not in text else "\n"  # old Mac files end at \r
    for number, line in enumerate(text.split(ending), start=1):
        line = line.removesuffix("\r")
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append((number, line))
    return lines


def read_header_table(
    path: Path,
    *,
    delimiter: str | None,
    required: dict[str, tuple[str, ...]],
    optional: dict[str, tuple[str, ...]],
    header_hint: str,
) -> dict[str, list]:
    """Parse a text table with a header line; return column lists keyed by our names.

    ``delimiter=None`` means tab if the header has one, else runs of whitespace; "," uses the csv
    module (quoted names allowed). Blank lines and lines starting with '#' are skipped. Keys of
    ``required``/``optional`` are ours (micrograph, x, y, score, diameter), values the header
    names that may hold them.
    """
    lines = text_lines(read_text(path))
    if not lines:
        raise InputError(f"empty coordinate file (expected a header '{header_hint}')", path)

    if delimiter == ",":

        def split(s: str) -> list[str]:
            try:
                return next(csv.reader([s]))
            except csv.Error as err:  # a carriage return inside an unquoted field, ...
                number = next(n for n, line in lines if line is s)
                problem = (
                    "a carriage return inside an unquoted field (quote the field or remove it)"
                    if "new-line character" in str(err)
                    else str(err)
                )
                raise InputError(f"not a CSV line: {problem}", path, f"line {number}") from None
    else:
        tab = "\t" in lines[0][1]

        def split(s: str) -> list[str]:
            return s.split("\t") if tab else s.split()

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
    out: dict[str, list] = {k: [] for k in index}
    header_names = {k: split(header)[i].strip() for k, i in index.items()}
    width = max(index.values()) + 1
    for lineno, line in lines[1:]:
        fields = split(line)
        where = f"line {lineno}"
        if len(fields) < width:
            raise InputError(f"expected at least {width} fields, found {len(fields)}", path, where)
        for key, col in index.items():
            tok = fields[col].strip()
            if key == "micrograph":
                # a micrograph name becomes a file name in per-micrograph outputs and a field in
                # every table written: refuse at read what could escape or split them
                out[key].append(checked_name(tok, path, where))
            elif key == "diameter" and tok == "":
                out[key].append(np.nan)
            else:
                value = parse_float(tok, path, lineno, header_names[key])
                if key in ("x", "y", "score"):
                    check_value(
                        value, path, where, "score" if key == "score" else header_names[key]
                    )
                out[key].append(value)
    return out


def format_number(value: float) -> str:
    """A coordinate or score as text: up to 6 decimals, trailing zeros dropped."""
    if not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return np.format_float_positional(float(value), precision=6, trim="-")


#: a per-micrograph file-name suffix (RELION's ``<micrograph>_<suffix>.star``): letters, digits, _ -
_SUFFIX_CHARS = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_suffix(suffix: str | None, key: str = "suffix") -> str:
    """``_<suffix>`` for a per-micrograph file name (``""`` for None); ConfigError if unsafe."""
    if suffix is None or suffix == "":
        return ""
    if not isinstance(suffix, str) or not _SUFFIX_CHARS.fullmatch(suffix):
        from topaz_lightning.errors import ConfigError

        raise ConfigError(key, f"must be 1-64 letters, digits, _ or -, got {suffix!r}")
    return f"_{suffix}"


#: optional column of a coordinate table: the micrograph's file as another program names it
#: (RELION's rlnMicrographName, e.g. ``MotionCorr/job002/Movies/mic001.mrc``). Writers of
#: formats that name micrographs by file (STAR) write it instead of the bare name; the others
#: ignore it, and readers return the name (``micrograph``) only.
MICROGRAPH_FILE_COLUMN = "micrograph_file"


def check_micrograph_dir(directory: object, key: str = "star_micrograph_dir") -> str | None:
    """``directory`` as a '/'-separated prefix without a trailing '/' (None for None or "");
    ConfigError naming ``key`` for a value that cannot be part of a file reference."""
    if directory is None or directory == "":
        return None
    from topaz_lightning.errors import ConfigError

    if not isinstance(directory, str):
        raise ConfigError(key, f"must be a directory path (text), got {directory!r}")
    text = directory.replace("\\", "/").rstrip("/")
    bad = control_characters(text)
    if not text or bad or any(c.isspace() for c in text):
        raise ConfigError(
            key,
            f"must be a directory path without spaces or control characters (RELION splits "
            f"STAR values at white space), got {directory!r}",
        )
    return text


def micrograph_references(
    files: Mapping[str, str | os.PathLike], directory: str | None = None
) -> dict[str, str]:
    """``{name: reference}``: each micrograph file's name with its extension
    (``mic001.mrc``), under ``directory`` when given (``MotionCorr/job002/Movies/mic001.mrc``:
    the path RELION's micrographs STAR file holds)."""
    directory = check_micrograph_dir(directory)
    out = {}
    for name, path in files.items():
        file_name = os.fspath(path).replace("\\", "/").rsplit("/", 1)[-1]
        out[str(name)] = file_name if directory is None else f"{directory}/{file_name}"
    return out


def with_micrograph_files(
    df: pd.DataFrame, files: Mapping[str, str | os.PathLike], directory: str | None = None
) -> pd.DataFrame:
    """A copy of the table with :data:`MICROGRAPH_FILE_COLUMN` filled from ``files``
    (``{name: path}``, see :func:`micrograph_references`); a micrograph without a file keeps its
    bare name."""
    references = micrograph_references(files, directory)
    out = df.copy()
    names = out["micrograph"].astype(str)
    out[MICROGRAPH_FILE_COLUMN] = names.map(references).fillna(names).astype(str)
    return out
