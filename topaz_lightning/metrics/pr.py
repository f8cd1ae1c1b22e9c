"""Precision-recall evaluation of scored picks against true particles: curve, AUPR, P@R, best F1."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.metrics._renamed import accept_renamed_keywords
from topaz_lightning.metrics.matching import match_picks

log = logging.getLogger(__name__)

#: Recall levels reported by the paper's tables.
RECALL_LEVELS = (0.25, 0.5, 0.75, 0.9)


def threshold_for_recall(evaluation, target_recall: float) -> float:
    """Score threshold whose picks reach ``target_recall`` on validation data.

    The one threshold-at-recall function (tzl-pick ``target_recall``, metrics.json's
    ``threshold_at_recall``). ``evaluation`` is a :class:`PickEvaluation` (or anything with
    ``recall`` and ``thresholds`` arrays, thresholds descending). Let ``t_k`` be the highest curve
    threshold reaching the recall; the value returned lies halfway between ``t_k`` and the next
    lower curve threshold (or just below ``t_k`` at the end of the curve), so keeping picks with
    ``score >= threshold`` reproduces the validation recall even when the scores were rounded
    when the validation picks were written to a file. Raises ConfigError if never reached.
    """
    if not 0.0 < target_recall <= 1.0:
        raise ConfigError("target_recall", f"must lie in (0, 1], got {target_recall}")
    recall = np.asarray(evaluation.recall, dtype=np.float64)
    thresholds = np.asarray(evaluation.thresholds, dtype=np.float64)
    reached = np.flatnonzero(recall >= target_recall - 1e-12)
    if reached.size == 0:
        best = float(recall.max()) if recall.size else 0.0
        raise ConfigError(
            "target_recall", f"recall {target_recall} is never reached (the maximum is {best:.3f})"
        )
    k = int(reached[0])
    if k + 1 < thresholds.size:
        return float((thresholds[k] + thresholds[k + 1]) / 2)
    return float(thresholds[k] - 1e-6 * max(1.0, abs(thresholds[k])))


@dataclass
class PickEvaluation:
    """Pooled precision-recall evaluation of picks over a set of micrographs.

    The curve has one point per distinct score threshold ``t`` (descending): the picks with
    ``score >= t``. ``precision = TP / (TP + FP)``, ``recall = TP / n_true``, where ``n_true``
    counts every true particle of the evaluated micrographs (unreachable ones included).
    ``aupr`` is the step-wise average precision ``sum_k (recall_k - recall_{k-1}) * precision_k``
    (recall_0 = 0) over those points, without interpolation; with no tied scores this is the sum
    of the precision at the rank of every true positive divided by ``n_true``.
    ``precision_at_recall[r]`` is the highest precision at any threshold whose recall is
    ``>= r`` (None when the picks never reach recall ``r``).
    """

    aupr: float | None
    precision_at_recall: dict[float, float | None]
    best_f1: float | None
    best_f1_threshold: float | None
    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    n_true: int
    n_pred: int
    n_matched: int
    #: the match distance, in the pixels of the evaluated coordinates
    max_distance_px: float
    n_micrographs: int
    picks: pd.DataFrame | None = field(default=None, repr=False)
    """The evaluated picks with columns micrograph, x, y, score, ``matched`` (bool), ``truth``
    (row of the matched true particle in that micrograph's truth table, -1 if none)."""
    matching: str = "distance"

    def as_dict(self, include_curve: bool = False) -> dict:
        """JSON-ready summary (``include_curve`` adds the precision/recall/threshold arrays)."""
        out = {
            "aupr": self.aupr,
            "precision_at_recall": {str(k): v for k, v in self.precision_at_recall.items()},
            # the threshold tzl-pick's target_recall would use (None: recall never reached)
            "threshold_at_recall": {
                str(k): (
                    threshold_for_recall(self, k)
                    if float(np.max(self.recall, initial=0.0)) >= k - 1e-12
                    else None
                )
                for k in self.precision_at_recall
            },
            "best_f1": self.best_f1,
            "best_f1_threshold": self.best_f1_threshold,
            "n_true": self.n_true,
            "n_pred": self.n_pred,
            "n_matched": self.n_matched,
            "max_distance_px": self.max_distance_px,
            "n_micrographs": self.n_micrographs,
            "matching": self.matching,
            "aupr_definition": "step-wise average precision: sum_k (R_k - R_{k-1}) * P_k over "
            "distinct score thresholds, no interpolation; recall denominator = all true particles",
        }
        if include_curve:
            out["curve"] = {
                "threshold": [float(v) for v in self.thresholds],
                "precision": [float(v) for v in self.precision],
                "recall": [float(v) for v in self.recall],
            }
        return out

    def table(self, label: str = "picks") -> str:
        """The paper's table row (AUPR, precision at recall levels) as aligned text."""
        return format_table({label: self})

    def __str__(self) -> str:
        return self.table()


def _fmt(value: float | None, digits: int = 3) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def format_table(evaluations: Mapping[str, PickEvaluation]) -> str:
    """Aligned text table, one row per evaluation: AUPR, P@R, best F1 and threshold, counts."""
    levels = sorted({r for ev in evaluations.values() for r in ev.precision_at_recall})
    header = ["run", "AUPR"] + [f"P@R{r:g}" for r in levels]
    header += ["best F1", "F1 thresh", "n_true", "n_pred", "matched"]
    rows = [header]
    for label, ev in evaluations.items():
        rows.append(
            [str(label), _fmt(ev.aupr)]
            + [_fmt(ev.precision_at_recall.get(r)) for r in levels]
            + [
                _fmt(ev.best_f1),
                _fmt(ev.best_f1_threshold, 2),
                str(ev.n_true),
                str(ev.n_pred),
                str(ev.n_matched),
            ]
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if c else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(lines)


def precision_recall_curve(
    scores: np.ndarray,
    is_tp: np.ndarray,
    n_true: int,
    recall_levels: Iterable[float] = RECALL_LEVELS,
) -> PickEvaluation:
    """PR curve and summary numbers from per-pick scores and true-positive flags (pooled)."""
    scores = np.asarray(scores, dtype=np.float64)
    is_tp = np.asarray(is_tp, dtype=bool)
    if scores.shape != is_tp.shape:
        raise ValueError("scores and is_tp must have the same length")
    if np.isnan(scores).any():
        raise InputError("pick scores contain NaN", where="score")
    order = np.argsort(-scores, kind="stable")
    s, tp = scores[order], is_tp[order]
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    # one point per distinct threshold: the last pick of each run of equal scores
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if s.size else np.zeros(0, np.int64)
    tp_k, fp_k = ctp[last].astype(np.float64), cfp[last].astype(np.float64)
    precision = tp_k / np.maximum(tp_k + fp_k, 1)
    recall = tp_k / n_true if n_true > 0 else np.zeros_like(tp_k)
    thresholds = s[last]
    levels = tuple(recall_levels)
    n_matched = int(is_tp.sum())
    if n_true == 0:
        aupr, pat, best_f1, best_t = None, {r: None for r in levels}, None, None
    else:
        aupr = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
        pat = {}
        for r in levels:
            ok = recall >= r - 1e-12
            pat[r] = float(precision[ok].max()) if ok.any() else None
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
        if f1.size:
            k = int(np.argmax(f1))
            best_f1, best_t = float(f1[k]), float(thresholds[k])
        else:
            best_f1, best_t = 0.0, None
    return PickEvaluation(
        aupr=aupr,
        precision_at_recall=pat,
        best_f1=best_f1,
        best_f1_threshold=best_t,
        precision=precision,
        recall=recall,
        thresholds=thresholds,
        n_true=int(n_true),
        n_pred=int(scores.size),
        n_matched=n_matched,
        max_distance_px=math.nan,
        n_micrographs=0,
    )


def _check_table(df: pd.DataFrame, name: str, need_score: bool) -> pd.DataFrame:
    source = df.attrs.get("source", name) if hasattr(df, "attrs") else name
    need = ["micrograph", "x", "y"] + (["score"] if need_score else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{name} table lacks column(s) {missing}", path=source)
    out = df.copy()
    out["micrograph"] = out["micrograph"].astype(str)
    for c in need[1:]:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(np.float64)
        if not np.isfinite(out[c]).all():
            bad = int(np.flatnonzero(~np.isfinite(out[c].to_numpy()))[0])
            raise InputError(
                f"{name} table has a non-numeric or non-finite {c}", path=source, where=f"row {bad}"
            )
    return out


@accept_renamed_keywords
def evaluate_picks(
    picks_df: pd.DataFrame,
    truth_df: pd.DataFrame,
    max_distance_px: float,
    micrographs: Iterable[str] | None = None,
    recall_levels: Iterable[float] = RECALL_LEVELS,
    matching: str = "distance",
    match_boundary: str = "inclusive",
) -> PickEvaluation:
    """Match picks to true particles per micrograph, then pool into one precision-recall curve.

    ``picks_df`` has columns micrograph, x, y, score; ``truth_df`` micrograph, x, y (same pixel
    size; ``max_distance_px`` in those pixels, ``max_distance=`` still works with a
    DeprecationWarning). Evaluated micrographs: ``micrographs`` when given (picks and particles elsewhere are
    dropped; a listed micrograph without particles makes its picks false positives), else every
    micrograph of ``truth_df`` (picks on micrographs absent from it are dropped with a warning,
    since unannotated micrographs cannot tell true from false). Matching: :func:`match_picks`
    with ``method=matching`` (``distance``: the paper's; ``score``: greedy by score) and
    ``boundary=match_boundary`` (``inclusive``: pairs at exactly ``max_distance_px`` match;
    ``exclusive``: they do not, Topaz's convention).
    """
    picks = _check_table(picks_df, "picks", need_score=True)
    truth = _check_table(truth_df, "truth", need_score=False)
    if micrographs is not None:
        names = list(dict.fromkeys(str(m) for m in micrographs))
    else:
        names = list(dict.fromkeys(truth["micrograph"]))
        dropped = ~picks["micrograph"].isin(names)
        if dropped.any():
            others = sorted(set(picks.loc[dropped, "micrograph"]))
            log.warning(
                "ignoring %d picks on %d micrograph(s) without true particles (e.g. %s)",
                int(dropped.sum()),
                len(others),
                others[0],
            )
    picks = picks[picks["micrograph"].isin(names)].reset_index(drop=True)
    truth = truth[truth["micrograph"].isin(names)].reset_index(drop=True)
    matched = np.zeros(len(picks), dtype=bool)
    truth_row = np.full(len(picks), -1, dtype=np.int64)
    truth_groups = {n: g for n, g in truth.groupby("micrograph", sort=False)}
    for name, group in picks.groupby("micrograph", sort=False):
        if name not in truth_groups:
            continue
        t = truth_groups[name]
        m = match_picks(
            group[["x", "y"]].to_numpy(),
            t[["x", "y"]].to_numpy(),
            max_distance_px,
            scores=group["score"].to_numpy(),
            method=matching,
            boundary=match_boundary,
        )
        rows = group.index.to_numpy()
        matched[rows] = m >= 0
        truth_row[rows] = m
    ev = precision_recall_curve(picks["score"].to_numpy(), matched, len(truth), recall_levels)
    ev.max_distance_px = float(max_distance_px)
    ev.n_micrographs = len(names)
    ev.matching = matching
    ev.picks = picks.assign(matched=matched, truth=truth_row)
    return ev
