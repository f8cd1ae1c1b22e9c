"""``tzl-train resume=<run dir>``: the command line that continues an interrupted run, built from
the run's own recorded overrides before Hydra composes anything."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.utils.continuation import may_change

__all__ = ["RESUME_KEY", "resume_command_line"]

RESUME_KEY = "resume"
_MULTIRUN_FLAGS = ("-m", "--multirun")


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def _value(override: str) -> str:
    return override.partition("=")[2].strip().strip("'\"")


def _read_yaml(path: Path, run_dir: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise InputError(f"resume: cannot read the run's {path.name} ({reason})", run_dir) from err


def _recorded_overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides (``.hydra/overrides.yaml``), checked to be a train run."""
    hydra_dir = run_dir / ".hydra"
    overrides_file, config_file = hydra_dir / "overrides.yaml", hydra_dir / "config.yaml"
    if not overrides_file.is_file() or not config_file.is_file():
        raise InputError(
            "resume: not a tzl-train run directory (no .hydra/overrides.yaml and "
            ".hydra/config.yaml: give the folder tzl-train wrote, e.g. outputs/train/<time>)",
            run_dir,
        )
    config = _read_yaml(config_file, run_dir)
    if not isinstance(config, dict) or not {"trainer", "module", "model"} <= set(config):
        raise InputError(
            "resume: not a tzl-train run directory (its .hydra/config.yaml has no trainer, "
            "module and model: another command's run?)",
            run_dir,
        )
    recorded = _read_yaml(overrides_file, run_dir) or []
    if not isinstance(recorded, list) or not all(isinstance(o, str) for o in recorded):
        raise InputError("resume: .hydra/overrides.yaml is not a list of overrides", run_dir)
    return recorded


def _started_in(run_dir: Path) -> Path | None:
    """The working directory the run was started in (Hydra's ``runtime.cwd``), if recorded."""
    hydra = (
        _read_yaml(run_dir / ".hydra" / "hydra.yaml", run_dir)
        if (run_dir / ".hydra" / "hydra.yaml").is_file()
        else None
    )
    try:
        return Path(hydra["hydra"]["runtime"]["cwd"])
    except (TypeError, KeyError):
        return None


def _finished_step(run_dir: Path) -> int | None:
    """The step a finished run (model.pt or metrics.json) ended at; None while unfinished."""
    if not any((run_dir / name).exists() for name in ("model.pt", "metrics.json")):
        return None
    try:
        step = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["global_step"]
        return int(step)
    except (OSError, ValueError, KeyError, TypeError):
        return -1  # finished, step unknown


def resume_command_line(argv: Sequence[str]) -> list[str] | None:
    """``argv`` with ``resume=<run dir>`` replaced by the run's recorded overrides, or None when
    ``argv`` has no ``resume=``.

    The run is continued in its own directory (``hydra.run.dir=<run dir>``) with its own settings,
    so ``train()`` finds its ``checkpoints/last.ckpt`` and continues (checking the checkpoint's
    stored settings against the replayed ones). Besides ``resume=``, only the keys of
    :data:`topaz_lightning.utils.continuation.RESUME_MAY_CHANGE` may be given
    (``trainer.max_steps``: a finished run trains further when it is larger than the step it
    ended at). Nothing heavy is imported here: Lightning, imported before Hydra sets up logging,
    would keep its own unformatted console handler. Errors, one line
    each (exit 2): not a directory, not a tzl-train run directory, no checkpoint yet, a finished
    run with nothing more to do, another key, ``--multirun``, another working directory than the
    run's (its relative paths are read from there).
    """
    from topaz_lightning.cli.overrides import command_line_overrides

    overrides = command_line_overrides(argv)
    given = [o for o in overrides if _key(o) == RESUME_KEY]
    if not given:
        return None
    if len(given) > 1:
        raise ConfigError(RESUME_KEY, "given more than once")
    value = _value(given[0])
    if not value or value in ("null", "None"):
        return None
    if any(arg in _MULTIRUN_FLAGS for arg in argv):
        raise ConfigError(RESUME_KEY, "continues one run: drop -m/--multirun")
    run_dir = Path(value)
    if not run_dir.is_dir():
        raise InputError("resume: not a directory (give a tzl-train run directory)", run_dir)
    others = [o for o in overrides if o not in given]
    for override in others:
        key = _key(override)
        if not may_change(key):
            raise ConfigError(
                key,
                f"cannot change when resuming {run_dir} (only trainer.max_steps, "
                "callbacks.model_checkpoint.*, callbacks.progress_bar.* and "
                "callbacks.duration_estimate.* may); start a new run for other settings",
            )
    recorded = _recorded_overrides(run_dir)
    started = _started_in(run_dir)
    if started is not None and started.resolve() != Path(os.getcwd()).resolve():
        raise ConfigError(
            RESUME_KEY,
            f"{run_dir} was started in {started}: resume it from there (its relative paths, "
            "e.g. the simulated data, are read from the working directory)",
        )
    checkpoint_dir = run_dir / "checkpoints"
    for override in recorded:
        if _key(override) == "paths.checkpoint_dir":
            checkpoint_dir = Path(_value(override))
    last = checkpoint_dir / "last.ckpt"
    extra: list[str] = []
    step = _finished_step(run_dir)
    new_max = [_value(o) for o in others if _key(o) == "trainer.max_steps"]
    if step is not None:
        more = new_max and new_max[-1].lstrip("-").isdigit() and int(new_max[-1]) > step >= 0
        if not more:
            at = f"at step {step}" if step >= 0 else "(metrics.json unreadable)"
            raise InputError(
                f"resume: the run is finished {at} (model.pt is written): nothing to resume; "
                f"train it further with resume={run_dir} trainer.max_steps=<more steps>",
                run_dir,
            )
        extra.append("ckpt_path=last")  # outputs of a finished run are rewritten by design
    if not last.is_file():
        raise InputError(
            f"resume: no checkpoint to continue from ({last} does not exist yet: one is written "
            "every callbacks.model_checkpoint.every_n_train_steps steps and every_n_minutes "
            "minutes); rerun the original command to start it again",
            run_dir,
        )
    replaced = {_key(o) for o in others}
    kept = [o for o in recorded if _key(o) not in replaced | {"ckpt_path", RESUME_KEY}]
    flags = [a for a in argv if a not in overrides]
    return [*flags, *kept, *others, *extra, f"hydra.run.dir={_quoted(run_dir)}"]


def _quoted(path: Path) -> str:
    """``path`` as a Hydra override value (quoted when it holds characters Hydra parses)."""
    text = str(path)
    if all(c.isalnum() or c in "/._-" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
