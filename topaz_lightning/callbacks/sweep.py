"""Hydra callback that ends a --multirun sweep with its report: the ranking, the chosen setting, an optional refit.

Registered by ``configs/hparams_search/pi_kfold.yaml``, so that::

    tzl-train -m hparams_search=pi_kfold                # 10 values of pi x 5 folds
    tzl-train -m hparams_search=pi_kfold refit=true     # ... then one run on every training micrograph

prints, after the last job, the mean ± std held-out AUPR per pi over the folds (best first) and the
chosen pi, and writes them to ``<sweep dir>/report/`` (``report.md``, ``report.csv``, ``jobs.csv``
as ``tzl-report`` does, and ``best.yaml``: the chosen setting, its score and the refit command).
With ``refit`` it then trains once more on all training micrographs (no fold held out) with the
chosen setting, in ``<sweep dir>/refit/``.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from topaz_lightning.errors import ConfigError

log = logging.getLogger("topaz_lightning")

#: overrides that define the sweep rather than the setting; a refit drops them
SWEEP_ONLY_KEYS = ("hparams_search", "refit", "data.fold", "data.num_folds")


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, ListConfig | list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _parse(texts: Sequence[str]) -> list[Any]:
    """Hydra's own parse of command-line overrides (``Override`` objects)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([str(t) for t in texts])


def _override_key(text: str) -> str:
    """The key (or config group) an override sets, as Hydra parses it (``+``/``++``/``~`` off)."""
    return str(_parse([text])[0].key_or_group)


def sweep_keys(
    task_overrides: Sequence[str], sweeper_params: Any = None
) -> tuple[list[str], list[str]]:
    """The swept keys of a multirun and the sweeper's fixed settings, from Hydra's parser.

    ``task_overrides``: ``hydra.overrides.task`` (the command line); ``sweeper_params``:
    ``hydra.sweeper.params`` (the sweep written in a config, e.g. ``hparams_search/pi_kfold``).
    An override is swept when Hydra parses it as a sweep (``a,b``, ``range(..)``,
    ``choice(..)``, ``glob(..)``): a list value such as ``data.train_list=[a,b,c]`` is one
    setting, never a sweep, although its text holds commas. Returns ``(swept, fixed)`` where
    ``fixed`` are the sweeper params with a single value, as overrides (they reach the jobs but
    not ``hydra.overrides.task``, so a refit must restate them).
    """
    swept: list[str] = []
    fixed: list[str] = []
    for override in _parse(task_overrides):
        if override.is_sweep_override() and override.key_or_group not in swept:
            swept.append(str(override.key_or_group))
    command_line = {str(o.key_or_group) for o in _parse(task_overrides)}
    params = dict(params_items(sweeper_params))
    for override in _parse([f"{key}={value}" for key, value in params.items()]):
        key = str(override.key_or_group)
        if override.is_sweep_override():
            if key not in swept:
                swept.append(key)
        elif key not in command_line:
            fixed.append(override.input_line)
    return swept, fixed


def params_items(params: Any) -> list[tuple[str, str]]:
    """``hydra.sweeper.params`` as (key, sweep text) pairs (a DictConfig, dict or None)."""
    if params is None:
        return []
    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params, resolve=False)
    return [(str(k), str(v)) for k, v in dict(params).items()]


def refit_overrides(
    task_overrides: Sequence[str],
    best: dict[str, Any],
    swept: Sequence[str],
    run_dir: Path,
    test_list: Any = None,
    no_best_checkpoint: bool = False,
) -> list[str]:
    """The tzl-train overrides of the refit: the sweep's own overrides without the swept keys and
    the sweep machinery, the chosen setting, no fold held out, and the run directory.

    ``test_list``: micrographs held out of the folds, the refit's validation micrographs
    (``data.val_list``), so the refit model is evaluated on them once. ``no_best_checkpoint``:
    drop the best-checkpoint callback, so no model is selected on the test list.
    """
    from topaz_lightning.report import key_text

    drop = set(swept) | set(best) | set(SWEEP_ONLY_KEYS)
    if test_list is not None:
        drop |= {"data.val_list", "callbacks.best_checkpoint"}
    kept = [o for o in task_overrides if _override_key(o) not in drop]
    chosen = [f"{key}={key_text(value)}" for key, value in best.items()]
    test = []
    if test_list is not None:
        test = [f"data.val_list={hydra_value(test_list)}"]
        if no_best_checkpoint:
            test.append("callbacks.best_checkpoint=null")
    return [
        *kept,
        *chosen,
        "data.num_folds=null",
        "data.fold=0",
        *test,
        f"hydra.run.dir={run_dir}",
    ]


