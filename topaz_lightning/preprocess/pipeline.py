"""In-memory preprocessing of a set of micrographs: downsample, then normalize (GMM, standardize, none)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from topaz_lightning.errors import ConfigError
from topaz_lightning.geometry import check_downsample
from topaz_lightning.preprocess.fourier import downsample as fourier_downsample
from topaz_lightning.preprocess.gmm import (
    DEFAULT_SAMPLE_SIZE,
    check_not_constant,
    fit_gmm,
    normalize_gmm,
)

NORMALIZATIONS = ("gmm", "standardize", "none")


def standardize(image: np.ndarray, name: str | None = None) -> np.ndarray:
    """Per-image standardization ``(x - mean) / std`` (float32); a constant image raises InputError."""
    check_not_constant(image, name)
    image = np.asarray(image, dtype=np.float64)
    return ((image - image.mean()) / image.std()).astype(np.float32)


def check_preprocess_settings(downsample: float, normalize: str) -> None:
    """Raise ConfigError for an impossible ``downsample`` factor or unknown ``normalize`` method."""
    check_downsample(downsample, "downsample")
    if normalize not in NORMALIZATIONS:
        raise ConfigError(
            "normalize", f"must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}"
        )


def preprocess_images(
    images: Mapping[str, np.ndarray],
    downsample: float = 1.0,
    normalize: str = "gmm",
    seed: int = 0,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> dict[str, np.ndarray]:
    """Downsample every micrograph by Fourier cropping, then normalize; returns a new dict (float32).

    ``normalize``: ``"gmm"`` fits the paper's scaled two-component mixture over a pixel sample
    of all (downsampled) micrographs (``fit_gmm`` with ``seed``) and applies
    ``(x / alpha_k - mu') / sigma'``; ``"standardize"`` subtracts each image's mean and divides
    by its standard deviation; ``"none"`` only downsamples. A constant micrograph raises
    InputError naming it (for ``gmm`` and ``standardize``).
    """
    check_preprocess_settings(downsample, normalize)
    small = {name: fourier_downsample(image, float(downsample)) for name, image in images.items()}
    if normalize == "none":
        return small
    if normalize == "standardize":
        return {name: standardize(image, name) for name, image in small.items()}
    fit = fit_gmm(small, sample_size=sample_size, seed=seed)
    return {name: normalize_gmm(image, fit, k) for k, (name, image) in enumerate(small.items())}
