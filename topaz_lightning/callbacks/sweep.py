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

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

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
    task_overrides: Sequence[str], best: dict[str, Any], swept: Sequence[str], run_dir: Path
) -> list[str]:
    """The tzl-train overrides of the refit: the sweep's own overrides without the swept keys and
    the sweep machinery, the chosen setting, no fold held out, and the run directory."""
    from topaz_lightning.report import key_text

    drop = set(swept) | set(best) | set(SWEEP_ONLY_KEYS)
    kept = [o for o in task_overrides if _override_key(o) not in drop]
    chosen = [f"{key}={key_text(value)}" for key, value in best.items()]
    return [*kept, *chosen, "data.num_folds=null", "data.fold=0", f"hydra.run.dir={run_dir}"]


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
    ) -> None:
        self.group_by = _names(group_by) or None
        self.metrics = _names(metric) or ["val/aupr"]
        self.mode = str(mode)
        self.refit = bool(refit)
        self.output_dir = output_dir
        self.overwrite = bool(overwrite)
        self.summary: dict[str, Any] | None = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Report the finished sweep (errors are logged, never raised: the jobs are done)."""
        try:
            self.summary = self.report(config)
        except Exception as err:  # noqa: BLE001 - a failed report must not hide the finished jobs
            log.error("sweep report failed: %s (rerun it with tzl-report sweep_dir=...)", err)
            print(f"error: sweep report failed: {err}", file=sys.stderr)
            return
        if self.refit and self.summary.get("best"):
            try:
                self.summary["refit"] = self.run_refit(config, self.summary)
            except Exception as err:  # noqa: BLE001 - report the failure, keep the sweep
                log.error("refit failed: %s", err)
                print(f"error: refit failed: {err}", file=sys.stderr)

    def report(self, config: DictConfig) -> dict[str, Any]:
        """Build the ranking with tzl-report's machinery; print it and write ``best.yaml``."""
        from topaz_lightning.cli.report import run as report_run
        from topaz_lightning.report import key_text, mean_std
        from topaz_lightning.utils.atomic import atomic_output

        sweep_dir = Path(str(config.hydra.sweep.dir))
        out_dir = Path(self.output_dir) if self.output_dir else sweep_dir / "report"
        cfg = OmegaConf.create(
            {
                "sweep_dir": str(sweep_dir),
                "group_by": self.group_by,
                "metric": self.metrics,
                "mode": self.mode,
                "list_jobs": True,
                "sort": True,
                "output_dir": str(out_dir),
                "overwrite": self.overwrite,
            }
        )
        summary = report_run(cfg)
        best = summary.get("best")
        if not best:
            print("No best setting: every group lacks the metric.")
            return summary
        metric = self.metrics[0]
        setting = {k: _plain(best[k]) for k in summary["group_by"]}
        row = summary["best_row"]
        score = mean_std(row[f"{metric} mean"], row[f"{metric} std"], int(row[f"{metric} n"]))
        chosen = ", ".join(f"{k}={key_text(v)}" for k, v in setting.items())
        print(f"Chosen: {chosen} (mean {metric} {score}, n={int(row[f'{metric} n'])})")
        comparisons = paired_comparisons(summary["jobs"], summary["group_by"], setting, metric)
        for text in comparisons:
            print(text)
        record = {
            "setting": setting,
            "comparisons": comparisons,
            "metric": metric,
            "mode": self.mode,
            "mean": float(row[f"{metric} mean"]),
            "std": _plain(row[f"{metric} std"]),
            "n": int(row[f"{metric} n"]),
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
            [*task, *fixed], summary["setting"], [*summary.get("group_by", []), *swept], run_dir
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
    """The chosen setting against every other group: paired t-test over matched replicates.

    Jobs are matched on the replicate keys they share (folds, seeds: ``REPLICATE_KEYS``), so a
    fold that is hard for every pi does not hide a consistent difference. One line per group.
    """
    import math

    from scipy.stats import ttest_rel

    from topaz_lightning.report import REPLICATE_KEYS, key_text

    replicate = [k for k in REPLICATE_KEYS if k in jobs.columns]
    if not replicate or metric not in jobs.columns:
        return []

    def values(setting: dict[str, Any]) -> dict[tuple, float]:
        mask = np.ones(len(jobs), dtype=bool)
        for key, value in setting.items():
            mask &= jobs[key].map(lambda v, value=value: v == value).to_numpy()
        part = jobs[mask]
        return {
            tuple(r[k] for k in replicate): float(r[metric])
            for _, r in part.iterrows()
            if r[metric] is not None and math.isfinite(float(r[metric]))
        }

    reference = values(best)
    lines = []
    groups = jobs[list(group_by)].drop_duplicates().to_dict("records")
    for group in groups:
        if all(group[k] == best[k] for k in group_by):
            continue
        other = values(group)
        keys = sorted(set(reference) & set(other))
        if len(keys) < 2:
            continue
        a = [reference[k] for k in keys]
        b = [other[k] for k in keys]
        diff = float(np.mean(np.subtract(a, b)))
        test = ttest_rel(a, b)
        p = float(test.pvalue)
        shown = f"{p:.3g}" if math.isfinite(p) else "-"
        name = ", ".join(f"{k}={key_text(v)}" for k, v in group.items())
        lines.append(
            f"  vs {name}: {metric} {diff:+.3f} (paired t-test over {len(keys)} matched "
            f"replicates, p={shown})"
        )
    return lines


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers (for YAML and override text)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, TypeError):
            return value
    return value
