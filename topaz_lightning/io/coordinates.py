"""Particle coordinate files: read, write and detect them, whatever the format (see io.formats).

Each format (Topaz TSV, RELION STAR 3.0/3.1, EMAN BOX, CryoPPP, CSV, and any format another package
registers) is one record in :mod:`topaz_lightning.io.formats`; this module only dispatches to it
and holds what is the same for all: directories of per-micrograph files, detection, the checks
of a table against the micrographs, transforms, and atomic writing.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from topaz_lightning.errors import InputError
from topaz_lightning.geometry import rescale_coordinates
from topaz_lightning.io.formats import registry
from topaz_lightning.io.formats.common import (
    MAX_NAME_BYTES,
    check_suffix,
    checked_name,
    micrograph_name_from_reference,
)
from topaz_lightning.utils.atomic import (
    atomic_output,
    check_output_dir,
    check_writable,
    make_temp_dir,
)

log = logging.getLogger(__name__)

__all__ = [
    "canonical_format",
    "check_coordinate_output",
    "detect_format",
    "format_extension",
    "format_for_output",
    "micrograph_name_from_reference",
    "one_micrograph_per_file",
    "per_micrograph_paths",
    "read_coordinates",
    "transform_coordinates",
    "validate_coordinates",
    "write_coordinates",
]

_COLUMNS = ["micrograph", "x", "y"]


# ----------------------------------------------------------------------------------------------
# names and formats


def canonical_format(fmt: str) -> str:
    """Return the canonical format name for ``fmt`` (case-insensitive, aliases allowed)."""
    return registry.get_format(fmt).name


def format_extension(fmt: str) -> str:
    """The extension (with the dot) written for ``fmt``: per-micrograph files are
    ``<micrograph><ext>``."""
    return registry.get_format(fmt).extension


def one_micrograph_per_file(fmt: str) -> bool:
    """True when ``fmt`` has no micrograph column (box, CryoPPP): the file name is the
    micrograph name, so several micrographs need one file each."""
    return registry.get_format(fmt).one_micrograph_per_file


def format_for_output(path: str | os.PathLike) -> str:
    """The format a new output file gets from its extension (``.star`` is RELION 3.1, ``.csv``
    plain CSV); InputError naming the path when the extension says nothing."""
    path = Path(path)
    fmt = registry.output_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"cannot tell the output format from the extension '{path.suffix}'; pass fmt= one of "
            f"{', '.join(registry.format_names())}",
            path,
        )
    return fmt


def __getattr__(name: str):
    # names older callers import, derived from the registry on every access (always current);
    # new code calls the functions above
    if name == "FORMATS":  # canonical names
        return registry.format_names()
    if name == "EXTENSIONS":  # {format: extension written}
        return {f.name: f.extension for f in registry.all_formats()}
    if name == "ONE_MICROGRAPH_PER_FILE":
        return tuple(f.name for f in registry.all_formats() if f.one_micrograph_per_file)
    if name == "_EXT_FORMAT":  # {extension: format} when reading
        return registry.read_extensions()
    if name == "_ALIASES":
        return registry.aliases()
    if name == "_format_for_output":
        return format_for_output
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------
# detection


def _read_head(path: Path, nbytes: int = 65536) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(nbytes)
    except OSError as err:
        raise InputError(f"cannot read file ({err.strerror})", path) from err
    if b"\x00" in raw:
        raise InputError(
            "not a text file (binary content); " + registry.unknown_format_message(), path
        )
    return raw.decode("utf-8-sig", errors="replace")


def _sniff(head: str) -> str | None:
    """Format implied by the first lines of a file, or None if they say nothing definite."""
    lines = [ln.strip() for ln in head.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    return registry.sniff_format(lines) if lines else None


def _coordinate_files(directory: Path) -> list[Path]:
    extensions = registry.read_extensions()
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def detect_format(path: str | os.PathLike) -> str:
    """Detect the coordinate format of a file (or a directory of files) from its header and extension.

    Returns a canonical format name (``tsv``, ``star3.0``, ``star3.1``, ``box``, ``cryoppp``,
    ``csv``, or a registered one). The header decides when it is conclusive; otherwise the
    extension (``.tsv``/``.txt``, ``.star``, ``.box``, ``.csv``) does. A directory must hold
    files of a single format.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("coordinate file not found", path)
    if path.is_dir():
        files = _coordinate_files(path)
        if not files:
            looked = ", ".join(sorted(registry.read_extensions()))
            raise InputError(f"directory holds no coordinate files (looked for {looked})", path)
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
    ext_fmt = registry.read_extensions().get(path.suffix.lower())
    if ext_fmt is not None:
        # header said nothing definite (empty file, wrong columns): the reader reports what is wrong
        return ext_fmt
    raise InputError(registry.unknown_format_message(), path)


# ----------------------------------------------------------------------------------------------
# reading


