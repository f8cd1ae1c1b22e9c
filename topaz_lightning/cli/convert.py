"""Convert particle coordinates between formats (Topaz TSV, RELION STAR, EMAN box, CryoPPP, CSV).

Coordinates can be scaled (e.g. after downsampling) and flipped in y (y' = H - 1 - y, applied in
the input frame before scaling). tzl-convert keeps no run stamps (config, log): it writes only
its output.

When things go wrong: the output (one file, or a whole directory of per-micrograph files) is
renamed into place in one step, so an interrupted run leaves nothing and a plain rerun does it
all; an existing output is refused unless ``overwrite=true``, which for a per-micrograph
directory also removes the earlier files of that format no longer in the table. A bad
per-micrograph coordinate file in an input directory, or a micrograph of ``micrographs=`` that
cannot be read, is skipped (its particles are not written) and listed in
``<output>.failures.tsv`` beside the output, exit status 3; ``strict=true`` stops at the first.

``threshold=`` and ``top_k=`` filter any scored picks file (e.g. tzl-pick's, which with no
threshold holds every maximum) by score, per micrograph for ``top_k``.

Example usage::

    # CryoPPP directory -> one RELION 3.1 STAR file at 4x downsampled size
    tzl-convert input=data/samples/empiar10017_dev/coords output=empiar10017_bin4.star scale=0.25

    # RELION 3.0 autopicks -> EMAN box files (one per micrograph), checked against the image
    tzl-convert input=data/samples/ucsf_mrc_sample/Ucsf_stack_1142_DW_autopick.star \
        output=boxes/ output_format=box box_size=64 \
        micrographs=data/samples/ucsf_mrc_sample

    # keep the best 650 picks per micrograph scoring at least 0 (logit) of a tzl-pick output
    tzl-convert input=picks/picks.tsv output=picks_top650.star threshold=0 top_k=650

    # JPEG frame (y down) -> original MRC frame of EMPIAR-10017 (vertical flip)
    tzl-convert input=data/samples/empiar10017_dev/coords output=mrc_frame.tsv \
        flip_y=true image_height=4096
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from topaz_lightning.cli._hydra import entry_point, require
from topaz_lightning.errors import ConfigError, InputError, PartialFailureError
from topaz_lightning.geometry import check_downsample
from topaz_lightning.io.coordinates import (
    ONE_MICROGRAPH_PER_FILE,
    _coordinate_files,  # the directory reader's own choice of files
    canonical_format,
    check_coordinate_output,
    detect_format,
    per_micrograph_paths,
    read_coordinates,
    transform_coordinates,
    validate_coordinates,
    write_coordinates,
)
from topaz_lightning.io.formats.common import check_micrograph_dir, with_micrograph_files
from topaz_lightning.utils import jobs
from topaz_lightning.utils.jobs import FailureLog, write_failures

log = logging.getLogger("topaz_lightning")


def _micrograph_shapes(
    source: str | os.PathLike, failures: FailureLog
) -> dict[str, tuple[int, int]]:
    """``{name: (H, W)}`` of every micrograph that can be read; the others go to ``failures``."""
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph

    shapes = {}
    for name, path in list_micrographs(source).items():
        with failures.guard(name):
            shapes[name] = tuple(read_micrograph(path).shape)
    return shapes


def _read_input(source: str | os.PathLike, fmt: str | None, failures: FailureLog) -> pd.DataFrame:
    """``read_coordinates``, except that in a directory a bad file goes to ``failures``."""
    path = Path(source)
    files = _coordinate_files(path) if path.is_dir() else []
    if not files:
        return read_coordinates(path, fmt=fmt)  # one file (or an empty directory: its error)
    tables, formats = [], {}
    for f in files:
        if f.stat().st_size == 0:
            log.warning("%s: empty coordinate file, no particles for this micrograph", f)
            continue
        with failures.guard(f.name):
            file_fmt = canonical_format(fmt) if fmt is not None else detect_format(f)
            try:
                table = read_coordinates(f, fmt=file_fmt)
            except InputError as err:
                # a header-only file is a micrograph without particles; anything else fails
                if not str(err.problem).startswith("empty coordinate file"):
                    raise
                log.warning("%s: %s", f, err.problem)
                continue
            formats.setdefault(file_fmt, f)
            tables.append(table)
    if len(formats) > 1:
        desc = ", ".join(f"{name} ({p.name})" for name, p in formats.items())
        raise InputError(f"directory mixes coordinate formats: {desc}", path)
    if not tables:
        if failures.failures:
            return pd.DataFrame({"micrograph": [], "x": [], "y": []})
        raise InputError("no coordinates in any file of the directory", path)
    if not all("score" in t.columns for t in tables):
        tables = [t.drop(columns="score", errors="ignore") for t in tables]
    return pd.concat(tables, ignore_index=True)


def failures_path(output: str | os.PathLike) -> Path:
    """Where tzl-convert lists its failures: ``<output>.failures.tsv`` beside the output."""
    output = Path(os.fspath(output).rstrip("/" + os.sep))
    return output.with_name(output.name + ".failures.tsv")


def _resolve_scale(scale: float | None, downsample: float | None) -> float:
    if downsample is None:
        scale = 1.0 if scale is None else float(scale)
        if not scale > 0:
            raise ConfigError("scale", f"must be a positive number, got {scale}")
        return scale
    downsample = check_downsample(downsample, "downsample")
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
    strict: bool = True,
    threshold: float | None = None,
    top_k: int | None = None,
    star_micrograph_dir: str | None = None,
) -> Path:
    """Read ``input``, optionally validate, flip and scale, and write ``output``; return its path.

    ``threshold`` keeps the particles scoring at least that much and ``top_k`` the best k of each
    micrograph (both need a score column): re-thresholding any scored picks file. With
    ``micrographs``, a STAR output names each micrograph's file (``mic001.mrc``, under
    ``star_micrograph_dir`` when given) in ``_rlnMicrographName``; without, the bare name.

    With ``strict=False`` a bad file in an input directory, or a micrograph that cannot be
    read, is skipped: the rest is written, the failures are listed in
    :func:`failures_path` and ``PartialFailureError`` is raised at the end.
    """
    star_dir = check_micrograph_dir(star_micrograph_dir)
    if star_dir is not None and micrographs is None:
        raise ConfigError(
            "star_micrograph_dir", "needs micrographs= (their files give the names' extensions)"
        )
    factor = _resolve_scale(scale, downsample)
    threshold, top_k = _check_filter(threshold, top_k)
    failures = FailureLog(strict=strict)
    df = filter_scores(_read_input(input, input_format, failures), threshold, top_k, input)
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
    if per_micrograph and Path(input).is_dir() and output.resolve() == Path(input).resolve():
        raise ConfigError("output", f"{output} is the input directory; write to another one")
    shapes = None
    if micrographs is not None:
        shapes = _micrograph_shapes(micrographs, failures)
        unreadable = {name for name, _ in failures.failures}
        # particles of a micrograph that could not be read cannot be checked: not written
        df = df[~df["micrograph"].astype(str).isin(unreadable)].reset_index(drop=True)
        if len(df):
            validate_coordinates(df, shapes, source=input)
    heights = None
    if flip_y:
        if image_height is not None:
            heights = float(image_height)
        elif shapes is not None:
            heights = {name: shape[0] for name, shape in shapes.items()}
        else:
            raise ConfigError("flip_y", "needs image_height or micrographs to know image heights")
    if per_micrograph:
        df = _drop_unsafe_names(df, fmt, failures)
    report = failures_path(output)
    if not len(df):
        write_failures(report, failures.failures)
        raise PartialFailureError(failures.failures, report, num_done=0)
    out = transform_coordinates(df, scale=factor, flip_y=flip_y, heights=heights)
    if micrographs is not None:  # STAR's _rlnMicrographName: the file, as tzl-pick writes it
        from topaz_lightning.io.micrographs import list_micrographs

        out = with_micrograph_files(out, list_micrographs(micrographs), star_dir)

    if per_micrograph and overwrite and output.is_dir():
        _remove_stale_files(output, out["micrograph"], fmt)
    written = write_coordinates(
        out, output, fmt=fmt, overwrite=overwrite, per_micrograph=per_micrograph, box_size=box_size
    )
    n_mic = out["micrograph"].nunique()
    log.info("wrote %d particles of %d micrograph(s) to %s", len(out), n_mic, written)
    print(f"wrote {len(out)} particles of {n_mic} micrograph(s) to {written}")
    if failures.failures:
        write_failures(report, failures.failures)
        raise PartialFailureError(failures.failures, report)
    if report.is_file():
        report.unlink()  # from an earlier run into the same output
    return written


def _check_filter(threshold, top_k) -> tuple[float | None, int | None]:
    import math

    if threshold is not None:
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise ConfigError("threshold", f"must be a number, got {threshold!r}") from None
        if math.isnan(threshold):
            raise ConfigError("threshold", "must be a number, got NaN")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError("top_k", f"must be an integer >= 1, got {top_k!r}")
    return threshold, top_k


def filter_scores(
    df: pd.DataFrame, threshold: float | None, top_k: int | None, source=None
) -> pd.DataFrame:
    """Particles scoring >= ``threshold`` and the best ``top_k`` per micrograph (ties: the first
    in the file), in their original order."""
    if threshold is None and top_k is None:
        return df
    if "score" not in df.columns:
        raise InputError("threshold/top_k need a score column; this input has none", source)
    out = df
    if threshold is not None:
        out = out[out["score"].to_numpy(dtype="float64") >= threshold]
    if top_k is not None:
        best = out.sort_values("score", ascending=False, kind="stable")
        out = best.groupby("micrograph", sort=False).head(top_k).sort_index()
    log.info(
        "kept %d of %d particles (threshold %s, top_k %s)", len(out), len(df), threshold, top_k
    )
    return out.reset_index(drop=True)


def _drop_unsafe_names(df: pd.DataFrame, fmt: str, failures: FailureLog) -> pd.DataFrame:
    """Particles of micrographs whose name cannot be a file name (path parts, control characters,
    too long) are skipped and reported (strict: the first stops the run)."""
    from topaz_lightning.io import coordinates as coords

    suffix = coords.EXTENSIONS[canonical_format(fmt)]
    names = df["micrograph"].astype(str)
    bad = []
    for name in names.unique():
        try:
            jobs.safe_file_name(name, suffix, where="micrograph name")
        except InputError as err:
            if failures.strict:
                raise
            failures.add(name, err.problem)
            bad.append(name)
    return df[~names.isin(bad)].reset_index(drop=True) if bad else df


def _remove_stale_files(directory: Path, names: pd.Series, fmt: str) -> None:
    """Before overwriting a per-micrograph directory: remove the earlier files of this format
    whose micrograph is not in the new table (they would be read back as part of the set)."""
    targets = per_micrograph_paths(names, directory, fmt)
    keep = {p.name for p in targets.values()}
    suffix = next(iter(targets.values())).suffix
    stale = [p for p in _coordinate_files(directory) if p.suffix == suffix and p.name not in keep]
    jobs.remove_outputs(stale)
    if stale:
        log.info("overwrite=true: removed %d earlier file(s) from %s", len(stale), directory)


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
        strict=bool(cfg.strict),
        threshold=cfg.get("threshold"),
        top_k=cfg.get("top_k"),
        star_micrograph_dir=cfg.get("star_micrograph_dir"),
    )


if __name__ == "__main__":
    main()
