"""Classical pickers for comparison: difference-of-Gaussians blob detection and template matching."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import fft as sfft
from scipy.ndimage import gaussian_filter, map_coordinates

from topaz_lightning.errors import InputError


def _standardized(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise InputError(f"expected a 2-D micrograph, got shape {image.shape}")
    std = float(image.std())
    return (image - float(image.mean())) / (std if std > 0 else 1.0)


def dog_score_map(
    image: np.ndarray, radius_px: float, ratio: float = 1.6, dark: bool = True
) -> np.ndarray:
    """Difference-of-Gaussians blob response tuned to particles of ``radius_px`` (H, W) float32.

    The inner Gaussian has sigma ``radius_px / sqrt(2)`` (the scale at which a disk of that radius
    gives the strongest Laplacian response) and the outer one ``ratio`` times that. Particles are
    dark in underfocus, so ``dark=True`` scores dark blobs high.
    """
    if not radius_px > 0:
        raise InputError(f"radius_px must be > 0, got {radius_px}", where="radius_px")
    if not ratio > 1:
        raise InputError(f"ratio must be > 1, got {ratio}", where="ratio")
    image = _standardized(image)
    sigma = radius_px / math.sqrt(2)
    response = gaussian_filter(image, sigma, mode="reflect") - gaussian_filter(
        image, sigma * ratio, mode="reflect"
    )
    return (-response if dark else response).astype(np.float32)


def extract_boxes(image: np.ndarray, xy: np.ndarray, box: int) -> np.ndarray:
    """Boxes of odd size ``box`` centred on integer-rounded coordinates, zero outside the image."""
    half = box // 2
    padded = np.pad(np.asarray(image, dtype=np.float32), half)
    xy = np.round(np.asarray(xy, dtype=np.float64)).astype(int)
    rows = xy[:, 1][:, None] + np.arange(box)[None, :]
    cols = xy[:, 0][:, None] + np.arange(box)[None, :]
    return padded[rows[:, :, None], cols[:, None, :]]


def average_template(
    images: dict[str, np.ndarray], coordinates: pd.DataFrame, box: int, rotational: bool = True
) -> np.ndarray:
    """The mean of the labeled particles (standardized micrographs), rotationally averaged.

    Like a reference-based picker given the labeled particles as references; the rotational
    average removes the in-plane orientation the picker cannot know.
    """
    if box % 2 == 0:
        box += 1
    stacks = []
    for name, group in coordinates.groupby("micrograph"):
        if name not in images:
            continue
        stacks.append(extract_boxes(_standardized(images[name]), group[["x", "y"]].to_numpy(), box))
    if not stacks:
        raise InputError("no labeled particle lies on a given micrograph", where="coordinates")
    mean = np.concatenate(stacks).mean(axis=0)
    if not rotational:
        return mean - mean.mean()
    half = box // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    rho = np.hypot(xx, yy)
    radii = np.arange(0, half + 1, dtype=np.float64)
    # radial profile by sampling many angles on each ring, then painted back by radius
    angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    ring_y = half + radii[:, None] * np.sin(angles)[None, :]
    ring_x = half + radii[:, None] * np.cos(angles)[None, :]
    profile = (
        map_coordinates(mean, [ring_y.ravel(), ring_x.ravel()], order=1)
        .reshape(len(radii), -1)
        .mean(1)
    )
    template = np.interp(rho, radii, profile).astype(np.float32)
    template[rho > half] = profile[-1]
    return template - template.mean()


def template_score_map(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Cross-correlation of the standardized micrograph with a zero-mean template (H, W) float32."""
    image = _standardized(image)
    template = np.asarray(template, dtype=np.float32)
    template = template - template.mean()
    norm = float(np.sqrt((template**2).sum()))
    if norm == 0:
        raise InputError("template is constant", where="template")
    height, width = image.shape
    th, tw = template.shape
    shape = (height + th, width + tw)
    kernel = np.zeros(shape, dtype=np.float32)
    kernel[:th, :tw] = template[::-1, ::-1]
    kernel = np.roll(kernel, (-(th // 2), -(tw // 2)), axis=(0, 1))
    padded = np.zeros(shape, dtype=np.float32)
    padded[:height, :width] = image
    out = sfft.irfft2(sfft.rfft2(padded) * sfft.rfft2(kernel), s=shape)[:height, :width]
    return (out / norm).astype(np.float32)


def pick_with_score_maps(
    score_maps: dict[str, np.ndarray], nms_radius_px: float, border_px: float = 0.0
) -> pd.DataFrame:
    """Non-maximum suppression on each score map: DataFrame[micrograph, x, y, score]."""
    from topaz_lightning.picking.pick import picks_from_score_map

    frames = []
    for name, score_map in score_maps.items():
        score_map = np.array(score_map, dtype=np.float32)
        if border_px > 0:
            b = int(math.ceil(border_px))
            score_map[:b] = -np.inf
            score_map[-b:] = -np.inf
            score_map[:, :b] = -np.inf
            score_map[:, -b:] = -np.inf
        frames.append(picks_from_score_map(name, score_map, nms_radius_px))
    if not frames:
        return pd.DataFrame({"micrograph": [], "x": [], "y": [], "score": []})
    return pd.concat(frames, ignore_index=True)


def dog_picks(
    images: dict[str, np.ndarray], radius_px: float, nms_radius_px: float, ratio: float = 1.6
) -> pd.DataFrame:
    """Difference-of-Gaussians picks on each micrograph (score = DoG response)."""
    maps = {name: dog_score_map(image, radius_px, ratio) for name, image in images.items()}
    return pick_with_score_maps(maps, nms_radius_px, border_px=radius_px)


def template_picks(
    images: dict[str, np.ndarray], template: np.ndarray, nms_radius_px: float
) -> pd.DataFrame:
    """Template-matching picks on each micrograph (score = cross-correlation)."""
    maps = {name: template_score_map(image, template) for name, image in images.items()}
    return pick_with_score_maps(maps, nms_radius_px, border_px=template.shape[0] / 4)


def average_precision(picks: pd.DataFrame, truth: pd.DataFrame, max_distance: float) -> float:
    """AUPR of scored picks against complete truth (``topaz_lightning.metrics.evaluate_picks``)."""
    from topaz_lightning.metrics import evaluate_picks

    return float(evaluate_picks(picks, truth, max_distance).aupr)
