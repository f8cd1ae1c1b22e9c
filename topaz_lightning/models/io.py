"""Save and reload trained classifiers as one file: architecture config, weights and the model card.

The model card (``extra["card"]``, :class:`ModelCard`) is the one versioned record of how the
classifier was trained: the run geometry (frames, radii, prior), the preprocessing with its GMM
fit, the objective optimized and the training data's fingerprint. :func:`load_model` is its one
reader: it checks the card (or upgrades an older file's loose ``extra`` keys to one) and returns
``extra`` as a view of it, so ``extra["geometry"]`` and ``extra["normalize_fit"]`` read the same
in every file version.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    _check_size(cls, kwargs, path)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"cannot build {cls.__name__} from the stored arguments: {err}",
            path=path,
            where="model_config",
        ) from err


def _check_size(cls: type[nn.Module], kwargs: dict, path: Path | None) -> None:
    """Refuse an architecture with more than ``_MAX_PARAMETERS`` weights (built on the meta
    device: shapes only, no memory)."""
    try:
        with torch.device("meta"):
            shell = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"cannot build {cls.__name__} from the stored arguments: {err}",
            path=path,
            where="model_config",
        ) from err
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

    A model file is untrusted input: it is read with ``torch.load(weights_only=True)`` (no
    pickled code runs) and the net is built only from this package's own model classes with
    plain keyword arguments (:func:`build_model`), never by instantiating an arbitrary target.
    Raises InputError naming the file for a missing, unreadable or foreign file, an
    architecture that is not allowed, too large or cannot be built, weights that do not fit it,
    or a malformed model card. ``extra`` is the card's view (:meth:`ModelCard.as_extra`) for old
    and new files alike.
    """
    path = Path(path)
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


# ------------------------------------------------------------------------------------------------
# the model card

#: version of the card record; files without a card (extra["geometry"], extra["preprocess"], ...
#: as loose keys) read as version 1
CARD_VERSION = 2
_MAX_CARD_STR = 300


