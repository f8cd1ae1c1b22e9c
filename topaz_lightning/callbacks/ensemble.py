"""The checkpoint ensemble: ``model.pt`` as the mean logit of the classifier at several steps of one run.

:class:`CheckpointEnsemble` (``callbacks.checkpoint_ensemble``, on by default) keeps a copy of
the classifier's weights when training reaches each of ``fractions`` of its length
(``trainer.max_steps``; 50% and 75% by default), and ``tzl-train`` then saves ``model.pt`` as
the ensemble of those copies and the last weights
(:class:`~topaz_lightning.models.ensemble.HomogeneousEnsembleNet`, the members' logits averaged),
with the last weights alone beside it in ``model_last.pt``. Measured on the EMPIAR-10017
leave-one-micrograph-out folds (docs/accuracy.md, "Checkpoint ensembles as model.pt"): at 100
labels and 20,000 steps the 10k + 15k + 20k ensemble beat the last weights in 11 of 12 fold x
seed runs (+0.007 AUPR, +0.017 P@R0.9), for no training cost and ~1.2x the picking CPU.

The copies live in memory (a conv31 is 0.4 MB) and in the callback's state, so they travel in
``checkpoints/last.ckpt`` and a resumed run (``tzl-train resume=``) keeps them. At the end of
training the ensemble is scored on the held-out micrographs as the held-out picking callback
scores the network during training (same micrographs, pixels and pick settings); the metrics go
to ``metrics.json`` as ``val_model/aupr``, ``val_model/precision@0.9``, ``val_model/best_f1``:
the numbers of the ``model.pt`` that ``tzl-pick`` will use (``val/*`` stay the last weights').
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from topaz_lightning.errors import ConfigError

log = logging.getLogger("topaz_lightning")

__all__ = ["CheckpointEnsemble", "ensemble_metrics", "export_model", "snapshot_steps"]

#: the prefix of the exported model's held-out metrics in metrics.json and the loggers
MODEL_METRICS_PREFIX = "val_model/"


def snapshot_steps(fractions: Sequence[float], total_steps: int) -> list[int]:
    """The global steps at ``fractions`` of a ``total_steps``-step run, rounded, without the last
    step itself (the last weights always join) or step 0, and without repeats."""
    steps = {int(round(f * total_steps)) for f in fractions}
    return sorted(s for s in steps if 0 < s < total_steps)


class CheckpointEnsemble(pl.Callback):
    """Keep the classifier's weights at ``fractions`` of the run (each in (0, 1); the last
    weights always join) for ``tzl-train``'s ``model.pt`` (module docstring). ``evaluate``:
    score the ensemble on the held-out micrographs at the end (needs the held-out picking
    callback; skipped without validation micrographs or when the ensemble is the last weights
    alone)."""

    def __init__(self, fractions: Sequence[float] = (0.5, 0.75), evaluate: bool = True):
        values = list(fractions) if fractions is not None else []
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(
                    "callbacks.checkpoint_ensemble.fractions", f"{value!r} is not a number"
                )
            if not 0.0 < float(value) < 1.0:
                raise ConfigError(
                    "callbacks.checkpoint_ensemble.fractions",
                    f"each fraction of the run must be in (0, 1), got {value} (the last weights "
                    "always join; an empty list keeps model.pt the last weights alone)",
                )
        self.fractions = sorted({float(v) for v in values})
        self.evaluate = bool(evaluate)
        #: global step -> the classifier's weights (CPU copies) at that step
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.planned_steps: list[int] = []
        #: the exported model's held-out metrics (``val_model/...``), set at the end of training
        self.model_metrics: dict[str, float] = {}

    # -- during training -------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if total is None:
            estimated = trainer.estimated_stepping_batches
            total = int(estimated) if math.isfinite(estimated) else None
        if total is None:
            log.warning(
                "checkpoint ensemble: the run's length is unknown (no trainer.max_steps and no "
                "finite epoch count); model.pt will be the last weights alone"
            )
            self.planned_steps = []
            return
        self.planned_steps = snapshot_steps(self.fractions, total)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        # Lightning runs checkpoint callbacks after the others, so a checkpoint written at this
        # step already holds this copy
        if step in self.planned_steps and step not in self.snapshots:
            net = pl_module.net
            self.snapshots[step] = {
                k: v.detach().cpu().clone() for k, v in net.state_dict().items()
            }

    def state_dict(self) -> dict[str, Any]:
        return {
            "fractions": list(self.fractions),
            "snapshots": {str(step): weights for step, weights in self.snapshots.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        snapshots = state_dict.get("snapshots") or {}
        self.snapshots = {int(step): dict(weights) for step, weights in snapshots.items()}

    # -- at the end ------------------------------------------------------------------------------

    def member_steps(self, final_step: int) -> list[int]:
        """The steps of the ensemble's members before the last one: the planned steps reached
        and kept (a snapshot from a run that planned other steps, e.g. before a resume with
        another max_steps, is left out)."""
        return [s for s in self.planned_steps if s in self.snapshots and s < final_step]

    def members(self, net: nn.Module, final_step: int) -> list[nn.Module]:
        """Copies of ``net`` holding each kept snapshot's weights, then a copy of ``net`` (the
        training module's network is left as it is)."""
        missing = [s for s in self.planned_steps if s < final_step and s not in self.snapshots]
        if missing:
            log.warning(
                "checkpoint ensemble: no weights kept at step(s) %s (resumed from a checkpoint "
                "written without them?); model.pt averages the others",
                ", ".join(map(str, missing)),
            )
        out = []
        for step in self.member_steps(final_step):
            member = copy.deepcopy(net)
            member.load_state_dict(self.snapshots[step])
            out.append(member.eval())
        return out + [copy.deepcopy(net).eval()]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.model_metrics = {}
        if not self.evaluate or not self.member_steps(int(trainer.global_step)):
            return
        held_out = next((c for c in trainer.callbacks if hasattr(c, "evaluate_net")), None)
        if held_out is None or held_out.disabled:
            return
        from topaz_lightning.models.ensemble import EnsembleNet

        ensemble = EnsembleNet(self.members(pl_module.net, int(trainer.global_step)))
        metrics = held_out.evaluate_net(trainer, ensemble.to(pl_module.device))
        self.model_metrics = {
            MODEL_METRICS_PREFIX + key.split("/", 1)[-1]: value
            for key, value in metrics.items()
            if key.startswith("val/") and key != "val/region_aupr"
        }
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(self.model_metrics, step=int(trainer.global_step))
            log.info(
                "model.pt (checkpoint ensemble of steps %s) on the held-out micrographs: %s",
                ", ".join(
                    map(
                        str,
                        self.member_steps(int(trainer.global_step)) + [int(trainer.global_step)],
                    )
                ),
                ", ".join(f"{k} {v:.4f}" for k, v in sorted(self.model_metrics.items())),
            )


