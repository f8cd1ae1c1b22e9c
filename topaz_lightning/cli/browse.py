"""Build the pick browser: one self-contained HTML page of micrographs with their picks.

Reads scored picks (any coordinate format, micrograph frame) and the micrographs, and writes one
static page (no server, no network: open it in any browser) with a thumbnail per micrograph,
its picks drawn as circles of the particle diameter, a threshold slider and a top-k box that
redraw every micrograph, pick counts per micrograph and in total beside the count expected from
the model's pi, and a score histogram. With ``truth=`` the picks are coloured matched / false,
missed particles are drawn, and the precision-recall curve shows the current setting.

The particle diameter, the expected count and the match distance come from ``model_path=``
(the trained model's geometry and pi) unless given; without a model ``particle_diameter_px`` is
required. tzl-browse keeps no run stamps: it writes only its output (refused if it exists,
unless ``overwrite=true``). A micrograph that cannot be read is left out and named on the page;
the page is written and the command exits with status 3.

Example usage::

    # picks of tzl-pick, with the model's diameter and expected count
    tzl-browse picks=picks_10017/picks.star micrographs=data/samples/empiar10017_dev/images \
        model_path=runs/10017/model.pt output=picks_10017/picks.html

    # any picks file with true particles, diameter in micrograph pixels
    tzl-browse picks=picks.tsv micrographs=data/samples/empiar10017_dev/images \
        truth=data/samples/empiar10017_dev/coords particle_diameter_px=108 output=browse.html
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from topaz_lightning.cli._hydra import entry_point, require
from topaz_lightning.errors import ConfigError, InputError, PartialFailureError

log = logging.getLogger("topaz_lightning")


def _number(cfg: DictConfig, key: str, minimum: float, strict: bool) -> float | None:
    value = cfg.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    ok = number > minimum if strict else number >= minimum
    if isinstance(value, bool) or not (ok and math.isfinite(number)):
        relation = ">" if strict else ">="
        raise ConfigError(key, f"must be a finite number {relation} {minimum:g}, got {value!r}")
    return number


def _model_geometry(path: str):
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.models import load_model

    _, extra = load_model(path)
    record = extra.get("geometry")
    return RunGeometry.from_dict(record, source=path) if record else None


def run(cfg: DictConfig) -> Path:
    """Write the browser page described by a composed ``browse`` config; return its path."""
    from topaz_lightning.browser import expected_particles, write_pick_browser
    from topaz_lightning.io.coordinates import read_coordinates
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph_shape
    from topaz_lightning.utils.atomic import check_writable

    require(
        cfg,
        ("picks", "micrographs", "output"),
        "picks=picks.star micrographs=images/ output=picks.html model_path=model.pt",
    )
    overwrite = bool(cfg.overwrite)
    output = check_writable(Path(str(cfg.output)), overwrite)
    diameter = _number(cfg, "particle_diameter_px", 0.0, strict=True)
    match_distance = _number(cfg, "match_distance_px", 0.0, strict=False)
    expected = _number(cfg, "expected_per_micrograph", 0.0, strict=False)
    threshold = cfg.get("threshold")
    if threshold is not None:
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise ConfigError(
                "threshold", f"must be a number (a logit), got {threshold!r}"
            ) from None
    thumb = cfg.get("thumbnail_downsample")
    if thumb is not None and (isinstance(thumb, bool) or not isinstance(thumb, int) or thumb < 1):
        raise ConfigError("thumbnail_downsample", f"must be an integer >= 1 or null, got {thumb!r}")

    files = list_micrographs(str(cfg.micrographs))
    geometry = _model_geometry(str(cfg.model_path)) if cfg.get("model_path") else None
    if diameter is None and geometry is not None and geometry.particle_radius_px is not None:
        diameter = 2 * geometry.particle_radius_px
        log.info("particle diameter %.4g px from %s", diameter, cfg.model_path)
    if diameter is None:
        raise ConfigError(
            "particle_diameter_px",
            "is required without a model_path= whose model knows the particle size "
            "(give it in micrograph pixels, e.g. particle_diameter_px=108)",
        )
    expected_by_name = None
    if expected is None and geometry is not None and geometry.pi is not None:
        expected_by_name = {
            name: expected_particles(
                geometry.pi,
                read_micrograph_shape(path),
                geometry.downsample,
                geometry.label_radius_px_model,
            )
            for name, path in files.items()
        }
        mean = sum(expected_by_name.values()) / len(expected_by_name)
        log.info("expected %.0f particles per micrograph from pi=%.4g", mean, geometry.pi)
    truth = None
    if cfg.get("truth"):
        truth = read_coordinates(str(cfg.truth), fmt=cfg.get("truth_format"))
        truth.attrs["source"] = str(cfg.truth)
        if match_distance is None and geometry is not None and geometry.match_distance_px:
            match_distance = float(geometry.match_distance_px)
            log.info("match distance %.4g px from %s", match_distance, cfg.model_path)
    picks = read_coordinates(str(cfg.picks), fmt=cfg.get("picks_format"))
    picks.attrs["source"] = str(cfg.picks)
    if "score" not in picks.columns:
        raise InputError(
            "picks have no score column; the browser thresholds scores", str(cfg.picks)
        )
    skipped: list[tuple[str, str]] = []
    path = write_pick_browser(
        picks,
        files,
        output,
        particle_diameter_px=diameter,
        expected_per_micrograph=expected_by_name if expected is None else expected,
        truth=truth,
        match_distance_px=match_distance,
        downsample_for_thumbnail=thumb,
        overwrite=overwrite,
        threshold=threshold,
        expected_source="the model's pi" if expected is None else "expected_per_micrograph",
        title=str(cfg.title) if cfg.get("title") else f"picks: {Path(str(cfg.picks)).name}",
        description=f"picks {cfg.picks}; micrographs {cfg.micrographs}"
        + (f"; truth {cfg.truth}" if cfg.get("truth") else "")
        + (f"; model {cfg.model_path}" if cfg.get("model_path") else ""),
        skipped=skipped,
    )
    if skipped:  # the page shows the others; exit 3 says some were left out
        raise PartialFailureError(skipped)
    return path


@entry_point("browse")
def main(cfg: DictConfig) -> None:
    """tzl-browse entry point: see the module docstring and configs/browse.yaml."""
    path = run(cfg)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
