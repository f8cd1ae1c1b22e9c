"""Reading and writing micrographs (MRC, TIFF, PNG/JPEG) and particle coordinate files."""

from __future__ import annotations

from topaz_lightning.io.coordinates import (
    FORMATS,
    canonical_format,
    check_coordinate_output,
    detect_format,
    format_extension,
    format_for_output,
    micrograph_name_from_reference,
    one_micrograph_per_file,
    read_coordinates,
    transform_coordinates,
    validate_coordinates,
    write_coordinates,
)

# io.micrographs is resolved on first use so that importing coordinates never needs image libraries
_MICROGRAPH_NAMES = (
    "read_micrograph",
    "read_micrograph_shape",
    "read_pixel_size",
    "write_micrograph",
    "list_micrographs",
    "micrograph_name",
    "read_micrograph_names",
)

__all__ = [
    "FORMATS",
    "canonical_format",
    "check_coordinate_output",
    "detect_format",
    "format_extension",
    "format_for_output",
    "micrograph_name_from_reference",
    "one_micrograph_per_file",
    "read_coordinates",
    "transform_coordinates",
    "validate_coordinates",
    "write_coordinates",
    *_MICROGRAPH_NAMES,
]


def __getattr__(name: str):
    if name in _MICROGRAPH_NAMES:
        from topaz_lightning.io import micrographs

        return getattr(micrographs, name)
    raise AttributeError(f"module 'topaz_lightning.io' has no attribute {name!r}")
