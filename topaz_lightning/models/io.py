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


# bounds on the constructor arguments read from a model file: a classifier is built from a few
# widths and flags, and an absurd width from a crafted file would only exhaust memory
_MAX_INT_ARG = 1_000_000
_MAX_STR_ARG = 1000
_MAX_LIST_ARG = 64


def model_classes() -> dict[str, type[nn.Module]]:
    """The architectures a model file may name: every classifier (an ``nn.Module`` with
    ``score_map``) defined in a module of ``topaz_lightning.models``, keyed by its full name (``topaz_lightning.models.conv31.Conv31``)
    and, when the package exports it, by the short one (``topaz_lightning.models.Conv31``).

    Derived from the package itself, so a new model file in ``models/`` is loadable with no list
    to update; nothing outside the package can ever be named.
    """
    import importlib
    import inspect
    import pkgutil

    import topaz_lightning.models as package

    found: dict[str, type[nn.Module]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            # classifiers only (the contract's score_map): a model file never yields a decoder
            # or a building block that the commands would then use as a classifier
            is_classifier = issubclass(cls, nn.Module) and callable(getattr(cls, "score_map", None))
            if is_classifier and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    for name in getattr(package, "__all__", ()):
        cls = getattr(package, name, None)
        if inspect.isclass(cls) and cls in found.values():
            found[f"{package.__name__}.{name}"] = cls
    return found


def _plain_argument(value: Any, key: str, path: Path, depth: int = 0) -> Any:
    """``value`` if it is a plain constructor argument (numbers, strings, lists/maps of them)."""

    def bad(problem: str) -> InputError:
        return InputError(problem, path=path, where=f"model_config.{key}")

    if depth > 3:
        raise bad("nested too deeply for a constructor argument")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_INT_ARG:
            raise bad(f"integer {value} is out of range (|value| <= {_MAX_INT_ARG})")
        return value
    if isinstance(value, float):
        if not np.isfinite(value):
            raise bad(f"{value} is not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > _MAX_STR_ARG:
            raise bad(f"string of {len(value)} characters is too long")
        return value
    if isinstance(value, list | tuple):
        if len(value) > _MAX_LIST_ARG:
            raise bad(f"list of {len(value)} entries is too long")
        return [_plain_argument(v, f"{key}[{i}]", path, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or k.startswith("_"):
                # _target_, _partial_, _args_ ... would ask for something to be built or called
                raise bad(f"key {k!r} is not allowed in a constructor argument")
            out[k] = _plain_argument(v, f"{key}.{k}", path, depth + 1)
        return out
    raise bad(f"a {type(value).__name__} is not a plain constructor argument")


def build_model(config: Mapping, path: str | os.PathLike | None = None) -> nn.Module:
    """Build the classifier described by a stored ``model_config`` (``_target_`` + kwargs), calling
    only a class of :func:`model_classes` with plain keyword arguments; InputError otherwise."""
    import inspect

    path = Path(path) if path is not None else None
    if not isinstance(config, Mapping):
        raise InputError("model_config is not a mapping", path=path, where="model_config")
    target = config.get("_target_")
    classes = model_classes()
    if not isinstance(target, str) or target not in classes:
        shown = ", ".join(sorted({c.__name__ for c in classes.values()}))
        raise InputError(
            f"architecture {target!r} is not one of this package's model classes ({shown}); "
            "refusing to build it",
            path=path,
            where="model_config._target_",
        )
    kwargs = {}
    for key, value in config.items():
        if key == "_target_":
            continue
        if not isinstance(key, str) or key.startswith("_"):
            raise InputError(
                f"key {key!r} is not allowed (only _target_ and plain keyword arguments)",
                path=path,
                where="model_config",
            )
        kwargs[key] = _plain_argument(value, key, path)
    cls = classes[target]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise InputError(
            f"arguments do not fit {cls.__name__}: {err}", path=path, where="model_config"
        ) from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"cannot build {cls.__name__} from the stored arguments: {err}",
            path=path,
            where="model_config",
        ) from err


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the model saved at ``path``; returns ``(net, extra)`` with ``net`` in eval mode.

    A model file is untrusted input: it is read with ``torch.load(weights_only=True)`` (no
    pickled code runs) and the net is built only from this package's own model classes with
    plain keyword arguments (:func:`build_model`), never by instantiating an arbitrary target.
    Raises InputError naming the file for a missing, unreadable or foreign file, an
    architecture that is not allowed or cannot be built, or weights that do not fit it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("model file not found", path=path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for truncated or foreign files
        raise InputError(
            f"not a readable model file ({err.__class__.__name__}: {str(err)[:300]})", path=path
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(
            f"not a {FORMAT} file (expected keys format, model_config, state_dict)", path=path
        )
    for key in ("model_config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise InputError(f"missing or malformed entry '{key}'", path=path, where=key)
    state = payload["state_dict"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise InputError("state_dict must map names to tensors", path=path, where="state_dict")
    net = build_model(payload["model_config"], path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(
            f"weights do not match the architecture: {err}", path=path, where="state_dict"
        ) from err
    net.eval()
    extra = payload.get("extra") or {}
    if not isinstance(extra, dict):
        raise InputError("entry 'extra' is not a mapping", path=path, where="extra")
    return net, dict(extra)
