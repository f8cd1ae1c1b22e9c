"""Lightning callbacks and loggers built from config nodes (``_target_``), for every task alike."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from topaz_lightning.errors import ConfigError

log = logging.getLogger("topaz_lightning")


def config_nodes(cfg: DictConfig | None, key: str) -> list[tuple[str, DictConfig]]:
    """Named config nodes with a ``_target_`` under ``cfg`` (a single node or a dict of nodes).

    Null entries are switched off; an entry without ``_target_`` (its group was switched off but
    an experiment still tunes it) is skipped with a warning.
    """
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


def instantiate_callbacks(cfg: DictConfig | None) -> list[Any]:
    """Build the callbacks of ``cfg.callbacks`` (a dict of nodes; null entries are skipped)."""
    from hydra.utils import instantiate

    return [instantiate(node) for _, node in config_nodes(cfg, "callbacks")]


def instantiate_loggers(cfg: DictConfig | None) -> list[Any]:
    """Build the loggers of ``cfg.logger`` (one node, a dict of nodes, or null for none)."""
    from hydra.utils import instantiate

    return [instantiate(node) for _, node in config_nodes(cfg, "logger")]


def describe_hardware(trainer: Any) -> str:
    """One line naming where a Lightning trainer runs: accelerator, devices, CPU threads."""
    import torch

    accelerator = type(getattr(trainer, "accelerator", None)).__name__.replace("Accelerator", "")
    devices = getattr(trainer, "device_ids", None) or []
    where = accelerator.lower() or "cpu"
    if where == "cuda":
        names = sorted({torch.cuda.get_device_name(i) for i in devices})
        where = f"GPU {', '.join(map(str, devices))} ({'; '.join(names)})"
    elif where == "cpu":
        where = "the CPU"
    processes = int(getattr(trainer, "world_size", 1) or 1)
    spread = f", {processes} processes" if processes > 1 else ""
    return f"{where}{spread}, {torch.get_num_threads()} CPU thread(s) per process"
