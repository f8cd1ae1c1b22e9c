"""The model card: the one versioned record in model.pt of how a classifier was trained.

:class:`ModelCard` is the record (geometry, preprocessing with its GMM fit, objective, training
data fingerprint); :func:`read_model_card` is its one reader, for files with a card and for older
files with loose ``extra`` keys alike. :mod:`topaz_lightning.models.io` stores it in model files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from topaz_lightning.errors import InputError

__all__ = ["CARD_VERSION", "ModelCard", "read_model_card"]

#: version of the card record; files without a card (extra["geometry"], extra["preprocess"], ...
#: as loose keys) read as version 1
CARD_VERSION = 2
_MAX_CARD_STR = 300
_MAX_CARD_LIST = 64


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
      and of the labeled particles, :meth:`PUDataModule.data_fingerprint`); for a checkpoint
      ensemble ``ensemble_steps``, the global steps of its members (the last is ``global_step``).
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
        "num_unlabeled_micrographs": "int",
        # a checkpoint ensemble's members (callbacks.checkpoint_ensemble): their global steps
        "ensemble_steps": "ints",
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
    if kind == "ints":
        if not isinstance(value, list | tuple) or len(value) > _MAX_CARD_LIST:
            raise InputError(
                f"expected a list of at most {_MAX_CARD_LIST} counts", path=source, where=where
            )
        return [_card_value(v, "int", source, f"{where}[{i}]") for i, v in enumerate(value)]
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
