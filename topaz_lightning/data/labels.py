"""Positive-region labels: which patch centres lie within the label radius (model pixels) of a labeled particle."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from topaz_lightning.geometry import disk_offsets


def particle_pixels(xy: np.ndarray) -> np.ndarray:
    """Snap particle coordinates ``(x, y)`` to their pixel: returns integer ``(row, col)``, shape (n, 2).

    A coordinate is a pixel centre (``image[0, 0]`` is at ``(0, 0)``), so the particle's pixel is
    the nearest integer position (halves round to even, as ``numpy.rint``).
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return np.rint(xy[:, ::-1]).astype(np.int64)


def positive_mask(shape: tuple[int, int], xy: np.ndarray, radius_px_model: float) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the positive regions (patch centres) of the given particles.

    A region is identified with the pixel at its patch centre. Each particle coordinate ``(x, y)``
    is snapped to its pixel (``particle_pixels``), and every pixel within ``radius_px_model``
    (Euclidean distance ``<=``) of it is positive, so one particle away from the border marks
    exactly ``geometry.disk_area(radius_px_model)`` pixels (29 at r=3, 49 at r=4). Disks are clipped at the image
    border; overlapping disks are merged (the mask is their union).
    """
    height, width = int(shape[0]), int(shape[1])
    mask = np.zeros((height, width), dtype=bool)
    centres = particle_pixels(xy)
    if len(centres) == 0:
        return mask
    offsets = disk_offsets(radius_px_model)
    # (n, 1, 2) + (1, k, 2): every disk pixel of every particle, no per-pixel loop
    pixels = (centres[:, None, :] + offsets[None, :, :]).reshape(-1, 2)
    inside = (
        (pixels[:, 0] >= 0) & (pixels[:, 0] < height) & (pixels[:, 1] >= 0) & (pixels[:, 1] < width)
    )
    pixels = pixels[inside]
    mask[pixels[:, 0], pixels[:, 1]] = True
    return mask


def positive_masks(
    shapes: Mapping[str, tuple[int, int]], coordinates: pd.DataFrame, radius_px_model: float
) -> dict[str, np.ndarray]:
    """:func:`positive_mask` per micrograph: ``{name: mask}`` for every name in ``shapes``.

    ``coordinates`` is a table with columns micrograph, x, y; micrographs without a row get an
    all-False mask, rows of micrographs not in ``shapes`` are ignored.
    """
    micrograph = coordinates["micrograph"].astype(str)
    groups = {n: g for n, g in coordinates.groupby(micrograph, sort=False)}
    out = {}
    for name, shape in shapes.items():
        g = groups.get(name)
        xy = np.zeros((0, 2)) if g is None else g[["x", "y"]].to_numpy(dtype=np.float64)
        out[name] = positive_mask(tuple(shape), xy, radius_px_model)
    return out
