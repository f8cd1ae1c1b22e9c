"""Evaluate scored picks against true particle coordinates: AUPR, precision at recall, best F1.

Picks and true particles are read in any coordinate format (file or directory of
per-micrograph files; both in the same pixel size). Per micrograph, picks are matched
one-to-one to particles within ``max_distance`` pixels (maximum number of matches, then minimum
total distance); the matches of all micrographs are pooled into one precision-recall curve.
Prints the paper's table (AUPR and precision at recall 0.25/0.5/0.75/0.9, '-' where a recall is
never reached), writes ``metrics.json`` atomically (with the curve, which ``tzl-pick
target_recall=...`` reads) and a PR-curve PNG. ``compare`` adds more runs to the table and plot.

Example usage::

    # simulator test micrographs (picks from tzl-pick at full size)
    tzl-evaluate picks=picks_demo/picks.tsv truth=data/simulated/demo_seed0/particles.tsv \
        micrographs=data/simulated/demo_seed0/test.txt max_distance=6 output_dir=eval_demo

    # EMPIAR-10017: CryoPPP CSVs (one per micrograph) as truth, particle radius ~54 px at full size
    tzl-evaluate picks=picks_10017/picks.star truth=data/samples/empiar10017_dev/coords \
        max_distance=40 output_dir=eval_10017
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from topaz_lightning.cli._hydra import entry_point, require, resolve_output
from topaz_lightning.errors import ConfigError, InputError

log = logging.getLogger("topaz_lightning")


def _read(path, fmt, what: str):
    from topaz_lightning.io.coordinates import read_coordinates

    df = read_coordinates(path, fmt=fmt)
    if what == "picks" and "score" not in df.columns:
        raise InputError(
            "picks have no score column; a precision-recall curve needs scores", path=path
        )
    df.attrs["source"] = str(path)
    return df


def run(cfg: DictConfig) -> dict:
    """Run the evaluation described by a composed ``evaluate`` config; return the metrics dict."""
    from topaz_lightning.io.micrographs import read_micrograph_names
    from topaz_lightning.metrics import evaluate_picks, format_table
    from topaz_lightning.utils.atomic import atomic_output, check_writable

    require(
        cfg,
        ("picks", "truth", "max_distance", "output_dir"),
        "picks=picks.tsv truth=particles.tsv max_distance=7 output_dir=eval",
    )
    max_distance = float(cfg.max_distance)
    if not max_distance >= 0:
        raise ConfigError("max_distance", f"must be >= 0, got {cfg.max_distance}")
    overwrite = bool(cfg.overwrite)
    metrics_path = check_writable(resolve_output(cfg, "metrics"), overwrite)
    plot_path = check_writable(resolve_output(cfg, "plot"), overwrite) if cfg.get("plot") else None

    runs = {str(cfg.label): str(cfg.picks)}
    for label, path in (cfg.get("compare") or {}).items():
        if str(label) in runs:
            raise ConfigError(f"compare.{label}", "duplicates another run's label")
        runs[str(label)] = str(path)
    truth = _read(cfg.truth, cfg.get("truth_format"), "truth")
    names = None
    if cfg.get("micrographs") is not None:
        names = read_micrograph_names(cfg.micrographs)
        unknown = sorted(set(names) - set(truth["micrograph"].astype(str)))
        if unknown:
            log.warning(
                "%d listed micrograph(s) have no true particles (e.g. %s)", len(unknown), unknown[0]
            )

    if cfg.get("score_maps") and not cfg.get("overlay_micrographs"):
        raise ConfigError("score_maps", "score-map pictures need overlay_micrographs (the images)")
    if cfg.get("overlay_micrographs"):
        # refuse existing pictures before any output is written
        for path in _overlay_paths(cfg, truth, names):
            check_writable(path, overwrite)

    evaluations = {}
    for label, path in runs.items():
        picks = _read(path, cfg.get("picks_format"), "picks")
        evaluations[label] = evaluate_picks(
            picks,
            truth,
            max_distance,
            micrographs=names,
            matching=str(cfg.get("matching", "distance")),
        )

    table = format_table(evaluations)
    print(table)
    main_ev = evaluations[str(cfg.label)]
    result = {
        **main_ev.as_dict(include_curve=bool(cfg.include_curve)),
        "picks": str(cfg.picks),
        "truth": str(cfg.truth),
        "micrographs": names,
    }
    if len(runs) > 1:
        result["runs"] = {
            label: {"picks": runs[label], **ev.as_dict()} for label, ev in evaluations.items()
        }
    with atomic_output(metrics_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", metrics_path)

    if plot_path is not None:
        try:
            from topaz_lightning.plots import plot_pr_curves
        except ImportError as err:  # plotting is optional for the numbers
            log.warning("skipping the PR plot (%s)", err)
        else:
            plot_pr_curves(evaluations, plot_path, overwrite=overwrite)
            log.info("wrote %s", plot_path)
    if cfg.get("overlay_micrographs"):
        write_overlays(cfg, main_ev, truth, overwrite, names)
    return result


def _overlay_names(cfg: DictConfig, truth, names: list[str] | None, files: dict) -> list[str]:
    """The micrographs drawn: listed (or all in the truth table) with a file, at most overlay_max."""
    if names is None:  # the evaluated micrographs: those of the truth table
        names = list(dict.fromkeys(truth["micrograph"].astype(str)))
    return [n for n in names if n in files][: int(cfg.get("overlay_max", 4))]


def _overlay_paths(cfg: DictConfig, truth, names: list[str] | None) -> list[Path]:
    """Every picture ``write_overlays`` would write."""
    from topaz_lightning.io.micrographs import list_micrographs

    out_dir = resolve_output(cfg, "overlay_dir")
    paths = []
    for name in _overlay_names(cfg, truth, names, list_micrographs(cfg.overlay_micrographs)):
        paths.append(out_dir / f"overlay_{name}.png")
        if cfg.get("score_maps") and (Path(str(cfg.score_maps)) / f"{name}.mrc").is_file():
            paths.append(out_dir / f"score_map_{name}.png")
    return paths


def write_overlays(
    cfg: DictConfig, ev, truth, overwrite: bool, names: list[str] | None = None
) -> list[Path]:
    """Overlay PNGs (true / matched / unmatched picks) for up to ``overlay_max`` micrographs.

    Picks drawn are those with score >= ``overlay_threshold`` (``best_f1``: the best-F1
    threshold; null: all). Micrographs without a file in ``overlay_micrographs`` are skipped.
    With ``score_maps`` (the MRC directory of ``tzl-pick save_score_maps=true``) a heatmap of
    each micrograph's score map is drawn too (``score_map_<name>.png``).
    """
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph

    try:
        from topaz_lightning.plots import plot_overlay, plot_score_map
    except ImportError as err:
        log.warning("skipping overlays (%s)", err)
        return []
    setting = cfg.get("overlay_threshold", "best_f1")
    if setting == "best_f1":
        threshold = ev.best_f1_threshold
    else:
        threshold = None if setting is None else float(setting)
    radius = float(cfg.get("overlay_radius") or cfg.max_distance)
    files = list_micrographs(cfg.overlay_micrographs)
    picks = ev.picks
    out_dir = resolve_output(cfg, "overlay_dir")
    written = []
    for name in _overlay_names(cfg, truth, names, files):
        p = picks[picks["micrograph"] == name]
        if threshold is not None:
            p = p[p["score"] >= threshold]
        t = truth[truth["micrograph"].astype(str) == name]
        path = out_dir / f"overlay_{name}.png"
        image = read_micrograph(files[name])
        plot_overlay(
            image,
            t[["x", "y"]].to_numpy(dtype=float),
            p[["x", "y"]].to_numpy(dtype=float),
            p["matched"].to_numpy(),
            path,
            radius,
            overwrite=overwrite,
            title=f"{name}: {int(p['matched'].sum())} matched, {int((~p['matched']).sum())} unmatched picks",
        )
        written.append(path)
        if cfg.get("score_maps"):
            map_path = Path(str(cfg.score_maps)) / f"{name}.mrc"
            if not map_path.is_file():
                log.warning("no score map %s; skipping its picture", map_path)
                continue
            score_map = read_micrograph(map_path)
            if score_map.shape != image.shape:  # a downsampling model: shrink the image to match
                from scipy.ndimage import zoom

                factors = (score_map.shape[0] / image.shape[0], score_map.shape[1] / image.shape[1])
                image = zoom(image, factors, order=1, grid_mode=True, mode="nearest")
                image = image[: score_map.shape[0], : score_map.shape[1]]
            path = out_dir / f"score_map_{name}.png"
            plot_score_map(image, score_map, path, overwrite=overwrite, title=name)
            written.append(path)
    log.info("wrote %d picture(s) to %s", len(written), out_dir)
    return written


@entry_point("evaluate")
def main(cfg: DictConfig) -> None:
    """tzl-evaluate entry point: see the module docstring and configs/evaluate.yaml."""
    run(cfg)


if __name__ == "__main__":
    main()
