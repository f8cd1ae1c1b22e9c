"""Tests for the end-of-sweep report (topaz_lightning.callbacks.sweep) and the sweep launchers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.test_report import _kfold_sweep
from topaz_lightning.callbacks.sweep import (
    SweepReport,
    check_test_list,
    refit_overrides,
    sweep_keys,
)
from topaz_lightning.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = str(REPO / "configs")


def _compose_train(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_pi_kfold_registers_the_report_callback():
    cfg = _compose_train(["hparams_search=pi_kfold", "refit=true"])
    node = cfg.hydra.callbacks.pi_report
    callback = instantiate(node)
    assert isinstance(callback, SweepReport)
    assert callback.refit is True and callback.group_by == ["data.pi"]
    assert callback.metrics[0] == "val/aupr" and callback.mode == "max"
    assert (
        instantiate(_compose_train(["hparams_search=pi_kfold"]).hydra.callbacks.pi_report).refit
        is False
    )


@pytest.mark.parametrize("launcher", ["local_joblib", "slurm"])
def test_launcher_plugins_are_installed(launcher):
    # the plugins ship with the default install: their config groups compose
    cfg = _compose_train(["hparams_search=pi_kfold", f"hydra/launcher={launcher}"])
    target = cfg.hydra.launcher._target_
    assert ("joblib" if launcher == "local_joblib" else "submitit") in target.lower()


def test_callback_prints_ranking_and_writes_best(tmp_path, capsys):
    sweep = _kfold_sweep(tmp_path)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}, "overrides": {"task": []}}})
    callback = SweepReport(group_by=["data.pi"], metric=["val/aupr"])
    callback.on_multirun_end(config)
    out = capsys.readouterr().out
    # ranking, best first: pi=0.03 (0.46), 0.01 (0.35), 0.1 (0.15)
    rows = [line for line in out.splitlines() if line.startswith("| 0.")]
    assert [r.split(" | ")[0] for r in rows] == ["| 0.03", "| 0.01", "| 0.1"]
    assert "0.460 ± 0.057" in rows[0]
    assert "Chosen: data.pi=0.03 (mean val/aupr 0.460 ± 0.057, n=2) by the rule 'best'" in out
    # paired over folds: 0.50/0.42 vs 0.20/0.10 (scipy.stats.ttest_rel: p = 0.0205)
    assert rows[2].endswith("| -0.310 | 0.021 | 2 |")
    assert (
        "paired t-test (scipy.stats.ttest_rel, two-sided) over the jobs matched on data.fold" in out
    )
    best = yaml.safe_load((sweep / "report" / "best.yaml").read_text())
    assert best["setting"] == {"data.pi": 0.03} and best["n"] == 2
    assert best["tie"] is False and best["rule"] == "best"
    assert (
        "vs data.pi=0.1: val/aupr +0.310 (paired t-test over 2 matched data.fold, p=0.021)"
        in (best["comparisons"])
    )
    assert best["mean"] == pytest.approx(0.46)
    assert (sweep / "report" / "report.md").is_file()
    # a second sweep end (e.g. rerun) replaces the report instead of failing
    callback.on_multirun_end(config)


def test_callback_failure_is_reported_not_raised(tmp_path, capsys):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "none")}}})
    SweepReport().on_multirun_end(config)
    assert "sweep report failed" in capsys.readouterr().err


def test_refit_overrides_drop_the_sweep_and_set_the_choice(tmp_path):
    task = [
        "hparams_search=pi_kfold",
        "data.pi=0.01,0.03",
        "data.fold=0,1",
        "data.num_folds=2",
        "trainer.max_steps=60",
        "refit=true",
        "experiment=quick_simulated",
    ]
    out = refit_overrides(task, {"data.pi": 0.03}, ["data.pi", "data.fold"], tmp_path / "refit")
    assert out == [
        "trainer.max_steps=60",
        "experiment=quick_simulated",
        "data.pi=0.03",
        "data.num_folds=null",
        "data.fold=0",
        f"hydra.run.dir={tmp_path / 'refit'}",
    ]


@pytest.mark.slow
def test_pi_kfold_sweep_ends_with_ranking_and_refit(tmp_path):
    """A real 2 x 2 sweep on the tiny preset (10 steps each), then the refit: one command."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "topaz_lightning.cli.train",
        "-m",
        "hparams_search=pi_kfold",
        "data.simulated_preset=tiny",
        f"data.simulated_dir={tmp_path / 'tiny'}",
        "data.pi=0.02,0.05",
        "data.num_folds=2",
        "data.fold=0,1",
        "trainer.max_steps=10",
        "callbacks.held_out_picking.every_n_steps=10",
        "callbacks.progress_bar=null",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "refit=true",
    ]
    result = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Chosen: data.pi=" in result.stdout
    best = yaml.safe_load((tmp_path / "sweep" / "report" / "best.yaml").read_text())
    assert best["setting"]["data.pi"] in (0.02, 0.05) and best["n"] == 2
    metrics = json.loads((tmp_path / "sweep" / "refit" / "metrics.json").read_text())
    assert metrics["global_step"] == 10
    refit_cfg = yaml.safe_load((tmp_path / "sweep" / "refit" / "config.yaml").read_text())
    assert refit_cfg["data"]["pi"] == best["setting"]["data.pi"]
    assert refit_cfg["data"]["num_folds"] is None


