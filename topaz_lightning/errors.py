"""Exception types for bad user input: every message names the file (and line/key) and the problem."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad user input (file, coordinates or setting). The message names the source and the problem."""

    def __init__(
        self, problem: str, path: str | os.PathLike | None = None, where: str | None = None
    ):
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        self.where = where
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if where:
            parts.append(where)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


class ConfigError(ValueError):
    """An impossible or inconsistent setting; the message names the config key."""

    def __init__(self, key: str, problem: str):
        self.key = key
        super().__init__(f"config key '{key}': {problem}")


class OutputExistsError(FileExistsError):
    """Refusing to overwrite an existing output without overwrite=True."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(
            f"{os.fspath(path)}: output already exists; pass overwrite=true to replace it"
        )


class PartialFailureError(RuntimeError):
    """A multi-file job finished, but some inputs failed (skip-and-report); the CLI exits with 3.

    ``failures`` is a list of ``(name, reason)``; ``report`` the failures.tsv written, if any.
    """

    def __init__(
        self,
        failures: list[tuple[str, str]],
        report: str | os.PathLike | None = None,
        num_done: int | None = None,
    ):
        self.failures = list(failures)
        self.report = None if report is None else os.fspath(report)
        #: how many inputs were done (None: not counted); 0 means the job did nothing at all
        self.num_done = num_done
        where = f" (listed in {self.report})" if self.report else ""
        first = "; ".join(f"{name}: {reason}" for name, reason in self.failures[:3])
        more = f"; ... {len(self.failures) - 3} more" if len(self.failures) > 3 else ""
        nothing = "nothing was done: " if num_done == 0 else ""
        super().__init__(f"{nothing}{len(self.failures)} input(s) failed{where}: {first}{more}")

    @property
    def exit_status(self) -> int:
        """3 when the other inputs were done; 2 (like any bad input) when nothing was done."""
        return EXIT_USER_ERROR if self.num_done == 0 else EXIT_PARTIAL_FAILURE


#: exit status of a command when some inputs failed and the others were done
EXIT_PARTIAL_FAILURE = 3
#: exit status for bad input or impossible settings
EXIT_USER_ERROR = 2
