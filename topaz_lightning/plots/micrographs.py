"""Pictures of one micrograph: true particles and picks as circles, and score-map heatmaps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from topaz_lightning.errors import InputError
from topaz_lightning.plots.canvas import (
    DEFAULT_MAX_SIZE_PX,
    MATCHED_COLOR,
    TRUTH_COLOR,
    UNMATCHED_COLOR,
    _as_image,
    _as_xy,
    _block_mean,
    _display_size,
    _font,
    _image_axes,
    _new_figure,
    _render,
    _save,
    _shrink_factor,
    _title_box,
)
from topaz_lightning.utils.atomic import check_writable


def _circles(ax: Any, xy: np.ndarray, radius: float, color: str, linewidth: float) -> None:
    if len(xy) == 0:
        return
    diameter = np.full(len(xy), 2.0 * radius)
    ax.add_collection(
        EllipseCollection(
            diameter,
            diameter,
            np.zeros(len(xy)),
            units="xy",  # sizes in data (pixel) units, so circles scale with the picture
            offsets=xy,
            offset_transform=ax.transData,
            facecolors="none",
            edgecolors=color,
            linewidths=linewidth,
        )
    )


def _above_threshold(n_pred: int, scores: Any, threshold: float | None) -> tuple[np.ndarray, int]:
    """(mask of the picks drawn, number omitted): every pick without a threshold, else those
    scoring >= ``threshold``."""
    if threshold is None:
        return np.ones(n_pred, dtype=bool), 0
    if scores is None:
        raise InputError("a threshold needs the picks' scores", where="scores")
    scores_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores_arr) != n_pred:
        raise InputError(
            f"scores has {len(scores_arr)} entries but there are {n_pred} predictions",
            where="scores",
        )
    if not np.isfinite(threshold) and not np.isneginf(threshold):
        raise InputError(f"threshold must be a number, got {threshold}", where="threshold")
    keep = scores_arr >= threshold
    return keep, int((~keep).sum())


def _overlay_figure(
    image: np.ndarray,
    truth_xy: Any,
    pred_xy: Any,
    matched: Any,
    radius: float,
    max_size_px: int | None,
    percentiles: tuple[float, float],
    legend: bool,
    title: str | None,
    scores: Any = None,
    threshold: float | None = None,
    threshold_label: str | None = None,
) -> Figure:
    image = _as_image(image, "image")
    truth = _as_xy(truth_xy, "truth_xy")
    pred = _as_xy(pred_xy, "pred_xy")
    if matched is None:
        matched_arr = np.zeros(len(pred), dtype=bool)
    else:
        matched_arr = np.asarray(matched).astype(bool).reshape(-1)
        if len(matched_arr) != len(pred):
            raise InputError(
                f"matched has {len(matched_arr)} entries but there are {len(pred)} predictions",
                where="matched",
            )
    keep, omitted = _above_threshold(len(pred), scores, threshold)
    pred, matched_arr = pred[keep], matched_arr[keep]
    if not (np.isfinite(radius) and radius > 0):
        raise InputError(
            f"radius must be a positive number of pixels, got {radius}", where="radius"
        )
    width_px, height_px = _display_size(image.shape, max_size_px)
    fig = _new_figure(width_px, height_px)
    ax = _image_axes(fig, image, percentiles, width_px)
    # thicker lines on a downscaled picture would swamp small particles
    linewidth = max(0.8, min(2.0, 2.0 * width_px / image.shape[1]))
    _circles(ax, truth, radius, TRUTH_COLOR, linewidth)
    _circles(ax, pred[~matched_arr], radius * 0.8, UNMATCHED_COLOR, linewidth)
    _circles(ax, pred[matched_arr], radius * 0.8, MATCHED_COLOR, linewidth)
    if legend:
        handles = [
            Line2D([], [], marker="o", ls="", mfc="none", mec=c, label=f"{name} ({n})")
            for c, name, n in [
                (TRUTH_COLOR, "true", len(truth)),
                (MATCHED_COLOR, "matched pick", int(matched_arr.sum())),
                (UNMATCHED_COLOR, "unmatched pick", int((~matched_arr).sum())),
            ]
        ]
        if threshold is not None:
            # the threshold named, and what it left out (picks below it are not drawn)
            named = f"{threshold_label} " if threshold_label else ""
            handles.append(
                Line2D(
                    [], [], ls="", label=f"threshold {named}{threshold:.3g}: "
                    f"{omitted} picks below not drawn",
                )
            )  # fmt: skip
        ax.legend(handles=handles, loc="upper right", fontsize=_font(width_px), framealpha=0.8)
    if title:
        _title_box(ax, title, width_px)
    return fig


def _score_map_figure(
    image: np.ndarray,
    score_map: np.ndarray,
    logits: bool,
    alpha: float,
    max_size_px: int | None,
    percentiles: tuple[float, float],
    cmap: str,
    title: str | None,
    color_scale: str = "logit",
    colorbar: bool = True,
) -> Figure:
    if color_scale not in ("logit", "probability"):
        raise InputError(
            f"color_scale must be 'logit' or 'probability', got {color_scale!r}",
            where="color_scale",
        )
    image = _as_image(image, "image")
    scores = _as_image(score_map, "score_map")
    if scores.shape != image.shape:
        raise InputError(
            f"score map shape {scores.shape} differs from micrograph shape {image.shape}",
            where="score_map",
        )
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}", where="alpha")
    width_px, height_px = _display_size(image.shape, max_size_px)
    # shrink before the sigmoid: display only, and 16x cheaper on a 4096 px micrograph
    shown = _block_mean(np.nan_to_num(scores, nan=0.0), _shrink_factor(image.shape, width_px))
    shown = shown.astype(np.float64)
    if color_scale == "probability":
        vmin, vmax = 0.0, 1.0
        if logits:
            # float64: float32 exp overflows (with warnings) for logits below about -88
            shown = 1.0 / (1.0 + np.exp(-np.clip(shown, -60.0, 60.0)))
    else:
        if not logits:
            p = np.clip(shown, 1e-12, 1.0 - 1e-12)
            shown = np.log(p) - np.log1p(-p)
        vmin, vmax = (float(v) for v in np.percentile(shown, [50.0, 99.9]))
        if not vmax > vmin:
            vmax = vmin + 1.0
    fig = _new_figure(width_px, height_px)
    ax = _image_axes(fig, image, percentiles, width_px)
    height, width = image.shape
    # the paper's Figure 2B colours: blue = low confidence, red = high confidence
    mappable = ax.imshow(
        shown,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        alpha=alpha,
        interpolation="antialiased",
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),
    )
    if colorbar:
        _colorbar(fig, ax, mappable, color_scale, width_px)
    if title:
        _title_box(ax, title, width_px)
    return fig


def _colorbar(fig: Figure, ax: Any, mappable: Any, color_scale: str, width_px: int) -> None:
    """A vertical colour bar inside the picture's right edge, on a translucent dark panel."""
    font = _font(width_px)
    panel = ax.inset_axes((0.885, 0.06, 0.11, 0.5))
    panel.set_facecolor((0.0, 0.0, 0.0, 0.5))
    panel.set_xticks([])
    panel.set_yticks([])
    cax = panel.inset_axes((0.12, 0.06, 0.2, 0.88))
    bar = fig.colorbar(mappable, cax=cax)
    bar.set_label("probability" if color_scale == "probability" else "logit", color="white",
                  fontsize=font)  # fmt: skip
    bar.ax.tick_params(colors="white", labelsize=font, length=2)
    bar.outline.set_edgecolor("white")


