"""Preprocess micrograph files into MRCs (downsample + normalize), in parallel, with a progress bar."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from topaz_lightning.errors import ConfigError
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
from topaz_lightning.preprocess.pipeline import check_preprocess_settings
from topaz_lightning.utils.atomic import check_writable

log = logging.getLogger("topaz_lightning")


def default_num_workers() -> int:
    """Worker processes used when none is configured: min(usable cores, 4)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


@dataclass
class PreprocessResult:
    """What ``preprocess_files`` wrote: one MRC per micrograph, its shape, and the GMM fit if any."""

    outputs: dict[str, Path]
    shapes: dict[str, tuple[int, int]]
    pixel_sizes: dict[str, float | None]
    fit: GMMFit | None


def _load_small(path: Path, factor: float) -> np.ndarray:
    from topaz_lightning.io.micrographs import read_micrograph
    from topaz_lightning.preprocess.fourier import downsample

    return downsample(read_micrograph(path), factor)


def _sample_job(job: tuple) -> tuple[np.ndarray, tuple[int, int]]:
    path, index, factor, n, seed = job
    image = _load_small(path, factor)
    check_not_constant(image, str(path))
    return sample_pixels(image, n, image_rng(seed, index)), image.shape


def _write_job(job: tuple) -> tuple[int, int]:
    from topaz_lightning.io.micrographs import read_pixel_size, write_micrograph
    from topaz_lightning.preprocess.pipeline import standardize

    path, target, factor, normalize, fit, index, overwrite = job
    image = _load_small(path, factor)
    if normalize == "standardize":
        image = standardize(image, str(path))
    elif normalize == "gmm":
        check_not_constant(image, str(path))
        image = normalize_gmm(image, fit, index)
    pixel_size = read_pixel_size(path)
    out_pixel = None if pixel_size is None else pixel_size * factor
    write_micrograph(target, image, pixel_size_a=out_pixel, overwrite=overwrite)
    return image.shape


def _run_jobs(
    fn: Callable[[tuple], object],
    jobs: list[tuple],
    pool: ProcessPoolExecutor | None,
    desc: str,
    progress: bool,
) -> list:
    from tqdm import tqdm

    results = []
    with tqdm(total=len(jobs), desc=desc, unit="mic", disable=not progress) as bar:
        outcomes = map(fn, jobs) if pool is None else pool.map(fn, jobs)
        for result in outcomes:
            results.append(result)
            bar.update()
    return results


def output_paths(names: Iterable[str], output_dir: str | os.PathLike) -> dict[str, Path]:
    """Where ``preprocess_files`` writes each micrograph: ``output_dir/<name>.mrc``."""
    return {name: Path(output_dir) / f"{name}.mrc" for name in names}


def check_outputs(
    sources: Mapping[str, Path], targets: Mapping[str, Path], overwrite: bool
) -> None:
    """Refuse (before any work) outputs that exist without overwrite, or that would replace an input."""
    inputs = {Path(p).resolve() for p in sources.values()}
    for target in targets.values():
        if target.resolve() in inputs:
            raise ConfigError("output_dir", f"output {target} would replace an input micrograph")
        check_writable(target, overwrite)


def preprocess_files(
    sources: Mapping[str, str | os.PathLike],
    output_dir: str | os.PathLike,
    downsample: float = 1.0,
    normalize: str = "gmm",
    seed: int = 0,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PreprocessResult:
    """Downsample and normalize micrograph files into ``output_dir/<name>.mrc`` (float32).

    Gives the same pixels as ``preprocess_images`` on the same micrographs and seed, without
    holding them all in memory: for ``gmm`` a first pass reads, downsamples and samples each
    micrograph in parallel, the mixture is fit on the pooled sample, and a second pass re-reads,
    normalizes and writes. The pixel size (if the input has one) is multiplied by the factor.
    Every output is checked before any work starts; each is written atomically, and if any
    micrograph fails, the outputs this call created are removed again.
    """
    check_preprocess_settings(downsample, normalize)
    factor = float(downsample)
    num_workers = default_num_workers() if num_workers is None else int(num_workers)
    if num_workers < 1:
        raise ConfigError("num_workers", f"must be >= 1 (or null for automatic), got {num_workers}")
    sources = {name: Path(p) for name, p in sources.items()}
    if not sources:
        raise ConfigError("input", "no micrographs to preprocess")
    targets = output_paths(sources, output_dir)
    check_outputs(sources, targets, overwrite)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    names = list(sources)

    pool = None
    if num_workers > 1 and len(names) > 1:
        # spawn, not fork: the parent may hold threads (tqdm, BLAS) that fork would copy mid-lock
        pool = ProcessPoolExecutor(
            max_workers=min(num_workers, len(names)), mp_context=get_context("spawn")
        )
    existed = {name for name, target in targets.items() if target.exists()}
    try:
        fit, shapes = _two_passes(
            sources, targets, names, factor, normalize, seed, sample_size, overwrite, pool, progress
        )
    except BaseException:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
            pool = None
        # a failed run leaves no new half-set of outputs behind
        for name, target in targets.items():
            if name not in existed and target.exists():
                target.unlink()
        raise
    finally:
        if pool is not None:
            pool.shutdown()
    from topaz_lightning.io.micrographs import read_pixel_size

    return PreprocessResult(
        outputs=targets,
        shapes={name: tuple(s) for name, s in zip(names, shapes, strict=True)},
        pixel_sizes={name: read_pixel_size(targets[name]) for name in names},
        fit=fit,
    )


def _two_passes(
    sources, targets, names, factor, normalize, seed, sample_size, overwrite, pool, progress
):
    fit = None
    if normalize == "gmm":
        n = samples_per_image(len(names), sample_size)
        jobs = [(sources[name], k, factor, n, seed) for k, name in enumerate(names)]
        sampled = _run_jobs(_sample_job, jobs, pool, "sampling pixels", progress)
        fit = fit_gmm_samples([s for s, _ in sampled], names=names)
        log.info(
            "GMM fit: pi=%.4f mu=%s sigma=%s dominant=%d (%d iterations, converged=%s)",
            fit.pi,
            np.round(fit.mu, 4).tolist(),
            np.round(fit.sigma, 4).tolist(),
            fit.dominant,
            fit.n_iter,
            fit.converged,
        )

    jobs = [
        (sources[name], targets[name], factor, normalize, fit, k, overwrite)
        for k, name in enumerate(names)
    ]
    shapes = _run_jobs(_write_job, jobs, pool, "writing micrographs", progress)
    return fit, shapes