@dataclass(frozen=True)
class ModelCard:
    """How a classifier was trained, in one versioned record (``model.pt`` ``extra["card"]``).

    - ``geometry``: the run's :class:`~topaz_lightning.geometry.RunGeometry` (downsample, pixel
      size, particle radius, label/NMS/match radii, pi, pi_unlabeled and their sources), or None
      for a file that never had one.
    - ``preprocessing``: ``downsample``, ``normalize`` and ``gmm``, the GMM fit of the training
      micrographs (``GMMFit.to_record()``, None unless normalize is gmm).
    - ``objective``: ``configured`` (the config's ``_target_``), ``optimized`` (the class the
      module optimized: PN replaces a PU objective when every positive is labeled), ``prior``
      (the name of the prior it received), ``prior_value``, ``labeled_fraction`` (NNPU).
    - ``training``: ``receptive_field``, ``patch_size_px_model``, ``global_step``, ``seed`` and
      ``data_fingerprint`` (sha256 of the training/validation micrographs as the model saw them
      and of the labeled particles, :meth:`PUDataModule.data_fingerprint`).
    """

    geometry: Any = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    objective: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    card_version: int = CARD_VERSION

    def to_record(self) -> dict[str, Any]:
        """Plain values for the model file."""
        return {
            "card_version": int(self.card_version),
            "geometry": None if self.geometry is None else self.geometry.to_dict(),
            "preprocessing": dict(self.preprocessing),
            "objective": dict(self.objective),
            "training": dict(self.training),
        }

    @property
    def downsample(self) -> float:
        """The training run's downsampling factor (1 when unknown)."""
        if self.geometry is not None:
            return float(self.geometry.downsample)
        return float(self.preprocessing.get("downsample") or 1.0)

    @property
    def normalize(self) -> str | None:
        """The training run's normalization (gmm, standardize, none), None when unknown."""
        value = self.preprocessing.get("normalize")
        if value is None and self.geometry is not None:
            value = self.geometry.normalize
        return value

    def as_extra(self, stored: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``extra`` as the commands read it: ``card`` plus the card's values under the keys that
        files before the card used (``geometry``, ``normalize_fit``, ``receptive_field``, ...), so
        code reading either sees the same values. A file from before the card (version 1) is
        returned as stored, without a ``card`` key (:func:`read_model_card` gives its card)."""
        if self.card_version < 2:
            # a file from before the card: its keys as stored (checked by read_model_card)
            return dict(stored or {})
        out = {k: v for k, v in dict(stored or {}).items() if k != "card"}
        out["card"] = self.to_record()
        if self.geometry is not None:
            out["geometry"] = self.geometry.to_dict()
            out.pop("preprocess", None)  # the geometry holds downsample and normalize
        elif self.preprocessing:
            out["preprocess"] = {
                "downsample": self.preprocessing.get("downsample"),
                "normalize": self.preprocessing.get("normalize"),
            }
        if self.preprocessing.get("gmm") is not None:
            out["normalize_fit"] = self.preprocessing["gmm"]
        training_keys = {"receptive_field": "receptive_field", "patch_size_px_model": "patch_size"}
        for key in ("global_step", "seed"):
            training_keys[key] = key
        for key, name in training_keys.items():
            if self.training.get(key) is not None:
                out[name] = self.training[key]
        objective_keys = {
            "configured": "objective",
            "optimized": "objective_optimized",
            "prior": "objective_prior",
            "prior_value": "objective_prior_value",
        }
        for key, name in objective_keys.items():
            if self.objective.get(key) is not None:
                out[name] = self.objective[key]
        return out


def _with_card(extra: Mapping | None, card: ModelCard | None) -> dict:
    out = dict(extra or {})
    if card is not None:
        out["card"] = card.to_record()
    return out


def read_model_card(extra: Mapping[str, Any], path: str | os.PathLike | None = None) -> ModelCard:
    """THE reader of a model file's training record: ``extra["card"]`` checked field by field,
    or, for a file written before the card (version 1), the card built from its loose keys
    (``geometry``, ``preprocess``, ``normalize_fit``, ``receptive_field``, ``objective*``, ...).
    Anything malformed is an InputError naming the file and the key."""
    source = None if path is None else os.fspath(path)
    if "card" in extra:
        record = extra["card"]
        if not isinstance(record, Mapping):
            raise InputError("the model card is not a mapping", path=source, where="extra.card")
        version = record.get("card_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 2:
            raise InputError(
                f"card_version must be an integer >= 2, got {version!r}",
                path=source,
                where="extra.card.card_version",
            )
        if version > CARD_VERSION:
            raise InputError(
                f"model card version {version} is newer than this package reads "
                f"({CARD_VERSION}); update topaz-lightning",
                path=source,
                where="extra.card.card_version",
            )
        return _card_from(record, source, "extra.card", version)
    legacy = {
        "geometry": extra.get("geometry"),
        "preprocessing": {
            **_mapping(extra.get("preprocess"), source, "extra.preprocess"),
            "gmm": extra.get("normalize_fit"),
        },
        "objective": {
            "configured": extra.get("objective"),
            "optimized": extra.get("objective_optimized"),
            "prior": extra.get("objective_prior"),
            "prior_value": extra.get("objective_prior_value"),
        },
        "training": {
            "receptive_field": extra.get("receptive_field"),
            "patch_size_px_model": extra.get("patch_size"),
            "global_step": extra.get("global_step"),
            "seed": extra.get("seed"),
        },
    }
    return _card_from(legacy, source, "extra", 1)


def _mapping(value: Any, source: str | None, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError("expected a mapping", path=source, where=where)
    return dict(value)


_CARD_FIELDS: dict[str, dict[str, str]] = {
    # section -> key -> kind: "str", "float", "int", "gmm"
    "preprocessing": {"downsample": "float", "normalize": "str", "gmm": "gmm"},
    "objective": {
        "configured": "str",
        "optimized": "str",
        "prior": "str",
        "prior_value": "float",
        "labeled_fraction": "float",
    },
    "training": {
        "receptive_field": "int",
        "patch_size_px_model": "int",
        "global_step": "int",
        "seed": "int",
        "data_fingerprint": "str",
    },
}


def _card_from(
    record: Mapping[str, Any], source: str | None, where: str, version: int
) -> ModelCard:
    from topaz_lightning.geometry import RunGeometry

    geometry = record.get("geometry")
    if geometry is not None:
        geometry = RunGeometry.from_dict(geometry, source=source)
    sections: dict[str, dict[str, Any]] = {}
    for section, kinds in _CARD_FIELDS.items():
        data = _mapping(record.get(section), source, f"{where}.{section}")
        out: dict[str, Any] = {}
        for key, kind in kinds.items():
            value = data.get(key)
            if value is not None:
                out[key] = _card_value(value, kind, source, f"{where}.{section}.{key}")
        sections[section] = out
    if "downsample" in sections["preprocessing"]:
        from topaz_lightning.geometry import check_downsample

        try:
            check_downsample(sections["preprocessing"]["downsample"], "downsample")
        except Exception as err:  # noqa: BLE001 - a ConfigError about a file is an InputError
            raise InputError(str(err), path=source, where=f"{where}.preprocessing") from None
    return ModelCard(geometry=geometry, card_version=version, **sections)


def _card_value(value: Any, kind: str, source: str | None, where: str) -> Any:
    if kind == "gmm":
        from topaz_lightning.preprocess.gmm import GMMFit

        if isinstance(value, Mapping) and isinstance(value.get("log_likelihood"), float):
            if not np.isfinite(value["log_likelihood"]):  # GMMFit.as_dict() wrote NaN: unknown
                value = {**value, "log_likelihood": None}
        return GMMFit.from_record(value, source=source).to_record()
    if kind == "str":
        if not isinstance(value, str) or len(value) > _MAX_CARD_STR:
            raise InputError(
                f"expected a string of at most {_MAX_CARD_STR} characters", path=source, where=where
            )
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"expected a number, got {type(value).__name__}", path=source, where=where)
    if not np.isfinite(float(value)):
        raise InputError("not a finite number", path=source, where=where)
    if kind == "int":
        if float(value) != int(value) or not 0 <= int(value) <= 2**62:
            raise InputError(f"expected a count >= 0, got {value}", path=source, where=where)
        return int(value)
    return float(value)