def hydra_value(value: Any) -> str:
    """A string or a list of strings as a Hydra override value (quoted, so any name survives)."""

    def quoted(text: Any) -> str:
        return "'" + str(text).replace("'", "\\'") + "'"

    if isinstance(value, ListConfig | list | tuple):
        return "[" + ",".join(quoted(v) for v in value) + "]"
    return quoted(value)


def check_test_list(test_list: Any, train_list: Any) -> list[str]:
    """Check a test list held out of a k-fold sweep: it needs a training list without it.

    The folds split ``data.train_list``; the test list must be outside it, or the folds (and the
    refit) would train on the test micrographs. Raises ConfigError otherwise; returns the names.
    """
    from topaz_lightning.io.micrographs import read_micrograph_names

    if isinstance(test_list, ListConfig):
        test_list = list(test_list)
    if isinstance(train_list, ListConfig):
        train_list = list(train_list)
    if train_list is None:
        raise ConfigError(
            "test_list",
            "a test list held out of the folds needs data.train_list (the micrographs the folds "
            "split, the test micrographs excluded); set data.train_list=[...] or a list file",
        )
    test = read_micrograph_names(test_list, key="test_list")
    train = read_micrograph_names(train_list, key="data.train_list")
    overlap = sorted(set(test) & set(train))
    if overlap:
        raise ConfigError(
            "test_list",
            f"{len(overlap)} test micrograph(s) are also in data.train_list (the folds would "
            f"train on them), e.g. '{overlap[0]}'",
        )
    if not test:
        raise ConfigError("test_list", "names no micrograph")
    return test


