"""Picking as a task, beside ``train(cfg)``: settings -> job -> normalization -> predict loop -> outputs.

``pick(cfg)`` runs a composed ``pick`` config (configs/pick.yaml) and returns ``(metrics,
objects)``. The flow goes one way:

1. the micrographs and the model card are read, and :func:`resolve_pick_settings` decides the
   threshold, NMS radius and preprocessing once (a frozen ``ResolvedPick``);
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
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.utils import jobs

log = logging.getLogger("topaz_lightning")

#: the job record of a pick run (in picks_dir)
STATE_FILE = "settings.json"
#: how the micrographs were normalized (in the run directory)
NORMALIZATION_FILE = "normalization.json"
_COMMAND = "tzl-pick"


def _launch_rank_zero() -> bool:
    """False in the extra processes a DDP launcher (Lightning, torchrun, srun) starts."""
    return all(
        int(os.environ.get(k, "0") or 0) == 0
        for k in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
    )


def _require(cfg: DictConfig, keys: tuple[str, ...]) -> None:
    for key in keys:
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise ConfigError(
                key, "is required (e.g. model_path=model.pt micrographs=dir/ output_dir=picks)"
            )


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
# outputs


def output_format(cfg: DictConfig, output: Path, num_micrographs: int) -> str:
    """The canonical coordinate format; refuse now what writing the output would refuse."""
    from topaz_lightning.io import coordinates as coords

    fmt = cfg.get("format")
    if fmt is None:
        if cfg.per_micrograph:
            raise InputError("writing one file per micrograph needs an explicit format=", output)
        fmt = coords._format_for_output(output)
    else:
        fmt = coords.canonical_format(str(fmt))
    box_size = cfg.get("box_size")
    if fmt == "box":
        try:
            ok = box_size is not None and float(box_size) > 0 and math.isfinite(float(box_size))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError("box_size", "EMAN .box output needs a positive box_size (pixels)")
    if fmt in coords.ONE_MICROGRAPH_PER_FILE and not cfg.per_micrograph and num_micrographs > 1:
        raise ConfigError(
            "per_micrograph",
            f"the {fmt} format holds one micrograph per file; use per_micrograph=true",
        )
    if cfg.per_micrograph and output.exists() and not output.is_dir():
        raise InputError("per-micrograph output must be a directory, found a file", output)
    if not cfg.per_micrograph and output.is_dir():
        raise InputError("output is a directory; expected a file path", output)
    # the nearest existing folder above the output must let us create files
    parent = output if cfg.per_micrograph else output.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError("cannot write into this directory", parent)
    return fmt


class PickOutputs:
    """Where a pick run writes (checked paths) and which files are this job's.

    ``<picks_dir>/settings.json`` is the job record: the resolved settings, and the combined
    outputs and score maps it wrote, so that ``overwrite=true`` removes exactly those.
    """

    def __init__(self, cfg: DictConfig, names: list[str], fmt: str):
        from topaz_lightning.io.coordinates import EXTENSIONS

        self.run_dir = Path(str(cfg.output_dir))
        self.output = jobs.output_path(self.run_dir, cfg.output, "output")
        self.picks_dir = jobs.output_path(self.run_dir, cfg.picks_dir, "picks_dir")
        self.per_micrograph = bool(cfg.per_micrograph)
        self.extension = EXTENSIONS[fmt]
        self.score_exts = [
            ext
            for ext, on in ((".mrc", cfg.save_score_maps), (".png", cfg.get("plot_score_maps")))
            if on
        ]
        self.score_dir = (
            jobs.output_path(self.run_dir, cfg.score_map_dir, "score_map_dir")
            if self.score_exts
            else None
        )
        self.names = names
        checks = [
            (self.picks_dir, "picks_dir", True),
            (self.output, "output", self.per_micrograph),
            (self.run_dir / NORMALIZATION_FILE, "output_dir", False),
        ]
        if self.score_dir is not None:
            checks.append((self.score_dir, "score_map_dir", True))
        for path, key, directory in checks:
            jobs.refuse_symlinked_dirs(self.run_dir, path, key, directory=directory)
        self.state = self.picks_dir / STATE_FILE

    # file names derived from micrograph names
    def suffixes(self) -> list[str]:
        from topaz_lightning.picking.predict import FAILED_SUFFIX, PART_SUFFIX

        out = [PART_SUFFIX, FAILED_SUFFIX, *self.score_exts]
        return out + ([self.extension] if self.per_micrograph else [])

    def check_name(self, name: str) -> None:
        """InputError if a file named after ``name`` cannot be written safely."""
        for suffix in self.suffixes():
            jobs.safe_file_name(name, suffix, where="micrograph name")

    def parts(self) -> set[str]:
        """Names of the micrographs with a part in picks_dir (any run's)."""
        from topaz_lightning.picking.predict import PART_SUFFIX

        if not self.picks_dir.is_dir():
            return set()
        return {p.name[: -len(PART_SUFFIX)] for p in self.picks_dir.glob(f"*{PART_SUFFIX}")}

    def done(self) -> set[str]:
        """Micrographs of this run whose part is on disk (complete: parts are written last)."""
        return self.parts() & set(self.names)

    def written(self) -> dict[str, Any]:
        """What this run writes besides its parts (kept in the job record)."""
        return {
            "outputs": [],
            "score_maps": None
            if self.score_dir is None
            else {"dir": str(self.score_dir.resolve()), "extensions": self.score_exts},
        }

    def owned(self, old: dict | None) -> list[Path]:
        """This job's files (now and by the earlier record ``old``), for ``overwrite=true``:
        parts, failure notes and temporaries in picks_dir, the per-micrograph and combined
        coordinate files and score maps of the micrographs picked now or before (never every file
        of a folder)."""
        from topaz_lightning.picking.predict import FAILED_SUFFIX, PART_SUFFIX

        old = old or {}
        names = sorted(self.parts() | set(self.names))
        files: list[Path] = [self.state]
        if self.picks_dir.is_dir():
            for pattern in (f"*{PART_SUFFIX}", f"*{FAILED_SUFFIX}"):
                files += self.picks_dir.glob(pattern)
            files += [
                self.picks_dir / e
                for e in os.listdir(self.picks_dir)
                if jobs.temporary_target(e) is not None
            ]
        outputs = [(self.output, self.per_micrograph, self.extension)]
        for entry in old.get("outputs", []) or []:
            try:
                outputs.append(
                    (Path(entry["path"]), bool(entry["per_micrograph"]), str(entry["extension"]))
                )
            except (KeyError, TypeError):
                continue
        for path, per_micrograph, ext in outputs:
            if per_micrograph:
                files += [path / f"{n}{ext}" for n in names if _plain_name(n)]
            elif path != self.output:
                files.append(path)  # an earlier combined output of this job
        score_maps = [(self.score_dir, self.score_exts)]
        recorded = old.get("score_maps")
        if isinstance(recorded, dict) and "dir" in recorded:
            score_maps.append((Path(recorded["dir"]), list(recorded.get("extensions", []))))
        for directory, exts in score_maps:
            if directory is not None:
                files += [directory / f"{n}{e}" for n in names if _plain_name(n) for e in exts]
        return files

    def open(self, record: dict, overwrite: bool) -> jobs.Job:
        """Decide (rank 0, before any work) whether this run continues, starts or starts over."""
        from topaz_lightning.io.coordinates import check_coordinate_output
        from topaz_lightning.utils.atomic import check_writable

        if overwrite:
            check_coordinate_output(self.output, True, per_micrograph=self.per_micrograph)
            if self.output.is_file():
                check_writable(self.output, overwrite=True)  # refuses a read-only one
        job = jobs.open_job(
            self.state,
            _COMMAND,
            record,
            overwrite=overwrite,
            data=self.written(),
            owned=self.owned,
            targets=self.owned(None) if not overwrite else (),
            save=False,
        )
        if job.continuing:
            # the same command: continue; its combined outputs are rebuilt from the parts
            job.data["outputs"] = list((job.previous or {}).get("outputs", []))
            jobs.remove_temporaries(self.picks_dir)
            if self.score_dir is not None:
                names = {f"{n}{e}" for n in self.names for e in self.score_exts}
                jobs.remove_temporaries(self.score_dir, names)
            if not self._recorded(job):
                check_coordinate_output(self.output, False, per_micrograph=self.per_micrograph)
        elif not overwrite:
            check_coordinate_output(self.output, False, per_micrograph=self.per_micrograph)
        self.picks_dir.mkdir(parents=True, exist_ok=True)
        job.save()
        return job

    def _recorded(self, job: jobs.Job) -> bool:
        return str(self.output.resolve()) in {
            o.get("path") for o in job.data.get("outputs", []) if isinstance(o, dict)
        }

    def remember_output(self, job: jobs.Job) -> None:
        """Record the combined output as this job's (a rerun may replace it)."""
        entry = {
            "path": str(self.output.resolve()),
            "per_micrograph": self.per_micrograph,
            "extension": self.extension,
        }
        others = [o for o in job.data.get("outputs", []) if o.get("path") != entry["path"]]
        job.update(outputs=[*others, entry])


def _plain_name(name: str) -> bool:
    try:
        jobs.safe_file_name(name)
    except InputError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# normalization, trainer


def _normalization(cfg, extra, sources, resolved, run_dir: Path, reuse: bool, failures):
    """The run's PickNormalization: reused from normalization.json when continuing, else fitted."""
    from topaz_lightning.picking.normalization import (
        PickNormalization,
        check_normalize_fit,
        fit_over_micrographs,
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
        if source == "training":
            fit = training_fit(extra, str(cfg.model_path))
        else:
            fit = fit_over_micrographs(
                sources,
                resolved.downsample,
                seed=int(cfg.seed),
                num_workers=int(cfg.num_workers),
                on_error=None if failures.strict else _log_first_pass_error,
            )
        norm = PickNormalization("gmm", fit=fit, source=source, seed=int(cfg.seed))
    if _launch_rank_zero():
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
    dataset = MicrographDataset(todo, Preprocess(resolved.downsample, norm))
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
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()
    return bool(trainer.is_global_zero)


# ------------------------------------------------------------------------------------------------
# assembling the output


def extract(parts: pd.DataFrame, threshold: float, max_picks: int | None) -> pd.DataFrame:
    """Picks of stored parts (every maximum, best first per micrograph) at ``threshold`` (logit,
    kept if ``>=``) and the best ``max_picks`` per micrograph: the very picks that scoring with
    that threshold and top k gives (NMS never lets a lower maximum suppress a higher one)."""
    picks = parts
    if threshold > -math.inf:
        picks = picks[picks["score"].to_numpy(np.float64) >= threshold]
    if max_picks is not None:
        picks = picks.groupby("micrograph", sort=False, group_keys=False).head(int(max_picks))
    return picks.reset_index(drop=True)


def _write_output(cfg, picks: pd.DataFrame, outputs: PickOutputs, fmt: str, good: list[str]):
    from topaz_lightning.io.coordinates import write_coordinates

    if outputs.per_micrograph and outputs.output.is_dir():
        # this job's file of a micrograph that now has no picks would otherwise stay behind
        with_picks = set(picks["micrograph"])
        for name in good:
            if name not in with_picks:
                (outputs.output / f"{name}{outputs.extension}").unlink(missing_ok=True)
    write_coordinates(
        picks,
        outputs.output,
        fmt=fmt,
        overwrite=True,  # decided by the job: a fresh output, or this job's own
        per_micrograph=outputs.per_micrograph,
        box_size=cfg.get("box_size"),
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
    from topaz_lightning.models import load_model
    from topaz_lightning.picking import sigmoid
    from topaz_lightning.picking.predict import failed_path, read_parts
    from topaz_lightning.picking.settings import micrographs_record, resolve_pick_settings

    _require(cfg, ("model_path", "micrographs", "output_dir"))
    rank_zero = _launch_rank_zero()
    failures = jobs.FailureLog(strict=bool(cfg.get("strict", False)))
    run_dir = Path(str(cfg.output_dir))

    net, extra = load_model(cfg.model_path)
    resolved = resolve_pick_settings(cfg, net, extra, str(cfg.model_path))
    sources = select_micrographs(cfg)
    names = list(sources)
    record = {**resolved.record, "micrographs": micrographs_record(names)}
    output = jobs.output_path(run_dir, cfg.output, "output")
    fmt = output_format(cfg, output, len(names))
    outputs = PickOutputs(cfg, names, fmt)

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
    picks = extract(read_parts(outputs.picks_dir, good), resolved.threshold, resolved.max_picks)
    if cfg.score == "probability":
        picks["score"] = sigmoid(picks["score"].to_numpy())
    if picks.empty:
        log.warning("no picks above the threshold; writing an empty table")
    _write_output(cfg, picks, outputs, fmt, good)
    if job is not None:
        outputs.remember_output(job)
    print(f"wrote {len(picks)} picks from {len(good)} micrograph(s) to {outputs.output}")
    metrics = {
        "pick/micrographs": len(good),
        "pick/scored": len(todo),
        "pick/failed": len(failures.failures),
        "pick/picks": len(picks),
    }
    objects = {"picks": picks, "settings": resolved, "output": outputs.output}
    failures.finish(run_dir)
    return metrics, objects
