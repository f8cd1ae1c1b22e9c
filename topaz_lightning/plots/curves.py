"""Precision-recall curves of several runs on one plot."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from topaz_lightning.errors import InputError
from topaz_lightning.plots.canvas import _new_figure, _render, _save
from topaz_lightning.utils.atomic import check_writable


def _pr_figure(
    curves: Mapping[str, Any],
    title: str | None,
    size_px: tuple[int, int],
    mark_recall: float | None,
) -> Figure:
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise InputError("need a non-empty dict {label: PickEvaluation}", where="curves")
    fig = _new_figure(*size_px)
    ax = fig.add_axes((0.12, 0.11, 0.84, 0.80))
    for label, evaluation in curves.items():
        precision, recall, aupr = _pr_arrays(evaluation, str(label))
        # a step curve: precision is constant between consecutive recall values
        ax.step(recall, precision, where="post", lw=1.5, label=f"{label} (AUPR {aupr:.3f})")
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
) -> Path:
    """Draw the precision-recall curves of several runs on one plot and save it to ``path``.

    ``curves`` maps a label (run name) to a ``metrics.PickEvaluation`` (anything with
    ``precision``, ``recall`` arrays and ``aupr``); the legend shows each run's AUPR. A dotted
    line marks ``mark_recall`` (0.9 by default, the paper's operating point). The picture is
    ``size_px`` = (width, height) pixels. Existing files are refused unless ``overwrite``.
    """
    check_writable(path, overwrite)
    return _save(_pr_figure(curves, title, size_px, mark_recall), path, overwrite)


def pr_curves_rgb(
    curves: Mapping[str, Any],
    *,
    title: str | None = None,
    size_px: tuple[int, int] = (600, 500),
    mark_recall: float | None = 0.9,
) -> np.ndarray:
    """Same picture as :func:`plot_pr_curves` as a ``uint8`` RGB array (H, W, 3)."""
    return _render(_pr_figure(curves, title, size_px, mark_recall))
