"""The held-out picking callback's work as plain functions: pick a shard with tzl-pick's pipeline, merge the ranks' shards, compute the metrics."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from pytorch_lightning.utilities import rank_zero_warn

from topaz_lightning.metrics import RECALL_LEVELS
from topaz_lightning.picking import PICK_COLUMNS
from topaz_lightning.picking.predict import pick_micrograph
from topaz_lightning.picking.settings import PickSettings

__all__ = ["ShardResult", "pick_shard", "merge_shards", "compute_metrics"]


# each rank runs pick_shard; everything else is rank-agnostic


@dataclass
class ShardResult:
    """What one rank found on its share of the held-out micrographs.

    ``picks`` is a DataFrame[micrograph, x, y, score] (model frame) of every pick;
    ``region_logits`` and ``region_labels`` hold, per micrograph, the flattened dense logits and
    the positive-region mask (only when region AUPR is computed); ``names`` lists the
    micrographs picked.
    """

    names: list[str] = field(default_factory=list)
    picks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PICK_COLUMNS))
    region_logits: list[np.ndarray] = field(default_factory=list)
    region_labels: list[np.ndarray] = field(default_factory=list)


def pick_shard(
    net: torch.nn.Module,
    micrographs: Mapping[str, np.ndarray],
    coordinates: pd.DataFrame,
    names: Sequence[str],
    settings: PickSettings,
    region_radius_px_model: float | None = None,
    device: str | torch.device = "cpu",
    keep_maps: Iterable[str] = (),
) -> tuple[ShardResult, dict[str, np.ndarray]]:
    """Pick ``names`` with :func:`~topaz_lightning.picking.predict.pick_micrograph` (tzl-pick's
    pipeline, ``settings`` as given) and, with ``region_radius_px_model``, collect region logits
    and labels (every pixel, no mask; :func:`topaz_lightning.metrics.region_labels`).

    Returns the shard result and the score maps (logits) of the micrographs in ``keep_maps``.
    """
    from topaz_lightning.metrics import region_labels
    from topaz_lightning.picking.scoring import score_micrograph

    keep = set(keep_maps)
    # region AUPR and pictures need the dense map: a dense pick keeps it; other scorings (the
    # strided default) pick as tzl-pick does and the map is scored densely beside
    dense = settings.scoring == "dense"
    with_map = settings.replace(keep_score_map=True) if dense else settings
    result = ShardResult(names=list(names))
    tables, maps = [], {}
    for name in names:
        needs_map = region_radius_px_model is not None or name in keep
        picked = pick_micrograph(
            net, micrographs[name], with_map if needs_map else settings, name, device
        )
        tables.append(picked.picks)
        score_map = picked.score_map
        if needs_map and not dense:
            score_map = score_micrograph(
                net,
                micrographs[name],
                device=device,
                tile_size=settings.tile_size,
                tta=settings.tta,
            )
        if region_radius_px_model is not None:
            shape = {name: score_map.shape}
            mask = region_labels(shape, coordinates, region_radius_px_model)[name]
            result.region_logits.append(score_map.reshape(-1))
            result.region_labels.append(mask.reshape(-1))
        if name in keep:
            maps[name] = score_map
    nonempty = [t for t in tables if len(t)]
    if nonempty:
        result.picks = pd.concat(nonempty, ignore_index=True)
    return result, maps


def merge_shards(shards: Sequence[ShardResult]) -> ShardResult:
    """Combine the ranks' results into one, in micrograph-name order (independent of sharding)."""
    names = sorted(n for s in shards for n in s.names)
    if len(set(names)) != len(names):
        raise ValueError("a micrograph was picked by more than one rank")
    tables = [s.picks for s in shards if len(s.picks)]
    picks = pd.DataFrame(columns=PICK_COLUMNS)
    if tables:
        picks = pd.concat(tables, ignore_index=True)
        picks = picks.sort_values(["micrograph", "score"], ascending=[True, False], kind="stable")
        picks = picks.reset_index(drop=True)
    pairs = {}
    for s in shards:
        pairs.update(zip(s.names, zip(s.region_logits, s.region_labels, strict=True), strict=False))
    ordered = [pairs[n] for n in names if n in pairs]
    return ShardResult(names, picks, [p[0] for p in ordered], [p[1] for p in ordered])


def compute_metrics(
    merged: ShardResult, coordinates: pd.DataFrame, match_distance_px_model: float
) -> tuple[dict[str, float], Any]:
    """Metrics of the merged picks against the truth of the picked micrographs.

    Returns ``({"val/aupr": ..., "val/precision@0.9": ..., ...}, PickEvaluation)``.
    ``val/precision@0.9`` is 0.0 when 0.9 recall is never reached; the other recall levels are
    present only when reached. ``val/region_aupr`` is present when the shard carried region
    logits and labels with at least one positive.
    """
    from topaz_lightning.metrics import evaluate_picks, region_aupr

    truth = coordinates[coordinates["micrograph"].isin(merged.names)].reset_index(drop=True)
    # naming the micrographs makes picks on a held-out micrograph without particles count as
    # false positives instead of being dropped
    evaluation = evaluate_picks(
        merged.picks, truth, match_distance_px_model, micrographs=merged.names
    )
    aupr = evaluation.aupr
    if aupr is None or not math.isfinite(float(aupr)):
        rank_zero_warn("HeldOutPicking: AUPR undefined (no true particles?); logging NaN")
        aupr = math.nan
    metrics: dict[str, float] = {"val/aupr": float(aupr)}
    for level in RECALL_LEVELS:
        value = evaluation.precision_at_recall.get(level)
        if value is not None and math.isfinite(float(value)):
            metrics[f"val/precision@{level:g}"] = float(value)
        elif level == 0.9:
            metrics["val/precision@0.9"] = 0.0
    best_f1 = getattr(evaluation, "best_f1", None)
    if best_f1 is not None and math.isfinite(float(best_f1)):
        metrics["val/best_f1"] = float(best_f1)
    if merged.region_logits:
        value = region_aupr(merged.region_logits, merged.region_labels)  # NaN without a positive
        if math.isfinite(value):
            metrics["val/region_aupr"] = value
    return metrics, evaluation
