"""The LightningModule for PU training: owns the optimizer, calls the classifier, objective and decoder."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from topaz_lightning.data.prior import (
    DEFAULT_MIN_UNLABELED_PER_LABELED,
    check_min_unlabeled_per_labeled,
    room_for_unlabeled,
    room_message,
)
from topaz_lightning.errors import ConfigError
from topaz_lightning.models.base import use_channels_last

log = logging.getLogger("topaz_lightning")


def reconstruction_error(patches: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """The paper's E||x - x'||^2: squared error summed over each patch's pixels, averaged over patches."""
    diff = (recon - patches).flatten(1)
    return diff.pow(2).sum(dim=1).mean()


def resolve_recon_weight(recon_weight: float | str, num_labeled_particles: int | None) -> float:
    """Return the reconstruction weight c: a number as given, or 10/P for ``"auto"``.

    P is the number of labeled particles used for training (the paper weights the autoencoder less
    when more labels are available).
    """
    if isinstance(recon_weight, str):
        if recon_weight != "auto":
            raise ConfigError(
                "module.recon_weight", f"expected a number or 'auto', got {recon_weight!r}"
            )
        if num_labeled_particles is None or num_labeled_particles <= 0:
            raise ConfigError(
                "module.recon_weight",
                "'auto' (10/P) needs the number of labeled particles P; none was given and the "
                "datamodule does not expose num_labeled_particles",
            )
        return 10.0 / float(num_labeled_particles)
    weight = float(recon_weight)
    if weight < 0:
        raise ConfigError("module.recon_weight", f"must be >= 0, got {weight}")
    return weight


