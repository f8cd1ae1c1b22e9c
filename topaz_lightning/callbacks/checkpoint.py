"""Training checkpoints: the run's last.ckpt by steps and by elapsed time, written atomically, and
the safe reading of checkpoints (untrusted input, like model files)."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from topaz_lightning.errors import InputError, check_number

log = logging.getLogger("topaz_lightning")

__all__ = ["RunCheckpoint", "best_checkpoint", "check_checkpoint"]


class RunCheckpoint(ModelCheckpoint):
    """Lightning's :class:`ModelCheckpoint` that also refreshes ``last.ckpt`` every
    ``every_n_minutes`` minutes of training, saves it at the end of training, and never leaves a
    half-written file.

    The step trigger (``every_n_train_steps``) works as in Lightning (top-k and last); the time
    trigger writes only the ``last.ckpt`` that a resumed run starts from (Lightning refuses its
    own ``train_time_interval`` beside a step trigger, and its time saves would add top-k files),
    so a slow run (a resnet on the CPU: seconds per step) loses at most ``every_n_minutes`` when
    interrupted instead of up to ``every_n_train_steps`` steps. Each file is written to a
    temporary name beside its target and renamed into place: a kill during the write leaves the
    previous ``last.ckpt`` whole. ``every_n_minutes=None`` (or 0): by steps only; with
    ``save_last=False`` there is no time trigger (the best-``val/aupr`` checkpoint). Lightning's
    "checkpoint directory exists and is not empty" warning is left out: ``train()`` handles a
    directory's earlier checkpoints before fitting. All other arguments are ModelCheckpoint's.
    """

    def __init__(self, *args: Any, every_n_minutes: float | None = 10.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if every_n_minutes is not None:
            every_n_minutes = check_number("every_n_minutes", every_n_minutes, 0)
        self.every_n_minutes = float(every_n_minutes) if every_n_minutes else None
        self._last_saved_at: float | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            # train() decides about a directory's earlier checkpoints before fitting (continue
            # last.ckpt, refuse others, or remove them with overwrite=true), so Lightning's
            # warning only repeated, on every continued run, what the log already said
            warnings.filterwarnings(
                "ignore", message=r"Checkpoint directory .* exists and is not empty\."
            )
            super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_saved_at = time.monotonic()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        saved_before = self._last_global_step_saved
        super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)
        now = time.monotonic()
        if self._last_global_step_saved != saved_before:  # the step trigger saved last.ckpt too
            self._last_saved_at = now
            return
        if not self.every_n_minutes or not self.save_last or self._last_saved_at is None:
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        due = now - self._last_saved_at >= self.every_n_minutes * 60
        # ranks' clocks differ: rank zero decides, so every rank joins the same save
        if trainer.strategy.broadcast(due):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_saved_at = now

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning saves last.ckpt at the end only when nothing was saved before; a time-triggered
        # save could then leave it behind the final step, so save unless it is already there
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        target = Path(filepath)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            super()._save_checkpoint(trainer, str(tmp))
            if trainer.is_global_zero:
                os.replace(tmp, target)
        finally:
            if trainer.is_global_zero and tmp.exists():
                tmp.unlink()
        self._last_checkpoint_saved = str(filepath)


# ------------------------------------------------------------------------------------------------
# reading checkpoints: untrusted input like model files

#: ModelCheckpoint state entries that hold paths: Lightning restores them when the state's dirpath
#: is the run's checkpoint directory, and later deletes old top-k / last files by them
CHECKPOINT_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def check_checkpoint(path: Path, checkpoint_dir: Path) -> Path:
    """Read a checkpoint to resume from as untrusted input before Lightning touches it.

    Read with ``weights_only`` (:func:`topaz_lightning.models.read_torch_file`: a pickled payload
    is an InputError, no code runs); it must hold this package's training state (``state_dict``
    of tensors, ``global_step``). Nothing from it chooses a class or a path: hyperparameters and
    the stored run config are never instantiated (the run is built from the command's config);
    a ModelCheckpoint state that Lightning would restore in full (its ``dirpath`` is this run's
    checkpoint directory) may name only ``.ckpt`` files in that directory, since Lightning later
    deletes old top-k and last files by those names (InputError naming the key otherwise); the
    best-model path that Lightning always restores is used only inside the callback's own
    directory (:func:`best_checkpoint`). Returns the resolved path.
    """
    from topaz_lightning.models import read_torch_file

    state = read_torch_file(path, "checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise InputError("not a training checkpoint (no state_dict)", path=path)
    if not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["state_dict"].items()
    ):
        raise InputError("state_dict must map names to tensors", path=path, where="state_dict")
    step = state.get("global_step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(
            f"global_step must be a count >= 0, got {step!r}", path=path, where="global_step"
        )
    run_dir = checkpoint_dir.resolve()
    for where, value in _restored_paths(state.get("callbacks"), run_dir):
        if value in (None, ""):
            continue
        target = Path(str(value)).resolve() if isinstance(value, str) else None
        if target is None or target.parent != run_dir or target.suffix != ".ckpt":
            raise InputError(
                f"refers to {str(value)[:200]!r}, not a .ckpt file in the run's checkpoint "
                f"directory {checkpoint_dir}; refusing to resume from it",
                path=path,
                where=where,
            )
    return path.resolve()


def _restored_paths(callbacks: Any, run_dir: Path) -> list[tuple[str, Any]]:
    """(key, value) of every path Lightning would restore from a checkpoint's callback states
    into this run (the states whose dirpath is ``run_dir``)."""
    if not isinstance(callbacks, dict):
        return [] if callbacks is None else [("callbacks", callbacks)]
    found: list[tuple[str, Any]] = []
    for name, cb_state in callbacks.items():
        if not isinstance(cb_state, dict) or "dirpath" not in cb_state:
            continue
        dirpath = cb_state["dirpath"]
        if not isinstance(dirpath, str) or Path(dirpath).resolve() != run_dir:
            continue  # Lightning restores only best_model_path then (see best_checkpoint)
        for key in CHECKPOINT_PATH_KEYS:
            if key in cb_state:
                found.append((f"callbacks.{name}.{key}", cb_state[key]))
        best_k = cb_state.get("best_k_models")
        if isinstance(best_k, dict):
            found += [(f"callbacks.{name}.best_k_models", k) for k in best_k]
        elif best_k is not None:
            found.append((f"callbacks.{name}.best_k_models", best_k))
    return found


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """Path of the monitored best checkpoint, if a ModelCheckpoint with a monitor saved one in its
    own directory (a path restored from a resumed checkpoint that lies elsewhere is not read)."""
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.monitor and cb.best_model_path and cb.dirpath:
            best = Path(cb.best_model_path).resolve()
            if best.parent == Path(cb.dirpath).resolve() and best.suffix == ".ckpt":
                if best.is_file():
                    return str(best)
            else:
                log.warning("ignoring best checkpoint %s outside %s", best, cb.dirpath)
    return None
