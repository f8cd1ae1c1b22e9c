"""Coordinate file formats: one module per format, each holding its registry record(s).

Adding a format is one file here with a ``FORMATS = (CoordinateFormat(...),)`` tuple; see
:mod:`topaz_lightning.io.formats.registry` and docs/coordinates.md ("Adding a format").
"""

from __future__ import annotations

from topaz_lightning.io.formats.registry import (
    ENTRY_POINT_GROUP,
    CoordinateFormat,
    aliases,
    all_formats,
    format_names,
    get_format,
    output_extensions,
    read_extensions,
    register_format,
    sniff_format,
    unknown_format_message,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "CoordinateFormat",
    "aliases",
    "all_formats",
    "format_names",
    "get_format",
    "output_extensions",
    "read_extensions",
    "register_format",
    "sniff_format",
    "unknown_format_message",
]
