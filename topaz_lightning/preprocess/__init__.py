"""Micrograph preprocessing: Fourier-crop downsampling and the paper's scaled-GMM normalization."""

from topaz_lightning.preprocess.fourier import downsample, downsampled_shape
from topaz_lightning.preprocess.gmm import (
    GMMFit,
    fit_gmm,
    fit_gmm_samples,
    normalize_gmm,
    sample_pixels,
)
from topaz_lightning.preprocess.pipeline import NORMALIZATIONS, preprocess_images, standardize

__all__ = [
    "GMMFit",
    "NORMALIZATIONS",
    "downsample",
    "downsampled_shape",
    "fit_gmm",
    "fit_gmm_samples",
    "normalize_gmm",
    "preprocess_images",
    "sample_pixels",
    "standardize",
]
