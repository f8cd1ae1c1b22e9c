"""One job service for multi-file commands: record, compare, continue, overwrite, failures, safe paths.

A command that writes many files (``tzl-pick``, ``tzl-preprocess``, ``tzl-convert`` with one file
per micrograph) keeps a *job record* (strict JSON) in its output directory. A rerun:

- with the same settings continues (the outputs already there are kept, the rest is done);
- with other settings is refused, naming every key that changed;
- with ``overwrite=true`` removes exactly this job's outputs (those the old record and this run
  name; a file already gone is fine) and starts over.

Micrographs that cannot be done are collected by :class:`FailureLog` (``failures.tsv``, exit 3).
Derived file names and configured output paths are checked here once (:func:`safe_file_name`,
:func:`output_path`, :func:`refuse_symlinked_dirs`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topaz_lightning.errors import InputError, OutputExistsError, PartialFailureError
from topaz_lightning.utils.atomic import atomic_output, safe_output_name

log = logging.getLogger("topaz_lightning")

#: name of the failure list a command writes into its output directory
FAILURES_FILE = "failures.tsv"
#: version of the job record layout
RECORD_VERSION = 1
#: longest file name (bytes) most file systems take (ext4, xfs, btrfs: NAME_MAX)
NAME_MAX_BYTES = 255
#: what atomic_output adds around a target's name for its temporary: ".<name>.<8 random>.tmp<suffix>"
_TEMPORARY_EXTRA_BYTES = 1 + 9 + 4


# ------------------------------------------------------------------------------------------------
# strict JSON


def dumps(data: Any) -> str:
    """Strict JSON text (no NaN / Infinity: other tools must read it), keys sorted."""
    try:
        return json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"
    except ValueError as err:  # a NaN slipped in: a bug, not bad input
        raise ValueError(f"refusing to write non-finite numbers as JSON ({err})") from err


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as strict JSON, atomically (replacing)."""
    path = Path(path)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(dumps(data), encoding="utf-8")
    return path


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: str | os.PathLike, what: str = "job record") -> Any | None:
    """Strict JSON from ``path``; None if it does not exist; InputError naming the file if bad."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the {what} ({err})", path) from err
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as err:
        raise InputError(f"not a valid {what} ({err}); use overwrite=true", path) from err


# ------------------------------------------------------------------------------------------------
# names and paths


def temporary_target(entry: str) -> str | None:
    """The file a temporary was written for, or None if ``entry`` is not a temporary.

    ``utils.atomic`` names them ``.<target>.<random>.tmp<suffix>`` (files) and
    ``.<target>.<random>.tmp`` (directories); ``<random>`` holds no dot.
    """
    if not entry.startswith(".") or ".tmp" not in entry:
        return None
    stem = entry[1 : entry.rindex(".tmp")]  # "<target>.<random>"
    if "." not in stem:
        return None
    target = stem.rsplit(".", 1)[0]
    return target or None


def remove_temporaries(directory: str | os.PathLike, targets: Iterable[str] | None = None) -> int:
    """Remove half-written temporaries a killed run left in ``directory``.

    Only those of ``targets`` (file names), or of any file when ``targets`` is None. Returns the
    number removed; a temporary that vanished meanwhile is fine.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    wanted = None if targets is None else set(targets)
    removed = 0
    for entry in os.listdir(directory):
        target = temporary_target(entry)
        if target is None or (wanted is not None and target not in wanted):
            continue
        path = directory / entry
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def safe_file_name(name: object, suffix: str = "", where: str | None = None) -> str:
    """``name`` if ``<name><suffix>`` is a safe single file name to write, else InputError.

    Beyond :func:`utils.atomic.safe_output_name` (no separators, ``..``, absolute paths, NUL):
    no control characters (newline, tab, ...: they split TSV rows and logs) and short enough
    that the file AND its temporary (``.<file>.<random>.tmp<suffix>``) fit NAME_MAX.
    """
    text = safe_output_name(name, where=where)
    bad = [c for c in text if ord(c) < 32 or ord(c) == 127]
    if bad:
        raise InputError(
            f"name {text!r} contains control characters ({', '.join(map(repr, sorted(set(bad))))}); "
            "it cannot be used as a file name",
            where=where,
        )
    size = len(f"{text}{suffix}".encode()) + _TEMPORARY_EXTRA_BYTES + len(suffix.encode())
    if size > NAME_MAX_BYTES:
        raise InputError(
            f"name {text[:40]!r}... is too long for a file name ({len(text.encode())} bytes; "
            f"at most {NAME_MAX_BYTES - size + len(text.encode())} here)",
            where=where,
        )
    return text


