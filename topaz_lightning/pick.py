"""Picking as a task, beside ``train(cfg)``: settings -> job -> normalization -> predict loop -> outputs.

``pick(cfg)`` runs a composed ``pick`` config (configs/pick.yaml) and returns ``(metrics,
objects)``. The flow goes one way:

1. the picker (``picker`` group, :mod:`topaz_lightning.picking.pickers`: the model of
   ``model_path``, or a classical baseline) gives the scorer and its card, the micrographs are
   listed, and :func:`resolve_pick_settings` decides the threshold, NMS radius and
   preprocessing once from the card (a frozen ``ResolvedPick``);
2. the job service (:mod:`topaz_lightning.utils.jobs`) decides whether the run starts, continues
   (a rerun of the same command: finished micrographs are skipped) or starts over
   (``overwrite=true``: only this job's outputs are removed), before any work;
3. the micrographs still to do are normalized (:mod:`picking.normalization`) and scored in
   Lightning's predict loop (:mod:`picking.predict`), each written as a part as soon as done;
4. the combined output is assembled from the parts: the threshold, top k, score column, format
   and layout are applied here, so a rerun changing only them re-extracts without scoring.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from topaz_lightning.errors import InputError
from topaz_lightning.picking.outputs import (
    NORMALIZATION_FILE,
    STATE_FILE,
    PickOutputs,
    extract,
    output_format,
    write_output,
)
from topaz_lightning.utils import jobs
from topaz_lightning.utils.config import require
from topaz_lightning.utils.distributed import is_launch_rank_zero

__all__ = ["NORMALIZATION_FILE", "STATE_FILE", "extract", "pick", "select_micrographs"]

log = logging.getLogger("topaz_lightning")


def select_micrographs(cfg: DictConfig) -> dict[str, Path]:
    """``{name: path}`` of ``micrographs``, restricted to ``subset`` (in its order) if given."""
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph_names

    sources = list_micrographs(cfg.micrographs)
    if cfg.get("subset") is None:
        return sources
    wanted = read_micrograph_names(cfg.subset)
    missing = [n for n in wanted if n not in sources]
    if missing:
        raise InputError(
            f"{len(missing)} listed micrograph(s) not found among the inputs, e.g. {missing[0]!r}",
            path=str(cfg.subset),
        )
    return {n: sources[n] for n in wanted}


# ------------------------------------------------------------------------------------------------
# normalization, trainer


def _normalization(cfg, extra, sources, resolved, run_dir: Path, reuse: bool, failures):
    """The run's PickNormalization: reused from normalization.json when continuing, else fitted."""
    from topaz_lightning.picking.normalization import (
        PickNormalization,
        check_normalize_fit,
        run_fit,
        training_fit,
    )

    path = run_dir / NORMALIZATION_FILE
    if resolved.normalize != "gmm":
        norm = PickNormalization(method=resolved.normalize)
    else:
        source = check_normalize_fit(cfg.get("normalize_fit", "run"))
        saved = jobs.read_json(path, "normalization record") if reuse else None
        if (
            isinstance(saved, dict)
            and saved.get("normalize") == "gmm"
            and saved.get("normalize_fit") == source
        ):
            log.info("GMM normalization: reusing the fit in %s", path)
            return PickNormalization.from_record(saved, source=str(path))
        prepared = {}  # the first pass's downsampled images: the predict loop reuses them
        if source == "training":
            fit = training_fit(extra, str(cfg.model_path))
        else:
            fit, prepared = run_fit(
                sources,
                resolved.downsample,
                seed=int(cfg.seed),
                num_workers=int(cfg.num_workers),
                on_error=None if failures.strict else _log_first_pass_error,
            )
        norm = PickNormalization("gmm", fit, source, int(cfg.seed), prepared=prepared)
    if is_launch_rank_zero():
        jobs.write_json(path, norm.record())
    return norm


def _log_first_pass_error(name: str, reason: str) -> None:
    # reported once, by the predict loop that tries the micrograph again
    log.warning("%s: left out of the GMM fit (%s)", name, reason)


