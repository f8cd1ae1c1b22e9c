"""tzl-train resume=<run dir>: an interrupted run continues with its own settings in its own
directory and ends with the weights an uninterrupted run has; its errors are one line each."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from topaz_lightning.cli.resume import resume_command_line
from topaz_lightning.errors import ConfigError, InputError


class StopOnce(pl.Callback):
    """Raise at ``at_step`` in an invocation that started from step 0 (the "interruption"); a
    continued invocation starts later and passes. Configured through the command line, so it is
    part of the run's recorded overrides like any setting."""

    def __init__(self, at_step: int):
        self.at_step = int(at_step)
        self._started_at = 0

    def on_train_start(self, trainer, pl_module):
        self._started_at = int(trainer.global_step)

    def on_train_batch_end(self, trainer, *args):
        if self._started_at == 0 and trainer.global_step == self.at_step:
            raise RuntimeError("interrupted for the test")


TINY_RUN = (
    "data.simulated_preset=tiny",
    "data.device=cpu",
    "trainer=cpu",
    "trainer.max_steps=6",
    "trainer.log_every_n_steps=1",
    "callbacks.held_out_picking=null",
    "callbacks.best_checkpoint=null",
    "callbacks.progress_bar=null",
    "callbacks.model_checkpoint.every_n_train_steps=2",
)


def _tzl_train(monkeypatch, *args: str) -> None:
    from topaz_lightning.cli import train as train_cli

    monkeypatch.setattr(sys, "argv", ["tzl-train", *args])
    train_cli.main()


def _weights(model_path: Path) -> dict[str, torch.Tensor]:
    from topaz_lightning.models import load_model

    net, _ = load_model(model_path)
    return net.state_dict()