def export_model(
    callbacks: Sequence[Any], net: nn.Module, model_config: Mapping[str, Any], final_step: int
) -> tuple[nn.Module, dict[str, Any], list[int]]:
    """What ``tzl-train`` saves as ``model.pt``: ``(network, its model_config, member steps)``.
    With a :class:`CheckpointEnsemble` among ``callbacks`` that kept weights, the ensemble of
    those and ``net`` (a :class:`~topaz_lightning.models.ensemble.HomogeneousEnsembleNet`
    config); else ``net`` itself with ``model_config`` and ``[final_step]``."""
    from topaz_lightning.models.ensemble import EnsembleNet, ensemble_config

    callback = next((c for c in callbacks if isinstance(c, CheckpointEnsemble)), None)
    if callback is None or not callback.member_steps(final_step):
        return net, dict(model_config), [int(final_step)]
    members = callback.members(net, final_step)
    steps = callback.member_steps(final_step) + [int(final_step)]
    return EnsembleNet(members).eval(), ensemble_config(model_config, len(members)), steps


def ensemble_metrics(callbacks: Sequence[Any]) -> dict[str, float]:
    """The exported checkpoint ensemble's held-out metrics (``val_model/...``; empty when it was
    not scored)."""
    callback = next((c for c in callbacks if isinstance(c, CheckpointEnsemble)), None)
    return dict(callback.model_metrics) if callback is not None else {}