def _trainer_kwargs(cfg: DictConfig, writer, run_dir: Path) -> dict[str, Any]:
    from topaz_lightning.picking.scoring import resolve_device
    from topaz_lightning.utils.components import instantiate_callbacks

    kwargs: dict[str, Any] = {
        # extra Lightning callbacks: +callbacks.<name>._target_=... on the command line
        "callbacks": [writer, *instantiate_callbacks(cfg.get("callbacks"))],
        "logger": False,
        # predict shards with Lightning's unrepeated distributed sampler (training turns it off)
        "use_distributed_sampler": True,
        "enable_progress_bar": bool(cfg.progress),
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "default_root_dir": str(run_dir),
    }
    trainer_cfg = cfg.trainer
    single = trainer_cfg.get("strategy") in (None, "auto") and trainer_cfg.get("devices") in (
        1,
        "1",
        "auto",
    )
    if single and trainer_cfg.get("accelerator") == "cpu":
        device = resolve_device(cfg.get("device", "auto"))
        if device.type == "cuda":
            kwargs.update(accelerator="gpu", devices=[device.index or 0])
    return kwargs


def _quiet_lightning() -> None:
    # the loop has as many workers as it needs by design; Lightning's GPU/TPU banner is noise
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def _score(cfg, net, extra, sources, todo, resolved, outputs, job, failures) -> bool:
    """Score ``todo`` in Lightning's predict loop (parts written as they finish); False on the
    extra DDP ranks (they stop after the loop)."""
    from hydra.utils import instantiate

    from topaz_lightning.picking.predict import (
        MicrographDataset,
        PickModule,
        PickWriter,
        Preprocess,
        micrograph_loader,
    )

    plot = bool(cfg.get("plot_score_maps"))
    if plot:
        try:
            import topaz_lightning.plots  # noqa: F401
        except ImportError as err:
            log.warning("skipping score-map pictures (%s)", err)
            plot = False
    reuse = job is None or job.continuing
    norm = _normalization(cfg, extra, sources, resolved, outputs.run_dir, reuse, failures)
    _quiet_lightning()
    prepared = {n: image for n, image in norm.prepared.items() if n in todo}
    norm.prepared = {}  # the dataset holds them now (each dropped once used)
    dataset = MicrographDataset(todo, Preprocess(resolved.downsample, norm, prepared))
    loader = micrograph_loader(dataset, int(cfg.batch_size), int(cfg.num_workers))
    writer = PickWriter(
        outputs.picks_dir,
        outputs.score_dir,
        save_score_maps=bool(cfg.save_score_maps),
        plot_score_maps=plot,
    )
    settings = resolved.settings.replace(keep_score_map=bool(outputs.score_exts))
    module = PickModule(net, settings, strict=failures.strict)
    trainer = instantiate(cfg.trainer, **_trainer_kwargs(cfg, writer, outputs.run_dir))
    from topaz_lightning.utils.components import describe_hardware

    log.info("scoring with %s on %s", net.__class__.__name__, describe_hardware(trainer))
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()
    return bool(trainer.is_global_zero)


# ------------------------------------------------------------------------------------------------
# assembling the output


#: the pick browser written beside the picks (a self-contained page: docs/browser.md)
BROWSER_FILE = "picks.html"


def _write_browser(cfg, parts, sources: dict[str, Path], expected, resolved, outputs) -> None:
    """``<output_dir>/picks.html``: every stored maximum on thumbnails, with a threshold slider
    starting where this run's output stands (tzl-browse builds the same page for any picks)."""
    from topaz_lightning.browser import write_pick_browser

    limit = int(cfg.get("browser_max_micrographs") or len(sources))
    shown = dict(list(sources.items())[:limit])
    diameter = resolved.particle_diameter_px
    if diameter is None:  # no particle size in model.pt: the NMS disk stands in for it
        diameter = 2 * resolved.settings.nms_radius_px_model * resolved.downsample
    note = None
    if len(shown) < len(sources):
        note = f"the first {len(shown)} of {len(sources)} micrographs (browser_max_micrographs)"
    threshold = resolved.threshold if resolved.threshold > -math.inf else None
    path = write_pick_browser(
        parts[parts["micrograph"].isin(set(shown))],
        shown,
        outputs.run_dir / BROWSER_FILE,
        particle_diameter_px=diameter,
        expected_per_micrograph={n: e for n, e in expected.items() if n in shown} or None,
        overwrite=True,  # this command's own page, rebuilt with its outputs
        threshold=threshold,
        description=note,
    )
    log.info("pick browser (open in any web browser, no server needed): %s", path)


