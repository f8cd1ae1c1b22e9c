"""Named views of a sweep for ``tzl-report view=<name>``: the paper's Table 5 and the lever table.

A view is a small record with a ``_target_`` in ``configs/view/<name>.yaml`` (its settings beside
it) and one method, ``render(sweep, cfg) -> ViewOutput``: the markdown it prints, the table it
writes as CSV and the summary it returns. ``default`` (:class:`~topaz_lightning.report.build.
SweepTableView`) is the sweep table of every report; ``table5`` (:class:`Table5View`) lays the
sweep out as the paper's Table 5, ours beside the paper's published values
(:mod:`topaz_lightning.report.paper`); ``levers`` (:class:`LeversView`) puts every lever against
its base run, paired over folds and seeds. Statistics come from :mod:`~topaz_lightning.report.stats`
(one paired t-test) and formatting from :mod:`~topaz_lightning.report.sweeps` (one mean ± std).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from topaz_lightning.errors import ConfigError
from topaz_lightning.report.paper import (
    OBJECTIVE_NAMES,
    OBJECTIVES,
    PAPER_DATASETS,
    PICK_METRICS,
    paper_value,
)
from topaz_lightning.report.stats import (
    PAIRED_TEST,
    _same,
    p_text,
    paired_tests,
    paired_ttest,
    parse_reference,
    replicate_values,
    setting_text,
)
from topaz_lightning.report.sweeps import (
    REPLICATE_KEYS,
    Sweep,
    _hashable,
    aggregate,
    default_group_by,
    key_text,
    markdown_table,
    mean_std,
)

#: replicate keys that are seeds (a lever within their spread is a tie); the rest are folds
SEED_KEYS = ("seed", "data.labeled_seed", "data.split_seed", "data.simulated_seed")


@dataclass
class ViewOutput:
    """What a view gives back: ``text`` (markdown, printed and written as ``<name>.md``),
    ``table`` (written as ``<name>.csv``) and ``summary`` (returned by ``build_report``)."""

    text: str
    table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _metrics(cfg) -> list[str]:
    value = cfg.get("metric", "val/aupr")
    names = [str(v) for v in value] if not isinstance(value, str) else [value]
    if not names or any(not n for n in names):
        raise ConfigError("metric", f"expected a name or a list of names, got {value!r}")
    return names


def _label_text(value: Any) -> str:
    """A label count as the paper writes it: ``10``, ``100``, ``all``."""
    value = _hashable(value)
    if value is None or str(value) in ("null", "None", "all"):
        return "all"
    return key_text(int(value)) if isinstance(value, int | float) else str(value)


def _label_value(value: Any) -> int | None:
    value = _hashable(value)
    if value is None or str(value) in ("null", "None", "all"):
        return None
    return int(value)


def _objective_name(value: Any) -> str:
    """``ge_binomial`` for an objective override; a composed objective node by its target."""
    if isinstance(value, dict):
        target = str(value.get("_target_", "?"))
        return target.rsplit(".", 1)[-1]
    return str(value)


@dataclass
class Table5View:
    """The paper's Table 5: AUPR and precision at recall 0.25-0.9 by number of labeled particles x
    objective, mean ± std (n) over the replicates, the paper's AUPR beside ours with the
    difference, each objective against the best of its label count (paired t-test over matched
    seeds and labeled subsets) and whether the paper's ordering of the objectives holds.

    ``objective_key`` / ``labels_key``: the keys that hold the objective and the label count (an
    override, or the job's config); ``metric_prefix``: our metric names are ``<prefix><paper
    metric>`` (``val/aupr``, ``val/precision@0.9``); ``paper_table`` / ``paper_dataset``: which
    published values to show (:data:`~topaz_lightning.report.paper.PAPER_VALUES`).
    """

    name: str = "table5"
    objective_key: str = "objective"
    labels_key: str = "data.num_labeled"
    metric_prefix: str = "val/"
    paper_table: str = "table5"
    paper_dataset: str = "empiar10096"
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.paper_dataset not in PAPER_DATASETS:
            raise ConfigError(
                "view.paper_dataset",
                f"must be one of {', '.join(PAPER_DATASETS)}, got {self.paper_dataset!r}",
            )

    @property
    def extra_keys(self) -> list[str]:
        return [self.objective_key, self.labels_key]

    def render(self, sweep: Sweep, cfg) -> ViewOutput:
        jobs = sweep.jobs.copy()
        jobs["objective_name"] = jobs[self.objective_key].map(_objective_name)
        jobs["labeled"] = jobs[self.labels_key].map(_label_text)
        ours = [f"{self.metric_prefix}{m}" for m in PICK_METRICS]
        present = [m for m in ours if m in jobs.columns and jobs[m].notna().any()]
        if ours[0] not in present:
            raise ConfigError(
                "view", f"table5 needs {ours[0]} in the jobs' metrics.json ({sweep.path})"
            )
        keys = ["labeled", "objective_name"]
        table = aggregate(jobs, keys, present, source=sweep.path)
        order = {o: i for i, o in enumerate(OBJECTIVES)}
        table["_n"] = table["labeled"].map(lambda v: math.inf if v == "all" else float(v))
        table["_o"] = table["objective_name"].map(lambda o: order.get(o, len(order)))
        table = table.sort_values(["_n", "_o"], kind="stable").drop(columns=["_n", "_o"])
        aupr = ours[0]
        rows, csv_rows, notes, orderings = [], [], [], []
        for labeled, part in table.groupby("labeled", sort=False):
            sub = jobs[jobs["labeled"] == labeled]
            best = part.loc[part[f"{aupr} mean"].idxmax()]
            tests = {
                t.setting["objective_name"]: t
                for t in paired_tests(
                    sub, ["objective_name"], {"objective_name": best["objective_name"]}, aupr
                )
            }
            for _, row in part.iterrows():
                objective = row["objective_name"]
                paper = paper_value(
                    self.paper_table, self.paper_dataset, _label_value(labeled), objective, "aupr"
                )
                mean = row[f"{aupr} mean"]
                diff = mean - paper[0] if paper is not None and math.isfinite(mean) else math.nan
                test = tests.get(objective)
                if objective == best["objective_name"]:
                    vs_best = "best"
                elif test is None or not test.n:
                    vs_best = "-"
                else:
                    vs_best = f"{-test.mean_diff:+.3f} (p={p_text(test.p)}, {test.n} pairs)"
                rows.append(
                    [
                        labeled,
                        OBJECTIVE_NAMES.get(objective, objective),
                        mean_std(mean, row[f"{aupr} std"], int(row[f"{aupr} n"])),
                        _paper_text(paper),
                        "-" if not math.isfinite(diff) else f"{diff:+.3f}",
                        *(
                            mean_std(row[f"{m} mean"], row[f"{m} std"], int(row[f"{m} n"]))
                            if m in present
                            else "-"
                            for m in ours[1:]
                        ),
                        str(int(row[f"{aupr} n"])),
                        vs_best,
                    ]
                )
                csv_rows.append(
                    {
                        "labeled": labeled,
                        "objective": objective,
                        **{c: row[c] for c in row.index if "/" in c},
                        "paper aupr mean": paper[0] if paper else math.nan,
                        "paper aupr std": paper[1] if paper and paper[1] is not None else math.nan,
                        "aupr - paper": diff,
                        "vs best": vs_best,
                    }
                )
            orderings.append(self._ordering(labeled, part, aupr))
        paper_name = PAPER_DATASETS[self.paper_dataset]
        header = [
            "labeled particles",
            "objective",
            "AUPR (ours)",
            f"AUPR (paper, {paper_name})",
            "Δ AUPR (ours - paper)",
            *(f"P@R {m.split('@')[1]}" for m in PICK_METRICS[1:]),
            "n",
            "Δ AUPR vs the best of its label count",
        ]
        notes.append(
            "Ours: mean ± sample std over n replicates (seeds / labeled subsets). Paper: its "
            f"Table 5 on {paper_name} (mean ± std over its 50 / 10 replicates). Δ vs the best: "
            f"{PAIRED_TEST} of each objective against the best mean of its label count over the "
            "matched replicates."
        )
        lines = [
            f"# Table 5 (objectives x labeled particles): {sweep.path}",
            "",
            markdown_table(header, rows),
            "",
            *notes,
            "",
            *orderings,
            "",
        ]
        summary = {"table": pd.DataFrame(csv_rows), "orderings": orderings}
        return ViewOutput("\n".join(lines), pd.DataFrame(csv_rows), summary)

    def _ordering(self, labeled: str, part: pd.DataFrame, aupr: str) -> str:
        """Whether the paper's ordering of the objectives (by mean AUPR) holds in ours."""
        ours = {r["objective_name"]: r[f"{aupr} mean"] for _, r in part.iterrows()}
        paper = {}
        for objective in ours:
            value = paper_value(
                self.paper_table, self.paper_dataset, _label_value(labeled), objective, "aupr"
            )
            if value is not None and math.isfinite(ours[objective]):
                paper[objective] = value[0]
        if len(paper) < 2:
            return f"{labeled} labels: no paper ordering to compare (fewer than 2 objectives)."
        theirs = sorted(paper, key=lambda o: -paper[o])
        mine = sorted(paper, key=lambda o: -ours[o])
        names = [OBJECTIVE_NAMES.get(o, o) for o in theirs]
        verdict = "holds" if mine == theirs else "differs"
        text = f"{labeled} labels: the paper's ordering ({' > '.join(names)}) {verdict}"
        if mine != theirs:
            text += f" (ours: {' > '.join(OBJECTIVE_NAMES.get(o, o) for o in mine)})"
        return text + "."


def _paper_text(value) -> str:
    if value is None:
        return "-"
    mean, std = value
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


@dataclass
class LeversView:
    """Every lever against its base run, paired over folds and seeds.

    A lever is one grouped key (``group_by``; default: every swept key but folds and seeds) at a
    value other than the base's (``reference``: ``key=value`` pairs; default: each key's first
    value in sweep order) with every other grouped key at the base. Its row: the mean paired
    difference in the first metric (lever - base) over the jobs matched on folds and seeds, its
    min..max, n pairs, the paired t-test's p, and the verdict: ``tie`` when |Δ| is within the
    seed spread (the base's sample std over seeds within a fold, pooled over folds), else
    better / worse (``significant`` when p < alpha). ``strata``: keys whose values each get
    their own base and levers (e.g. ``[data.num_labeled]``).
    """

    name: str = "levers"
    strata: Sequence[str] = ()
    alpha: float = 0.05

    @property
    def extra_keys(self) -> list[str]:
        return list(self.strata)

    def render(self, sweep: Sweep, cfg) -> ViewOutput:
        metrics = _metrics(cfg)
        strata = [str(s) for s in self.strata]
        mode = str(cfg.get("mode", "max"))
        group_by = cfg.get("group_by")
        levers = (
            [str(k) for k in group_by]
            if group_by is not None
            else [k for k in default_group_by(sweep) if k not in strata]
        )
        if not levers:
            raise ConfigError(
                "group_by", f"no lever: nothing is swept but folds and seeds ({sweep.path})"
            )
        jobs = sweep.jobs
        for key in [*levers, *strata]:
            if key not in jobs.columns:
                raise ConfigError("group_by", f"{key!r} is neither swept nor in the jobs' config")
        aggregate(jobs, levers, metrics, source=sweep.path)  # the metric checks
        replicate = [k for k in REPLICATE_KEYS if k in jobs.columns and k not in levers]
        if cfg.get("reference") is not None:
            table = aggregate(jobs, levers, metrics[:1])
            base = parse_reference(cfg.reference, levers, table)
        else:
            base = {k: jobs[k].iloc[0] for k in levers}
        stratum_values = (
            [dict(zip(strata, v, strict=True)) for v in _unique_rows(jobs, strata)]
            if strata
            else [{}]
        )
        rows, csv_rows = [], []
        for stratum in stratum_values:
            sub = _where(jobs, stratum)
            spread = seed_spread(sub, base, metrics[0], replicate)
            for key in levers:
                for value in _unique(sub[key]):
                    if _same(value, base[key]):
                        continue
                    lever = {**base, key: value}
                    row = self._row(sub, base, lever, metrics, replicate, spread, mode)
                    if row is None:
                        continue
                    label = f"{key}={key_text(value)} vs {key_text(base[key])}"
                    where = [setting_text(stratum)] if strata else []
                    rows.append([label, *where, *row["cells"]])
                    csv_rows.append({"lever": label, **stratum, **row["record"]})
        metric = metrics[0]
        header = [
            "lever (vs base)",
            *(["stratum"] if strata else []),
            f"Δ {metric} mean",
            "min..max",
            "n",
            "p",
            "verdict",
            *(f"Δ {m}" for m in metrics[1:]),
        ]
        over = ", ".join(replicate) or "no fold or seed"
        lines = [
            f"# Levers against the base run: {sweep.path}",
            "",
            f"Base: {setting_text(base)}.",
            "",
            markdown_table(header, rows) if rows else "No lever has jobs matched with the base.",
            "",
            f"Δ: mean paired difference (lever - base) over the jobs matched on {over}; min..max "
            f"over the pairs; n pairs; p: {PAIRED_TEST}. Verdict: tie when |Δ| is within the "
            "seed spread (the base's sample std over seeds within a fold, pooled over folds), "
            f"else better/worse, 'significant' when p < {self.alpha:g}.",
            "",
        ]
        table = pd.DataFrame(csv_rows)
        return ViewOutput("\n".join(lines), table, {"table": table, "base": base})

    def _row(self, jobs, base, lever, metrics, replicate, spread, mode) -> dict | None:
        a = replicate_values(jobs, lever, metrics[0], replicate)
        b = replicate_values(jobs, base, metrics[0], replicate)
        pairs = [k for k in a if k in b]
        if not pairs:
            return None
        diffs = np.array([a[k] - b[k] for k in pairs])
        mean_diff, _, p, n = paired_ttest(a, b)
        sign = 1.0 if mode == "max" else -1.0
        if math.isfinite(spread) and abs(mean_diff) <= spread:
            verdict = f"tie (seed spread {spread:.3f})"
        else:
            verdict = "better" if sign * mean_diff > 0 else "worse"
            verdict += (
                ", significant" if math.isfinite(p) and p < self.alpha else ", not significant"
            )
        others = []
        record = {
            f"Δ {metrics[0]}": float(mean_diff),
            "min": float(diffs.min()),
            "max": float(diffs.max()),
            "n": int(n),
            "p": p,
            "seed spread": spread,
            "verdict": verdict,
        }
        for m in metrics[1:]:
            d = paired_ttest(
                replicate_values(jobs, lever, m, replicate),
                replicate_values(jobs, base, m, replicate),
            )[0]
            others.append("-" if not math.isfinite(d) else f"{d:+.3f}")
            record[f"Δ {m}"] = d
        cells = [
            f"{mean_diff:+.3f}",
            f"{diffs.min():+.3f}..{diffs.max():+.3f}",
            str(n),
            p_text(p),
            verdict,
            *others,
        ]
        return {"cells": cells, "record": record}


def seed_spread(jobs: pd.DataFrame, base: dict, metric: str, replicate: Sequence[str]) -> float:
    """The base setting's spread over seeds: the sample std over the seed keys within each fold
    (every other replicate key), pooled over folds (root mean variance); NaN without 2 seeds."""
    seeds = [k for k in replicate if k in SEED_KEYS and jobs[k].map(_hashable).nunique() > 1]
    if not seeds:
        return math.nan
    folds = [k for k in replicate if k not in seeds]
    values = replicate_values(jobs, base, metric, [*folds, *seeds])
    groups: dict[tuple, list[float]] = {}
    for key, value in values.items():
        groups.setdefault(key[: len(folds)], []).append(value)
    variances = [np.var(v, ddof=1) for v in groups.values() if len(v) > 1]
    return float(math.sqrt(np.mean(variances))) if variances else math.nan


def _unique(column: pd.Series) -> list:
    seen, out = set(), []
    for value in column:
        key = _hashable(value)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _unique_rows(jobs: pd.DataFrame, keys: Sequence[str]) -> list[tuple]:
    return _unique(jobs[list(keys)].apply(lambda r: tuple(_hashable(v) for v in r), axis=1))


def _where(jobs: pd.DataFrame, setting: dict) -> pd.DataFrame:
    mask = np.ones(len(jobs), dtype=bool)
    for key, value in setting.items():
        mask &= jobs[key].map(lambda v, value=value: _same(v, value)).to_numpy(dtype=bool)
    return jobs[mask]