def output_path(output_dir: str | os.PathLike, value: str | os.PathLike, key: str) -> Path:
    """The path a config key names: relative ones lie inside ``output_dir``.

    A relative path that climbs out of ``output_dir`` with ``..`` is refused (InputError naming
    the key); an absolute path outside it is the user's explicit choice: allowed, and logged.
    """
    output_dir = Path(output_dir)
    target = Path(str(value))
    if target.is_absolute():
        if not _inside(output_dir, target):
            log.info(
                "%s=%s lies outside output_dir %s (absolute path: as asked)",
                key,
                target,
                output_dir,
            )
        return target
    joined = output_dir / target
    if not _inside(output_dir, joined):
        raise InputError(
            f"relative path {str(value)!r} climbs out of output_dir with '..'; give an absolute "
            "path to write outside it",
            where=f"config key '{key}'",
        )
    return joined


def _inside(directory: Path, path: Path) -> bool:
    base = os.path.normpath(os.path.abspath(directory))
    target = os.path.normpath(os.path.abspath(path))
    return os.path.commonpath([base, target]) == base


def refuse_symlinked_dirs(
    output_dir: str | os.PathLike, path: str | os.PathLike, key: str, directory: bool = False
) -> None:
    """Refuse (InputError naming the link) a symlinked directory on the way to ``path`` below
    ``output_dir``: writes would land wherever the link points.

    ``path`` itself is checked too when ``directory`` (the target is a folder we write into); a
    symlinked target FILE is fine (atomic_output replaces the link, not what it points to).
    Paths outside ``output_dir`` are not walked (the user named them explicitly).
    """
    base = Path(os.path.abspath(output_dir))
    target = Path(os.path.abspath(path))
    if not _inside(base, target) or base == target:
        return
    parts = target.relative_to(base).parts
    current = base
    last = len(parts) - 1
    for k, part in enumerate(parts):
        current = current / part
        if k == last and not directory:
            break
        if current.is_symlink():
            raise InputError(
                f"is a symbolic link to {os.readlink(current)!r}; refusing to write through a "
                f"linked directory (config key '{key}'): remove the link or give a real directory",
                current,
            )


# ------------------------------------------------------------------------------------------------
# the job record


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two records (nested mappings are walked)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(name)
            else:
                out += changed_keys(old[key], new[key], name)
        return out
    return [] if old == new else [prefix or "(record)"]


def describe_changes(old: Mapping, new: Mapping, keys: list[str], limit: int = 6) -> str:
    """``key old -> new`` for the first ``limit`` changed keys (long values shortened)."""

    def value(record: Mapping, dotted: str) -> str:
        node: Any = record
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return "(unset)"
            node = node[part]
        text = json.dumps(node, sort_keys=True, default=str)
        return text if len(text) <= 40 else text[:37] + "..."

    shown = [f"{k} {value(old, k)} -> {value(new, k)}" for k in keys[:limit]]
    more = f", ... {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(shown) + more


@dataclass
class Job:
    """A job's record file and what this run decided (see :func:`open_job`).

    ``data`` holds what the command keeps beside its settings (outputs it wrote, inputs, a GMM
    fit); ``previous`` the earlier record, if there was a readable one.
    """

    path: Path
    command: str
    settings: dict
    data: dict = field(default_factory=dict)
    continuing: bool = False
    previous: dict | None = None

    def save(self) -> None:
        """Write the record atomically (before the outputs it covers are written)."""
        record = {
            **self.data,
            "version": RECORD_VERSION,
            "command": self.command,
            "settings": self.settings,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, record)

    def update(self, **data: Any) -> None:
        """Change entries of ``data`` and save."""
        self.data.update(data)
        self.save()


def read_record(path: str | os.PathLike, command: str) -> dict | None:
    """The job record at ``path`` (None if there is none); InputError if it is not one of
    ``command`` or is damaged."""
    path = Path(path)
    record = read_json(path)
    if record is None:
        return None
    if (
        not isinstance(record, dict)
        or record.get("version") != RECORD_VERSION
        or record.get("command") != command
        or not isinstance(record.get("settings"), dict)
    ):
        raise InputError(
            f"not a {command} job record (version {RECORD_VERSION}); start over with "
            "overwrite=true or choose another output_dir",
            path,
        )
    return record


