"""MRC micrographs: open with the header checked against the file, read one section as float32."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from topaz_lightning.errors import InputError


def single_section(data: np.ndarray, path: Path) -> np.ndarray:
    if data.ndim == 3:
        if data.shape[0] != 1:
            raise InputError(
                f"3-D stack or volume with {data.shape[0]} sections (shape {data.shape}); "
                "expected a single micrograph",
                path=path,
            )
        data = data[0]
    return data


# header quirks seen in files from older software that do not change how the data is read;
# everything else mrcfile warns about (size/mode disagreeing with the file length, a truncated
# extended header, ...) means the pixels would be misread, and is refused
_TOLERATED_MRC_QUIRKS = ("Map ID string not found", "Unrecognised machine stamp")


def open_mrc(path: Path):
    """Memory-map an MRC file; any mrcfile validation warning is an InputError naming the file.

    A missing map ID or an unknown machine stamp (header quirks of older writers) are read in
    mrcfile's permissive mode with a warning, and only if nothing else is wrong.
    """
    import mrcfile

    _check_mrc_sizes(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mrc = mrcfile.mmap(path, mode="r", permissive=False)
        except Exception as strict_err:  # noqa: BLE001 - mrcfile raises ValueError, OSError...
            if not str(strict_err).startswith(_TOLERATED_MRC_QUIRKS):
                raise InputError(f"not a valid MRC file ({strict_err})", path=path) from strict_err
            mrc = _open_permissive(path, strict_err)
            return mrc
    problems = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    if problems:
        mrc.close()
        raise InputError(
            f"MRC header disagrees with the file ({'; '.join(problems)}); refusing to guess "
            "how to read the pixels",
            path=path,
        )
    try:
        _check_mrc_header(mrc.header, path)
    except InputError:
        mrc.close()
        raise
    return mrc


def _check_mrc_sizes(path: Path) -> None:
    """Refuse a header whose extended-header size exceeds the file before mrcfile reads it: mrcfile
    allocates that many bytes first (a crafted 2 GiB NSYMBT cost seconds and gigabytes)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header = fh.read(1024)
    except OSError as err:
        raise InputError(f"cannot read file ({err.strerror})", path=path) from err
    if len(header) < 1024:
        raise InputError(
            f"not a valid MRC file (only {len(header)} bytes; the header alone is 1024)", path=path
        )
    # the machine stamp says big-endian with 0x11 in its first byte; anything else reads as little
    order = ">" if header[212] == 0x11 else "<"
    nsymbt = int(np.frombuffer(header[92:96], dtype=f"{order}i4")[0])
    if nsymbt < 0 or 1024 + nsymbt > size:
        raise InputError(
            f"MRC header disagrees with the file (extended header of {nsymbt} bytes in a file of "
            f"{size} bytes)",
            path=path,
        )


def _open_permissive(path: Path, strict_err: Exception):
    import mrcfile

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mrc = mrcfile.mmap(path, mode="r", permissive=True)
        except Exception as err:  # noqa: BLE001
            raise InputError(f"not a readable MRC file ({err})", path=path) from err
    problems = [
        str(w.message)
        for w in caught
        if issubclass(w.category, RuntimeWarning)
        and not str(w.message).startswith(_TOLERATED_MRC_QUIRKS)
    ]
    if mrc.data is None or problems:
        mrc.close()
        detail = "; ".join(problems) or str(strict_err)
        raise InputError(f"corrupt or truncated MRC file ({detail})", path=path) from strict_err
    try:
        _check_mrc_header(mrc.header, path)
    except InputError:
        mrc.close()
        raise
    warnings.warn(
        f"{path}: MRC header is not standard ({strict_err}); read anyway",
        RuntimeWarning,
        stacklevel=4,
    )
    return mrc


def _check_mrc_header(header, path: Path) -> None:
    """Refuse a non-standard axis order: mrcfile (and we) always read x fastest, so a file whose
    MAPC/MAPR/MAPS say otherwise would come out transposed. 0,0,0 is out of the MRC2014 standard
    but means "unset" to the writers that leave it: read as 1,2,3, with a warning naming the file."""
    axes = (int(header.mapc), int(header.mapr), int(header.maps))
    if axes == (0, 0, 0):
        warnings.warn(
            f"{path}: MRC axis order MAPC/MAPR/MAPS is unset (0, 0, 0); read as 1, 2, 3 (x "
            "fastest, the standard for micrographs)",
            RuntimeWarning,
            stacklevel=4,
        )
    elif axes != (1, 2, 3):
        raise InputError(
            f"non-standard MRC axis order MAPC/MAPR/MAPS = {axes}; only 1,2,3 (x fastest, as "
            "MRC2014 and every common cryo-EM program write micrographs) is read. Rewrite the "
            "file with standard axes",
            path=path,
        )


IMOD_STAMP = 1146047817


def _imod_fields(header) -> tuple[int, int]:
    """IMOD's stamp and flags (header bytes 152 and 156, inside mrcfile's ``extra2`` block)."""
    raw = np.asarray(header.extra2).tobytes()[40:48]
    stamp, flags = np.frombuffer(raw, dtype=header.mode.dtype)
    return int(stamp), int(flags)


def _imod_unsigned_bytes(header) -> bool:
    """Mode 0 is signed in MRC2014; IMOD marks signed bytes with flag bit 0 and otherwise means unsigned."""
    if int(header.mode) != 0:
        return False
    stamp, flags = _imod_fields(header)
    return stamp == IMOD_STAMP and not flags & 1


def read_mrc(path: Path) -> np.ndarray:
    mrc = open_mrc(path)
    try:
        data = mrc.data
        if data is None or data.dtype.kind == "c":
            raise InputError(
                f"unsupported MRC mode {int(mrc.header.mode)}; expected 0, 1, 2, 6 or 12", path=path
            )
        if data.ndim == 4:
            raise InputError(f"4-D MRC data (shape {data.shape}); expected a micrograph", path=path)
        data = single_section(data, path)
        if _imod_unsigned_bytes(mrc.header):
            data = data.view(np.uint8)
        # copy out of the memory map before closing it
        return np.array(data, dtype=np.float32)
    finally:
        mrc.close()
