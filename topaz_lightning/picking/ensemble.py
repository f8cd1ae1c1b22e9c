"""``picker=ensemble``: several trained classifiers (seeds, checkpoints) scored as one, their logits averaged.

The network is :class:`topaz_lightning.models.ensemble.EnsembleNet` (the mean of the members'
logits, itself a patch classifier, so every scoring mode runs on it unchanged); this module loads
the members' files and checks that they belong together.

The members must agree on everything that decides where and how a micrograph is scored: the
receptive field and convolution strides (so their maps line up pixel for pixel, at every stride)
and, from the model cards, the downsampling, normalization, particle radius, NMS radius, match
distance and the prior pi, and the training GMM fit within :data:`GMM_TOLERANCE` (each training
seed fits its own pixel sample, so the fits of one recipe differ a little). A mismatch is an InputError naming the member's file and
the field. The ensemble's card is the first member's (pi is checked equal, not averaged: the
default number of picks per micrograph comes from it, and members trained with different priors
answer different questions).

Example (three training seeds of one recipe)::

    tzl-pick picker=ensemble 'picker.model_paths=[s0/model.pt,s1/model.pt,s2/model.pt]' \\
        micrographs=mics/ output_dir=picks_ensemble
    tzl-pick picker=ensemble picker.model_paths=models.txt micrographs=mics/ output_dir=picks
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.models.base import PatchClassifier
from topaz_lightning.models.ensemble import MAX_MEMBERS, EnsembleNet
from topaz_lightning.picking.pickers import LoadedPicker, Picker

log = logging.getLogger("topaz_lightning")

#: how the members' scores are combined (the record of a run says it)
COMBINE = "mean_logit"
#: the run-geometry fields (model.pt ``extra["geometry"]``) every member must share
GEOMETRY_FIELDS = (
    "downsample",
    "normalize",
    "particle_radius_px",
    "nms_radius_px_model",
    "match_distance_px_model",
    "pi",
)
#: members' training GMM fits (``normalize_fit``) agree when the normalized pixel
#: ``(x / alpha - mu') / sigma'`` moves by at most this many sigma' (|mu'_k - mu'_0| / sigma'_0)
#: and sigma' by at most this factor (|log(sigma'_k / sigma'_0)|). Training seeds draw their own
#: pixel sample, so fits of the same micrographs differ: 0.02 and 0.018 between seeds 0, 1, 2 on
#: the EMPIAR-10017 fold 0 (docs/accuracy.md, "Ensembles"); a flipped dominant component is ~1.
GMM_TOLERANCE = 0.1
_EXAMPLE = "picker.model_paths=[seed0/model.pt,seed1/model.pt] (or a text file listing them)"


def read_model_list(path: str | Path) -> list[str]:
    """The model files listed in a text file, one per line (blank lines and ``#`` comments
    skipped; relative paths are relative to the list file's folder). InputError naming the file
    when it is missing or lists none."""
    path = Path(path)
    if not path.is_file():
        raise InputError("model list not found (a text file with one model.pt per line)", path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"not a readable text file ({err.__class__.__name__})", path) from err
    models = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if "\x00" in entry or any(ord(c) < 32 for c in entry):
            raise InputError("a control character in a file name", path, where=f"line {number}")
        member = Path(entry)
        models.append(str(member if member.is_absolute() else path.parent / member))
    if not models:
        raise InputError("lists no model files (one model.pt per line)", path)
    return models


def _model_paths(value: Any) -> list[str]:
    """``picker.model_paths`` as a list of paths: a list as given, a string a list file."""
    key = "picker.model_paths"
    if value is None or (isinstance(value, list | tuple) and not value) or value == "":
        raise ConfigError(key, f"is required for picker=ensemble (e.g. {_EXAMPLE})")
    if isinstance(value, str | Path):
        return read_model_list(value)
    if not isinstance(value, list | tuple):
        raise ConfigError(key, f"must be a list of model files or a list file, got {value!r}")
    paths = []
    for item in value:
        if not isinstance(item, str | Path) or str(item) == "":
            raise ConfigError(key, f"every entry must be a model file path, got {item!r}")
        paths.append(str(item))
    return paths


def _same(a: Any, b: Any) -> bool:
    """Equal records (mappings, lists, numbers, strings); numbers within 1e-9 relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        if isinstance(b, bool):
            return False
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _gmm_difference(record: Any, first: Any, path: str) -> str | None:
    """Why two members' training GMM fits normalize differently (beyond GMM_TOLERANCE), or None
    (also when either carries no fit: the default ``normalize_fit=run`` fits at pick time)."""
    from topaz_lightning.preprocess.gmm import GMMFit

    if record is None or first is None:
        return None
    fit, base = GMMFit.from_record(record, path), GMMFit.from_record(first, path)
    shift = abs(fit.mu_prime - base.mu_prime) / base.sigma_prime
    scale = abs(math.log(fit.sigma_prime / base.sigma_prime))
    if shift <= GMM_TOLERANCE and scale <= GMM_TOLERANCE:
        return None
    return (
        f"mu' {fit.mu_prime:.4g}, sigma' {fit.sigma_prime:.4g} against the first member's "
        f"{base.mu_prime:.4g}, {base.sigma_prime:.4g} (normalized pixels shift by "
        f"{shift:.3f} sigma', scale by {math.exp(scale):.3f}; tolerance {GMM_TOLERANCE})"
    )


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_members(nets: Sequence[nn.Module], cards: Sequence[dict], paths: Sequence[str]) -> None:
    """InputError naming a member's file and the first field where it differs from member 0
    (the first file): network type, receptive field, strides, geometry (GEOMETRY_FIELDS, equal
    within 1e-9 relative), training GMM fit (within GMM_TOLERANCE)."""
    first_path = paths[0]
    for net, path in zip(nets, paths, strict=True):
        if not isinstance(net, PatchClassifier):
            raise InputError(
                f"a {type(net).__name__} cannot join an ensemble: members must be patch "
                "classifiers (models.base.PatchClassifier: trunk, classifier, phase_strides)",
                path,
            )
    first_net, first_card = nets[0], cards[0]
    first_geometry = first_card.get("geometry") or {}
    for net, card, path in zip(nets[1:], cards[1:], paths[1:], strict=True):
        pairs = [
            ("receptive_field", net.receptive_field, first_net.receptive_field),
            ("phase_strides", tuple(net.phase_strides), tuple(first_net.phase_strides)),
        ]
        geometry = card.get("geometry") or {}
        pairs += [
            (f"geometry.{key}", geometry.get(key), first_geometry.get(key))
            for key in GEOMETRY_FIELDS
        ]
        for field_name, value, expected in pairs:
            if not _same(value, expected):
                raise InputError(
                    f"ensemble members must agree on {field_name}: this file has "
                    f"{_describe(value)}, the first member ({first_path}) {_describe(expected)}",
                    path,
                    where=field_name,
                )
        why = _gmm_difference(card.get("normalize_fit"), first_card.get("normalize_fit"), path)
        if why is not None:
            raise InputError(
                f"ensemble members must normalize alike; the training GMM fit gives {why}",
                path,
                where="normalize_fit",
            )


class EnsemblePicker(Picker):
    """``picker=ensemble``: the models in ``model_paths`` (a list of model files, or one text
    file listing them) scored as one network, their logits averaged (module docstring)."""

    name = "ensemble"

    def __init__(self, model_paths: Any = None):
        self.model_paths = model_paths

    def load(self, model_path: str | None, micrographs: Any = None) -> LoadedPicker:
        from topaz_lightning.models import load_model

        if model_path not in (None, ""):
            raise ConfigError(
                "model_path",
                "picker=ensemble takes its models from picker.model_paths; leave model_path unset",
            )
        paths = _model_paths(self.model_paths)
        if len(paths) > MAX_MEMBERS:
            raise ConfigError(
                "picker.model_paths", f"at most {MAX_MEMBERS} members, got {len(paths)}"
            )
        if len(set(paths)) < len(paths):
            log.warning("picker.model_paths names a file more than once; it counts each time")
        loaded = [load_model(path) for path in paths]
        nets = [net for net, _ in loaded]
        cards = [card for _, card in loaded]
        check_members(nets, cards, paths)
        net = EnsembleNet(nets).eval()
        log.info("ensemble of %d models (mean logit): %s", len(paths), ", ".join(paths))
        return LoadedPicker(
            net=net,
            card=dict(cards[0]),
            source=f"picker=ensemble ({len(paths)} models, first {paths[0]})",
            record={"name": self.name, "combine": COMBINE, "members": len(paths)},
        )


__all__ = [
    "COMBINE",
    "GEOMETRY_FIELDS",
    "GMM_TOLERANCE",
    "EnsembleNet",
    "EnsemblePicker",
    "check_members",
    "read_model_list",
]
