"""Compose a PU training run from a Hydra config: data, classifier, objective, module, trainer; save the model."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from topaz_lightning.callbacks.checkpoint import best_checkpoint, check_checkpoint
from topaz_lightning.callbacks.ensemble import ensemble_metrics, export_model
from topaz_lightning.errors import ConfigError, OutputExistsError
from topaz_lightning.utils.continuation import CONTINUE_MAY_CHANGE, RESUME_MAY_CHANGE, may_change
from topaz_lightning.utils.distributed import is_launch_rank_zero

log = logging.getLogger("topaz_lightning")

__all__ = [
    "CONTINUE_MAY_CHANGE",
    "RESUME_MAY_CHANGE",
    "build_decoder",
    "check_checkpoint",
    "instantiate_callbacks",
    "instantiate_loggers",
    "train",
]


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            return value
    return value


def build_decoder(cfg: DictConfig, net: Any, patch_size: int) -> Any:
    """Instantiate ``cfg.decoder`` (or return None), filling num_features/patch_size left unset.

    The decoder node may be a partial (``_partial_: true``) or a full node; either way the
    classifier's ``num_features`` and the data's patch size are supplied unless the node sets them.
    """
    node = cfg.get("decoder")
    if node is None:
        return None
    kwargs = {}
    if OmegaConf.select(node, "num_features", default=None) is None:
        kwargs["num_features"] = int(net.num_features)
    if OmegaConf.select(node, "patch_size", default=None) is None:
        kwargs["patch_size"] = int(patch_size)
    if node.get("_partial_", False):
        return instantiate(node)(**kwargs)
    return instantiate(node, **kwargs)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a PU classifier as configured; return the final metrics and output paths.

    Steps: seed everything (``cfg.seed``, worker seeds too); with ``data.pi=auto`` estimate the
    prior first (:func:`topaz_lightning.pi_estimate.estimate_auto_pi`); build the datamodule
    (``cfg.data``) and set it up, which resolves the run geometry; build the classifier
    (``cfg.model``) and hand the wiring down explicitly: the patch size (``data.patch_size``, or
    the classifier's receptive field) to the datamodule and the decoder, the run geometry to the
    :class:`~topaz_lightning.module.PULitModule` (``cfg.module``) and to every callback with a
    ``set_run_geometry`` method. Fit (resuming from ``cfg.ckpt_path``: ``"last"`` or a checkpoint
    path, read safely first, :func:`check_checkpoint`); then save the trained classifier to
    ``<paths.output_dir>/model.pt`` with its model card (:class:`~topaz_lightning.models.ModelCard`:
    geometry, preprocessing with the GMM fit, objective optimized, data fingerprint), and the
    training curves from the CSV log to ``training_curve.png``. A fresh run refuses
    (OutputExistsError, before any work) to replace an earlier run's outputs unless
    ``cfg.overwrite``. ``resume=<run dir>`` is the command line's (``tzl-train``); here it is
    refused.
    """
    from topaz_lightning.models import checkpoint_weights, save_model

    if cfg.get("resume") not in (None, ""):
        raise ConfigError(
            "resume",
            "is read by the tzl-train command line, which replays the run's own settings; from "
            "Python compose the run's .hydra/overrides.yaml with paths.output_dir=<run dir>",
        )
    output_dir = Path(cfg.paths.output_dir)
    # an interrupted run in this directory is continued, a finished one refused (see there)
    continue_from = _refuse_existing_outputs(output_dir, cfg)
    ckpt_path = cfg.get("ckpt_path") or continue_from
    checkpoint_dir = _checkpoint_dir(cfg, output_dir)
    if ckpt_path == "last" and (checkpoint_dir / "last.ckpt").is_file():
        ckpt_path = str(checkpoint_dir / "last.ckpt")
    if ckpt_path not in (None, "last"):
        if not Path(str(ckpt_path)).is_file():
            raise ConfigError("ckpt_path", f"checkpoint {ckpt_path} does not exist")
        ckpt_path = str(check_checkpoint(Path(str(ckpt_path)), checkpoint_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True)

    # construction order = random-number order: as before the wiring was made explicit, so a
    # seed gives the same weights and batches
    net = instantiate(cfg.model)
    data_overrides: dict[str, Any] = {}
    pi_metrics: dict[str, float] = {}  # data.pi=auto's estimate and its fits, for metrics.json
    if OmegaConf.select(cfg, "data.pi", default=None) == "auto":
        from topaz_lightning.pi_estimate import estimate_auto_pi

        estimate = estimate_auto_pi(cfg)  # docs/reports.md
        data_overrides = {"pi": float(estimate.pi), "particles_per_micrograph": None}
        pi_metrics = estimate.metrics()
    datamodule = instantiate(cfg.data, **data_overrides)
    objective = instantiate(cfg.objective)
    patch_size = int(datamodule.patch_size or net.receptive_field)
    decoder = build_decoder(cfg, net, patch_size)

    run_config = OmegaConf.to_container(cfg, resolve=True)
    # partial first: keyword objects passed to instantiate() would be converted and re-instantiated
    module_factory = instantiate(cfg.module, _partial_=True)
    module = module_factory(net=net, objective=objective, decoder=decoder, run_config=run_config)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers if loggers else False
    )
    # the resolved config reaches the loggers as the module's hyperparameters (run_config)
    from topaz_lightning.utils.components import describe_hardware

    log.info(
        "training %s (%.0f K parameters, receptive field %s px) on %s",
        type(net).__name__,
        sum(p.numel() for p in net.parameters()) / 1e3,
        getattr(net, "receptive_field", "?"),
        describe_hardware(trainer),
    )

    # the wiring, handed down once the data are read: patch size and run geometry
    if is_launch_rank_zero():
        datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.set_patch_size(patch_size)
    geometry = datamodule.geometry
    from topaz_lightning.data.splits import record_split

    record_split(output_dir, datamodule, geometry, write=is_launch_rank_zero())
    module.set_run_geometry(geometry)
    for callback in callbacks:
        if callable(getattr(callback, "set_run_geometry", None)):
            callback.set_run_geometry(geometry)

    hint = few_labels_hint(
        OmegaConf.select(cfg, "data.num_labeled", default=None),
        OmegaConf.select(cfg, "trainer.max_steps", default=None),
    )
    if hint:
        log.warning(hint)

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics: dict[str, Any] = {}
    for key, value in trainer.callback_metrics.items():
        value = _plain(value)
        if isinstance(value, float | int) and math.isfinite(value):
            metrics[key] = float(value)
    metrics["global_step"] = int(trainer.global_step)
    metrics.update(pi_metrics)

    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    if trainer.is_global_zero:
        step = int(trainer.global_step)
        # model.pt: the checkpoint ensemble (callbacks.checkpoint_ensemble) or the last weights
        net, net_config, steps = export_model(callbacks, module.net, model_config, step)
        # the single networks' card; model.pt's names its members' steps when an ensemble
        card = model_card(cfg, datamodule, module, patch_size, step)
        ensemble_card = card
        if len(steps) > 1:
            ensemble_card = replace(card, training={**card.training, "ensemble_steps": steps})
        model_path = output_dir / "model.pt"
        save_model(model_path, net, net_config, card=ensemble_card, overwrite=True)
        metrics["model_path"] = str(model_path)
        if len(steps) > 1:
            last_path = output_dir / "model_last.pt"
            save_model(last_path, module.net, model_config, card=card, overwrite=True)
            metrics.update(model_steps=steps, last_model_path=str(last_path))
            metrics.update(ensemble_metrics(callbacks))
        best = best_checkpoint(trainer)
        if best is not None:
            best_net = instantiate(cfg.model)
            best_net.load_state_dict(checkpoint_weights(best))
            best_path = output_dir / "model_best.pt"
            save_model(best_path, best_net, model_config, card=card, overwrite=True)
            metrics["best_model_path"] = str(best_path)
            metrics["best_checkpoint"] = str(best)
        _write_metrics(output_dir / "metrics.json", metrics)
        log.info("saved the trained classifier to %s", model_path)
        plot_training_log(trainer, output_dir / "training_curve.png")
    return metrics


