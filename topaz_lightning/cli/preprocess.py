"""Downsample (Fourier crop) and normalize micrographs into float32 MRC files.

Reads a directory, glob or list file of MRC/TIFF/PNG/JPEG micrographs and writes
``output_dir/<name>.mrc`` for each, with the pixel size scaled; optionally scales a coordinate
file by the same factor into ``output_dir``. Normalization ``gmm`` is the paper's per-image-scaled
two-component Gaussian mixture fit over a pixel sample of all micrographs. The resolved config,
the fitted mixture (``preprocess.yaml``) and the log are saved in ``output_dir``. Existing
outputs are refused unless ``overwrite=true``.

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

from topaz_lightning.cli._hydra import entry_point, require, resolve_output

log = logging.getLogger("topaz_lightning")


def run(cfg: DictConfig) -> dict:
    """Run the preprocessing described by a composed ``preprocess`` config; return a summary dict."""
    from topaz_lightning.io.micrographs import list_micrographs
    from topaz_lightning.preprocess.files import preprocess_files
    from topaz_lightning.preprocess.fourier import scale_coordinates
    from topaz_lightning.preprocess.pipeline import check_preprocess_settings
    from topaz_lightning.utils.atomic import atomic_output, check_writable

    require(cfg, ("input", "output_dir"), "input=micrographs/ output_dir=processed")
    check_preprocess_settings(cfg.downsample, cfg.normalize)
    factor = float(cfg.downsample)
    output_dir = Path(cfg.output_dir)
    overwrite = bool(cfg.overwrite)
    summary_path = check_writable(output_dir / "preprocess.yaml", overwrite)

    sources = list_micrographs(cfg.input)
    coords = None
    coords_target = None
    if cfg.coordinates:
        from topaz_lightning.io.coordinates import read_coordinates

        # read (and so validate) the coordinates before the long part of the work
        coords = read_coordinates(cfg.coordinates)
        coords_target = check_writable(resolve_output(cfg, "coordinates_output"), overwrite)
        unknown = sorted(set(coords["micrograph"].astype(str)) - set(sources))
        if unknown:
            log.warning(
                "%d coordinate micrograph name(s) not among the inputs (e.g. %s); kept anyway",
                len(unknown),
                unknown[0],
            )

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
    )
    if coords is not None:
        from topaz_lightning.io.coordinates import write_coordinates

        write_coordinates(scale_coordinates(coords, factor), coords_target, overwrite=overwrite)
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
        },
        "gmm": None if result.fit is None else result.fit.as_dict(),
        "coordinates": None if coords_target is None else str(coords_target),
    }
    with atomic_output(summary_path, overwrite=overwrite) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(summary)))
    print(f"preprocessed {len(sources)} micrograph(s) into {output_dir}")
    return summary


@entry_point("preprocess")
def main(cfg: DictConfig) -> None:
    """tzl-preprocess entry point: see the module docstring and configs/preprocess.yaml."""
    run(cfg)


if __name__ == "__main__":
    main()
