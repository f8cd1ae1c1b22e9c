"""Atomic output files and safe output names: temp file beside the target renamed over it; no escapes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from topaz_lightning.errors import InputError, OutputExistsError


def _umask() -> int:
    # os.umask can only be read by setting it; put it straight back
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_permissions(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the permissions a plain ``open()``/``mkdir()`` would (0666/0777 minus umask).

    ``tempfile.mkstemp``/``mkdtemp`` create 0600/0700 entries; outputs renamed from them into
    place would otherwise be unreadable by the user's group.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def make_temp_dir(target: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A new, empty directory beside ``target`` (same file system, so it can be renamed onto it),
    with umask permissions instead of mkdtemp's 0700."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent))
    except OSError as err:
        raise InputError(
            f"cannot create a directory here ({err.strerror})", path=target.parent
        ) from err
    plain_permissions(tmp, directory=True)
    return tmp


def safe_output_name(
    name: object, source: str | os.PathLike | None = None, where: str | None = None
) -> str:
    """Return ``name`` if it is safe as one file name inside an output directory, else raise.

    Names read from data (micrograph names in coordinate files, ...) become file names; a name
    with a path separator, ``.``/``..``, a drive or absolute prefix, a NUL byte or nothing at all
    could write outside the output directory or over a hidden file. InputError names ``source``
    and ``where`` (the row).
    """
    text = str(name)
    problem = None
    if text.strip() == "":
        problem = "is empty"
    elif "\x00" in text:
        problem = "contains a NUL byte"
    elif "/" in text or "\\" in text or (os.altsep and os.altsep in text):
        problem = "contains a path separator"
    elif text in (".", ".."):
        problem = "is a directory reference"
    elif os.path.isabs(text) or (len(text) >= 2 and text[1] == ":"):
        problem = "is an absolute path"
    if problem is not None:
        raise InputError(
            f"micrograph name {text!r} {problem}; it cannot be used as an output file name "
            "(names must be plain file names without directories)",
            path=source,
            where=where,
        )
    return text


def _read_only(path: Path) -> bool:
    # the mode bits, not os.access: os.access says "writable" to root for everything
    return not os.stat(path).st_mode & 0o200


def unwritable_ancestor(path: str | os.PathLike) -> tuple[Path, str | None]:
    """The nearest existing folder at or above ``path`` and why files cannot be created there
    (None when they can): the one check behind every "can this output be written" question."""
    parent = Path(path)
    while not parent.exists() and not parent.is_symlink() and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir():
        return parent, "is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK) or _read_only(parent):
        return parent, "is read-only: cannot create files in it"
    return parent, None


def check_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse now an output directory a command would have to replace: a file in its place, a
    read-only directory (even with ``overwrite``) or a non-empty one without ``overwrite``."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise InputError("output must be a directory, found a file", path=path)
        if _read_only(path):
            raise InputError("output directory is read-only; not writing into it", path=path)
        if not overwrite and any(path.iterdir()):
            raise OutputExistsError(path)
    return path


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise OutputExistsError if ``path`` exists and ``overwrite`` is False; refuse to replace a
    directory with a file, and an existing but read-only target even with ``overwrite``."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(path)
        if path.is_dir():
            raise InputError("output is a directory; expected a file path", path=path)
        if _read_only(path):
            # a file made read-only was protected on purpose: renaming over it would ignore that
            raise InputError("output exists and is read-only; not replacing it", path=path)
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success rename it onto ``path``.

    If the body raises, the temporary file is removed and any existing ``path`` is untouched,
    so a failed run never leaves a half-written output or destroys an earlier one. The output
    gets the permissions a plain ``open()`` would give it (umask).
    """
    path = check_writable(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent
        )
    except OSError as err:
        raise InputError(
            f"cannot write into the output directory ({err.strerror})", path=path.parent
        ) from err
    os.close(fd)
    plain_permissions(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if path.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
