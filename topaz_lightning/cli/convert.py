"""Convert particle coordinates between formats (Topaz TSV, RELION STAR, EMAN box, CryoPPP, CSV).

Coordinates can be scaled (e.g. after downsampling) and flipped in y (y' = H - 1 - y, applied in
the input frame before scaling). The resolved config is saved into Hydra's run directory.

Example usage::

    # CryoPPP directory -> one RELION 3.1 STAR file at 4x downsampled size
    tzl-convert input=data/samples/empiar10017_dev/coords output=empiar10017_bin4.star scale=0.25

    # RELION 3.0 autopicks -> EMAN box files (one per micrograph), checked against the image
    tzl-convert input=data/samples/ucsf_mrc_sample/Ucsf_stack_1142_DW_autopick.star \
        output=boxes/ output_format=box box_size=64 \
        micrographs=data/samples/ucsf_mrc_sample

    # JPEG frame (y down) -> original MRC frame of EMPIAR-10017 (vertical flip)
    tzl-convert input=data/samples/empiar10017_dev/coords output=mrc_frame.tsv \
        flip_y=true image_height=4096
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from topaz_lightning.cli._hydra import entry_point, require
from topaz_lightning.errors import ConfigError
from topaz_lightning.io.coordinates import (
    ONE_MICROGRAPH_PER_FILE,
    canonical_format,
    check_coordinate_output,
    read_coordinates,
    transform_coordinates,
    validate_coordinates,
    write_coordinates,
)

log = logging.getLogger("topaz_lightning")


def _micrograph_shapes(source: str | os.PathLike) -> dict[str, tuple[int, int]]:
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph

    return {name: tuple(read_micrograph(p).shape) for name, p in list_micrographs(source).items()}


def _resolve_scale(scale: float | None, downsample: float | None) -> float:
    if downsample is None:
        scale = 1.0 if scale is None else float(scale)
        if not scale > 0:
            raise ConfigError("scale", f"must be a positive number, got {scale}")
        return scale
    downsample = float(downsample)
    if not downsample > 0:
        raise ConfigError("downsample", f"must be a positive factor, got {downsample}")
    if scale is not None and float(scale) != 1.0 and abs(float(scale) * downsample - 1) > 1e-9:
        raise ConfigError(
            "downsample", f"conflicts with scale={scale}; set only one (scale = 1/downsample)"
        )
    return 1.0 / downsample


def convert(
    input: str | os.PathLike,
    output: str | os.PathLike,
    input_format: str | None = None,
    output_format: str | None = None,
    scale: float | None = 1.0,
    downsample: float | None = None,
    flip_y: bool = False,
    image_height: float | None = None,
    micrographs: str | os.PathLike | None = None,
    box_size: float | None = None,
    per_micrograph: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Read ``input``, optionally validate, flip and scale, and write ``output``; return its path."""
    factor = _resolve_scale(scale, downsample)
    df = read_coordinates(input, fmt=input_format)
    output_text = os.fspath(output)
    output = Path(output)
    fmt = canonical_format(output_format) if output_format is not None else None
    if per_micrograph is None:
        several = df["micrograph"].nunique() > 1
        per_micrograph = (
            output.is_dir()
            or output_text.endswith(("/", os.sep))
            or (fmt in ONE_MICROGRAPH_PER_FILE and several)
        )
    if per_micrograph and fmt is None:
        raise ConfigError("output_format", "required when writing one file per micrograph")
    writes_box = fmt == "box" or (fmt is None and output.suffix.lower() == ".box")
    if writes_box and box_size is None:
        raise ConfigError("box_size", "required for EMAN .box output (box edge in output px)")
    # refuse an existing output before reading any micrograph
    check_coordinate_output(output, overwrite, per_micrograph)
    shapes = None
    if micrographs is not None:
        shapes = _micrograph_shapes(micrographs)
        validate_coordinates(df, shapes, source=input)
    heights = None
    if flip_y:
        if image_height is not None:
            heights = float(image_height)
        elif shapes is not None:
            heights = {name: shape[0] for name, shape in shapes.items()}
        else:
            raise ConfigError("flip_y", "needs image_height or micrographs to know image heights")
    out = transform_coordinates(df, scale=factor, flip_y=flip_y, heights=heights)

    written = write_coordinates(
        out, output, fmt=fmt, overwrite=overwrite, per_micrograph=per_micrograph, box_size=box_size
    )
    n_mic = out["micrograph"].nunique()
    log.info("wrote %d particles of %d micrograph(s) to %s", len(out), n_mic, written)
    print(f"wrote {len(out)} particles of {n_mic} micrograph(s) to {written}")
    return written


@entry_point("convert")
def main(cfg: DictConfig) -> None:
    """tzl-convert entry point: see the module docstring and configs/convert.yaml."""
    require(cfg, ("input", "output"), "input=picks.star output=picks.tsv")
    convert(
        input=cfg.input,
        output=cfg.output,
        input_format=cfg.input_format,
        output_format=cfg.output_format,
        scale=cfg.scale,
        downsample=cfg.downsample,
        flip_y=bool(cfg.flip_y),
        image_height=cfg.image_height,
        micrographs=cfg.micrographs,
        box_size=cfg.box_size,
        per_micrograph=cfg.per_micrograph,
        overwrite=bool(cfg.overwrite),
    )


if __name__ == "__main__":
    main()
