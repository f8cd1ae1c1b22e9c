"""The held-out picking callback's pictures: PR curves, pick overlays and score maps, to files and loggers."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn


def image_dir(trainer: pl.Trainer) -> Path:
    """``<trainer.log_dir or default_root_dir>/val_images`` (a collective under DDP: every rank
    must call it)."""
    root = trainer.log_dir or trainer.default_root_dir
    return Path(os.fspath(root)) / "val_images"


def draw_pictures(
    out_dir: Path,
    step: int,
    micrographs: Mapping[str, np.ndarray],
    coordinates: pd.DataFrame,
    score_maps: Mapping[str, np.ndarray],
    evaluation: Any,
    pr_curves: Mapping[str, Any],
    radius_px_model: float,
    expected_counts: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Write ``pr_curve.png`` (the ``pr_curves`` {label: PickEvaluation} with their operating
    points, :func:`pr_marks`) and, per micrograph of ``score_maps``, ``overlay_<name>.png``
    (truth and the picks of ``evaluation`` at or above its best-F1 threshold, which the legend
    names; circles of ``radius_px_model``) and ``score_map_<name>.png`` (with its colour bar)
    into ``out_dir`` (replacing). Returns the same pictures as RGB arrays by logger tag."""
    from topaz_lightning import plots

    marks = pr_marks(pr_curves, expected_counts)
    plots.plot_pr_curves(pr_curves, out_dir / "pr_curve.png", overwrite=True, marks=marks)
    images = {"val/pr_curve": plots.pr_curves_rgb(pr_curves, marks=marks)}
    cut = getattr(evaluation, "best_f1_threshold", None)
    cut = None if cut is None or not math.isfinite(float(cut)) else float(cut)
    for name in sorted(score_maps):
        image, score_map = micrographs[name], score_maps[name]
        # the evaluated picks carry the evaluation's own ``matched`` flags
        picks = evaluation.picks[evaluation.picks["micrograph"] == name]
        shown = picks if cut is None else picks[picks["score"] >= cut]
        truth = coordinates[coordinates["micrograph"] == name]
        truth_xy = truth[["x", "y"]].to_numpy(dtype=np.float64)
        matched = shown["matched"].to_numpy(dtype=bool)
        title = (
            f"{name} step {step}: {int(matched.sum())}/{len(shown)} picks match, "
            f"{len(truth_xy)} true"
        )
        args = (
            image,
            truth_xy,
            picks[["x", "y"]].to_numpy(dtype=np.float64),
            picks["matched"].to_numpy(dtype=bool),
        )
        cut_args = {
            "scores": picks["score"].to_numpy(dtype=np.float64),
            "threshold": cut,
            "threshold_label": "best F1",
            "title": title,
        }
        path = out_dir / f"overlay_{name}.png"
        plots.plot_overlay(*args, path, radius_px_model, overwrite=True, **cut_args)
        images[f"val/overlay/{name}"] = plots.overlay_rgb(*args, radius_px_model, **cut_args)
        path = out_dir / f"score_map_{name}.png"
        plots.plot_score_map(image, score_map, path, overwrite=True)
        images[f"val/score_map/{name}"] = plots.score_map_rgb(image, score_map)
    return images


def pr_marks(
    pr_curves: Mapping[str, Any], expected_counts: Mapping[str, int] | None = None
) -> dict[str, list]:
    """The operating points on each PR curve: its best-F1 threshold and, with
    ``expected_counts`` ({micrograph: picks}, model-frame counts from
    :func:`topaz_lightning.metrics.operating_points.expected_counts`), the count ``tzl-pick``
    keeps by default (the same mark as ``tzl-evaluate pr_mark_per_micrograph=expected``)."""
    from topaz_lightning.metrics.operating_points import expected_count_mark

    marks = {}
    for label, evaluation in pr_curves.items():
        points = _best_f1_mark(evaluation)
        count = expected_count_mark(evaluation, expected_counts or {})
        marks[label] = points if count is None else [*points, count]
    return marks


def _best_f1_mark(evaluation: Any) -> list:
    """The best-F1 operating point of a PR curve as a labelled mark (none if it has none)."""
    from topaz_lightning.plots import pr_point

    cut = getattr(evaluation, "best_f1_threshold", None)
    if cut is None or not math.isfinite(float(cut)) or getattr(evaluation, "picks", None) is None:
        return []
    point = pr_point(evaluation, threshold=float(cut))
    return [] if point is None else [(f"best F1 (t={float(cut):.3g})", *point)]


def log_images(trainer: pl.Trainer, images: Mapping[str, np.ndarray], step: int) -> None:
    """Send RGB pictures to the loggers that take images (TensorBoard, W&B); others are skipped."""
    for logger in trainer.loggers:
        kind = type(logger).__name__
        try:
            if kind == "TensorBoardLogger":
                for tag, rgb in images.items():
                    logger.experiment.add_image(tag, rgb, global_step=step, dataformats="HWC")
            elif kind == "WandbLogger":
                for tag, rgb in images.items():
                    logger.log_image(key=tag, images=[rgb], step=step)
        except Exception as err:  # a picture must never stop training
            rank_zero_warn(f"HeldOutPicking: could not log images to {kind}: {err}")
