"""tzl-report: aggregate a --multirun sweep of tzl-train into mean ± std tables and the best setting.

Reads every job subdirectory of ``sweep_dir`` (``.hydra/overrides.yaml``, ``config.yaml``,
``metrics.json``), groups the jobs by ``group_by`` (default: the swept keys that are not folds or
seeds), averages ``metric`` over the rest (mean, sample std, n), prints the table, names the best
group, and writes ``report.csv`` (aggregated), ``jobs.csv`` (per job) and ``report.md`` atomically
into ``output_dir`` (default ``<sweep_dir>/report``). Jobs without ``metrics.json`` (failed or
unfinished) are listed and left out.

Example usage::

    tzl-train -m hparams_search=pi_kfold ...            # -> multirun/pi_kfold/<time>/0..49
    tzl-report sweep_dir=multirun/pi_kfold/<time>       # mean val/aupr per pi over the folds
    tzl-report sweep_dir=multirun/train/<time> group_by=[objective] \\
        metric=[val/aupr,val/precision@0.9] output_dir=reports/objectives
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from topaz_lightning.cli._hydra import entry_point, require
from topaz_lightning.errors import ConfigError

log = logging.getLogger("topaz_lightning")


def _names(value, key: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, ListConfig | list | tuple):
        names = [str(v) for v in value]
    else:
        names = [str(value)]
    if not names or any(not n for n in names):
        raise ConfigError(key, f"expected a name or a list of names, got {value!r}")
    return names


def run(cfg: DictConfig) -> dict:
    """Build the report described by a composed ``report`` config; return a summary dict.

    The summary has ``table`` (the aggregated DataFrame, best first with ``sort``), ``jobs``,
    ``group_by``, ``metrics``, ``best`` (dict of the best group's keys and mean, or None),
    ``best_row`` (that group's row of ``table``), ``without_metrics`` and ``paths``.
    """
    from topaz_lightning.report import (
        aggregate,
        best_row,
        default_group_by,
        jobs_markdown,
        key_text,
        load_sweep,
        mean_std,
        rank,
        summary_markdown,
    )
    from topaz_lightning.utils.atomic import atomic_output, check_writable

    require(cfg, ("sweep_dir",), "sweep_dir=multirun/pi_kfold/<time>")
    metrics = _names(cfg.get("metric", "val/aupr"), "metric")
    if metrics is None:
        raise ConfigError("metric", "is required, e.g. metric=val/aupr")
    group_by = _names(cfg.get("group_by"), "group_by")
    out_dir = Path(str(cfg.output_dir))
    overwrite = bool(cfg.get("overwrite", False))
    paths = {name: out_dir / name for name in ("report.csv", "jobs.csv", "report.md")}
    for path in paths.values():
        check_writable(path, overwrite)

    sweep = load_sweep(cfg.sweep_dir, extra_keys=group_by or (), exclude=[out_dir])
    if group_by is None:
        group_by = default_group_by(sweep)
    table = aggregate(sweep.jobs, group_by, metrics, source=sweep.path)
    mode = str(cfg.get("mode", "max"))
    best = best_row(table, metrics[0], mode) if group_by else None
    if cfg.get("sort", False):
        table = rank(table, metrics[0], mode)

    lines = [f"# Sweep report: {sweep.path}", ""]
    lines.append(
        f"{len(sweep.jobs)} job(s) with metrics"
        + (f"; swept: {', '.join(sweep.swept)}" if sweep.swept else "; nothing swept")
        + (f"; grouped by {', '.join(group_by)}" if group_by else "")
        + "."
    )
    if sweep.without_metrics:
        lines.append(
            f"Left out: {len(sweep.without_metrics)} job(s) without metrics.json "
            f"(failed or unfinished): {', '.join(sweep.without_metrics)}."
        )
    if sweep.fixed:
        fixed = ", ".join(f"{k}={key_text(v)}" for k, v in sweep.fixed.items())
        lines.append(f"Fixed overrides: {fixed}.")
    lines += ["", summary_markdown(table, group_by, metrics), ""]
    best_info = None
    if best is not None:
        setting = ", ".join(f"{k}={key_text(best[k])}" for k in group_by)
        summary = mean_std(
            best[f"{metrics[0]} mean"], best[f"{metrics[0]} std"], int(best[f"{metrics[0]} n"])
        )
        lines.append(
            f"Best ({'highest' if mode == 'max' else 'lowest'} mean {metrics[0]}): "
            f"{setting} ({summary}, n={int(best[f'{metrics[0]} n'])})"
        )
        lines.append("")
        best_info = {k: best[k] for k in group_by} | {
            f"{metrics[0]} mean": best[f"{metrics[0]} mean"]
        }
    text = "\n".join(lines)
    print(text)
    if cfg.get("list_jobs", True):
        text += "\n## Jobs\n\n" + jobs_markdown(sweep.jobs, sweep.swept, metrics) + "\n"

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(paths["report.csv"], overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_output(paths["jobs.csv"], overwrite=overwrite) as tmp:
        sweep.jobs.to_csv(tmp, index=False)
    with atomic_output(paths["report.md"], overwrite=overwrite) as tmp:
        tmp.write_text(text)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return {
        "table": table,
        "jobs": sweep.jobs,
        "group_by": group_by,
        "metrics": metrics,
        "best": best_info,
        "best_row": best,
        "without_metrics": sweep.without_metrics,
        "paths": paths,
    }


@entry_point("report")
def main(cfg: DictConfig) -> None:
    """tzl-report entry point: see the module docstring and configs/report.yaml."""
    run(cfg)


if __name__ == "__main__":
    main()
