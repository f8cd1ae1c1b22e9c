"""Unlabeled-only micrographs (``data.unlabeled_micrographs``): which they are, and the prior of
unlabeled draws when they join the training micrographs' unlabeled regions.

Labeled positives still come only from the annotated training micrographs; unlabeled draws are
uniform over every region of the training micrographs AND these micrographs except the labeled
positive ones. A region of a micrograph without labels is positive with probability ``pi``; one
of the unlabeled regions of a labeled micrograph with ``pi_u_labeled = (pi N_t - N_lab) / (N_t -
N_lab)``. Drawn uniformly over the union, an unlabeled draw is positive with the area-weighted
mixture of the two (:func:`mixture_unlabeled_prior`), ``(pi (N_t + N_x) - N_lab) / (N_t + N_x -
N_lab)``: the objective receives it as ``pi_unlabeled``, and ``num_regions`` counts the extra
regions (docs/data.md, "Unlabeled micrographs").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from topaz_lightning.data.prior import unlabeled_prior
from topaz_lightning.errors import ConfigError, InputError

log = logging.getLogger(__name__)

__all__ = [
    "HELD_OUT",
    "check_unlabeled_setting",
    "load_unlabeled_micrographs",
    "mixture_unlabeled_prior",
    "resolve_unlabeled_micrographs",
]

#: study device: ``data.unlabeled_micrographs=held_out`` names the split's validation micrographs
#: (in a leave-one-micrograph-out fold, the micrograph being picked), so a multirun over folds can
#: name each fold's held-out micrograph without knowing it in advance
HELD_OUT = "held_out"
_KEY = "data.unlabeled_micrographs"


def check_unlabeled_setting(setting: Any) -> None:
    """ConfigError for a value that cannot name micrographs (a number, a mapping, an empty list)."""
    if setting is None or isinstance(setting, str | os.PathLike):
        if isinstance(setting, str) and not setting.strip():
            raise ConfigError(_KEY, "is empty: give a directory, glob, list file or names")
        return
    if isinstance(setting, Mapping) or not isinstance(setting, Sequence):
        raise ConfigError(
            _KEY,
            "must be a directory, glob, list file, a list of names or paths, or "
            f"'{HELD_OUT}'; got {type(setting).__name__}",
        )
    if len(setting) == 0:
        raise ConfigError(_KEY, "the list is empty (leave it null for none)")


def mixture_unlabeled_prior(
    pi: float, n_labeled_positive_regions: int, n_regions_labeled: int, n_regions_unlabeled: int
) -> dict[str, float]:
    """The priors of unlabeled draws when ``n_regions_unlabeled`` regions of label-free
    micrographs join the ``n_regions_labeled`` regions of the annotated training micrographs.

    Returns ``labeled_micrographs`` (``pi_u`` of the unlabeled regions of labeled micrographs),
    ``unlabeled_micrographs`` (``pi``), ``share_unlabeled_micrographs`` (the fraction of unlabeled
    draws that land on the label-free micrographs) and ``mixture`` (the area-weighted mixture:
    what one uniform unlabeled draw is positive with). ``mixture`` equals
    ``unlabeled_prior(pi, N_lab, N_t + N_x)`` unless pi is at or below the labeled micrographs'
    labeled fraction (then their unlabeled regions hold no positive and only the label-free
    micrographs contribute). The DataModule passes ``mixture`` as ``pi_unlabeled``.
    """
    if n_regions_unlabeled < 0:
        raise ValueError(f"n_regions_unlabeled must be >= 0, got {n_regions_unlabeled}")
    pi_u_labeled = unlabeled_prior(pi, n_labeled_positive_regions, n_regions_labeled)
    n_unlabeled_on_labeled = n_regions_labeled - n_labeled_positive_regions
    share = n_regions_unlabeled / (n_unlabeled_on_labeled + n_regions_unlabeled)
    # pi_u_labeled is clamped at 0 when pi is at or below the labeled fraction; the mixture uses
    # the clamped value so it never goes below the label-free micrographs' share of pi
    mixture = (1.0 - share) * pi_u_labeled + share * float(pi)
    return {
        "labeled_micrographs": pi_u_labeled,
        "unlabeled_micrographs": float(pi),
        "share_unlabeled_micrographs": float(share),
        "mixture": float(mixture),
    }


def resolve_unlabeled_micrographs(
    setting: Any,
    micrographs: Mapping[str, np.ndarray],
    train_names: Sequence[str],
    val_names: Sequence[str],
    pixel_size_a: float | None = None,
) -> dict[str, np.ndarray]:
    """The label-free micrographs ``{name: image}`` (micrograph frame) named by ``setting``.

    ``setting``: None (none); ``"held_out"`` (the split's validation micrographs; a study device);
    a directory, glob, micrograph file or list file (one name or path a line, as ``data.micrographs``
    takes); or a list of names of ``data.micrographs`` or paths. A name of ``data.micrographs``
    reuses that image; any other entry is read from its file. Refused: a training micrograph
    (its labeled particles are used and its unlabeled regions already drawn), a missing file, a
    pixel size in the file's header more than 1% off ``pixel_size_a``. A validation micrograph is
    allowed when named (the user has it), with a warning: the held-out metrics then score a model
    that saw its pixels, unlabeled.
    """
    check_unlabeled_setting(setting)
    if setting is None:
        return {}
    if isinstance(setting, str) and setting == HELD_OUT:
        if not val_names:
            raise ConfigError(
                _KEY, f"'{HELD_OUT}' names the validation micrographs, but the split has none"
            )
        log.info(
            "unlabeled micrographs: the %d held-out micrograph(s) (%s; study device)",
            len(val_names),
            ", ".join(list(val_names)[:5]),
        )
        return {name: micrographs[name] for name in val_names}
    entries = _entries(setting, micrographs)
    train = set(train_names)
    clash = [name for name in entries if name in train]
    if clash:
        raise ConfigError(
            _KEY,
            f"'{clash[0]}' is a training micrograph ({len(clash)} in all): its labeled particles "
            "are used and its unlabeled regions are drawn already; name only micrographs without "
            "labels in this run",
        )
    named_val = [name for name in entries if name in set(val_names)]
    if named_val:
        log.warning(
            "unlabeled micrographs include %d validation micrograph(s) (%s): the held-out "
            "metrics then score a model that saw their pixels (without labels)",
            len(named_val),
            ", ".join(named_val[:5]),
        )
    images: dict[str, np.ndarray] = {}
    for name, path in entries.items():
        if name in micrographs:
            images[name] = micrographs[name]
            continue
        from topaz_lightning.io.micrographs import read_micrograph, read_pixel_size

        _check_pixel_size(path, read_pixel_size(path), pixel_size_a)
        images[name] = read_micrograph(path)
    return images


def load_unlabeled_micrographs(
    setting: Any,
    micrographs: Mapping[str, np.ndarray],
    train_names: Sequence[str],
    val_names: Sequence[str],
    pixel_size_a: float | None,
    patch_size: int | None,
    downsample: float,
) -> dict[str, np.ndarray]:
    """:func:`resolve_unlabeled_micrographs`, then the patch-size check on their sizes."""
    from topaz_lightning.data.settings import check_settings_against_data

    extra = resolve_unlabeled_micrographs(
        setting, micrographs, train_names, val_names, pixel_size_a
    )
    if extra:
        check_settings_against_data(
            coordinates=None,
            shapes_px={name: image.shape for name, image in extra.items()},
            train_names=list(extra),
            val_names=[],
            num_labeled=None,
            patch_size=patch_size,
            downsample=downsample,
        )
    return extra


def _entries(setting: Any, micrographs: Mapping[str, np.ndarray]) -> dict[str, Path | None]:
    """``{name: path}`` for a setting; path None for a name of ``data.micrographs``."""
    from topaz_lightning.io.formats.common import micrograph_name_from_reference
    from topaz_lightning.io.micrographs import (
        SUPPORTED_EXTENSIONS,
        list_micrographs,
        read_micrograph_names,
    )

    if isinstance(setting, str | os.PathLike):
        path = Path(setting)
        if path.is_file() and path.suffix.lower() not in SUPPORTED_EXTENSIONS:
            # a list file: names of data.micrographs, or paths of micrograph files
            names = read_micrograph_names(path, key=_KEY)
            if names and all(name in micrographs for name in names):
                return dict.fromkeys(names)
        return dict(list_micrographs(setting))  # InputError names a missing file or source
    out: dict[str, Path | None] = {}
    for i, entry in enumerate(setting):
        text = os.fspath(entry) if isinstance(entry, os.PathLike) else str(entry)
        name = micrograph_name_from_reference(text)
        if Path(text).is_file():
            out[name] = Path(text)
        elif text == name and name in micrographs:
            out[name] = None
        else:
            raise ConfigError(
                f"{_KEY}[{i}]",
                f"'{text}' is neither a micrograph of data.micrographs nor an existing file",
            )
    return out


def _check_pixel_size(path: Path | None, found: float | None, expected: float | None) -> None:
    if found is None or expected is None or path is None:
        return
    if abs(float(found) - float(expected)) > 0.01 * float(expected):
        raise InputError(
            f"pixel size {found:g} A in the header, the training micrographs have "
            f"{float(expected):g} A: unlabeled micrographs must share the training pixel size",
            path=path,
        )
