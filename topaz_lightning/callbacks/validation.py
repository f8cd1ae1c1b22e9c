"""Held-out picking during training: score, pick and match held-out micrographs; log val/aupr."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from topaz_lightning.errors import ConfigError
from topaz_lightning.metrics import RECALL_LEVELS
from topaz_lightning.picking import PICK_COLUMNS

__all__ = [
    "HeldOutPicking",
    "ShardResult",
    "shard_names",
    "all_gather_objects",
    "merge_shards",
    "score_shard",
    "compute_metrics",
]


# ---------------------------------------------------------------------------------------------
# the pieces, as plain functions (each rank runs score_shard; everything else is rank-agnostic)


@dataclass
class ShardResult:
    """What one rank found on its share of the held-out micrographs.

    ``picks`` is a DataFrame[micrograph, x, y, score] of every NMS pick; ``region_logits`` and
    ``region_labels`` hold, per micrograph, the flattened dense logits and the positive-region
    mask (only when region AUPR is computed); ``names`` lists the micrographs scored.
    """

    names: list[str] = field(default_factory=list)
    picks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PICK_COLUMNS))
    region_logits: list[np.ndarray] = field(default_factory=list)
    region_labels: list[np.ndarray] = field(default_factory=list)


def shard_names(names: Iterable[str], rank: int, world_size: int) -> list[str]:
    """The micrographs scored by ``rank``: sorted names dealt round-robin (rank 0 gets the first)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return sorted(names)[rank::world_size]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order; ``[obj]`` when torch.distributed is not running."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def merge_shards(shards: Sequence[ShardResult]) -> ShardResult:
    """Combine the ranks' results into one, in micrograph-name order (independent of sharding)."""
    names = sorted(n for s in shards for n in s.names)
    if len(set(names)) != len(names):
        raise ValueError("a micrograph was scored by more than one rank")
    tables = [s.picks for s in shards if len(s.picks)]
    if tables:
        picks = pd.concat(tables, ignore_index=True)
        picks = picks.sort_values(["micrograph", "score"], ascending=[True, False], kind="stable")
        picks = picks.reset_index(drop=True)
    else:
        picks = pd.DataFrame(columns=PICK_COLUMNS)
    # region arrays: ordered by micrograph name so the result does not depend on world size
    pairs = {}
    for s in shards:
        if s.region_logits:
            for name, logits, labels in zip(s.names, s.region_logits, s.region_labels, strict=True):
                pairs[name] = (logits, labels)
    ordered = [pairs[n] for n in names if n in pairs]
    return ShardResult(
        names=names,
        picks=picks,
        region_logits=[p[0] for p in ordered],
        region_labels=[p[1] for p in ordered],
    )


def _truth_xy(coordinates: pd.DataFrame, name: str) -> np.ndarray:
    rows = coordinates[coordinates["micrograph"] == name]
    return rows[["x", "y"]].to_numpy(dtype=np.float64)


def score_shard(
    net: torch.nn.Module,
    micrographs: Mapping[str, np.ndarray],
    coordinates: pd.DataFrame,
    names: Sequence[str],
    radius: float,
    threshold: float = -math.inf,
    region_radius_px: float | None = None,
    device: str | torch.device = "cpu",
    keep_maps: Iterable[str] = (),
    border_bands: bool = False,
    border_padding_px_model: float = 0.0,
    border_margin_px_model: float = 0.0,
) -> tuple[ShardResult, dict[str, np.ndarray]]:
    """Score ``names`` with ``net``, pick with NMS and (optionally) collect region logits/labels.

    Returns the shard result and the dense score maps (logits) of the micrographs in
    ``keep_maps`` (for pictures). Scoring and NMS are :mod:`topaz_lightning.picking`'s
    (``score_micrographs`` runs the net in eval mode without gradients and restores its mode);
    region labels are :func:`topaz_lightning.metrics.region_labels`. Picks where
    :func:`topaz_lightning.picking.border.picking_mask` of the micrograph is set are dropped, as
    ``tzl-pick`` drops them (``border_bands``: striped edge bands widened inwards by
    ``border_padding_px_model``; ``border_margin_px_model``: any edge; model px, already
    resolved); the region logits and labels keep every pixel.
    """
    from topaz_lightning.metrics import region_labels
    from topaz_lightning.picking import picks_from_score_map, score_micrographs
    from topaz_lightning.picking.border import drop_masked_picks

    keep = set(keep_maps)
    result = ShardResult(names=list(names))
    tables = []
    maps: dict[str, np.ndarray] = {}
    images = {name: micrographs[name] for name in names}
    for name, score_map in score_micrographs(net, images, device=device):
        picks = picks_from_score_map(name, score_map, radius, threshold=threshold)
        picks = drop_masked_picks(
            picks,
            images[name],
            bands=border_bands,
            margin=border_margin_px_model,
            band_padding=border_padding_px_model,
        )
        tables.append(picks)
        if region_radius_px is not None:
            mask = region_labels({name: score_map.shape}, coordinates, region_radius_px)[name]
            result.region_logits.append(score_map.reshape(-1))
            result.region_labels.append(mask.reshape(-1))
        if name in keep:
            maps[name] = score_map
    nonempty = [t for t in tables if len(t)]
    if nonempty:
        result.picks = pd.concat(nonempty, ignore_index=True)
    return result, maps