def model_card(cfg: DictConfig, datamodule: Any, module: Any, patch_size: int, global_step: int):
    """The :class:`~topaz_lightning.models.ModelCard` of a finished run (model.pt's record)."""
    from topaz_lightning.models import ModelCard

    geometry = datamodule.geometry
    fit = getattr(datamodule, "normalize_fit", None)
    return ModelCard(
        geometry=geometry,
        preprocessing={
            "downsample": float(geometry.downsample),
            "normalize": str(geometry.normalize),
            # the GMM fitted on the training micrographs, for tzl-pick normalize_fit=training
            "gmm": None if fit is None else fit.to_record(),
        },
        objective={
            "configured": cfg.objective.get("_target_"),
            # what was optimized: PN replaces a PU objective when every positive is labeled
            "optimized": type(module.active_objective).__name__,
            "prior": module.prior_name,
            "prior_value": module.prior_value,
            "labeled_fraction": module.objective_kwargs.get("labeled_fraction"),
        },
        training={
            "receptive_field": int(module.net.receptive_field),
            "patch_size_px_model": int(patch_size),
            "global_step": int(global_step),
            "seed": int(cfg.seed),
            "data_fingerprint": datamodule.data_fingerprint(),
            # label-free micrographs that gave unlabeled patches (data.unlabeled_micrographs)
            "num_unlabeled_micrographs": len(getattr(datamodule, "unlabeled_micrographs", {})),
        },
    )


