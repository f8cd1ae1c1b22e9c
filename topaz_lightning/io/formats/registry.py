"""The coordinate-format registry: one record per format, found in this package or an entry point.

A format is one module in ``topaz_lightning/io/formats/`` whose ``FORMATS`` is a tuple of
:class:`CoordinateFormat` records (a module may hold variants, like STAR's 3.0 and 3.1). Code
outside the package registers through the entry-point group ``topaz_lightning.coordinate_formats``
(an entry point names a record or a tuple of them) or by calling :func:`register_format`.
Everything about a format (its names, extensions, sniffing, reading, writing) lives in its record;
``io.coordinates`` only dispatches.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from topaz_lightning.errors import InputError

log = logging.getLogger(__name__)

#: entry-point group through which other packages add coordinate formats
ENTRY_POINT_GROUP = "topaz_lightning.coordinate_formats"


@dataclass(frozen=True)
class CoordinateFormat:
    """One coordinate file format.

    ``sniff(lines)`` gets the first data lines of a file (blank lines and ``#`` comments removed,
    each stripped) and returns True when they say, beyond doubt, that the file is this format;
    sniffs run in ``order`` and the first that claims wins (tests/test_io_coordinates.py checks
    that each built-in sniff claims only its own header). ``read(path)`` returns the table micrograph,
    x, y[, score] (positions in pixels, checked at read with the file and line);
    ``write(df, path, box_size_px)`` writes one file.
    """

    #: canonical name (what ``fmt=`` and ``format=`` accept besides the aliases)
    name: str
    #: the extension written (with the dot); one file per micrograph uses ``<micrograph><ext>``
    extension: str
    read: Callable[[Path], pd.DataFrame]
    write: Callable[[pd.DataFrame, Path, float | None], None]
    sniff: Callable[[list[str]], bool]
    #: one line for the list of known formats in error messages
    description: str
    #: other names accepted for ``fmt`` (case-insensitive)
    aliases: tuple[str, ...] = ()
    #: extensions (lower case, with the dot) meaning this format when the header says nothing
    read_extensions: tuple[str, ...] = ()
    #: extensions meaning this format for a new output file (``picks.star`` -> RELION 3.1)
    output_extensions: tuple[str, ...] = ()
    #: no micrograph column: the file name is the micrograph name, so several micrographs need
    #: one file each
    one_micrograph_per_file: bool = False
    #: the writer needs ``box_size_px`` (EMAN .box stores corners)
    needs_box_size: bool = False
    #: the reader keeps a score column
    has_score: bool = True
    #: listing and sniffing order (lower first); the built-ins use 10, 20, ...
    order: int = 100
    #: the writer of one micrograph's file in a per-micrograph directory, when it differs from
    #: ``write`` (RELION 3.1: a coordinate file without the optics block); None = ``write``
    write_per_micrograph: Callable[[pd.DataFrame, Path, float | None], None] | None = None


_REGISTRY: dict[str, CoordinateFormat] = {}
_LOADED = False


def register_format(fmt: CoordinateFormat, replace: bool = False) -> CoordinateFormat:
    """Add ``fmt`` to the registry; a name or alias already taken raises ValueError unless
    ``replace`` (then the record of that name is replaced)."""
    if not isinstance(fmt, CoordinateFormat):
        raise TypeError(f"expected a CoordinateFormat, got {type(fmt).__name__}")
    taken = {n: f.name for f in _REGISTRY.values() if f.name != fmt.name for n in _names(f)}
    clash = sorted(n for n in _names(fmt) if n in taken)
    if clash:
        raise ValueError(
            f"format {fmt.name!r}: name(s) {clash} already used by {taken[clash[0]]!r}"
        )
    if fmt.name in _REGISTRY and not replace:
        raise ValueError(f"format {fmt.name!r} is already registered")
    _REGISTRY[fmt.name] = fmt
    return fmt


def _names(fmt: CoordinateFormat) -> set[str]:
    return {fmt.name.lower(), *(a.lower() for a in fmt.aliases)}


def _records(value: object, origin: str) -> Iterable[CoordinateFormat]:
    records = value if isinstance(value, tuple | list) else (value,)
    for record in records:
        if not isinstance(record, CoordinateFormat):
            raise TypeError(f"{origin}: expected CoordinateFormat records, got {type(record)}")
    return records


def _load() -> None:
    """Register the formats of this package's modules, then those of entry points (once)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    package = importlib.import_module("topaz_lightning.io.formats")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in ("registry", "common") or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for record in _records(getattr(module, "FORMATS", ()), module.__name__):
            if record.name not in _REGISTRY:
                register_format(record)
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            for record in _records(entry.load(), f"entry point {entry.name}"):
                register_format(record)
        except Exception as err:  # noqa: BLE001 - a broken plug-in must not break the package
            log.warning("coordinate format entry point %r not loaded: %s", entry.name, err)


def all_formats() -> tuple[CoordinateFormat, ...]:
    """Every registered format, in listing order."""
    _load()
    return tuple(sorted(_REGISTRY.values(), key=lambda f: (f.order, f.name)))


def format_names() -> tuple[str, ...]:
    """The canonical names, in listing order."""
    return tuple(f.name for f in all_formats())


def aliases() -> dict[str, str]:
    """``{alias: canonical name}`` over every format."""
    return {a.lower(): f.name for f in all_formats() for a in f.aliases}


def get_format(name: str) -> CoordinateFormat:
    """The record of ``name`` (canonical or alias, case-insensitive); InputError if unknown."""
    _load()
    key = str(name).strip().lower()
    for fmt in all_formats():
        if key in _names(fmt):
            return fmt
    raise InputError(
        f"unknown coordinate format '{name}'; choose one of {', '.join(format_names())} "
        f"(aliases: {', '.join(sorted(aliases()))})"
    )


def read_extensions() -> dict[str, str]:
    """``{extension: format}`` used when a file's header says nothing definite."""
    out: dict[str, str] = {}
    for fmt in all_formats():
        for ext in fmt.read_extensions:
            out.setdefault(ext, fmt.name)
    return out


def output_extensions() -> dict[str, str]:
    """``{extension: format}`` for a new output file."""
    out: dict[str, str] = {}
    for fmt in all_formats():
        for ext in fmt.output_extensions:
            out.setdefault(ext, fmt.name)
    return out


def sniff_format(lines: list[str]) -> str | None:
    """The first format (in listing order) whose sniff claims ``lines``, or None."""
    for fmt in all_formats():
        if fmt.sniff(lines):
            return fmt.name
    return None


def unknown_format_message() -> str:
    """What the known formats look like, for a file no format claims."""
    descriptions = dict.fromkeys(f.description for f in all_formats())
    return "unknown coordinate format; expected one of: " + ", ".join(descriptions)
