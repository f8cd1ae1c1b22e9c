"""Pick particles: score micrographs with a trained model and extract coordinates by NMS (a Lightning predict loop).

Reads the micrographs (directory, glob or list file) one at a time in a DataLoader (the next is
prefetched while the current one is scored; memory stays flat in their number), preprocesses
them as the model's training data (Fourier-crop factor and normalization from model.pt), scores
every pixel with the classifier, keeps picks at least the NMS radius apart, and writes each
micrograph's picks atomically as soon as it is done (``<output_dir>/picks_by_micrograph/``);
the combined output (any coordinate format, one file or one per micrograph, in the micrographs'
own pixels) is assembled from those at the end.

Defaults come from model.pt: the NMS radius from the run's geometry (``nms_radius_px_model``,
model = downsampled pixels; or give ``nms_radius_px`` in micrograph pixels), the downsampling
factor and the normalization. ``normalize=gmm`` is fitted ONCE over a pixel sample of all the
micrographs being picked (``normalize_fit=run``) or taken from training
(``normalize_fit=training``); ``normalization.json`` in the run directory says which.

A threshold comes from a logit, a probability, the expected number of particles per micrograph
(top k) or a target recall on validation data (``target_recall`` + the metrics JSON of
``tzl-evaluate``). The score column holds logits or probabilities (``score=``).

Interrupted runs continue: rerun the same command and it skips the micrographs already done
(and picks the rest), ending with the outputs of an uninterrupted run; a different command into
the same directory is refused; ``overwrite=true`` starts over (removing this command's old
per-micrograph outputs). A micrograph that cannot be read is skipped and listed in
``failures.tsv`` (exit status 3); ``strict=true`` stops at the first. ``trainer=ddp`` (GPUs) or
``trainer=ddp_cpu`` shards the micrographs over processes.

Example usage::

    # the simulator's test micrographs, with a model from tzl-train (radius from model.pt)
    tzl-pick model_path=outputs/train/<run>/model.pt micrographs=data/simulated/demo_seed0/micrographs \
        subset=data/simulated/demo_seed0/test.txt output_dir=picks_demo

    # EMPIAR-10017 JPEGs: STAR output at full size, top 150 per micrograph, score maps as MRC
    tzl-pick model_path=model.pt micrographs=data/samples/empiar10017_dev/images \
        particles_per_micrograph=150 output=picks.star save_score_maps=true output_dir=picks_10017

    # all GPUs of the machine
    tzl-pick model_path=model.pt micrographs='/data/mics/*.mrc' trainer=ddp output_dir=picks_all
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from topaz_lightning.cli._hydra import entry_point, require, resolve_output
from topaz_lightning.errors import ConfigError, InputError, OutputExistsError
from topaz_lightning.io.micrographs import read_micrograph_names as read_name_list

log = logging.getLogger("topaz_lightning")

#: the record of the command whose per-micrograph outputs lie in picks_dir (to continue it)
STATE_FILE = "settings.json"
#: how the micrographs were normalized (in the run directory)
NORMALIZATION_FILE = "normalization.json"
#: keys that do not change a micrograph's picks (they are resolved into the record instead, or
#: only affect speed, logging or the combined output, which is rebuilt from the parts)
NOT_IN_RECORD = {
    "model_path", "micrographs", "subset", "output_dir", "output", "format", "per_micrograph",
    "box_size", "score", "threshold", "threshold_probability", "target_recall", "recall_metrics",
    "radius", "nms_radius_px", "nms_radius_px_model", "downsample", "normalize", "chunk_size",
    "device", "batch_size", "num_workers", "tile_size", "progress", "overwrite", "strict",
    "trainer", "hydra", "task_name", "picks_dir", "callbacks",
}  # fmt: skip


def choose_threshold(cfg: DictConfig) -> float:
    """The logit threshold from ``threshold``, ``threshold_probability`` or ``target_recall``."""
    from topaz_lightning.picking import logit

    given = [
        k for k in ("threshold", "threshold_probability", "target_recall") if cfg.get(k) is not None
    ]
    if len(given) > 1:
        raise ConfigError(
            given[1],
            f"set only one of threshold, threshold_probability, target_recall (got {given})",
        )
    if not given:
        return -math.inf
    if given[0] == "threshold":
        return float(cfg.threshold)
    if given[0] == "threshold_probability":
        return logit(float(cfg.threshold_probability))
    if not cfg.get("recall_metrics"):
        raise ConfigError(
            "recall_metrics",
            "target_recall needs the metrics JSON of tzl-evaluate (with its curve)",
        )
    return threshold_from_metrics(cfg.recall_metrics, float(cfg.target_recall))


def threshold_from_metrics(path, target_recall: float) -> float:
    """Threshold reaching ``target_recall`` on the PR curve stored in a tzl-evaluate metrics JSON."""
    from types import SimpleNamespace

    from topaz_lightning.picking import threshold_for_recall

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
        raise InputError(f"cannot read metrics JSON ({err})", path=path) from err
    curve = data.get("curve") if isinstance(data, dict) else None
    if not isinstance(curve, dict) or not {"threshold", "recall"} <= set(curve):
        raise InputError(
            "no PR curve in the metrics file (run tzl-evaluate with include_curve=true)",
            path=path,
            where="curve",
        )
    ev = SimpleNamespace(recall=curve["recall"], thresholds=curve["threshold"])
    threshold = threshold_for_recall(ev, target_recall)
    log.info("threshold %.4f reaches recall %.3f on %s", threshold, target_recall, path)
    return threshold


# ------------------------------------------------------------------------------------------------
# settings resolved from the config and model.pt


def _launch_rank_zero() -> bool:
    """False in the extra processes a DDP launcher (Lightning, torchrun, srun) starts."""
    return all(
        int(os.environ.get(k, "0") or 0) == 0
        for k in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
    )


def _model_geometry(extra: dict, model_path: str):
    from topaz_lightning.geometry import RunGeometry

    data = extra.get("geometry")
    return None if data is None else RunGeometry.from_dict(data, source=model_path)


def _preprocessing(cfg: DictConfig, extra: dict, geometry) -> tuple[float, str]:
    """(downsample, normalize): the config's override, else model.pt's training preprocessing."""
    from topaz_lightning.geometry import check_downsample
    from topaz_lightning.preprocess.pipeline import NORMALIZATIONS

    prep = dict(extra.get("preprocess") or {})
    if cfg.get("downsample") is not None:
        downsample = check_downsample(cfg.downsample, "downsample")
    elif geometry is not None:
        downsample = geometry.downsample
    else:
        downsample = check_downsample(
            prep.get("downsample") or 1.0, "model.pt preprocess.downsample"
        )
    if cfg.get("normalize") is not None:
        normalize = str(cfg.normalize)
    elif prep.get("normalize") is not None:
        normalize = str(prep["normalize"])
    elif geometry is not None:
        normalize = geometry.normalize
    else:
        normalize = "none"
    if normalize not in NORMALIZATIONS:
        raise ConfigError(
            "normalize", f"must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}"
        )
    return downsample, normalize


def nms_radius_px_model(cfg: DictConfig, geometry, downsample: float) -> float:
    """The NMS radius in model pixels: ``nms_radius_px_model`` (``radius`` is its old name) or
    ``nms_radius_px`` (micrograph pixels) if given, else model.pt's geometry."""
    from topaz_lightning.geometry import default_radii, to_model_px

    given = [
        k for k in ("nms_radius_px_model", "radius", "nms_radius_px") if cfg.get(k) is not None
    ]
    if len(given) > 1:
        raise ConfigError(given[1], f"give the NMS radius once (got {given})")
    if given:
        key = given[0]
        try:
            value = float(cfg[key])
        except (TypeError, ValueError):
            raise ConfigError(key, f"must be a number >= 0, got {cfg[key]!r}") from None
        if not (value >= 0 and math.isfinite(value)):
            raise ConfigError(key, f"must be a number >= 0, got {cfg[key]}")
        return to_model_px(value, downsample) if key == "nms_radius_px" else value
    if geometry is not None:
        if geometry.nms_radius_px_model is not None:
            return float(geometry.nms_radius_px_model)
        default = default_radii(geometry.particle_radius_px_model)["nms_radius_px_model"]
        if default is not None:
            return float(default)
    raise ConfigError(
        "nms_radius_px_model",
        "model.pt carries no NMS radius (no run geometry, or no particle size): give "
        "nms_radius_px_model=<model pixels> or nms_radius_px=<micrograph pixels>",
    )


