"""Greedy non-maximum suppression: exact agreement with a slow reference, hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from topaz_lightning.errors import InputError
from topaz_lightning.geometry import disk_offsets
from topaz_lightning.picking import disk_rows, non_maximum_suppression
from topaz_lightning.picking.nms import _disk_max


def reference_nms(
    score_map, radius: float, threshold: float = -math.inf, boundary: str = "keep"
) -> tuple[np.ndarray, np.ndarray]:
    """Slow, obvious greedy NMS with the definition of picking.nms (the test reference):
    a candidate is kept when every accepted pick is >= radius away (``keep``) or > radius
    away (``suppress``, Topaz's convention)."""
    arr = np.asarray(score_map)
    s32 = arr.astype(np.float32) + np.float32(0)
    height, width = arr.shape
    order = sorted(
        (i for i in range(height * width) if s32.flat[i] > -np.inf and arr.flat[i] >= threshold),
        key=lambda i: (-float(s32.flat[i]), i),
    )
    picks: list[tuple[int, int]] = []
    r2 = float(radius) ** 2
    for i in order:
        y, x = divmod(i, width)
        far = [(x - px) ** 2 + (y - py) ** 2 for px, py in picks]
        if all(d >= r2 if boundary == "keep" else d > r2 for d in far):
            picks.append((x, y))
    xy = np.array(picks, dtype=np.float64).reshape(-1, 2)
    scores = np.array([arr[int(y), int(x)] for x, y in xy], dtype=np.float64)
    return xy, scores


RADII = [0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5.5, 7, 10]


def _random_map(seed: int) -> tuple[np.ndarray, float, float]:
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 28, 2))
    radius = float(rng.choice(RADII))
    kind = seed % 4
    if kind == 0:  # continuous
        score_map = rng.normal(size=(height, width))
    elif kind == 1:  # many exact ties
        score_map = rng.integers(0, 3, (height, width)).astype(np.float64)
    elif kind == 2:  # a ramp: long greedy dependency chains
        score_map = np.add.outer(np.arange(height), rng.choice([-1, 1]) * np.arange(width)).astype(
            float
        )
    else:  # smooth blobs, like a score map
        from scipy.ndimage import gaussian_filter

        score_map = gaussian_filter(rng.normal(size=(height, width)), 2.0)
    threshold = -math.inf if seed % 3 else float(np.median(score_map))
    return score_map.astype(np.float32), radius, threshold


@pytest.mark.parametrize("boundary", ["keep", "suppress"])
@pytest.mark.parametrize("seed", range(120))
def test_matches_slow_reference(seed, boundary):
    score_map, radius, threshold = _random_map(seed)
    ref_xy, ref_scores = reference_nms(score_map, radius, threshold, boundary)
    # auto strategy, purely sequential, and forced vectorized rounds
    for rounds in (None, 0, 1, 3, 1000):
        xy, scores = non_maximum_suppression(
            score_map, radius, threshold, boundary=boundary, _dense_rounds=rounds
        )
        np.testing.assert_array_equal(xy, ref_xy, err_msg=f"rounds={rounds}")
        np.testing.assert_array_equal(scores, ref_scores)


@pytest.mark.parametrize("seed", range(6))
def test_larger_maps_match_reference(seed):
    rng = np.random.default_rng(100 + seed)
    score_map = rng.integers(0, 50, (60, 70)).astype(np.float32)  # ties and structure
    radius = [3, 4.5, 6][seed % 3]
    ref = reference_nms(score_map, radius)
    for rounds in (None, 1000):
        got = non_maximum_suppression(score_map, radius, _dense_rounds=rounds)
        np.testing.assert_array_equal(got[0], ref[0])


def test_picks_are_at_least_radius_apart_and_maximal():
    rng = np.random.default_rng(7)
    score_map = rng.normal(size=(80, 90)).astype(np.float32)
    radius = 6.0
    xy, scores = non_maximum_suppression(score_map, radius)
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    assert d.min() >= radius
    # every pixel lies within < radius of some pick (otherwise it would have been picked)
    ys, xs = np.mgrid[:80, :90]
    dist = np.hypot(xs[..., None] - xy[:, 0], ys[..., None] - xy[:, 1]).min(-1)
    assert (dist < radius).all()
    assert np.all(np.diff(scores) <= 0)


def test_exactly_radius_apart_both_kept():
    score_map = np.zeros((30, 30), dtype=np.float32)
    score_map[5, 5] = 2.0
    score_map[5, 15] = 1.0  # exactly 10 px away: kept (picks are "at least r apart")
    score_map[14, 5] = 1.5  # 9 px away from the best: suppressed
    xy, scores = non_maximum_suppression(score_map, 10, threshold=0.5)
    assert xy.tolist() == [[5.0, 5.0], [15.0, 5.0]]
    assert scores.tolist() == [2.0, 1.0]
    # Topaz's convention suppresses it: picks are more than r apart
    xy, _ = non_maximum_suppression(score_map, 10, threshold=0.5, boundary="suppress")
    assert xy.tolist() == [[5.0, 5.0]]
    diagonal = np.zeros((30, 30), dtype=np.float32)
    diagonal[5, 5], diagonal[11, 13] = 2.0, 1.0  # offset (8, 6): exactly 10 px on a diagonal
    assert len(non_maximum_suppression(diagonal, 10, threshold=0.5)[0]) == 2
    assert len(non_maximum_suppression(diagonal, 10, threshold=0.5, boundary="suppress")[0]) == 1