class PULitModule(pl.LightningModule):
    """Positive-unlabeled training of a region classifier (optionally with an autoencoder head).

    Args:
        net: classifier (``forward(patches) -> logits``, ``features(patches) -> (B, F)``).
        objective: PU objective, ``objective(logits, labels, pi) -> (loss, terms)``.
        optimizer: a partially applied optimizer class (Hydra ``_partial_: true``), completed with
            the parameters in :meth:`configure_optimizers`. Default: Adam, lr 2e-4. L2
            regularization is the optimizer's ``weight_decay``.
        pi_unlabeled: prior probability that an unlabeled draw is positive; taken from the run
            geometry (:meth:`set_run_geometry`, called by ``train()``) when None. 0 means every positive is
            labeled: the module then optimizes PN (see :meth:`finalize`). Given here, it is used as
            is (no floor).
        decoder: optional decoder ``decoder(features) -> (B, 1, w, w)``; when given, the loss gets
            ``recon_weight * E||x - x'||^2`` (sum over pixels, mean over the minibatch).
        recon_weight: c, a number or ``"auto"`` for 10/P (P = number of labeled particles).
        num_labeled_particles: P; taken from the run geometry when None.
        run_config: the resolved run configuration, stored with the hyperparameters and in every
            checkpoint so a run can be reproduced from its checkpoint alone.
        pi: the class prior (fraction of all regions that are positive); taken from the run
            geometry at ``setup`` when None.
        min_unlabeled_per_labeled: r, the unlabeled particles assumed at least per labeled one
            when the geometry's pi (from the user's settings, not a simulated dataset's truth)
            leaves less (annotations are never complete): a PU objective
            then gets ``pi_unlabeled = r * N_lab / (N - N_lab)`` instead of PN
            (:func:`topaz_lightning.data.prior.prior_with_room`). 0 trusts pi as given.
        memory_format: layout of the weights while training: ``channels_last``,
            ``contiguous`` or ``auto`` (channels_last on the CPU, where a conv31 Lightning step took
            13% less CPU; docs/training.md). The weights are contiguous again when fit ends.

    The objective gets the prior its ``prior`` attribute names (``"pi"``: PN, NNPU;
    ``"pi_unlabeled"``: GE-KL, GE-binomial; docs/models_objectives.md).
    """

    def __init__(
        self,
        net: nn.Module,
        objective: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        pi_unlabeled: float | None = None,
        decoder: nn.Module | None = None,
        recon_weight: float | str = "auto",
        num_labeled_particles: int | None = None,
        run_config: dict[str, Any] | None = None,
        pi: float | None = None,
        min_unlabeled_per_labeled: float = DEFAULT_MIN_UNLABELED_PER_LABELED,
        memory_format: str = "auto",
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "objective", "decoder", "optimizer"])
        self.net = net
        self.objective = objective
        self.decoder = decoder
        self.optimizer_factory = optimizer
        self.pi_unlabeled = pi_unlabeled
        # a pi_unlabeled given here is the user's word: the floor below applies to derived ones
        self._pi_unlabeled_given = pi_unlabeled is not None
        self.min_unlabeled_per_labeled = check_min_unlabeled_per_labeled(min_unlabeled_per_labeled)
        #: True when finalize() raised the derived priors to keep room for unlabeled particles
        self.prior_raised = False
        self.num_labeled_particles = num_labeled_particles
        self.recon_weight_setting = recon_weight
        self.recon_weight: float | None = None
        self.run_config = run_config
        self.pi = pi
        #: what is optimized, fixed by finalize(): the objective (``objective``, or PN when every
        #: positive is labeled), the name of the prior it gets and its value
        self.active_objective: nn.Module | None = None
        self.prior_name: str | None = None
        self.prior_value: float | None = None
        #: extra keyword arguments of the objective (NNPU: labeled_fraction)
        self.objective_kwargs: dict[str, float] = {}
        #: the run's RunGeometry, handed down by train() (set_run_geometry; None without one)
        self.geometry = None
        use_channels_last(memory_format, "cpu")  # ConfigError on an unknown name
        self.memory_format = memory_format
        self._channels_last = False
        if decoder is not None and not hasattr(net, "features"):
            raise ConfigError(
                "decoder", "the classifier has no features() method to feed the decoder"
            )

    # ------------------------------------------------------------------ setup
    def set_run_geometry(self, geometry: Any) -> None:
        """Take the run's resolved :class:`~topaz_lightning.geometry.RunGeometry` and finalize.

        ``train()`` calls it after the DataModule's ``setup()``. ``pi_unlabeled``, ``pi`` and
        ``num_labeled_particles`` not given to the constructor come from the geometry (explicit
        arguments win); then :meth:`finalize` fixes what is optimized.
        """
        self.geometry = geometry
        if geometry is not None:
            if self.pi_unlabeled is None:
                self.pi_unlabeled = geometry.pi_unlabeled
            if self.pi is None:
                self.pi = geometry.pi
            if self.num_labeled_particles is None:
                self.num_labeled_particles = geometry.num_labeled_particles
            self.hparams["geometry"] = geometry.to_dict()
        self.finalize()

    def setup(self, stage: str) -> None:
        """Finalize from the constructor's priors unless :meth:`set_run_geometry` already did.

        Nothing is read from the trainer or the datamodule: the run geometry is handed down by
        ``train()``. The loggers write ``hparams_initial`` after setup: they get the resolved values.
        """
        if self.active_objective is None:
            self.finalize()
        resolved = {
            key: self.hparams[key]
            for key in (
                "pi_unlabeled",
                "pi",
                "objective_optimized",
                "objective_prior",
                "objective_prior_value",
                "objective_labeled_fraction",
                "prior_raised",
                "num_labeled_particles",
                "recon_weight_value",
            )
        }
        if self.geometry is not None:
            resolved["geometry"] = self.geometry.to_dict()
        self._hparams_initial.update(resolved)

    def finalize(self) -> None:
        """Check the priors, choose what is optimized, fix the reconstruction weight.

        Call once pi and P are known. The objective receives the prior its ``prior`` attribute
        names. When ``pi_unlabeled == 0`` (pi at or below the labeled fraction: every positive
        is labeled) the unlabeled regions are negatives and the module optimizes PN instead, with
        the class prior = the labeled fraction (or pi when the fraction is unknown), as Topaz
        does. Which objective and prior are optimized is logged and stored in the hparams.
        """
        if self.pi_unlabeled is None:
            raise ConfigError(
                "module.pi_unlabeled",
                "no prior given: pass pi_unlabeled or the run geometry (set_run_geometry)",
            )
        pi_u = float(self.pi_unlabeled)
        if not 0.0 <= pi_u < 1.0:
            raise ConfigError("module.pi_unlabeled", f"must lie in [0, 1), got {pi_u}")
        self.pi_unlabeled = pi_u
        if self.pi is not None:
            self.pi = float(self.pi)
            if not 0.0 < self.pi < 1.0:
                raise ConfigError("module.pi", f"must lie in (0, 1), got {self.pi}")
        self._choose_objective()
        if self.decoder is not None:
            self.recon_weight = resolve_recon_weight(
                self.recon_weight_setting, self.num_labeled_particles
            )
        self.hparams["pi_unlabeled"] = pi_u
        self.hparams["pi"] = self.pi
        self.hparams["objective_optimized"] = type(self.active_objective).__name__
        self.hparams["objective_prior"] = self.prior_name
        self.hparams["objective_prior_value"] = self.prior_value
        self.hparams["objective_labeled_fraction"] = self.objective_kwargs.get("labeled_fraction")
        self.hparams["prior_raised"] = self.prior_raised
        self.hparams["num_labeled_particles"] = self.num_labeled_particles
        self.hparams["recon_weight_value"] = self.recon_weight

    def _choose_objective(self) -> None:
        from topaz_lightning.objectives import PN

        name = type(self.objective).__name__
        labeled_fraction = None if self.geometry is None else self.geometry.labeled_fraction
        if not isinstance(self.objective, PN):
            self._keep_room_for_unlabeled(name)
        if self.pi_unlabeled <= 0.0:
            # every positive region is labeled: the unlabeled draws hold no positives
            prior = labeled_fraction if labeled_fraction else self.pi
            if prior is None or not 0.0 < prior < 1.0:
                raise ConfigError(
                    "module.pi_unlabeled",
                    "pi_unlabeled is 0 (every positive labeled) and neither the labeled fraction "
                    "nor pi is known to weight the PN objective that replaces the PU objective",
                )
            self.active_objective, self.prior_name, self.prior_value = PN(), "pi", float(prior)
            self.objective_kwargs = {}
            log.warning(
                "pi=%s is at or below the labeled fraction %s (pi_unlabeled = 0): every positive "
                "region is labeled and the unlabeled regions are negatives, so the objective is "
                "PN with pi=%.6g (the labeled fraction) instead of %s%s",
                self.pi,
                "unknown" if labeled_fraction is None else f"{labeled_fraction:.6g}",
                self.prior_value,
                name,
                ""
                if self.min_unlabeled_per_labeled > 0 or isinstance(self.objective, PN)
                else "; if particles were left unlabeled, raise pi or set module.min_unlabeled_per_labeled "
                "(docs/accuracy.md, 'pi with complete annotation')",
            )
            return
        # objectives written before priors were declared received pi_unlabeled
        prior_name = getattr(self.objective, "prior", "pi_unlabeled")
        if prior_name == "pi":
            value = self.pi
            if value is None:  # no geometry and no pi given: unlabeled draws stand in for all
                value = self.pi_unlabeled
                log.warning("no class prior pi given: %s gets pi_unlabeled=%.6g", name, value)
        elif prior_name == "pi_unlabeled":
            value = self.pi_unlabeled
        else:
            raise ConfigError("objective", f"{name}.prior must be 'pi' or 'pi_unlabeled'")
        self.active_objective, self.prior_name, self.prior_value = (
            self.objective,
            prior_name,
            float(value),
        )
        self.objective_kwargs = {}
        if getattr(self.objective, "uses_labeled_fraction", False):
            if labeled_fraction is None and self.pi is not None:  # 1 - f = (1 - pi) / (1 - pi_u)
                labeled_fraction = 1.0 - (1.0 - self.pi) / (1.0 - self.pi_unlabeled)
            self.objective_kwargs = {"labeled_fraction": float(labeled_fraction or 0.0)}
        log.info(
            "optimizing %s with %s=%.6g%s",
            name,
            prior_name,
            self.prior_value,
            "".join(f", {k}={v:.6g}" for k, v in self.objective_kwargs.items()),
        )

    def _keep_room_for_unlabeled(self, name: str) -> None:
        """Raise a derived pi_unlabeled below the floor of ``min_unlabeled_per_labeled``."""
        r = self.min_unlabeled_per_labeled
        room = (
            None
            if self._pi_unlabeled_given
            else room_for_unlabeled(self.geometry, self.pi_unlabeled, r)
        )
        if room is not None:
            log.warning("%s", room_message(self.geometry, room, r, name))
            self.pi_unlabeled, self.pi, self.prior_raised = room.pi_unlabeled, room.pi, True

    # ------------------------------------------------------------------ steps
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of the classifier for patches (B, 1, w, w)."""
        return self.net(patches)

    def compute_loss(
        self, patches: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Objective (plus weighted reconstruction error with a decoder) for one minibatch.

        Needs :meth:`finalize` (or :meth:`set_run_geometry`, or Lightning's ``setup``) first.
        """
        if self.active_objective is None:
            raise RuntimeError(
                "PULitModule.compute_loss before finalize(): call set_run_geometry() or finalize()"
            )
        if self.decoder is None:
            logits = self.net(patches)
            loss, terms = self.active_objective(
                logits, labels, self.prior_value, **self.objective_kwargs
            )
            return loss, dict(terms)
        features = self.net.features(patches)
        logits = self._logits_from_features(features, patches)
        loss, terms = self.active_objective(
            logits, labels, self.prior_value, **self.objective_kwargs
        )
        terms = dict(terms)
        recon = self.decoder(features)
        if recon.shape != patches.shape:
            raise ConfigError(
                "decoder",
                f"reconstruction shape {tuple(recon.shape)} != patch shape {tuple(patches.shape)}; "
                "the decoder's patch_size must equal the data's patch size",
            )
        recon_err = reconstruction_error(patches, recon)
        terms["recon"] = recon_err.detach()
        return loss + self.recon_weight * recon_err, terms

    def _logits_from_features(self, features: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        # reuse the features when the classifier exposes its head (one pass, one BatchNorm update;
        # models.PatchClassifier.logits_from_features); otherwise a second forward pass
        head = getattr(self.net, "logits_from_features", None)
        if callable(head):
            return head(features)
        return self.net(patches)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        """One optimizer step's loss on a (patches, labels) minibatch; logs train/loss and terms.

        The values are logged only on the steps the loggers write (every
        ``trainer.log_every_n_steps``) and on the last step of an epoch or of the run, so
        ``callback_metrics`` end with the same numbers as logging every step; the values stay
        tensors on the device (no ``.item()``). Logging every step cost ~2 ms per step on the
        development CPU (docs/training.md, "Timings").
        """
        patches, labels = batch
        loss, terms = self.compute_loss(patches, labels)
        if self._should_log_step():
            batch_size = int(labels.shape[0])
            values = {"train/loss": loss.detach()}
            values.update(
                {f"train/{name}": value.detach().float() for name, value in terms.items()}
            )
            self.log("train/loss", values.pop("train/loss"), prog_bar=True, batch_size=batch_size)
            if values:
                self.log_dict(values, batch_size=batch_size)
        return loss

    def _should_log_step(self) -> bool:
        """True on the steps whose values reach the loggers or the final ``callback_metrics``."""
        if self._trainer is None:
            return True
        trainer = self.trainer
        every = max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1))
        # Lightning's own rule for writing to the loggers (_LoggerConnector.should_update_logs)
        epoch_loop = trainer.fit_loop.epoch_loop
        stepped = int(getattr(epoch_loop, "_batches_that_stepped", trainer.global_step))
        if (stepped + 1) % every == 0 or trainer.should_stop:
            return True
        max_steps = int(trainer.max_steps or -1)
        last_of_run = max_steps > 0 and int(trainer.global_step) + 1 >= max_steps
        return bool(last_of_run or trainer.is_last_batch)

    def on_validation_epoch_start(self) -> None:
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Region classification on held-out batches (labels = full truth): val/loss."""
        patches, labels = batch
        logits = self.net(patches)
        loss, _ = self.active_objective(logits, labels, self.prior_value, **self.objective_kwargs)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=int(labels.shape[0]))
        self._val_logits.append(logits.detach().float().cpu())
        self._val_labels.append(labels.detach().cpu())

    def on_validation_epoch_end(self) -> None:
        """Log val/patch_aupr: average precision over the sampled held-out patches (16:240 class mix).

        The region AUPR over every pixel of the held-out micrographs (the paper's Supp. Table 1)
        is the held-out picking callback's ``val/region_aupr``.
        """
        if not getattr(self, "_val_logits", None):
            return
        # metrics.region_aupr ranks the logits itself: torchmetrics' own sigmoid would merge
        # logits above ~17 into float32 ties and misorder saturated predictions
        from topaz_lightning.metrics import region_aupr

        logits = torch.cat(self._val_logits)
        labels = torch.cat(self._val_labels).long()
        if 0 < int(labels.sum()) < labels.numel():
            aupr = torch.tensor(region_aupr(logits, labels), device=self.device)
            self.log("val/patch_aupr", aupr, sync_dist=True)
        self._val_logits, self._val_labels = [], []

    # ------------------------------------------------------------------ optim
    def configure_model(self) -> None:
        """Lay out the weights as ``memory_format`` says, before the optimizer sees them."""
        device = "cpu" if self._trainer is None else self.trainer.strategy.root_device.type
        self._channels_last = use_channels_last(self.memory_format, device)
        if self._channels_last:
            self.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        # model.pt, checkpoints written later and picking after training see contiguous weights
        if self._channels_last:
            self.to(memory_format=torch.contiguous_format)
            self._channels_last = False

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Complete the partial optimizer with all trainable parameters (Adam, lr 2e-4 by default)."""
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            return torch.optim.Adam(params, lr=2e-4)
        return self.optimizer_factory(params=params)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the run config and the resolved pi/P/c so a checkpoint is self-describing."""
        checkpoint["topaz_lightning"] = {
            "run_config": self.run_config,
            "pi_unlabeled": self.pi_unlabeled,
            "pi": self.pi,
            "objective_optimized": self.hparams.get("objective_optimized"),
            "objective_prior": self.prior_name,
            "objective_prior_value": self.prior_value,
            "objective_labeled_fraction": self.objective_kwargs.get("labeled_fraction"),
            "num_labeled_particles": self.num_labeled_particles,
            "recon_weight": self.recon_weight,
            "geometry": None if self.geometry is None else self.geometry.to_dict(),
        }
