"""Micrograph files: read MRC/TIFF/PNG/JPEG into float32 [row, col] = [y, x] arrays, write MRC."""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from topaz_lightning.errors import InputError
from topaz_lightning.io.mrc import IMOD_STAMP, open_mrc, read_mrc, single_section

# names this module had before io/mrc.py took the MRC reading (kept for old importers)
_open_mrc, _read_mrc, _single_section = open_mrc, read_mrc, single_section
__all__ = [
    "IMOD_STAMP",
    "MAX_PIXEL_MAGNITUDE",
    "list_micrographs",
    "micrograph_name",
    "read_micrograph",
    "read_micrograph_names",
    "read_micrograph_shape",
    "read_pixel_size",
    "write_micrograph",
]

MRC_EXTENSIONS = (".mrc",)
TIFF_EXTENSIONS = (".tif", ".tiff")
PIL_EXTENSIONS = (".png", ".jpg", ".jpeg")
SUPPORTED_EXTENSIONS = MRC_EXTENSIONS + TIFF_EXTENSIONS + PIL_EXTENSIONS

# ITU-R BT.601 luma weights, the same ones Pillow uses for RGB -> "L"
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])

# a voxel size equal to one of these is what software writes when it does not know the pixel size
UNSET_PIXEL_SIZES = (0.0, 1.0)

#: The largest pixel magnitude read. float32 holds up to 3.4e38, but a value near that limit
#: turns into inf after any arithmetic (a sum, a square, a Fourier transform); below 1e30 even a
#: float32 sum over a 4096 x 4096 micrograph (1.7e7 pixels) stays finite. Real micrographs hold
#: counts or normalized values many orders of magnitude smaller.
MAX_PIXEL_MAGNITUDE = 1.0e30


def micrograph_name(path: str | os.PathLike) -> str:
    """The micrograph's name used in coordinate tables: the file name without directory and extension."""
    return Path(path).stem


