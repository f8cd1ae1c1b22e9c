"""The studies as configs: hparams_search=lomo_levers x configs/lever/*.yaml, hparams_search=table5.

Every lever file composes with the leave-one-micrograph-out experiment, changes something
against the base, and is in the sweep's default list; table5 sweeps the paper's objectives."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
LEVERS = sorted(p.stem for p in (REPO / "configs" / "lever").glob("*.yaml"))


def _compose(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", [f"paths.root_dir={REPO}", *overrides], return_hydra_config=True)


def _plain(cfg) -> dict:
    out = OmegaConf.to_container(cfg, resolve=False)
    out.pop("hydra", None)
    return out


def test_lomo_levers_sweeps_every_lever_over_the_folds():
    cfg = _compose(["hparams_search=lomo_levers", "experiment=lomo_empiar10017"])
    params = cfg.hydra.sweeper.params
    assert sorted(params["lever"].split(",")) == LEVERS
    assert params["data.fold"] == "range(0,4)" and cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.task_name == "lomo_levers" and "lomo_report" in cfg.hydra.callbacks
    # the labeled subset follows the seed: 'seed=range(0,3)' gives three subsets per fold
    assert cfg.data.labeled_seed == cfg.seed


@pytest.mark.parametrize("lever", [name for name in LEVERS if name != "base"])
def test_each_lever_changes_the_base_run(lever):
    base = _plain(_compose(["hparams_search=lomo_levers", "experiment=lomo_empiar10017"]))
    other = _plain(
        _compose(["hparams_search=lomo_levers", "experiment=lomo_empiar10017", f"lever={lever}"])
    )
    assert other != base


def test_the_pick_time_levers_reach_the_held_out_picking():
    cfg = _compose(["hparams_search=lomo_levers", "experiment=lomo_empiar10017", "lever=tta8"])
    assert cfg.callbacks.held_out_picking.pick.tta == 8
    cfg = _compose(["hparams_search=lomo_levers", "experiment=lomo_empiar10017", "lever=pi_auto"])
    assert cfg.data.pi == "auto" and cfg.data.particles_per_micrograph is None


def test_table5_sweeps_the_papers_objectives_and_label_counts():
    cfg = _compose(["hparams_search=table5", "experiment=empiar10017_table5"])
    params = cfg.hydra.sweeper.params
    assert params["objective"].split(",") == ["pn", "nnpu", "ge_kl", "ge_binomial"]
    assert params["data.num_labeled"] == "10,100" and params["seed"] == "range(0,3)"
    assert cfg.data.labeled_seed == cfg.seed and cfg.task_name == "table5"
    for objective in params["objective"].split(","):
        assert (REPO / "configs" / "objective" / f"{objective}.yaml").is_file()


@pytest.mark.parametrize("search", ["lomo_levers", "table5"])
@pytest.mark.parametrize("launcher", ["basic", "local_joblib", "slurm"])
def test_the_studies_compose_with_every_shipped_launcher(search, launcher):
    experiment = "lomo_empiar10017" if search == "lomo_levers" else "empiar10017_table5"
    cfg = _compose(
        [f"hparams_search={search}", f"experiment={experiment}", f"hydra/launcher={launcher}"]
    )
    target = cfg.hydra.launcher._target_
    expected = {"basic": "BasicLauncher", "local_joblib": "Joblib", "slurm": "Slurm"}[launcher]
    assert expected in target and cfg.hydra.sweeper.params
