"""What every figure of :mod:`topaz_lightning.plots` shares: colours, a private Agg figure, the
grey micrograph axes, input checks, rendering to an RGB array and atomic saving.

Figures are built on a private Figure + Agg canvas: no pyplot global state, safe in callbacks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # never needs a display; harmless if another backend was already chosen

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from topaz_lightning.errors import InputError  # noqa: E402
from topaz_lightning.utils.atomic import atomic_output  # noqa: E402

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
