"""Picking: dense scoring of micrographs, greedy non-maximum suppression, threshold choice."""

# the one threshold-at-recall function lives with the PR curve (metrics/pr.py)
from topaz_lightning.metrics.pr import threshold_for_recall
from topaz_lightning.picking.nms import NMS_BOUNDARIES, disk_rows, non_maximum_suppression
from topaz_lightning.picking.pick import (
    PICK_COLUMNS,
    logit,
    pick_micrographs,
    picks_from_score_map,
    sigmoid,
)
from topaz_lightning.picking.scoring import resolve_device, score_micrograph, score_micrographs

__all__ = [
    "NMS_BOUNDARIES",
    "PICK_COLUMNS",
    "disk_rows",
    "logit",
    "non_maximum_suppression",
    "pick_micrographs",
    "picks_from_score_map",
    "resolve_device",
    "score_micrograph",
    "score_micrographs",
    "sigmoid",
    "threshold_for_recall",
]
