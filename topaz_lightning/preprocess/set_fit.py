"""One GMM fit for a SET of micrographs, and each micrograph's normalization against it.

This is how a set that is picked together is normalized (``tzl-pick``'s ``normalize_fit=run``,
:mod:`topaz_lightning.picking.normalization`, and the training run's held-out micrographs,
:mod:`topaz_lightning.data.preprocessing`), so the two give the same pixels:

- the mixture is fitted on :func:`fit_micrographs` of the set (all of them up to
  :data:`FIT_MICROGRAPHS`, else that many evenly spaced), each contributing its pixel sample as
  in :func:`~topaz_lightning.preprocess.gmm.fit_gmm`;
- a micrograph of the fit is normalized with its own fitted scale; any other (left out of the
  fit, or normalized against a fixed mixture such as the training run's) gets its own scale by
  EM with the mixture held (:func:`fit_scale`), from a pixel sample keyed by its name, so it
  never depends on the other micrographs.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from topaz_lightning.errors import ConfigError
from topaz_lightning.preprocess.gmm import (
    GMMFit,
    check_not_constant,
    fit_gmm,
    normalize_gmm,
    sample_pixels,
)

__all__ = [
    "FIT_MICROGRAPHS",
    "SCALE_SAMPLE_SIZE",
    "fit_micrographs",
    "fit_scale",
    "fit_set",
    "name_rng",
    "normalize_in_set",
]

#: pixels of one micrograph used to estimate its own scale against a fixed mixture
SCALE_SAMPLE_SIZE = 100_000
#: micrographs a set's GMM is fitted on (evenly spaced over the set), so its cost does not grow
#: with the set
FIT_MICROGRAPHS = 16


def fit_scale(
    pixels: np.ndarray, pi: float, mu, sigma, max_iter: int = 200, tol: float = 1e-10
) -> float:
    """Maximum-likelihood scale ``alpha`` of one image under a FIXED scaled mixture, by EM.

    Same model as :func:`topaz_lightning.preprocess.gmm.fit_gmm_samples` with pi, mu, sigma held:
    the M-step for ``beta = 1/alpha`` solves ``A beta^2 - B beta - n = 0`` (its positive root).
    Starts from ``alpha = std(x) / pooled std of the mixture``.
    """
    x = np.asarray(pixels, dtype=np.float64).reshape(-1)
    check_not_constant(x)
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    mix_mean = (1 - pi) * mu[0] + pi * mu[1]
    mix_var = (1 - pi) * (sigma[0] ** 2 + mu[0] ** 2) + pi * (sigma[1] ** 2 + mu[1] ** 2)
    mix_std = math.sqrt(max(mix_var - mix_mean**2, 1e-30))
    beta = mix_std / float(x.std())
    n = x.size
    ll = -math.inf
    for _ in range(max_iter):
        y = x * beta
        lp0 = math.log(1 - pi) - 0.5 * ((y - mu[0]) / sigma[0]) ** 2 - math.log(sigma[0])
        lp1 = math.log(pi) - 0.5 * ((y - mu[1]) / sigma[1]) ** 2 - math.log(sigma[1])
        top = np.maximum(lp0, lp1)
        log_mix = top + np.log(np.exp(lp0 - top) + np.exp(lp1 - top))
        new_ll = float(np.mean(log_mix)) + math.log(beta)
        r = np.exp(lp1 - log_mix)
        prec = (1 - r) / sigma[0] ** 2 + r / sigma[1] ** 2
        prec_mu = (1 - r) * mu[0] / sigma[0] ** 2 + r * mu[1] / sigma[1] ** 2
        a = float((prec * x * x).sum())
        b = float((prec_mu * x).sum())
        beta = (b + math.sqrt(b * b + 4 * a * n)) / (2 * a)
        if abs(new_ll - ll) < tol * (1 + abs(new_ll)):
            break
        ll = new_ll
    return 1.0 / beta


def name_rng(seed: int, name: str) -> np.random.Generator:
    # keyed by the micrograph's name, so its sample does not depend on the other micrographs
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def fit_micrographs(names: Sequence[str], max_micrographs: int | None = FIT_MICROGRAPHS) -> list:
    """The micrographs a run's GMM is fitted on: all of ``names`` when there are at most
    ``max_micrographs`` (None: no limit), else that many evenly spaced over the list (the first
    and the last included), in the list's order."""
    names = list(names)
    if max_micrographs is None or len(names) <= int(max_micrographs):
        return names
    if int(max_micrographs) < 1:
        raise ConfigError("max_micrographs", f"must be at least 1, got {max_micrographs!r}")
    positions = np.round(np.linspace(0, len(names) - 1, int(max_micrographs))).astype(np.int64)
    return [names[i] for i in np.unique(positions)]


def fit_set(
    images: Mapping[str, np.ndarray], seed: int, max_micrographs: int | None = FIT_MICROGRAPHS
) -> GMMFit:
    """The set's one fit from images in memory (in the set's order): exactly the fit that
    ``tzl-pick`` makes over these micrographs in its first pass with the same ``seed``."""
    names = fit_micrographs(list(images), max_micrographs)
    return fit_gmm({name: images[name] for name in names}, seed=seed)


def normalize_in_set(image: np.ndarray, fit: GMMFit, name: str, seed: int) -> np.ndarray:
    """``image`` (downsampled) normalized against ``fit``: with its own fitted scale when it was
    part of the fit, else with a scale fitted to it alone under the fixed mixture."""
    check_not_constant(image, name)
    if name in fit.names:
        return normalize_gmm(image, fit, name)
    pixels = sample_pixels(image, SCALE_SAMPLE_SIZE, name_rng(seed, name))
    alpha = fit_scale(pixels, fit.pi, fit.mu, fit.sigma)
    own = GMMFit(pi=fit.pi, mu=fit.mu, sigma=fit.sigma, alpha=np.array([alpha]), names=[name])
    return normalize_gmm(image, own, name)
