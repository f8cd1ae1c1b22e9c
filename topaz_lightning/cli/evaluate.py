"""Evaluate scored picks against true particle coordinates: AUPR, precision at recall, best F1.

Picks and true particles are read in any coordinate format (file or directory of
per-micrograph files; both in the same pixel size). Per micrograph, picks are matched
one-to-one to particles within ``max_distance`` pixels (maximum number of matches, then minimum
total distance); the matches of all micrographs are pooled into one precision-recall curve.
Prints the paper's table (AUPR and precision at recall 0.25/0.5/0.75/0.9, '-' where a recall is
never reached), writes ``metrics.json`` atomically (with the curve, which ``tzl-pick
target_recall=...`` reads) and a PR-curve PNG marking the best-F1 threshold and the default
pick count (:mod:`topaz_lightning.cli.evaluate_pictures`). ``compare`` adds more runs to the
table and plot.

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

import numpy as np
from omegaconf import DictConfig

from topaz_lightning.cli._hydra import entry_point, require, resolve_output
from topaz_lightning.cli.evaluate_pictures import (  # noqa: F401 - _overlay_file: older importers
    _overlay_file,
    check_pr_mark,
    overlay_paths,
    write_overlays,
    write_pr_plot,
)
from topaz_lightning.errors import ConfigError, InputError

log = logging.getLogger("topaz_lightning")


def _read(path, fmt, what: str):
    from topaz_lightning.io.coordinates import read_coordinates
    from topaz_lightning.picking.outputs import pick_run_parts

    parts = pick_run_parts(path) if what == "picks" else None
    if parts is not None:
        log.info("%s is a tzl-pick run: evaluating every local maximum in %s", path, parts)
        path, fmt = parts, "tsv"
    df = read_coordinates(path, fmt=fmt)
    if what == "picks" and "score" not in df.columns:
        from topaz_lightning.io.coordinates import detect_format
        from topaz_lightning.io.formats import all_formats, get_format

        record = get_format(fmt if fmt is not None else detect_format(path))
        scored = ", ".join(f.name for f in all_formats() if f.has_score)
        why = "" if record.has_score else f" ({record.name} files store none; use {scored})"
        raise InputError(
            f"picks have no score column{why}; a precision-recall curve needs scores", path=path
        )
    df.attrs["source"] = str(path)
    return df


def resolve_max_distance(cfg: DictConfig) -> float:
    """The match distance in the picks' pixels: ``max_distance`` when set, else the trained
    model's (``model_path``: ``extra["geometry"]``'s match distance, in micrograph pixels), else a
    simulated dataset's (``dataset``: ``match_distance_px`` of its dataset.yaml)."""
    value = cfg.get("max_distance")
    if value is not None:
        from topaz_lightning.cli.validate import check_max_distance

        return check_max_distance(value)
    if cfg.get("model_path"):
        from topaz_lightning.geometry import RunGeometry
        from topaz_lightning.models import load_model

        _, extra = load_model(str(cfg.model_path))
        record = extra.get("geometry")
        geometry = RunGeometry.from_dict(record, source=str(cfg.model_path)) if record else None
        if geometry is None or geometry.match_distance_px is None:
            raise ConfigError(
                "max_distance",
                f"{cfg.model_path} stores no match distance (trained without a particle size); "
                "give max_distance= in the picks' pixels",
            )
        log.info("max_distance %.3g px from %s", geometry.match_distance_px, cfg.model_path)
        return float(geometry.match_distance_px)
    if cfg.get("dataset"):
        from topaz_lightning.simulate.dataset import load_dataset_info

        info = load_dataset_info(str(cfg.dataset))
        distance = info.get("match_distance_px")
        if isinstance(distance, bool) or not isinstance(distance, int | float) or distance < 0:
            raise InputError(
                f"match_distance_px must be a number >= 0, got {distance!r}",
                path=str(cfg.dataset),
            )
        log.info("max_distance %.3g px from %s", distance, cfg.dataset)
        return float(distance)
    raise ConfigError(
        "max_distance",
        "is required: give max_distance=<px>, or model_path=<model.pt> / dataset=<simulated "
        "dataset> to take the trained or simulated match distance",
    )


