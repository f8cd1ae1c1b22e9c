"""Small shared helpers: atomic output files, run metadata, seeding."""

from topaz_lightning.utils.atomic import atomic_output, check_writable

__all__ = ["atomic_output", "check_writable"]