def test_sweep_keys_come_from_hydras_parser_not_commas():
    task = [
        "hparams_search=pi_kfold",
        "data.val_list=null",
        "data.train_list=[a,b,c]",
        "data.pi=0.01,0.03",
        "seed=range(0,3)",
        "objective=choice(pn,nnpu)",
        "trainer.max_steps=60",
    ]
    params = {"data.pi": "0.01,0.02", "data.fold": "range(0,5)", "data.labeled_seed": "7"}
    swept, fixed = sweep_keys(task, OmegaConf.create(params))
    assert swept == ["data.pi", "seed", "objective", "data.fold"]
    assert "data.train_list" not in swept and "data.val_list" not in swept
    # a one-value sweeper param reaches the jobs without being on the command line
    assert fixed == ["data.labeled_seed=7"]


def test_refit_keeps_a_list_valued_training_list(tmp_path, monkeypatch):
    """Regression (issue 19): the list override used to be taken for a sweep and dropped, so the
    refit trained on every micrograph, the held-out one included."""
    sweep = _kfold_sweep(tmp_path)
    task = [
        "hparams_search=pi_kfold",
        "data.val_list=null",
        "data.train_list=[a,b,c]",
        "data.pi=0.01,0.03,0.1",
        "data.fold=0,1",
        "data.num_folds=2",
        "refit=true",
    ]
    config = OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(sweep)},
                "overrides": {"task": task},
                "sweeper": {"params": {"data.fold": "range(0,2)"}},
            }
        }
    )
    calls = []

    def fake_run(cmd, check):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr("topaz_lightning.callbacks.sweep.subprocess.run", fake_run)
    SweepReport(group_by=["data.pi"], metric=["val/aupr"], refit=True).on_multirun_end(config)
    (cmd,) = calls
    overrides = cmd[3:]
    assert "data.train_list=[a,b,c]" in overrides and "data.val_list=null" in overrides
    assert "data.pi=0.03" in overrides
    assert not any(o.startswith(("data.fold=0,", "hparams_search", "refit")) for o in overrides)


def _config(sweep, task=(), params=None, callbacks=None, train_list=None):
    return OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(sweep)},
                "overrides": {"task": list(task)},
                "sweeper": {"params": params or {}},
            },
            "callbacks": callbacks or {},
            "data": {"train_list": train_list},
        }
    )


def _capture_refit(monkeypatch):
    calls = []

    def fake_run(cmd, check):
        calls.append(cmd[3:])
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr("topaz_lightning.callbacks.sweep.subprocess.run", fake_run)
    return calls


def test_refit_validates_once_on_the_test_list(tmp_path, monkeypatch):
    sweep = _kfold_sweep(tmp_path)
    task = ["data.train_list=[a,b,c]", "data.val_list=null", "test_list=[d,e]", "refit=true"]
    config = _config(
        sweep,
        task,
        {"data.pi": "0.01,0.03,0.1", "data.fold": "range(0,2)"},
        callbacks={"best_checkpoint": {"monitor": "val/aupr"}},
        train_list=["a", "b", "c"],
    )
    callback = SweepReport(group_by=["data.pi"], refit=True, test_list=["d", "e"])
    callback.on_multirun_start(config)
    calls = _capture_refit(monkeypatch)
    callback.on_multirun_end(config)
    (overrides,) = calls
    assert "data.train_list=[a,b,c]" in overrides
    assert "data.val_list=['d','e']" in overrides and "data.val_list=null" not in overrides
    # no model is selected on the test micrographs; the sweep's own key stays out of tzl-train
    assert "callbacks.best_checkpoint=null" in overrides
    assert not any(o.startswith("test_list") for o in overrides)


def test_test_list_must_be_outside_the_folds(tmp_path, capsys):
    # Hydra turns a callback's exception into a warning, so the check ends the command itself
    config = _config(tmp_path, train_list=["a", "b", "c"])
    with pytest.raises(SystemExit) as stop:
        SweepReport(test_list=["b", "d"]).on_multirun_start(config)
    assert stop.value.code == 2
    assert "also in data.train_list" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="also in data.train_list.*'b'"):
        check_test_list(["b", "d"], ["a", "b", "c"])
    with pytest.raises(ConfigError, match="needs data.train_list"):
        check_test_list(["d"], None)
    with pytest.raises(SystemExit):
        SweepReport(test_list=["d"]).on_multirun_start(_config(tmp_path))
    lists = tmp_path / "test.txt"
    lists.write_text("d\n# comment\ne.mrc\n")
    SweepReport(test_list=str(lists)).on_multirun_start(config)  # disjoint: no error


def test_pi_kfold_states_its_choice_rule():
    node = _compose_train(["hparams_search=pi_kfold", "test_list=[x]"]).hydra.callbacks.pi_report
    callback = instantiate(node)
    assert callback.rule == "one_se" and callback.prefer == "smallest"
    assert list(callback.test_list) == ["x"]
    with pytest.raises(ConfigError, match="rule"):
        SweepReport(rule="highest")


def test_lomo_is_a_multirun_config(tmp_path, capsys):
    cfg = _compose_train(["hparams_search=lomo", "experiment=lomo_empiar10017"])
    assert cfg.hydra.sweeper.params["data.fold"] == "range(0,4)"
    assert cfg.data.num_folds == 4 and cfg.data.val_list is None
    callback = instantiate(cfg.hydra.callbacks.lomo_report)
    assert callback.group_by is None and callback.rule == "best" and not callback.refit
    # only the folds swept: one row over the micrographs, no choice to make
    sweep = tmp_path / "sweep"
    for fold, aupr in enumerate([0.80, 0.85, 0.78, 0.83]):
        job = sweep / str(fold)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"data.fold={fold}"]))
        (job / "metrics.json").write_text(json.dumps({"val/aupr": aupr, "val/precision@0.9": 0.7}))
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    out = capsys.readouterr().out
    assert "| 0.815 ± 0.031 | 0.700 ± 0.000 | 4 |" in out  # sample std 0.0311
    assert "No chosen setting" not in out and "Chosen" not in out
