"""scoring=strided against dense scoring: refined scores are dense scores, positions within the stride, stride 1 is dense."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tests.test_scoring import _micrograph, _net, _smooth_kernels
from topaz_lightning.errors import ConfigError
from topaz_lightning.models import Conv31, PReLUResNet8, ResNet8
from topaz_lightning.models.base import PatchClassifier, apply_conv, receptive_field
from topaz_lightning.picking import non_maximum_suppression, score_micrograph, strided
from topaz_lightning.picking.coarse import native_stride
from topaz_lightning.picking.ensemble import EnsembleNet
from topaz_lightning.picking.predict import pick_micrograph
from topaz_lightning.picking.settings import PickSettings
from topaz_lightning.picking.strided import strided_picks, window_scores


class _Stride1(PatchClassifier):
    """Two 3 x 3 convolutions without stride (receptive field 5): the coarse map is dense."""

    def __init__(self):
        super().__init__()
        self._init_kwargs = {}
        self.convs = nn.ModuleList([nn.Conv2d(1, 4, 3), nn.Conv2d(4, 6, 3)])
        self.receptive_field = receptive_field([(3, 1), (3, 1)])
        self.phase_strides = (1, 1)
        self.num_features = 6
        self.classifier = nn.Linear(6, 1)

    def trunk(self, x, dense):
        jump = 1
        for conv in self.convs:
            x, jump = apply_conv(conv, x, dense, jump)
            x = torch.tanh(x)
        return x


def _dense(net, image: np.ndarray, tta: int = 1) -> np.ndarray:
    return score_micrograph(net, image, tile_size=None, tta=tta)


def _strided(net, image: np.ndarray, radius: float, **kw):
    with torch.inference_mode():
        return strided_picks(net, torch.from_numpy(image), radius, **kw)


@pytest.fixture(scope="module")
def conv31():
    return _smooth_kernels(_net(Conv31, 0), 0).eval()


@pytest.mark.parametrize(
    "net_cls, stride", [(Conv31, 4), pytest.param(ResNet8, 4, marks=pytest.mark.slow)]
)
def test_native_strides(net_cls, stride):
    assert native_stride(net_cls()) == stride


@pytest.mark.parametrize("seed", [1, 2])
def test_window_refinement_scores_real_pixels(conv31, seed):
    image = _micrograph(seed, shape=(101, 118), n_blobs=9)
    dense = _dense(conv31, image)
    result = _strided(conv31, image, 10.0)
    assert result.stride == 4 and len(result.scores) > 5
    xs, ys = result.xy.astype(np.int64).T
    assert np.array_equal(result.xy, np.stack([xs, ys], 1).astype(float))  # integer pixels
    # the refined score IS the dense score at the refined pixel (up to float rounding)
    np.testing.assert_allclose(result.scores, dense[ys, xs], rtol=0, atol=1e-5)
    # ... and that pixel is the best dense pixel within 2 px of a coarse sample
    cx, cy = result.sample_xy.astype(np.int64).T
    assert np.all(cx % 4 == 0) and np.all(cy % 4 == 0)
    for x, y, s, x0, y0 in zip(xs, ys, result.scores, cx, cy, strict=True):
        assert abs(x - x0) <= 2 and abs(y - y0) <= 2
        patch = dense[max(0, y0 - 2) : y0 + 3, max(0, x0 - 2) : x0 + 3]
        assert s >= patch.max() - 1e-5
    # best first; the coarse samples at least the NMS radius apart, the refined picks at least
    # the radius less sqrt(2) * stride
    assert np.all(np.diff(result.scores) <= 0)
    for points, least in ((result.sample_xy, 10.0), (result.xy, 10.0 - 4 * math.sqrt(2))):
        d = np.hypot(*(points[:, None] - points[None]).transpose(2, 0, 1))
        assert d[~np.eye(len(d), dtype=bool)].min() >= least


def test_strided_finds_the_dense_picks_within_half_the_stride(conv31):
    image = _micrograph(3, shape=(128, 128), n_blobs=12)
    dense = _dense(conv31, image)
    dense_xy, dense_scores = non_maximum_suppression(dense, 10.0)
    result = _strided(conv31, image, 10.0)

    # the best dense picks are found at the same pixel or within stride / 2 (per axis); this
    # random net's map has structure finer than the stride (a trained one's peaks are a
    # particle wide), so two of the eight are missed: a pick whose 4 nearest coarse samples
    # are each suppressed by a better sample whose window does not reach the dense peak
    def found(picks) -> int:
        offsets = np.abs(picks.xy[None] - dense_xy[:8, None]).max(axis=2)
        return int((offsets.min(axis=1) <= 2).sum())

    assert found(result) >= 6
    # the best pick is the dense map's maximum itself
    assert np.array_equal(result.xy[0], dense_xy[0])
    assert result.scores[0] == pytest.approx(dense_scores[0], abs=1e-5)


def test_stride_one_equals_dense():
    torch.manual_seed(0)
    net = _Stride1().eval()
    image = _micrograph(4, shape=(60, 71), n_blobs=6)
    dense = _dense(net, image)
    for threshold in (-math.inf, float(np.quantile(dense, 0.9))):
        xy, scores = non_maximum_suppression(dense, 6.0, threshold)
        result = _strided(net, image, 6.0, threshold=threshold)
        assert np.array_equal(result.xy, xy)
        np.testing.assert_allclose(result.scores, scores, rtol=0, atol=1e-6)


def test_pick_micrograph_strided_stride_one_matches_dense():
    torch.manual_seed(1)
    net = _Stride1().eval()
    image = _micrograph(5, shape=(64, 64), n_blobs=5)
    base = PickSettings(nms_radius_px_model=5.0, downsample=2.0, max_picks=7)
    dense = pick_micrograph(net, image, base, "m").picks
    strided = pick_micrograph(net, image, base.replace(scoring="strided"), "m").picks
    assert len(dense) == 7
    pd.testing.assert_frame_equal(
        strided[["micrograph", "x", "y"]], dense[["micrograph", "x", "y"]]
    )
    np.testing.assert_allclose(strided["score"], dense["score"], atol=1e-6)


def test_threshold_and_refine_methods(conv31):
    image = _micrograph(6, shape=(96, 96), n_blobs=8)
    everything = _strided(conv31, image, 8.0)
    threshold = float(np.median(everything.scores))
    above = _strided(conv31, image, 8.0, threshold=threshold)
    assert len(above.scores) and above.scores.min() >= threshold
    # the thresholded picks are the unthresholded ones above it
    keep = everything.scores >= threshold
    assert np.array_equal(above.xy, everything.xy[keep])
    coarse = _strided(conv31, image, 8.0, refine="none")
    assert coarse.n_refined == 0 and np.all(coarse.xy % 4 == 0)
    # no refinement: the scores are the coarse samples'
    i, j = (coarse.xy[:, 1] // 4).astype(int), (coarse.xy[:, 0] // 4).astype(int)
    np.testing.assert_array_equal(coarse.scores, coarse.coarse[i, j])
    centroid = _strided(conv31, image, 8.0, refine="centroid")
    assert centroid.n_refined == 0 and len(centroid.scores)
    assert np.abs(centroid.xy - np.rint(centroid.xy / 4) * 4).max() <= 4
    with pytest.raises(ConfigError, match="refine"):
        _strided(conv31, image, 8.0, refine="bogus")
    with pytest.raises(ConfigError, match="refine"):
        PickSettings(nms_radius_px_model=5.0, scoring="strided", refine="bogus")


def test_window_scores_edges_and_tta(conv31):
    image = _micrograph(7, shape=(41, 53), n_blobs=3)
    positions = np.array([[0, 0], [52, 40], [20, 17]])
    for tta in (1, 8):
        dense = _dense(conv31, image, tta=tta)
        with torch.inference_mode():
            windows = window_scores(conv31, torch.from_numpy(image), positions, 2, tta)
        for (x, y), block in zip(positions, windows, strict=True):
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    inside = 0 <= y + dy < 41 and 0 <= x + dx < 53
                    got = block[dy + 2, dx + 2]
                    if inside:
                        assert got == pytest.approx(dense[y + dy, x + dx], abs=1e-5)
                    else:
                        assert got == -np.inf


def test_score_micrograph_strided_map_gives_the_picks(conv31):
    image = _micrograph(8, shape=(80, 90), n_blobs=6)
    sparse = score_micrograph(conv31, image, scoring="strided", radius_px_model=9.0)
    result = _strided(conv31, image, 9.0)
    # every finite pixel is a pick: NMS with radius 0 (nothing suppressed) returns them all
    assert np.isfinite(sparse).sum() == len(result.scores)
    xy, scores = non_maximum_suppression(sparse, 0.0)
    assert np.array_equal(xy, result.xy)
    np.testing.assert_allclose(scores, result.scores, atol=1e-6)
    with pytest.raises(ConfigError, match="radius"):
        score_micrograph(conv31, image, scoring="strided")


def test_kept_score_map_is_a_picture(conv31):
    image = _micrograph(9, shape=(50, 61), n_blobs=4)
    settings = PickSettings(nms_radius_px_model=8.0, scoring="strided", keep_score_map=True)
    result = pick_micrograph(conv31, image, settings, "m")
    assert result.score_map.shape == image.shape
    assert np.isfinite(result.score_map).all()
    dense = _dense(conv31, image)
    # coarse samples carry their dense scores
    np.testing.assert_allclose(result.score_map[::4, ::4], dense[::4, ::4], atol=1e-5)


@pytest.mark.slow
def test_resnet8_window_refinement_scores_real_pixels():
    net = _smooth_kernels(_net(ResNet8, 3), 3).eval()
    image = _micrograph(10, shape=(72, 80), n_blobs=5)
    dense = _dense(net, image)
    result = _strided(net, image, 12.0)
    assert result.stride == 4 and len(result.scores)
    xs, ys = result.xy.astype(np.int64).T
    np.testing.assert_allclose(result.scores, dense[ys, xs], rtol=0, atol=1e-5)
    assert np.abs(result.xy - result.sample_xy).max() <= 2


def test_channels_last_copy_gives_the_picks_of_the_network_as_written(conv31):
    image = _micrograph(3, shape=(131, 140), n_blobs=12)
    fast = _strided(conv31, image, 8.0)  # memory_format=auto: a channels_last copy on the CPU
    # the caller's network keeps its own layout (it may be the one being trained)
    weight = conv31.layers[1]["conv"].weight
    assert weight.is_contiguous() and not weight.is_contiguous(memory_format=torch.channels_last)
    plain = _strided(conv31, image, 8.0, memory_format="contiguous")
    np.testing.assert_array_equal(fast.xy, plain.xy)
    np.testing.assert_allclose(fast.scores, plain.scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.coarse, plain.coarse, rtol=0, atol=1e-5)


def test_quadratic_refinement_finds_the_vertex_of_a_paraboloid():
    from topaz_lightning.picking.strided import _quadratic_peaks

    i, j = np.mgrid[0:12, 0:16].astype(np.float64)
    coarse = 3.0 - 0.7 * (i - 5.3) ** 2 - 0.2 * (j - 7.8) ** 2
    xy, peak = _quadratic_peaks(coarse.astype(np.float32), np.array([[5, 8], [0, 8]]), 4)
    # exact for a separable paraboloid: the vertex (x = 4 * 7.8, y = 4 * 5.3) and its value
    np.testing.assert_allclose(xy[0], [4 * 7.8, 4 * 5.3], atol=1e-4)
    np.testing.assert_allclose(peak[0], 3.0, atol=1e-4)
    # on the grid's edge the axis without a neighbour stays at the sample (y = 0), the other moves
    np.testing.assert_allclose(xy[1], [4 * 7.8, 0.0], atol=1e-4)
    assert peak[1] > coarse[0, 8]


def test_quadratic_refinement_moves_within_half_a_stride_and_only_raises_scores(conv31):
    image = _micrograph(6, shape=(96, 96), n_blobs=8)
    coarse = _strided(conv31, image, 8.0, refine="none")
    quad = _strided(conv31, image, 8.0, refine="quadratic")
    assert quad.n_refined == 0
    order = np.lexsort((coarse.sample_xy[:, 0], coarse.sample_xy[:, 1]))
    q_order = np.lexsort((quad.sample_xy[:, 0], quad.sample_xy[:, 1]))
    np.testing.assert_array_equal(coarse.sample_xy[order], quad.sample_xy[q_order])
    assert np.abs(quad.xy[q_order] - quad.sample_xy[q_order]).max() <= 2.0 + 1e-9
    assert np.all(quad.scores[q_order] >= coarse.scores[order] - 1e-9)
    assert np.any(quad.scores[q_order] > coarse.scores[order])
    # scores are re-ranked best first
    assert np.all(np.diff(quad.scores) <= 0)


def test_exact_top_windows_the_best_picks_and_estimates_the_rest(conv31):
    image = _micrograph(6, shape=(96, 96), n_blobs=8)
    exact = _strided(conv31, image, 8.0, refine="window")
    quad = _strided(conv31, image, 8.0, refine="quadratic")
    n = len(exact.scores)
    assert n > 6
    # a budget of at least every pick is the exact refinement
    full = _strided(conv31, image, 8.0, refine="window", exact_top=n)
    np.testing.assert_array_equal(full.xy, exact.xy)
    np.testing.assert_array_equal(full.scores, exact.scores)
    # zero windows: the quadratic estimates
    none = _strided(conv31, image, 8.0, refine="window", exact_top=0)
    assert none.n_refined == 0
    np.testing.assert_array_equal(none.xy, quad.xy)
    np.testing.assert_array_equal(none.scores, quad.scores)
    # k windows: the k best by their quadratic estimate get the exact score and position
    k = 3
    part = _strided(conv31, image, 8.0, refine="window", exact_top=k)
    assert part.n_refined == k
    best = {tuple(p) for p in quad.sample_xy[:k]}  # quad is ranked best first
    by_sample = {
        tuple(p): (xy, sc)
        for p, xy, sc in zip(exact.sample_xy, exact.xy, exact.scores, strict=True)
    }
    by_quad = {
        tuple(p): (xy, sc) for p, xy, sc in zip(quad.sample_xy, quad.xy, quad.scores, strict=True)
    }
    for p, xy, sc in zip(part.sample_xy, part.xy, part.scores, strict=True):
        want_xy, want_score = (by_sample if tuple(p) in best else by_quad)[tuple(p)]
        np.testing.assert_array_equal(xy, want_xy)
        assert sc == pytest.approx(want_score, abs=1e-5)  # batches of other sizes: rounding
    assert np.all(np.diff(part.scores) <= 0)


def test_refine_exact_is_a_multiple_of_the_expected_count():
    from topaz_lightning.picking.predict import exact_top
    from topaz_lightning.picking.settings import _exact_per_px_model

    assert _exact_per_px_model("all", 1e-3) is None
    assert _exact_per_px_model(None, 1e-3) is None
    assert _exact_per_px_model(2.0, None) is None  # no prior in model.pt: every pick
    density = _exact_per_px_model(1.0, 700 / 1024**2)
    settings = PickSettings(nms_radius_px_model=8.0, refine_exact_per_px_model=density)
    assert exact_top(settings, (1024, 1024)) == 700
    assert exact_top(settings, (512, 1024)) == 350
    assert exact_top(PickSettings(nms_radius_px_model=8.0), (1024, 1024)) is None
    for bad in (-1.0, "most", float("nan")):
        with pytest.raises(ConfigError, match="refine_exact"):
            _exact_per_px_model(bad, 1e-3)


def test_laid_out_copies_only_when_the_layout_differs(conv31):
    from topaz_lightning.errors import ConfigError
    from topaz_lightning.models.base import laid_out

    fast = laid_out(conv31, "auto", "cpu")
    assert fast is not conv31 and not fast.layers[1]["conv"].weight.is_contiguous()
    assert laid_out(fast, "channels_last", "cpu") is fast  # already laid out: no copy
    assert laid_out(conv31, "auto", "cuda") is conv31  # contiguous off the CPU
    back = laid_out(fast, "contiguous", "cpu")
    assert back is not fast and back.layers[1]["conv"].weight.is_contiguous()
    with pytest.raises(ConfigError, match="memory_format"):
        laid_out(conv31, "nhwc", "cpu")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Conv31(widths=(4, 6, 8)),
        lambda: ResNet8(units=4),
        lambda: PReLUResNet8(width=4),
        lambda: EnsembleNet([Conv31(widths=(4, 6, 8)), Conv31(widths=(3, 5, 7))]),
    ],
    ids=["conv31", "resnet8", "resnet8_prelu", "ensemble"],
)
@pytest.mark.parametrize("ratio", [0.0, 1.5])
def test_shared_stages_give_the_windows_of_the_network_as_written(make, ratio, monkeypatch):
    """Leading stages run once on the whole micrograph (all of them at ratio 0, the rule's at
    1.5) give the same window scores as every window on its own crop, which are dense scores."""
    torch.manual_seed(0)
    net = make().eval()
    for m in net.modules():  # BatchNorm's running statistics, so eval mode is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    image = torch.from_numpy(_micrograph(4, shape=(47, 53), n_blobs=4))
    # every pixel a window centre: the windows overlap 25-fold, far above the sharing ratio
    ys, xs = np.mgrid[0:47, 0:53]
    xy = np.stack([xs.ravel(), ys.ravel()], axis=1)
    monkeypatch.setattr(strided, "WINDOW_SHARE_RATIO", ratio)
    monkeypatch.setattr(strided, "SHARED_BAND_ROWS", 7)  # several bands, the last one short
    with torch.inference_mode():
        geometry = strided._stage_geometry(net.stages(), net.receptive_field, image)
        side_in = 5 + 2 * (net.receptive_field // 2)
        context = (47 + side_in - 1, 53 + side_in - 1)
        shared = strided.shared_stage_count(geometry, len(xy), side_in, context)
        assert shared == (len(geometry) if ratio == 0 else shared) and (ratio > 0 or shared)
        windows = window_scores(net, image, xy, 2)
        monkeypatch.setattr(strided, "WINDOW_SHARE_RATIO", math.inf)
        plain = window_scores(net, image, xy, 2)
        dense = net.score_map(image[None, None])[0].numpy()
    np.testing.assert_array_equal(np.isfinite(windows), np.isfinite(plain))
    finite = np.isfinite(plain)
    np.testing.assert_allclose(windows[finite], plain[finite], rtol=0, atol=1e-5)
    np.testing.assert_allclose(windows[:, 2, 2], dense[ys.ravel(), xs.ravel()], rtol=0, atol=1e-5)


def test_shared_stage_count_is_a_prefix_within_the_memory_cap(monkeypatch):
    # (field, channels) per stage; 100 windows of side 41 on a 200 x 200 map
    geometry = [(7, 8), (19, 16), (31, 16), (41, 32)]
    # windows' pixels: 100 * 35**2 = 122,500 vs 194**2 = 37,636 (3.3x); 23**2 * 100 = 52,900 vs
    # 182**2 = 33,124 (1.6x); 11**2 * 100 vs 170**2 (0.4x): two stages
    assert strided.shared_stage_count(geometry, 100, 41, (200, 200)) == 2
    assert strided.shared_stage_count(geometry, 10, 41, (200, 200)) == 0
    assert strided.shared_stage_count(geometry, 10**6, 41, (200, 200)) == 4
    # the first stage's output (194**2 x 8 floats) fits, the second's (182**2 x 16) does not
    monkeypatch.setattr(strided, "WINDOW_SHARE_MAX_BYTES", 194**2 * 8 * 4)
    assert strided.shared_stage_count(geometry, 100, 41, (200, 200)) == 1


def test_a_trunk_without_stages_is_one_stage():
    net = _Stride1().eval()
    (stage,) = net.stages()
    x = torch.randn(2, 1, 9, 9)
    y, jump = stage(x, "dilated", 1)
    assert jump == 1 and torch.equal(y, net.trunk(x, "dilated"))
    with pytest.raises(NotImplementedError, match="neither stages nor trunk"):
        PatchClassifier().stages()
