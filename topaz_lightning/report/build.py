"""Build the report of a sweep directory through its view; the default view is the sweep table.

The task behind ``tzl-report`` (``cli/report.py`` is its entry point) and the sweep callback
(``callbacks/sweep.py``): one function, :func:`build_report`, from a ``report`` config. The
default view (:class:`SweepTableView`): the table, paired tests, the choice and the refit line;
the named views are in :mod:`topaz_lightning.report.views`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from topaz_lightning.errors import ConfigError
from topaz_lightning.report.stats import (
    PAIRED_TEST,
    choose,
    p_text,
    paired_tests,
    parse_reference,
    setting_text,
)
from topaz_lightning.report.sweeps import (
    aggregate,
    best_row,
    default_group_by,
    format_value,
    jobs_markdown,
    key_text,
    load_sweep,
    mean_std,
    rank,
    summary_markdown,
)
from topaz_lightning.report.views import ViewOutput
from topaz_lightning.utils.atomic import atomic_output, check_writable

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


def make_view(cfg: DictConfig):
    """The view of a ``report`` config: ``cfg.view`` (a node with ``_target_``, from
    ``configs/view/<name>.yaml``) instantiated, or the default sweep table when there is none."""
    node = cfg.get("view")
    if node is None:
        return SweepTableView()
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError("view", f"expected a view of configs/view/ (view=levers), got {node!r}")
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        view = instantiate(node, _convert_="all")
    except InstantiationException as err:
        # the view's own check (a ConfigError naming its key) is the message, not Hydra's wrapper
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise ConfigError("view", str(err)) from err
    if not callable(getattr(view, "render", None)) or not getattr(view, "name", None):
        raise ConfigError("view", f"{node._target_} is not a report view (name, render)")
    return view


def build_report(cfg: DictConfig) -> dict:
    """Build the report described by a composed ``report`` config; return a summary dict.

    The view (``view=default|table5|levers``, :func:`make_view`) renders the sweep; this writes
    its table as ``<name>.csv``, its text (and with ``list_jobs`` every job) as ``<name>.md`` and
    the jobs as ``jobs.csv`` (a named view: ``<name>_jobs.csv``, so it sits beside the default
    report) into ``output_dir``, atomically. The default view's summary has
    ``table`` (the aggregated DataFrame, best first with ``sort``, with the paired-test columns),
    ``jobs``, ``group_by``, ``metrics``, ``best`` (dict of the best-mean group's keys and mean, or
    None), ``best_row``, ``choice`` (:class:`topaz_lightning.report.Choice` of ``rule``, or
    None), ``reference``, ``tests``, ``refit`` (the refit run, or None), ``without_metrics``;
    every view's adds ``view`` and ``paths``.
    """
    if OmegaConf.is_missing(cfg, "sweep_dir") or cfg.get("sweep_dir") in (None, ""):
        raise ConfigError("sweep_dir", "is required, e.g. sweep_dir=multirun/pi_kfold/<time>")
    view = make_view(cfg)
    if _names(cfg.get("metric", "val/aupr"), "metric") is None:
        raise ConfigError("metric", "is required, e.g. metric=val/aupr")
    group_by = _names(cfg.get("group_by"), "group_by")
    out_dir = Path(str(cfg.output_dir))
    overwrite = bool(cfg.get("overwrite", False))
    # a named view beside the default report (the sweep callback's) in the same directory
    jobs_name = "jobs.csv" if view.name == SweepTableView.name else f"{view.name}_jobs.csv"
    names = (f"{view.name}.csv", jobs_name, f"{view.name}.md")
    paths = {name: out_dir / name for name in names}
    for path in paths.values():
        check_writable(path, overwrite)
    extra = [*(group_by or ()), *getattr(view, "extra_keys", ())]
    sweep = load_sweep(cfg.sweep_dir, extra_keys=dict.fromkeys(extra), exclude=[out_dir])
    out = view.render(sweep, cfg)
    print(out.text)
    text = out.text
    if cfg.get("list_jobs", True):
        metrics = _names(cfg.get("metric", "val/aupr"), "metric")
        shown = [m for m in metrics if m in sweep.jobs.columns]
        text += "\n## Jobs\n\n" + jobs_markdown(sweep.jobs, sweep.swept, shown) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(paths[f"{view.name}.csv"], overwrite=overwrite) as tmp:
        out.table.to_csv(tmp, index=False)
    with atomic_output(paths[jobs_name], overwrite=overwrite) as tmp:
        sweep.jobs.to_csv(tmp, index=False)
    with atomic_output(paths[f"{view.name}.md"], overwrite=overwrite) as tmp:
        tmp.write_text(text)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return (
        {"jobs": sweep.jobs, "without_metrics": sweep.without_metrics}
        | out.summary
        | {
            "view": view.name,
            "paths": paths,
        }
    )


@dataclass
class SweepTableView:
    """The default view (``view=default``): mean ± std (n) per setting of ``group_by``, each
    against ``reference`` (default: the best mean) by a paired t-test, the best group, the
    choice of ``rule`` with its tie verdict, and the refit run as its own line."""

    name: str = "report"

    def render(self, sweep, cfg: DictConfig) -> ViewOutput:
        metrics = _names(cfg.get("metric", "val/aupr"), "metric")
        group_by = _names(cfg.get("group_by"), "group_by")
        if group_by is None:
            group_by = default_group_by(sweep)
        metric = metrics[0]
        table = aggregate(sweep.jobs, group_by, metrics, source=sweep.path)
        mode = str(cfg.get("mode", "max"))
        best = best_row(table, metric, mode) if group_by else None
        choice = choose(
            table,
            sweep.jobs,
            group_by,
            metric,
            mode,
            rule=str(cfg.get("rule", "best")),
            alpha=float(cfg.get("alpha", 0.05)),
            prefer=str(cfg.get("prefer", "smallest")),
        )
        reference = None
        if group_by and cfg.get("reference") is not None:
            reference = parse_reference(cfg.reference, group_by, table)
        elif best is not None:
            reference = {k: best[k] for k in group_by}
        tests = paired_tests(sweep.jobs, group_by, reference, metric) if reference else []
        if reference is not None:
            table = _with_tests(table, group_by, reference, tests, metric)
        if cfg.get("sort", False):
            table = rank(table, metric, mode)
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
        extra = ["Δ vs reference", "p", "pairs"] if reference is not None else []
        lines += ["", summary_markdown(table, group_by, metrics, extra_columns=extra), ""]
        lines.append(_table_note(reference, tests, metric, PAIRED_TEST, setting_text))
        lines.append("")
        best_info = None
        if best is not None:
            n = int(best[f"{metric} n"])
            summary = mean_std(best[f"{metric} mean"], best[f"{metric} std"], n)
            lines.append(
                f"Best ({'highest' if mode == 'max' else 'lowest'} mean {metric}): "
                f"{setting_text({k: best[k] for k in group_by})} ({summary}, n={n})"
            )
            best_info = {k: best[k] for k in group_by} | {f"{metric} mean": best[f"{metric} mean"]}
        if choice is not None:
            lines += choice.lines(metric)
        if sweep.refit is not None:
            lines.append(_refit_line(sweep.refit, metrics, group_by))
        lines.append("")
        summary = {
            "table": table,
            "group_by": group_by,
            "metrics": metrics,
            "best": best_info,
            "best_row": best,
            "choice": choice,
            "reference": reference,
            "tests": tests,
            "refit": sweep.refit,
        }
        return ViewOutput("\n".join(lines), table, summary)


def _with_tests(table, group_by, reference, tests, metric):
    """The table with the paired test of each row against the reference (its own row: ``ref``)."""
    by_setting = {tuple(str(t.setting[k]) for k in group_by): t for t in tests}
    diffs, ps, pairs = [], [], []
    for _, row in table.iterrows():
        key = tuple(str(row[k]) for k in group_by)
        if all(str(row[k]) == str(reference[k]) for k in group_by):
            diffs.append("reference")
            ps.append("-")
            pairs.append("-")
            continue
        test = by_setting.get(key)
        if test is None:
            diffs.append("-")
            ps.append("-")
            pairs.append("0")
            continue
        # other - reference, so that a worse setting reads negative under mode=max
        diffs.append(f"{-test.mean_diff:+.3f}" if test.n else "-")
        ps.append(p_text(test.p))
        pairs.append(str(test.n))
    table = table.copy()
    table["Δ vs reference"] = diffs
    table["p"] = ps
    table["pairs"] = pairs
    return table


def _table_note(reference, tests, metric, test_name, setting_text) -> str:
    if reference is None:
        return "n: jobs per setting (no grouped key, so no paired test)."
    over = ", ".join(tests[0].replicate_keys) if tests else "no shared fold or seed"
    return (
        f"n: jobs per setting (mean ± sample std). Δ vs reference: mean paired difference in "
        f"{metric} (setting - {setting_text(reference)}); p: {test_name} over the jobs matched on "
        f"{over}; pairs: matched jobs."
    )


def _refit_line(refit, metrics, group_by) -> str:
    """The refit run as its own labelled line (its val metrics are on the test list, if any)."""
    chosen = {k: refit["overrides"][k] for k in group_by if k in refit["overrides"]}
    shown = [m for m in metrics if m in refit["metrics"]]
    if shown:
        where = (
            ", ".join(f"{m}={format_value(refit['metrics'][m])}" for m in shown)
            + " on its validation micrographs (the test list held out of the folds)"
        )
    else:
        where = "no held-out micrographs, nothing evaluated"
    return (
        f"Refit ({refit['path']}; not a job of the sweep: "
        f"{setting_text(chosen) or 'the chosen setting'} on every training micrograph): {where}."
    )