def test_unknown_boundary_raises():
    with pytest.raises(InputError, match="boundary"):
        non_maximum_suppression(np.zeros((3, 3)), 2, boundary="topaz")


def test_ties_broken_by_flat_index():
    score_map = np.ones((5, 12), dtype=np.float32)
    xy, _ = non_maximum_suppression(score_map, 4)
    assert xy[0].tolist() == [0.0, 0.0]
    assert xy.tolist() == reference_nms(score_map, 4)[0].tolist()


def test_threshold_and_max_picks():
    rng = np.random.default_rng(3)
    score_map = rng.normal(size=(40, 40))
    xy_all, s_all = non_maximum_suppression(score_map, 3)
    xy_t, s_t = non_maximum_suppression(score_map, 3, threshold=0.5)
    # thresholding before NMS equals filtering the full result (lower scores never suppress higher)
    np.testing.assert_array_equal(xy_t, xy_all[s_all >= 0.5])
    xy_k, s_k = non_maximum_suppression(score_map, 3, max_picks=5)
    np.testing.assert_array_equal(xy_k, xy_all[:5])
    assert non_maximum_suppression(score_map, 3, max_picks=0)[0].shape == (0, 2)


def test_scores_come_from_the_input_map_float64():
    score_map = np.array([[0.1, 0.123456789012345]], dtype=np.float64)
    _, scores = non_maximum_suppression(score_map, 5)
    assert scores.dtype == np.float64 and scores[0] == 0.123456789012345


def test_torch_input_and_empty_results():
    t = torch.zeros(4, 6)
    t[2, 3] = 1
    xy, scores = non_maximum_suppression(t, 2, threshold=0.5)
    assert xy.tolist() == [[3.0, 2.0]] and scores.tolist() == [1.0]
    xy, _ = non_maximum_suppression(t.to(torch.bfloat16), 2, threshold=0.5)
    assert xy.tolist() == [[3.0, 2.0]]
    xy, scores = non_maximum_suppression(np.zeros((3, 3)), 2, threshold=1)
    assert xy.shape == (0, 2) and scores.shape == (0,)
    xy, _ = non_maximum_suppression(np.full((3, 3), -np.inf), 2)
    assert len(xy) == 0


def test_zero_radius_keeps_every_candidate_and_infinite_radius_one():
    score_map = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert len(non_maximum_suppression(score_map, 0)[0]) == 12
    xy, _ = non_maximum_suppression(score_map, math.inf)
    assert xy.tolist() == [[3.0, 2.0]]


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((2, 2, 2))])
def test_bad_shapes_raise(bad):
    with pytest.raises(InputError):
        non_maximum_suppression(bad, 3)


def test_nan_and_negative_radius_raise():
    with pytest.raises(InputError, match="NaN"):
        non_maximum_suppression(np.array([[0.0, np.nan]]), 3)
    with pytest.raises(InputError, match="radius"):
        non_maximum_suppression(np.zeros((3, 3)), -1)


@pytest.mark.parametrize("boundary", ["keep", "suppress"])
@pytest.mark.parametrize("radius", [0, 0.5, 1, 1.5, 3, 4.2, 5, 10])
def test_disk_rows_are_the_geometry_disk(radius, boundary):
    # rows (dy, w) cover exactly geometry.disk_offsets(r, include_boundary=boundary == "suppress")
    rows = disk_rows(radius, boundary)
    covered = sorted((dy, dx) for dy, w in rows for dx in range(-w, w + 1))
    offsets = disk_offsets(radius, include_boundary=boundary == "suppress")
    assert covered == sorted(map(tuple, offsets.tolist()))
    if boundary == "keep":
        assert (0, 0) not in covered if radius == 0 else (0, 0) in covered


@pytest.mark.parametrize("radius", [1.5, 3, 4.2, 10])
def test_disk_max(radius):
    rows = disk_rows(radius)
    rng = np.random.default_rng(int(radius * 10))
    values = rng.normal(size=(15, 17)).astype(np.float32)
    got = _disk_max(values, rows, -np.inf)
    ref = np.full_like(values, -np.inf)
    for y in range(15):
        for x in range(17):
            near = (np.arange(17)[None, :] - x) ** 2 + (np.arange(15)[:, None] - y) ** 2 < radius**2
            ref[y, x] = values[near].max()
    np.testing.assert_array_equal(got, ref)


def test_score_micrograph_refuses_non_2d_input():
    from topaz_lightning.models import Conv31
    from topaz_lightning.picking import score_micrograph

    torch.manual_seed(0)
    with pytest.raises(InputError, match=r"2-D micrograph.*\(2, 40, 40\)"):
        score_micrograph(Conv31(), np.zeros((2, 40, 40), np.float32))


def test_tzl_pick_nms_boundary_option(monkeypatch):
    # pick.yaml's nms_boundary reaches the NMS through PickSettings
    from tests.conftest import compose_config
    from topaz_lightning.picking import predict

    score_map = np.zeros((30, 30), dtype=np.float32)
    score_map[5, 5], score_map[5, 15] = 2.0, 1.0  # exactly 10 px apart
    monkeypatch.setattr(predict, "score_micrograph", lambda *args, **kwargs: score_map)
    assert compose_config("pick").nms_boundary == "keep"
    counts = {}
    for boundary in ("keep", "suppress"):
        settings = predict.PickSettings(
            nms_radius_px_model=10, threshold=0.5, nms_boundary=boundary, border_bands=False
        )
        counts[boundary] = len(predict.pick_micrograph(None, score_map, settings, "m").picks)
    assert counts == {"keep": 2, "suppress": 1}
