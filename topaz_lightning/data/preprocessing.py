"""In-memory preprocessing of a training run's micrographs, keeping the GMM fit for the model card."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from topaz_lightning.errors import ConfigError

__all__ = [
    "HELD_OUT_FIT_SEED",
    "VAL_NORMALIZE_FITS",
    "check_val_normalize_fit",
    "preprocess_for_training",
]

#: how the held-out (validation) micrographs are normalized with normalize=gmm:
#: held_out = their own set's fit, as tzl-pick's default normalize_fit=run fits the micrographs
#: it picks (so the held-out picking callback scores the pixels tzl-pick would);
#: joint = the one fit over training and held-out micrographs (before 2026-12-07)
VAL_NORMALIZE_FITS = ("held_out", "joint")
#: seed of the held-out set's pixel sample: tzl-pick's default ``seed`` (configs/pick.yaml)
HELD_OUT_FIT_SEED = 0


def check_val_normalize_fit(value: Any) -> str:
    """``data.val_normalize_fit`` must be one of :data:`VAL_NORMALIZE_FITS`."""
    if value not in VAL_NORMALIZE_FITS:
        raise ConfigError(
            "data.val_normalize_fit",
            f"must be one of {', '.join(VAL_NORMALIZE_FITS)}, got {value!r}",
        )
    return str(value)


def preprocess_for_training(
    images: dict[str, np.ndarray],
    downsample: float,
    normalize: str,
    seed: int,
    held_out: Sequence[str] = (),
    val_normalize_fit: str = "held_out",
) -> tuple[dict[str, np.ndarray], Any]:
    """``images`` downsampled by Fourier cropping and normalized (gmm, standardize, none), and
    the ``GMMFit`` of all of them when ``normalize`` is gmm (else None): the model card keeps it
    so ``tzl-pick`` can reuse the training fit (``normalize_fit=training``). With downsample 1
    and normalize none the images are returned as given.

    With gmm and ``val_normalize_fit=held_out`` the ``held_out`` micrographs are then normalized
    again, against their own set's fit (:mod:`topaz_lightning.preprocess.set_fit`, seed
    :data:`HELD_OUT_FIT_SEED`): the pixels ``tzl-pick`` gives them when it picks that set with
    its defaults. The training micrographs and the kept fit are the same either way.
    """
    check_val_normalize_fit(val_normalize_fit)
    if downsample == 1.0 and normalize == "none":
        return images, None
    from topaz_lightning.preprocess import downsample as fourier_downsample
    from topaz_lightning.preprocess.gmm import fit_gmm, normalize_gmm
    from topaz_lightning.preprocess.pipeline import standardize
    from topaz_lightning.preprocess.set_fit import fit_set, normalize_in_set

    small = {name: fourier_downsample(image, downsample) for name, image in images.items()}
    if normalize == "none":
        return small, None
    if normalize == "standardize":
        return {name: standardize(image, name) for name, image in small.items()}, None
    fit = fit_gmm(small, seed=seed)
    own = None  # the held-out set's own fit (each image is normalized once, by one of the fits)
    if held_out and val_normalize_fit == "held_out":
        own = fit_set({name: small[name] for name in held_out}, seed=HELD_OUT_FIT_SEED)
    normalized = {}
    for k, (name, image) in enumerate(small.items()):
        if own is not None and name in held_out:
            normalized[name] = normalize_in_set(image, own, name, HELD_OUT_FIT_SEED)
        else:
            normalized[name] = normalize_gmm(image, fit, k)
    return normalized, fit