def read_coordinates(path: str | os.PathLike, fmt: str | None = None) -> pd.DataFrame:
    """Read particle coordinates into a DataFrame with columns micrograph, x, y (and score if stored).

    ``path`` is one file or a directory of per-micrograph files (all of one format). ``fmt`` is
    a format name (see :func:`canonical_format`, e.g. ``star``); ``None`` detects it from the
    header and extension. Box files are converted from corners to centres. Formats without a
    micrograph column (box, CryoPPP, STAR without _rlnMicrographName) take the micrograph name
    from the file name (RELION's ``_autopick``/``_manualpick`` suffix removed for STAR). Bad
    input raises :class:`InputError` naming the file and line or key: unparsable or non-finite
    numbers, coordinates outside 0..1e6 px, scores beyond +-1e30, and micrograph names that are
    not plain printable file names (a directory part, a control character such as a newline).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("coordinate file not found", path)
    reader = registry.get_format(fmt if fmt is not None else detect_format(path)).read
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
    names: list[str] | pd.Series, directory: str | os.PathLike, fmt: str, suffix: str | None = None
) -> dict[str, Path]:
    """``{name: directory/<name>[_<suffix>]<ext>}`` for one-file-per-micrograph output.

    Refuses (InputError naming the first bad row) any name that is not a plain printable file
    name (a directory part, a control character) or is longer than MAX_NAME_BYTES (200) bytes
    in UTF-8, so data can never choose a path outside ``directory`` nor a name the file system
    (255 bytes, with the temporary name's prefix and suffix) cannot hold.
    """
    directory = Path(directory)
    ext = check_suffix(suffix) + format_extension(fmt)
    out: dict[str, Path] = {}
    for row, name in enumerate(pd.Series(names).astype(str), start=1):
        if name not in out:
            checked_name(name, source=None, where=f"row {row}")
            size = len(name.encode("utf-8", errors="surrogateescape"))
            if size > MAX_NAME_BYTES:
                raise InputError(
                    f"micrograph name of {size} bytes ({name[:40]!r}...) is too long for a "
                    f"per-micrograph file name (at most {MAX_NAME_BYTES} bytes); rename the "
                    "micrograph or write one file for all micrographs",
                    where=f"row {row}",
                )
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
    suffix: str | None = None,
) -> Path:
    """Write a coordinate table (micrograph, x, y[, score]) to ``path``; return the path written.

    ``fmt`` is a format name or alias (``star`` = RELION 3.1 with an optics block); ``None``
    takes it from the extension (:func:`format_for_output`: ``.csv`` means plain CSV; pass
    ``fmt="cryoppp"`` for CryoPPP). ``per_micrograph=True`` writes ``path/<micrograph><ext>``
    for each micrograph (required for box and CryoPPP when the table holds several micrographs),
    ``path/<micrograph>_<suffix><ext>`` with ``suffix`` (RELION's coordinate-file convention).
    ``box_size`` (micrograph px) is required for .box (corner = centre - box_size/2) and fills
    CryoPPP's Diameter column. Outputs are written atomically and an existing output is refused
    unless ``overwrite``.
    """
    path = Path(path)
    _check_columns(df, path)
    if fmt is None:
        if per_micrograph:
            raise InputError("writing one file per micrograph needs an explicit fmt", path)
        fmt = format_for_output(path)
    record = registry.get_format(fmt)
    if record.needs_box_size and (box_size is None or not np.isfinite(box_size) or box_size <= 0):
        raise InputError(f"writing {record.name} files needs a positive box_size (pixels)", path)
    _check_finite_xy(df, path)
    names = list(dict.fromkeys(df["micrograph"].astype(str)))

    if not per_micrograph:
        if record.one_micrograph_per_file and len(names) > 1:
            raise InputError(
                f"the {record.name} format holds one micrograph per file but the table has "
                f"{len(names)}; use per_micrograph=true with a directory output",
                path,
            )
        with atomic_output(path, overwrite=overwrite) as tmp:
            record.write(df, tmp, box_size)
        return path

    groups = {name: group for name, group in df.groupby(df["micrograph"].astype(str), sort=False)}
    try:
        targets = per_micrograph_paths(df["micrograph"], path, record.name, suffix)
    except InputError as err:
        raise InputError(err.problem, path, f"table {err.where}") from None
    check_coordinate_output(path, overwrite, per_micrograph=True)
    write_one = record.write_per_micrograph or record.write
    if path.is_dir() and any(path.iterdir()):  # overwrite: replace file by file
        for name in names:
            with atomic_output(targets[name], overwrite=True) as tmp:
                write_one(groups[name], tmp, box_size)
        return path
    # fresh directory: build it beside the target, then rename it into place in one step
    tmp_dir = make_temp_dir(path)
    try:
        for name in names:
            write_one(groups[name], tmp_dir / targets[name].name, box_size)
        if path.is_dir():
            path.rmdir()  # empty (checked above)
        os.replace(tmp_dir, path)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return path
