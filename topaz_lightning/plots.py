"""Pictures of picking results: PR curves, micrograph overlays of picks, score-map heatmaps."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # never needs a display; harmless if another backend was already chosen

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import EllipseCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from topaz_lightning.errors import InputError  # noqa: E402
from topaz_lightning.utils.atomic import atomic_output, check_writable  # noqa: E402

__all__ = [
    "TRUTH_COLOR",
    "MATCHED_COLOR",
    "UNMATCHED_COLOR",
    "plot_pr_curves",
    "plot_overlay",
    "plot_score_map",
    "pr_curves_rgb",
    "overlay_rgb",
    "score_map_rgb",
    "contrast_stretch",
]

# Supplementary Figure 2 of the paper draws labels in blue and CNN picks in orange; picks that
# match no true particle (false positives) get a third, clearly different colour.
TRUTH_COLOR = "#1f77b4"  # blue
MATCHED_COLOR = "#ff7f0e"  # orange
UNMATCHED_COLOR = "#e6007e"  # magenta

# Images wider than this are shown downscaled so a 4096 px micrograph gives a ~1 MB PNG.
DEFAULT_MAX_SIZE_PX = 1024
_DPI = 100


def contrast_stretch(
    image: np.ndarray, low_percentile: float = 1.0, high_percentile: float = 99.0
) -> np.ndarray:
    """Map ``image`` linearly so its ``low``/``high`` percentiles become 0/1, clipped to [0, 1].

    Non-finite pixels are ignored when computing the percentiles and shown as 0.
    A constant image maps to 0.5 everywhere.
    """
    image = _as_image(image, "image")
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise InputError(
            f"need 0 <= low_percentile < high_percentile <= 100, got {low_percentile}, {high_percentile}",
            where="contrast_stretch",
        )
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros(image.shape, dtype=np.float32)
    lo, hi = np.percentile(image[finite], [low_percentile, high_percentile])
    if hi <= lo:
        out = np.full(image.shape, 0.5, dtype=np.float32)
    else:
        out = ((image - lo) / (hi - lo)).astype(np.float32)
    out = np.where(finite, out, 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# figures (built on a private Figure + Agg canvas: no pyplot global state, safe in callbacks)


def _new_figure(width_px: int, height_px: int) -> Figure:
    # +0.01 px keeps int(width_in * dpi) from rounding down to width_px - 1 on float error
    fig = Figure(figsize=((width_px + 0.01) / _DPI, (height_px + 0.01) / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _font(width_px: int) -> float:
    # small pictures get small text so the legend does not hide the micrograph
    return 7.0 if width_px >= 400 else 5.0


def _display_size(shape: tuple[int, int], max_size_px: int | None) -> tuple[int, int]:
    height, width = shape
    scale = 1.0
    if max_size_px is not None:
        if max_size_px < 16:
            raise InputError(f"max_size_px must be >= 16, got {max_size_px}", where="max_size_px")
        scale = min(1.0, max_size_px / max(height, width))
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks (edges cropped): a cheap pre-shrink for display."""
    if factor <= 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    if h == 0 or w == 0:
        return image
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def _shrink_factor(shape: tuple[int, int], width_px: int) -> int:
    # shrink to no less than the displayed size; matplotlib's antialiasing does the rest
    return max(1, int(shape[1] // max(1, width_px)))


def _image_axes(
    fig: Figure, image: np.ndarray, percentiles: tuple[float, float], width_px: int
) -> Any:
    """Axes filling the whole figure with ``image`` in grey, in pixel coordinates (x right, y down)."""
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    height, width = image.shape
    shown = _block_mean(image, _shrink_factor(image.shape, width_px))
    ax.imshow(
        contrast_stretch(shown, *percentiles),
        cmap="gray",
        vmin=0.0,
        vmax=1.0,
        interpolation="antialiased",
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),
    )
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    return ax


def _title_box(ax: Any, title: str, width_px: int) -> None:
    """White title text on a translucent black box in the top-left corner of the picture."""
    ax.text(
        0.01, 0.99, title, transform=ax.transAxes, va="top", ha="left", fontsize=_font(width_px),
        color="white", bbox={"facecolor": "black", "alpha": 0.5, "pad": 2},
    )  # fmt: skip


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
    ax.imshow(
        shown,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        alpha=alpha,
        interpolation="antialiased",
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),
    )
    if title:
        _title_box(ax, title, width_px)
    return fig


def _pr_figure(
    curves: Mapping[str, Any],
    title: str | None,
    size_px: tuple[int, int],
    mark_recall: float | None,
) -> Figure:
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise InputError("need a non-empty dict {label: PickEvaluation}", where="curves")
    fig = _new_figure(*size_px)
    ax = fig.add_axes((0.12, 0.11, 0.84, 0.80))
    for label, evaluation in curves.items():
        precision, recall, aupr = _pr_arrays(evaluation, str(label))
        # a step curve: precision is constant between consecutive recall values
        ax.step(recall, precision, where="post", lw=1.5, label=f"{label} (AUPR {aupr:.3f})")
    if mark_recall is not None:
        ax.axvline(mark_recall, color="0.6", ls=":", lw=1)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or "precision-recall of picked particles", fontsize=10)
    return fig


