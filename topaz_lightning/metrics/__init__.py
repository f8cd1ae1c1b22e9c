"""Evaluation: one-to-one matching of picks to particles, precision-recall, AUPR, region AUPR."""

from topaz_lightning.metrics.matching import candidate_pairs, match_picks, matched_distances
from topaz_lightning.metrics.pr import (
    RECALL_LEVELS,
    PickEvaluation,
    evaluate_picks,
    format_table,
    precision_recall_curve,
    threshold_for_recall,
)
from topaz_lightning.metrics.region import region_aupr, region_aupr_maps, region_labels

#: the name docs/architecture.md uses
precision_recall = precision_recall_curve

__all__ = [
    "RECALL_LEVELS",
    "PickEvaluation",
    "candidate_pairs",
    "evaluate_picks",
    "format_table",
    "match_picks",
    "matched_distances",
    "precision_recall",
    "precision_recall_curve",
    "region_aupr",
    "region_aupr_maps",
    "region_labels",
    "threshold_for_recall",
]
