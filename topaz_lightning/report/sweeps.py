"""Gather the jobs of a Hydra --multirun sweep into a table of swept settings and final metrics.

A sweep directory (``multirun/<task>/<time>/``) holds one subdirectory per job. Each job has
``.hydra/overrides.yaml`` (the ``key=value`` overrides that define the point), a run config
(``config.yaml`` written by every tzl command, or Hydra's ``.hydra/config.yaml``) and the
``metrics.json`` that ``tzl-train`` writes at the end. :func:`load_sweep` reads them into one row
per job; :func:`aggregate` averages a metric over the keys that are not grouped (folds,
replicates) as mean, sample standard deviation (ddof 1) and count; :func:`best_row` names the
best group (e.g. the pi with the highest mean ``val/aupr`` over the folds of a k-fold sweep).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from topaz_lightning.errors import ConfigError, InputError

log = logging.getLogger("topaz_lightning")

# swept keys that are repetitions of one setting, averaged over by default
REPLICATE_KEYS = (
    "data.fold",
    "data.labeled_seed",
    "seed",
    "data.split_seed",
    "data.simulated_seed",
)
# the job's run config: tzl's resolved copy first, Hydra's own record otherwise
CONFIG_FILES = ("config.yaml", ".hydra/config.yaml")
#: the subdirectory where the sweep callback refits the chosen setting on every training
#: micrograph: not a job of the sweep, reported as its own row
REFIT_DIR = "refit"


@dataclass
class Sweep:
    """The jobs of one sweep directory.

    ``jobs``: one row per job with a ``job`` column (subdirectory name), one column per override
    key (values parsed as YAML scalars) and one per numeric metric of ``metrics.json``.
    ``swept``: override keys whose value differs between jobs (in command-line order).
    ``fixed``: override keys with one value in every job. ``without_metrics``: job directories
    that have no ``metrics.json`` (crashed or still running); they are left out of ``jobs``.
    ``metric_names``: every metric seen. ``refit``: the ``refit/`` run of the sweep callback
    (``{"path", "overrides", "metrics"}``), or None; it is never one of the jobs.
    """

    path: Path
    jobs: pd.DataFrame
    swept: list[str]
    fixed: dict[str, Any]
    without_metrics: list[str] = field(default_factory=list)
    metric_names: list[str] = field(default_factory=list)
    refit: dict[str, Any] | None = None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"not valid YAML ({err})", path=path) from err
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror})", path=path) from err


def parse_override(text: str, path: str | os.PathLike | None = None) -> tuple[str, Any]:
    """Split a Hydra override ``key=value`` into the key (without ``+``/``++``/``~``) and its value.

    The value is parsed as a YAML scalar (``0.01`` -> float, ``pn`` -> str, ``null`` -> None);
    a value that is not plain YAML (e.g. ``range(5)``) stays a string.
    """
    if "=" not in text:
        raise InputError(f"override {text!r} is not key=value", path=path)
    key, value = text.split("=", 1)
    key = key.lstrip("+~").strip()
    # Hydra escapes interpolations when it records overrides (${seed} is saved with \{ \})
    value = value.replace("\\{", "{").replace("\\}", "}")
    if key.startswith("hydra.") or key.startswith("hydra/"):
        return key, value
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, dict | list):
        parsed = value
    return key, parsed


def _lookup(config: Any, dotted: str) -> Any:
    """Value at ``a.b.c`` in nested dicts; KeyError if absent."""
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _is_job_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / ".hydra" / "overrides.yaml").is_file()
        or (path / "metrics.json").is_file()
        or any((path / name).is_file() for name in CONFIG_FILES)
    )


def _job_sort_key(path: Path) -> tuple:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def _numeric_metrics(metrics: Any, path: Path) -> dict[str, float]:
    if not isinstance(metrics, dict):
        raise InputError("expected a JSON object of metric: value", path=path)
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[str(key)] = float(value)
    return out


def load_sweep(
    sweep_dir: str | os.PathLike,
    extra_keys: Iterable[str] = (),
    exclude: Iterable[str | os.PathLike] = (),
) -> Sweep:
    """Read every job of a multirun sweep directory (see the module docstring).

    ``extra_keys``: config keys (dotted, e.g. ``data.pi``) to add as columns even if they were
    not overridden (looked up in each job's run config). ``exclude``: directories to skip (e.g.
    the report's own output directory). Raises InputError if the directory is missing or holds
    no job, or if every job lacks ``metrics.json``.
    """
    root = Path(sweep_dir)
    if not root.exists():
        raise InputError("sweep directory does not exist", path=root)
    if not root.is_dir():
        raise InputError("is not a directory (expected multirun/<task>/<time>/)", path=root)
    skip = {Path(p).resolve() for p in exclude}
    job_dirs = sorted(
        (
            p
            for p in root.iterdir()
            if _is_job_dir(p) and p.resolve() not in skip and p.name != REFIT_DIR
        ),
        key=_job_sort_key,
    )
    if not job_dirs:
        raise InputError(
            "no job subdirectories (with .hydra/overrides.yaml, config.yaml or metrics.json); "
            "point sweep_dir at multirun/<task>/<time>/",
            path=root,
        )
    extra_keys = list(extra_keys)
    rows: list[dict[str, Any]] = []
    order: list[str] = []
    without: list[str] = []
    metric_names: list[str] = []
    for job in job_dirs:
        metrics_path = job / "metrics.json"
        if not metrics_path.is_file():
            without.append(job.name)
            continue
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
            raise InputError(f"not valid JSON ({err})", path=metrics_path) from err
        metrics = _numeric_metrics(metrics, metrics_path)
        row: dict[str, Any] = {"job": job.name}
        overrides_path = job / ".hydra" / "overrides.yaml"
        if overrides_path.is_file():
            overrides = _read_yaml(overrides_path) or []
            if not isinstance(overrides, list):
                raise InputError("expected a list of key=value overrides", path=overrides_path)
            for text in overrides:
                key, value = parse_override(str(text), overrides_path)
                if key.startswith("hydra"):
                    continue
                row[key] = value
                if key not in order:
                    order.append(key)
        if extra_keys:
            config = None
            for name in CONFIG_FILES:
                if (job / name).is_file():
                    config = _read_yaml(job / name)
                    break
            for key in extra_keys:
                if key in row:
                    continue
                try:
                    row[key] = _lookup(config, key) if config is not None else None
                except KeyError:
                    row[key] = None
        for key, value in metrics.items():
            if key in row:
                key = f"metric:{key}"
            row[key] = value
            if key not in metric_names:
                metric_names.append(key)
        rows.append(row)
    if without:
        log.warning(
            "%d job(s) of %s have no metrics.json (failed or unfinished) and are left out: %s",
            len(without),
            root,
            ", ".join(without),
        )
    if not rows:
        raise InputError(
            f"none of the {len(job_dirs)} job(s) has a metrics.json (written by tzl-train at the "
            f"end of a run): {', '.join(without)}",
            path=root,
        )
    jobs = pd.DataFrame(rows)
    swept, fixed = [], {}
    for key in order:
        values = jobs[key].map(_hashable).unique() if key in jobs else []
        if len(values) > 1:
            swept.append(key)
        elif len(values) == 1:
            fixed[key] = jobs[key].iloc[0]
    for key in extra_keys:
        if key not in swept and key not in fixed and key in jobs:
            if jobs[key].map(_hashable).nunique(dropna=False) > 1:
                swept.append(key)
            else:
                fixed[key] = jobs[key].iloc[0]
    return Sweep(root, jobs, swept, fixed, without, metric_names, _read_refit(root / REFIT_DIR))


def _read_refit(path: Path) -> dict[str, Any] | None:
    """The refit run of a sweep (overrides and numeric metrics), None if absent or unfinished."""
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        return None
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"not valid JSON ({err})", path=metrics_path) from err
    overrides: dict[str, Any] = {}
    overrides_path = path / ".hydra" / "overrides.yaml"
    if overrides_path.is_file():
        for text in _read_yaml(overrides_path) or []:
            key, value = parse_override(str(text), overrides_path)
            if not key.startswith("hydra"):
                overrides[key] = value
    return {
        "path": path,
        "overrides": overrides,
        "metrics": _numeric_metrics(metrics, metrics_path),
    }


def _hashable(value: Any) -> Any:
    if isinstance(value, list | dict):
        return repr(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def default_group_by(sweep: Sweep) -> list[str]:
    """The swept keys that are not replicates (folds, seeds): what the table compares."""
    return [key for key in sweep.swept if key not in REPLICATE_KEYS]


def aggregate(
    jobs: pd.DataFrame,
    group_by: Sequence[str],
    metrics: Sequence[str],
    source: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Mean, sample std (ddof 1; NaN for one value) and count of each metric per group.

    Columns: the ``group_by`` keys, then ``<metric> mean``, ``<metric> std``, ``<metric> n`` per
    metric (``n`` counts the jobs where the metric is finite). With no ``group_by`` keys all jobs
    form one group. Groups appear in order of first appearance. Raises ConfigError for a group
    key or metric that no job has.
    """
    group_by = list(group_by)
    for key in group_by:
        if key not in jobs.columns:
            raise ConfigError(
                "group_by",
                f"{key!r} is neither swept nor in the jobs' config"
                + (f" ({source})" if source else ""),
            )
    for metric in metrics:
        if metric not in jobs.columns or not jobs[metric].notna().any():
            available = sorted(
                c for c in jobs.columns if c not in group_by and c != "job" and "/" in c
            )
            raise ConfigError(
                "metric",
                f"{metric!r} is in no job's metrics.json"
                + (f" under {source}" if source else "")
                + f"; available: {', '.join(available) or 'none'}",
            )
    if group_by:
        grouped = jobs[group_by].apply(lambda r: tuple(_hashable(v) for v in r), axis=1)
    else:
        grouped = pd.Series([()] * len(jobs), index=jobs.index, dtype=object)
    out_rows = []
    for group in dict.fromkeys(grouped):
        part = jobs[grouped.map(lambda g, group=group: g == group)]
        row: dict[str, Any] = {key: part[key].iloc[0] for key in group_by}
        for metric in metrics:
            values = pd.to_numeric(part[metric], errors="coerce").to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            n = len(values)
            row[f"{metric} mean"] = float(values.mean()) if n else math.nan
            row[f"{metric} std"] = float(values.std(ddof=1)) if n > 1 else math.nan
            row[f"{metric} n"] = n
        out_rows.append(row)
    return pd.DataFrame(out_rows)


def best_row(table: pd.DataFrame, metric: str, mode: str = "max") -> pd.Series | None:
    """The group with the highest (``mode="max"``) or lowest mean ``metric``; None if all NaN."""
    if mode not in ("max", "min"):
        raise ConfigError("mode", f"must be max or min, got {mode!r}")
    column = table[f"{metric} mean"]
    if not column.notna().any():
        return None
    return table.loc[column.idxmax() if mode == "max" else column.idxmin()]


def rank(table: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """The groups ordered best first by mean ``metric`` (NaN last; ties keep the sweep order)."""
    if mode not in ("max", "min"):
        raise ConfigError("mode", f"must be max or min, got {mode!r}")
    return table.sort_values(
        f"{metric} mean", ascending=(mode == "min"), na_position="last", kind="stable"
    ).reset_index(drop=True)


def format_value(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded, None/NaN as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return "-"
        return f"{value:.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:.2g}"
    return str(value)


def mean_std(mean: float, std: float, n: int, digits: int = 3) -> str:
    """``0.335 ± 0.072`` (std omitted when there is one value, ``-`` when there is none)."""
    if n == 0 or not math.isfinite(mean):
        return "-"
    if n == 1 or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (cells formatted with :func:`format_value`)."""
    cells = [[format_value(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def summary_markdown(
    table: pd.DataFrame,
    group_by: Sequence[str],
    metrics: Sequence[str],
    extra_columns: Sequence[str] = (),
) -> str:
    """The aggregated table as markdown: group keys, ``mean ± std`` per metric, n, and the
    ``extra_columns`` of ``table`` (e.g. the paired test against the reference)."""
    header = list(group_by) + [f"{m} (mean ± std)" for m in metrics] + ["n", *extra_columns]
    rows = []
    for _, row in table.iterrows():
        cells = [key_text(row[key]) for key in group_by]
        cells += [mean_std(row[f"{m} mean"], row[f"{m} std"], int(row[f"{m} n"])) for m in metrics]
        cells.append(str(max(int(row[f"{m} n"]) for m in metrics)))
        cells += [str(row[c]) for c in extra_columns]
        rows.append(cells)
    return markdown_table(header, rows)


def key_text(value: Any) -> str:
    """A setting as written on the command line (``0.01``, not ``0.010``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def jobs_markdown(jobs: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> str:
    """One row per job: its subdirectory, the swept keys and the metrics."""
    header = ["job", *keys, *metrics]
    rows = [
        [row.get("job"), *(key_text(row.get(k)) for k in keys), *(row.get(m) for m in metrics)]
        for _, row in jobs.iterrows()
    ]
    return markdown_table(header, rows)
