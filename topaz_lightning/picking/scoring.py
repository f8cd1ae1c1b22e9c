"""Scoring whole micrographs with a trained region classifier: dense, coarse-to-fine or strided, optional 8-fold TTA."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.models.base import laid_out
from topaz_lightning.picking.coarse import (
    check_tta,
    coarse_to_fine_score_map,
    dense_logits,
)
from topaz_lightning.picking.strided import strided_picks

#: ``dense``: every pixel (the exact reference); ``coarse_to_fine``: picking.coarse;
#: ``strided``: the native stride, picks refined on real pixels (picking.strided)
SCORING_METHODS = ("dense", "coarse_to_fine", "strided")
#: default flood-fill level (logit) of coarse_to_fine when the pick threshold is -inf: picks
#: scoring at least this are exactly the dense ones (docs/picking_evaluation.md)
DEFAULT_LEVEL = -2.0
#: coarse_to_fine also seeds tiles whose coarse samples reach level - margin: strided networks'
#: dense maps carry phase-dependent spikes between the samples; 2 logits was needed on the
#: simulated demo model for exact picks above level 0 (docs/picking_evaluation.md)
DEFAULT_SEED_MARGIN = 2.0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available else CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA was requested but no GPU is available")
    return device


def scoring_level(level: float | None, threshold: float = -math.inf) -> float:
    """The coarse_to_fine level for a pick ``threshold``: the threshold itself when it is finite
    (exact picks above it, no work below it), else ``level`` (None: DEFAULT_LEVEL)."""
    if threshold is not None and math.isfinite(threshold):
        return float(threshold)
    if threshold == math.inf:
        return math.inf
    return DEFAULT_LEVEL if level is None else float(level)


def check_scoring(scoring: str) -> str:
    """``scoring`` if it is one of SCORING_METHODS, else ConfigError."""
    if scoring not in SCORING_METHODS:
        raise ConfigError("scoring", f"must be one of {SCORING_METHODS}, got {scoring!r}")
    return scoring


def score_micrographs(
    net: nn.Module,
    images: Mapping[str, np.ndarray],
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    tile_size: int | None = 1024,
    *,
    scoring: str = "dense",
    tta: int = 1,
    level: float | None = None,
    threshold: float = -math.inf,
    fine_tile: int = 16,
    seed_margin: float = DEFAULT_SEED_MARGIN,
    radius_px_model: float | None = None,
    nms_boundary: str = "keep",
    refine: str = "window",
    memory_format: str = "auto",
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, score_map)`` (float32 logits, same shape as the image) for every micrograph.

    ``scoring="dense"``: every pixel; micrographs of equal shape are scored ``batch_size`` at a
    time with ``net.score_map``; ``tile_size`` bounds memory (results are identical).
    ``scoring="coarse_to_fine"`` (:mod:`topaz_lightning.picking.coarse`): exact scores in the
    regions at or above :func:`scoring_level` ``(level, threshold)``, ``-inf`` at unscored
    pixels (the map is for NMS; ``fill_unscored`` makes a picture of it); NMS with
    ``threshold`` then gives the dense picks scoring at least that level. ``tta=8`` averages
    the logits over the 8 rotations/mirrors (8x the cost). The net runs in eval mode without
    gradients; its train/eval state is restored after.
    ``scoring="strided"`` (:mod:`topaz_lightning.picking.strided`, needs ``radius_px_model``,
    the NMS radius): ``-inf`` except at the strided picks (NMS radius ``radius_px_model``,
    ``nms_boundary``, ``refine``, ``threshold``), which hold their scores (centroid
    positions rounded to the pixel), so NMS with radius 0 on the map returns exactly them.
    For picking, call :func:`topaz_lightning.picking.predict.pick_micrograph` instead (no
    full-size map). ``memory_format``: the weights' layout while scoring
    (:func:`topaz_lightning.models.base.laid_out`; auto: channels_last on the CPU).
    """
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
    check_scoring(scoring)
    tta = check_tta(tta)
    if scoring == "coarse_to_fine":
        batch_size = 1  # each micrograph scores its own tiles
        level = scoring_level(level, threshold)
    if scoring == "strided":
        batch_size = 1
        if radius_px_model is None:
            raise ConfigError("radius_px_model", "scoring=strided needs the NMS radius (model px)")
    device = resolve_device(device)
    was_training = net.training
    net.eval()
    try:
        scorer = laid_out(net, memory_format, device.type)
        names = list(images)
        i = 0
        while i < len(names):
            shape = np.shape(images[names[i]])
            group = [names[i]]
            while (
                len(group) < batch_size
                and i + len(group) < len(names)
                and np.shape(images[names[i + len(group)]]) == shape
            ):
                group.append(names[i + len(group)])
            i += len(group)
            batch = np.stack([np.asarray(images[n], dtype=np.float32) for n in group])[:, None]
            with torch.inference_mode():
                tensor = torch.from_numpy(batch).to(device)
                if scoring == "coarse_to_fine":
                    result = coarse_to_fine_score_map(
                        scorer, tensor[0, 0], level, fine_tile, tta, seed_margin=seed_margin
                    )
                    logits = result.score_map[None]
                elif scoring == "strided":
                    picks = strided_picks(
                        scorer,
                        tensor[0, 0],
                        radius_px_model,
                        threshold,
                        boundary=nms_boundary,
                        refine=refine,
                        tta=tta,
                    )
                    sparse = np.full(tensor.shape[-2:], -np.inf, dtype=np.float32)
                    xs, ys = np.rint(picks.xy).astype(np.int64).T
                    sparse[ys, xs] = picks.scores
                    logits = sparse[None]
                else:
                    logits = dense_logits(scorer, tensor, tile_size, tta).float().cpu().numpy()
            yield from zip(group, logits, strict=True)
    finally:
        net.train(was_training)


def score_micrograph(
    net: nn.Module,
    image: np.ndarray,
    device: str | torch.device = "cpu",
    tile_size: int | None = 1024,
    **scoring,
) -> np.ndarray:
    """Logits (H, W) float32 for one micrograph (H, W); keyword options (``scoring``, ``tta``,
    ``level``, ``threshold``, ``fine_tile``, ``seed_margin``, ``radius_px_model``,
    ``nms_boundary``, ``refine``) as in :func:`score_micrographs`."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(
            f"expected a 2-D micrograph (H, W), got shape {image.shape}", where="image"
        )
    ((_, score_map),) = list(score_micrographs(net, {"_": image}, device, 1, tile_size, **scoring))
    return score_map


def fill_unscored(score_map: np.ndarray) -> np.ndarray:
    """A coarse_to_fine map for pictures and MRC files: each ``-inf`` (unscored) pixel takes the
    score of the nearest scored pixel (not for NMS: only the sparse map keeps the guarantee)."""
    from scipy.ndimage import distance_transform_edt

    score_map = np.asarray(score_map, dtype=np.float32)
    unscored = ~np.isfinite(score_map)
    if not unscored.any() or unscored.all():
        return score_map.copy()
    _, (iy, ix) = distance_transform_edt(unscored, return_indices=True)
    return score_map[iy, ix]
