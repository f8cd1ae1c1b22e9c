"""The job record of a tzl-preprocess output directory: start, continue or start over (via utils.jobs)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from topaz_lightning.errors import ConfigError, InputError, OutputExistsError
from topaz_lightning.preprocess.gmm import DEFAULT_SAMPLE_SIZE, GMMFit
from topaz_lightning.utils import jobs as job_service
from topaz_lightning.utils.atomic import safe_output_name
from topaz_lightning.utils.jobs import FAILURES_FILE

log = logging.getLogger("topaz_lightning")

#: the record of a preprocessing job in its output directory: settings, inputs and the GMM fit
JOB_FILE = "preprocess_job.json"
_COMMAND = "tzl-preprocess"


def output_paths(names: Iterable[str], output_dir: str | os.PathLike) -> dict[str, Path]:
    """Where ``preprocess_files`` writes each micrograph: ``output_dir/<name>.mrc``."""
    return {
        name: Path(output_dir) / f"{safe_output_name(name, where='micrograph name')}.mrc"
        for name in names
    }


def job_settings(
    downsample: float, normalize: str, seed: int = 0, sample_size: int = DEFAULT_SAMPLE_SIZE
) -> dict:
    """The settings that decide the output pixels (seed and sample size matter only for gmm)."""
    settings = {"downsample": float(downsample), "normalize": str(normalize)}
    if normalize == "gmm":
        settings.update(seed=int(seed), sample_size=int(sample_size))
    return settings


@dataclass
class PreprocessJob:
    """The job record of one output directory (``preprocess_job.json``) and what it allows.

    ``continuing`` is True when an earlier run with the same settings (and, for gmm, the same
    micrographs) left outputs there: they are kept and the rest is done. ``fit`` is the GMM fit
    that run stored, so a continued job normalizes with exactly the same parameters. The record
    is kept by the job service (:mod:`topaz_lightning.utils.jobs`, strict JSON).
    """

    output_dir: Path
    settings: dict
    inputs: list[str]
    extra_outputs: list[str]
    continuing: bool = False
    fit: GMMFit | None = None

    @property
    def path(self) -> Path:
        return self.output_dir / JOB_FILE

    def save(self) -> None:
        """Write the record atomically (before any output it covers is written)."""
        data = {
            "inputs": self.inputs,
            "extra_outputs": self.extra_outputs,
            "gmm": None if self.fit is None else self.fit.to_record(),
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        job_service.Job(self.path, _COMMAND, self.settings, data).save()

    def save_fit(self, fit: GMMFit) -> None:
        self.fit = fit
        self.save()


def _read_record(path: Path) -> dict | None:
    record = job_service.read_record(path, _COMMAND)
    if record is None:
        return None
    inputs, extras = record.get("inputs"), record.get("extra_outputs", [])
    if not isinstance(inputs, list) or not isinstance(extras, list):
        raise InputError(
            "not a tzl-preprocess job record (inputs/extra_outputs have the wrong type); start "
            "over with overwrite=true or choose another output_dir",
            path=path,
        )
    return record


def _recorded_outputs(output_dir: Path, record: dict | None) -> list[Path]:
    """Files an earlier run recorded as its own, limited to plain names inside ``output_dir``."""
    if record is None:
        # a directory written before job records existed: its summary names the micrographs
        names = _summary_names(output_dir / "preprocess.yaml")
        return [output_dir / f"{n}.mrc" for n in names]
    out = []
    for name in record.get("inputs", []):
        try:
            out.append(output_dir / f"{safe_output_name(str(name))}.mrc")
        except InputError:
            log.warning("%s: ignoring unsafe micrograph name %r", output_dir / JOB_FILE, name)
    for extra in record.get("extra_outputs", []):
        path = Path(str(extra))
        # never remove anything outside the output directory because a record says so
        if not path.is_absolute() and path.name == str(extra):
            out.append(output_dir / path.name)
    return out


def _summary_names(summary: Path) -> list[str]:
    if not summary.is_file():
        return []
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(OmegaConf.load(summary))
        names = list(data.get("micrographs") or {})
    except Exception:  # noqa: BLE001 - an unreadable old summary only means nothing to clean
        return []
    safe = []
    for name in names:
        try:
            safe.append(safe_output_name(str(name)))
        except InputError:
            continue
    return safe


def open_job(
    output_dir: str | os.PathLike,
    sources: Mapping[str, str | os.PathLike],
    settings: Mapping,
    overwrite: bool = False,
    extra_outputs: Sequence[str | os.PathLike] = (),
) -> PreprocessJob:
    """Decide, before any work, whether a run into ``output_dir`` starts, continues or is refused.

    - ``overwrite``: start over; the outputs the earlier job recorded (its micrographs, summary
      and coordinates inside ``output_dir``, failures.tsv) and this run's targets are removed.
    - a job record with the same settings (for gmm also the same micrographs): continue.
    - different settings (the error names every changed key), or outputs without a record:
      refused (InputError/ConfigError/OutputExistsError).

    ``sources`` maps micrograph names to their input files (an output that would replace one is
    refused, and nothing that is an input is ever removed). ``extra_outputs`` are further files
    the caller writes (summary, coordinates): recorded so that a continued run may rewrite them
    and ``overwrite`` removes them. The new record is written before this returns.
    """
    output_dir = Path(output_dir)
    names = list(sources)
    inputs = [Path(p) for p in sources.values()]
    resolved_inputs = {p.resolve() for p in inputs}
    settings = dict(settings)
    extras = [os.fspath(p) for p in extra_outputs]
    # a recorded extra inside output_dir is kept by its plain name (portable between mounts)
    extras = [
        Path(p).name if Path(p).parent.resolve() == output_dir.resolve() else p for p in extras
    ]
    record_path = output_dir / JOB_FILE
    targets = output_paths(names, output_dir)
    for target in [*targets.values(), *map(Path, extra_outputs)]:
        if target.resolve() in resolved_inputs:
            raise ConfigError("output_dir", f"output {target} would replace an input micrograph")

    def owned(old: dict | None) -> list[Path]:
        return [*_recorded_outputs(output_dir, old), output_dir / FAILURES_FILE]

    if overwrite:
        job = job_service.open_job(
            record_path,
            _COMMAND,
            settings,
            overwrite=True,
            owned=owned,
            targets=list(targets.values()),
            protected=inputs,
            save=False,
        )
        job_service.remove_temporaries(output_dir, [t.name for t in targets.values()])
        out = PreprocessJob(output_dir, job.settings, names, extras)
        out.save()
        return out

    # validates the record (and names every changed setting) before the micrographs are compared
    _read_record(record_path)
    job = job_service.open_job(
        record_path,
        _COMMAND,
        settings,
        overwrite=False,
        targets=[*targets.values(), *map(Path, extra_outputs)],
        save=False,
    )
    if not job.continuing:
        out = PreprocessJob(output_dir, job.settings, names, extras)
        out.save()
        return out
    record = job.previous or {}
    old_inputs = [str(n) for n in record["inputs"]]
    fit = None
    if settings["normalize"] == "gmm":
        if old_inputs != names:
            added = sorted(set(names) - set(old_inputs))
            missing = sorted(set(old_inputs) - set(names))
            raise ConfigError(
                "input",
                f"the micrographs differ from the job in {output_dir} ({len(added)} new, e.g. "
                f"{added[:2]}; {len(missing)} missing, e.g. {missing[:2]}): gmm normalization is "
                "fit over all micrographs together, so it cannot continue with others; "
                "overwrite=true starts over",
            )
        if record.get("gmm") is not None:
            fit = _fit_from_record(record["gmm"], record_path)
    # per-image normalizations may take new micrographs; earlier ones stay recorded
    all_inputs = list(dict.fromkeys(old_inputs + names))
    old_extras = [str(p) for p in record.get("extra_outputs", [])]
    for extra, path in zip(extras, extra_outputs, strict=True):
        # a file this job did not write before is not its to replace
        if extra not in old_extras and Path(path).exists():
            raise OutputExistsError(path)
    out = PreprocessJob(
        output_dir,
        job.settings,
        all_inputs,
        list(dict.fromkeys(old_extras + extras)),
        continuing=True,
        fit=fit,
    )
    out.save()
    return out


def _fit_from_record(data: dict, path: Path) -> GMMFit:
    fit = GMMFit.from_record(data, source=str(path))
    if len(fit.names) != len(fit.alpha) or not fit.names:
        raise InputError("stored GMM fit has no per-micrograph scales", path=path, where="gmm")
    return fit