def remove_outputs(paths: Iterable[Path], protected: Iterable[Path] = ()) -> int:
    """Remove the files in ``paths`` (each once; gone already is fine; ``protected`` never)."""
    keep = {Path(os.path.realpath(p)) for p in protected}
    seen: set[str] = set()
    removed = 0
    for path in paths:
        path = Path(path)
        key = os.path.abspath(path)
        if key in seen:
            continue
        seen.add(key)
        if Path(os.path.realpath(path)) in keep and not path.is_symlink():
            continue
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def open_job(
    path: str | os.PathLike,
    command: str,
    settings: Mapping[str, Any],
    *,
    overwrite: bool,
    data: Mapping[str, Any] | None = None,
    owned: Callable[[dict | None], Iterable[Path]] = lambda old: (),
    targets: Iterable[Path] = (),
    protected: Iterable[Path] = (),
    save: bool = True,
) -> Job:
    """Decide, before any work, whether a job whose record is ``path`` starts, continues or is
    refused, and write the new record.

    - ``overwrite``: remove this job's outputs (``owned(old_record)``: what the earlier record
      and this run name; never a ``protected`` input), then start over. A damaged record is replaced too.
    - a record of the same ``command`` with equal ``settings``: continue (``Job.continuing``).
    - a record with other settings: InputError naming every changed key.
    - no record: refused (OutputExistsError) if any of ``targets`` exists already.
    """
    path = Path(path)
    settings = json.loads(dumps(dict(settings)))  # plain, strict values (compare as stored)
    job = Job(path, command, settings, dict(data or {}))
    if overwrite:
        try:
            old = read_record(path, command)
        except InputError:
            old = None  # a damaged record: start over without it
        removed = remove_outputs([*owned(old), *targets], protected)
        if removed:
            log.info("overwrite=true: removed %d output(s) of the earlier job", removed)
        job.previous = old
    else:
        old = read_record(path, command)
        if old is None:
            for target in targets:
                if Path(target).exists() or Path(target).is_symlink():
                    raise OutputExistsError(target)
        else:
            changed = changed_keys(old["settings"], settings)
            if changed:
                raise InputError(
                    f"holds the outputs of a {command} run with other settings (changed: "
                    f"{describe_changes(old['settings'], settings, changed)}); rerun with the "
                    "same settings to continue, overwrite=true to start over, or choose another "
                    "output_dir",
                    path,
                )
            job.continuing = True
            job.previous = old
    if save:
        job.save()
    return job


# ------------------------------------------------------------------------------------------------
# failures


class FailureLog:
    """Collects ``(name, reason)`` of inputs that failed; ``strict=True`` re-raises the first.

    Use ``with log.guard(name): work(name)``: an :class:`InputError` (bad file) is recorded and
    the job goes on, unless strict. At the end, :meth:`finish` writes ``failures.tsv`` (always
    replaced, so a rerun that fixed everything removes the old list) and raises
    :class:`PartialFailureError` (exit status 3) when anything failed.
    """

    def __init__(
        self, strict: bool = False, errors: tuple[type[BaseException], ...] = (InputError,)
    ):
        self.strict = bool(strict)
        self.errors = errors
        self.failures: list[tuple[str, str]] = []

    def guard(self, name: str):
        """Context manager recording an expected error for ``name`` (re-raised when strict)."""
        return _Guard(self, name)

    def add(self, name: str, reason: str) -> None:
        """Record a failure by hand (the name is shown with escapes: it may hold a newline)."""
        shown = name if name.isprintable() else repr(name)
        log.error("%s: %s", shown, reason)
        self.failures.append((str(name), " ".join(str(reason).split())))

    def finish(self, output_dir: str | os.PathLike | None, num_done: int | None = None) -> None:
        """Write ``failures.tsv`` into ``output_dir`` (or remove a stale one); raise if any failed.

        ``num_done``: the inputs that were done (this run or an earlier one it continues); with
        0 the error says nothing was done and the command exits 2 instead of 3.
        """
        report = None
        if output_dir is not None:
            report = Path(output_dir) / FAILURES_FILE
            if self.failures:
                write_failures(report, self.failures)
            elif report.exists():
                report.unlink(missing_ok=True)
                report = None
        if self.failures:
            raise PartialFailureError(self.failures, report, num_done=num_done)


class _Guard:
    def __init__(self, owner: FailureLog, name: str):
        self.owner = owner
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or not isinstance(exc, self.owner.errors) or self.owner.strict:
            return False
        self.owner.add(self.name, str(exc))
        return True


def _tsv_field(text: str) -> str:
    """One TSV field: a name holding a tab or newline is written escaped (repr), never raw."""
    return text if text.isprintable() else repr(text)


def write_failures(path: str | os.PathLike, failures: Iterable[tuple[str, str]]) -> Path:
    """``name<TAB>reason`` lines with a header, written atomically (replacing an old list)."""
    path = Path(path)
    lines = ["name\treason"] + [
        f"{_tsv_field(name)}\t{' '.join(reason.split())}" for name, reason in failures
    ]
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
