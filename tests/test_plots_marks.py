"""Marks on the pictures: the score map's colour bar, the overlay's threshold, PR operating points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from topaz_lightning import plots
from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.metrics import evaluate_picks
from topaz_lightning.plots.curves import _pr_figure
from topaz_lightning.plots.micrographs import _overlay_figure


def _score_map_case():
    image = np.zeros((120, 200), dtype=np.float32)
    score_map = np.full(image.shape, -10.0, dtype=np.float32)
    score_map[40:60, 20:60] = 10.0
    return image, score_map


def test_score_map_colour_bar_is_drawn_at_the_right_edge_only():
    image, score_map = _score_map_case()
    with_bar = plots.score_map_rgb(image, score_map, alpha=0.8).astype(int)
    without = plots.score_map_rgb(image, score_map, alpha=0.8, colorbar=False).astype(int)
    changed = np.abs(with_bar - without).max(axis=2) > 10
    cols = np.flatnonzero(changed.any(axis=0))
    assert cols.size > 0 and cols.min() >= int(0.85 * 200)  # only the right edge changes
    # the bar runs from blue (low, bottom) to red (high, top): find its most saturated column
    rows = np.flatnonzero(changed.any(axis=1))
    band = with_bar[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    sat = (band.max(axis=2) - band.min(axis=2)).sum(axis=0)
    column = band[:, int(np.argmax(sat))]
    colourful = column[(column.max(axis=1) - column.min(axis=1)) > 100]
    top, bottom = colourful[0], colourful[-1]
    assert top[0] > top[2] + 60  # red at the top
    assert bottom[2] > bottom[0] + 60  # blue at the bottom


def test_score_map_colour_bar_names_the_scale():
    from topaz_lightning.plots.micrographs import _score_map_figure

    image, score_map = _score_map_case()
    for scale in ("logit", "probability"):
        fig = _score_map_figure(image, score_map, True, 0.45, 1024, (1.0, 99.0), "jet", None, scale)

        def labels(ax):  # the bar lives in inset axes (children of the picture's axes)
            return [ax.get_ylabel()] + [x for child in ax.child_axes for x in labels(child)]

        assert scale in labels(fig.axes[0])


def test_overlay_omits_picks_below_the_threshold_and_names_it():
    image = np.zeros((100, 100), dtype=np.float32)
    pred = np.array([[30.0, 30.0], [70.0, 70.0]])
    scores = [2.0, -1.0]
    rgb = plots.overlay_rgb(
        image, None, pred, [False, False], 8, legend=False, scores=scores, threshold=0.0
    ).astype(int)
    every = plots.overlay_rgb(image, None, pred, [False, False], 8, legend=False).astype(int)

    def rim_saturation(img, cx, cy, r=6.4):
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        xs = np.clip(np.round(cx + r * np.cos(angles)).astype(int), 0, 99)
        ys = np.clip(np.round(cy + r * np.sin(angles)).astype(int), 0, 99)
        px = img[ys, xs]
        return int((px.max(axis=1) - px.min(axis=1)).max())

    assert rim_saturation(rgb, 30, 30) > 60  # above the threshold: drawn
    assert rim_saturation(rgb, 70, 70) < 10  # below: omitted
    assert rim_saturation(every, 70, 70) > 60  # without a threshold every pick is drawn
    fig = _overlay_figure(
        image, None, pred, [True, False], 8, 1024, (1.0, 99.0), True, None,
        scores, 0.0, "best F1",
    )  # fmt: skip
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "threshold best F1 0: 1 picks below not drawn" in texts
    assert "matched pick (1)" in texts and "unmatched pick (0)" in texts


def test_overlay_threshold_needs_matching_scores():
    image = np.zeros((50, 50), dtype=np.float32)
    pred = [[10.0, 10.0], [20.0, 20.0]]
    with pytest.raises(InputError, match="threshold needs the picks' scores"):
        plots.overlay_rgb(image, None, pred, None, 4, threshold=0.0)
    with pytest.raises(InputError, match="scores has 1 entries but there are 2"):
        plots.overlay_rgb(image, None, pred, None, 4, scores=[1.0], threshold=0.0)


def _random_evaluation(seed: int = 0):
    rng = np.random.default_rng(seed)
    truth_rows, pick_rows = [], []
    for m in range(3):
        centres = rng.uniform(20, 480, size=(25, 2))
        truth_rows += [(f"m{m}", x, y) for x, y in centres]
        near = centres[:18] + rng.normal(0, 2, size=(18, 2))
        far = rng.uniform(20, 480, size=(30, 2))
        xy = np.vstack([near, far])
        score = np.concatenate([rng.normal(2, 1, 18), rng.normal(0, 1, 30)])
        pick_rows += [(f"m{m}", x, y, s) for (x, y), s in zip(xy, score, strict=True)]
    truth = pd.DataFrame(truth_rows, columns=["micrograph", "x", "y"])
    picks = pd.DataFrame(pick_rows, columns=["micrograph", "x", "y", "score"])
    return evaluate_picks(picks, truth, 6.0)


def test_pr_point_at_a_threshold_lies_on_the_curve():
    ev = _random_evaluation()
    recall, precision = plots.pr_point(ev, threshold=ev.best_f1_threshold)
    assert 2 * precision * recall / (precision + recall) == pytest.approx(ev.best_f1)
    # every curve point is reproduced
    for t, p, r in zip(ev.thresholds, ev.precision, ev.recall, strict=True):
        assert plots.pr_point(ev, threshold=t) == pytest.approx((r, p))
    assert plots.pr_point(ev, threshold=1e9) is None


def test_pr_point_for_the_best_k_of_each_micrograph_matches_a_reference():
    ev = _random_evaluation(1)
    for k in (1, 5, 20, 100):
        top = ev.picks.sort_values("score", ascending=False).groupby("micrograph").head(k)
        tp = int(top["matched"].sum())
        assert plots.pr_point(ev, per_micrograph=k) == pytest.approx(
            (tp / ev.n_true, tp / len(top))
        )
    counts = {"m0": 3, "m1": 0, "m2": 7}
    parts = [ev.picks[ev.picks["micrograph"] == m].nlargest(k, "score") for m, k in counts.items()]
    top = pd.concat(parts)
    tp = int(top["matched"].sum())
    assert plots.pr_point(ev, per_micrograph=counts) == pytest.approx(
        (tp / ev.n_true, tp / len(top))
    )
    with pytest.raises(InputError, match="exactly one"):
        plots.pr_point(ev)


def test_pr_marks_are_labelled_points_in_the_legend(tmp_path):
    ev = _random_evaluation()
    best = plots.pr_point(ev, threshold=ev.best_f1_threshold)
    top = plots.pr_point(ev, per_micrograph=10)
    marks = {"run": [("best F1", *best), ("10/micrograph", *top)]}
    fig = _pr_figure({"run": ev}, None, (600, 500), 0.9, marks)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"best F1: R {best[0]:.2f}, P {best[1]:.2f}" in texts
    assert f"10/micrograph: R {top[0]:.2f}, P {top[1]:.2f}" in texts
    points = [line.get_xydata()[0] for line in ax.get_lines() if line.get_marker() in ("o", "s")]
    np.testing.assert_allclose(points, [best, top])
    path = plots.plot_pr_curves({"run": ev}, tmp_path / "pr.png", marks=marks)
    assert path.is_file()


# ------------------------------------------------------------------------------ where they are drawn


def test_evaluate_marks_best_f1_and_the_default_count(tmp_path, monkeypatch):
    from tests.conftest import compose_config
    from tests.helpers import PixelLogitNet, admit_pixel_logit_net
    from topaz_lightning.cli.evaluate_pictures import pr_marks
    from topaz_lightning.data.prior import expected_particles_per_micrograph
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.models import save_model

    admit_pixel_logit_net(monkeypatch)
    ev = _random_evaluation()
    base = ["picks=p.tsv", "truth=t.tsv", f"output_dir={tmp_path}"]
    marks = pr_marks(compose_config("evaluate", [*base, "pr_mark_per_micrograph=5"]), {"r": ev}, {})
    texts = [m[0] for m in marks["r"]]
    assert texts[0].startswith("best F1") and texts[1] == "best 5/micrograph"
    assert marks["r"][1][1:] == pytest.approx(plots.pr_point(ev, per_micrograph=5))
    # expected: the count the model's pi gives each micrograph of known size
    geometry = RunGeometry(downsample=2.0, label_radius_px_model=3.0, pi=0.004)
    model = save_model(
        tmp_path / "m.pt", PixelLogitNet(), extra={"geometry": geometry.to_dict()}, overwrite=True
    )
    cfg = compose_config("evaluate", [*base, f"model_path={model}"])
    shapes = {"m0": (500, 500), "m1": (500, 500), "m2": (1000, 500)}
    marks = pr_marks(cfg, {"r": ev}, shapes)
    counts = {
        n: int(round(expected_particles_per_micrograph(0.004, (h / 2, w / 2), 3.0)))
        for n, (h, w) in shapes.items()
    }
    assert marks["r"][1][0].startswith("default: pi's count")
    assert marks["r"][1][1:] == pytest.approx(plots.pr_point(ev, per_micrograph=counts))
    # without the sizes there is no count mark; a bad setting names the key
    assert len(pr_marks(cfg, {"r": ev}, {})["r"]) == 1
    bad = compose_config("evaluate", [*base, "pr_mark_per_micrograph=0"])
    with pytest.raises(ConfigError, match="pr_mark_per_micrograph"):
        pr_marks(bad, {"r": ev}, {})


def test_training_pictures_mark_best_f1_and_name_the_threshold(tmp_path):
    from topaz_lightning.callbacks.pictures import _best_f1_mark, draw_pictures

    ev = _random_evaluation()
    mark = _best_f1_mark(ev)
    assert mark[0][1:] == pytest.approx(plots.pr_point(ev, threshold=ev.best_f1_threshold))
    rng = np.random.default_rng(0)
    images = {"m0": rng.normal(size=(500, 500)).astype(np.float32)}
    truth = pd.DataFrame({"micrograph": ["m0"], "x": [10.0], "y": [10.0]})
    pictures = draw_pictures(tmp_path, 7, images, truth, {"m0": images["m0"]}, ev, {"val": ev}, 6.0)
    assert set(pictures) == {"val/pr_curve", "val/overlay/m0", "val/score_map/m0"}
    for name in ("pr_curve.png", "overlay_m0.png", "score_map_m0.png"):
        assert (tmp_path / name).is_file()