def plot_overlay(
    image: np.ndarray,
    truth_xy: Any,
    pred_xy: Any,
    matched: Any,
    path: str | os.PathLike,
    radius: float,
    *,
    overwrite: bool = False,
    max_size_px: int | None = DEFAULT_MAX_SIZE_PX,
    percentiles: tuple[float, float] = (1.0, 99.0),
    legend: bool = True,
    title: str | None = None,
    scores: Any = None,
    threshold: float | None = None,
    threshold_label: str | None = None,
) -> Path:
    """Save the micrograph in grey with true particles and predictions drawn as circles.

    ``truth_xy`` and ``pred_xy`` are (n, 2) arrays of (x, y) pixel coordinates (x = column,
    y = row) or DataFrames with x/y columns; ``matched`` holds one bool per prediction (True when
    it was matched to a true particle, e.g. ``metrics.match_picks(...) >= 0``) or None. True
    particles are blue circles of ``radius`` px, matched predictions orange and unmatched ones
    magenta (slightly smaller circles so coinciding ones stay visible). The grey scale is stretched
    between the given percentiles. The picture keeps the micrograph's aspect ratio and is
    downscaled so its longer side is at most ``max_size_px`` (None: one picture pixel per
    micrograph pixel). With a ``threshold`` (and ``scores``, one per prediction) only the picks
    scoring >= ``threshold`` are drawn; the legend names the threshold (``threshold_label``, e.g.
    "best F1", and its value) and how many picks below it were left out. Existing files are
    refused unless ``overwrite``.
    """
    check_writable(path, overwrite)
    fig = _overlay_figure(
        image, truth_xy, pred_xy, matched, radius, max_size_px, percentiles, legend, title,
        scores, threshold, threshold_label,
    )  # fmt: skip
    return _save(fig, path, overwrite)