class SweepReport(Callback):
    """At the end of a multirun: rank the groups, name the best, write the report; optionally refit.

    ``group_by``: keys compared (default: the swept keys except folds and seeds); ``metric``: a
    metrics.json key or a list (the first ranks); ``mode``: max or min; ``refit``: train once more
    with the best setting on all training micrographs; ``output_dir``: default
    ``<sweep dir>/report``.
    """

    def __init__(
        self,
        group_by: Sequence[str] | None = None,
        metric: str | Sequence[str] = "val/aupr",
        mode: str = "max",
        refit: bool = False,
        output_dir: str | None = None,
        overwrite: bool = True,
        rule: str = "best",
        prefer: str = "smallest",
        alpha: float = 0.05,
        test_list: Any = None,
    ) -> None:
        from topaz_lightning.report import CHOICE_RULES

        if rule not in CHOICE_RULES:
            raise ConfigError("rule", f"must be one of {', '.join(CHOICE_RULES)}, got {rule!r}")
        self.rule = str(rule)
        self.prefer = str(prefer)
        self.alpha = float(alpha)
        self.test_list = test_list
        self.group_by = _names(group_by) or None
        self.metrics = _names(metric) or ["val/aupr"]
        self.mode = str(mode)
        self.refit = bool(refit)
        self.output_dir = output_dir
        self.overwrite = bool(overwrite)
        self.summary: dict[str, Any] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before any job: a test list must be outside the training list the folds split.

        Hydra turns an exception raised in a callback into a warning and runs the sweep anyway,
        so a bad test list ends the command here (``SystemExit``, tzl's user-error status 2,
        the error on stderr) instead of training the folds on the test micrographs.
        """
        from topaz_lightning.errors import EXIT_USER_ERROR, InputError

        if self.test_list is None:
            return
        try:
            check_test_list(self.test_list, OmegaConf.select(config, "data.train_list"))
        except (ConfigError, InputError) as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from err

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Report the finished sweep (errors are logged, never raised: the jobs are done)."""
        try:
            self.summary = self.report(config)
        except Exception as err:  # noqa: BLE001 - a failed report must not hide the finished jobs
            log.error("sweep report failed: %s (rerun it with tzl-report sweep_dir=...)", err)
            print(f"error: sweep report failed: {err}", file=sys.stderr)
            return
        if self.refit and self.summary.get("setting"):
            try:
                self.summary["refit"] = self.run_refit(config, self.summary)
            except Exception as err:  # noqa: BLE001 - report the failure, keep the sweep
                log.error("refit failed: %s", err)
                print(f"error: refit failed: {err}", file=sys.stderr)

    def report(self, config: DictConfig) -> dict[str, Any]:
        """Build the ranking with tzl-report's machinery (its table, paired tests and choice
        rule); print it and write ``best.yaml``."""
        from topaz_lightning.report.build import build_report as report_run
        from topaz_lightning.utils.atomic import atomic_output

        sweep_dir = Path(str(config.hydra.sweep.dir))
        out_dir = Path(self.output_dir) if self.output_dir else sweep_dir / "report"
        cfg = OmegaConf.create(
            {
                "sweep_dir": str(sweep_dir),
                "group_by": self.group_by,
                "metric": self.metrics,
                "mode": self.mode,
                "rule": self.rule,
                "prefer": self.prefer,
                "alpha": self.alpha,
                "reference": None,
                "list_jobs": True,
                "sort": True,
                "output_dir": str(out_dir),
                "overwrite": self.overwrite,
            }
        )
        summary = report_run(cfg)
        choice = summary.get("choice")
        if choice is None:
            if summary.get("group_by"):
                print("No chosen setting: every group lacks the metric.")
            # nothing compared (e.g. only folds swept): the table's one row is the result
            return summary
        metric = self.metrics[0]
        setting = {k: _plain(v) for k, v in choice.setting.items()}
        comparisons = [t.text(metric) for t in summary.get("tests", [])]
        record = {
            "setting": setting,
            "rule": self.rule,
            "rule_text": choice.rule_text,
            "tie": bool(choice.tie),
            "best_mean_setting": {k: _plain(v) for k, v in choice.best.items()},
            "test": "paired t-test (scipy.stats.ttest_rel) against the best mean",
            "comparisons": comparisons,
            "metric": metric,
            "mode": self.mode,
            "mean": float(choice.row[f"{metric} mean"]),
            "std": _plain(choice.row[f"{metric} std"]),
            "n": int(choice.row[f"{metric} n"]),
            "sweep_dir": str(sweep_dir),
        }
        import yaml

        with atomic_output(out_dir / "best.yaml", overwrite=True) as tmp:
            tmp.write_text(yaml.safe_dump(record, sort_keys=False))
        summary["setting"] = setting
        return summary

    def run_refit(self, config: DictConfig, summary: dict[str, Any]) -> dict[str, Any]:
        """Train once with the chosen setting on all training micrographs (a tzl-train process)."""
        sweep_dir = Path(str(config.hydra.sweep.dir))
        run_dir = sweep_dir / "refit"
        task = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[])]
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
        swept, fixed = sweep_keys(task, params)
        overrides = refit_overrides(
            [*task, *fixed],
            summary["setting"],
            [*summary.get("group_by", []), *swept, "test_list"],
            run_dir,
            test_list=self.test_list,
            no_best_checkpoint=OmegaConf.select(config, "callbacks.best_checkpoint") is not None,
        )
        cmd = [sys.executable, "-m", "topaz_lightning.cli.train", *overrides]
        print("Refit on all training micrographs: tzl-train " + shlex.join(overrides), flush=True)
        result = subprocess.run(cmd, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"tzl-train exited with status {result.returncode} ({run_dir})")
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        shown = ", ".join(
            f"{k}={metrics[k]:.3f}" for k in self.metrics if isinstance(metrics.get(k), float)
        )
        print(f"Refit done: {run_dir / 'model.pt'}" + (f" ({shown})" if shown else ""))
        return {"run_dir": str(run_dir), "metrics": metrics, "overrides": overrides}


def paired_comparisons(
    jobs: Any, group_by: Sequence[str], best: dict[str, Any], metric: str
) -> list[str]:
    """The chosen setting against every other group, one line each (paired t-test over matched
    folds/seeds: :func:`topaz_lightning.report.paired_tests`)."""
    from topaz_lightning.report import paired_tests

    return ["  " + t.text(metric) for t in paired_tests(jobs, group_by, best, metric) if t.n >= 2]


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers (for YAML and override text)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, TypeError):
            return value
    return value