def instantiate_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    """Build the callbacks of ``cfg.callbacks`` (:mod:`topaz_lightning.utils.components`)."""
    from topaz_lightning.utils.components import instantiate_callbacks as build

    return build(cfg)


def instantiate_loggers(cfg: DictConfig | None) -> list[Any]:
    """Build the loggers of ``cfg.logger`` (:mod:`topaz_lightning.utils.components`)."""
    from topaz_lightning.utils.components import instantiate_loggers as build

    return build(cfg)


# ------------------------------------------------------------------------------------------------
# checkpoints: untrusted input like model files


def _checkpoint_dir(cfg: DictConfig, output_dir: Path) -> Path:
    return Path(
        str(OmegaConf.select(cfg, "paths.checkpoint_dir", default=output_dir / "checkpoints"))
    )


#: what a finished run leaves in its output directory
RUN_OUTPUTS = ("model.pt", "model_best.pt", "model_last.pt", "metrics.json")


#: settings a continued run may change: where things go, how far to train
#: with at most this many labeled particles a long run is flagged (the real-data folds of
#: docs/accuracy.md: 10 labels peaked at 1-2k steps and lost AUPR by 5k; 100 labels still gained
#: at 10k)
FEW_LABELED_PARTICLES = 30
FEW_LABELS_MAX_STEPS = 3000


def few_labels_hint(num_labeled: Any, max_steps: Any) -> str | None:
    """The warning for a long run on very few labels, or None."""
    try:
        n, steps = int(num_labeled), int(max_steps)
    except (TypeError, ValueError):
        return None
    if n > FEW_LABELED_PARTICLES or steps <= FEW_LABELS_MAX_STEPS:
        return None
    return (
        f"{n} labeled particles and trainer.max_steps={steps}: on the real leave-one-micrograph-"
        "out folds (docs/accuracy.md) 10 labels gave their best AUPR at 1,000-2,000 steps and "
        "lost 0.024 AUPR (0.10 P@R0.9) by 5,000; consider trainer.max_steps=2000, or give "
        "validation micrographs (data.val_list) and pick with model_best.pt"
    )


