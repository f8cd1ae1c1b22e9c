"""Save and reload trained classifiers as one file: architecture config, weights and extras."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from topaz_lightning.errors import InputError
from topaz_lightning.utils.atomic import atomic_output

FORMAT = "topaz_lightning.model"
VERSION = 1


def _plain(value: Any, key: str) -> Any:
    """Convert ``value`` to types that ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, np.generic):  # before float: np.float64 subclasses float
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    try:  # OmegaConf containers
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return _plain(OmegaConf.to_container(value, resolve=True), key)
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"{key}: cannot store a {type(value).__name__} in a model file")


def save_model(
    path: str | os.PathLike,
    net: nn.Module,
    model_config: Mapping | None = None,
    extra: Mapping | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``net`` to ``path`` (atomically; refuses to overwrite unless ``overwrite``).

    ``model_config`` is the Hydra node with ``_target_`` that rebuilds the architecture (for
    the classifiers in this package, ``net.config`` is used when it is omitted). ``extra`` holds
    plain metadata (pi, downsampling, radius, ...); numpy values are converted.
    """
    if model_config is None:
        model_config = getattr(net, "config", None)
        if model_config is None:
            raise ValueError("model_config is required for a model without a .config attribute")
    config = _plain(model_config, "model_config")
    if "_target_" not in config:
        raise ValueError("model_config needs a _target_ naming the model class")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": config,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "extra": _plain(dict(extra or {}), "extra"),
    }
    with atomic_output(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the model saved at ``path``; returns ``(net, extra)`` with ``net`` in eval mode.

    Raises InputError naming the file for a missing, unreadable or foreign file, an
    architecture that cannot be built, or weights that do not fit the architecture.
    """
    from hydra.utils import instantiate

    path = Path(path)
    if not path.is_file():
        raise InputError("model file not found", path=path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for truncated or foreign files
        raise InputError(
            f"not a readable model file ({err.__class__.__name__}: {err})", path=path
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(
            f"not a {FORMAT} file (expected keys format, model_config, state_dict)", path=path
        )
    for key in ("model_config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise InputError(f"missing or malformed entry '{key}'", path=path, where=key)
    config = payload["model_config"]
    try:
        net = instantiate(config)
    except Exception as err:  # hydra wraps import and argument errors in its own types
        raise InputError(
            f"cannot build the model from {config.get('_target_')!r}: {err}",
            path=path,
            where="model_config",
        ) from err
    try:
        net.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise InputError(
            f"weights do not match the architecture: {err}", path=path, where="state_dict"
        ) from err
    net.eval()
    return net, dict(payload.get("extra") or {})
