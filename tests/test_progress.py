"""The training progress bar spans the whole run (steps / max_steps), across epochs and resumes."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from topaz_lightning.callbacks.progress import RunProgressBar


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = self.layer(x).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(bar, max_steps, tmp_path):
    return pl.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )


def _loader():
    return DataLoader(TensorDataset(torch.randn(3, 2)), batch_size=1)  # 3 steps per epoch


def test_one_bar_over_all_steps_across_epochs(tmp_path, capsys):
    bar = RunProgressBar(refresh_seconds=0.01)
    trainer = _trainer(bar, 7, tmp_path)
    seen = []
    original = bar.on_train_batch_end

    def spy(trainer, *args):
        original(trainer, *args)
        seen.append((bar._bar.n, bar._bar.total))

    bar.on_train_batch_end = spy
    trainer.fit(_Tiny(), _loader())
    # 7 steps over 3 epochs of 3: one bar counting 1..7 of 7, never reset per epoch
    assert seen == [(n, 7) for n in range(1, 8)]
    err = capsys.readouterr().err
    assert "7/7" in err and "training" in err
    assert "loss=" in err


def test_bar_is_the_trainers_progress_bar_and_can_be_disabled(tmp_path, capsys):
    bar = RunProgressBar()
    trainer = _trainer(bar, 2, tmp_path)
    assert trainer.progress_bar_callback is bar
    bar.disable()
    trainer.fit(_Tiny(), _loader())
    assert "training" not in capsys.readouterr().err


def test_refresh_interval_must_be_positive():
    with pytest.raises(ValueError, match="refresh_seconds"):
        RunProgressBar(refresh_seconds=0)


class _Logs(pl.Callback):
    """Logs one package record in the middle of the run (as the held-out callback does)."""

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 3:
            import logging

            logging.getLogger("topaz_lightning").info("MESSAGE-AT-STEP-3")


def test_log_lines_go_above_the_bar_once(tmp_path, capsys):
    import logging
    import sys

    # a console handler on the root logger, as Hydra's job logging installs; the package logger
    # has none of its own and propagates
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[log] %(message)s"))
    root, package = logging.getLogger(), logging.getLogger("topaz_lightning")
    # only this handler on the root: an in-process Hydra command of an earlier test leaves its
    # console handler there, writing to that test's (closed) captured stream
    saved_handlers = root.handlers[:]
    root.handlers = [handler]
    level = package.level
    package.setLevel(logging.INFO)
    try:
        bar = RunProgressBar(refresh_seconds=0.001)
        trainer = _trainer(bar, 6, tmp_path)
        trainer.callbacks.append(_Logs())
        trainer.fit(_Tiny(), _loader())
        restored = handler in root.handlers
    finally:
        root.handlers = saved_handlers
        package.setLevel(level)
    err = capsys.readouterr().err
    # one copy, formatted, on a line of its own (not appended to the bar's "... step/s]")
    segments = err.replace("\r", "\n").split("\n")
    assert [s for s in segments if "MESSAGE-AT-STEP-3" in s] == ["[log] MESSAGE-AT-STEP-3"]
    # and the redirect ends with the bar: the root logger has its own handler back
    assert restored
