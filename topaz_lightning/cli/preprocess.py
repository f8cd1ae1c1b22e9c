"""Downsample (Fourier crop) and normalize micrographs into float32 MRC files.

Reads a directory, glob or list file of MRC/TIFF/PNG/JPEG micrographs and writes
``output_dir/<name>.mrc`` for each, with the pixel size scaled; optionally scales a coordinate
file by the same factor into ``output_dir``. Normalization ``gmm`` is the paper's per-image-scaled
two-component Gaussian mixture fit over a pixel sample of all micrographs. The resolved config,
the fitted mixture (``preprocess.yaml``) and the log are saved in ``output_dir``.

When things go wrong: a rerun of the same command continues an interrupted job (micrographs
already written are kept, the stored GMM fit is reused; ``preprocess_job.json`` records the
job); a micrograph that cannot be read is skipped, and the others are done, listed in
``failures.tsv``, exit status 3 (``strict=true``: the first bad file stops the job);
``overwrite=true`` starts over and first removes the earlier job's outputs.

Example usage::

    # the four EMPIAR-10017 JPEGs, 4x downsampled, with their particle coordinates
    tzl-preprocess input=data/samples/empiar10017_dev/images output_dir=empiar10017_bin4 \
        downsample=4 coordinates=data/samples/empiar10017_dev/coords

    # the UCSF MRC, 2x, per-image standardization, single process
    tzl-preprocess input=data/samples/ucsf_mrc_sample output_dir=ucsf_bin2 downsample=2 \
        normalize=standardize num_workers=1
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from topaz_lightning.cli._hydra import entry_point, require

log = logging.getLogger("topaz_lightning")


def run(cfg: DictConfig) -> dict:
    """Run the preprocessing described by a composed ``preprocess`` config; return a summary dict.

    Raises ``PartialFailureError`` (exit status 3) after doing every good micrograph when some
    could not be read, unless ``cfg.strict`` (then the first bad one raises).
    """
    from topaz_lightning.errors import InputError
    from topaz_lightning.geometry import coordinates_to_model_frame
    from topaz_lightning.io.micrographs import list_micrographs
    from topaz_lightning.preprocess.files import preprocess_files
    from topaz_lightning.preprocess.job import job_settings, open_job
    from topaz_lightning.preprocess.pipeline import check_preprocess_settings
    from topaz_lightning.utils import jobs
    from topaz_lightning.utils.atomic import atomic_output
    from topaz_lightning.utils.jobs import FailureLog

    require(cfg, ("input", "output_dir"), "input=micrographs/ output_dir=processed")
    check_preprocess_settings(cfg.downsample, cfg.normalize)
    factor = float(cfg.downsample)
    output_dir = Path(cfg.output_dir)
    overwrite = bool(cfg.overwrite)
    summary_path = output_dir / "preprocess.yaml"

    sources = list_micrographs(cfg.input)
    failures = FailureLog(strict=bool(cfg.strict))
    # a name that cannot become a file name is skipped and reported, never the whole job
    unsafe = {}
    for name in sources:
        try:
            jobs.safe_file_name(name, ".mrc", where="micrograph name")
        except InputError as err:
            if failures.strict:
                raise
            unsafe[name] = err.problem
    sources = {n: p for n, p in sources.items() if n not in unsafe}
    coords = None
    coords_target = None
    if cfg.coordinates:
        from topaz_lightning.io.coordinates import read_coordinates

        # read (and so validate) the coordinates before the long part of the work
        coords = read_coordinates(cfg.coordinates)
        coords_target = jobs.output_path(output_dir, cfg.coordinates_output, "coordinates_output")
        jobs.refuse_symlinked_dirs(output_dir, coords_target, "coordinates_output")
        unknown = sorted(set(coords["micrograph"].astype(str)) - set(sources))
        if unknown:
            log.warning(
                "%d coordinate micrograph name(s) not among the inputs (e.g. %s); kept anyway",
                len(unknown),
                unknown[0],
            )
        _check_coordinates_inside(coords, sources, str(cfg.coordinates))

    extras = [summary_path] + ([coords_target] if coords_target is not None else [])
    settings = job_settings(factor, cfg.normalize, int(cfg.seed), int(cfg.sample_size))
    # start, continue or refuse: decided (and stale outputs removed) before any work
    job = open_job(output_dir, sources, settings, overwrite, extra_outputs=extras)
    for name, problem in unsafe.items():
        failures.add(name, problem)
    result = preprocess_files(
        sources,
        output_dir,
        downsample=factor,
        normalize=cfg.normalize,
        seed=int(cfg.seed),
        sample_size=int(cfg.sample_size),
        num_workers=cfg.num_workers,
        overwrite=overwrite,
        progress=bool(cfg.progress),
        failures=failures,
        job=job,
    )
    if coords is not None:
        from topaz_lightning.io.coordinates import write_coordinates

        # this job's own file (checked above): a continued run writes it again, identically
        write_coordinates(coordinates_to_model_frame(coords, factor), coords_target, overwrite=True)
        log.info("wrote %d scaled coordinates to %s", len(coords), coords_target)

    summary = {
        "input": str(cfg.input),
        "downsample": factor,
        "normalize": str(cfg.normalize),
        "micrographs": {
            name: {
                "source": str(sources[name]),
                "output": result.outputs[name].name,
                "shape": list(result.shapes[name]),
                "pixel_size_a": result.pixel_sizes[name],
            }
            for name in sources
            if name in result.outputs
        },
        "failed": [name for name, _ in result.failures],
        "gmm": None if result.fit is None else result.fit.as_dict(),
        "coordinates": None if coords_target is None else str(coords_target),
    }
    with atomic_output(summary_path, overwrite=True) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(summary)))
    earlier = f" ({len(result.continued)} done by an earlier run)" if result.continued else ""
    print(f"preprocessed {len(result.outputs)} micrograph(s) into {output_dir}{earlier}")
    # failures.tsv (or removal of a stale one); PartialFailureError -> exit status 3
    failures.finish(output_dir, num_done=len(result.outputs))
    return summary


def _check_coordinates_inside(coords, sources: dict, source: str) -> None:
    """Refuse coordinates outside their micrograph before any work (sizes from the headers); a
    micrograph that cannot be read is left to the job's skip-and-report."""
    from topaz_lightning.errors import InputError
    from topaz_lightning.io.coordinates import validate_coordinates
    from topaz_lightning.io.micrographs import read_micrograph_shape

    shapes = {}
    for name in sorted(set(coords["micrograph"].astype(str)) & set(sources)):
        try:
            shapes[name] = read_micrograph_shape(sources[name])
        except InputError:
            continue
    known = coords[coords["micrograph"].astype(str).isin(shapes)].reset_index(drop=True)
    if len(known):
        validate_coordinates(known, shapes, source=source)


@entry_point("preprocess")
def main(cfg: DictConfig) -> None:
    """tzl-preprocess entry point: see the module docstring and configs/preprocess.yaml."""
    run(cfg)


if __name__ == "__main__":
    main()
