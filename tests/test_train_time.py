"""Time on long runs: last.ckpt by elapsed time and at the end (atomic), the duration estimate and
its CPU hint, the training-curve picture, and the wandb logger without its two warnings."""

from __future__ import annotations

import logging
import time

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import quiet_trainer
from topaz_lightning.callbacks.checkpoint import RunCheckpoint
from topaz_lightning.callbacks.duration import RunDurationEstimate, duration_message


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


class _Slow(pl.Callback):
    """Each optimizer step takes at least ``seconds`` of wall time."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, *args):
        time.sleep(self.seconds)


def _loader():
    return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=1)


def _step(path):
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


# ---------------------------------------------------------------------------- checkpoints
def _checkpoint(tmp_path, **kwargs):
    settings = dict(
        dirpath=tmp_path / "ckpt",
        filename="last",
        save_last=True,
        save_top_k=0,
        save_on_train_epoch_end=False,
    )
    return RunCheckpoint(**{**settings, **kwargs})


def test_last_checkpoint_by_elapsed_time_between_step_saves(tmp_path, monkeypatch):
    """Steps every 1,000, time every 0.1 s, steps of 0.06 s: saves come from the clock alone."""
    ckpt = _checkpoint(tmp_path, every_n_train_steps=1000, every_n_minutes=0.1 / 60)
    saved_at = []
    original = RunCheckpoint._save_last_checkpoint

    def spy(self, trainer, candidates):
        saved_at.append(trainer.global_step)
        original(self, trainer, candidates)

    monkeypatch.setattr(RunCheckpoint, "_save_last_checkpoint", spy)
    trainer = quiet_trainer(tmp_path, [ckpt, _Slow(0.06)], max_steps=9, max_epochs=-1)
    trainer.fit(_Tiny(), _loader())
    # saved every ~2 steps by time, and at the end (step 9) although 9 is no multiple of 1,000
    assert len(saved_at) >= 3 and saved_at[-1] == 9, saved_at
    assert saved_at[0] < 9 and sorted(set(saved_at)) == saved_at
    assert _step(tmp_path / "ckpt" / "last.ckpt") == 9
    # only last.ckpt: the time trigger adds no top-k files, no temporary file is left
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("minutes", [None, 0])
def test_without_minutes_saves_by_steps_and_at_the_end_only(tmp_path, monkeypatch, minutes):
    ckpt = _checkpoint(tmp_path, every_n_train_steps=4, every_n_minutes=minutes)
    saved_at = []
    original = RunCheckpoint._save_last_checkpoint
    monkeypatch.setattr(
        RunCheckpoint,
        "_save_last_checkpoint",
        lambda self, trainer, c: saved_at.append(trainer.global_step) or original(self, trainer, c),
    )
    trainer = quiet_trainer(tmp_path, [ckpt, _Slow(0.01)], max_steps=9, max_epochs=-1)
    trainer.fit(_Tiny(), _loader())
    assert saved_at == [4, 8, 9]


def test_interrupted_write_keeps_the_previous_last_checkpoint(tmp_path, monkeypatch):
    ckpt = _checkpoint(tmp_path, every_n_train_steps=2, every_n_minutes=None)
    calls = []

    def failing_save(self, filepath, weights_only=False, storage_options=None):
        calls.append(filepath)
        if len(calls) == 2:  # the second save dies half-way through writing its file
            with open(filepath, "wb") as f:
                f.write(b"half a checkpoint")
            raise KeyboardInterrupt
        return original(self, filepath, weights_only, storage_options)

    original = pl.Trainer.save_checkpoint
    monkeypatch.setattr(pl.Trainer, "save_checkpoint", failing_save)
    trainer = quiet_trainer(tmp_path, [ckpt], max_steps=6, max_epochs=-1)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        trainer.fit(_Tiny(), _loader())
    last = tmp_path / "ckpt" / "last.ckpt"
    # written to a temporary name and renamed: the step-2 file is whole, nothing else is left
    assert all(".tmp" in str(p) for p in calls)
    assert _step(last) == 2
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt"]


def test_checkpoint_minutes_must_be_non_negative(tmp_path):
    with pytest.raises(ValueError, match="every_n_minutes"):
        _checkpoint(tmp_path, every_n_train_steps=5, every_n_minutes=-1)


def test_default_callbacks_checkpoint_every_ten_minutes(cfg_train):
    from topaz_lightning.train import instantiate_callbacks

    callbacks = instantiate_callbacks(cfg_train().callbacks)
    (last,) = [c for c in callbacks if isinstance(c, RunCheckpoint) and c.save_last]
    assert last.every_n_minutes == 10 and last.monitor is None
    # the best-val/aupr checkpoint (atomic too) is saved when the score improves, not by time
    (best,) = [c for c in callbacks if isinstance(c, RunCheckpoint) and c.monitor]
    assert best.every_n_minutes is None and best.monitor == "val/aupr"
    assert any(isinstance(c, RunDurationEstimate) for c in callbacks)


# ---------------------------------------------------------------------------- duration
def test_duration_message_and_cpu_hint():
    line, hint = duration_message(0.07, 49_990, 50_000, "the CPU", on_cpu=True)
    assert line.startswith("estimated 58 min for the remaining 49,990 of 50,000 steps on the CPU")
    assert hint is None  # 58 min: under the hour
    line, hint = duration_message(1.5, 50_000, 50_000, "the CPU", on_cpu=True)
    assert "estimated 20.8 h" in line
    # the hint names the step count that fits the hour (2,400 steps of 1.5 s) and a GPU
    assert "trainer.max_steps=2400" in hint and "GPU" in hint and "resume=" in hint
    assert duration_message(1.5, 50_000, 50_000, "GPU 0", on_cpu=False)[1] is None
    with pytest.raises(ValueError):
        duration_message(0, 10, 10, "the CPU", on_cpu=True)


def test_duration_estimate_is_logged_once_from_the_timed_steps(tmp_path, caplog):
    estimate = RunDurationEstimate(timed_steps=4, skip_steps=2, max_seconds=30)
    trainer = quiet_trainer(tmp_path, [estimate, _Slow(0.05)], max_steps=40, max_epochs=-1)
    with caplog.at_level(logging.INFO, logger="topaz_lightning"):
        trainer.fit(_Tiny(), _loader())
    lines = [r.getMessage() for r in caplog.records if "estimated" in r.getMessage()]
    assert len(lines) == 1, lines
    # timed over steps 3-6: 34 steps left at >= 0.05 s each
    assert "remaining 34 of 40 steps on the CPU" in lines[0]
    assert 34 * 0.05 <= estimate.estimate_seconds < 34 * 0.05 * 10


def test_duration_hint_is_a_warning_for_long_cpu_runs(tmp_path, caplog):
    estimate = RunDurationEstimate(timed_steps=2, skip_steps=0, hint_minutes=0.001)
    trainer = quiet_trainer(tmp_path, [estimate, _Slow(0.02)], max_steps=30, max_epochs=-1)
    with caplog.at_level(logging.INFO, logger="topaz_lightning"):
        trainer.fit(_Tiny(), _loader())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("trainer.max_steps=" in w and "on the CPU" in w for w in warnings), warnings


def test_short_runs_log_no_estimate(tmp_path, caplog):
    estimate = RunDurationEstimate(timed_steps=10, skip_steps=2)
    trainer = quiet_trainer(tmp_path, [estimate], max_steps=5, max_epochs=-1)
    with caplog.at_level(logging.INFO, logger="topaz_lightning"):
        trainer.fit(_Tiny(), _loader())
    assert not [r for r in caplog.records if "estimated" in r.getMessage()]
    with pytest.raises(ValueError, match="timed_steps"):
        RunDurationEstimate(timed_steps=0)


# ---------------------------------------------------------------------------- training curve
def _write_log(folder, rows):
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)


def test_training_log_of_a_continued_run_keeps_each_step_once(tmp_path):
    from topaz_lightning.plots.training_curve import read_training_log

    # the first invocation logged steps 0-7 and was interrupted; its last checkpoint was at 4, so
    # the continuation logged 4-9 again: steps 4-7 come from the continuation
    _write_log(tmp_path / "version_0", [{"step": s, "train/loss": 10.0 - s} for s in range(8)])
    _write_log(tmp_path / "version_1", [{"step": s, "train/loss": 100.0 + s} for s in range(4, 10)])
    table = read_training_log(tmp_path)
    assert table["step"].tolist() == list(range(10))
    assert table["train/loss"].tolist() == [10, 9, 8, 7, 104, 105, 106, 107, 108, 109]
    assert read_training_log(tmp_path / "nothing").empty


def test_training_curve_png_has_a_loss_and_a_held_out_panel(tmp_path):
    from PIL import Image

    from topaz_lightning.errors import InputError, OutputExistsError
    from topaz_lightning.plots.training_curve import plot_training_curve

    rows = [{"step": s, "train/loss": 5.0 / (s + 1), "train/ge": 4.0 / (s + 1)} for s in range(20)]
    rows += [{"step": s, "val/aupr": 0.1 * s / 5} for s in (5, 10, 15)]
    _write_log(tmp_path / "logs" / "version_0", rows)
    out = plot_training_curve(tmp_path / "logs", tmp_path / "curve.png")
    two_panels = Image.open(out).size
    with pytest.raises(OutputExistsError):
        plot_training_curve(tmp_path / "logs", out)
    only_loss = pd.DataFrame([r for r in rows if "train/loss" in r])
    one_panel = Image.open(plot_training_curve(only_loss, tmp_path / "loss.png")).size
    assert two_panels[0] == one_panel[0] and two_panels[1] > one_panel[1]
    with pytest.raises(InputError, match="no train/ or val/"):
        plot_training_curve(pd.DataFrame({"step": [1]}), tmp_path / "empty.png")


def test_training_writes_the_curve_from_the_csv_log_and_says_so_without_one(cfg_train, caplog):
    from tests.test_train import make_dataset, small_overrides
    from topaz_lightning.train import train

    out = cfg_train().paths.output_dir
    from pathlib import Path

    mics, coords = make_dataset(Path(out).parent / "data", n=2, size=96, particles=6)
    extra = ["callbacks.held_out_picking=null", "callbacks.best_checkpoint=null"]
    train(cfg_train(small_overrides(mics, coords, 4, [*extra, "logger=csv"])))
    assert (Path(out) / "training_curve.png").stat().st_size > 0
    with caplog.at_level(logging.INFO, logger="topaz_lightning"):
        train(cfg_train(small_overrides(mics, coords, 4, extra), Path(out).parent / "nolog"))
    assert any("no CSV log" in r.getMessage() for r in caplog.records)
    assert not (Path(out).parent / "nolog" / "training_curve.png").exists()


# ---------------------------------------------------------------------------- wandb
def test_wandb_logger_passes_no_anonymous_setting_and_creates_its_directory(tmp_path):
    from topaz_lightning.utils.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path / "logs"), offline=True, project="p")
    # wandb warns whenever `anonymous` reaches wandb.init, and about a missing git root
    assert "anonymous" not in logger._wandb_init
    assert (tmp_path / "logs").is_dir()
    assert WandbLogger(save_dir=str(tmp_path / "b"), anonymous=True)._wandb_init["anonymous"]


def test_a_bad_checkpoint_interval_ends_tzl_train_with_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from topaz_lightning.cli import train as train_cli

    monkeypatch.chdir(tmp_path)
    argv = ["tzl-train", "callbacks.model_checkpoint.every_n_minutes=-1", "trainer=cpu"]
    monkeypatch.setattr(sys, "argv", [*argv, f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as info:
        train_cli.main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: config key 'every_n_minutes': must be a number >= 0, got -1"


def test_no_directory_not_empty_warning_when_continuing(tmp_path):
    import warnings

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"")
    best = RunCheckpoint(dirpath=folder, filename="best", monitor="train/loss", save_top_k=1)
    trainer = quiet_trainer(tmp_path, [best], max_steps=2, max_epochs=-1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_Tiny(), _loader())
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]
