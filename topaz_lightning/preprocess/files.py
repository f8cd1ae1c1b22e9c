"""Preprocess micrograph files into MRCs (downsample + normalize) in worker threads, continuing interrupted jobs."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

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
from topaz_lightning.preprocess.job import (  # noqa: F401 - public names of this module before
    JOB_FILE,
    PreprocessJob,
    job_settings,
    open_job,
    output_paths,
)
from topaz_lightning.preprocess.pipeline import check_preprocess_settings
from topaz_lightning.utils import jobs as job_service
from topaz_lightning.utils.jobs import FAILURES_FILE, FailureLog

log = logging.getLogger("topaz_lightning")


def default_num_workers() -> int:
    """Worker threads used when none is configured: min(usable cores, 4)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


@dataclass
class PreprocessResult:
    """What ``preprocess_files`` did: the MRC of every micrograph done, its shape and pixel size.

    ``outputs``/``shapes``/``pixel_sizes`` cover every micrograph whose output is complete, the
    ones an earlier interrupted run wrote (``continued``) included; ``failures`` lists
    ``(name, reason)`` of the micrographs that could not be done (see ``FailureLog``).
    """

    outputs: dict[str, Path]
    shapes: dict[str, tuple[int, int]]
    pixel_sizes: dict[str, float | None]
    fit: GMMFit | None
    continued: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


def _is_complete(target: Path) -> bool:
    """An output is complete if it exists and is a valid MRC of the size its header says.

    Outputs are renamed into place only when written, so this fails only for a file someone
    else damaged; that micrograph is then done again.
    """
    if not target.is_file():
        return False
    import mrcfile

    try:
        with mrcfile.mmap(target, mode="r", permissive=False) as mrc:
            return mrc.data is not None and mrc.data.ndim == 2
    except Exception as err:  # noqa: BLE001 - mrcfile raises ValueError, OSError, ...
        log.warning("%s: earlier output is not a valid MRC (%s); doing it again", target, err)
        return False


def _output_shape(target: Path) -> tuple[int, int]:
    import mrcfile

    with mrcfile.open(target, mode="r", header_only=True, permissive=False) as mrc:
        return int(mrc.header.ny), int(mrc.header.nx)


def _load_small(path: Path, factor: float) -> np.ndarray:
    from topaz_lightning.io.micrographs import read_micrograph
    from topaz_lightning.preprocess.fourier import downsample

    return downsample(read_micrograph(path), factor)


def _sample_job(job: tuple) -> np.ndarray:
    path, index, factor, n, seed = job
    image = _load_small(path, factor)
    check_not_constant(image, str(path))
    return sample_pixels(image, n, image_rng(seed, index))


def _write_job(job: tuple) -> tuple[int, int]:
    from topaz_lightning.io.micrographs import read_pixel_size, write_micrograph
    from topaz_lightning.preprocess.pipeline import standardize

    path, target, name, factor, normalize, fit = job
    image = _load_small(path, factor)
    if normalize == "standardize":
        image = standardize(image, str(path))
    elif normalize == "gmm":
        check_not_constant(image, str(path))
        if name not in fit.names:
            raise InputError(
                f"not part of the GMM fit stored in {JOB_FILE} (it could not be read when the "
                "fit was made); start over with overwrite=true to fit all micrographs together",
                path=path,
            )
        image = normalize_gmm(image, fit, name)
    pixel_size = read_pixel_size(path)
    out_pixel = None if pixel_size is None else pixel_size * factor
    # the job record says these targets belong to this job (open_job checked them)
    write_micrograph(target, image, pixel_size_a=out_pixel, overwrite=True)
    return image.shape