def test_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the simulated data are generated into ./data
    straight, run = tmp_path / "straight", tmp_path / "run"
    _tzl_train(monkeypatch, *TINY_RUN, f"hydra.run.dir={straight}")
    stop = [
        "+callbacks.stop._target_=tests.test_train_resume.StopOnce",
        "+callbacks.stop.at_step=3",
    ]
    with pytest.raises(RuntimeError, match="interrupted for the test"):
        _tzl_train(monkeypatch, *TINY_RUN, *stop, f"hydra.run.dir={run}")
    assert not (run / "model.pt").exists()
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2

    capsys.readouterr()
    _tzl_train(monkeypatch, f"resume={run}")
    assert "resuming with:" in capsys.readouterr().err
    a, b = _weights(straight / "model.pt"), _weights(run / "model.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 6
    # it continued (a restart from step 0 would reach the same weights): the second
    # invocation's log starts after the checkpoint's step 2
    import pandas as pd

    versions = sorted((run / "logs" / "csv").glob("version_*/metrics.csv"))
    assert len(versions) == 2
    assert pd.read_csv(versions[1])["step"].min() >= 2
    # the run's log covers the whole run: steps of both invocations, each once
    from topaz_lightning.plots.training_curve import read_training_log

    table = read_training_log(run / "logs" / "csv")
    assert table["step"].is_unique and table["step"].max() >= 5
    assert (run / "training_curve.png").is_file()
    # the stamp keeps both invocations' configs; the new one is the run's settings again
    assert len(list(run.glob("config.*.yaml"))) == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["callbacks"]["stop"]["at_step"] == 3

    # finished: nothing to resume, unless asked for more steps
    with pytest.raises(InputError, match="finished at step 6"):
        resume_command_line([f"resume={run}"])
    more = resume_command_line([f"resume={run}", "trainer.max_steps=8"])
    assert "ckpt_path=last" in more and "trainer.max_steps=8" in more
    assert "trainer.max_steps=6" not in more and f"hydra.run.dir={run}" in more


# ---------------------------------------------------------------------------- errors, no training
def _fake_run(folder: Path, overrides=("trainer.max_steps=10",), config=None, cwd=None) -> Path:
    hydra = folder / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    config = config if config is not None else {"trainer": {}, "module": {}, "model": {}}
    (hydra / "config.yaml").write_text(yaml.safe_dump(config))
    runtime = {"hydra": {"runtime": {"cwd": str(cwd or Path.cwd())}}}
    (hydra / "hydra.yaml").write_text(yaml.safe_dump(runtime))
    return folder


def _with_checkpoint(run: Path) -> Path:
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    return run


def test_resume_replays_the_recorded_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _with_checkpoint(_fake_run(tmp_path / "r", ["data=files", "trainer.max_steps=10"]))
    assert resume_command_line(["trainer.max_steps=20"]) is None  # no resume=: untouched
    assert resume_command_line([f"resume={run}"]) == [
        "data=files",
        "trainer.max_steps=10",
        f"hydra.run.dir={run}",
    ]
    # allowed changes replace the recorded value; flags stay
    line = resume_command_line(
        ["--cfg", "job", f"resume={run}", "trainer.max_steps=30", "callbacks.progress_bar=null"]
    )
    assert line[:2] == ["--cfg", "job"] and "trainer.max_steps=10" not in line
    assert "trainer.max_steps=30" in line and "callbacks.progress_bar=null" in line
    odd = _with_checkpoint(_fake_run(tmp_path / "a b,c"))
    assert resume_command_line([f"resume={odd}"])[-1] == f"hydra.run.dir='{odd}'"


@pytest.mark.parametrize(
    ("make", "args", "error", "message"),
    [
        (lambda t: t / "missing", [], InputError, "not a directory"),
        (lambda t: (t / "empty").mkdir() or t / "empty", [], InputError, "not a tzl-train run"),
        (
            lambda t: _fake_run(t / "pick", config={"threshold": 0}),
            [],
            InputError,
            "another command's run",
        ),
        (lambda t: _fake_run(t / "r"), [], InputError, "no checkpoint to continue from"),
        (
            lambda t: _with_checkpoint(_fake_run(t / "r")),
            ["data.pi=0.1"],
            ConfigError,
            "data.pi': cannot change when resuming",
        ),
        (lambda t: _with_checkpoint(_fake_run(t / "r")), ["-m"], ConfigError, "drop -m"),
        (
            lambda t: _with_checkpoint(_fake_run(t / "r", cwd=t / "elsewhere")),
            [],
            ConfigError,
            "resume it from there",
        ),
    ],
)
def test_resume_errors_are_one_line(tmp_path, monkeypatch, make, args, error, message):
    monkeypatch.chdir(tmp_path)
    run = make(tmp_path)
    with pytest.raises(error, match=message) as info:
        resume_command_line([f"resume={run}", *args])
    assert "\n" not in str(info.value)


def test_finished_run_without_more_steps_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _with_checkpoint(_fake_run(tmp_path / "r"))
    (run / "model.pt").write_bytes(b"")
    (run / "metrics.json").write_text(json.dumps({"global_step": 10}))
    for args in ([], ["trainer.max_steps=10"], ["trainer.max_steps=5"]):
        with pytest.raises(InputError, match="finished at step 10"):
            resume_command_line([f"resume={run}", *args])
    assert "ckpt_path=last" in resume_command_line([f"resume={run}", "trainer.max_steps=11"])


def test_command_line_resume_errors_exit_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        _tzl_train(monkeypatch, f"resume={tmp_path / 'nope'}")
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a directory" in err and "\n" not in err


def test_train_from_python_refuses_resume(cfg_train):
    from topaz_lightning.train import train

    with pytest.raises(ConfigError, match="resume"):
        train(cfg_train(["resume=/some/run"]))


def test_resume_reads_the_command_line_without_importing_lightning(tmp_path):
    """Lightning imported before Hydra configures logging keeps its own console handler (its
    lines then lose the log format): the resume step must stay light."""
    import subprocess

    run = _with_checkpoint(_fake_run(tmp_path / "r", cwd=tmp_path))
    code = (
        "import sys; from topaz_lightning.cli.resume import resume_command_line; "
        f"resume_command_line(['resume={run}', 'trainer.max_steps=20']); "
        "assert 'pytorch_lightning' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
