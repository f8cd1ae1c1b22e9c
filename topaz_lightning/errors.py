"""Exception types for bad user input: every message names the file (and line/key) and the problem."""

from __future__ import annotations

import math
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


def check_number(
    key: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    allow_inf: bool = False,
    integer: bool = False,
) -> float | int:
    """The one check of a numeric setting: ``value`` as a float (an int with ``integer``) within
    the bounds, finite unless ``allow_inf``; otherwise ConfigError naming ``key``, e.g.
    "config key 'threshold': must be a number >= 0, got 'x'". Used by the commands' validation,
    the pick settings and the geometry conversions alike."""
    low = (
        "" if minimum is None else (f" > {minimum:g}" if exclusive_minimum else f" >= {minimum:g}")
    )
    high = "" if maximum is None else f" <= {maximum:g}"
    kind = "an integer" if integer else "a number"
    want = f"{kind}{low}{' and' if low and high else ''}{high}"
    if isinstance(value, bool):
        raise ConfigError(key, f"must be {want}, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be {want}, got {value!r}") from None
    ok = not math.isnan(number) and (allow_inf or math.isfinite(number))
    if minimum is not None:
        ok = ok and (number > minimum if exclusive_minimum else number >= minimum)
    if maximum is not None:
        ok = ok and number <= maximum
    if integer:
        ok = ok and math.isfinite(number) and number == int(number)
    if not ok:
        raise ConfigError(key, f"must be {want}, got {value!r}")
    return int(number) if integer else number


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
