"""Multi-file jobs that continue after interruption and skip-and-report bad inputs (failures.tsv, exit 3)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from topaz_lightning.errors import InputError, PartialFailureError
from topaz_lightning.utils.atomic import atomic_output

log = logging.getLogger("topaz_lightning")

#: name of the failure list a command writes into its output directory
FAILURES_FILE = "failures.tsv"


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
        """Record a failure by hand."""
        log.error("%s: %s", name, reason)
        self.failures.append((str(name), " ".join(str(reason).split())))

    def finish(self, output_dir: str | os.PathLike | None) -> None:
        """Write ``failures.tsv`` into ``output_dir`` (or remove a stale one); raise if any failed."""
        report = None
        if output_dir is not None:
            report = Path(output_dir) / FAILURES_FILE
            if self.failures:
                write_failures(report, self.failures)
            elif report.exists():
                report.unlink()
                report = None
        if self.failures:
            raise PartialFailureError(self.failures, report)


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


def write_failures(path: str | os.PathLike, failures: Iterable[tuple[str, str]]) -> Path:
    """``name<TAB>reason`` lines with a header, written atomically (replacing an old list)."""
    path = Path(path)
    lines = ["name\treason"] + [f"{name}\t{' '.join(reason.split())}" for name, reason in failures]
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