def compute_metrics(
    merged: ShardResult, coordinates: pd.DataFrame, max_distance: float
) -> tuple[dict[str, float], Any]:
    """Metrics of the merged picks against the truth of the scored micrographs.

    Returns ``({"val/aupr": ..., "val/precision@0.9": ..., ...}, PickEvaluation)``.
    ``val/precision@0.9`` is 0.0 when 0.9 recall is never reached (no threshold gets there);
    the other recall levels are present only when reached. ``val/region_aupr`` (region
    AUPR over every pixel of the scored micrographs) is present when the shard carried region
    logits and labels with at least one positive.
    """
    from topaz_lightning.metrics import evaluate_picks, region_aupr

    truth = coordinates[coordinates["micrograph"].isin(merged.names)].reset_index(drop=True)
    # naming the micrographs makes picks on a held-out micrograph without particles count as
    # false positives instead of being dropped
    evaluation = evaluate_picks(merged.picks, truth, max_distance, micrographs=merged.names)
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


# ---------------------------------------------------------------------------------------------
# the callback


class HeldOutPicking(pl.Callback):
    """Every ``every_n_steps`` optimizer steps (and at the end of training) pick the held-out
    micrographs with the current classifier and log ``val/aupr``, ``val/precision@0.9``,
    ``val/precision@{0.25,0.5,0.75}`` (when reached), ``val/best_f1`` and ``val/region_aupr``
    (region AUPR over every pixel of the held-out micrographs; named apart from the
    LightningModule's ``val/patch_aupr`` on sampled validation patches).

    Micrographs and truth come from ``trainer.datamodule.val_micrographs`` /
    ``val_coordinates`` unless passed as ``micrographs`` / ``coordinates``. Picks are local maxima
    of the dense score map at least ``radius`` px apart with logit >= ``threshold``; they match a
    true particle within ``max_distance`` px one-to-one. Distances are in model pixels (the
    downsampled micrographs the model sees); when None they come from the run geometry
    (``trainer.datamodule.geometry``: ``nms_radius_px_model`` / ``match_distance_px_model``).
    Without held-out micrographs the callback switches itself off and asks for nothing. Region
    AUPR labels the pixels within ``region_radius_px`` (model px) of a particle positive (default:
    the geometry's ``label_radius_px_model``; no region AUPR if neither is known).
    ``max_micrographs`` caps how many held-out micrographs (first by name) are scored.

    Picks are masked as ``tzl-pick`` masks them (the defaults mirror configs/pick.yaml, so
    ``val/aupr`` and the best checkpoint measure the picks ``tzl-pick`` would make): with
    ``border_bands`` picks on striped bands detected along the edges of the held-out
    micrograph (the normalized model-frame image the net scores) are dropped, the bands widened
    inwards by ``border_padding_px_model`` (None = half the NMS radius,
    :func:`topaz_lightning.picking.border.border_padding_px_model`), and so are picks within
    ``border_margin_px_model`` of any edge (model px; 0 = none). ``val/region_aupr`` is a pixel
    metric and stays unmasked: it scores every pixel.

    Under DDP each rank scores a round-robin shard, the results are gathered to every rank,
    rank 0 computes the metrics and broadcasts them, so every rank logs identical values and a
    ``ModelCheckpoint(monitor="val/aupr")`` agrees on all ranks.

    With ``log_images`` the overlay of picks at the best-F1 threshold, the score-map heatmap (of
    the first ``num_images`` micrographs of rank 0's shard) and the PR curves of the last
    ``pr_history`` evaluations are written as PNGs to
    ``<trainer.log_dir or default_root_dir>/val_images/step_XXXXXX/`` and sent to TensorBoard /
    W&B loggers.
    """

    def __init__(
        self,
        every_n_steps: int = 250,
        radius: float | None = None,
        max_distance: float | None = None,
        threshold: float = -math.inf,
        region_radius_px: float | None = None,
        log_images: bool = False,
        max_micrographs: int | None = None,
        num_images: int = 1,
        pr_history: int = 5,
        at_train_end: bool = True,
        micrographs: Mapping[str, np.ndarray] | None = None,
        coordinates: pd.DataFrame | None = None,
        border_bands: bool = True,
        border_padding_px_model: float | None = None,
        border_margin_px_model: float = 0.0,
    ):
        super().__init__()
        key = "callbacks.held_out_picking"
        if int(every_n_steps) != every_n_steps or every_n_steps < 1:
            raise ConfigError(
                f"{key}.every_n_steps", f"must be an integer >= 1, got {every_n_steps}"
            )
        for name, value in [("radius", radius), ("max_distance", max_distance)]:
            if value is not None and not (math.isfinite(float(value)) and value > 0):
                raise ConfigError(
                    f"{key}.{name}", f"must be a positive number of pixels, got {value}"
                )
        if region_radius_px is not None and not region_radius_px >= 0:
            raise ConfigError(f"{key}.region_radius_px", f"must be >= 0, got {region_radius_px}")
        if max_micrographs is not None and max_micrographs < 1:
            raise ConfigError(
                f"{key}.max_micrographs", f"must be >= 1 or null, got {max_micrographs}"
            )
        if num_images < 0 or pr_history < 1:
            raise ConfigError(f"{key}.num_images", "num_images must be >= 0 and pr_history >= 1")
        if not isinstance(border_bands, bool | np.bool_):
            raise ConfigError(f"{key}.border_bands", f"must be true or false, got {border_bands!r}")
        for name, value in [
            ("border_padding_px_model", border_padding_px_model),
            ("border_margin_px_model", border_margin_px_model),
        ]:
            if value is not None and not (math.isfinite(float(value)) and value >= 0):
                raise ConfigError(f"{key}.{name}", f"must be a number of pixels >= 0, got {value}")
        self.every_n_steps = int(every_n_steps)
        self.radius_setting = radius
        self.max_distance_setting = max_distance
        self.radius = None if radius is None else float(radius)
        self.max_distance = None if max_distance is None else float(max_distance)
        self.threshold = float(threshold)
        self.region_radius_px = region_radius_px
        self.log_images = bool(log_images)
        self.max_micrographs = max_micrographs
        self.num_images = int(num_images)
        self.pr_history = int(pr_history)
        self.at_train_end = bool(at_train_end)
        self.border_bands = bool(border_bands)
        self.border_padding_setting = border_padding_px_model
        self.border_margin_px_model = float(border_margin_px_model or 0.0)
        self._micrographs = micrographs
        self._coordinates = coordinates
        self._last_step: int | None = None
        self._disabled = False
        self.history: list[dict[str, float]] = []  # one dict per evaluation, with "step"
        self._pr_curves: list[tuple[int, Any]] = []
        self.last_evaluation: Any = None

    # -- data ----------------------------------------------------------------------------------

    def _sources(self, trainer: pl.Trainer) -> tuple[Mapping[str, np.ndarray], pd.DataFrame]:
        micrographs, coordinates = self._micrographs, self._coordinates
        dm = getattr(trainer, "datamodule", None)
        if micrographs is None:
            micrographs = getattr(dm, "val_micrographs", None)
        if coordinates is None:
            coordinates = getattr(dm, "val_coordinates", None)
        if micrographs is None or coordinates is None:
            raise ConfigError(
                "callbacks.held_out_picking",
                "needs held-out micrographs and their coordinates: a datamodule exposing "
                "val_micrographs and val_coordinates after setup(), or the callback's "
                "micrographs=/coordinates= arguments",
            )
        return micrographs, coordinates

    def _region_radius(self, trainer: pl.Trainer) -> float | None:
        if self.region_radius_px is not None:
            return float(self.region_radius_px)
        geometry = _geometry(trainer)
        return None if geometry is None else float(geometry.label_radius_px_model)

    def _names(self, micrographs: Mapping[str, np.ndarray]) -> list[str]:
        names = sorted(micrographs)
        if self.max_micrographs is not None:
            names = names[: self.max_micrographs]
        return names

    @property
    def border_padding_px_model(self) -> float:
        """The band padding in model px (tzl-pick's rule: None = half the NMS radius)."""
        from topaz_lightning.picking.border import border_padding_px_model

        if self.border_padding_setting is None and self.radius is None:
            raise ConfigError(
                "callbacks.held_out_picking.border_padding_px_model",
                "null needs the NMS radius, which is not resolved yet",
            )
        return border_padding_px_model(self.border_padding_setting, self.radius or 0.0)

    # -- hooks ---------------------------------------------------------------------------------

    def _resolve_distances(self, trainer: pl.Trainer) -> None:
        """Fill unset radius/max_distance from the run geometry (``trainer.datamodule.geometry``)."""
        geometry = _geometry(trainer)
        for attr, setting, field_name in [
            ("radius", self.radius_setting, "nms_radius_px_model"),
            ("max_distance", self.max_distance_setting, "match_distance_px_model"),
        ]:
            if setting is not None:
                continue
            value = None if geometry is None else getattr(geometry, field_name)
            if value is None:
                raise ConfigError(
                    f"callbacks.held_out_picking.{attr}",
                    f"not set and the run geometry has no {field_name}: give the particle size "
                    "(data.particle_diameter_px, or data.particle_diameter_a with the pixel "
                    f"size), or data.{field_name}, or this key (model pixels)",
                )
            setattr(self, attr, float(value))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        micrographs, _ = self._sources(trainer)
        if len(micrographs) == 0:
            # nothing to pick: no radius is needed, so none is asked for
            rank_zero_warn("HeldOutPicking: no held-out micrographs; val/aupr will not be logged")
            self._disabled = True
            return
        self._resolve_distances(trainer)
        if not hasattr(pl_module, "net"):
            raise ConfigError(
                "callbacks.held_out_picking", "the LightningModule has no `net` classifier"
            )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # global_step counts optimizer steps; with gradient accumulation several batches share
        # one step, hence the _last_step guard
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._run(trainer, pl_module, on_step=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (
            self.at_train_end
            and _is_final_epoch(trainer)
            and trainer.global_step != self._last_step
        ):
            self._run(trainer, pl_module, on_step=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # normally the final epoch end has evaluated already; this catches anything else, and
        # since self.log is not allowed here it writes to the loggers directly
        if self.at_train_end and trainer.global_step != self._last_step and trainer.global_step > 0:
            self._run(trainer, pl_module, on_step=None)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self._last_step, "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = state_dict.get("last_step")
        self.history = list(state_dict.get("history", []))

    # -- work ----------------------------------------------------------------------------------

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> tuple[dict[str, float], Any, ShardResult, dict[str, np.ndarray]]:
        """Score this rank's shard, gather all shards, compute metrics on rank 0, broadcast.

        Returns (metrics identical on every rank, PickEvaluation on rank 0 else None, the merged
        result, this rank's kept score maps).
        """
        if self.radius is None or self.max_distance is None:
            self._resolve_distances(trainer)
        micrographs, coordinates = self._sources(trainer)
        names = self._names(micrographs)
        rank, world_size = trainer.global_rank, trainer.world_size
        local = shard_names(names, rank, world_size)
        keep = local[: self.num_images] if (self.log_images and rank == 0) else []
        net = pl_module.net
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                shard, maps = score_shard(
                    net,
                    micrographs,
                    coordinates,
                    local,
                    radius=self.radius,
                    threshold=self.threshold,
                    region_radius_px=self._region_radius(trainer),
                    device=pl_module.device,
                    keep_maps=keep,
                    border_bands=self.border_bands,
                    border_padding_px_model=self.border_padding_px_model,
                    border_margin_px_model=self.border_margin_px_model,
                )
        finally:
            net.train(was_training)
        merged = merge_shards(all_gather_objects(shard))
        evaluation = None
        metrics: dict[str, float] | None = None
        if rank == 0:
            metrics, evaluation = compute_metrics(merged, coordinates, self.max_distance)
        if world_size > 1:
            metrics = trainer.strategy.broadcast(metrics, src=0)
        assert metrics is not None
        return metrics, evaluation, merged, maps

    def _run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, on_step: bool | None
    ) -> None:
        if self._disabled:
            return
        step = trainer.global_step
        self._last_step = step
        metrics, evaluation, merged, maps = self.evaluate(trainer, pl_module)
        # the loggers get the values directly, at this step: self.log would only forward them when
        # the step happens to line up with trainer.log_every_n_steps
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        if on_step is not None:
            for key, value in sorted(metrics.items()):
                # for callback_metrics (ModelCheckpoint, EarlyStopping) and the progress bar;
                # identical on every rank already (broadcast), so no all-reduce is needed
                pl_module.log(
                    key,
                    value,
                    on_step=on_step,
                    on_epoch=not on_step,
                    prog_bar=key == "val/aupr",
                    logger=False,
                    batch_size=1,
                    sync_dist=False,
                )
        self.history.append({"step": float(step), **metrics})
        if evaluation is not None:
            self.last_evaluation = evaluation
            self._pr_curves = (self._pr_curves + [(step, evaluation)])[-self.pr_history :]
        if self.log_images:
            # trainer.log_dir is a collective under DDP: every rank must ask for it
            image_dir = _image_dir(trainer) / f"step_{step:06d}"
            if trainer.is_global_zero and evaluation is not None:
                micrographs, coordinates = self._sources(trainer)
                self._pictures(trainer, image_dir, step, micrographs, coordinates, maps, evaluation)

    def _pictures(
        self,
        trainer: pl.Trainer,
        out_dir: Path,
        step: int,
        micrographs: Mapping[str, np.ndarray],
        coordinates: pd.DataFrame,
        maps: Mapping[str, np.ndarray],
        evaluation: Any,
    ) -> None:
        from topaz_lightning import plots

        images: dict[str, np.ndarray] = {}
        curves = {f"step {s}": ev for s, ev in self._pr_curves}
        plots.plot_pr_curves(curves, out_dir / "pr_curve.png", overwrite=True)
        images["val/pr_curve"] = plots.pr_curves_rgb(curves)
        cut = getattr(evaluation, "best_f1_threshold", None)
        cut = -math.inf if cut is None or not math.isfinite(float(cut)) else float(cut)
        for name in sorted(maps):
            image = micrographs[name]
            # the evaluated picks carry the evaluation's own ``matched`` flags
            picks = evaluation.picks[evaluation.picks["micrograph"] == name]
            picks = picks[picks["score"] >= cut]
            pred_xy = picks[["x", "y"]].to_numpy(dtype=np.float64)
            truth_xy = _truth_xy(coordinates, name)
            matched = picks["matched"].to_numpy(dtype=bool)
            title = f"{name} step {step}: {int(matched.sum())}/{len(pred_xy)} picks match, {len(truth_xy)} true"
            args = (image, truth_xy, pred_xy, matched)
            plots.plot_overlay(*args, out_dir / f"overlay_{name}.png", self.radius, overwrite=True, title=title)  # fmt: skip
            images[f"val/overlay/{name}"] = plots.overlay_rgb(*args, self.radius, title=title)
            plots.plot_score_map(
                image, maps[name], out_dir / f"score_map_{name}.png", overwrite=True
            )
            images[f"val/score_map/{name}"] = plots.score_map_rgb(image, maps[name])
        _log_images(trainer, images, step)


# ---------------------------------------------------------------------------------------------
# helpers


def _geometry(trainer: pl.Trainer) -> Any:
    """The datamodule's resolved RunGeometry, or None (a datamodule without one)."""
    return getattr(getattr(trainer, "datamodule", None), "geometry", None)


def _is_final_epoch(trainer: pl.Trainer) -> bool:
    if trainer.should_stop:
        return True
    max_steps = trainer.max_steps
    if max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps:
        return True
    max_epochs = trainer.max_epochs
    return max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs


def _image_dir(trainer: pl.Trainer) -> Path:
    root = trainer.log_dir or trainer.default_root_dir
    return Path(os.fspath(root)) / "val_images"


def _log_images(trainer: pl.Trainer, images: Mapping[str, np.ndarray], step: int) -> None:
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
