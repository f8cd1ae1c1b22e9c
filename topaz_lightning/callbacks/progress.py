"""One progress bar over the whole training run (step / max_steps, whole-run ETA), redrawn by time."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
        sys.stdout,
        sys.stderr,
    )


class RunProgressBar(ProgressBar):
    """A single tqdm bar from the first to the last optimizer step of ``trainer.max_steps``.

    Lightning's own bar restarts every "epoch" (``data.steps_per_epoch`` steps of an endless
    sampler), so its ETA covered 1,000 steps and not the run; and it redraws every
    ``refresh_rate`` batches, which on a slow model meant minutes without a sign of life. This
    bar counts optimizer steps of the whole run (a resumed run starts where it stopped), shows
    the latest loss and ``val/aupr``, and redraws at most every ``refresh_seconds`` seconds but at
    least after every step that took longer. Held-out evaluations show as a note in the bar.
    While the bar is shown, log records for the console are written above it
    (``tqdm.contrib.logging.logging_redirect_tqdm``) instead of into its line; the log file is
    untouched.
    """

    def __init__(self, refresh_seconds: float = 2.0, leave: bool = True):
        super().__init__()
        if not refresh_seconds > 0:
            raise ValueError(f"refresh_seconds must be > 0, got {refresh_seconds}")
        self.refresh_seconds = float(refresh_seconds)
        self.leave = bool(leave)
        self._enabled = True
        self._bar: Any = None
        self._last_draw = 0.0
        self._redirect: Any = None

    # Lightning's progress-bar protocol
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def total_steps(self, trainer: pl.Trainer) -> int | None:
        """``trainer.max_steps`` when set (>= 0), else None (no total, no ETA)."""
        steps = int(trainer.max_steps)
        return steps if steps >= 0 else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=self.total_steps(trainer),
            initial=int(trainer.global_step),
            desc="training",
            unit="step",
            dynamic_ncols=True,
            leave=self.leave,
            file=sys.stderr,
            mininterval=self.refresh_seconds,
            smoothing=0.05,
        )
        self._last_draw = time.monotonic()
        from tqdm.contrib.logging import logging_redirect_tqdm

        # the loggers with a console handler of their own (Hydra's root; the package's when it
        # was given one); a logger without would get a second, unformatted copy of each line
        loggers = [
            logger
            for logger in (logging.getLogger(), logging.getLogger("topaz_lightning"))
            if any(_is_console(h) for h in logger.handlers)
        ]
        self._redirect = logging_redirect_tqdm(loggers=loggers, tqdm_class=type(self._bar))
        self._redirect.__enter__()

    def _postfix(self, trainer: pl.Trainer) -> dict[str, str]:
        shown = {}
        for key in ("train/loss", "val/aupr"):
            value = trainer.callback_metrics.get(key)
            if value is not None:
                shown[key.split("/")[-1]] = f"{float(value):.4g}"
        return shown

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._bar is None:
            return
        step = int(trainer.global_step)
        self._bar.n = step
        now = time.monotonic()
        if now - self._last_draw >= self.refresh_seconds or step == self._bar.total:
            self._bar.set_postfix(self._postfix(trainer), refresh=False)
            self._bar.refresh()
            self._last_draw = now

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._bar is not None and not trainer.sanity_checking:
            self._bar.set_description("training (evaluating)")

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._bar is not None and not trainer.sanity_checking:
            self._bar.set_description("training")
            self._bar.set_postfix(self._postfix(trainer))

    def _close(self) -> None:
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.n = int(trainer.global_step)
            self._bar.set_postfix(self._postfix(trainer), refresh=False)
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()
