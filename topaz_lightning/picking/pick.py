"""Micrographs -> particle coordinates: dense scoring, non-maximum suppression and threshold choice."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from topaz_lightning.errors import ConfigError
from topaz_lightning.geometry import coordinates_to_micrograph_frame
from topaz_lightning.picking.nms import non_maximum_suppression
from topaz_lightning.picking.scoring import score_micrographs

PICK_COLUMNS = ["micrograph", "x", "y", "score"]


def logit(probability: float) -> float:
    """log(p / (1 - p)): the logit score threshold equal to a probability threshold."""
    if not 0.0 <= probability <= 1.0:
        raise ConfigError("threshold_probability", f"must lie in [0, 1], got {probability}")
    if probability == 0.0:
        return -math.inf
    if probability == 1.0:
        return math.inf
    return math.log(probability) - math.log1p(-probability)


def sigmoid(scores: np.ndarray) -> np.ndarray:
    """Probability from logit scores (float64; no overflow warning for very negative logits)."""
    from scipy.special import expit

    return expit(np.asarray(scores, dtype=np.float64))


def picks_from_score_map(
    name: str,
    score_map: np.ndarray,
    radius: float,
    threshold: float = -math.inf,
    max_picks: int | None = None,
    downsample: float = 1.0,
    nms_boundary: str = "keep",
) -> pd.DataFrame:
    """NMS on one score map -> DataFrame[micrograph, x, y, score].

    ``radius`` is in the score map's (model) pixels; ``x, y`` are returned in the micrograph frame
    of a run downsampled by ``downsample`` (:func:`geometry.coordinates_to_micrograph_frame`).

    ``nms_boundary``: ``keep`` (picks exactly ``radius`` apart are both kept) or ``suppress``
    (Topaz's convention), see :func:`non_maximum_suppression`."""
    xy, scores = non_maximum_suppression(
        score_map, radius, threshold, max_picks, boundary=nms_boundary
    )
    picks = pd.DataFrame(
        {
            "micrograph": np.full(len(scores), name, dtype=object),
            "x": xy[:, 0],
            "y": xy[:, 1],
            "score": scores,
        },
        columns=PICK_COLUMNS,
    )
    return coordinates_to_micrograph_frame(picks, downsample)


def pick_micrographs(
    net: nn.Module,
    images: Mapping[str, np.ndarray],
    radius: float,
    threshold: float = -math.inf,
    device: str | torch.device = "cpu",
    max_picks: int | None = None,
    downsample: float = 1.0,
    batch_size: int = 1,
    tile_size: int | None = 1024,
    on_score_map: Callable[[str, np.ndarray], None] | None = None,
    progress: bool = False,
    nms_boundary: str = "keep",
) -> pd.DataFrame:
    """Score every micrograph with ``net`` and extract picks by NMS.

    ``radius`` and ``threshold`` (a logit) apply in the pixels of ``images``; ``max_picks`` keeps
    the best ``k`` picks per micrograph (expected particles per micrograph); ``downsample`` is the
    factor ``images`` were downsampled by: picks are returned in the micrograph frame.
    ``on_score_map(name, score_map)`` sees every dense map (e.g. to save it). Returns
    DataFrame[micrograph, x, y, score] with ``score`` the logit, sorted by micrograph then score.
    """
    frames = []
    stream = score_micrographs(net, images, device, batch_size, tile_size)
    if progress:
        from tqdm.auto import tqdm

        stream = tqdm(stream, total=len(images), desc="picking", unit="micrograph")
    for name, score_map in stream:
        if on_score_map is not None:
            on_score_map(name, score_map)
        frames.append(
            picks_from_score_map(
                name,
                score_map,
                radius,
                threshold,
                max_picks,
                downsample=downsample,
                nms_boundary=nms_boundary,
            )
        )
    if not frames:
        return pd.DataFrame({c: [] for c in PICK_COLUMNS}).astype(
            {"micrograph": object, "x": float, "y": float, "score": float}
        )
    return pd.concat(frames, ignore_index=True)
