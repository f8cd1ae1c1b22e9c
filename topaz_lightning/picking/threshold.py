"""The logit threshold ``tzl-pick`` keeps picks above: given as a logit, as a probability, or as
the threshold that reaches a target recall on a stored ``tzl-evaluate`` PR curve."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

from topaz_lightning.errors import ConfigError, InputError, check_number
from topaz_lightning.metrics.pr import threshold_for_recall


def choose_threshold(cfg) -> tuple[float, str]:
    """(logit threshold, the key it came from) from ``threshold``, ``threshold_probability`` or
    ``target_recall``; (-inf, "none") when none is set."""
    from topaz_lightning.picking.pick import logit  # pick.py imports torch: only when asked

    given = [
        k for k in ("threshold", "threshold_probability", "target_recall") if cfg.get(k) is not None
    ]
    if len(given) > 1:
        raise ConfigError(
            given[1],
            f"set only one of threshold, threshold_probability, target_recall (got {given})",
        )
    if not given:
        return -math.inf, "none"
    if given[0] == "threshold":
        return check_number("threshold", cfg.threshold, None), "threshold"
    if given[0] == "threshold_probability":
        return logit(float(cfg.threshold_probability)), "threshold_probability"
    if not cfg.get("recall_metrics"):
        raise ConfigError(
            "recall_metrics",
            "target_recall needs the metrics JSON of tzl-evaluate (with its curve)",
        )
    return threshold_from_metrics(cfg.recall_metrics, float(cfg.target_recall)), "target_recall"


def threshold_from_metrics(path, target_recall: float) -> float:
    """Threshold reaching ``target_recall`` on the PR curve stored in a tzl-evaluate metrics JSON."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
        raise InputError(f"cannot read metrics JSON ({err})", path=path) from err
    curve = data.get("curve") if isinstance(data, dict) else None
    if not isinstance(curve, dict) or not {"threshold", "recall"} <= set(curve):
        raise InputError(
            "no PR curve in the metrics file (run tzl-evaluate with include_curve=true)",
            path=path,
            where="curve",
        )
    ev = SimpleNamespace(recall=curve["recall"], thresholds=curve["threshold"])
    threshold = threshold_for_recall(ev, target_recall)
    logging.getLogger("topaz_lightning").info(
        "threshold %.4f reaches recall %.3f on %s", threshold, target_recall, path
    )
    return threshold