def _expected_counts(resolved, sources: dict[str, Path]) -> dict[str, float]:
    """Particles the model's prior expects on each micrograph (from its size; headers only)."""
    from topaz_lightning.io.micrographs import read_micrograph_shape

    if resolved.expected_per_px_model is None:
        return {}
    counts = {}
    for name, path in sources.items():
        try:
            counts[name] = resolved.expected_count(read_micrograph_shape(path))
        except (InputError, OSError) as err:  # it was picked, so this is unexpected: say so
            log.warning("%s: no expected particle count (%s)", name, err)
    return counts


def _report_counts(picks, expected: dict[str, float], resolved) -> None:
    """Picks per micrograph against the count the model expects; warn beyond a factor of 2."""
    if not expected:
        return
    counts = picks["micrograph"].value_counts()
    ratios = {n: (int(counts.get(n, 0)) + 1) / (e + 1) for n, e in expected.items()}
    mean_picks = sum(int(counts.get(n, 0)) for n in expected) / len(expected)
    mean_expected = sum(expected.values()) / len(expected)
    how = (
        "the expected number per micrograph"
        if resolved.max_picks == "expected"
        else f"threshold {resolved.threshold:g} ({resolved.threshold_source})"
        if resolved.threshold_source != "none"
        else f"top {resolved.max_picks}"
        if resolved.max_picks is not None
        else "every local maximum"
    )
    log.info(
        "kept %s: %.1f picks per micrograph on average; the model's pi expects %.1f",
        how,
        mean_picks,
        mean_expected,
    )
    off = sorted(n for n, r in ratios.items() if r > 2 or r < 0.5)
    if off:
        log.warning(
            "%d of %d micrograph(s) have more than twice or less than half the %.0f particles "
            "the model's pi expects (e.g. %s: %d picks); choose particles_per_micrograph= or a "
            "threshold (docs/picking_evaluation.md), or look at them with tzl-browse",
            len(off),
            len(expected),
            mean_expected,
            off[0],
            int(counts.get(off[0], 0)),
        )


# ------------------------------------------------------------------------------------------------
# the task


