"""tzl-report's named views (configs/view/*.yaml): the default sweep table, the paper's Table 5
beside the published values, and every lever against its base run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tests.conftest import compose_config
from topaz_lightning.errors import ConfigError
from topaz_lightning.report import build_report
from topaz_lightning.report.paper import PAPER_VALUES
from topaz_lightning.report.views import seed_spread

REPO = Path(__file__).resolve().parents[1]
VIEWS = sorted(p.stem for p in (REPO / "configs" / "view").glob("*.yaml"))


def _job(sweep: Path, num: int, overrides: list[str], metrics: dict) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "metrics.json").write_text(json.dumps(metrics))


def _report(sweep: Path, *overrides: str) -> dict:
    cfg = compose_config("report", [f"sweep_dir={sweep}", *overrides])
    return build_report(cfg)


# ---- Table 5 ------------------------------------------------------------------------------------

# val/aupr per (labels, objective, seed): GE-binomial best at 10 labels (as in the paper), PN
# best at 100 (not as in the paper)
T5 = {
    (10, "pn"): [0.20, 0.25, 0.22],
    (10, "ge_binomial"): [0.40, 0.45, 0.41],
    (100, "pn"): [0.60, 0.62, 0.61],
    (100, "ge_binomial"): [0.50, 0.52, 0.55],
}


@pytest.fixture
def table5_sweep(tmp_path) -> Path:
    sweep = tmp_path / "multirun" / "table5" / "t"
    num = 0
    for (labels, objective), values in T5.items():
        for seed, aupr in enumerate(values):
            overrides = [f"objective={objective}", f"data.num_labeled={labels}", f"seed={seed}"]
            metrics = {"val/aupr": aupr} | {
                f"val/precision@{r:g}": aupr / 2 for r in (0.25, 0.5, 0.75, 0.9)
            }
            _job(sweep, num, overrides, metrics)
            num += 1
    return sweep


def test_table5_puts_the_papers_values_beside_ours(table5_sweep, capsys):
    out = _report(table5_sweep, "view=table5")
    text = capsys.readouterr().out
    assert out["view"] == "table5"
    assert set(out["paths"]) == {"table5.csv", "table5_jobs.csv", "table5.md"}
    assert all(p.is_file() for p in out["paths"].values())
    table = out["table"].set_index(["labeled", "objective"])
    paper = PAPER_VALUES["table5", "empiar10096"]
    # ours, the paper's (from report/paper.py, not a copy) and the difference
    row = table.loc[("10", "ge_binomial")]
    assert row["val/aupr mean"] == pytest.approx(sum(T5[10, "ge_binomial"]) / 3)
    assert row["paper aupr mean"] == paper[10, "ge_binomial"]["aupr"][0] == 0.335
    assert row["aupr - paper"] == pytest.approx(row["val/aupr mean"] - 0.335)
    assert "0.335 ± 0.072" in text and "0.488 ± 0.057" in text
    # rows by label count, then the paper's objective order
    assert list(table.index) == [(str(n), o) for n in (10, 100) for o in ("pn", "ge_binomial")]
    # each objective against the best of its label count, paired over the 3 seeds
    assert table.loc[("10", "ge_binomial"), "vs best"] == "best"
    assert "3 pairs" in table.loc[("10", "pn"), "vs best"]
    assert table.loc[("100", "pn"), "vs best"] == "best"
    # the paper's ordering: GE-binomial > PN holds at 10 labels, not at 100
    assert "10 labels: the paper's ordering (GE-binomial > PN) holds." in text
    assert (
        "100 labels: the paper's ordering (GE-binomial > PN) differs (ours: PN > GE-binomial)"
        in (text)
    )


def test_table5_shapiro_values_and_missing_label_counts(tmp_path, capsys):
    sweep = tmp_path / "s"
    for num, labels in enumerate(["null", "null"]):
        _job(
            sweep,
            num,
            ["objective=ge_binomial", f"data.num_labeled={labels}", f"seed={num}"],
            {"val/aupr": 0.5},
        )
    out = _report(sweep, "view=table5", "view.paper_dataset=shapiro")
    row = out["table"].iloc[0]
    # every particle labeled: the paper's Table 5 has no such row
    assert row["labeled"] == "all" and math.isnan(row["paper aupr mean"])
    assert "Shapiro-lab" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="paper_dataset"):
        _report(sweep, "view=table5", "view.paper_dataset=elsewhere", "overwrite=true")


def test_table5_needs_the_aupr_metric(tmp_path):
    sweep = tmp_path / "s"
    _job(sweep, 0, ["objective=pn", "data.num_labeled=10"], {"train/loss": 0.1})
    with pytest.raises(ConfigError, match="val/aupr"):
        _report(sweep, "view=table5")


# ---- levers -------------------------------------------------------------------------------------


def _levers_sweep(root: Path, deltas: dict[str, list[float]], seeds: int = 2) -> Path:
    """A leave-one-micrograph-out sweep: lever x fold x seed, base AUPR 0.5 + fold + seed noise."""
    sweep = root / "multirun" / "lomo_levers" / "t"
    num = 0
    for lever, delta in deltas.items():
        for fold in range(4):
            for seed in range(seeds):
                aupr = 0.5 + 0.05 * fold + 0.01 * seed + delta[fold]
                overrides = [f"lever={lever}", f"data.fold={fold}", f"seed={seed}"]
                _job(sweep, num, overrides, {"val/aupr": aupr, "val/precision@0.9": aupr - 0.1})
                num += 1
    return sweep


def test_levers_pair_each_lever_with_the_base(tmp_path, capsys):
    sweep = _levers_sweep(
        tmp_path,
        {
            "base": [0, 0, 0, 0],
            "radius6": [-0.05, -0.04, -0.06, -0.05],  # clearly worse, every fold
            "ema": [0.002, -0.001, 0.001, 0.0],  # within the seed spread: a tie
        },
    )
    out = _report(sweep, "view=levers", "metric=[val/aupr,val/precision@0.9]")
    text = capsys.readouterr().out
    assert out["base"] == {"lever": "base"} and out["paths"]["levers.md"].is_file()
    table = out["table"].set_index("lever")
    worse = table.loc["lever=radius6 vs base"]
    assert worse["Δ val/aupr"] == pytest.approx(-0.05)
    assert (worse["min"], worse["max"]) == (pytest.approx(-0.06), pytest.approx(-0.04))
    assert worse["n"] == 8 and worse["p"] < 0.001
    assert worse["verdict"] == "worse, significant"
    assert worse["Δ val/precision@0.9"] == pytest.approx(-0.05)
    tie = table.loc["lever=ema vs base"]
    # seed spread: std of (0.5 + 0.05 f, 0.51 + 0.05 f) within each fold = 0.00707
    assert tie["seed spread"] == pytest.approx(0.01 / math.sqrt(2))
    assert tie["verdict"].startswith("tie")
    assert "-0.060..-0.040" in text and "paired t-test" in text


def test_levers_reference_sets_the_base_and_strata_split_it(tmp_path):
    sweep = tmp_path / "s"
    num = 0
    for labels in (10, 100):
        for lever, delta in (("base", 0.0), ("wide", 0.1)):
            for fold in range(3):
                aupr = 0.4 + delta * (1 if labels == 10 else -1) + 0.02 * fold
                _job(
                    sweep,
                    num,
                    [f"data.num_labeled={labels}", f"lever={lever}", f"data.fold={fold}"],
                    {"val/aupr": aupr},
                )
                num += 1
    out = _report(sweep, "view=levers", "view.strata=[data.num_labeled]", "group_by=[lever]")
    table = out["table"].set_index("data.num_labeled")
    assert table.loc[10, "Δ val/aupr"] == pytest.approx(0.1)
    assert table.loc[100, "Δ val/aupr"] == pytest.approx(-0.1)
    # one seed per fold: no seed spread, the verdict comes from the test
    assert math.isnan(table.loc[10, "seed spread"]) and table.loc[10, "n"] == 3
    flipped = _report(
        sweep,
        "view=levers",
        "view.strata=[data.num_labeled]",
        "group_by=[lever]",
        "reference=wide",
        "overwrite=true",
    )
    assert flipped["table"].iloc[0]["lever"] == "lever=base vs wide"
    assert flipped["table"].iloc[0]["Δ val/aupr"] == pytest.approx(-0.1)


def test_levers_refuse_a_sweep_of_folds_only(tmp_path):
    sweep = tmp_path / "s"
    for fold in range(2):
        _job(sweep, fold, [f"data.fold={fold}"], {"val/aupr": 0.5})
    with pytest.raises(ConfigError, match="no lever"):
        _report(sweep, "view=levers")


def test_seed_spread_pools_within_folds():
    import pandas as pd

    jobs = pd.DataFrame(
        {
            "lever": ["b"] * 4,
            "data.fold": [0, 0, 1, 1],
            "seed": [0, 1, 0, 1],
            "m": [0.5, 0.7, 0.1, 0.1],
        }
    )
    # fold 0: var 0.02, fold 1: var 0 -> sqrt(0.01)
    assert seed_spread(jobs, {"lever": "b"}, "m", ["data.fold", "seed"]) == pytest.approx(0.1)
    assert math.isnan(seed_spread(jobs.assign(seed=0), {"lever": "b"}, "m", ["data.fold", "seed"]))


# ---- every view -------------------------------------------------------------------------------


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_config_builds_a_report(view, table5_sweep):
    """Each configs/view/*.yaml has a _target_ that renders the same sweep (levers: objective
    against the first)."""
    out = _report(table5_sweep, f"view={view}")
    assert out["view"] in (view, "report")
    assert all(path.is_file() for path in out["paths"].values())


def test_the_default_view_is_todays_report(table5_sweep):
    out = _report(table5_sweep)
    assert out["view"] == "report" and out["group_by"] == ["objective", "data.num_labeled"]
    assert {"report.md", "report.csv", "jobs.csv"} == set(out["paths"])
    # a named view then writes beside it (the sweep callback's report is there already)
    levers = _report(table5_sweep, "view=levers")
    assert {"levers.md", "levers.csv", "levers_jobs.csv"} == set(levers["paths"])


def test_a_view_that_is_not_a_view_is_refused():
    from omegaconf import OmegaConf

    from topaz_lightning.report.build import SweepTableView, make_view

    assert isinstance(make_view(OmegaConf.create({})), SweepTableView)
    with pytest.raises(ConfigError, match="configs/view"):
        make_view(OmegaConf.create({"view": "levers"}))
    with pytest.raises(ConfigError, match="not a report view"):
        make_view(OmegaConf.create({"view": {"_target_": "builtins.dict"}}))