def _extension(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise InputError(
            f"unknown micrograph file extension '{path.suffix}'; expected one of "
            + ", ".join(SUPPORTED_EXTENSIONS),
            path=path,
        )
    return ext


def _existing_micrograph(path: str | os.PathLike) -> tuple[Path, str]:
    """``(path, lower-case extension)`` of a file that exists and has a supported extension."""
    path = Path(path)
    ext = _extension(path)
    if not path.is_file():
        raise InputError("micrograph file not found", path=path)
    return path, ext


def read_micrograph(path: str | os.PathLike) -> np.ndarray:
    """Read one micrograph as a 2-D ``float32`` array indexed ``[row, col] = [y, x]`` (a copy).

    MRC (modes 0, 1, 2, 6, 12; a 2-D image or a 3-D file with one section) is memory-mapped, so
    only the section is read (mode 0 is signed int8 as MRC2014 says, except that a file stamped
    by IMOD without its "signed bytes" flag is read as uint8, as IMOD means it); TIFF through tifffile; PNG/JPEG (8- or 16-bit grayscale) through
    Pillow. No flip or transpose is applied: MRC ``data[y, x]`` and the top row of a picture file
    are row 0. RGB(A)/palette pictures are converted to luminance with the ITU-R BT.601 weights
    (0.299 R + 0.587 G + 0.114 B, alpha dropped) and a warning; micrographs should be grayscale.

    Raises ``InputError`` naming the file for: a missing file, an unknown extension, a truncated
    or corrupt file, a stack or volume with more than one section, an empty image, NaN/inf
    pixels, and pixels beyond +-MAX_PIXEL_MAGNITUDE (1e30), which turn non-finite after any
    arithmetic. An MRC header with a non-standard axis order is refused; one with MAPC/MAPR/MAPS
    unset (0, 0, 0) is read in the standard order (x fastest) with a warning naming the file.
    """
    path, ext = _existing_micrograph(path)
    if ext in MRC_EXTENSIONS:
        image = read_mrc(path)
    elif ext in TIFF_EXTENSIONS:
        image = _read_tiff(path)
    else:
        image = _read_pil(path)
    return _validated(image, path)


def _validated(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim != 2:
        raise InputError(f"expected a 2-D image, found an array of shape {image.shape}", path=path)
    if image.size == 0:
        raise InputError(f"empty image (shape {image.shape})", path=path)
    if np.iscomplexobj(image):
        raise InputError("complex-valued image; expected real pixel values", path=path)
    out = np.array(image, dtype=np.float32, order="C", copy=True)
    finite = np.isfinite(out)
    if not finite.all():
        bad = np.argwhere(~finite)
        y, x = bad[0]
        raise InputError(
            f"{len(bad)} pixel(s) are NaN or infinite (first at x={x}, y={y}); "
            "expected finite values",
            path=path,
        )
    magnitude = np.abs(out)
    bound = np.float32(MAX_PIXEL_MAGNITUDE)  # compared in float32: the bound itself is read
    if magnitude.max() > bound:
        huge = magnitude > bound
        y, x = np.argwhere(huge)[0]
        raise InputError(
            f"{int(huge.sum())} pixel(s) have a magnitude above {MAX_PIXEL_MAGNITUDE:g} (first at "
            f"x={x}, y={y}: {float(out[y, x]):g}); such values turn non-finite after any "
            "arithmetic: the file is corrupt or not a micrograph",
            path=path,
        )
    return out


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            data = series.asarray()
    except Exception as err:  # noqa: BLE001 - tifffile raises many types for bad files
        raise InputError(f"not a readable TIFF file ({err})", path=path) from err
    if "S" in axes and data.ndim == 3 and axes.index("S") == 2:
        data = _luminance(data, path)
        axes = axes.replace("S", "")
    # drop singleton axes (a single page or sample); anything left beyond Y, X is a stack
    keep = [i for i, n in enumerate(data.shape) if n != 1 or axes[i] in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    return single_section(data, path)


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA")
                mode = img.mode
            if mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
                return np.asarray(img)
            if mode in ("LA", "La"):
                return np.asarray(img)[..., 0]
            if mode in ("RGB", "RGBA", "RGBa", "RGBX"):
                return _luminance(np.asarray(img), path)
            if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                return _luminance(np.asarray(img.convert("RGB")), path)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError...
        raise InputError(f"not a readable image file ({err})", path=path) from err
    raise InputError(f"unsupported image mode '{mode}'; expected grayscale", path=path)


def _luminance(rgb: np.ndarray, path: Path) -> np.ndarray:
    if rgb.shape[-1] not in (3, 4):
        raise InputError(
            f"image with {rgb.shape[-1]} colour channels; expected grayscale, RGB or RGBA",
            path=path,
        )
    channels = rgb[..., :3].astype(np.float64)
    if not (
        np.array_equal(channels[..., 0], channels[..., 1])
        and np.array_equal(channels[..., 0], channels[..., 2])
    ):
        warnings.warn(
            f"{path}: colour image converted to grayscale luminance (0.299 R + 0.587 G + 0.114 B)",
            UserWarning,
            stacklevel=4,
        )
        return channels @ LUMA_WEIGHTS
    return channels[..., 0]


def read_micrograph_shape(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of a micrograph, from the header where the format allows (MRC: the
    validated header, no pixels read; PNG/JPEG: the picture header; TIFF: the image itself), so
    coordinates can be checked against the image before any long work."""
    path, ext = _existing_micrograph(path)
    if ext in MRC_EXTENSIONS:
        mrc = open_mrc(path)
        try:
            data = mrc.data
            if data is None or data.ndim not in (2, 3):
                raise InputError("not a 2-D MRC micrograph", path=path)
            return tuple(int(n) for n in single_section(data, path).shape)
        finally:
            mrc.close()
    if ext in PIL_EXTENSIONS:
        from PIL import Image

        try:
            with Image.open(path) as img:
                width, height = img.size
        except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad files
            raise InputError(f"not a readable image file ({err})", path=path) from err
        return int(height), int(width)
    return tuple(int(n) for n in read_micrograph(path).shape)


def read_pixel_size(path: str | os.PathLike) -> float | None:
    """Pixel size in Angstrom per pixel from an MRC header, or None when it is not known.

    The MRC voxel size is ``cella / mx`` along x. Software that does not know the pixel size
    writes 0 or 1.0 there (the shared UCSF sample has 1.0), so both are reported as None; a true
    1.0 A/px micrograph therefore reads as "unknown" too. TIFF/PNG/JPEG carry no reliable pixel
    size: always None.
    """
    path, ext = _existing_micrograph(path)
    if ext not in MRC_EXTENSIONS:
        return None
    mrc = open_mrc(path)
    try:
        size = float(mrc.voxel_size.x)
    finally:
        mrc.close()
    if not np.isfinite(size) or size <= 0 or size in UNSET_PIXEL_SIZES:
        return None
    return size


def write_micrograph(
    path: str | os.PathLike,
    image: np.ndarray,
    pixel_size_a: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a 2-D image as an MRC file (mode 2, float32) with ``image[y, x]`` as ``data[y, x]``.

    ``pixel_size_a`` (A/px) goes into the voxel size for x, y and z; None leaves it 0 (unset).
    The file is written to a temporary name and renamed into place, so an interrupted write
    never leaves a partial file; an existing file raises ``OutputExistsError`` unless
    ``overwrite`` is True. Non-finite pixels raise ValueError. Returns the path written.
    """
    import mrcfile

    from topaz_lightning.utils.atomic import atomic_output

    path = Path(path)
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(
            f"{path}: write_micrograph expects a non-empty 2-D image, got shape {image.shape}"
        )
    data = np.ascontiguousarray(image, dtype=np.float32)
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: refusing to write an image with NaN or infinite pixels")
    with atomic_output(path, overwrite=overwrite) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(data)
            if pixel_size_a is not None:
                mrc.voxel_size = float(pixel_size_a)
            mrc.update_header_stats()
    return path


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def list_micrographs(source: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[str, Path]:
    """Find micrograph files and key them by micrograph name (file stem), in sorted order.

    ``source`` is one of: a directory (every file in it with a supported extension, not
    recursive); a glob pattern such as ``data/*.mrc``; a single micrograph file; a text file
    listing one micrograph path per line (relative paths are relative to the list file's
    directory; blank lines and lines starting with ``#`` are ignored); or a Python list of paths.
    Raises ``InputError`` if nothing is found, a listed file is missing or has an unknown
    extension, or two files share a name.
    """
    if not isinstance(source, str | os.PathLike):
        return _keyed([Path(p) for p in source], origin=None)
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        # a dangling symbolic link is kept: reading it fails, so it is reported (failures.tsv)
        # instead of silently missing from the run
        files = sorted(
            p
            for p in path.iterdir()
            if (p.is_file() or p.is_symlink()) and p.suffix.lower() in SUPPORTED_EXTENSIONS
        )
        if not files:
            raise InputError(
                "no micrograph files (" + ", ".join(SUPPORTED_EXTENSIONS) + ") in directory",
                path=path,
            )
        return _keyed(files, origin=path)
    if path.is_file():
        if path.suffix.lower() in SUPPORTED_EXTENSIONS:
            return _keyed([path], origin=None)
        return _read_list_file(path)
    if _has_glob(text):
        files = sorted(
            Path(p) for p in glob.glob(text) if Path(p).suffix.lower() in SUPPORTED_EXTENSIONS
        )
        if not files:
            raise InputError("glob pattern matched no micrograph files", path=text)
        return _keyed(files, origin=text)
    raise InputError(
        "micrograph source not found (expected a directory, glob or list file)", path=path
    )


def read_micrograph_names(
    source: str | os.PathLike | Iterable[str],
    known: Iterable[str] | None = None,
    key: str = "micrographs",
) -> list[str]:
    """Micrograph names from a list, a text file of names or paths, or a directory/glob of files.

    A list file holds one name or path per line (blank lines and ``#`` comments ignored); an
    entry is reduced to its micrograph name (directory and image extension removed) and need not
    exist. A directory, glob pattern or single micrograph file gives the names of its files.
    Raises ``InputError`` naming the file if it is missing, unreadable or names nothing. With
    ``known``, every name must be among them: an InputError names the list file and line (a
    ConfigError names ``key[i]`` for an in-memory list).
    """
    from topaz_lightning.errors import ConfigError
    from topaz_lightning.io.coordinates import micrograph_name_from_reference

    known_set = None if known is None else set(known)

    def unknown(name: str) -> str:
        shown = sorted(known_set or ())
        more = " ..." if len(shown) > 5 else ""
        return (
            f"micrograph '{name}' is not among the micrographs (known: "
            + ", ".join(repr(n) for n in shown[:5])
            + more
            + ")"
        )

    if not isinstance(source, str | os.PathLike):
        names = [micrograph_name_from_reference(str(s)) for s in source]
        if known_set is not None:
            if not names:
                raise ConfigError(key, "the micrograph list is empty")
            for i, name in enumerate(names):
                if name not in known_set:
                    raise ConfigError(f"{key}[{i}]", unknown(name))
        return names
    path = Path(source)
    if path.is_dir() or (not path.exists() and _has_glob(os.fspath(source))):
        names = list(list_micrographs(source))
        where_of = {}
    elif not path.is_file():
        raise InputError("micrograph name list not found", path=path)
    elif path.suffix.lower() in SUPPORTED_EXTENSIONS:  # one micrograph file, not a list
        names, where_of = [micrograph_name(path)], {}
    else:
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"cannot read micrograph name list ({err})", path=path) from err
        names, where_of = [], {}
        for number, line in enumerate(lines, start=1):
            entry = line.strip()
            if entry and not entry.startswith("#"):
                name = micrograph_name_from_reference(entry)
                where_of.setdefault(name, f"line {number}")
                names.append(name)
        if not names:
            raise InputError("micrograph name list is empty", path=path)
    if known_set is not None:
        for name in names:
            if name not in known_set:
                raise InputError(unknown(name), path=path, where=where_of.get(name))
    return names


def _read_list_file(list_path: Path) -> dict[str, Path]:
    try:
        lines = list_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read micrograph list file ({err})", path=list_path) from err
    files = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(entry)
        if not p.is_absolute():
            p = list_path.parent / p
        where = f"line {number}"
        if p.suffix.lower() not in SUPPORTED_EXTENSIONS:
            raise InputError(
                f"'{entry}' has an unknown micrograph extension; expected one of "
                + ", ".join(SUPPORTED_EXTENSIONS),
                path=list_path,
                where=where,
            )
        if not p.is_file():
            raise InputError(f"listed micrograph '{entry}' not found", path=list_path, where=where)
        files.append(p)
    if not files:
        raise InputError("micrograph list file names no micrographs", path=list_path)
    return _keyed(files, origin=list_path)


def _keyed(files: list[Path], origin: str | os.PathLike | None) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        _existing_micrograph(p)
        name = micrograph_name(p)
        if name in out:
            raise InputError(
                f"two micrographs share the name '{name}': {out[name]} and {p}",
                path=origin if origin is not None else p,
            )
        out[name] = p
    if not out:
        raise InputError("no micrographs given", path=origin)
    return out