def _names(values, limit: int = 5) -> str:
    shown = sorted(values)[:limit]
    more = f" ... ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(repr(v) for v in shown) + more


def check_names(picks, truth, names: list[str] | None, source: str) -> None:
    """Stop when no pick is on an evaluated micrograph (the names do not match: exit 2, a few names
    of each side); warn about the micrographs only one side has."""
    evaluated = set(names) if names is not None else set(truth["micrograph"].astype(str))
    picked = set(picks["micrograph"].astype(str))
    common = picked & evaluated
    if not common:
        raise InputError(
            f"no pick is on an evaluated micrograph: the micrograph names do not match (picks: "
            f"{_names(picked)}; truth: {_names(evaluated)}). Check that both name the same "
            "micrographs (file names without directory or extension)",
            path=source,
        )
    only_picks = picked - evaluated
    if only_picks:
        log.warning(
            "%s: %d micrograph(s) of the picks are not evaluated (not in the truth/list), ignored: %s",
            source,
            len(only_picks),
            _names(only_picks),
        )
    only_truth = evaluated - picked
    if only_truth:
        log.warning(
            "%s: %d evaluated micrograph(s) have no picks (counted as missed): %s",
            source,
            len(only_truth),
            _names(only_truth),
        )


def micrograph_shapes(cfg: DictConfig, names: set[str]) -> dict[str, tuple[int, int]]:
    """``{name: (H, W)}`` of the evaluated micrographs whose files are known: ``micrographs`` when
    it names micrograph files (a directory, glob or list of paths; a list of bare names gives
    none), ``overlay_micrographs`` and a simulated ``dataset``'s micrographs/. Sizes come from
    the file headers (no pixels read)."""
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph_shape

    shapes: dict[str, tuple[int, int]] = {}
    sources = [cfg.get("micrographs"), cfg.get("overlay_micrographs")]
    if cfg.get("dataset"):  # a simulated dataset keeps its micrographs in micrographs/
        sources.append(str(Path(str(cfg.dataset)) / "micrographs"))
    for source in sources:
        if source is None:
            continue
        try:
            files = list_micrographs(str(source) if isinstance(source, str) else list(source))
        except InputError:
            continue  # names only, or no micrograph files there
        for name, path in files.items():
            if name in names and name not in shapes:
                try:
                    shapes[name] = read_micrograph_shape(path)
                except InputError as err:
                    log.warning("%s: size unknown (%s)", path, err.problem)
    return shapes


#: picks beyond this multiple of the true particles' extent are "far outside" (scale mistake)
FAR_BEYOND_TRUTH = 2.0


def check_pick_positions(picks, truth, shapes: dict, max_distance_px: float, source: str) -> int:
    """Warn about picks that cannot be on their micrograph; return how many lie outside it.

    Where the micrograph's size is known (``shapes``), a pick at x >= W or y >= H is outside
    (counted, warned with an example). Elsewhere, picks far beyond every true particle (beyond
    ``FAR_BEYOND_TRUTH`` times the truth's largest x or y, plus the match distance) are warned
    about, and so are picks that all lie within less than half the truth's extent (picks in
    downsampled pixels against full-size truth). Such picks count as false positives.
    """
    if len(picks) == 0 or len(truth) == 0:
        return 0
    names = picks["micrograph"].astype(str).to_numpy()
    xs = picks["x"].to_numpy(dtype=float)
    ys = picks["y"].to_numpy(dtype=float)
    known = np.array([n in shapes for n in names])
    outside = np.zeros(len(picks), dtype=bool)
    if known.any():
        heights = np.array([shapes[n][0] if n in shapes else np.inf for n in names])
        widths = np.array([shapes[n][1] if n in shapes else np.inf for n in names])
        outside = known & ((xs >= widths) | (ys >= heights))
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            log.warning(
                "%s: %d of %d picks lie outside their micrograph (e.g. %r x=%g y=%g on a %d x %d "
                "(W x H) image); they count as false positives. Check the picks' pixel size "
                "(downsampled?) and y direction",
                source,
                int(outside.sum()),
                int(known.sum()),
                names[i],
                xs[i],
                ys[i],
                int(widths[i]),
                int(heights[i]),
            )
    rest = ~known
    if rest.any():
        truth_x = float(truth["x"].max())
        truth_y = float(truth["y"].max())
        far = rest & (
            (xs > FAR_BEYOND_TRUTH * truth_x + max_distance_px)
            | (ys > FAR_BEYOND_TRUTH * truth_y + max_distance_px)
        )
        if far.any():
            i = int(np.flatnonzero(far)[0])
            log.warning(
                "%s: %d picks lie far beyond every true particle (e.g. %r x=%g y=%g; true "
                "particles reach x=%g, y=%g); are picks and truth in the same pixel size? Give "
                "micrographs=<the micrograph files> to check against the image size",
                source,
                int(far.sum()),
                names[i],
                xs[i],
                ys[i],
                truth_x,
                truth_y,
            )
        elif rest.sum() >= 10 and xs[rest].max() < truth_x / 2 and ys[rest].max() < truth_y / 2:
            log.warning(
                "%s: every pick lies within x < %g, y < %g while true particles reach x=%g, y=%g; "
                "are the picks in downsampled pixels? (tzl-convert scale= converts)",
                source,
                xs[rest].max(),
                ys[rest].max(),
                truth_x,
                truth_y,
            )
    return int(outside.sum())


