"""scripts/accuracy_study.py keeps only what has no config: its tables are tzl-report's views."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location(
        "accuracy_study", REPO / "scripts" / "accuracy_study.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["accuracy_study"] = module
    spec.loader.exec_module(module)
    return module


def test_the_study_has_no_pool_tta_copy_or_table_formatting_of_its_own(study):
    text = (REPO / "scripts" / "accuracy_study.py").read_text()
    for gone in ("ThreadPoolExecutor", "def score_tta", "def _cell", "def paired(", "ttest"):
        assert gone not in text
    assert not any(ps.name().count("tta") for ps in study.pick_settings([1000, 2000], "100"))


def test_report_prints_the_levers_view_of_the_evaluations(study, tmp_path, capsys):
    """Fake evaluations (as stage 3 writes them): tzl-report's default and levers views read
    them, base1k with the default picks is the base, levers are paired per fold."""
    base_pick = f"slast_{study.DEFAULT_CORE}"
    num = 0
    for train, pick, delta in (
        ("base1k", base_pick, 0.0),
        ("base1k", "slast_raw_norm-pick_nms0.50r", -0.1),
        ("radius6", base_pick, -0.02),
    ):
        for fold in range(3):
            job = tmp_path / "eval" / f"job{num}"
            (job / ".hydra").mkdir(parents=True)
            overrides = [
                f"train={train}",
                f"pick={pick}",
                "labels=100",
                f"data.fold={fold}",
                "steps=1000",
            ]
            (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
            aupr = 0.8 + 0.01 * fold + delta + 0.001 * fold * (delta != 0)
            metrics = {"aupr": aupr, "precision@0.9": aupr - 0.1, "best_f1": aupr}
            (job / "metrics.json").write_text(json.dumps(metrics))
            num += 1
    study.report(tmp_path)
    levers = pd.read_csv(tmp_path / "report" / "levers.csv").set_index("lever")
    assert levers.loc["train=radius6 vs base1k", "Δ aupr"] == pytest.approx(-0.019)
    nms = levers.loc[f"pick=slast_raw_norm-pick_nms0.50r vs {base_pick}"]
    assert nms["Δ aupr"] == pytest.approx(-0.099) and nms["n"] == 3
    assert (tmp_path / "report" / "report.csv").is_file()
