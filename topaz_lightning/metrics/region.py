"""Region-level classification AUPR on dense score maps (the paper's Supplementary Table 1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch


def _flat(values, dtype) -> torch.Tensor:
    if isinstance(values, Mapping):
        values = list(values.values())
    if isinstance(values, (list, tuple)):
        parts = [_flat(v, dtype) for v in values]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)
    if isinstance(values, torch.Tensor):
        return values.detach().reshape(-1).to("cpu", dtype)
    return torch.as_tensor(np.asarray(values)).reshape(-1).to(dtype)


def region_aupr(logits, labels, thresholds: int | None = None) -> float:
    """Average precision of per-region scores against positive-region labels, via torchmetrics.

    ``logits`` and ``labels`` are arrays/tensors of equal size (e.g. dense score maps and their
    boolean positive masks) or equal-length lists/dicts of them (pooled). ``thresholds=None``
    computes the exact step-wise average precision (torchmetrics ``BinaryAveragePrecision``);
    an integer uses that many bins to bound memory on very large inputs. NaN if no positive.
    """
    from torchmetrics.classification import BinaryAveragePrecision

    scores = _flat(logits, torch.float64)
    target = _flat(labels, torch.int64)
    if scores.shape != target.shape:
        raise ValueError(f"logits ({scores.numel()}) and labels ({target.numel()}) differ in size")
    if target.numel() == 0 or int(target.sum()) == 0:
        return float("nan")
    # torchmetrics applies a sigmoid to inputs outside [0, 1], which in float32 merges logits
    # above ~17 into ties; map scores to their rank in [0, 1] instead (same order, same ties)
    values, rank = torch.unique(scores.double(), return_inverse=True)
    unit = rank.double() / max(values.numel() - 1, 1)
    metric = BinaryAveragePrecision(thresholds=thresholds)
    return float(metric(unit, target))


def region_labels(
    shapes: Mapping[str, tuple[int, int]], truth_df: pd.DataFrame, radius_px: float
) -> dict[str, np.ndarray]:
    """Positive-region masks per micrograph: pixels within ``radius_px`` (<=) of a true particle.

    The labels of :func:`topaz_lightning.data.labels.positive_masks` (the training labels).
    """
    from topaz_lightning.data.labels import positive_masks

    return positive_masks(shapes, truth_df, radius_px)


def region_aupr_maps(
    score_maps: Mapping[str, np.ndarray],
    truth_df: pd.DataFrame,
    radius_px: float,
    names: Sequence[str] | None = None,
) -> float:
    """Region AUPR pooled over ``score_maps`` with labels from ``truth_df`` (see region_labels)."""
    names = list(score_maps) if names is None else list(names)
    maps = {n: score_maps[n] for n in names}
    masks = region_labels({n: np.shape(m) for n, m in maps.items()}, truth_df, radius_px)
    return region_aupr([maps[n] for n in names], [masks[n] for n in names])
