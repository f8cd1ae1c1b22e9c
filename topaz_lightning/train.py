"""Compose a PU training run from a Hydra config: data, classifier, objective, module, trainer; save the model."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from topaz_lightning.errors import ConfigError, OutputExistsError

log = logging.getLogger("topaz_lightning")


def _nodes(cfg: DictConfig | None, key: str) -> list[tuple[str, DictConfig]]:
    """Named config nodes with a ``_target_`` under ``cfg`` (a single node or a dict of nodes)."""
    if cfg is None:
        return []
    if not isinstance(cfg, DictConfig):
        raise ConfigError(
            key, f"expected a mapping of nodes with _target_, got {type(cfg).__name__}"
        )
    if "_target_" in cfg:
        return [(key, cfg)]
    out = []
    for name, node in cfg.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{key}.{name}", "expected a node with _target_ (or null to disable)")
        if "_target_" not in node:
            # e.g. an experiment tuned callbacks.held_out_picking.radius but callbacks=none
            log.warning("%s.%s has no _target_ (its group is switched off?): skipped", key, name)
            continue
        out.append((f"{key}.{name}", node))
    return out


def instantiate_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    """Build the callbacks of ``cfg.callbacks`` (a dict of nodes; null entries are skipped)."""
    return [instantiate(node) for _, node in _nodes(cfg, "callbacks")]


def instantiate_loggers(cfg: DictConfig | None) -> list[Any]:
    """Build the loggers of ``cfg.logger`` (one node, a dict of nodes, or null for none)."""
    return [instantiate(node) for _, node in _nodes(cfg, "logger")]


def _data_setting(datamodule: Any, cfg: DictConfig, *names: str) -> Any:
    """First non-None of the datamodule's attribute or the data config's key among ``names``."""
    for name in names:
        value = getattr(datamodule, name, None)
        if value is None:
            value = OmegaConf.select(cfg, f"data.{name}", default=None)
        if value is not None:
            return value
    return None


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

    Steps: seed everything (``cfg.seed``, worker seeds too); build the datamodule (``cfg.data``),
    classifier (``cfg.model``), objective (``cfg.objective``), optional decoder (``cfg.decoder``),
    the :class:`~topaz_lightning.module.PULitModule` (``cfg.module``), callbacks, loggers and the
    trainer; fit (resuming from ``cfg.ckpt_path`` if set: ``"last"`` or a checkpoint path); then
    save the trained classifier to ``<paths.output_dir>/model.pt`` with the run geometry
    (``extra["geometry"]``: downsample, normalization, radii, pi), the training GMM fit
    (``extra["normalize_fit"]``) and the receptive field that ``tzl-pick`` needs. A fresh run refuses
    (OutputExistsError, before any work) to replace an earlier run's outputs unless
    ``cfg.overwrite``.
    """
    from topaz_lightning.models import save_model

    output_dir = Path(cfg.paths.output_dir)
    # an interrupted run in this directory is continued, a finished one refused (see there)
    continue_from = _refuse_existing_outputs(output_dir, cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True)

    net = instantiate(cfg.model)
    if OmegaConf.select(cfg, "data.pi", default=None) == "auto":
        from topaz_lightning.data.pi_estimate import resolve_auto_pi

        resolve_auto_pi(cfg)  # replaces "auto" by the estimate (docs/reports.md)
    datamodule = instantiate(cfg.data)
    objective = instantiate(cfg.objective)
    patch_size = _data_setting(datamodule, cfg, "patch_size") or net.receptive_field
    decoder = build_decoder(cfg, net, int(patch_size))

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

    hint = few_labels_hint(
        OmegaConf.select(cfg, "data.num_labeled", default=None),
        OmegaConf.select(cfg, "trainer.max_steps", default=None),
    )
    if hint:
        log.warning(hint)

    ckpt_path = cfg.get("ckpt_path") or continue_from
    if ckpt_path not in (None, "last"):
        ckpt_file = Path(str(ckpt_path))
        if not ckpt_file.is_file():
            raise ConfigError("ckpt_path", f"checkpoint {ckpt_file} does not exist")
        ckpt_path = str(ckpt_file.resolve())
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics: dict[str, Any] = {}
    for key, value in trainer.callback_metrics.items():
        value = _plain(value)
        if isinstance(value, float | int) and math.isfinite(value):
            metrics[key] = float(value)
    metrics["global_step"] = int(trainer.global_step)

    geometry = getattr(datamodule, "geometry", None)
    if geometry is None:
        raise ConfigError("data", "the datamodule resolved no run geometry (data.geometry)")
    extra = {
        # the run's pixel frame, radii and prior: tzl-pick / tzl-evaluate take their defaults here
        "geometry": geometry.to_dict(),
        # a copy of two geometry values for readers of older model files (tzl-pick until it reads
        # the record); read extra["geometry"] in new code
        "preprocess": {"downsample": geometry.downsample, "normalize": geometry.normalize},
        "receptive_field": int(net.receptive_field),
        "patch_size": int(patch_size),
        "global_step": int(trainer.global_step),
        "objective": cfg.objective.get("_target_"),
        # what was optimized: PN replaces a PU objective when every positive is labeled
        "objective_optimized": module.hparams.get("objective_optimized"),
        "objective_prior": module.hparams.get("objective_prior"),
        "objective_prior_value": module.hparams.get("objective_prior_value"),
        "seed": int(cfg.seed),
    }
    normalize_fit = getattr(datamodule, "normalize_fit", None)
    if normalize_fit is not None:
        # the GMM fitted on the training micrographs, for tzl-pick normalize_fit=training
        extra["normalize_fit"] = normalize_fit
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    if trainer.is_global_zero:
        model_path = output_dir / "model.pt"
        save_model(model_path, module.net, model_config, extra=extra, overwrite=True)
        metrics["model_path"] = str(model_path)
        best = _best_checkpoint(trainer)
        if best is not None:
            best_module = type(module).load_from_checkpoint(
                best,
                net=instantiate(cfg.model),
                objective=instantiate(cfg.objective),
                decoder=build_decoder(cfg, net, int(patch_size)),
                map_location="cpu",
            )
            best_path = output_dir / "model_best.pt"
            save_model(best_path, best_module.net, model_config, extra=extra, overwrite=True)
            metrics["best_model_path"] = str(best_path)
            metrics["best_checkpoint"] = str(best)
        _write_metrics(output_dir / "metrics.json", metrics)
        log.info("saved the trained classifier to %s", model_path)
    return metrics


