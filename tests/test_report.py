"""Tests for tzl-report (sweep aggregation) and scripts/paper_tables.py (commands, table formatting)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import compose_config
from topaz_lightning.errors import ConfigError, InputError, OutputExistsError
from topaz_lightning.geometry import NMS_RADIUS_PER_PARTICLE_RADIUS
from topaz_lightning.report import aggregate, best_row, load_sweep, mean_std, parse_override

REPO = Path(__file__).resolve().parents[1]

# val/aupr per (pi, fold): the best mean is pi=0.03
AUPR = {
    (0.01, 0): 0.30,
    (0.01, 1): 0.40,
    (0.03, 0): 0.50,
    (0.03, 1): 0.42,
    (0.1, 0): 0.20,
    (0.1, 1): 0.10,
}


def _write_job(
    job: Path,
    overrides: list[str],
    metrics: dict | None,
    config: dict | None = None,
    hydra_config: bool = False,
) -> None:
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if config is not None:
        target = job / ".hydra" / "config.yaml" if hydra_config else job / "config.yaml"
        target.write_text(yaml.safe_dump(config))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def _kfold_sweep(root: Path, skip_metrics: tuple[int, ...] = ()) -> Path:
    """A fake pi k-fold sweep as tzl-train -m hparams_search=pi_kfold lays it out."""
    sweep = root / "multirun" / "pi_kfold" / "2026-11-25_10-00-00"
    for num, ((pi, fold), aupr) in enumerate(AUPR.items()):
        metrics = None
        if num not in skip_metrics:
            metrics = {
                "val/aupr": aupr,
                "val/precision@0.9": aupr / 2,
                "global_step": 60,
                "model_path": str(sweep / str(num) / "model.pt"),
            }
        _write_job(
            sweep / str(num),
            [
                f"data.pi={pi}",
                f"data.fold={fold}",
                "hparams_search=pi_kfold",
                "trainer.max_steps=60",
            ],
            metrics,
            config={"data": {"pi": pi, "fold": fold, "num_folds": 2}, "seed": 0},
        )
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def _report(sweep: Path, *extra: str):
    from topaz_lightning.cli.report import run

    return run(compose_config("report", [f"sweep_dir={sweep}", *extra]))


def test_parse_override():
    assert parse_override("data.pi=0.01") == ("data.pi", 0.01)
    assert parse_override("+data.fold=3") == ("data.fold", 3)
    assert parse_override("objective=ge_binomial") == ("objective", "ge_binomial")
    assert parse_override("decoder=null") == ("decoder", None)
    assert parse_override("a.b=[1,2]") == ("a.b", "[1,2]")
    with pytest.raises(InputError, match="not key=value"):
        parse_override("oops")


def test_kfold_report_means_std_and_best_pi(tmp_path, capsys):
    sweep = _kfold_sweep(tmp_path)
    result = _report(sweep)
    out = capsys.readouterr().out
    assert result["group_by"] == ["data.pi"]
    table = result["table"]
    assert list(table["data.pi"]) == [0.01, 0.03, 0.1]
    for pi in (0.01, 0.03, 0.1):
        values = np.array([AUPR[(pi, f)] for f in (0, 1)])
        row = table[table["data.pi"] == pi].iloc[0]
        assert row["val/aupr mean"] == pytest.approx(values.mean())
        assert row["val/aupr std"] == pytest.approx(np.std(values, ddof=1))
        assert row["val/aupr n"] == 2
    assert result["best"]["data.pi"] == 0.03
    assert "Best (highest mean val/aupr): data.pi=0.03" in out
    assert "0.460 ± 0.057" in out  # mean/std of 0.50, 0.42
    # atomic outputs in <sweep>/report, and the report directory is not read as a job
    csv = pd.read_csv(sweep / "report" / "report.csv")
    assert csv["val/aupr mean"].tolist() == pytest.approx(table["val/aupr mean"].tolist())
    assert len(pd.read_csv(sweep / "report" / "jobs.csv")) == 6
    md = (sweep / "report" / "report.md").read_text()
    assert "| data.pi |" in md and "## Jobs" in md
    assert not list((sweep / "report").glob(".*.tmp*"))
    # rerun: refused without overwrite; with overwrite the report dir is still skipped
    with pytest.raises(OutputExistsError):
        _report(sweep)
    again = _report(sweep, "overwrite=true")
    assert len(again["jobs"]) == 6


def test_group_by_metric_list_and_min_mode(tmp_path):
    sweep = _kfold_sweep(tmp_path)
    result = _report(
        sweep,
        "group_by=[data.fold]",
        "metric=[val/precision@0.9,val/aupr]",
        "mode=min",
        f"output_dir={tmp_path / 'out'}",
    )
    table = result["table"]
    assert list(table["data.fold"]) == [0, 1]
    fold1 = np.array([AUPR[(pi, 1)] for pi in (0.01, 0.03, 0.1)])
    assert table.loc[1, "val/aupr mean"] == pytest.approx(fold1.mean())
    assert table.loc[1, "val/precision@0.9 mean"] == pytest.approx(fold1.mean() / 2)
    assert result["best"]["data.fold"] == 1  # lowest mean precision
    # a key that was not overridden is looked up in each job's config
    result = _report(sweep, "group_by=[data.num_folds]", f"output_dir={tmp_path / 'o2'}")
    assert result["table"]["val/aupr n"].tolist() == [6]


def test_no_group_gives_one_row(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, value in enumerate([0.2, 0.4, 0.9]):
        _write_job(sweep / str(seed), [f"seed={seed}"], {"val/aupr": value})
    result = _report(sweep)
    assert result["group_by"] == [] and result["best"] is None
    row = result["table"].iloc[0]
    assert row["val/aupr mean"] == pytest.approx(0.5)
    assert row["val/aupr std"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))


def test_jobs_without_metrics_are_listed_and_skipped(tmp_path, capsys, caplog):
    sweep = _kfold_sweep(tmp_path, skip_metrics=(1, 4))
    result = _report(sweep)
    assert result["without_metrics"] == ["1", "4"]
    out = capsys.readouterr().out
    assert "2 job(s) without metrics.json" in out and "1, 4" in out
    table = result["table"].set_index("data.pi")
    assert table.loc[0.01, "val/aupr n"] == 1
    assert table.loc[0.01, "val/aupr mean"] == pytest.approx(0.30)
    assert math.isnan(table.loc[0.01, "val/aupr std"])
    assert "1, 4" in (sweep / "report" / "report.md").read_text()


def test_missing_metric_in_some_jobs_counts_only_present(tmp_path):
    sweep = tmp_path / "s"
    _write_job(sweep / "0", ["objective=pn", "seed=0"], {"val/aupr": 0.1, "val/best_f1": 0.3})
    _write_job(sweep / "1", ["objective=pn", "seed=1"], {"val/aupr": 0.3})
    _write_job(sweep / "2", ["objective=nnpu", "seed=0"], {"val/aupr": 0.5})
    _write_job(sweep / "3", ["objective=nnpu", "seed=1"], {"val/aupr": 0.7})
    jobs = load_sweep(sweep).jobs
    table = aggregate(jobs, ["objective"], ["val/best_f1", "val/aupr"])
    assert table["val/best_f1 n"].tolist() == [1, 0]
    assert table["val/aupr mean"].tolist() == pytest.approx([0.2, 0.6])
    assert best_row(table, "val/aupr")["objective"] == "nnpu"


def test_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_sweep(tmp_path / "nope")
    empty = tmp_path / "empty"
    (empty / "not_a_job").mkdir(parents=True)
    with pytest.raises(InputError, match="no job subdirectories"):
        load_sweep(empty)
    sweep = _kfold_sweep(tmp_path / "a", skip_metrics=tuple(range(6)))
    with pytest.raises(InputError, match="none of the 6 job"):
        load_sweep(sweep)
    sweep = _kfold_sweep(tmp_path / "b")
    with pytest.raises(ConfigError, match="'val/auroc' is in no job.*available: val/aupr"):
        _report(sweep, "metric=val/auroc")
    with pytest.raises(ConfigError, match="group_by"):
        aggregate(load_sweep(sweep).jobs, ["data.nothing"], ["val/aupr"])
    (sweep / "0" / "metrics.json").write_text("{not json")
    with pytest.raises(InputError, match="0/metrics.json: not valid JSON"):
        load_sweep(sweep)
    (sweep / "0" / "metrics.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(InputError, match="0/metrics.json: not valid JSON"):
        load_sweep(sweep)
    (sweep / "0" / "metrics.json").write_text("{}")
    (sweep / "0" / ".hydra" / "overrides.yaml").write_bytes(b"- data.pi=\xff")
    with pytest.raises(InputError, match="overrides.yaml: not valid YAML"):
        load_sweep(sweep)
    with pytest.raises(ConfigError, match="sweep_dir"):
        from topaz_lightning.cli.report import run

        run(compose_config("report", []))


def test_hydra_config_and_mean_std_text(tmp_path):
    sweep = tmp_path / "s"
    _write_job(
        sweep / "0", ["seed=0"], {"val/aupr": 0.5}, {"data": {"pi": 0.02}}, hydra_config=True
    )
    jobs = load_sweep(sweep, extra_keys=["data.pi", "data.missing"]).jobs
    assert jobs.loc[0, "data.pi"] == 0.02 and jobs.loc[0, "data.missing"] is None
    assert mean_std(0.33549, 0.0721, 5) == "0.335 ± 0.072"
    assert mean_std(0.5, math.nan, 1) == "0.500"
    assert mean_std(math.nan, math.nan, 0) == "-"


def test_command_line_errors(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "topaz_lightning.cli.report", f"sweep_dir={tmp_path / 'missing'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert proc.returncode == 2
    assert "missing: sweep directory does not exist" in proc.stderr


# ---- scripts/paper_tables.py ----------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_tables():
    spec = importlib.util.spec_from_file_location(
        "paper_tables", REPO / "scripts" / "paper_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_tables"] = module
    spec.loader.exec_module(module)
    return module


def test_cells_and_train_commands(paper_tables, tmp_path):
    Cell = paper_tables.Cell
    cells = paper_tables.table_cells("table5", [10, 100], ["pn", "ge_binomial"])
    assert cells == [
        Cell("pn", False, 10),
        Cell("ge_binomial", False, 10),
        Cell("pn", False, 100),
        Cell("ge_binomial", False, 100),
    ]
    t4 = paper_tables.table_cells("table4", [10, None], ["pn"])
    assert t4 == [
        Cell("ge_binomial", False, 10),
        Cell("ge_binomial", True, 10),
        Cell("ge_binomial", False, None),
        Cell("ge_binomial", True, None),
    ]
    # Table 2: the template-matching baseline row, then Topaz (classifier + autoencoder)
    t2 = paper_tables.table_cells("table2", [10], [])
    assert t2 == [Cell("template", False, 10, baseline=True), Cell("ge_binomial", True, 10)]
    assert t2[0].name == "template_n10" and t2[0].model_name.startswith("EMAN2-byRef-like")
    supp = paper_tables.table_cells("supp1", [10], ["pn", "nnpu"])
    assert [c.model_name for c in supp] == ["PN", "NNPU", "GE-binomial + autoencoder"]
    assert paper_tables.parse_int_list("10, 100,all") == [10, 100, None]
    assert paper_tables.replicate_counts("50,10", [10, 100, None]) == {10: 50, 100: 10, None: 10}

    cmd = paper_tables.train_command(
        Cell("ge_binomial", True, 10), [0, 1, 2], tmp_path / "sw", 300, ["data.simulated_dir=/d"]
    )
    assert cmd[:3] == ["tzl-train", "-m", "data.simulated_dir=/d"]
    for item in (
        "objective=ge_binomial",
        "decoder=dcgan",
        "data.num_labeled=10",
        "data.labeled_seed=${seed}",
        "seed=0,1,2",
        "trainer.max_steps=300",
        "callbacks.held_out_picking.every_n_steps=300",
        f"hydra.sweep.dir={tmp_path / 'sw'}",
        "hydra.sweep.subdir=r${seed}",
    ):
        assert item in cmd
    cmd = paper_tables.train_command(Cell("pn", False, None), [3], tmp_path, 5, [])
    # decoder=none explicitly: an experiment config may switch the autoencoder on
    assert (
        "data.num_labeled=null" in cmd
        and "data.labeled_seed=0" in cmd
        and "decoder=dcgan" not in cmd
        and "decoder=none" in cmd
    )
    pick, evaluate = paper_tables.pick_commands(tmp_path / "r0", tmp_path / "ds", 10, 7)
    assert (
        pick[0] == "tzl-pick"
        and "nms_radius_px_model=10" in pick
        and f"subset={tmp_path / 'ds' / 'test.txt'}" in pick
    )
    assert evaluate[0] == "tzl-evaluate" and "max_distance=7" in evaluate
    shapiro = paper_tables.paper_overrides("shapiro_like")
    assert (
        shapiro[0] == "data.pi=0.01"
        and len(shapiro) == 2
        and "radius_px" in shapiro[1]
        and shapiro[1].endswith("=4")
    )
    assert paper_tables.paper_overrides("demo") == []


def test_metric_conversion_and_table_format(paper_tables):
    Cell = paper_tables.Cell
    m = paper_tables.metrics_from_training(
        {
            "val/aupr": 0.4,
            "val/precision@0.25": 0.6,
            "val/precision@0.9": 0.0,
            "val/region_aupr": 0.2,
        }
    )
    assert m["aupr"] == 0.4 and m["precision@0.5"] == 0.0 and m["region_aupr"] == 0.2
    e = paper_tables.metrics_from_evaluation(
        {"aupr": 0.3, "precision_at_recall": {"0.25": 0.7, "0.5": 0.5, "0.75": None, "0.9": None}}
    )
    assert e == {
        "aupr": 0.3,
        "precision@0.25": 0.7,
        "precision@0.5": 0.5,
        "precision@0.75": 0.0,
        "precision@0.9": 0.0,
    }

    pn, ge = Cell("pn", False, 10), Cell("ge_binomial", False, 10)
    results = {
        pn: [
            dict.fromkeys(paper_tables.PICK_METRICS, 0.1),
            dict.fromkeys(paper_tables.PICK_METRICS, 0.3),
        ],
        ge: [dict.fromkeys(paper_tables.PICK_METRICS, 0.5)],
    }
    text = paper_tables.format_table("table5", [pn, ge], results, [10])
    lines = text.splitlines()
    assert lines[0] == (
        "| Labeled particles | Method | AUPR | P@R 0.25 | P@R 0.5 | P@R 0.75 | P@R 0.9 | n "
        "| p vs best (AUPR) |"
    )
    assert lines[2].startswith("| 10 | PN | 0.200 ± 0.141 |")  # std of 0.1, 0.3 (ddof 1)
    # one matched replicate: the paired test is undefined
    assert lines[2].endswith("| 2 | - |")
    assert lines[3].startswith("|  | GE-binomial | 0.500 | 0.500 |")
    assert lines[3].endswith("| 1 | (best) |")
    assert "Paired t-tests (scipy.stats.ttest_rel over matched replicates, aupr)" in text

    results = {
        Cell("pn", False, 10): [{"region_aupr": 0.1}],
        Cell("ge_binomial", True, None): [{"region_aupr": 0.4}],
    }
    text = paper_tables.format_table("supp1", list(results), results, [10, None], num_train=640)
    assert "| Model (region AUPR) | 10 | all (640) |" in text
    assert "| classifier: PN | 0.100 (n=1) | - |" in text
    assert "| classifier+autoencoder: GE-binomial + autoencoder | - | 0.400 (n=1) |" in text


def test_paired_ttest_matches_scipy_on_matched_replicates(paper_tables):
    from scipy.stats import ttest_rel

    a = {0: 0.50, 1: 0.61, 2: 0.55, 3: 0.70, 7: 0.9}  # replicate 7 has no partner
    b = {0: 0.40, 1: 0.52, 2: 0.50, 3: 0.58, 4: 0.1}  # nor has 4
    diff, t, p, n = paper_tables.paired_ttest(a, b)
    ref = ttest_rel([0.50, 0.61, 0.55, 0.70], [0.40, 0.52, 0.50, 0.58])
    assert n == 4 and diff == pytest.approx(0.09)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    # order matters for the sign, not for p
    assert paper_tables.paired_ttest(b, a)[1] == pytest.approx(-t)
    # NaN replicates drop out; identical differences make the test undefined (not p = 0)
    assert paper_tables.paired_ttest({0: 0.5, 1: math.nan}, {0: 0.4, 1: 0.3})[3] == 1
    assert math.isnan(paper_tables.paired_ttest({0: 0.5, 1: 0.6}, {0: 0.4, 1: 0.5})[2])
    assert paper_tables.p_text(0.0312) == "0.031" and paper_tables.p_text(2.1e-5) == "2.1e-05"
    assert paper_tables.p_text(math.nan) == "-"


def test_table_p_values_and_reference_rows(paper_tables):
    Cell = paper_tables.Cell
    base, topaz = Cell("template", False, 10, baseline=True), Cell("ge_binomial", True, 10)
    values = {base: [0.2, 0.25, 0.22], topaz: [0.5, 0.6, 0.52]}
    results = {
        cell: [
            dict.fromkeys(paper_tables.PICK_METRICS, v) | {"replicate": i} for i, v in enumerate(vs)
        ]
        for cell, vs in values.items()
    }
    text = paper_tables.format_table("table2", [base, topaz], results, [10])
    p = paper_tables.paired_ttest(
        {i: v for i, v in enumerate(values[base])}, {i: v for i, v in enumerate(values[topaz])}
    )[2]
    assert 0 < p < 0.05
    lines = text.splitlines()
    assert "| p vs Topaz (AUPR) |" in lines[0]
    assert lines[2].startswith("| 10 | EMAN2-byRef-like [template matching] | 0.223 ± 0.025 |")
    assert lines[2].endswith(f"| 3 | {paper_tables.p_text(p)} |")
    assert lines[3].endswith("| 3 | (reference) |")
    # Table 4: the autoencoder row is tested against the classifier of the same label count
    clf, ae = Cell("ge_binomial", False, 10), Cell("ge_binomial", True, 10)
    results = {clf: results[base], ae: results[topaz]}
    text = paper_tables.format_table("table4", [clf, ae], results, [10])
    assert text.splitlines()[3].endswith(f"| {paper_tables.p_text(p)} |")


def test_experiment_spec_reads_the_real_dataset(paper_tables):
    spec = paper_tables.experiment_spec("empiar10017_table5")
    assert not spec.simulated and spec.downsample == 4 and spec.name == "empiar10017_table5"
    assert spec.test_names == ["Falcon_2012_06_12-15_27_22_0"]
    # 2,591 particles on the 4 micrographs; the test micrograph is not counted
    assert 1800 < spec.num_train < 2591
    # particle radius 108 / 2 / 4 = 13.5 model px: NMS 1.25 r = 16.875, match r
    nms = NMS_RADIUS_PER_PARTICLE_RADIUS * 13.5
    assert spec.nms_radius_px_model == nms and spec.match_distance_px_model == 13.5
    assert spec.particle_radius_px_model == 13.5
    pick, evaluate = paper_tables.pick_commands_for(Path("/r0"), spec)
    assert (
        "subset=[Falcon_2012_06_12-15_27_22_0]" in pick and f"nms_radius_px_model={nms:g}" in pick
    )
    # tzl-evaluate compares micrograph-frame coordinates: 13.5 model px x 4
    assert "max_distance=54" in evaluate
    with pytest.raises(SystemExit, match="no such experiment"):
        paper_tables.experiment_spec("no_such_experiment")


def test_dry_run_prints_commands(paper_tables, tmp_path, capsys):
    assert (
        paper_tables.main(
            [
                "table4",
                "--preset",
                "tiny",
                "--steps",
                "7",
                "--replicates",
                "2",
                "--labels",
                "10",
                "--out",
                str(tmp_path),
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "tzl-simulate simulate=tiny seed=0" in out
    assert out.count("tzl-train -m") == 2 and "decoder=dcgan" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_table_pipeline_end_to_end(paper_tables, tmp_path):
    """Real tiny run: simulate, 2 objectives x 1 replicate x 20 steps, pick + evaluate, table."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    assert (
        paper_tables.main(
            [
                "table5",
                "--preset",
                "tiny",
                "--steps",
                "20",
                "--replicates",
                "1",
                "--labels",
                "10",
                "--objectives",
                "pn,ge_binomial",
                "--eval",
                "pick",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    text = (tmp_path / "table5_tiny.md").read_text()
    assert "NOT the paper's" in text and "| 10 | PN |" in text and "| GE-binomial |" in text
    csv = pd.read_csv(tmp_path / "table5_tiny.csv")
    assert len(csv) == 2 and csv["aupr"].between(0, 1).all()
    # held-out picking in training and tzl-pick + tzl-evaluate roughly agree (GMM fits differ)
    assert csv["aupr"].to_numpy() == pytest.approx(csv["train_val_aupr"].to_numpy(), abs=0.15)


def _fake_table_outputs(root: Path, steps: int, cells, seeds=(0, 1)) -> Path:
    """A simulated dataset stub and finished runs (training + test evaluation) for main()."""
    dataset = root / "data" / "demo_seed0"
    dataset.mkdir(parents=True)
    (dataset / "dataset.yaml").write_text(
        yaml.safe_dump({"shape": [64, 64], "nms_radius_px": 10, "match_distance_px": 7})
    )
    (dataset / "train.txt").write_text("m0\nm1\n")
    rows = ["image_name\tx_coord\ty_coord"] + [f"m{i % 3}\t{i}\t{i}" for i in range(30)]
    (dataset / "particles.tsv").write_text("\n".join(rows) + "\n")  # 20 particles on m0, m1
    for k, cell in enumerate(cells):
        for s in seeds:
            job = root / "runs" / "demo_seed0" / f"conv31_steps{steps}" / cell / f"r{s}"
            (job / "test_eval").mkdir(parents=True)
            (job / "model.pt").write_text("")
            value = 0.1 * (k + 1) + 0.02 * s
            (job / "metrics.json").write_text(
                json.dumps({"val/aupr": value, "val/region_aupr": value / 2})
            )
            (job / "test_eval" / "metrics.json").write_text(
                json.dumps(
                    {
                        "aupr": value + 0.01,
                        "precision_at_recall": {"0.25": 0.9, "0.5": 0.8, "0.75": None, "0.9": None},
                    }
                )
            )
    return dataset


def test_main_builds_table_from_finished_runs(paper_tables, tmp_path, capsys):
    # every run is finished and evaluated, so main() only reads and formats (no subprocess)
    _fake_table_outputs(
        tmp_path,
        5,
        ["ge_binomial_n10", "ge_binomial+ae_n10", "ge_binomial_nall", "ge_binomial+ae_nall"],
    )
    argv = [
        "table4",
        "--preset",
        "demo",
        "--steps",
        "5",
        "--replicates",
        "2",
        "--labels",
        "10,1000",
        "--out",
        str(tmp_path),
    ]
    assert paper_tables.main(argv) == 0
    text = (tmp_path / "table4_demo.md").read_text()
    assert "NOT the paper's" in text and "+ " not in capsys.readouterr().out.split("# table4")[0]
    # 1000 >= the 20 training particles -> all; tzl-evaluate's numbers, mean ± std over 2 seeds
    assert (
        "| 10 | classifier | 0.120 ± 0.014 | 0.900 ± 0.000 | 0.800 ± 0.000 | 0.000 ± 0.000 |"
        in text
    )
    assert "| all (20) | classifier | 0.320 ± 0.014 |" in text
    assert "|  | classifier + autoencoder | 0.420 ± 0.014 |" in text
    csv = pd.read_csv(tmp_path / "table4_demo.csv")
    assert len(csv) == 8 and csv["train_val_aupr"].iloc[0] == pytest.approx(0.1)
    # supp1 reads region AUPR from training only
    _fake_table_outputs(tmp_path / "s", 5, ["pn_n10", "ge_binomial+ae_n10"])
    assert (
        paper_tables.main(
            [
                "supp1",
                "--steps",
                "5",
                "--replicates",
                "2",
                "--labels",
                "10",
                "--objectives",
                "pn",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    text = (tmp_path / "s" / "supp1_demo.md").read_text()
    assert "| classifier: PN | 0.055 ± 0.007 (n=2) |" in text
    assert "| classifier+autoencoder: GE-binomial + autoencoder | 0.105 ± 0.007 (n=2) |" in text


def test_escaped_interpolation_and_null_overrides():
    assert parse_override(r"data.labeled_seed=$\{seed\}") == ("data.labeled_seed", "${seed}")
    assert parse_override("callbacks.progress_bar=null") == ("callbacks.progress_bar", None)


@pytest.mark.slow
def test_template_baseline_row_uses_the_replicates_labels(paper_tables, tmp_path):
    """Table 2's EMAN2-byRef-like row: template from the replicate's labeled particles."""
    from topaz_lightning.simulate import simulate_dataset

    dataset = simulate_dataset(tmp_path / "tiny", preset="tiny", seed=0)
    spec = paper_tables.simulated_spec(Path(dataset), "tiny", ["model=conv31"])
    assert spec.particle_radius_px_model > 0 and spec.nms_radius_px_model > 0
    first = paper_tables.baseline_metrics(spec, 10, 0)
    assert first["num_labeled_particles"] == 10 and 0 <= first["aupr"] <= 1
    assert set(paper_tables.PICK_METRICS) <= set(first)
    # another replicate draws other labeled particles, hence another template
    assert paper_tables.baseline_metrics(spec, 10, 1)["aupr"] != first["aupr"]


def _add_refit(sweep: Path, val_aupr: float | None) -> None:
    """The refit run the sweep callback leaves in <sweep>/refit (its overrides differ)."""
    metrics = {"global_step": 60} | ({"val/aupr": val_aupr} if val_aupr is not None else {})
    _write_job(
        sweep / "refit",
        ["data.train_list=[a,b,c]", "data.pi=0.03", "data.num_folds=null", "data.fold=0"],
        metrics,
        config={"data": {"pi": 0.03, "fold": 0, "num_folds": None}},
    )


def test_refit_is_its_own_labelled_row_not_a_job(tmp_path, capsys):
    sweep = _kfold_sweep(tmp_path)
    _add_refit(sweep, 0.55)
    result = _report(sweep)
    out = capsys.readouterr().out
    assert len(result["jobs"]) == 6 and "refit" not in set(result["jobs"]["job"])
    assert "swept: data.pi, data.fold;" in out  # not hparams_search, num_folds, train_list
    assert "Fixed overrides: hparams_search=pi_kfold, trainer.max_steps=60." in out
    assert result["refit"]["metrics"]["val/aupr"] == 0.55
    (line,) = [line for line in out.splitlines() if line.startswith("Refit (")]
    assert "data.pi=0.03 on every training micrograph): val/aupr=0.550 on its validation" in line
    # a refit without held-out micrographs says that nothing was evaluated
    _add_refit(sweep2 := _kfold_sweep(tmp_path / "b"), None)
    _report(sweep2)
    assert "no held-out micrographs, nothing evaluated" in capsys.readouterr().out
    assert sweep2.exists()


def test_paired_tests_against_a_reference_in_the_table(tmp_path, capsys):
    from scipy.stats import ttest_rel

    sweep = _kfold_sweep(tmp_path)
    result = _report(sweep, "reference='data.pi=0.01'")
    out = capsys.readouterr().out
    assert result["reference"] == {"data.pi": 0.01}
    table = result["table"].set_index("data.pi")
    assert table.loc[0.01, "Δ vs reference"] == "reference"
    # 0.03 - 0.01 over the folds: (0.50 - 0.30, 0.42 - 0.40)
    expected = ttest_rel([0.50, 0.42], [0.30, 0.40]).pvalue
    assert table.loc[0.03, "Δ vs reference"] == "+0.110"
    assert table.loc[0.03, "p"] == f"{expected:.3f}" and table.loc[0.03, "pairs"] == "2"
    assert "| n | Δ vs reference | p | pairs |" in out
    assert (
        "paired t-test (scipy.stats.ttest_rel, two-sided) over the jobs matched on data.fold" in out
    )
    # the bare value works with one grouped key; a setting that is not in the sweep is refused
    assert _report(sweep, "reference=0.1", "overwrite=true")["reference"] == {"data.pi": 0.1}
    with pytest.raises(ConfigError, match="reference.*none of the settings.*data.pi=0.03"):
        _report(sweep, "reference='data.pi=0.5'", "overwrite=true")
    with pytest.raises(ConfigError, match="reference.*grouped keys"):
        _report(sweep, "reference='seed=1'", "overwrite=true")


def _pi_sweep(root: Path, values: dict[float, list[float]]) -> Path:
    sweep = root / "sweep"
    num = 0
    for pi, scores in values.items():
        for fold, score in enumerate(scores):
            _write_job(
                sweep / str(num), [f"data.pi={pi}", f"data.fold={fold}"], {"val/aupr": score}
            )
            num += 1
    return sweep


def test_choice_rules_and_the_tie(tmp_path, capsys):
    from topaz_lightning.report import aggregate, choose

    # 0.05 has the best mean; 0.02 is within one standard error of it and not significantly worse
    # on the paired test; 0.01 is consistently worse on every fold
    values = {
        0.01: [0.20, 0.25, 0.22, 0.30],
        0.02: [0.55, 0.53, 0.56, 0.52],
        0.05: [0.55, 0.60, 0.50, 0.58],
    }
    sweep = _pi_sweep(tmp_path, values)
    jobs = load_sweep(sweep).jobs
    table = aggregate(jobs, ["data.pi"], ["val/aupr"])
    best = choose(table, jobs, ["data.pi"], "val/aupr", rule="best")
    assert best.setting == {"data.pi": 0.05} and not best.tie
    se = np.std(values[0.05], ddof=1) / 2
    assert np.mean(values[0.02]) >= np.mean(values[0.05]) - se  # the premise of the next line
    one_se = choose(table, jobs, ["data.pi"], "val/aupr", rule="one_se")
    assert one_se.setting == {"data.pi": 0.02} and one_se.best == {"data.pi": 0.05}
    assert choose(
        table, jobs, ["data.pi"], "val/aupr", rule="one_se", prefer="largest"
    ).setting == {"data.pi": 0.05}
    not_worse = choose(table, jobs, ["data.pi"], "val/aupr", rule="not_worse")
    assert not_worse.setting == {"data.pi": 0.02}
    text = "\n".join(one_se.lines("val/aupr"))
    assert "Chosen: data.pi=0.02" in text and "one-standard-error rule" in text and "n=4" in text
    assert "1 of 2 other setting(s) significantly worse" in text
    assert "The choice against the best mean (data.pi=0.05): val/aupr -0.01" in text
    assert "pairs: not significantly different." in text
    with pytest.raises(ConfigError, match="rule"):
        choose(table, jobs, ["data.pi"], "val/aupr", rule="highest")

    # nothing significant: the choice is printed as a tie, with n and the test
    tie_sweep = _pi_sweep(tmp_path / "tie", {0.01: [0.40, 0.52, 0.45], 0.03: [0.50, 0.41, 0.49]})
    result = _report(tie_sweep, "rule=one_se")
    out = capsys.readouterr().out
    assert result["choice"].tie
    assert "tie: the best mean (data.pi=0.03) is not significantly better" in out
    assert "n=3 matched pairs" in out and "paired t-test" in out


def test_one_mean_std_and_paired_test():
    from scipy.stats import ttest_rel

    from topaz_lightning.report import mean_std_of, p_text, paired_ttest

    assert mean_std_of([0.50, 0.42, None, float("nan")]) == "0.460 ± 0.057"
    assert mean_std_of([0.5]) == "0.500" and mean_std_of([]) == "-"
    a = {0: 0.5, 1: 0.42, 2: 0.3, 3: float("nan")}
    b = {0: 0.2, 1: 0.1, 2: 0.25, 4: 0.9}
    diff, t, p, n = paired_ttest(a, b)
    ref = ttest_rel([0.5, 0.42, 0.3], [0.2, 0.1, 0.25])
    assert n == 3 and diff == pytest.approx(np.mean([0.3, 0.32, 0.05]))
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    # constant differences: the test is undefined, not p=0
    assert math.isnan(paired_ttest({0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.5})[2])
    assert p_text(0.0205) == "0.021" and p_text(2.1e-5) == "2.1e-05" and p_text(math.nan) == "-"


# ---- scripts/paper_tables.py: the paper's values, table names, the real-data route -------------

PAPER_TEXT = REPO.parent / "shared" / "paper" / "topaz-pu-cnn-paper.txt"


def _paper_rows(caption: str) -> list[list[float]]:
    """The decimal numbers of each row of the paper's table above ``caption``."""
    import re

    lines = PAPER_TEXT.read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if caption in line)
    start = max(i for i in range(end) if "Number of" in lines[i] or "\\mathbf{Model}" in lines[i])
    rows = [
        re.findall(r"\d+\.\d+", line)
        for line in lines[start + 1 : end]
        if "labeled particles" not in line  # the header's recall levels
    ]
    return [[float(x) for x in row] for row in rows if row]


def _flat(values: dict, metrics) -> list[float]:
    out = []
    for metric in metrics:
        if metric in values:
            mean, std = values[metric]
            out += [mean] if std is None else [mean, std]
    return out


@pytest.mark.skipif(not PAPER_TEXT.is_file(), reason="the paper's text is not beside the repo")
def test_paper_values_match_the_papers_tables(paper_tables):
    values, metrics = paper_tables.PAPER_VALUES, paper_tables.PICK_METRICS
    t2 = values["table2", "empiar10096"]
    rows = [(10, "ge_binomial+ae"), (100, "ge_binomial+ae"), (1000, "ge_binomial")]
    expected = [_flat(t2[k], metrics) for k in [*rows, (1000, "template")]]
    assert _paper_rows("Table 2: Particle prediction") == expected
    t3 = values["table3", "shapiro"]
    paper = _paper_rows("Table 3: Particle predictions")
    keys = [(10, "ge_binomial+ae"), (100, "ge_binomial+ae"), (None, "ge_binomial")]
    assert paper[:3] == [_flat(t3[k], metrics) for k in keys]
    # EMAN2: AUPR, and its precision at recall 0.18 (the dagger), which is not P@R 0.25
    assert paper[3] == [*_flat(t3[None, "template"], metrics), 0.076]
    order = [(n, m) for n in (10, 100, 1000) for m in ("ge_binomial", "ge_binomial+ae")]
    shapiro = [(n if n != 1000 else None, m) for n, m in order]
    assert _paper_rows("Table 4: Comparison") == [
        *(_flat(values["table4", "empiar10096"][k], metrics) for k in order),
        *(_flat(values["table4", "shapiro"][k], metrics) for k in shapiro),
    ]
    objectives = ("pn", "nnpu", "ge_kl", "ge_binomial")
    t5 = [(n, o) for n in (10, 100) for o in objectives]
    assert _paper_rows("Table 5: Comparison") == [
        *(_flat(values["table5", "empiar10096"][k], metrics) for k in t5),
        *(_flat(values["table5", "shapiro"][k], metrics) for k in t5),
    ]
    supp = []
    for method in (*objectives, "ge_binomial+ae"):
        row = []
        for dataset, labels in (("empiar10096", (10, 100, 1000)), ("shapiro", (10, 100, None))):
            for n in labels:
                cell = values["supp1", dataset].get((n, method))
                row += _flat(cell, ["region_aupr"]) if cell else []
        supp.append(row)
    assert _paper_rows("Supplementary table 1: AUPR") == supp


def _results(paper_tables, values: dict) -> dict:
    return {
        cell: [
            dict.fromkeys(paper_tables.PICK_METRICS, v) | {"replicate": i} for i, v in enumerate(vs)
        ]
        for cell, vs in values.items()
    }


def test_tables_show_the_papers_values_and_ordering(paper_tables):
    Cell = paper_tables.Cell
    pn, ge = Cell("pn", False, 10), Cell("ge_binomial", False, 10)
    # ours 0.20/0.30 vs the paper's 0.178 (PN) and 0.335 (GE-binomial): the ordering holds
    results = _results(paper_tables, {pn: [0.19, 0.21], ge: [0.29, 0.31]})
    text = paper_tables.format_table("table5", [pn, ge], results, [10], None, "empiar10096")
    header = text.splitlines()[0]
    assert header.endswith("| paper AUPR (EMPIAR-10096) | Δ AUPR (ours - paper) |")
    assert "| 10 | PN | 0.200 ± 0.014 |" in text and "| 0.178 ± 0.062 | +0.022 |" in text
    assert "| 10 | GE-binomial | precision@0.9 | 0.300 ± 0.014 | 0.091 ± 0.034 | +0.209 |" in text
    assert "Beside the paper's Table 5 (EMPIAR-10096" in text
    assert "1 of 1 pairs in the paper's order, holds" in text
    # reversed on Shapiro-lab (paper: GE-binomial 0.105 > PN 0.069)
    results = _results(paper_tables, {pn: [0.30, 0.31], ge: [0.20, 0.21]})
    text = paper_tables.format_table("table5", [pn, ge], results, [10], None, "shapiro")
    assert "does not hold (reversed: GE-binomial > PN)" in text
    # Table 3 is Table 2's design on Shapiro-lab; the Topaz row at every label is the classifier
    cells = paper_tables.table_cells("table3", [10, None], [])
    assert cells[-1] == Cell("ge_binomial", False, None) and cells[1].decoder
    results = _results(paper_tables, {c: [0.1, 0.2] for c in cells})
    text = paper_tables.format_table("table3", cells, results, [10, None], 1167, "shapiro")
    assert "| Topaz [classifier, GE-binomial] |" in text and "| 0.415 | -0.265 |" in text
    assert "Beside the paper's Table 3 (Shapiro-lab" in text
    assert paper_tables.paper_dataset_for("table3", "demo") == "shapiro"
    assert paper_tables.paper_dataset_for("table5", "shapiro_like") == "shapiro"
    assert paper_tables.paper_dataset_for("table2", "empiar10017_table5") == "empiar10096"
    with pytest.raises(SystemExit, match="paper-dataset"):
        paper_tables.paper_dataset_for("table2", "demo", "10017")


def test_table1_and_train_args_complete_an_experiment(paper_tables, tmp_path, capsys):
    sample = REPO / "data" / "samples" / "empiar10017_dev"
    train_args = [
        "--train-arg",
        f"data.micrographs={sample / 'images'}",
        "--train-arg",
        f"data.coordinates={sample / 'coords'}",
        "--train-arg",
        "data.val_list=[Falcon_2012_06_12-15_27_22_0]",
    ]
    # without the data the experiment is refused, naming the key
    with pytest.raises(SystemExit, match="data.micrographs is required"):
        paper_tables.main(["table1", "--experiment", "paper_empiar10096", "--out", str(tmp_path)])
    argv = ["table1", "--experiment", "paper_empiar10096", *train_args, "--out", str(tmp_path)]
    assert paper_tables.main(argv) == 0
    text = (tmp_path / "table1_paper_empiar10096.md").read_text()
    # 2,591 particles on the 4 micrographs: 3 train, 1 test
    assert "| ours: paper_empiar10096 | 3 | 1962 | 1 | 629 |" in text
    assert "| paper: EMPIAR-10096 | 347 | 100465 | 100 | 29535 |" in text
    # the overrides reach every training command (and the run directory names them)
    capsys.readouterr()
    argv = ["table5", "--experiment", "paper_empiar10096", *train_args, "--steps", "2"]
    assert paper_tables.main([*argv, "--labels", "10", "--out", str(tmp_path), "--dry-run"]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if "tzl-train -m" in line]
    assert len(commands) == 4
    assert all(f"data.micrographs={sample / 'images'}" in c for c in commands)
    assert all("_args" in c for c in commands)


@pytest.mark.slow
def test_paper_experiment_runs_on_the_empiar10017_sample(paper_tables, tmp_path):
    """The real-data route end to end: paper_empiar10096 completed by --train-arg, 2 steps."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sample = REPO / "data" / "samples" / "empiar10017_dev"
    argv = [
        "table5",
        "--experiment",
        "paper_empiar10096",
        "--train-arg",
        f"data.micrographs={sample / 'images'}",
        "--train-arg",
        f"data.coordinates={sample / 'coords'}",
        "--train-arg",
        "data.val_list=[Falcon_2012_06_12-15_27_22_0]",
        "--steps",
        "2",
        "--replicates",
        "1",
        "--labels",
        "10",
        "--objectives",
        "pn",
        "--eval",
        "val",
        "--out",
        str(tmp_path),
    ]
    assert paper_tables.main(argv) == 0
    text = (tmp_path / "table5_paper_empiar10096.md").read_text()
    assert "| 10 | PN |" in text and "| 0.178 ± 0.062 |" in text
    assert "Beside the paper's Table 5 (EMPIAR-10096" in text