def overlay_rgb(
    image: np.ndarray,
    truth_xy: Any,
    pred_xy: Any,
    matched: Any,
    radius: float,
    *,
    max_size_px: int | None = DEFAULT_MAX_SIZE_PX,
    percentiles: tuple[float, float] = (1.0, 99.0),
    legend: bool = True,
    title: str | None = None,
    scores: Any = None,
    threshold: float | None = None,
    threshold_label: str | None = None,
) -> np.ndarray:
    """Same picture as :func:`plot_overlay` as a ``uint8`` RGB array (H, W, 3)."""
    fig = _overlay_figure(
        image, truth_xy, pred_xy, matched, radius, max_size_px, percentiles, legend, title,
        scores, threshold, threshold_label,
    )  # fmt: skip
    return _render(fig)


def plot_score_map(
    image: np.ndarray,
    score_map: np.ndarray,
    path: str | os.PathLike,
    *,
    logits: bool = True,
    color_scale: str = "logit",
    alpha: float = 0.45,
    overwrite: bool = False,
    max_size_px: int | None = DEFAULT_MAX_SIZE_PX,
    percentiles: tuple[float, float] = (1.0, 99.0),
    cmap: str = "jet",
    title: str | None = None,
    colorbar: bool = True,
) -> Path:
    """Save a heatmap of particle probability over the grey micrograph (the paper's Figure 2B).

    ``score_map`` has the micrograph's shape; ``logits=True`` means it holds logits (what
    ``picking.score_micrograph`` returns), otherwise probabilities in [0, 1]. The colour map
    runs blue (low) to red (high) and is blended with opacity ``alpha``.
    ``color_scale="probability"`` maps probability 0..1 onto the colours; ``"logit"`` (default)
    maps the logit between the map's median and its 99.9th percentile, because a PU classifier
    trained with a small pi gives even clear particles small probabilities, which on a 0..1
    scale all look the same blue. ``colorbar`` draws the colour scale (labelled logit or
    probability) inside the picture's right edge. Size rules as in :func:`plot_overlay`.
    """
    check_writable(path, overwrite)
    fig = _score_map_figure(
        image, score_map, logits, alpha, max_size_px, percentiles, cmap, title, color_scale,
        colorbar,
    )  # fmt: skip
    return _save(fig, path, overwrite)


def score_map_rgb(
    image: np.ndarray,
    score_map: np.ndarray,
    *,
    logits: bool = True,
    color_scale: str = "logit",
    alpha: float = 0.45,
    max_size_px: int | None = DEFAULT_MAX_SIZE_PX,
    percentiles: tuple[float, float] = (1.0, 99.0),
    cmap: str = "jet",
    title: str | None = None,
    colorbar: bool = True,
) -> np.ndarray:
    """Same picture as :func:`plot_score_map` as a ``uint8`` RGB array (H, W, 3)."""
    fig = _score_map_figure(
        image, score_map, logits, alpha, max_size_px, percentiles, cmap, title, color_scale,
        colorbar,
    )  # fmt: skip
    return _render(fig)
