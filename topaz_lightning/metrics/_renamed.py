"""The one place where old keyword names of the metrics functions still work, with a warning."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

#: {old keyword: new keyword} of the public metrics functions (units in names, issue 17)
RENAMED = {"max_distance": "max_distance_px"}


def accept_renamed_keywords(function: F) -> F:
    """Let ``function`` take the old keyword names of :data:`RENAMED`, with a DeprecationWarning."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        for old, new in RENAMED.items():
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{function.__name__}() got both {old}= and {new}=")
                warnings.warn(
                    f"{function.__name__}({old}=...) is deprecated; use {new}= (same value)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
        return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
