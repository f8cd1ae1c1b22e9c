"""Normalization of the micrographs of a pick run, independent of how they are chunked or batched.

``normalize=gmm`` (the paper's scaled two-component mixture) needs a fit. Two sources:

- ``normalize_fit=run`` (default): ONE fit over a pixel sample of every micrograph being picked,
  taken in a cheap first pass (read + downsample, keep a few thousand pixels each), exactly the
  sample that :func:`topaz_lightning.preprocess.fit_gmm` would draw from all of them in memory.
  Memory: the samples only (at least 1,000 pixels per micrograph).
- ``normalize_fit=training``: the mixture (pi, mu, sigma) fitted on the training micrographs,
  stored in model.pt as ``extra["normalize_fit"]``.

A micrograph that is not part of the fit (training fit, or a file that could not be read in the
first pass) gets its own scale ``alpha`` by EM with the mixture held fixed
(:func:`fit_scale`), so it never depends on the other micrographs of the run.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.preprocess.gmm import (
    DEFAULT_SAMPLE_SIZE,
    GMMFit,
    check_not_constant,
    fit_gmm_samples,
    image_rng,
    normalize_gmm,
    sample_pixels,
    samples_per_image,
)

log = logging.getLogger("topaz_lightning")

NORMALIZE_FITS = ("run", "training")
#: pixels of one micrograph used to estimate its own scale against a fixed mixture
SCALE_SAMPLE_SIZE = 100_000


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


def _name_rng(seed: int, name: str) -> np.random.Generator:
    # keyed by the micrograph's name, so its sample does not depend on the other micrographs
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


@dataclass
class PickNormalization:
    """How each micrograph of a pick run is normalized after downsampling (picklable for workers).

    ``method`` is gmm, standardize or none; for gmm, ``fit`` holds the mixture and the scale of
    every micrograph that was part of the fit; others get :func:`fit_scale`.
    """

    method: str
    fit: GMMFit | None = None
    source: str | None = None  # "run" or "training" for gmm
    seed: int = 0

    def __call__(self, name: str, image: np.ndarray) -> np.ndarray:
        """The normalized (downsampled) micrograph, float32; InputError for a constant one."""
        from topaz_lightning.preprocess import standardize

        if self.method == "none":
            return np.asarray(image, dtype=np.float32)
        if self.method == "standardize":
            return standardize(image, name)
        fit = self.fit
        assert fit is not None
        check_not_constant(image, name)
        if name in fit.names:
            return normalize_gmm(image, fit, name)
        pixels = sample_pixels(image, SCALE_SAMPLE_SIZE, _name_rng(self.seed, name))
        alpha = fit_scale(pixels, fit.pi, fit.mu, fit.sigma)
        own = GMMFit(pi=fit.pi, mu=fit.mu, sigma=fit.sigma, alpha=np.array([alpha]), names=[name])
        return normalize_gmm(image, own, name)

    def record(self) -> dict[str, Any]:
        """Plain values for ``normalization.json`` in the run directory (strict JSON, exact float
        round trip: a continued run reads back the very fit, with its n_iter and likelihood)."""
        out: dict[str, Any] = {"normalize": self.method}
        if self.method == "gmm":
            assert self.fit is not None
            out["normalize_fit"] = self.source
            out["seed"] = int(self.seed)
            out["fit"] = self.fit.to_record()
        return out

    @classmethod
    def from_record(cls, data: Mapping[str, Any], source: str | None = None) -> PickNormalization:
        """Rebuild from :meth:`record` (the run directory's own file, when a run continues)."""
        method = data.get("normalize")
        if method != "gmm":
            return cls(method=str(method))
        fit = gmm_fit_from_dict(data.get("fit"), source=source)
        return cls(method="gmm", fit=fit, source=data.get("normalize_fit"), seed=int(data["seed"]))


def gmm_fit_from_dict(data: Any, source: str | None = None) -> GMMFit:
    """A GMMFit read from a file (model.pt or normalization.json): :meth:`GMMFit.from_record`."""
    return GMMFit.from_record(data, source=source)


class PixelSample:
    """First-pass transform: read, downsample and draw micrograph ``index``'s pixel sample."""

    def __init__(self, downsample: float, per_image: int, seed: int, index: Mapping[str, int]):
        self.downsample = float(downsample)
        self.per_image = int(per_image)
        self.seed = int(seed)
        self.index = dict(index)

    def __call__(self, name: str, path: Path) -> np.ndarray:
        from topaz_lightning.io.micrographs import read_micrograph
        from topaz_lightning.preprocess import downsample

        image = downsample(read_micrograph(path), self.downsample)
        check_not_constant(image, str(path))
        return sample_pixels(image, self.per_image, image_rng(self.seed, self.index[name]))


def fit_over_micrographs(
    sources: Mapping[str, Path],
    downsample: float,
    seed: int = 0,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    num_workers: int = 0,
    on_error: Callable[[str, str], None] | None = None,
) -> GMMFit:
    """One GMM fit over a pixel sample of all ``sources`` (first pass, no image kept in memory).

    Micrograph ``k`` (its position in ``sources``) contributes ``samples_per_image(K,
    sample_size)`` pixels drawn with ``image_rng(seed, k)``: with every file readable this is
    the very fit of :func:`topaz_lightning.preprocess.preprocess_images` over all of them at once.
    A micrograph that cannot be read or is constant raises InputError, or, with ``on_error``, is
    reported there and left out of the fit, which is then exactly the fit without that file.
    """
    names = list(sources)
    errors, samples = _sample_pass(sources, downsample, seed, sample_size, num_workers)
    failed = [n for n in names if n not in samples]
    for name in failed:
        if on_error is None:
            raise InputError(errors[name])
        on_error(name, errors[name])
    if failed and len(failed) < len(names):
        # the sample size per micrograph and each one's random stream depend on the number and
        # order of micrographs: draw again over the readable ones only, so a skipped file leaves
        # the fit (and every other micrograph's picks) exactly as without it
        good = {n: sources[n] for n in names if n in samples}
        errors, samples = _sample_pass(good, downsample, seed, sample_size, num_workers)
        for name in [n for n in good if n not in samples]:  # changed between the passes
            if on_error is None:
                raise InputError(errors[name])
            on_error(name, errors[name])
    if not samples:
        raise InputError("no readable micrograph to fit the GMM normalization on")
    log.info("GMM normalization: one fit over %d micrograph(s)", len(samples))
    order = [n for n in names if n in samples]
    return fit_gmm_samples([samples[n] for n in order], names=order)


def _sample_pass(
    sources: Mapping[str, Path], downsample: float, seed: int, sample_size: int, num_workers: int
) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """One first pass: ({name: error} of the unreadable, {name: pixel sample} of the others)."""
    from topaz_lightning.picking.predict import MicrographDataset, micrograph_loader

    names = list(sources)
    per_image = samples_per_image(len(names), sample_size)
    sampler = PixelSample(downsample, per_image, seed, {n: k for k, n in enumerate(names)})
    errors: dict[str, str] = {}
    samples: dict[str, np.ndarray] = {}
    for batch in micrograph_loader(MicrographDataset(sources, sampler), num_workers=num_workers):
        for item in batch:
            if item.error is not None:
                errors[item.name] = item.error
            else:
                samples[item.name] = item.value
    return errors, samples


def training_fit(extra: Mapping[str, Any], model_path: str | None = None) -> GMMFit:
    """The training run's mixture from model.pt (``extra["normalize_fit"]``), without image scales."""
    data = extra.get("normalize_fit")
    if data is None:
        raise ConfigError(
            "normalize_fit",
            f"{model_path or 'model.pt'} carries no training normalization fit (older model?); "
            "use normalize_fit=run",
        )
    fit = gmm_fit_from_dict(data, source=model_path)
    # the training micrographs' own scales are not reused: every picked micrograph gets its own
    return GMMFit(pi=fit.pi, mu=fit.mu, sigma=fit.sigma, alpha=np.zeros(0), names=[])


def check_normalize_fit(value: Any) -> str:
    """``normalize_fit`` must be run or training."""
    if value not in NORMALIZE_FITS:
        raise ConfigError(
            "normalize_fit", f"must be one of {', '.join(NORMALIZE_FITS)}, got {value!r}"
        )
    return str(value)
