"""Pickers for tzl-pick (``picker=`` config group): what scores a micrograph, the trained model or a classical baseline.

A picker is built from its ``configs/picker/<name>.yaml`` (``_target_`` + plain keywords) and
:meth:`Picker.load` returns a :class:`LoadedPicker`: a scorer (an ``nn.Module`` with the model
contract's ``score_map(images (B,1,H,W)) -> (B,H,W)`` in the model frame) and a card (the
preprocessing and geometry it expects, in the form of ``model.pt``'s ``extra``). Everything after
that is shared: ``resolve_pick_settings`` (NMS radius, threshold, top k), the job, normalization,
the predict loop (:func:`~topaz_lightning.picking.predict.pick_micrograph`), parts, the combined
output and ``picks.html``. A new picker is one class (here or in ``baselines/``, or any package's
module) and one yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from topaz_lightning.errors import ConfigError

#: the example every "is required" message of tzl-pick shows
PICK_EXAMPLE = "model_path=model.pt micrographs=dir/ output_dir=picks"


@dataclass(frozen=True)
class LoadedPicker:
    """A picker ready to score: ``net`` and ``card`` go where a model file's net and ``extra`` go.

    ``source`` names it in messages (the model file, ``picker=dog``). ``record`` is what the job
    record compares besides the scorer's fingerprint (empty for a model: its weights' hash is
    there already). ``sets_preprocessing``: the card's downsampling comes from the picker's own
    config, so the top-level ``downsample`` override is refused (a template built at one scale
    would be matched at another).
    """

    net: nn.Module
    card: dict
    source: str
    record: dict = field(default_factory=dict)
    sets_preprocessing: bool = False


class Picker:
    """Base class of the ``picker=`` group: subclasses implement :meth:`load`."""

    #: the picker's name in messages and records (its configs/picker/<name>.yaml)
    name: str = "picker"

    def load(self, model_path: str | None, micrographs: str | None) -> LoadedPicker:
        """Build the scorer. ``model_path`` and ``micrographs`` are tzl-pick's keys of the same
        names (the micrograph source, before ``subset``), for pickers that need them."""
        raise NotImplementedError


class ModelPicker(Picker):
    """``picker=model`` (the default): the classifier in ``model_path`` (``models.load_model``:
    this package's classes or an installed entry point's), its preprocessing from its card."""

    name = "model"

    def load(self, model_path: str | None, micrographs: str | None = None) -> LoadedPicker:
        from topaz_lightning.models import load_model

        if model_path in (None, ""):
            raise ConfigError("model_path", f"is required (e.g. {PICK_EXAMPLE})")
        net, extra = load_model(str(model_path))
        return LoadedPicker(net=net, card=extra, source=str(model_path))


class ScoreMapNet(nn.Module):
    """A scorer from a plain function ``score(image (H, W) float32) -> (H, W)`` (a classical
    picker): ``score_map`` applies it to each image of the batch on the CPU.

    ``tensors`` become buffers (in the state dict, so the job's fingerprint covers them, e.g. a
    template) and are handed to ``score`` as numpy arrays by name. No ``tile_size``: the whole
    micrograph is scored at once, so a global step (standardization) sees all of it.
    """

    def __init__(
        self,
        score: Callable[..., np.ndarray],
        tensors: dict[str, np.ndarray] | None = None,
        **settings: Any,
    ):
        super().__init__()
        self._score = score
        self._settings = dict(settings)
        self._tensor_names = []
        for key, value in (tensors or {}).items():
            self.register_buffer(key, torch.as_tensor(np.asarray(value, dtype=np.float32)))
            self._tensor_names.append(key)

    def score_map(self, images: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, H, W)`` of images ``(B, 1, H, W)``, on the images' device."""
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(images.shape)}")
        arrays = {k: getattr(self, k).detach().cpu().numpy() for k in self._tensor_names}
        maps = [
            np.asarray(self._score(image[0], **arrays, **self._settings), dtype=np.float32)
            for image in images.detach().float().cpu().numpy()
        ]
        return torch.from_numpy(np.stack(maps)).to(images.device)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._settings.items())


def required_number(picker: str, key: str, value: Any, example: str, *, minimum: float) -> float:
    """``value`` (a picker's setting) as a float > ``minimum``; ConfigError naming
    ``picker.<key>`` when it is missing or out of range."""
    import math

    name = f"picker.{key}"
    if value is None:
        raise ConfigError(name, f"is required for picker={picker} (e.g. {name}={example})")
    if isinstance(value, bool):
        raise ConfigError(name, f"must be a number > {minimum:g}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"must be a number > {minimum:g}, got {value!r}") from None
    if not (math.isfinite(number) and number > minimum):
        raise ConfigError(name, f"must be a number > {minimum:g}, got {value!r}")
    return number


# ------------------------------------------------------------------------------------------------
# tzl-pick: the picker of a composed pick config


def build_picker(node) -> Picker:
    """``instantiate(node)``; a ConfigError/InputError raised inside comes out as itself (not
    wrapped in Hydra's InstantiationException), anything else as a ConfigError on ``picker``."""
    from hydra.utils import instantiate

    from topaz_lightning.errors import InputError

    try:
        picker = instantiate(node, _convert_="all")
    except Exception as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, ConfigError | InputError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise ConfigError("picker", str(err).splitlines()[0]) from err
    if not callable(getattr(picker, "load", None)):
        raise ConfigError(
            "picker._target_", f"must name a Picker class, got a {type(picker).__name__}"
        )
    return picker


def load_picker(cfg) -> LoadedPicker:
    """The picker of a composed tzl-pick config (``picker`` group; the model picker when the
    config has none, as a config saved before the group existed), loaded: its checks run here,
    before any micrograph is read."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    node = cfg.get("picker")
    picker = ModelPicker() if node is None else build_picker(node)
    model_path = None if OmegaConf.is_missing(cfg, "model_path") else cfg.get("model_path")
    micrographs = None if OmegaConf.is_missing(cfg, "micrographs") else cfg.get("micrographs")
    if isinstance(micrographs, ListConfig | DictConfig):
        micrographs = OmegaConf.to_container(micrographs, resolve=True)
    loaded = picker.load(
        model_path=None if model_path is None else str(model_path), micrographs=micrographs
    )
    if loaded.sets_preprocessing and cfg.get("downsample") is not None:
        raise ConfigError(
            "downsample",
            f"{loaded.source} scores at its own picker.downsample; leave downsample unset",
        )
    if (
        cfg.get("scoring") == "coarse_to_fine"
        and getattr(loaded.net, "receptive_field", None) is None
    ):
        raise ConfigError(
            "scoring",
            f"coarse_to_fine needs a classifier with a receptive field; {loaded.source} has "
            "none (use scoring=dense)",
        )
    return loaded


def pick_record(record: dict, loaded: LoadedPicker) -> dict:
    """The job record of a run: ``resolve_pick_settings``' record with the picker's own
    description in place of its raw config node (a model's file path never counts; its weights'
    hash does), so a model run's record is what it was before the picker group existed."""
    out = {k: v for k, v in record.items() if k != "picker"}
    if loaded.record:
        out["picker"] = dict(loaded.record)
    return out


__all__ = [
    "PICK_EXAMPLE",
    "LoadedPicker",
    "ModelPicker",
    "Picker",
    "ScoreMapNet",
    "load_picker",
    "pick_record",
    "required_number",
]