def model_fingerprint(net, extra: dict) -> str:
    """sha256 of the weights and extras (the content: re-saving the same model keeps it)."""
    digest = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        digest.update(key.encode("utf-8"))
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode("utf-8"))
    return digest.hexdigest()


def run_record(cfg: DictConfig, resolved: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Everything that decides a micrograph's picks, as plain values (compared to continue a run).

    Every config key not in NOT_IN_RECORD is part of it (so a key added later counts by default),
    plus ``resolved`` (threshold, radius, preprocessing, the model's hash) and the names.
    """
    keys = [k for k in cfg if k not in NOT_IN_RECORD]
    plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    names_hash = hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()
    return {
        **plain,
        **resolved,
        "micrographs": {"count": len(names), "names_sha256": names_hash},
    }


# ------------------------------------------------------------------------------------------------
# outputs: check before any work, continue or start over


def _output_format(output: Path, cfg: DictConfig) -> str:
    from topaz_lightning.io import coordinates as coords

    fmt = cfg.get("format")
    if fmt is None:
        if cfg.per_micrograph:
            raise InputError("writing one file per micrograph needs an explicit format=", output)
        return coords._format_for_output(output)
    return coords.canonical_format(str(fmt))


def check_output_target(output: Path, cfg: DictConfig, num_micrographs: int) -> str:
    """Refuse now what writing the combined output would refuse (format, box_size, directory).

    Returns the canonical format.
    """
    from topaz_lightning.io import coordinates as coords

    fmt = _output_format(output, cfg)
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


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the run record ({err}); use overwrite=true", path) from err


def _write_json(path: Path, data: dict) -> None:
    from topaz_lightning.utils.atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _differences(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class Outputs:
    """The files a pick run writes, and the rules for continuing or replacing them.

    ``<picks_dir>/settings.json`` records the command (its :func:`run_record`) and the files it
    wrote beyond its parts (combined outputs, score maps), so that a rerun can tell its own
    outputs (continue, replace) from anything else (refuse), and ``overwrite=true`` can remove
    exactly the old command's per-micrograph files.
    """

    def __init__(self, cfg: DictConfig, names: list[str], fmt: str):
        from topaz_lightning.io.coordinates import EXTENSIONS

        self.output = resolve_output(cfg, "output")
        self.per_micrograph = bool(cfg.per_micrograph)
        self.extension = EXTENSIONS[fmt]
        self.picks_dir = resolve_output(cfg, "picks_dir")
        self.state = self.picks_dir / STATE_FILE
        self.score_exts = [
            ext
            for ext, wanted in ((".mrc", cfg.save_score_maps), (".png", cfg.get("plot_score_maps")))
            if wanted
        ]
        self.score_dir = resolve_output(cfg, "score_map_dir") if self.score_exts else None
        self.names = names

    def _parts(self) -> set[str]:
        from topaz_lightning.picking.predict import PART_SUFFIX

        if not self.picks_dir.is_dir():
            return set()
        return {p.name[: -len(PART_SUFFIX)] for p in self.picks_dir.glob(f"*{PART_SUFFIX}")}

    def done(self) -> set[str]:
        """Micrographs whose part is on disk (complete: parts are written last, atomically)."""
        return self._parts() & set(self.names)

    def _written(self) -> dict[str, Any]:
        """What this command writes besides its parts (kept in the state file)."""
        return {
            "outputs": [],
            "score_maps": None
            if self.score_dir is None
            else {"dir": str(self.score_dir.resolve()), "extensions": self.score_exts},
        }

    def _stale(self, old: dict | None) -> list[Path]:
        """Existing per-micrograph files of this command and of the recorded earlier one."""
        from topaz_lightning.picking.predict import FAILED_SUFFIX, PART_SUFFIX

        old = old or {}
        previous = self._parts()
        files: list[Path] = []
        if self.picks_dir.is_dir():
            for pattern in (f"*{PART_SUFFIX}", f"*{FAILED_SUFFIX}", ".*.tmp*", STATE_FILE):
                files += list(self.picks_dir.glob(pattern))
        outputs = [(self.output, self.per_micrograph, self.extension)]
        outputs += [
            (Path(o["path"]), bool(o["per_micrograph"]), str(o["extension"]))
            for o in old.get("outputs", [])
        ]
        for path, per_micrograph, ext in outputs:
            if per_micrograph and path.is_dir():
                files += list(path.glob(f"*{ext}"))
        score_maps = [(self.score_dir, self.score_exts)]
        if old.get("score_maps"):
            score_maps.append((Path(old["score_maps"]["dir"]), old["score_maps"]["extensions"]))
        for directory, exts in score_maps:
            if directory is None:
                continue
            # only maps of micrographs picked now or before (never the whole folder)
            for name in sorted(previous | set(self.names)):
                files += [directory / f"{name}{e}" for e in exts]
        return [p for p in dict.fromkeys(files) if p.is_file()]

    def prepare(self, record: dict, overwrite: bool) -> bool:
        """Decide (rank 0, before any work) whether this run continues, starts fresh or over.

        Returns True when it continues a run of the same command. Raises OutputExistsError for
        outputs of another command (or of no recorded command) unless ``overwrite``.
        """
        from topaz_lightning.io.coordinates import check_coordinate_output
        from topaz_lightning.utils.atomic import check_writable

        old = _read_record(self.state) if not overwrite else self._old_or_none()
        if overwrite:
            check_coordinate_output(self.output, True, per_micrograph=self.per_micrograph)
            if self.output.is_file():
                check_writable(self.output, overwrite=True)  # refuses a read-only one
            for path in self._stale(old):
                path.unlink()
            _write_json(self.state, {"settings": record, **self._written()})
            return False
        if old is not None:
            if old.get("settings") != record:
                changed = _differences(old.get("settings") or {}, record)
                log.error(
                    "%s holds the picks of a different command (changed: %s); pass "
                    "overwrite=true to start over, or choose another output_dir",
                    self.picks_dir,
                    ", ".join(changed) or "?",
                )
                raise OutputExistsError(self.state)
            # the same command: continue; its combined outputs are rebuilt from the parts
            for path in self._leftovers():
                path.unlink()
            recorded = {o["path"] for o in old.get("outputs", [])}
            if str(self.output.resolve()) not in recorded:
                check_coordinate_output(self.output, False, per_micrograph=self.per_micrograph)
            return True
        check_coordinate_output(self.output, False, per_micrograph=self.per_micrograph)
        stale = self._stale(None)
        if stale:
            raise OutputExistsError(stale[0])
        _write_json(self.state, {"settings": record, **self._written()})
        return False

    def _leftovers(self) -> list[Path]:
        """Temporary files of an interrupted earlier run of this command (atomic_output's
        ``.<target>.<random>.tmp<suffix>``) beside its parts and score maps."""
        targets: dict[Path, set[str] | None] = {self.picks_dir: None}
        if self.score_dir is not None:
            targets[self.score_dir] = {f"{n}{e}" for n in self.names for e in self.score_exts}
        found = []
        for directory, names in targets.items():
            if not directory.is_dir():
                continue
            for path in directory.glob(".*.tmp*"):
                target = path.name[1:].rsplit(".tmp", 1)[0].rsplit(".", 1)[0]
                if path.is_file() and (names is None or target in names):
                    found.append(path)
        return found

    def _old_or_none(self) -> dict | None:
        try:
            return _read_record(self.state)
        except InputError:  # a damaged record: start over without it
            return None

    def remember_output(self) -> None:
        """Record the combined output as this command's (a rerun may replace it)."""
        data = _read_record(self.state) or {}
        entry = {
            "path": str(self.output.resolve()),
            "per_micrograph": self.per_micrograph,
            "extension": self.extension,
        }
        outputs = [o for o in data.get("outputs", []) if o.get("path") != entry["path"]]
        data["outputs"] = [*outputs, entry]
        _write_json(self.state, data)


# ------------------------------------------------------------------------------------------------
# normalization, trainer


def _normalization(cfg, extra, sources, downsample, normalize, run_dir, reuse, failures):
    """The run's PickNormalization: reused from normalization.json when continuing, else fitted."""
    from topaz_lightning.picking.normalization import (
        PickNormalization,
        check_normalize_fit,
        fit_over_micrographs,
        training_fit,
    )

    path = run_dir / NORMALIZATION_FILE
    if normalize != "gmm":
        norm = PickNormalization(method=normalize)
    else:
        source = check_normalize_fit(cfg.get("normalize_fit", "run"))
        saved = _read_record(path) if reuse else None
        if (
            saved is not None
            and saved.get("normalize") == "gmm"
            and saved.get("normalize_fit") == source
        ):
            norm = PickNormalization.from_record(saved, source=str(path))
            log.info("GMM normalization: reusing the fit in %s", path)
        elif source == "training":
            fit = training_fit(extra, str(cfg.model_path))
            norm = PickNormalization("gmm", fit=fit, source="training", seed=int(cfg.seed))
        else:
            fit = fit_over_micrographs(
                sources,
                downsample,
                seed=int(cfg.seed),
                num_workers=int(cfg.num_workers),
                on_error=None if failures.strict else _log_first_pass_error,
            )
            norm = PickNormalization("gmm", fit=fit, source="run", seed=int(cfg.seed))
    if _launch_rank_zero():
        _write_json(path, norm.record())
    return norm


def _log_first_pass_error(name: str, reason: str) -> None:
    # reported once, by the predict loop that tries the micrograph again
    log.warning("%s: left out of the GMM fit (%s)", name, reason)


def _trainer_kwargs(cfg: DictConfig, writer, run_dir: Path) -> dict[str, Any]:
    from topaz_lightning.picking.scoring import resolve_device
    from topaz_lightning.train import instantiate_callbacks

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


def _check_settings(cfg: DictConfig) -> None:
    if cfg.score not in ("logit", "probability"):
        raise ConfigError("score", f"must be logit or probability, got {cfg.score!r}")
    for key, low in (
        ("particles_per_micrograph", 0),
        ("batch_size", 1),
        ("num_workers", 0),
        ("tile_size", 1),
    ):
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(key, f"must be an integer >= {low}, got {value!r}")
    from topaz_lightning.picking.coarse import check_tta
    from topaz_lightning.picking.scoring import check_scoring

    check_scoring(cfg.get("scoring", "dense"))
    check_tta(cfg.get("tta", 1))
    level = cfg.get("scoring_level")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int | float)):
        raise ConfigError("scoring_level", f"must be a logit (number) or null, got {level!r}")
    if cfg.get("chunk_size") is not None:
        log.warning(
            "chunk_size is no longer used: micrographs stream one at a time and the GMM "
            "normalization is fitted once over all of them"
        )


