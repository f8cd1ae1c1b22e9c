"""How long the run will take: its first optimizer steps are timed and one log line gives the
estimate for all ``trainer.max_steps``, with a hint when a CPU run would take over an hour."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl

from topaz_lightning.errors import check_number

log = logging.getLogger("topaz_lightning")

__all__ = ["RunDurationEstimate", "duration_message"]


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def duration_message(
    seconds_per_step: float,
    steps_left: int,
    max_steps: int,
    device: str,
    on_cpu: bool,
    hint_minutes: float = 60.0,
) -> tuple[str, str | None]:
    """(the estimate line, the hint or None) for ``steps_left`` more steps at ``seconds_per_step``.

    The hint, for a CPU run estimated above ``hint_minutes``, says how to shorten it: fewer steps
    (the number that fits in about ``hint_minutes``) or a GPU.
    """
    if not seconds_per_step > 0 or steps_left < 0 or max_steps < 0:
        raise ValueError(
            f"need seconds_per_step > 0 and counts >= 0, got {seconds_per_step}, "
            f"{steps_left}, {max_steps}"
        )
    seconds = seconds_per_step * steps_left
    line = (
        f"estimated {_minutes(seconds)} for the remaining {steps_left:,} of {max_steps:,} steps "
        f"on {device} ({seconds_per_step:.3g} s per step; held-out evaluations come on top)"
    )
    if not on_cpu or seconds <= hint_minutes * 60:
        return line, None
    fits = max(1, int(hint_minutes * 60 / seconds_per_step) // 100 * 100)
    hint = (
        f"this run needs about {_minutes(seconds)} on the CPU: for about {hint_minutes:.0f} min "
        f"set trainer.max_steps={fits} (few labels peak early, docs/accuracy.md), or train on a "
        "GPU (trainer=auto uses one when present); a checkpoint is kept, so an interrupted run "
        "continues with tzl-train resume=<run dir>"
    )
    return line, hint


class RunDurationEstimate(pl.Callback):
    """Time optimizer steps ``skip_steps + 1`` to ``skip_steps + timed_steps`` of this invocation
    (or as many as ``max_seconds`` allow) and log the run's estimated remaining time once.

    The first ``skip_steps`` steps are left out: they include one-off start-up (allocator warm-up,
    the first batch's set-up). Only rank zero logs. Runs without ``trainer.max_steps`` (-1), and
    runs that end before the timing does, log nothing. ``hint_minutes``: above this on the CPU,
    :func:`duration_message`'s hint is logged as a warning.
    """

    def __init__(
        self,
        timed_steps: int = 10,
        skip_steps: int = 2,
        max_seconds: float = 30.0,
        hint_minutes: float = 60.0,
    ):
        super().__init__()
        # ConfigError names the key: a bad setting ends tzl-train with one line (exit 2)
        timed_steps = check_number("timed_steps", timed_steps, 1, integer=True)
        skip_steps = check_number("skip_steps", skip_steps, 0, integer=True)
        check_number("max_seconds", max_seconds, 0, exclusive_minimum=True)
        check_number("hint_minutes", hint_minutes, 0, exclusive_minimum=True)
        self.timed_steps = int(timed_steps)
        self.skip_steps = int(skip_steps)
        self.max_seconds = float(max_seconds)
        self.hint_minutes = float(hint_minutes)
        self._start: tuple[int, float] | None = None
        self._first_step: int | None = None
        self.estimate_seconds: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first_step = int(trainer.global_step)
        self._start = None
        self.estimate_seconds = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self.estimate_seconds is not None or self._first_step is None:
            return
        step, now = int(trainer.global_step), time.monotonic()
        if self._start is None:
            if step - self._first_step >= self.skip_steps:
                self._start = (step, now)
            return
        timed = step - self._start[0]
        elapsed = now - self._start[1]
        if timed < 1 or (timed < self.timed_steps and elapsed < self.max_seconds):
            return
        max_steps = int(trainer.max_steps)
        if max_steps < 0 or elapsed <= 0:
            self.estimate_seconds = 0.0  # nothing to estimate against; stop timing
            return
        per_step = elapsed / timed
        steps_left = max(0, max_steps - step)
        self.estimate_seconds = per_step * steps_left
        if not trainer.is_global_zero:
            return
        from topaz_lightning.utils.components import describe_hardware

        on_cpu = type(trainer.accelerator).__name__ == "CPUAccelerator"
        line, hint = duration_message(
            per_step, steps_left, max_steps, describe_hardware(trainer), on_cpu, self.hint_minutes
        )
        log.info("%s", line)
        if hint:
            log.warning("%s", hint)
