"""One-to-one matching within a distance: hand-made cases and agreement with slow references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from topaz_lightning.errors import InputError
from topaz_lightning.metrics import match_picks, matched_distances


def _summary(pred, true, match):
    assert match.shape == (len(pred),)
    used = match[match >= 0]
    assert len(used) == len(set(used.tolist())), "a true particle matched twice"
    d = matched_distances(pred, true, match)
    return int((match >= 0).sum()), float(d.sum()), d


def _brute_force(pred, true, max_distance):
    """Best (count, -total distance) over every partial one-to-one assignment (tiny inputs only)."""
    n, m = len(pred), len(true)
    best = (0, 0.0)
    for k in range(min(n, m) + 1):
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                d = [np.hypot(*(pred[r] - true[c])) for r, c in zip(rows, cols, strict=True)]
                if all(v <= max_distance for v in d):
                    cand = (k, -sum(d))
                    if cand[0] > best[0] or (cand[0] == best[0] and cand[1] > best[1] + 1e-9):
                        best = cand
    return best[0], -best[1]


def _dense_reference(pred, true, max_distance):
    """Dense all-pairs assignment with a prohibitive cost beyond max_distance."""
    if len(pred) == 0 or len(true) == 0:
        return 0, 0.0
    d = np.hypot(pred[:, None, 0] - true[None, :, 0], pred[:, None, 1] - true[None, :, 1])
    big = (min(d.shape) + 1) * (max_distance + 1.0)
    cost = np.where(d <= max_distance, d, big)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < big
    return int(ok.sum()), float(d[r[ok], c[ok]].sum())


def test_two_picks_near_one_particle_count_once():
    match = match_picks([[10, 10], [11, 10]], [[10.2, 10]], max_distance_px=5)
    assert match.tolist() == [0, -1]  # the closer pick takes it


def test_just_outside_is_unmatched_and_exact_distance_is_inclusive():
    true = [[0.0, 0.0]]
    assert match_picks([[7.0001, 0]], true, 7).tolist() == [-1]
    assert match_picks([[3.0, 4.0]], true, 5).tolist() == [0]  # exactly 5 away: matched
    assert match_picks([[0.0, 0.0]], true, 0).tolist() == [0]


def test_exclusive_boundary_is_topaz_convention():
    true = [[0.0, 0.0], [20.0, 0.0]]
    pred = [[3.0, 4.0], [20.0, 4.999]]  # exactly 5 away, and just inside
    assert match_picks(pred, true, 5).tolist() == [0, 1]
    assert match_picks(pred, true, 5, boundary="exclusive").tolist() == [-1, 1]
    assert match_picks(
        pred, true, 5, boundary="exclusive", method="score", scores=[1, 2]
    ).tolist() == [
        -1,
        1,
    ]
    with pytest.raises(InputError, match="boundary"):
        match_picks(pred, true, 5, boundary="strict")


@pytest.mark.parametrize("seed", range(10))
def test_exclusive_agrees_with_brute_force_on_integer_grids(seed):
    # integer coordinates put many pairs at exactly the cutoff (e.g. (3, 4) at 5)
    rng = np.random.default_rng(50 + seed)
    pred = rng.integers(0, 8, (int(rng.integers(1, 6)), 2)).astype(float)
    true = rng.integers(0, 8, (int(rng.integers(1, 6)), 2)).astype(float)
    for boundary, cutoff in (("inclusive", 5.0), ("exclusive", 5.0 - 1e-9)):
        count, total, _ = _summary(pred, true, match_picks(pred, true, 5.0, boundary=boundary))
        ref_count, ref_total = _brute_force(pred, true, cutoff)
        assert count == ref_count
        assert total == pytest.approx(ref_total, abs=1e-9)


def test_empty_inputs():
    assert match_picks(np.zeros((0, 2)), [[1, 1]], 3).tolist() == []
    assert match_picks([[1, 1], [2, 2]], np.zeros((0, 2)), 3).tolist() == [-1, -1]
    assert match_picks([], [], 3).tolist() == []


def test_maximizes_matches_before_distance():
    # nearest-first greedy would pair 1.2 with 2.0 (0.8) and leave 3.0 unmatched
    pred = np.array([[1.2, 0.0], [3.0, 0.0]])
    true = np.array([[2.0, 0.0], [0.0, 0.0]])
    match = match_picks(pred, true, 1.3)
    assert match.tolist() == [1, 0]


def test_minimizes_total_distance():
    pred = np.array([[0.0, 0.0], [4.0, 0.0]])
    true = np.array([[3.0, 0.0], [1.0, 0.0]])
    # both assignments have 2 matches; (0->1, 1->0) costs 1 + 1, the other 3 + 3
    assert match_picks(pred, true, 5).tolist() == [1, 0]


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0, 10, (int(rng.integers(0, 6)), 2))
    true = rng.uniform(0, 10, (int(rng.integers(0, 6)), 2))
    max_distance = float(rng.uniform(1, 5))
    count, total, d = _summary(pred, true, match_picks(pred, true, max_distance))
    ref_count, ref_total = _brute_force(pred, true, max_distance)
    assert count == ref_count
    assert total == pytest.approx(ref_total, abs=1e-9)
    assert (d <= max_distance).all()


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_dense_assignment(seed):
    rng = np.random.default_rng(1000 + seed)
    n, m = (int(v) for v in rng.integers(50, 300, 2))
    pred = rng.uniform(0, 200, (n, 2))
    true = rng.uniform(0, 200, (m, 2))
    if seed % 2:  # integer grids: exact ties in distance
        pred, true = np.round(pred / 4) * 4, np.round(true / 4) * 4
    max_distance = float(rng.choice([3.0, 8.0, 15.0]))
    count, total, _ = _summary(pred, true, match_picks(pred, true, max_distance))
    ref_count, ref_total = _dense_reference(pred, true, max_distance)
    assert count == ref_count
    assert total == pytest.approx(ref_total, rel=1e-9, abs=1e-9)


def test_bad_input_raises():
    with pytest.raises(InputError):
        match_picks(np.zeros((3, 3)), [[0, 0]], 2)
    with pytest.raises(InputError):
        match_picks([[0, np.nan]], [[0, 0]], 2)
    with pytest.raises(InputError, match="max_distance"):
        match_picks([[0, 0]], [[0, 0]], -1)


def _slow_score_greedy(pred, true, scores, max_distance):
    match = [-1] * len(pred)
    taken = set()
    for p in sorted(range(len(pred)), key=lambda k: (-scores[k], k)):
        best = None
        for t in range(len(true)):
            d = float(np.hypot(*(pred[p] - true[t])))
            if t not in taken and d <= max_distance and (best is None or (d, t) < best):
                best = (d, t)
        if best is not None:
            match[p] = best[1]
            taken.add(best[1])
    return match


def test_score_matching_prefers_the_higher_score():
    pred = np.array([[3.0, 0.0], [1.0, 0.0]])
    true = np.array([[0.0, 0.0]])
    scores = np.array([0.9, 0.1])
    assert match_picks(pred, true, 5).tolist() == [-1, 0]  # the paper's: closest wins
    assert match_picks(pred, true, 5, scores=scores, method="score").tolist() == [0, -1]


@pytest.mark.parametrize("seed", range(15))
def test_score_matching_agrees_with_slow_greedy(seed):
    rng = np.random.default_rng(500 + seed)
    pred = np.round(rng.uniform(0, 60, (int(rng.integers(0, 60)), 2)))
    true = np.round(rng.uniform(0, 60, (int(rng.integers(0, 40)), 2)))
    scores = np.round(rng.normal(size=len(pred)), 1)
    got = match_picks(pred, true, 6.0, scores=scores, method="score")
    assert got.tolist() == _slow_score_greedy(pred, true, scores, 6.0)
    _summary(pred, true, got)


def test_score_matching_needs_scores_and_known_method():
    with pytest.raises(InputError, match="scores"):
        match_picks([[0, 0]], [[0, 0]], 2, method="score")
    with pytest.raises(InputError, match="method"):
        match_picks([[0, 0]], [[0, 0]], 2, method="nearest")


def test_tzl_evaluate_match_boundary_option(tmp_path):
    # picks exactly max_distance from their particles: matched by default, not with Topaz's rule
    import pandas as pd

    from tests.conftest import compose_config
    from tests.helpers import evaluate_config
    from topaz_lightning.cli.evaluate import run
    from topaz_lightning.io.coordinates import write_coordinates

    truth = pd.DataFrame({"micrograph": ["m", "m"], "x": [10.0, 40.0], "y": [10.0, 40.0]})
    picks = truth.assign(x=truth.x + 3.0, y=truth.y + 4.0, score=[2.0, 1.0])
    write_coordinates(truth, tmp_path / "truth.tsv")
    write_coordinates(picks, tmp_path / "picks.tsv")
    recall = {}
    for boundary in ("inclusive", "exclusive"):
        cfg = evaluate_config(
            tmp_path / "picks.tsv",
            tmp_path / "truth.tsv",
            tmp_path / boundary,
            "max_distance=5",
            f"match_boundary={boundary}",
        )
        recall[boundary] = run(cfg)["n_matched"]
    assert compose_config("evaluate").match_boundary == "inclusive"
    assert recall == {"inclusive": 2, "exclusive": 0}


def test_old_max_distance_keyword_warns():
    from topaz_lightning.metrics import candidate_pairs

    with pytest.warns(DeprecationWarning, match=r"match_picks\(max_distance=...\)"):
        assert match_picks([[0, 0]], [[3, 4]], max_distance=5).tolist() == [0]
    with pytest.warns(DeprecationWarning, match="candidate_pairs"):
        i, _, d = candidate_pairs([[0, 0]], [[3, 4]], max_distance=5)
    assert i.tolist() == [0] and d.tolist() == [5.0]
