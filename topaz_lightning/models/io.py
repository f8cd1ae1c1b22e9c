"""Save and reload trained classifiers as one file: architecture config, weights and the model card.

The model card (``extra["card"]``, :class:`ModelCard`, defined in :mod:`topaz_lightning.models.card`
with its reader) is the one versioned record of how the classifier was trained. :func:`load_model`
checks it (or upgrades an older file's loose ``extra`` keys to one) and returns ``extra`` as a view
of it, so ``extra["geometry"]`` and ``extra["normalize_fit"]`` read the same in every file version.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from topaz_lightning.errors import InputError
from topaz_lightning.models.card import CARD_VERSION, ModelCard, _with_card, read_model_card
from topaz_lightning.utils.atomic import atomic_output

__all__ = [
    "CARD_VERSION",
    "ENTRY_POINT_GROUP",
    "FORMAT",
    "VERSION",
    "ModelCard",
    "build_model",
    "checkpoint_weights",
    "load_model",
    "known_model_classes",
    "model_classes",
    "plugin_model_classes",
    "read_model_card",
    "read_torch_file",
    "save_model",
]

FORMAT = "topaz_lightning.model"
VERSION = 1
#: installed packages register their model classes here (``[project.entry-points."topaz_lightning.models"]``
#: ``mynet = "myresearch.nets:MyNet"``): installed code is trusted, a model file is not
ENTRY_POINT_GROUP = "topaz_lightning.models"
#: a training checkpoint's suffix (Lightning): such a file is loaded with its run's model.pt
CHECKPOINT_SUFFIX = ".ckpt"


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
    card: ModelCard | None = None,
) -> Path:
    """Write ``net`` to ``path`` (atomically; refuses to overwrite unless ``overwrite``).

    ``model_config`` is the Hydra node with ``_target_`` that rebuilds the architecture (for
    the classifiers in this package, ``net.config`` is used when it is omitted). ``card`` is the
    training run's :class:`ModelCard` (stored as ``extra["card"]``); ``extra`` holds other plain
    metadata (numpy values are converted).
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
        "extra": _plain(_with_card(extra, card), "extra"),
    }
    with atomic_output(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


# Bounds on the architecture read from a model file, all in one place: a classifier is built from
# a few widths, kernel sizes, strides and flags; a crafted file asking for widths of 10**6 or a
# million blocks would only exhaust memory. Every integer argument (widths, units, kernels,
# strides) is at most _MAX_INT_ARG, every list at most _MAX_LIST_ARG long, and the built network
# (counted on the meta device, nothing allocated) at most _MAX_PARAMETERS weights: the largest
# configs/model network has 1.3 M.
_MAX_INT_ARG = 4096
_MAX_STR_ARG = 1000
_MAX_LIST_ARG = 64
_MAX_PARAMETERS = 20_000_000


def model_classes() -> dict[str, type[nn.Module]]:
    """The architectures a model file may name: every classifier (an ``nn.Module`` with
    ``score_map``) defined in a module of ``topaz_lightning.models``, keyed by its full name (``topaz_lightning.models.conv31.Conv31``)
    and, when the package exports it, by the short one (``topaz_lightning.models.Conv31``).

    Derived from the package itself, so a new model file in ``models/`` is loadable with no list
    to update. Classes outside the package are loadable only through an installed entry point
    (:func:`plugin_model_classes`); :func:`known_model_classes` is the union.
    """
    import importlib
    import inspect
    import pkgutil

    import topaz_lightning.models as package

    found: dict[str, type[nn.Module]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if _is_classifier(cls) and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    for name in getattr(package, "__all__", ()):
        cls = getattr(package, name, None)
        if inspect.isclass(cls) and cls in found.values():
            found[f"{package.__name__}.{name}"] = cls
    return found


def _is_classifier(cls: object) -> bool:
    # classifiers only (the contract's score_map): a model file never yields a decoder or a
    # building block that the commands would then use as a classifier
    return (
        isinstance(cls, type)
        and issubclass(cls, nn.Module)
        and callable(getattr(cls, "score_map", None))
    )


def plugin_model_classes() -> dict[str, type[nn.Module]]:
    """The model classes installed packages register through the entry-point group
    :data:`ENTRY_POINT_GROUP`, keyed by the entry point's target (``myresearch.nets:MyNet`` ->
    ``myresearch.nets.MyNet``) and by the class's own full name (what ``_target_`` usually says).

    Only installed entry points are ever imported (the user installed that code); a name read
    from a model file is looked up here, never imported. An entry point that fails to load or
    is not a classifier (an ``nn.Module`` with ``score_map``) is left out with a warning.
    """
    import importlib.metadata
    import logging

    found: dict[str, type[nn.Module]] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
        except Exception as err:  # noqa: BLE001 - a broken plug-in must not break model loading
            logging.getLogger("topaz_lightning").warning(
                "model entry point %r (%s) not loaded: %s", entry.name, entry.value, err
            )
            continue
        if not _is_classifier(cls):
            logging.getLogger("topaz_lightning").warning(
                "model entry point %r (%s) is not a classifier class (an nn.Module with "
                "score_map); left out",
                entry.name,
                entry.value,
            )
            continue
        found[str(entry.value).replace(":", ".").replace(" ", "")] = cls
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def known_model_classes() -> dict[str, type[nn.Module]]:
    """Every architecture a model file may name: :func:`model_classes` (this package's) and
    :func:`plugin_model_classes` (installed entry points); this package's win a name clash."""
    return {**plugin_model_classes(), **model_classes()}


def _names(classes: dict[str, type[nn.Module]], full: bool = False) -> str:
    if full:
        return ", ".join(sorted(classes))
    return ", ".join(sorted({c.__name__ for c in classes.values()}))


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
            raise bad(
                f"integer {value} is out of range for an architecture argument "
                f"(|value| <= {_MAX_INT_ARG})"
            )
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


def build_model(
    config: Mapping, path: str | os.PathLike | None = None, part: bool = False
) -> nn.Module:
    """Build the classifier described by a stored ``model_config`` (``_target_`` + kwargs), calling
    only a class of :func:`known_model_classes` (this package's, or an installed entry point's)
    with plain keyword arguments; InputError otherwise.

    A **composite** class (one with a ``from_config(build, **kwargs)`` classmethod, e.g. the
    checkpoint ensemble ``models.ensemble.HomogeneousEnsembleNet``) is built by it, and each of
    its parts by this function again (``part=True``), so every part passes the same checks; a
    part that is itself composite is refused (no nesting)."""
    import inspect

    path = Path(path) if path is not None else None
    if not isinstance(config, Mapping):
        raise InputError("model_config is not a mapping", path=path, where="model_config")
    target = config.get("_target_")
    classes = known_model_classes()
    if not isinstance(target, str) or target not in classes:
        raise InputError(
            f"architecture {target!r} is not a known model class (this package's: "
            f"{_names(model_classes())}; installed through the entry-point group "
            f"{ENTRY_POINT_GROUP}: {_names(plugin_model_classes(), full=True) or 'none'}); "
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
    if part and _composite(cls):
        raise InputError(
            f"{cls.__name__} is a composite model (an ensemble) and cannot be a part of another",
            path=path,
            where="model_config",
        )
    try:
        if _composite(cls):
            inspect.signature(cls.from_config).bind(None, **kwargs)
        else:
            inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise InputError(
            f"arguments do not fit {cls.__name__}: {err}", path=path, where="model_config"
        ) from None
    _check_size(cls, kwargs, path)
    return _construct(cls, kwargs, path)


def _composite(cls: type) -> bool:
    return callable(getattr(cls, "from_config", None))


def _construct(cls: type[nn.Module], kwargs: dict, path: Path | None) -> nn.Module:
    """``cls(**kwargs)`` (a composite: ``cls.from_config(build, **kwargs)``, its parts built by
    :func:`build_model`); arguments the class refuses are an InputError naming the file."""
    try:
        if _composite(cls):
            return cls.from_config(lambda part: build_model(part, path, part=True), **kwargs)
        return cls(**kwargs)
    except InputError:  # a part's own error, naming the file already
        raise
    except (TypeError, ValueError) as err:
        raise InputError(
            f"cannot build {cls.__name__} from the stored arguments: {err}",
            path=path,
            where="model_config",
        ) from err


def _check_size(cls: type[nn.Module], kwargs: dict, path: Path | None) -> None:
    """Refuse an architecture with more than ``_MAX_PARAMETERS`` weights (built on the meta
    device: shapes only, no memory)."""
    with torch.device("meta"):
        shell = _construct(cls, kwargs, path)
    count = sum(p.numel() for p in shell.parameters()) + sum(b.numel() for b in shell.buffers())
    if count > _MAX_PARAMETERS:
        raise InputError(
            f"{cls.__name__} with these arguments has {count:.3g} weights (at most "
            f"{_MAX_PARAMETERS:.3g} are accepted from a model file)",
            path=path,
            where="model_config",
        )


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the model saved at ``path``; returns ``(net, extra)`` with ``net`` in eval mode.
    A training checkpoint (``RUN/checkpoints/<name>.ckpt``) is read with its run's
    ``RUN/model.pt`` (:func:`_load_checkpoint`).

    A model file is untrusted input: it is read with ``torch.load(weights_only=True)`` (no
    pickled code runs) and the net is built only from this package's own model classes or those
    of installed entry points (:data:`ENTRY_POINT_GROUP`) with plain keyword arguments
    (:func:`build_model`), never by importing or instantiating a target named in the file.
    Raises InputError naming the file for a missing, unreadable or foreign file, an
    architecture that is not allowed, too large or cannot be built, weights that do not fit it,
    or a malformed model card. ``extra`` is the card's view (:meth:`ModelCard.as_extra`) for old
    and new files alike.
    """
    path = Path(path)
    if path.suffix == CHECKPOINT_SUFFIX:
        return _load_checkpoint(path)
    payload = read_torch_file(path, "model file")
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
    return net, read_model_card(extra, path).as_extra(extra)


def _load_checkpoint(path: Path) -> tuple[nn.Module, dict]:
    """The classifier of a training checkpoint ``RUN/checkpoints/<name>.ckpt`` (e.g. a step
    checkpoint, for a checkpoint ensemble) built as its run's ``RUN/model.pt`` (architecture,
    model card: geometry, preprocessing, pi) with the checkpoint's weights. The model file's
    place comes from ``path`` alone, never from the checkpoint's contents."""
    run_model = path.parent.parent / "model.pt"
    if not run_model.is_file():
        raise InputError(
            "a training checkpoint is read with its run's model.pt (architecture and model "
            f"card), which is not at {run_model} (has the run finished?)",
            path=path,
        )
    net, extra = load_model(run_model)
    # a run whose model.pt is a checkpoint ensemble: its checkpoints hold one member's weights
    member = getattr(net, "member_architecture", None)
    if callable(member):
        net = member()
    try:
        net.load_state_dict(checkpoint_weights(path), strict=True)
    except RuntimeError as err:
        raise InputError(
            f"the checkpoint's weights do not fit {run_model}'s architecture: {err}",
            path=path,
            where="state_dict",
        ) from err
    return net.eval(), extra


def checkpoint_weights(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The classifier's weights (``net.*``) of a training checkpoint, read with
    ``weights_only`` (:func:`read_torch_file`)."""
    state = read_torch_file(checkpoint, "checkpoint")
    weights = state.get("state_dict") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise InputError("not a training checkpoint (no state_dict)", path=checkpoint)
    return {k[len("net.") :]: v for k, v in weights.items() if k.startswith("net.")}


def read_torch_file(path: str | os.PathLike, what: str = "model file") -> Any:
    """``torch.load`` of an untrusted file with ``weights_only=True`` (no pickled code runs):
    InputError naming the file when it is missing or not readable that way. Model files and
    training checkpoints (``tzl-train ckpt_path=``) are both read through here."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", path=path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for truncated or foreign files
        raise InputError(
            f"not a readable {what} ({err.__class__.__name__}: {str(err).splitlines()[0][:200]})",
            path=path,
        ) from err