def pick(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pick particles as configured (configs/pick.yaml); return ``(metrics, objects)``.

    ``metrics``: counts (micrographs picked, scored now, failed; picks written). ``objects``:
    ``picks`` (the combined DataFrame: micrograph, x, y, score in the micrograph frame), the
    ``settings`` (``ResolvedPick``) and the ``output`` path; empty on the extra DDP ranks.
    Raises PartialFailureError (exit 3) at the end when some micrographs failed.
    """
    from topaz_lightning.io.formats.common import check_micrograph_dir, with_micrograph_files
    from topaz_lightning.picking import sigmoid
    from topaz_lightning.picking.pickers import PICK_EXAMPLE, load_picker, pick_record
    from topaz_lightning.picking.predict import failed_path, read_parts
    from topaz_lightning.picking.settings import micrographs_record, resolve_pick_settings

    require(cfg, ("micrographs", "output_dir"), PICK_EXAMPLE)
    rank_zero = is_launch_rank_zero()
    failures = jobs.FailureLog(strict=bool(cfg.get("strict", False)))
    run_dir = Path(str(cfg.output_dir))

    # the picker (configs/picker/: the model of model_path, or a classical baseline) gives the
    # scorer and its card (preprocessing, geometry); everything after is the same for all
    loaded = load_picker(cfg)
    net, extra = loaded.net, loaded.card
    resolved = resolve_pick_settings(cfg, net, extra, loaded.source)
    sources = select_micrographs(cfg)
    names = list(sources)
    record = {**pick_record(resolved.record, loaded), "micrographs": micrographs_record(names)}
    output = jobs.output_path(run_dir, cfg.output, "output")
    fmt_given = None if cfg.get("format") is None else str(cfg.format)
    per_micrograph = bool(cfg.per_micrograph)
    # EMAN/CryoPPP box: the particle diameter model.pt knows, unless given
    box_size = cfg.get("box_size")
    if box_size is None:
        box_size = resolved.particle_diameter_px
    fmt = output_format(output, fmt_given, per_micrograph, box_size, len(names))
    # STAR's rlnMicrographName: <star_micrograph_dir>/<file name with extension>
    star_dir = check_micrograph_dir(cfg.get("star_micrograph_dir"))
    outputs = PickOutputs(
        run_dir,
        str(cfg.output),
        str(cfg.picks_dir),
        fmt,
        names,
        per_micrograph=per_micrograph,
        score_map_dir=str(cfg.score_map_dir),
        save_score_maps=bool(cfg.save_score_maps),
        plot_score_maps=bool(cfg.get("plot_score_maps")),
        suffix=cfg.get("suffix"),
    )

    # a name that cannot become a file name is skipped and reported, never the whole run
    unsafe: dict[str, str] = {}
    for name in names:
        try:
            outputs.check_name(name)
        except InputError as err:
            if failures.strict:
                raise
            unsafe[name] = err.problem
    job = outputs.open(record, bool(cfg.overwrite)) if rank_zero else None
    done = outputs.done()
    todo = {n: p for n, p in sources.items() if n not in done and n not in unsafe}
    log.info(
        "picking %d micrograph(s) (%d done earlier): downsample %g, normalize %s, NMS radius "
        "%g model px",
        len(todo),
        len(done),
        resolved.downsample,
        resolved.normalize,
        resolved.settings.nms_radius_px_model,
    )
    if todo:
        good_sources = {n: p for n, p in sources.items() if n not in unsafe}
        if not _score(cfg, net, extra, good_sources, todo, resolved, outputs, job, failures):
            return {}, {}
    elif done:
        log.info("re-extracting from %d stored micrograph(s) (no scoring)", len(done))

    done = outputs.done()
    good = []
    for name in names:
        if name in unsafe:
            failures.add(name, unsafe[name])
        elif name in done:
            good.append(name)
        else:
            reason_file = failed_path(outputs.picks_dir, name)
            reason = (
                reason_file.read_text(encoding="utf-8").strip()
                if reason_file.is_file()
                else "not picked (the run was interrupted?)"
            )
            failures.add(name, reason)
    expected = _expected_counts(resolved, {n: sources[n] for n in good})
    max_picks = resolved.max_picks
    if max_picks == "expected":
        max_picks = {name: int(round(count)) for name, count in expected.items()}
    parts = read_parts(outputs.picks_dir, good)
    picks = extract(parts, resolved.threshold, max_picks)
    _report_counts(picks, expected, resolved)
    if cfg.score == "probability":
        picks["score"] = sigmoid(picks["score"].to_numpy())
    if picks.empty:
        log.warning("no picks above the threshold; writing an empty table")
    picks_out = with_micrograph_files(picks, {n: sources[n] for n in good}, star_dir)
    write_output(picks_out, outputs, fmt, good, box_size=box_size)
    if job is not None:
        outputs.remember_output(job)
    if cfg.get("browser", True) and good:
        _write_browser(cfg, parts, {n: sources[n] for n in good}, expected, resolved, outputs)
    print(f"wrote {len(picks)} picks from {len(good)} micrograph(s) to {outputs.output}")
    metrics = {
        "pick/micrographs": len(good),
        "pick/scored": len(todo),
        "pick/failed": len(failures.failures),
        "pick/picks": len(picks),
    }
    objects = {"picks": picks, "settings": resolved, "output": outputs.output}
    failures.finish(run_dir, num_done=len(good))
    return metrics, objects
