"""Where a training run ends, from the trainer's limits: for callbacks that do something once at the end."""

from __future__ import annotations

import math

import pytorch_lightning as pl

__all__ = ["is_last_batch", "is_final_epoch"]


def _stop_or_max_steps(trainer: pl.Trainer) -> bool:
    """A stop was requested or ``max_steps`` (when set) is reached."""
    if trainer.should_stop:
        return True
    max_steps = trainer.max_steps
    return max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps


def is_last_batch(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether the batch just ended ends training: ``max_steps`` reached, a stop requested, or
    the last batch of the last of ``max_epochs`` (a sized loader)."""
    if _stop_or_max_steps(trainer):
        return True
    max_epochs = trainer.max_epochs
    if max_epochs is None or max_epochs < 0 or trainer.current_epoch + 1 < max_epochs:
        return False
    batches = trainer.num_training_batches
    return math.isfinite(batches) and batch_idx + 1 >= batches


def is_final_epoch(trainer: pl.Trainer) -> bool:
    """Whether the current epoch is the run's last: a stop requested, ``max_steps`` reached, or
    the last of ``max_epochs``."""
    if _stop_or_max_steps(trainer):
        return True
    max_epochs = trainer.max_epochs
    return max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs
