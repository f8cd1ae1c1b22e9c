"""Held-out picking during training: tzl-pick's pipeline on the held-out micrographs; log val/aupr."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from topaz_lightning.callbacks.held_out import (
    ShardResult,
    compute_metrics,
    merge_shards,
    pick_shard,
)
from topaz_lightning.callbacks.pictures import draw_pictures, image_dir, log_images
from topaz_lightning.callbacks.training_end import is_final_epoch, is_last_batch
from topaz_lightning.errors import ConfigError
from topaz_lightning.metrics.operating_points import expected_counts
from topaz_lightning.picking.settings import PickSettings
from topaz_lightning.utils.distributed import (
    all_gather_objects,
    broadcast_object,
    rank_and_world_size,
    shard_names,
)

__all__ = [
    "HeldOutPicking",
    "check_settings",
    "ShardResult",
    "pick_shard",
    "merge_shards",
    "compute_metrics",
]

KEY = "callbacks.held_out_picking"
#: old argument -> its name now (accepted with a FutureWarning, which Python shows to users by
#: default, unlike DeprecationWarning from inside Hydra; in ``_renamed`` only)
RENAMED = {
    "radius": "nms_radius_px_model",
    "max_distance": "match_distance_px_model",
    "region_radius_px": "region_radius_px_model",
    "threshold": "pick.threshold",
    "border_bands": "pick.border_bands",
    "border_padding_px_model": "pick.border_padding_px_model",
    "border_margin_px_model": "pick.border_margin_px_model",
}
#: PickSettings fields the callback sets itself: the NMS radius (its own key, from the run
#: geometry), downsample (held-out micrographs are already in the model frame, so picks are
#: compared there) and keep_score_map (asked for when region AUPR or pictures need the map)
_OWN_FIELDS = ("nms_radius_px_model", "downsample", "keep_score_map")
PICK_KEYS = tuple(f.name for f in fields(PickSettings) if f.name not in _OWN_FIELDS)
#: PickSettings errors that name tzl-pick's key rather than the field
_PICK_ERROR_KEYS = {"particles_per_micrograph": "max_picks"}
#: when region AUPR is computed: at the end-of-training evaluation only (the value metrics.json
#: and the reports read), at every evaluation, or never. Its dense score map is most of an
#: evaluation's cost with strided picking (docs/callbacks_plots.md, "Measured")
REGION_AUPR = ("final", "always", "never")


# ---------------------------------------------------------------------------------------------
# the callback


class HeldOutPicking(pl.Callback):
    """Every ``every_n_steps`` optimizer steps (and at the end of training) pick the held-out
    micrographs with the current classifier exactly as ``tzl-pick`` picks, and log ``val/aupr``,
    ``val/precision@0.9``, ``val/precision@{0.25,0.5,0.75}`` (when reached), ``val/best_f1`` and
    ``val/region_aupr`` (every pixel of the held-out micrographs; ``region_aupr``: at the final
    evaluation only (default), ``always`` or ``never``).

    One :class:`~topaz_lightning.picking.settings.PickSettings` is built at the start of fit:
    ``nms_radius_px_model`` (None = the run geometry's), ``pick`` (any other PickSettings field:
    ``threshold``, ``border_bands``, ``scoring``, ...; each unset one keeps PickSettings' default,
    which is tzl-pick's) and ``downsample`` 1: the held-out micrographs are already in the model
    frame and picks are compared there. Each micrograph goes through
    :func:`~topaz_lightning.picking.predict.pick_micrograph`, so ``val/aupr`` and the best
    checkpoint measure the picks ``tzl-pick`` makes. Picks match a true particle within
    ``match_distance_px_model`` (None = the geometry's). Region AUPR labels pixels within
    ``region_radius_px_model`` of a particle positive (None = the geometry's
    ``label_radius_px_model``; no region AUPR if neither is known). The final evaluation is the
    one at ``trainer.max_steps``, at the last batch of ``trainer.max_epochs``, after a stop
    request, or the extra one at the end of training.

    The run geometry is ``geometry=`` or :meth:`set_run_geometry`, else the datamodule's.
    Micrographs and truth come from ``trainer.datamodule.val_micrographs`` / ``val_coordinates``
    unless passed as ``micrographs`` / ``coordinates``; without any the callback switches itself
    off. ``max_micrographs`` caps how many (first by name) are picked.

    Under DDP each rank picks a round-robin shard, the results are gathered to every rank, rank 0
    computes the metrics and broadcasts them (:mod:`topaz_lightning.utils.distributed`), so every
    rank logs identical values and ``ModelCheckpoint(monitor="val/aupr")`` agrees on all ranks.

    With ``log_images`` the overlay of picks at the best-F1 threshold, the score-map heatmap (of
    the first ``num_images`` micrographs of rank 0's shard) and the PR curves of the last
    ``pr_history`` evaluations (each marking its best-F1 point and the count ``tzl-pick`` keeps
    by default, from the run geometry's pi) are written as PNGs to
    ``<trainer.log_dir or default_root_dir>/val_images/step_XXXXXX/`` and sent to TensorBoard /
    W&B loggers.
    """

    def __init__(
        self,
        every_n_steps: int = 250,
        nms_radius_px_model: float | None = None,
        match_distance_px_model: float | None = None,
        region_radius_px_model: float | None = None,
        region_aupr: str = "final",
        pick: Mapping[str, Any] | None = None,
        log_images: bool = False,
        max_micrographs: int | None = None,
        num_images: int = 1,
        pr_history: int = 5,
        at_train_end: bool = True,
        micrographs: Mapping[str, np.ndarray] | None = None,
        coordinates: pd.DataFrame | None = None,
        geometry: Any = None,
        **renamed: Any,
    ):
        super().__init__()
        pick = dict(pick or {})
        nms_radius_px_model, match_distance_px_model, region_radius_px_model = _renamed(
            renamed, pick, nms_radius_px_model, match_distance_px_model, region_radius_px_model
        )
        if int(every_n_steps) != every_n_steps or every_n_steps < 1:
            raise ConfigError(
                f"{KEY}.every_n_steps", f"must be an integer >= 1, got {every_n_steps}"
            )
        if match_distance_px_model is not None and not _positive(match_distance_px_model):
            raise ConfigError(f"{KEY}.match_distance_px_model", f"must be a number of model px > 0, got {match_distance_px_model!r}")  # fmt: skip
        if region_radius_px_model is not None and not region_radius_px_model >= 0:
            raise ConfigError(f"{KEY}.region_radius_px_model", f"must be >= 0, got {region_radius_px_model}")  # fmt: skip
        if region_aupr not in REGION_AUPR:
            raise ConfigError(f"{KEY}.region_aupr", f"must be one of {', '.join(REGION_AUPR)}, got {region_aupr!r}")  # fmt: skip
        if max_micrographs is not None and max_micrographs < 1:
            raise ConfigError(f"{KEY}.max_micrographs", f"must be >= 1 or null, got {max_micrographs}")  # fmt: skip
        if num_images < 0 or pr_history < 1:
            raise ConfigError(f"{KEY}.num_images", "num_images must be >= 0 and pr_history >= 1")
        for name in pick:
            if name not in PICK_KEYS:
                where = f" (set {KEY}.{name} instead)" if name == "nms_radius_px_model" else ""
                raise ConfigError(f"{KEY}.pick.{name}", f"not a pick setting{where}; known: {', '.join(PICK_KEYS)}")  # fmt: skip
        self.pick = pick
        # the ranges (NMS radius included) are PickSettings' own checks: run them now, before
        # any data is read (the NMS radius may still be unknown; 1.0 stands in for it)
        self._pick_settings(1.0 if nms_radius_px_model is None else nms_radius_px_model)
        self.every_n_steps = int(every_n_steps)
        self.nms_radius_setting = nms_radius_px_model
        self.match_distance_setting = match_distance_px_model
        self.region_radius_setting = region_radius_px_model
        self.region_aupr = region_aupr
        self.log_images = bool(log_images)
        self.max_micrographs = max_micrographs
        self.num_images = int(num_images)
        self.pr_history = int(pr_history)
        self.at_train_end = bool(at_train_end)
        self._micrographs = micrographs
        self._coordinates = coordinates
        self._geometry = geometry
        #: resolved at the start of fit: the settings every evaluation picks with, and the
        #: matching distance (model px)
        self.settings: PickSettings | None = None
        self.match_distance_px_model: float | None = None
        self._last_step: int | None = None
        #: whether the evaluation at _last_step computed region AUPR
        self._last_had_region = False
        self._disabled = False
        self.history: list[dict[str, float]] = []  # one dict per evaluation, with "step"
        self._pr_curves: list[tuple[int, Any]] = []
        self.last_evaluation: Any = None
        #: the merged picks of the last evaluation, DataFrame[micrograph, x, y, score] (model px)
        self.last_picks: pd.DataFrame | None = None

    def set_run_geometry(self, geometry: Any) -> None:
        """Hand the run's resolved RunGeometry to the callback (instead of it reading the
        datamodule's); call before ``trainer.fit`` or at the latest in ``setup``."""
        self._geometry = geometry

    def _pick_settings(self, nms_radius_px_model: float) -> PickSettings:
        try:
            return PickSettings(nms_radius_px_model=nms_radius_px_model, **self.pick)
        except ConfigError as err:  # named as this callback's key
            name = _PICK_ERROR_KEYS.get(err.key, err.key)
            if name in PICK_KEYS:
                name = f"pick.{name}"
            elif name != "nms_radius_px_model":
                name = "pick"
            raise ConfigError(f"{KEY}.{name}", str(err).split(": ", 1)[-1]) from None

    # -- data ----------------------------------------------------------------------------------

    def _run_geometry(self, trainer: pl.Trainer) -> Any:
        """The RunGeometry given to the callback, else the datamodule's (None: neither)."""
        if self._geometry is not None:
            return self._geometry
        return getattr(getattr(trainer, "datamodule", None), "geometry", None)

    def _sources(self, trainer: pl.Trainer) -> tuple[Mapping[str, np.ndarray], pd.DataFrame]:
        micrographs, coordinates = self._micrographs, self._coordinates
        dm = getattr(trainer, "datamodule", None)
        if micrographs is None:
            micrographs = getattr(dm, "val_micrographs", None)
        if coordinates is None:
            coordinates = getattr(dm, "val_coordinates", None)
        if micrographs is None or coordinates is None:
            raise ConfigError(
                KEY,
                "needs held-out micrographs and their coordinates: a datamodule exposing "
                "val_micrographs and val_coordinates after setup(), or the callback's "
                "micrographs=/coordinates= arguments",
            )
        return micrographs, coordinates

    def _region_radius(self, trainer: pl.Trainer) -> float | None:
        if self.region_radius_setting is not None:
            return float(self.region_radius_setting)
        geometry = self._run_geometry(trainer)
        return None if geometry is None else float(geometry.label_radius_px_model)

    def _resolve(self, trainer: pl.Trainer) -> None:
        """Build the PickSettings and the matching distance (unset ones from the run geometry)."""
        geometry = self._run_geometry(trainer)
        values = {}
        for name, setting in [
            ("nms_radius_px_model", self.nms_radius_setting),
            ("match_distance_px_model", self.match_distance_setting),
        ]:
            values[name] = setting if setting is not None else getattr(geometry, name, None)
            if values[name] is None:
                raise ConfigError(
                    f"{KEY}.{name}",
                    f"not set and the run geometry has no {name}: give the particle size "
                    "(data.particle_diameter_px, or data.particle_diameter_a with the pixel "
                    f"size), or data.{name}, or this key (model pixels)",
                )
        self.settings = self._pick_settings(float(values["nms_radius_px_model"]))
        self.match_distance_px_model = float(values["match_distance_px_model"])

    # -- hooks ---------------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        micrographs, _ = self._sources(trainer)
        if len(micrographs) == 0:
            # nothing to pick: no radius is needed, so none is asked for
            rank_zero_warn("HeldOutPicking: no held-out micrographs; val/aupr will not be logged")
            self._disabled = True
            return
        self._resolve(trainer)
        if not hasattr(pl_module, "net"):
            raise ConfigError(KEY, "the LightningModule has no `net` classifier")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # global_step counts optimizer steps; with gradient accumulation several batches share
        # one step, hence the _last_step guard
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._run(trainer, pl_module, on_step=True, final=is_last_batch(trainer, batch_idx))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_train_end and is_final_epoch(trainer) and self._final_due(trainer):
            self._run(trainer, pl_module, on_step=False, final=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # normally the final epoch end has evaluated already; this catches anything else, and
        # since self.log is not allowed here it writes to the loggers directly
        if self.at_train_end and trainer.global_step > 0 and self._final_due(trainer):
            self._run(trainer, pl_module, on_step=None, final=True)

    def _final_due(self, trainer: pl.Trainer) -> bool:
        """The end of training still owes an evaluation: none at this step yet, or one without
        the region AUPR that ``region_aupr=final`` promises (a stop requested after it)."""
        if trainer.global_step != self._last_step:
            return True
        wanted = self.region_aupr == "final" and self._region_radius(trainer) is not None
        return wanted and not self._last_had_region

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self._last_step,
            "history": list(self.history),
            "last_had_region": self._last_had_region,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = state_dict.get("last_step")
        self.history = list(state_dict.get("history", []))
        # checkpoints from before region_aupr computed it at every evaluation
        self._last_had_region = bool(state_dict.get("last_had_region", True))

    # -- work ----------------------------------------------------------------------------------

    @property
    def disabled(self) -> bool:
        """True when there is nothing to pick (no held-out micrographs)."""
        return self._disabled

    def evaluate_net(self, trainer: pl.Trainer, net: torch.nn.Module) -> dict[str, float]:
        """The held-out metrics (``val/...``, no region AUPR) of another network than the one
        being trained, e.g. the checkpoint ensemble tzl-train exports: same micrographs, pixels
        and pick settings; nothing is logged or kept. Every rank must call it (DDP)."""
        return self.evaluate(trainer, trainer.lightning_module, region=False, net=net)[0]

    def evaluate(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        region: bool = True,
        net: torch.nn.Module | None = None,
    ) -> tuple[dict[str, float], Any, ShardResult, dict[str, np.ndarray]]:
        """Pick this rank's shard, gather all shards, compute metrics on rank 0, broadcast;
        ``region``: with region AUPR (when a region radius is known); ``net``: the network to
        pick with (default ``pl_module.net``).

        Returns (metrics identical on every rank, PickEvaluation on rank 0 else None, the merged
        result, this rank's kept score maps).
        """
        if self.settings is None:
            self._resolve(trainer)
        micrographs, coordinates = self._sources(trainer)
        names = sorted(micrographs)[: self.max_micrographs]
        rank, world_size = rank_and_world_size()
        local = shard_names(names, rank, world_size)
        keep = local[: self.num_images] if (self.log_images and rank == 0) else []
        # pick_micrograph scores in eval mode without gradients and restores the net's mode
        region_radius = self._region_radius(trainer) if region else None
        shard, maps = pick_shard(
            pl_module.net if net is None else net, micrographs, coordinates, local, self.settings,
            region_radius, pl_module.device, keep,
        )  # fmt: skip
        merged = merge_shards(all_gather_objects(shard))
        metrics, evaluation = None, None
        if rank == 0:
            metrics, evaluation = compute_metrics(merged, coordinates, self.match_distance_px_model)
        metrics = broadcast_object(metrics, src=0)
        return metrics, evaluation, merged, maps

    def _run(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        on_step: bool | None,
        final: bool = False,
    ):
        if self._disabled:
            return
        step = trainer.global_step
        region = self.region_aupr == "always" or (self.region_aupr == "final" and final)
        again = step == self._last_step  # the final evaluation redone to add region AUPR
        self._last_step = step
        metrics, evaluation, merged, maps = self.evaluate(trainer, pl_module, region)
        self._last_had_region = region
        self.last_picks = merged.picks
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
                    key, value, on_step=on_step, on_epoch=not on_step,
                    prog_bar=key == "val/aupr", logger=False, batch_size=1, sync_dist=False,
                )  # fmt: skip
        if again and self.history:
            self.history.pop()
        self.history.append({"step": float(step), **metrics})
        if evaluation is not None:
            self.last_evaluation = evaluation
            earlier = [(s, ev) for s, ev in self._pr_curves if s != step]
            self._pr_curves = (earlier + [(step, evaluation)])[-self.pr_history :]
        if self.log_images:
            # trainer.log_dir is a collective under DDP: every rank must ask for it
            out_dir = image_dir(trainer) / f"step_{step:06d}"
            if trainer.is_global_zero and evaluation is not None:
                micrographs, coordinates = self._sources(trainer)
                curves = {f"step {s}": ev for s, ev in self._pr_curves}
                # the count tzl-pick keeps by default, from the run's pi (model-frame sizes)
                counts = expected_counts(
                    self._run_geometry(trainer), {n: micrographs[n].shape for n in merged.names}
                )
                images = draw_pictures(
                    out_dir, step, micrographs, coordinates, maps, evaluation, curves,
                    self.settings.nms_radius_px_model, counts,
                )  # fmt: skip
                log_images(trainer, images, step)


# ---------------------------------------------------------------------------------------------
# helpers


def check_settings(node: Mapping[str, Any]) -> None:
    """The callback's own checks (ConfigError naming the key) on its config node, e.g. from
    ``cli/validate.py`` before any data is read; keys starting with ``_`` are Hydra's. A node
    whose ``_target_`` is another class is not this callback's and is left alone."""
    if not str(node.get("_target_", "HeldOutPicking")).endswith("HeldOutPicking"):
        return
    HeldOutPicking(**{str(k): v for k, v in node.items() if not str(k).startswith("_")})


def _renamed(renamed: dict[str, Any], pick: dict[str, Any], *values: Any) -> tuple[Any, ...]:
    """Move arguments given under their old names (RENAMED) to their new place, with a
    FutureWarning; ``values`` are (nms radius, match distance, region radius) as given."""
    own = dict(zip(("nms_radius_px_model", "match_distance_px_model", "region_radius_px_model"), values, strict=True))  # fmt: skip
    for old, value in renamed.items():
        if old not in RENAMED:
            raise ConfigError(f"{KEY}.{old}", "unknown setting of HeldOutPicking")
        new = RENAMED[old]
        warnings.warn(f"{KEY}.{old} is deprecated: use {KEY}.{new}", FutureWarning, stacklevel=3)  # fmt: skip
        target, name = (pick, new[5:]) if new.startswith("pick.") else (own, new)
        if target.get(name) is not None:
            raise ConfigError(f"{KEY}.{old}", f"given together with its new name {KEY}.{new}")
        target[name] = value
    return tuple(own.values())


def _positive(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False
