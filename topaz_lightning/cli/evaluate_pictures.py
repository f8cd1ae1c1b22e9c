"""tzl-evaluate's pictures: the PR curve with its operating points, pick overlays, score maps."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from topaz_lightning.cli._hydra import resolve_output
from topaz_lightning.errors import ConfigError

log = logging.getLogger("topaz_lightning")


def _overlay_file(out_dir: Path, prefix: str, name: str, suffix: str) -> Path:
    """``out_dir/<prefix><name><suffix>`` for a micrograph name that is a plain file name."""
    from topaz_lightning.utils.atomic import safe_output_name

    return out_dir / f"{prefix}{safe_output_name(name)}{suffix}"


def overlay_threshold(cfg: DictConfig, ev) -> tuple[float | None, str | None]:
    """(threshold, its name) of ``overlay_threshold``: ``best_f1`` -> the evaluation's best-F1
    threshold; a number -> itself; null -> (None, None): every pick drawn."""
    setting = cfg.get("overlay_threshold", "best_f1")
    if setting == "best_f1":
        t = ev.best_f1_threshold
        return (None, None) if t is None else (float(t), "best F1")
    if setting is None:
        return None, None
    try:
        return float(setting), "overlay_threshold"
    except (TypeError, ValueError):
        raise ConfigError(
            "overlay_threshold", f"must be best_f1, a number or null, got {setting!r}"
        ) from None


def _expected_counts(cfg: DictConfig, shapes: dict) -> dict[str, int]:
    """The number of picks tzl-pick keeps by default on each micrograph of known size
    (micrograph frame): the count the model's pi expects (``model_path``); empty when either is
    unknown."""
    from topaz_lightning.geometry import RunGeometry, to_model_px
    from topaz_lightning.metrics.operating_points import expected_counts
    from topaz_lightning.models import load_model

    if not cfg.get("model_path") or not shapes:
        return {}
    _, extra = load_model(str(cfg.model_path))
    record = extra.get("geometry")
    geometry = RunGeometry.from_dict(record, source=str(cfg.model_path)) if record else None
    if geometry is None:
        return {}
    shapes_px_model = {
        name: (to_model_px(height, geometry.downsample), to_model_px(width, geometry.downsample))
        for name, (height, width) in shapes.items()
    }
    return expected_counts(geometry, shapes_px_model)


def check_pr_mark(cfg: DictConfig) -> int | str | None:
    """``pr_mark_per_micrograph``: ``expected``, an integer >= 1 or null; ConfigError else."""
    value = cfg.get("pr_mark_per_micrograph", "expected")
    if value is None or value == "expected":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            "pr_mark_per_micrograph", f"must be expected, an integer >= 1 or null, got {value!r}"
        )
    return int(value)


def pr_marks(cfg: DictConfig, evaluations: dict, shapes: dict) -> dict[str, list]:
    """The operating points drawn on each run's PR curve: its best-F1 threshold, a numeric
    ``overlay_threshold`` (on the main run), and ``pr_mark_per_micrograph`` (``expected``: the
    count tzl-pick keeps by default, from model_path's pi and the micrograph sizes; k: the best k
    of each micrograph; null: none)."""
    from topaz_lightning.metrics.operating_points import expected_count_mark
    from topaz_lightning.plots import pr_point

    per_micrograph = check_pr_mark(cfg)
    expected = _expected_counts(cfg, shapes) if per_micrograph == "expected" else {}
    marks: dict[str, list] = {}
    for label, ev in evaluations.items():
        points = []
        t = ev.best_f1_threshold
        if t is not None and math.isfinite(float(t)):
            point = pr_point(ev, threshold=float(t))
            if point is not None:
                points.append((f"best F1 {ev.best_f1:.3f} (t={float(t):.3g})", *point))
        chosen, name = overlay_threshold(cfg, ev)
        if label == str(cfg.label) and name == "overlay_threshold" and chosen is not None:
            point = pr_point(ev, threshold=chosen)
            if point is not None:
                points.append((f"chosen t={chosen:.3g}", *point))
        if expected:
            mark = expected_count_mark(ev, expected)
            if mark is not None:
                points.append(mark)
        elif per_micrograph not in (None, "expected"):
            point = pr_point(ev, per_micrograph=per_micrograph)
            if point is not None:
                points.append((f"best {per_micrograph}/micrograph", *point))
        marks[label] = points
    return marks


def write_pr_plot(cfg: DictConfig, evaluations: dict, path: Path, overwrite: bool, shapes):
    """The PR-curve PNG of every run with its operating points (:func:`pr_marks`)."""
    try:
        from topaz_lightning.plots import plot_pr_curves
    except ImportError as err:  # plotting is optional for the numbers
        log.warning("skipping the PR plot (%s)", err)
        return
    plot_pr_curves(evaluations, path, overwrite=overwrite, marks=pr_marks(cfg, evaluations, shapes))
    log.info("wrote %s", path)


def _overlay_names(cfg: DictConfig, truth, names: list[str] | None, files: dict) -> list[str]:
    """The micrographs drawn: listed (or all in the truth table) with a file, at most overlay_max."""
    if names is None:  # the evaluated micrographs: those of the truth table
        names = list(dict.fromkeys(truth["micrograph"].astype(str)))
    return [n for n in names if n in files][: int(cfg.get("overlay_max", 4))]


def overlay_paths(cfg: DictConfig, truth, names: list[str] | None) -> list[Path]:
    """Every picture ``write_overlays`` would write."""
    from topaz_lightning.io.micrographs import list_micrographs

    out_dir = resolve_output(cfg, "overlay_dir")
    paths = []
    for name in _overlay_names(cfg, truth, names, list_micrographs(cfg.overlay_micrographs)):
        paths.append(_overlay_file(out_dir, "overlay_", name, ".png"))
        if (
            cfg.get("score_maps")
            and _overlay_file(Path(str(cfg.score_maps)), "", name, ".mrc").is_file()
        ):
            paths.append(_overlay_file(out_dir, "score_map_", name, ".png"))
    return paths


def write_overlays(
    cfg: DictConfig,
    ev,
    truth,
    overwrite: bool,
    names: list[str] | None = None,
    max_distance_px: float | None = None,
) -> list[Path]:
    """Overlay PNGs (true / matched / unmatched picks) for up to ``overlay_max`` micrographs.

    Picks drawn are those with score >= ``overlay_threshold`` (``best_f1``: the best-F1
    threshold; null: all); the legend names the threshold and counts the picks below it, which
    are not drawn. Circles have radius ``overlay_radius`` (null: ``max_distance_px``).
    Micrographs without a file in ``overlay_micrographs`` are skipped. With ``score_maps`` (the
    MRC directory of ``tzl-pick save_score_maps=true``) a heatmap of each micrograph's score map
    is drawn too (``score_map_<name>.png``, with its colour bar).
    """
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph

    try:
        from topaz_lightning.plots import plot_overlay, plot_score_map
    except ImportError as err:
        log.warning("skipping overlays (%s)", err)
        return []
    threshold, threshold_label = overlay_threshold(cfg, ev)
    radius = float(cfg.get("overlay_radius") or max_distance_px)
    files = list_micrographs(cfg.overlay_micrographs)
    picks = ev.picks
    out_dir = resolve_output(cfg, "overlay_dir")
    written = []
    for name in _overlay_names(cfg, truth, names, files):
        p = picks[picks["micrograph"] == name]
        shown = p if threshold is None else p[p["score"] >= threshold]
        t = truth[truth["micrograph"].astype(str) == name]
        path = _overlay_file(out_dir, "overlay_", name, ".png")
        image = read_micrograph(files[name])
        plot_overlay(
            image,
            t[["x", "y"]].to_numpy(dtype=float),
            p[["x", "y"]].to_numpy(dtype=float),
            p["matched"].to_numpy(),
            path,
            radius,
            overwrite=overwrite,
            title=f"{name}: {int(shown['matched'].sum())} matched, "
            f"{int((~shown['matched']).sum())} unmatched picks",
            scores=p["score"].to_numpy(dtype=float),
            threshold=threshold,
            threshold_label=threshold_label,
        )
        written.append(path)
        if cfg.get("score_maps"):
            map_path = _overlay_file(Path(str(cfg.score_maps)), "", name, ".mrc")
            if not map_path.is_file():
                log.warning("no score map %s; skipping its picture", map_path)
                continue
            score_map = read_micrograph(map_path)
            if score_map.shape != image.shape:  # a downsampling model: shrink the image to match
                from scipy.ndimage import zoom

                factors = (score_map.shape[0] / image.shape[0], score_map.shape[1] / image.shape[1])
                image = zoom(image, factors, order=1, grid_mode=True, mode="nearest")
                image = image[: score_map.shape[0], : score_map.shape[1]]
            path = _overlay_file(out_dir, "score_map_", name, ".png")
            plot_score_map(image, score_map, path, overwrite=overwrite, title=name)
            written.append(path)
    log.info("wrote %d picture(s) to %s", len(written), out_dir)
    return written