def run(cfg: DictConfig) -> dict:
    """Run the evaluation described by a composed ``evaluate`` config; return the metrics dict."""
    from topaz_lightning.io.micrographs import read_micrograph_names
    from topaz_lightning.metrics import evaluate_picks, format_table
    from topaz_lightning.utils.atomic import atomic_output, check_writable

    require(
        cfg,
        ("picks", "truth", "output_dir"),
        "picks=picks.tsv truth=particles.tsv max_distance=7 output_dir=eval",
    )
    max_distance_px = resolve_max_distance(cfg)
    check_pr_mark(cfg)
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
        for path in overlay_paths(cfg, truth, names):
            check_writable(path, overwrite)
        if cfg.get("browser", True):
            check_writable(resolve_output(cfg, "browser_output"), overwrite)

    evaluated = set(names) if names is not None else set(truth["micrograph"].astype(str))
    shapes = micrograph_shapes(cfg, evaluated)
    evaluations, outside, tables = {}, {}, {}
    for label, path in runs.items():
        picks = tables[label] = _read(path, cfg.get("picks_format"), "picks")
        check_names(picks, truth, names, path)
        on_evaluated = picks[picks["micrograph"].astype(str).isin(evaluated)]
        outside[label] = check_pick_positions(on_evaluated, truth, shapes, max_distance_px, path)
        evaluations[label] = evaluate_picks(
            picks,
            truth,
            max_distance_px,
            micrographs=names,
            matching=str(cfg.get("matching", "distance")),
            match_boundary=str(cfg.get("match_boundary", "inclusive")),
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
    if shapes:  # picks outside their micrograph (false positives), where its size is known
        result["n_picks_outside_image"] = outside[str(cfg.label)]
    if len(runs) > 1:
        result["runs"] = {
            label: {"picks": runs[label], **ev.as_dict()} for label, ev in evaluations.items()
        }
    with atomic_output(metrics_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", metrics_path)

    if plot_path is not None:
        write_pr_plot(cfg, evaluations, plot_path, overwrite, shapes)
    if cfg.get("overlay_micrographs"):
        write_overlays(cfg, main_ev, truth, overwrite, names, max_distance_px)
        if cfg.get("browser", True):
            from topaz_lightning.browser import write_evaluation_browser
            from topaz_lightning.io.micrographs import list_micrographs

            files = list_micrographs(cfg.overlay_micrographs)
            page = write_evaluation_browser(
                tables[str(cfg.label)], truth, files, evaluated, max_distance_px,
                resolve_output(cfg, "browser_output"), overwrite=overwrite,
            )  # fmt: skip
            log.info("wrote %s", page)
    return result


@entry_point("evaluate")
def main(cfg: DictConfig) -> None:
    """tzl-evaluate entry point: see the module docstring and configs/evaluate.yaml."""
    run(cfg)


if __name__ == "__main__":
    main()