#: what a finished run leaves in its output directory
RUN_OUTPUTS = ("model.pt", "model_best.pt", "metrics.json")


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


_CONTINUE_MAY_CHANGE = ("ckpt_path", "overwrite", "paths", "trainer.max_steps")


def _refuse_existing_outputs(output_dir: Path, cfg: DictConfig) -> str | None:
    """Before any work, for a run without ``ckpt_path`` in a directory an earlier run used.

    Returns the checkpoint to continue from, or None for a fresh start; never leaves two "last"
    checkpoints (Lightning would save ``last-v1.ckpt`` beside a stale ``last.ckpt``):

    - ``overwrite=true``: start over; the earlier run's checkpoints are removed first.
    - a finished run (model.pt, model_best.pt or metrics.json there): refused.
    - an interrupted run (``checkpoints/last.ckpt``, no model.pt): continued from it, if it was
      written with the same settings (``trainer.max_steps`` may grow); else refused, naming them.
    - other checkpoints without a last.ckpt: refused.

    A resumed run (``ckpt_path`` set) rewrites the outputs by design.
    """
    if cfg.get("ckpt_path") is not None:
        return None
    checkpoint_dir = Path(
        str(OmegaConf.select(cfg, "paths.checkpoint_dir", default=output_dir / "checkpoints"))
    )
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
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        saved = state["hyper_parameters"]["run_config"]
    except Exception as err:  # noqa: BLE001 - unreadable or foreign checkpoint
        raise ConfigError(
            "ckpt_path",
            f"{checkpoint} (left by an earlier run) cannot be read as this package's checkpoint "
            f"({err}); start over with overwrite=true or use another run directory",
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
        if now.get(key) != before.get(key)
        and not any(key.startswith(f"{k}.") for k in _CONTINUE_MAY_CHANGE)
    )


def _write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Final metrics as JSON (one file per run, easy to gather across a sweep)."""
    import json

    from topaz_lightning.utils.atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    """Path of the monitored best checkpoint, if a ModelCheckpoint with a monitor saved one."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.monitor and cb.best_model_path:
            return cb.best_model_path
    return None
