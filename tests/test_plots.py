"""Tests of the pictures: PR curves, pick overlays and score-map heatmaps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from topaz_lightning import plots
from topaz_lightning.errors import InputError, OutputExistsError


def _evaluation(aupr: float = 0.5):
    recall = np.array([0.1, 0.4, 0.8, 0.95])
    precision = np.array([1.0, 0.9, 0.6, 0.3])
    return SimpleNamespace(precision=precision, recall=recall, aupr=aupr)


def _micrograph(h: int = 120, w: int = 160) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(h, w)).astype(np.float32)


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size  # (width, height)


def _assert_not_blank(path) -> None:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 5  # something was drawn


def test_pr_curves_png_size_and_refuses_overwrite(tmp_path):
    path = tmp_path / "pr.png"
    out = plots.plot_pr_curves({"run a": _evaluation(0.5), "run b": _evaluation(0.7)}, path)
    assert out == path and path.stat().st_size > 1000
    assert _png_size(path) == (600, 500)
    _assert_not_blank(path)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError):
        plots.plot_pr_curves({"a": _evaluation()}, path)
    assert path.read_bytes() == before  # untouched
    plots.plot_pr_curves({"a": _evaluation()}, path, overwrite=True, size_px=(400, 300))
    assert _png_size(path) == (400, 300)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_pr_curves_legend_has_aupr():
    fig = plots.curves._pr_figure({"mine": _evaluation(0.1234)}, None, (600, 500), 0.9)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["mine (AUPR 0.123)"]


def test_pr_curves_bad_input(tmp_path):
    with pytest.raises(InputError, match="non-empty"):
        plots.plot_pr_curves({}, tmp_path / "x.png")
    with pytest.raises(InputError, match="not a PickEvaluation"):
        plots.plot_pr_curves({"a": object()}, tmp_path / "x.png")
    with pytest.raises(InputError, match="unsupported picture format"):
        plots.plot_pr_curves({"a": _evaluation()}, tmp_path / "x.notaformat")
    assert not list(tmp_path.iterdir())


def test_overlay_png_size_follows_micrograph(tmp_path):
    image = _micrograph(120, 160)
    truth = np.array([[20.0, 30.0], [100.0, 60.0]])
    pred = np.array([[21.0, 30.0], [140.0, 100.0]])
    path = plots.plot_overlay(image, truth, pred, [True, False], tmp_path / "o.png", radius=8)
    assert _png_size(path) == (160, 120)
    _assert_not_blank(path)
    with pytest.raises(OutputExistsError):
        plots.plot_overlay(image, truth, pred, [True, False], path, radius=8)
    # large micrographs are shown downscaled to max_size_px on the longer side
    big = _micrograph(300, 600)
    path2 = plots.plot_overlay(big, truth, pred, None, tmp_path / "b.png", 8, max_size_px=200)
    assert _png_size(path2) == (200, 100)


def test_overlay_colours_at_the_right_places():
    image = np.zeros((100, 100), dtype=np.float32)  # flat grey background
    truth = np.array([[20.0, 70.0]])  # x=20 (column), y=70 (row)
    pred = np.array([[70.0, 20.0]])
    rgb = plots.overlay_rgb(image, truth, pred, [False], radius=10, legend=False)
    assert rgb.shape == (100, 100, 3) and rgb.dtype == np.uint8

    def ring_colour(cx, cy, r):
        # pixels on the circle's rim; pick the most saturated one
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        xs = np.clip(np.round(cx + r * np.cos(angles)).astype(int), 0, 99)
        ys = np.clip(np.round(cy + r * np.sin(angles)).astype(int), 0, 99)
        px = rgb[ys, xs].astype(int)
        return px[np.argmax(px.max(1) - px.min(1))]

    blue = ring_colour(20, 70, 10)
    assert blue[2] > blue[0] + 60  # truth: blue
    magenta = ring_colour(70, 20, 8)
    assert magenta[0] > magenta[1] + 60 and magenta[2] > magenta[1] + 30  # unmatched: magenta
    # the matched colour is orange
    rgb2 = plots.overlay_rgb(image, truth, pred, [True], radius=10, legend=False)
    rgb = rgb2
    orange = ring_colour(70, 20, 8)
    assert orange[0] > orange[2] + 60 and orange[1] > orange[2]


def test_overlay_accepts_dataframes_and_empty():
    import pandas as pd

    image = _micrograph()
    truth = pd.DataFrame({"micrograph": "a", "x": [5.0], "y": [6.0]})
    rgb = plots.overlay_rgb(image, truth, np.zeros((0, 2)), [], radius=4)
    assert rgb.shape == (120, 160, 3)


def test_overlay_bad_input(tmp_path):
    image = _micrograph()
    with pytest.raises(InputError, match="matched has 1 entries but there are 2"):
        plots.overlay_rgb(image, None, [[1, 2], [3, 4]], [True], radius=4)
    with pytest.raises(InputError, match="pred_xy"):
        plots.overlay_rgb(image, None, [1, 2, 3], None, radius=4)
    with pytest.raises(InputError, match="radius"):
        plots.overlay_rgb(image, None, None, None, radius=0)
    with pytest.raises(InputError, match="2-D"):
        plots.overlay_rgb(np.zeros((2, 3, 4)), None, None, None, radius=3)


def test_score_map_heatmap_is_red_at_high_blue_at_low(tmp_path):
    image = np.zeros((80, 100), dtype=np.float32)
    score_map = np.full(image.shape, -10.0, dtype=np.float32)  # logits: probability ~0
    score_map[30:50, 60:90] = 10.0  # probability ~1
    path = plots.plot_score_map(image, score_map, tmp_path / "s.png", alpha=0.8)
    assert _png_size(path) == (100, 80)
    with pytest.raises(OutputExistsError):
        plots.plot_score_map(image, score_map, path)
    rgb = plots.score_map_rgb(image, score_map, alpha=0.8)
    hot, cold = rgb[40, 75].astype(int), rgb[10, 10].astype(int)
    assert hot[0] > hot[2] + 60  # red
    assert cold[2] > cold[0] + 60  # blue
    # probabilities given directly
    # (the colour bars' tick values differ: compare the heat maps without them)
    rgb_p = plots.score_map_rgb(
        image, (score_map > 0).astype(np.float32), logits=False, alpha=0.8, colorbar=False
    )
    rgb = plots.score_map_rgb(image, score_map, alpha=0.8, colorbar=False)
    assert np.abs(rgb_p.astype(int) - rgb.astype(int)).max() <= 3


def test_score_map_shape_mismatch(tmp_path):
    with pytest.raises(InputError, match="differs from micrograph shape"):
        plots.plot_score_map(_micrograph(), np.zeros((10, 10)), tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()


def test_contrast_stretch_matches_percentiles():
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, size=(50, 60)).astype(np.float32)
    out = plots.contrast_stretch(image, 2, 98)
    lo, hi = np.percentile(image, [2, 98])
    expected = np.clip((image - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.all(plots.contrast_stretch(np.ones((4, 4))) == 0.5)
    with pytest.raises(InputError):
        plots.contrast_stretch(image, 50, 10)


def test_downscaled_display_keeps_circle_positions():
    # a 400x400 micrograph shown at 100x100: a circle at (x=300, y=100) lands near (75, 25)
    image = np.zeros((400, 400), dtype=np.float32)
    rgb = plots.overlay_rgb(
        image, [[300.0, 100.0]], None, None, radius=40, max_size_px=100, legend=False
    )
    assert rgb.shape == (100, 100, 3)
    blue = (rgb[..., 2].astype(int) - rgb[..., 0].astype(int)) > 40
    ys, xs = np.nonzero(blue)
    assert abs(xs.mean() - 75) < 2 and abs(ys.mean() - 25) < 2


def test_score_map_color_scales_differ_and_bad_scale_is_refused():
    from topaz_lightning.plots import score_map_rgb

    rng = np.random.default_rng(0)
    image = rng.normal(size=(64, 64)).astype(np.float32)
    logits = np.full((64, 64), -8.0, np.float32)
    logits[20:24, 30:34] = -2.0  # a peak that is still a small probability
    by_logit = score_map_rgb(image, logits, color_scale="logit", max_size_px=None)
    by_prob = score_map_rgb(image, logits, color_scale="probability", max_size_px=None)
    assert by_logit.shape == by_prob.shape == (64, 64, 3)

    def redness(rgb):  # red minus blue over the peak
        patch = rgb[21:23, 31:33].astype(int)
        return (patch[..., 0] - patch[..., 2]).mean()

    # on the logit scale the peak is drawn red; on the 0..1 scale (p = 0.12) it stays blue
    assert redness(by_logit) > 0 > redness(by_prob)
    with pytest.raises(InputError, match="color_scale"):
        score_map_rgb(image, logits, color_scale="rainbow")
