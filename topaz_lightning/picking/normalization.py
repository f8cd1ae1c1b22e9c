"""Normalization of the micrographs of a pick run, independent of how they are chunked or batched.

``normalize=gmm`` (the paper's scaled two-component mixture) needs a fit. Two sources:

- ``normalize_fit=run`` (default): ONE fit over a pixel sample of at most
  :data:`FIT_MICROGRAPHS` micrographs of the run (all of them when there are no more; else that
  many evenly spaced over the run's list), taken in a first pass over those only (read +
  downsample, keep a few thousand pixels each): exactly the sample that
  :func:`topaz_lightning.preprocess.fit_gmm` would draw from them in memory. Their downsampled
  images are kept (:attr:`PickNormalization.prepared`, at most :data:`PREPARED_MAX_BYTES`) so
  the predict loop does not read and Fourier-crop them again: every micrograph is read once.
- ``normalize_fit=training``: the mixture (pi, mu, sigma) fitted on the training micrographs,
  stored in model.pt as ``extra["normalize_fit"]``.

A micrograph that is not part of the fit (training fit, a run of more than FIT_MICROGRAPHS
micrographs, or a file that could not be read in the first pass) gets its own scale ``alpha`` by
EM with the mixture held fixed (:func:`fit_scale`), so it never depends on the other micrographs
of the run. The set's fit and this rule live in :mod:`topaz_lightning.preprocess.set_fit`, which
the training run's held-out micrographs share (the held-out picking callback sees tzl-pick's
pixels).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    sample_pixels,
    samples_per_image,
)

# the set's fit and each micrograph's normalization against it live in preprocess.set_fit (the
# training run's held-out micrographs use them too); re-exported here for pick-time callers
from topaz_lightning.preprocess.set_fit import (  # noqa: F401
    FIT_MICROGRAPHS,
    SCALE_SAMPLE_SIZE,
    fit_micrographs,
    fit_scale,
    normalize_in_set,
)

log = logging.getLogger("topaz_lightning")

NORMALIZE_FITS = ("run", "training")
#: downsampled images of the fit's micrographs kept for scoring (bytes, in all): 16 images of
#: 1024 x 1024 float32 take 64 MiB; beyond the cap the predict loop reads them again
PREPARED_MAX_BYTES = 256 * 2**20


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
    #: downsampled (not yet normalized) images of the first pass, by name, for the predict loop
    #: (not part of the record: a continued run reads the micrographs again)
    prepared: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __call__(self, name: str, image: np.ndarray) -> np.ndarray:
        """The normalized (downsampled) micrograph, float32; InputError for a constant one."""
        from topaz_lightning.preprocess import standardize

        if self.method == "none":
            return np.asarray(image, dtype=np.float32)
        if self.method == "standardize":
            return standardize(image, name)
        assert self.fit is not None
        return normalize_in_set(image, self.fit, name, self.seed)

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


class Downsampled:
    """First-pass transform: read and Fourier-crop downsample one micrograph (picklable)."""

    def __init__(self, downsample: float):
        self.downsample = float(downsample)

    def __call__(self, name: str, path: Path) -> np.ndarray:
        from topaz_lightning.io.micrographs import read_micrograph
        from topaz_lightning.preprocess import downsample

        image = downsample(read_micrograph(path), self.downsample)
        check_not_constant(image, str(path))
        return image


def fit_over_micrographs(
    sources: Mapping[str, Path],
    downsample: float,
    seed: int = 0,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    num_workers: int = 0,
    on_error: Callable[[str, str], None] | None = None,
    max_micrographs: int | None = FIT_MICROGRAPHS,
) -> GMMFit:
    """One GMM fit over a pixel sample of ``sources`` (:func:`run_fit` without the images)."""
    fit, _ = run_fit(
        sources,
        downsample,
        seed=seed,
        sample_size=sample_size,
        num_workers=num_workers,
        on_error=on_error,
        max_micrographs=max_micrographs,
        keep_bytes=0,
    )
    return fit


def run_fit(
    sources: Mapping[str, Path],
    downsample: float,
    *,
    seed: int = 0,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    num_workers: int = 0,
    on_error: Callable[[str, str], None] | None = None,
    max_micrographs: int | None = FIT_MICROGRAPHS,
    keep_bytes: int = PREPARED_MAX_BYTES,
) -> tuple[GMMFit, dict[str, np.ndarray]]:
    """A run's GMM fit and the downsampled images of its first pass, read once.

    The fit uses :func:`fit_micrographs` of ``sources`` (at most ``max_micrographs``); the
    ``k``-th of them contributes ``samples_per_image(K, sample_size)`` pixels drawn with
    ``image_rng(seed, k)``: this is the very fit of
    :func:`topaz_lightning.preprocess.preprocess_images` over those K micrographs at once. Their
    downsampled images come back (in the fit's order) while their bytes stay within
    ``keep_bytes``, for the predict loop to use instead of reading them again.
    A micrograph that cannot be read or is constant raises InputError, or, with ``on_error``, is
    reported there and left out of the fit, which is then exactly the fit without that file.
    """
    names = fit_micrographs(list(sources), max_micrographs)
    chosen = {n: sources[n] for n in names}
    errors, samples, images = _sample_pass(
        chosen, downsample, seed, sample_size, num_workers, keep_bytes
    )
    failed = [n for n in names if n not in samples]
    for name in failed:
        if on_error is None:
            raise InputError(errors[name])
        on_error(name, errors[name])
    if failed and len(failed) < len(names):
        # the sample size per micrograph and each one's random stream depend on the number and
        # order of micrographs: draw again over the readable ones only, so a skipped file leaves
        # the fit (and every other micrograph's picks) exactly as without it
        good = {n: chosen[n] for n in names if n in samples}
        images.clear()  # at most one pass's images in memory
        errors, samples, images = _sample_pass(
            good, downsample, seed, sample_size, num_workers, keep_bytes
        )
        for name in [n for n in good if n not in samples]:  # changed between the passes
            if on_error is None:
                raise InputError(errors[name])
            on_error(name, errors[name])
    if not samples:
        raise InputError("no readable micrograph to fit the GMM normalization on")
    order = [n for n in names if n in samples]
    log.info(
        "GMM normalization: one fit over %d of %d micrograph(s)%s",
        len(order),
        len(sources),
        "" if len(names) == len(sources) else f" (evenly spaced, at most {max_micrographs})",
    )
    return fit_gmm_samples([samples[n] for n in order], names=order), images


def _sample_pass(
    sources: Mapping[str, Path],
    downsample: float,
    seed: int,
    sample_size: int,
    num_workers: int,
    keep_bytes: int,
) -> tuple[dict[str, str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One first pass: ({name: error} of the unreadable, {name: pixel sample} of the others,
    {name: downsampled image} of the first of them while their bytes stay within keep_bytes)."""
    from topaz_lightning.picking.predict import MicrographDataset, micrograph_loader

    names = list(sources)
    per_image = samples_per_image(len(names), sample_size)
    index = {n: k for k, n in enumerate(names)}
    errors: dict[str, str] = {}
    samples: dict[str, np.ndarray] = {}
    images: dict[str, np.ndarray] = {}
    kept = 0
    dataset = MicrographDataset(sources, Downsampled(downsample))
    for batch in micrograph_loader(dataset, num_workers=num_workers):
        for item in batch:
            if item.error is not None:
                errors[item.name] = item.error
            else:
                if kept + item.value.nbytes <= keep_bytes:
                    images[item.name] = item.value
                    kept += item.value.nbytes
                rng = image_rng(seed, index[item.name])
                samples[item.name] = sample_pixels(item.value, per_image, rng)
    return errors, samples, images


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