def _run_each(
    fn: Callable[[tuple], object],
    jobs: list[tuple[str, tuple]],
    pool: ThreadPoolExecutor | None,
    failures: FailureLog,
    desc: str,
    progress: bool,
) -> dict[str, object]:
    """``{name: fn(job)}`` for every job that did not fail; a bad micrograph goes to ``failures``."""
    from tqdm import tqdm

    results: dict[str, object] = {}
    with tqdm(total=len(jobs), desc=desc, unit="mic", disable=not progress) as bar:
        if pool is None:
            for name, job in jobs:
                with failures.guard(name):
                    results[name] = fn(job)
                bar.update()
            return results
        futures = [(name, pool.submit(fn, job)) for name, job in jobs]
        try:
            for name, future in futures:
                with failures.guard(name):
                    results[name] = future.result()
                bar.update()
        finally:
            # strict failure, Ctrl-C: drop what has not started; running ones finish their file
            for _, future in futures:
                future.cancel()
    return results


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
    failures: FailureLog | None = None,
    job: PreprocessJob | None = None,
) -> PreprocessResult:
    """Downsample and normalize micrograph files into ``output_dir/<name>.mrc`` (float32).

    Gives the same pixels as ``preprocess_images`` on the same micrographs and seed, without
    holding them all in memory: for ``gmm`` a first pass reads, downsamples and samples each
    micrograph, the mixture is fit on the pooled sample and stored in the job record, and a
    second pass re-reads, normalizes and writes. The pixel size (if the input has one) is
    multiplied by the factor.

    Continue, do not start over: each output is written atomically, so one that exists is
    complete; a rerun into the same ``output_dir`` (see :func:`open_job`) keeps those and does
    the rest with the stored GMM fit, ending with the same files as an uninterrupted run.

    Bad micrographs (``InputError``) go to ``failures`` (a :class:`FailureLog`; by default a
    strict one, so the first raises) and the others are done. The work runs in
    ``num_workers`` threads of this process (the FFTs, file reads and array arithmetic release
    the GIL), so killing the process leaves no worker behind that could write later.
    """
    check_preprocess_settings(downsample, normalize)
    factor = float(downsample)
    num_workers = default_num_workers() if num_workers is None else int(num_workers)
    if num_workers < 1:
        raise ConfigError("num_workers", f"must be >= 1 (or null for automatic), got {num_workers}")
    sources = {name: Path(p) for name, p in sources.items()}
    if not sources:
        raise ConfigError("input", "no micrographs to preprocess")
    output_dir = Path(output_dir)
    targets = output_paths(sources, output_dir)
    inputs = {p.resolve() for p in sources.values()}
    for target in targets.values():
        if target.resolve() in inputs:
            raise ConfigError("output_dir", f"output {target} would replace an input micrograph")
    names = list(sources)
    settings = job_settings(factor, normalize, seed, sample_size)
    if job is None:
        job = open_job(output_dir, sources, settings, overwrite)
    if failures is None:
        failures = FailureLog(strict=True)
    job_service.remove_temporaries(
        output_dir,
        [t.name for t in targets.values()]
        + [JOB_FILE, FAILURES_FILE]
        + [Path(p).name for p in job.extra_outputs],
    )

    done = [name for name in names if job.continuing and _is_complete(targets[name])]
    if done:
        log.info(
            "continuing the job in %s: %d of %d micrograph(s) already done",
            output_dir,
            len(done),
            len(names),
        )
    workers = min(num_workers, len(names))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="tzl-preprocess") if workers > 1 else None
    try:
        fit = job.fit
        failed_now: set[str] = set()
        if normalize == "gmm" and fit is None:
            n = samples_per_image(len(names), sample_size)
            jobs = [(name, (sources[name], k, factor, n, seed)) for k, name in enumerate(names)]
            sampled = _run_each(_sample_job, jobs, pool, failures, "sampling pixels", progress)
            failed_now = set(names) - set(sampled)
            good = [name for name in names if name in sampled]
            if failed_now and good:
                # each micrograph's sample size and random stream depend on the number and order
                # of micrographs: draw again over the readable ones, so a skipped file leaves the
                # fit (and every other output) exactly as without it
                n = samples_per_image(len(good), sample_size)
                jobs = [(name, (sources[name], k, factor, n, seed)) for k, name in enumerate(good)]
                sampled = _run_each(_sample_job, jobs, pool, failures, "sampling pixels", progress)
                failed_now = set(names) - set(sampled)
                good = [name for name in good if name in sampled]
            if good:
                fit = fit_gmm_samples([sampled[name] for name in good], names=good)
                job.save_fit(fit)
        if fit is not None:
            log.info(
                "GMM fit: pi=%.4f mu=%s sigma=%s dominant=%d (%d iterations, converged=%s)",
                fit.pi,
                np.round(fit.mu, 4).tolist(),
                np.round(fit.sigma, 4).tolist(),
                fit.dominant,
                fit.n_iter,
                fit.converged,
            )
        todo = [name for name in names if name not in done and name not in failed_now]
        if normalize == "gmm" and fit is None:
            todo = []  # every micrograph failed while sampling
        jobs = [
            (name, (sources[name], targets[name], name, factor, normalize, fit)) for name in todo
        ]
        written = _run_each(_write_job, jobs, pool, failures, "writing micrographs", progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    order = {name: k for k, name in enumerate(names)}
    # the same failure list whichever pass (or which earlier run) met the bad file
    failures.failures.sort(key=lambda item: order.get(item[0], len(order)))
    shapes = {
        name: tuple(int(s) for s in written[name])
        if name in written
        else _output_shape(targets[name])
        for name in names
        if name in written or name in done
    }
    from topaz_lightning.io.micrographs import read_pixel_size

    # as the outputs store them (a float32 header field), for new and earlier outputs alike
    pixel_sizes = {name: read_pixel_size(targets[name]) for name in shapes}
    return PreprocessResult(
        outputs={name: targets[name] for name in shapes},
        shapes=shapes,
        pixel_sizes=pixel_sizes,
        fit=fit,
        continued=done,
        failures=list(failures.failures),
    )