def _refuse_existing_outputs(output_dir: Path, cfg: DictConfig) -> str | None:
    """Before any work, for a run without ``ckpt_path`` in a directory an earlier run used.

    Returns the checkpoint to continue from, or None for a fresh start; never leaves two "last"
    checkpoints (Lightning would save ``last-v1.ckpt`` beside a stale ``last.ckpt``):

    - ``overwrite=true``: start over; the earlier run's checkpoints are removed first.
    - a finished run (model.pt, model_best.pt or metrics.json there): refused.
    - an interrupted run (``checkpoints/last.ckpt``, no model.pt): continued from it, if it was
      written with the same settings (:data:`CONTINUE_MAY_CHANGE` may differ: ``trainer.max_steps``,
      checkpoint and report cadence, paths); else refused, naming them.
    - other checkpoints without a last.ckpt: refused.

    A resumed run (``ckpt_path`` set) rewrites the outputs by design.
    """
    if cfg.get("ckpt_path") is not None:
        return None
    checkpoint_dir = _checkpoint_dir(cfg, output_dir)
    stale = sorted(checkpoint_dir.glob("*.ckpt")) if checkpoint_dir.is_dir() else []
    if bool(cfg.get("overwrite", False)):
        for path in stale:
            path.unlink()
        if stale:
            log.info("overwrite=true: removed %d checkpoint(s) of the earlier run", len(stale))
        return None
    for name in RUN_OUTPUTS:
        if (output_dir / name).exists():
            raise OutputExistsError(output_dir / name)
    last = checkpoint_dir / "last.ckpt"
    if not last.is_file():
        if stale:
            raise OutputExistsError(stale[0])
        return None
    changed = _changed_settings(last, cfg)
    if changed:
        raise ConfigError(
            "ckpt_path",
            f"{last} is from an interrupted run with other settings ({', '.join(changed[:5])}); "
            "continue it anyway with ckpt_path=last, start over with overwrite=true, or use "
            "another run directory",
        )
    log.info(
        "continuing the interrupted run in %s from %s (overwrite=true starts over)",
        output_dir,
        last,
    )
    return str(last.resolve())


def _changed_settings(checkpoint: Path, cfg: DictConfig) -> list[str]:
    """Dotted keys whose value differs between ``cfg`` and the run that wrote ``checkpoint``."""
    from topaz_lightning.models import read_torch_file

    try:
        state = read_torch_file(checkpoint, "checkpoint")  # weights_only, like model files
        saved = state["hyper_parameters"]["run_config"]
    except Exception as err:  # noqa: BLE001 - unreadable or foreign checkpoint
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(
            "ckpt_path",
            f"{checkpoint} (left by an earlier run) cannot be read as this package's checkpoint "
            f"({reason}); start over with overwrite=true or use another run directory",
        ) from err

    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(node, dict):
            return {prefix: node}
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flat(value, f"{prefix}{key}."))
        return out if out else {prefix: node}

    now = flat(OmegaConf.to_container(cfg, resolve=True))
    before = flat(saved if isinstance(saved, dict) else {})
    return sorted(
        key.rstrip(".")
        for key in set(now) | set(before)
        if now.get(key) != before.get(key) and not may_change(key, CONTINUE_MAY_CHANGE)
    )


def _write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Final metrics as JSON (one file per run, easy to gather across a sweep)."""
    import json

    from topaz_lightning.utils.atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def plot_training_log(trainer: pl.Trainer, path: Path) -> Path | None:
    """Draw the run's CSV log (loss terms, held-out metrics over steps) to ``path``.

    Every version of the CSV logger's directory is read, so a continued run's picture covers the
    whole run (:func:`topaz_lightning.plots.training_curve.read_training_log`). Without a CSV
    logger, or with an empty log, one info line and no picture; a failure to draw is a warning,
    never the end of a finished training.
    """
    from pytorch_lightning.loggers import CSVLogger

    from topaz_lightning.plots.training_curve import plot_training_curve, read_training_log

    csv = [lg for lg in trainer.loggers if isinstance(lg, CSVLogger)]
    if not csv:
        log.info("no CSV log (logger=csv or many writes one): no %s", path.name)
        return None
    try:
        table = read_training_log(Path(csv[0].root_dir))
        if table.empty:
            log.info("the CSV log holds no rows yet: no %s", path.name)
            return None
        plot_training_curve(table, path, overwrite=True)
    except Exception as err:  # noqa: BLE001 - a picture must not fail a finished run
        log.warning("could not draw %s: %s", path.name, err)
        return None
    log.info("training curves: %s", path)
    return path
