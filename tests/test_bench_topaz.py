"""Pure parts of scripts/bench_topaz.py: Topaz's prior arithmetic, labels, ratios, tables (nothing runs Topaz)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_topaz.py"


@pytest.fixture(scope="module")
def bt():
    spec = importlib.util.spec_from_file_location("bench_topaz", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_topaz"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_disk_pixels_matches_label_footprint(bt):
    from topaz_lightning.geometry import disk_offsets

    for r in (0, 1, 3, 4, 7):
        assert bt.disk_pixels(r) == len(disk_offsets(r, include_boundary=True))
    assert bt.disk_pixels(3) == 29


def test_topaz_pixels_per_particle_reproduces_its_2r_plus_1_factor(bt):
    # Topaz 0.3.20 reports 20300 positive regions for 100 labels at radius 3 (seen in its log)
    assert 100 * bt.topaz_pixels_per_particle(3) == 20300
    assert bt.topaz_pixels_per_particle(4) == 9 * bt.disk_pixels(4)


def test_topaz_pi_gives_topaz_the_same_unlabeled_prior(bt):
    total = 3 * 1024 * 1024
    pi = bt.topaz_pi_for(0.0123, num_labels=100, radius=3, total_pixels=total)
    # Topaz trains GE-binomial with pi - p_observed, p_observed from its own pixel count
    p_observed_topaz = 100 * bt.topaz_pixels_per_particle(3) / total
    assert pi - p_observed_topaz == pytest.approx(0.0123)
    with pytest.raises(ValueError):
        bt.topaz_pi_for(0.01, 100, 3, 0)


def test_median_and_ratio(bt):
    assert bt.median([3.0, 1.0, 2.0, float("nan")]) == 2.0
    assert math.isnan(bt.median([]))
    assert bt.ratio(10.0, 4.0) == 2.5
    assert math.isnan(bt.ratio(1.0, 0.0))
    assert math.isnan(bt.ratio(float("nan"), 1.0))


def test_row_rates_use_successful_runs_only(bt):
    row = bt.Row("train", "steps/s", 100)
    row.ours = [bt.Run(10.0, 20.0, 100.0, 0), bt.Run(20.0, 40.0, 100.0, 0), bt.Run(1.0, 1.0, 1, 1)]
    row.topaz = [bt.Run(40.0, 50.0, 200.0, 0)]
    assert row.rate(row.ours, "wall_s") == pytest.approx(median_of([10.0, 5.0]))
    assert row.rate(row.topaz, "cpu_s") == pytest.approx(2.0)
    table = bt.render_table([row])
    assert "| train | steps/s | 2/1 |" in table
    # wall: median(10, 5) = 7.5 steps/s vs 2.5 -> 3.00; CPU: median(5, 2.5) = 3.75 vs 2 -> 1.88
    assert "**3.00**" in table and "**1.88**" in table


def test_pick_rows_show_the_aupr_of_their_scoring_mode_at_r_and_half_r(bt):
    aupr = {
        "real conv31": {
            "steps": 1000,
            "ours_dense": 0.81,
            "ours_dense@half": 0.79,
            "ours_strided:window": 0.805,
            "ours_strided:window@half": 0.785,
            "topaz": 0.8,
            "topaz@half": 0.7,
        }
    }
    dense = bt.Row("pick dense", "micrographs/s", 4, aupr_key="real conv31", scoring="dense")
    strided = bt.Row(
        "pick strided", "micrographs/s", 4, aupr_key="real conv31", scoring="strided:window"
    )
    train = bt.Row("train", "steps/s", 100)
    for row in (dense, strided, train):
        row.ours = [bt.Run(1.0, 1.0, 100.0, 0, 3.0)]
        row.topaz = [bt.Run(2.0, 2.0, 100.0, 0, 5.0)]
    lines = bt.render_table([dense, strided, train], aupr).splitlines()
    assert lines[2].endswith("| 0.810 / 0.800 | 0.790 / 0.700 | 4.0 |")
    assert lines[3].endswith("| 0.805 / 0.800 | 0.785 / 0.700 | 4.0 |")
    assert lines[4].endswith("| - | - | 4.0 |")
    # a mode without an AUPR run says so instead of borrowing another mode's number
    other = bt.Row(
        "pick centroid", "micrographs/s", 4, aupr_key="real conv31", scoring="strided:centroid"
    )
    assert bt.aupr_cells(other, aupr) == ("n/a / 0.800", "n/a / 0.700")
    # results written before the load was recorded read back with nan, shown as n/a
    old = bt.Row("old", "steps/s", 1, ours=[bt.Run(1.0, 1.0, 1.0, 0)], topaz=[bt.Run(1, 1, 1, 0)])
    assert bt.render_table([old]).splitlines()[2].endswith("| - | - | n/a |")


def test_scoring_specs_parse_and_label_the_default(bt):
    assert bt.parse_scoring_spec("strided:centroid") == ("strided", "centroid")
    assert bt.parse_scoring_spec(" dense ") == ("dense", None)
    for bad in ("", ":window", "strided:"):
        with pytest.raises(ValueError, match="SCORING:REFINE"):
            bt.parse_scoring_spec(bad)
    defaults = ("strided", "window")
    assert bt.scoring_label("strided:window", defaults) == "scoring=strided refine=window (default)"
    assert bt.scoring_label("strided", defaults) == "scoring=strided (default)"
    assert bt.scoring_label("strided:centroid", defaults) == "scoring=strided refine=centroid"
    # every maximum refined exactly: two tzl-pick overrides, not the default
    assert (
        bt.scoring_label("strided:window_all", defaults)
        == "scoring=strided refine=window refine_exact=all"
    )
    assert bt.scoring_label("dense", defaults) == "scoring=dense"
    assert bt.scoring_label("dense", ("dense", "window")) == "scoring=dense (default)"


def test_parse_model_steps(bt):
    assert bt.parse_model_steps("conv31, resnet8:300,") == [("conv31", None), ("resnet8", 300)]
    for bad in ("resnet8:", "resnet8:x", ":100"):
        with pytest.raises(SystemExit, match="MODEL:STEPS"):
            bt.parse_model_steps(bad)


def test_snapshot_holds_the_committed_package_and_reuses_itself(bt, tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    (repo / "topaz_lightning").mkdir(parents=True)
    (repo / "configs").mkdir()
    (repo / "topaz_lightning" / "a.py").write_text("X = 1\n")
    (repo / "configs" / "pick.yaml").write_text("scoring: strided\n")

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=repo,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    assert "+ uncommitted" not in bt.git_commit(repo)
    (repo / "topaz_lightning" / "a.py").write_text("X = 2\n")  # not committed
    assert bt.git_commit(repo).endswith("+ uncommitted changes")
    snap = bt.make_snapshot(repo, tmp_path / "snaps")
    assert (snap / "topaz_lightning" / "a.py").read_text() == "X = 1\n"
    assert (snap / "configs" / "pick.yaml").exists()
    assert (snap / "COMMIT").read_text().strip() == snap.name
    assert bt.make_snapshot(repo, tmp_path / "snaps") == snap


def median_of(values):
    values = sorted(values)
    return (values[0] + values[-1]) / 2 if len(values) == 2 else values[len(values) // 2]


def test_sample_labels_is_seeded_rounded_and_restricted(bt):
    rows = [("a", 1.4, 2.6), ("a", 10.5, 3.0), ("b", 5.0, 5.0), ("c", 7.0, 7.0)]
    first = bt.sample_labels(rows, ["a", "b"], 2, seed=0)
    assert first == bt.sample_labels(list(reversed(rows)), ["a", "b"], 2, seed=0)
    assert all(name in {"a", "b"} for name, _, _ in first)
    assert all(isinstance(x, int) and isinstance(y, int) for _, x, y in first)
    assert bt.sample_labels(rows, ["a"], 2, seed=1) == [("a", 1, 3), ("a", 10, 3)]
    with pytest.raises(ValueError, match="only 1"):
        bt.sample_labels(rows, ["c"], 2, seed=0)


def test_lscpu_summary(bt):
    text = (
        "Architecture:            x86_64\nCPU(s):                  2\n"
        "Model name:              Intel(R) Xeon(R) CPU @ 2.20GHz\nThread(s) per core:      2\n"
        "Core(s) per socket:      1\nSocket(s):               1\nNUMA node0 CPU(s):   0,1\n"
    )
    info = bt.lscpu_summary(text)
    assert info == {
        "cpus": "2",
        "model": "Intel(R) Xeon(R) CPU @ 2.20GHz",
        "threads_per_core": "2",
        "cores_per_socket": "1",
        "sockets": "1",
    }


def test_find_aupr_and_write_doc_keeps_the_intro(bt, tmp_path):
    assert bt.find_aupr({"label": "x", "metrics": [{"n": 1}, {"aupr": 0.5}]}) == 0.5
    assert bt.find_aupr({"aupr": None, "other": {"aupr": 0.25}}) == 0.25
    assert bt.find_aupr({"precision": 1.0}) is None
    doc = tmp_path / "topaz.md"
    doc.write_text(
        "# Intro\nhand-written\n\n## Results (generated by scripts/bench_topaz.py)\nold\n"
    )
    bt.write_doc(doc, "## Results (generated by scripts/bench_topaz.py)\nnew\n")
    text = doc.read_text()
    assert text.startswith("# Intro\nhand-written\n") and "new" in text and "old" not in text


def test_aupr_rows_pair_each_mode_with_topaz_at_r_and_half_r(bt):
    aupr = {
        "real conv31": {
            "steps": 500,
            "topaz_pi": 0.02,
            "ours_strided:window": 0.8,
            "ours_strided:window@half": 0.7,
            "topaz": 0.6,
            "topaz@half": 0.5,
        }
    }
    assert bt.aupr_rows(aupr) == [
        "| real conv31 | strided:window | 500 | 0.800 | 0.600 | 0.700 | 0.500 |"
    ]


def test_merge_marks_rows_of_another_commit_and_keeps_this_runs_aupr(bt, tmp_path):
    import json

    bench = bt.Bench.__new__(bt.Bench)
    bench.rows, bench.aupr, bench.commands, bench.commit = (
        [],
        {"real conv31": {"topaz": 0.9}},
        {},
        "new1",
    )
    row = {
        "name": "pick conv31 dense",
        "unit": "micrographs/s",
        "work": 16,
        "ours": [{"wall_s": 1.0, "cpu_s": 1.0, "maxrss_mib": 1.0, "rc": 0}],
        "topaz": [{"wall_s": 2.0, "cpu_s": 2.0, "maxrss_mib": 1.0, "rc": 0, "load1": 3.0}],
        "aupr_key": "real conv31",
        "scoring": "dense",
    }
    aupr = {"real conv31": {"topaz": 0.5}}
    for name, commit in (("same.json", "new1"), ("old.json", "old0")):
        data = {"rows": [row], "aupr": aupr, "commands": {}, "commit": commit}
        (tmp_path / name).write_text(json.dumps(data))
        bench.merge(tmp_path / name)
    same, old = bench.rows
    assert same.name == "pick conv31 dense" and same.aupr_key == "real conv31"
    assert old.name == "pick conv31 dense [old0]" and old.aupr_key == "real conv31 [old0]"
    assert bench.aupr == {"real conv31": {"topaz": 0.9}, "real conv31 [old0]": {"topaz": 0.5}}
    assert math.isnan(same.ours[0].load1) and same.topaz[0].load1 == 3.0


def test_rows_without_a_finished_run_of_each_tool_are_named_not_tabled(bt):
    done = bt.Row(
        "done", "micrographs/s", 16, ours=[bt.Run(1, 1, 1, 0)], topaz=[bt.Run(2, 2, 1, 0)]
    )
    cut = bt.Row("cut", "micrographs/s", 16, ours=[], topaz=[bt.Run(2, 2, 1, 0)])
    failed = bt.Row(
        "failed", "micrographs/s", 16, ours=[bt.Run(1, 1, 1, 1)], topaz=[bt.Run(2, 2, 1, 0)]
    )
    lines = bt.render_table([done, cut, failed]).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:3]] == ["| done"]
    assert lines[-1] == "Not timed (no finished run of one of the tools): cut; failed"
    assert "nan" not in "\n".join(lines)


def test_only_setup_leaves_the_doc_alone(bt):
    assert not bt.writes_report(["setup"], [])
    assert not bt.writes_report([], [])
    assert bt.writes_report(["setup", "pick_conv31"], [])
    assert bt.writes_report([], ["run/results.json"])
