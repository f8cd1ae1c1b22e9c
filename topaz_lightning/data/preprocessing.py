"""In-memory preprocessing of a training run's micrographs, keeping the GMM fit for the model card."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["preprocess_for_training"]


def preprocess_for_training(
    images: dict[str, np.ndarray], downsample: float, normalize: str, seed: int
) -> tuple[dict[str, np.ndarray], Any]:
    """``images`` downsampled by Fourier cropping and normalized (gmm, standardize, none), and
    the ``GMMFit`` of all of them when ``normalize`` is gmm (else None): the model card keeps it
    so ``tzl-pick`` can reuse the training fit (``normalize_fit=training``). With downsample 1
    and normalize none the images are returned as given."""
    if downsample == 1.0 and normalize == "none":
        return images, None
    from topaz_lightning.preprocess import downsample as fourier_downsample
    from topaz_lightning.preprocess.gmm import fit_gmm, normalize_gmm
    from topaz_lightning.preprocess.pipeline import standardize

    small = {name: fourier_downsample(image, downsample) for name, image in images.items()}
    if normalize == "none":
        return small, None
    if normalize == "standardize":
        return {name: standardize(image, name) for name, image in small.items()}, None
    fit = fit_gmm(small, seed=seed)
    normalized = {
        name: normalize_gmm(image, fit, k) for k, (name, image) in enumerate(small.items())
    }
    return normalized, fit
