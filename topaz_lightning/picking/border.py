"""Border and artefact masks for picking: a fixed edge margin and striped bands detected from local statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from topaz_lightning.errors import ConfigError, InputError

#: a row (column) belongs to a striped band when its mean absolute difference to the next row
#: (column) is below this fraction of the image's median: the band repeats one line of pixels,
#: so it barely changes across the edge direction while real image content changes as much as
#: anywhere else (measured on EMPIAR-10017 at 4x: 0.06-0.45 inside the bands, 0.9-1.5 outside)
DEFAULT_BAND_RATIO = 0.5
#: bands are searched within this fraction of the side from each edge
DEFAULT_MAX_BAND_FRACTION = 0.1
#: a line's change is averaged over the central half of the image; below this many pixels the
#: average is too noisy to tell a band (nothing is detected on such small images)
MIN_AVERAGED_PIXELS = 32


@dataclass(frozen=True)
class BorderBands:
    """Width in pixels of the striped band found along each edge (0 = none)."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    def any(self) -> bool:
        return max(self.top, self.bottom, self.left, self.right) > 0


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 8:
        raise InputError(f"expected a 2-D micrograph of at least 8 x 8 pixels, got {image.shape}")
    return image


def _band_width(change: np.ndarray, ratio: float, max_width: int) -> int:
    """Width of the low-change run at the start of ``change`` (per-line change / median)."""
    low = np.flatnonzero(change[:max_width] < ratio)
    # the last low line within reach ends the band: the band's first line (the step into the
    # band) and the Fourier ringing at the very edge may alternate high and low
    return 0 if low.size == 0 else int(low[-1]) + 1


def detect_bands(
    image: np.ndarray,
    ratio: float = DEFAULT_BAND_RATIO,
    max_fraction: float = DEFAULT_MAX_BAND_FRACTION,
) -> BorderBands:
    """Find striped bands along the edges: lines that nearly repeat their neighbour.

    For every row the mean absolute difference to the next row is taken over the central half of
    the columns (so a band along the left or right edge does not count), divided by the median
    over all rows; rows below ``ratio`` within ``max_fraction`` of the height from the top
    (bottom) edge form the top (bottom) band, up to the last such row. Columns likewise. Images
    whose central half is narrower than ``MIN_AVERAGED_PIXELS`` get no bands.
    """
    if not 0 < ratio < 1:
        raise ConfigError("border.band_ratio", f"must lie in (0, 1), got {ratio}")
    if not 0 < max_fraction <= 0.5:
        raise ConfigError("border.max_band_fraction", f"must lie in (0, 0.5], got {max_fraction}")
    image = _check_image(image)
    h, w = image.shape
    if min(h, w) - 2 * (min(h, w) // 4) < MIN_AVERAGED_PIXELS:
        return BorderBands()
    rows = np.abs(np.diff(image[:, w // 4 : w - w // 4], axis=0)).mean(axis=1)
    cols = np.abs(np.diff(image[h // 4 : h - h // 4, :], axis=1)).mean(axis=0)
    rows = rows / max(float(np.median(rows)), 1e-12)
    cols = cols / max(float(np.median(cols)), 1e-12)
    # the difference between lines i and i+1 marks line i from the top/left and line i+1 from
    # the bottom/right
    max_h, max_w = max(1, int(max_fraction * h)), max(1, int(max_fraction * w))
    return BorderBands(
        top=_band_width(rows, ratio, max_h),
        bottom=_band_width(rows[::-1], ratio, max_h),
        left=_band_width(cols, ratio, max_w),
        right=_band_width(cols[::-1], ratio, max_w),
    )


def border_mask(
    shape: tuple[int, int],
    margin: float = 0.0,
    bands: BorderBands | None = None,
    band_padding: float = 0.0,
) -> np.ndarray:
    """Boolean (H, W) mask, True where picks are excluded.

    Excluded: pixels within ``margin`` of any edge (distance from the edge pixel's centre, so
    ``margin=1`` drops the outermost line), and each band of ``bands`` widened inwards by
    ``band_padding`` (a pick next to a band still sees it within its receptive field).
    """
    if margin < 0 or band_padding < 0:
        raise ConfigError("border.margin", "margin and band_padding must be >= 0")
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), dtype=bool)
    widths = BorderBands() if bands is None else bands
    pad = int(np.ceil(band_padding)) if bands is not None and bands.any() else 0
    m = int(np.ceil(margin))
    top = max(m, widths.top + pad if widths.top else 0)
    bottom = max(m, widths.bottom + pad if widths.bottom else 0)
    left = max(m, widths.left + pad if widths.left else 0)
    right = max(m, widths.right + pad if widths.right else 0)
    mask[: min(top, h), :] = True
    mask[max(h - bottom, 0) :, :] = True
    mask[:, : min(left, w)] = True
    mask[:, max(w - right, 0) :] = True
    return mask


def artefact_mask(
    image: np.ndarray,
    margin: float = 0.0,
    band_padding: float = 0.0,
    ratio: float = DEFAULT_BAND_RATIO,
    max_fraction: float = DEFAULT_MAX_BAND_FRACTION,
) -> np.ndarray:
    """``border_mask`` of the image's shape with the bands :func:`detect_bands` finds in it."""
    image = _check_image(image)
    bands = detect_bands(image, ratio=ratio, max_fraction=max_fraction)
    return border_mask(image.shape, margin=margin, bands=bands, band_padding=band_padding)


def keep_unmasked(xy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Boolean per pick (``xy`` (n, 2) as x, y in the mask's pixels): True where not masked."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    h, w = mask.shape
    col = np.clip(np.rint(xy[:, 0]).astype(np.int64), 0, w - 1)
    row = np.clip(np.rint(xy[:, 1]).astype(np.int64), 0, h - 1)
    return ~mask[row, col]


def picking_mask(
    image: np.ndarray, bands: bool = False, margin: float = 0.0, band_padding: float = 0.0
) -> np.ndarray | None:
    """The mask ``tzl-pick`` applies to one micrograph (model frame), or None when nothing is
    asked: the striped bands :func:`detect_bands` finds (widened by ``band_padding``) when
    ``bands``, and every pixel within ``margin`` of an edge."""
    if not bands and margin <= 0:
        return None
    if bands:
        return artefact_mask(image, margin=margin, band_padding=band_padding)
    return border_mask(np.shape(image), margin=margin)


def border_padding_px_model(padding: float | None, nms_radius_px_model: float) -> float:
    """How far (model px) a detected band is widened inwards: ``padding`` when given, else half
    the NMS radius (0.625 particle radius at the default NMS radius of 1.25 r: 8.44 px at
    EMPIAR-10017's 13.5 px radius at 4x; docs/accuracy.md). The one home of the rule
    for ``border_padding_px_model: null``, used by ``tzl-pick`` and the held-out picking
    callback alike."""
    return float(nms_radius_px_model) / 2 if padding is None else float(padding)


def drop_masked_picks(
    picks: pd.DataFrame,
    image: np.ndarray,
    bands: bool = False,
    margin: float = 0.0,
    band_padding: float = 0.0,
) -> pd.DataFrame:
    """``picks`` (x, y in ``image``'s pixels, the model frame) less those where
    :func:`picking_mask` of ``image`` is set; unchanged when nothing is asked."""
    mask = picking_mask(image, bands=bands, margin=margin, band_padding=band_padding)
    if mask is None:
        return picks
    keep = keep_unmasked(picks[["x", "y"]].to_numpy(), mask)
    return picks[keep].reset_index(drop=True)