# ------------------------------------------------------------------------------------------------
# the command


def run(cfg: DictConfig) -> pd.DataFrame | None:
    """Run the picking described by a composed ``pick`` config; returns the picks DataFrame
    (on the process that assembles the output; None on the other DDP ranks)."""
    from hydra.utils import instantiate

    from topaz_lightning.io.coordinates import write_coordinates
    from topaz_lightning.io.micrographs import list_micrographs
    from topaz_lightning.models import load_model
    from topaz_lightning.picking import sigmoid
    from topaz_lightning.picking.border import border_padding_px_model
    from topaz_lightning.picking.predict import (
        MicrographDataset,
        PickModule,
        PickSettings,
        PickWriter,
        Preprocess,
        failed_path,
        micrograph_loader,
        read_parts,
    )
    from topaz_lightning.utils.jobs import FailureLog

    require(
        cfg,
        ("model_path", "micrographs", "output_dir"),
        "model_path=model.pt micrographs=dir/ output_dir=picks",
    )
    _check_settings(cfg)
    threshold = choose_threshold(cfg)
    k = cfg.get("particles_per_micrograph")
    rank_zero = _launch_rank_zero()
    overwrite = bool(cfg.overwrite)
    failures = FailureLog(strict=bool(cfg.get("strict", False)))
    run_dir = Path(str(cfg.output_dir))

    net, extra = load_model(cfg.model_path)
    geometry = _model_geometry(extra, str(cfg.model_path))
    downsample, normalize = _preprocessing(cfg, extra, geometry)
    radius = nms_radius_px_model(cfg, geometry, downsample)

    sources = list_micrographs(cfg.micrographs)
    if cfg.get("subset") is not None:
        wanted = read_name_list(cfg.subset)
        missing = [n for n in wanted if n not in sources]
        if missing:
            raise InputError(
                f"{len(missing)} listed micrograph(s) not found among the inputs, e.g. {missing[0]!r}",
                path=str(cfg.subset),
            )
        sources = {n: sources[n] for n in wanted}
    names = list(sources)

    fmt = check_output_target(resolve_output(cfg, "output"), cfg, len(names))
    outputs = Outputs(cfg, names, fmt)
    plot = bool(cfg.get("plot_score_maps"))
    if plot:
        try:
            import topaz_lightning.plots  # noqa: F401
        except ImportError as err:
            log.warning("skipping score-map pictures (%s)", err)
            plot = False
    settings = PickSettings(
        nms_radius_px_model=radius,
        nms_boundary=str(cfg.get("nms_boundary", "keep")),
        threshold=threshold,
        max_picks=None if k is None else int(k),
        downsample=downsample,
        tile_size=None if cfg.get("tile_size") is None else int(cfg.tile_size),
        keep_score_map=bool(outputs.score_exts),
        scoring=str(cfg.get("scoring", "dense")),
        scoring_level=None if cfg.get("scoring_level") is None else float(cfg.scoring_level),
        tta=int(cfg.get("tta", 1)),
        border_bands=bool(cfg.get("border_bands", False)),
        # null: half the NMS radius (picking.border.border_padding_px_model)
        border_padding_px_model=border_padding_px_model(cfg.get("border_padding_px_model"), radius),
        border_margin_px_model=float(cfg.get("border_margin_px_model") or 0.0),
    )
    record = run_record(
        cfg,
        {
            "threshold": threshold,
            "nms_radius_px_model": radius,
            "downsample": downsample,
            "normalize": normalize,
            "model_sha256": model_fingerprint(net, extra),
        },
        names,
    )
    if rank_zero:
        continuing = outputs.prepare(record, overwrite)
    else:
        continuing = True  # rank 0 decided before it started this process
    # after prepare(): starting over removed the old parts, so this is "all" then
    done = outputs.done()
    todo = {n: p for n, p in sources.items() if n not in done}
    log.info(
        "picking %d micrograph(s) (%d done earlier): downsample %g, normalize %s, NMS radius "
        "%g model px",
        len(todo),
        len(names) - len(todo),
        downsample,
        normalize,
        radius,
    )

    if todo:
        norm = _normalization(
            cfg,
            extra,
            sources,
            downsample,
            normalize,
            run_dir,
            continuing or not rank_zero,
            failures,
        )
        _quiet_lightning()
        dataset = MicrographDataset(todo, Preprocess(downsample, norm))
        loader = micrograph_loader(dataset, int(cfg.batch_size), int(cfg.num_workers))
        writer = PickWriter(
            outputs.picks_dir,
            outputs.score_dir,
            save_score_maps=bool(cfg.save_score_maps),
            plot_score_maps=plot,
        )
        module = PickModule(net, settings, strict=failures.strict)
        trainer = instantiate(cfg.trainer, **_trainer_kwargs(cfg, writer, run_dir))
        trainer.predict(module, dataloaders=loader, return_predictions=False)
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            return None

    done = outputs.done()
    good = []
    for name in names:
        if name in done:
            good.append(name)
            continue
        reason_file = failed_path(outputs.picks_dir, name)
        reason = (
            reason_file.read_text(encoding="utf-8").strip()
            if reason_file.is_file()
            else "not picked (the run was interrupted?)"
        )
        failures.add(name, reason)
    picks = read_parts(outputs.picks_dir, good)
    if cfg.score == "probability":
        picks["score"] = sigmoid(picks["score"].to_numpy())
    if picks.empty:
        log.warning("no picks above the threshold; writing an empty table")
    write_coordinates(
        picks,
        outputs.output,
        fmt=fmt,
        overwrite=True,  # decided above: a fresh output, or this command's own
        per_micrograph=outputs.per_micrograph,
        box_size=cfg.get("box_size"),
    )
    outputs.remember_output()
    print(f"wrote {len(picks)} picks from {len(good)} micrograph(s) to {outputs.output}")
    failures.finish(run_dir)
    return picks


@entry_point("pick")
def main(cfg: DictConfig) -> None:
    """tzl-pick entry point: see the module docstring and configs/pick.yaml."""
    run(cfg)


if __name__ == "__main__":
    main()
