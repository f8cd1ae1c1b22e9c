"""Precision-recall evaluation: hand-computed numbers, slow references, region AUPR, table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.metrics import (
    evaluate_picks,
    format_table,
    precision_recall_curve,
    region_aupr,
)
from topaz_lightning.picking import sigmoid, threshold_for_recall


def _df(name, xy, scores=None):
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    data = {"micrograph": [name] * len(xy), "x": xy[:, 0], "y": xy[:, 1]}
    if scores is not None:
        data["score"] = scores
    return pd.DataFrame(data)


def _slow_average_precision(scores, is_tp, n_true):
    """Sum over true positives of the precision at their rank, / n_true (distinct scores only)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    tp = 0
    total = 0.0
    for rank, i in enumerate(order, start=1):
        if is_tp[i]:
            tp += 1
            total += tp / rank
    return total / n_true


def test_hand_computed_example():
    # truth at x = 0, 10, 50; picks: 0.9 hits 0, 0.8 is a duplicate near 0, 0.7 hits 10, 0.1 far
    picks = _df("a", [[0, 0], [1, 0], [10, 0], [30, 0]], [0.9, 0.8, 0.7, 0.1])
    truth = _df("a", [[0, 0], [10, 0], [50, 0]])
    ev = evaluate_picks(picks, truth, max_distance_px=3)
    assert ev.n_true == 3 and ev.n_pred == 4 and ev.n_matched == 2
    np.testing.assert_allclose(ev.precision, [1, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(ev.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert ev.aupr == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert ev.precision_at_recall == {0.25: 1.0, 0.5: pytest.approx(2 / 3), 0.75: None, 0.9: None}
    assert ev.best_f1 == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert ev.best_f1_threshold == 0.7
    # metrics.json's threshold per recall level is threshold_for_recall's (one function):
    # halfway from 0.7 (recall 2/3) to the next lower curve score 0.1
    summary = ev.as_dict()["threshold_at_recall"]
    assert summary["0.5"] == pytest.approx(0.4) and summary["0.25"] == pytest.approx(0.85)
    assert summary["0.75"] is None and summary["0.9"] is None
    assert ev.picks["matched"].tolist() == [True, False, True, False]
    table = ev.table("run1")
    assert "run1" in table and "0.556" in table and " -" in table


def test_pick_just_outside_is_false_positive():
    truth = _df("a", [[0, 0]])
    inside = evaluate_picks(_df("a", [[7, 0]], [1.0]), truth, 7)
    outside = evaluate_picks(_df("a", [[7.01, 0]], [1.0]), truth, 7)
    assert inside.n_matched == 1 and inside.aupr == 1.0
    assert outside.n_matched == 0 and outside.aupr == 0.0


def test_empty_picks_and_empty_truth():
    truth = _df("a", [[0, 0], [5, 5]])
    ev = evaluate_picks(_df("a", np.zeros((0, 2)), []), truth, 3)
    assert ev.aupr == 0.0 and ev.n_pred == 0 and ev.precision_at_recall[0.25] is None
    assert ev.best_f1 == 0.0 and ev.best_f1_threshold is None
    ev = evaluate_picks(_df("a", [[0, 0]], [1.0]), _df("a", np.zeros((0, 2))), 3, micrographs=["a"])
    assert ev.aupr is None and ev.n_true == 0 and ev.precision.tolist() == [0.0]
    assert "-" in format_table({"x": ev})


@pytest.mark.parametrize("seed", range(25))
def test_aupr_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    scores = rng.permutation(n).astype(float)  # distinct
    is_tp = rng.random(n) < 0.4
    n_true = int(is_tp.sum() + rng.integers(0, 20)) or 1
    ev = precision_recall_curve(scores, is_tp, n_true)
    assert ev.aupr == pytest.approx(_slow_average_precision(scores, is_tp, n_true))
    # precision at recall r: max precision over ranks reaching it
    order = np.argsort(-scores)
    tp = np.cumsum(is_tp[order])
    prec, rec = tp / np.arange(1, n + 1), tp / n_true
    for r in (0.25, 0.5, 0.75, 0.9):
        expect = prec[rec >= r].max() if (rec >= r).any() else None
        assert ev.precision_at_recall[r] == (None if expect is None else pytest.approx(expect))


@pytest.mark.parametrize("seed", range(10))
def test_aupr_matches_torchmetrics_when_every_particle_is_matched(seed):
    from torchmetrics.functional.classification import binary_average_precision

    rng = np.random.default_rng(50 + seed)
    n = 300
    scores = np.round(rng.normal(size=n), 1)  # many ties
    is_tp = rng.random(n) < 0.3
    ev = precision_recall_curve(scores, is_tp, int(is_tp.sum()))
    ref = binary_average_precision(
        torch.sigmoid(torch.tensor(scores)).float(), torch.tensor(is_tp.astype(int))
    )
    assert ev.aupr == pytest.approx(float(ref), abs=1e-5)


def test_pooling_over_micrographs_and_restriction():
    truth = pd.concat([_df("a", [[0, 0]]), _df("b", [[0, 0], [20, 20]])])
    picks = pd.concat(
        [_df("a", [[0, 0]], [0.5]), _df("b", [[20, 20]], [0.9]), _df("c", [[0, 0]], [0.99])]
    )
    ev = evaluate_picks(picks, truth, 2)  # c has no truth: ignored
    assert (ev.n_true, ev.n_pred, ev.n_matched, ev.n_micrographs) == (3, 2, 2, 2)
    assert ev.aupr == pytest.approx(2 / 3)
    ev = evaluate_picks(picks, truth, 2, micrographs=["b", "c"])  # c listed: its pick is an FP
    assert (ev.n_true, ev.n_pred, ev.n_matched) == (2, 2, 1)
    np.testing.assert_allclose(ev.precision, [0.0, 0.5])


def test_bad_tables_raise():
    with pytest.raises(InputError, match="score"):
        evaluate_picks(_df("a", [[0, 0]]), _df("a", [[0, 0]]), 2)
    bad = _df("a", [[0, 0]], [1.0])
    bad.loc[0, "x"] = np.nan
    with pytest.raises(InputError, match="row 0"):
        evaluate_picks(bad, _df("a", [[0, 0]]), 2)


def test_threshold_for_recall():
    picks = _df("a", [[0, 0], [1, 0], [10, 0], [30, 0]], [0.9, 0.8, 0.7, 0.1])
    ev = evaluate_picks(picks, _df("a", [[0, 0], [10, 0], [50, 0]]), 3)
    # halfway to the next lower score on the curve (robust to rounded scores in files)
    assert threshold_for_recall(ev, 0.3) == pytest.approx(0.85)
    assert threshold_for_recall(ev, 0.6) == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="never reached"):
        threshold_for_recall(ev, 0.9)


def test_as_dict_is_json_ready():
    import json

    ev = evaluate_picks(_df("a", [[0, 0]], [1.0]), _df("a", [[0, 0]]), 2)
    text = json.dumps(ev.as_dict(include_curve=True))
    assert '"aupr": 1.0' in text and '"curve"' in text


def _slow_region_ap(scores, labels):
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    ap, tp, prev_recall = 0.0, 0, 0.0
    for k in range(len(s)):
        tp += y[k]
        if k + 1 < len(s) and s[k + 1] == s[k]:
            continue
        recall = tp / y.sum()
        ap += (recall - prev_recall) * tp / (k + 1)
        prev_recall = recall
    return ap


@pytest.mark.parametrize("seed", range(5))
def test_region_aupr_matches_reference(seed):
    rng = np.random.default_rng(seed)
    maps = [rng.normal(size=(20, 30)).astype(np.float32) for _ in range(2)]
    masks = [rng.random((20, 30)) < 0.1 for _ in range(2)]
    maps[0][masks[0]] += 1.0
    got = region_aupr(maps, masks)
    ref = _slow_region_ap(
        np.concatenate([m.ravel() for m in maps]).astype(np.float64),
        np.concatenate([m.ravel() for m in masks]).astype(int),
    )
    assert got == pytest.approx(ref, abs=1e-5)
    assert np.isnan(region_aupr(maps[0], np.zeros((20, 30), bool)))


def test_region_aupr_keeps_large_logits_apart():
    # sigmoid in float32 would tie 20 and 30; the ranking must not
    logits = np.array([30.0, 20.0, 25.0, -5.0])
    labels = np.array([1, 0, 1, 0])
    assert region_aupr(logits, labels) == pytest.approx(1.0)


def test_score_matching_changes_the_curve():
    truth = _df("a", [[0, 0]])
    picks = _df("a", [[3, 0], [1, 0]], [0.9, 0.1])
    paper = evaluate_picks(picks, truth, 5)
    greedy = evaluate_picks(picks, truth, 5, matching="score")
    assert paper.aupr == pytest.approx(0.5) and greedy.aupr == 1.0
    assert greedy.as_dict()["matching"] == "score"


def test_real_empiar10017_annotation_against_itself(empiar10017_dir):
    from topaz_lightning.io.coordinates import read_coordinates

    truth = read_coordinates(empiar10017_dir / "coords")
    assert len(truth) == 2591
    rng = np.random.default_rng(0)
    picks = truth.assign(score=rng.normal(size=len(truth)))
    ev = evaluate_picks(picks, truth, max_distance_px=0)
    assert ev.aupr == 1.0 and ev.n_matched == 2591 and ev.n_micrographs == 4
    # shifted by 30 px (inside the 54 px particle radius) every particle is still found once
    moved = picks.assign(x=picks["x"] + 30.0)
    ev = evaluate_picks(pd.concat([moved, moved.assign(score=moved["score"] - 10)]), truth, 54)
    assert ev.n_matched == 2591 and ev.n_pred == 2 * 2591


def test_sigmoid_matches_formula_and_saturates_without_warnings():
    z = np.linspace(-30.0, 30.0, 601)
    np.testing.assert_allclose(sigmoid(z), 1.0 / (1.0 + np.exp(-z)), rtol=1e-14, atol=0)
    with np.errstate(all="raise"):
        assert sigmoid(np.array([-800.0, 0.0, 800.0])).tolist() == [0.0, 0.5, 1.0]


def test_old_max_distance_keyword_warns_and_gives_the_same_result():
    """Units in names: max_distance_px; the old keyword works in one place, with a warning."""
    truth = _df("a", [[0, 0], [10, 0]])
    picks = _df("a", [[1, 0], [10, 4]], [2.0, 1.0])
    new = evaluate_picks(picks, truth, max_distance_px=3)
    with pytest.warns(DeprecationWarning, match=r"evaluate_picks\(max_distance=...\)"):
        old = evaluate_picks(picks, truth, max_distance=3)
    assert old.aupr == new.aupr and old.n_matched == new.n_matched == 1
    assert old.max_distance_px == 3.0 and old.as_dict()["max_distance_px"] == 3.0
    with pytest.raises(TypeError, match="both"):
        evaluate_picks(picks, truth, max_distance=3, max_distance_px=3)
