"""Precision-recall curves of several runs on one plot, with labelled operating points.

An operating point (a threshold, or the best k picks of each micrograph) is placed on a curve by
:func:`pr_point` from the evaluated picks and their ``matched`` flags, the same flags the curve
is drawn from, so the mark lies on the curve.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from topaz_lightning.errors import InputError
from topaz_lightning.plots.canvas import _new_figure, _render, _save
from topaz_lightning.utils.atomic import check_writable

#: markers of the operating points, in the order given
_MARKERS = ("o", "s", "^", "D", "v")

#: one operating point: (text, recall, precision)
Mark = tuple[str, float, float]


def pr_point(
    evaluation: Any,
    *,
    threshold: float | None = None,
    per_micrograph: int | Mapping[str, int] | None = None,
) -> tuple[float, float] | None:
    """(recall, precision) of the picks scoring >= ``threshold``, or of the best
    ``per_micrograph`` picks of each micrograph (one k for all, or ``{name: k}``); None when
    nothing is selected. Give exactly one. ``evaluation`` is a ``metrics.PickEvaluation``
    (its ``picks`` with ``micrograph``, ``score``, ``matched``, and ``n_true``)."""
    if (threshold is None) == (per_micrograph is None):
        raise InputError("give exactly one of threshold, per_micrograph", where="pr_point")
    picks = getattr(evaluation, "picks", None)
    n_true = int(getattr(evaluation, "n_true", 0) or 0)
    if picks is None or n_true <= 0 or len(picks) == 0:
        return None
    if threshold is not None:
        chosen = picks[picks["score"].to_numpy(dtype=np.float64) >= float(threshold)]
    else:
        ranked = picks.sort_values("score", ascending=False, kind="stable")
        rank = ranked.groupby(ranked["micrograph"].astype(str), sort=False).cumcount()
        names = ranked["micrograph"].astype(str)
        if isinstance(per_micrograph, Mapping):
            limit = names.map({str(k): int(v) for k, v in per_micrograph.items()}).fillna(0)
        else:
            limit = int(per_micrograph)
        chosen = ranked[rank.to_numpy() < np.asarray(limit)]
    if len(chosen) == 0:
        return None
    true_positives = int(chosen["matched"].to_numpy(dtype=bool).sum())
    return true_positives / n_true, true_positives / len(chosen)


def _draw_marks(ax: Any, marks: Sequence[Mark], color: Any) -> None:
    for k, (text, recall, precision) in enumerate(marks):
        marker = _MARKERS[k % len(_MARKERS)]
        ax.plot([recall], [precision], marker=marker, ms=7, mfc=color, mec="black", ls="",
                label=f"{text}: R {recall:.2f}, P {precision:.2f}", zorder=3)  # fmt: skip


def _pr_figure(
    curves: Mapping[str, Any],
    title: str | None,
    size_px: tuple[int, int],
    mark_recall: float | None,
    marks: Mapping[str, Sequence[Mark]] | None = None,
) -> Figure:
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise InputError("need a non-empty dict {label: PickEvaluation}", where="curves")
    fig = _new_figure(*size_px)
    ax = fig.add_axes((0.12, 0.11, 0.84, 0.80))
    for label, evaluation in curves.items():
        precision, recall, aupr = _pr_arrays(evaluation, str(label))
        # a step curve: precision is constant between consecutive recall values
        (line,) = ax.step(
            recall, precision, where="post", lw=1.5, label=f"{label} (AUPR {aupr:.3f})"
        )
        _draw_marks(ax, (marks or {}).get(label, ()), line.get_color())
    if mark_recall is not None:
        ax.axvline(mark_recall, color="0.6", ls=":", lw=1)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or "precision-recall of picked particles", fontsize=10)
    return fig


def _pr_arrays(evaluation: Any, label: str) -> tuple[np.ndarray, np.ndarray, float]:
    try:
        precision = np.asarray(evaluation.precision, dtype=np.float64).reshape(-1)
        recall = np.asarray(evaluation.recall, dtype=np.float64).reshape(-1)
        aupr = float(evaluation.aupr)
    except AttributeError as err:
        raise InputError(
            f"curve '{label}' is not a PickEvaluation (needs precision, recall, aupr): {err}",
            where="curves",
        ) from err
    if precision.shape != recall.shape:
        raise InputError(
            f"curve '{label}': precision has {precision.size} points, recall {recall.size}",
            where="curves",
        )
    return precision, recall, aupr


def plot_pr_curves(
    curves: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    overwrite: bool = False,
    size_px: tuple[int, int] = (600, 500),
    mark_recall: float | None = 0.9,
    marks: Mapping[str, Sequence[Mark]] | None = None,
) -> Path:
    """Draw the precision-recall curves of several runs on one plot and save it to ``path``.

    ``curves`` maps a label (run name) to a ``metrics.PickEvaluation`` (anything with
    ``precision``, ``recall`` arrays and ``aupr``); the legend shows each run's AUPR. A dotted
    line marks ``mark_recall`` (0.9 by default, the paper's operating point). ``marks`` puts
    labelled operating points on a run's curve: ``{label: [(text, recall, precision), ...]}``
    (see :func:`pr_point`), each a marker in the curve's colour with its text, recall and
    precision in the legend. The picture is ``size_px`` = (width, height) pixels. Existing
    files are refused unless ``overwrite``.
    """
    check_writable(path, overwrite)
    return _save(_pr_figure(curves, title, size_px, mark_recall, marks), path, overwrite)


def pr_curves_rgb(
    curves: Mapping[str, Any],
    *,
    title: str | None = None,
    size_px: tuple[int, int] = (600, 500),
    mark_recall: float | None = 0.9,
    marks: Mapping[str, Sequence[Mark]] | None = None,
) -> np.ndarray:
    """Same picture as :func:`plot_pr_curves` as a ``uint8`` RGB array (H, W, 3)."""
    return _render(_pr_figure(curves, title, size_px, mark_recall, marks))