def _pr_arrays(evaluation: Any, label: str) -> tuple[np.ndarray, np.ndarray, float]:
    try:
        precision = np.asarray(evaluation.precision, dtype=np.float64).reshape(-1)
        recall = np.asarray(evaluation.recall, dtype=np.float64).reshape(-1)
        aupr = float(evaluation.aupr)
    except AttributeError as err:
        raise InputError(
            f"curve '{label}' is not a PickEvaluation (needs precision, recall, aupr): {err}",
            where="curves",
        ) from err
    if precision.shape != recall.shape:
        raise InputError(
            f"curve '{label}': precision has {precision.size} points, recall {recall.size}",
            where="curves",
        )
    return precision, recall, aupr


# ---------------------------------------------------------------------------------------------
# public API: save to a file, or render to an RGB array


def plot_pr_curves(
    curves: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    overwrite: bool = False,
    size_px: tuple[int, int] = (600, 500),
    mark_recall: float | None = 0.9,
) -> Path:
    """Draw the precision-recall curves of several runs on one plot and save it to ``path``.

    ``curves`` maps a label (run name) to a ``metrics.PickEvaluation`` (anything with
    ``precision``, ``recall`` arrays and ``aupr``); the legend shows each run's AUPR. A dotted
    line marks ``mark_recall`` (0.9 by default, the paper's operating point). The picture is
    ``size_px`` = (width, height) pixels. Existing files are refused unless ``overwrite``.
    """
    check_writable(path, overwrite)
    return _save(_pr_figure(curves, title, size_px, mark_recall), path, overwrite)


def pr_curves_rgb(
    curves: Mapping[str, Any],
    *,
    title: str | None = None,
    size_px: tuple[int, int] = (600, 500),
    mark_recall: float | None = 0.9,
) -> np.ndarray:
    """Same picture as :func:`plot_pr_curves` as a ``uint8`` RGB array (H, W, 3)."""
    return _render(_pr_figure(curves, title, size_px, mark_recall))


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
) -> Path:
    """Save the micrograph in grey with true particles and predictions drawn as circles.

    ``truth_xy`` and ``pred_xy`` are (n, 2) arrays of (x, y) pixel coordinates (x = column,
    y = row) or DataFrames with x/y columns; ``matched`` holds one bool per prediction (True when
    it was matched to a true particle, e.g. ``metrics.match_picks(...) >= 0``) or None. True
    particles are blue circles of ``radius`` px, matched predictions orange and unmatched ones
    magenta (slightly smaller circles so coinciding ones stay visible). The grey scale is stretched
    between the given percentiles. The picture keeps the micrograph's aspect ratio and is
    downscaled so its longer side is at most ``max_size_px`` (None: one picture pixel per
    micrograph pixel). Existing files are refused unless ``overwrite``.
    """
    check_writable(path, overwrite)
    fig = _overlay_figure(
        image, truth_xy, pred_xy, matched, radius, max_size_px, percentiles, legend, title
    )
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
) -> np.ndarray:
    """Same picture as :func:`plot_overlay` as a ``uint8`` RGB array (H, W, 3)."""
    fig = _overlay_figure(
        image, truth_xy, pred_xy, matched, radius, max_size_px, percentiles, legend, title
    )
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
) -> Path:
    """Save a heatmap of particle probability over the grey micrograph (the paper's Figure 2B).

    ``score_map`` has the micrograph's shape; ``logits=True`` means it holds logits (what
    ``picking.score_micrograph`` returns), otherwise probabilities in [0, 1]. The colour map
    runs blue (low) to red (high) and is blended with opacity ``alpha``.
    ``color_scale="probability"`` maps probability 0..1 onto the colours; ``"logit"`` (default)
    maps the logit between the map's median and its 99.9th percentile, because a PU classifier
    trained with a small pi gives even clear particles small probabilities, which on a 0..1
    scale all look the same blue. Size rules as in :func:`plot_overlay`.
    """
    check_writable(path, overwrite)
    fig = _score_map_figure(
        image, score_map, logits, alpha, max_size_px, percentiles, cmap, title, color_scale
    )
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
) -> np.ndarray:
    """Same picture as :func:`plot_score_map` as a ``uint8`` RGB array (H, W, 3)."""
    fig = _score_map_figure(
        image, score_map, logits, alpha, max_size_px, percentiles, cmap, title, color_scale
    )
    return _render(fig)


# ---------------------------------------------------------------------------------------------
# helpers


def _as_image(image: Any, name: str) -> np.ndarray:
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(
            f"expected a non-empty 2-D array (H, W), got shape {arr.shape}", where=name
        )
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise InputError(f"expected numbers, got dtype {arr.dtype}", where=name)
    return arr.astype(np.float32, copy=False)


def _as_xy(xy: Any, name: str) -> np.ndarray:
    if xy is None:
        return np.zeros((0, 2), dtype=np.float64)
    if hasattr(xy, "columns"):  # DataFrame with x/y columns
        missing = {"x", "y"} - set(xy.columns)
        if missing:
            raise InputError(f"table lacks columns {sorted(missing)}", where=name)
        return xy[["x", "y"]].to_numpy(dtype=np.float64)
    arr = np.asarray(xy, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"expected an (n, 2) array of x, y, got shape {arr.shape}", where=name)
    return arr


def _render(fig: Figure) -> np.ndarray:
    canvas = fig.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _save(fig: Figure, path: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise InputError(f"unsupported picture format '.{fmt}' (use .png, .pdf or .svg)", path=path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format=fmt, dpi=_DPI)
    return path
