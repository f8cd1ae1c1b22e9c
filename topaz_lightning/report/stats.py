"""Statistics of a sweep's jobs: one paired t-test, paired comparisons, the choice rules.

The jobs of one setting are matched with another setting's on the replicate keys (folds, seeds:
``REPLICATE_KEYS``), compared by a paired t-test (:func:`paired_tests`), and a stated rule
picks a setting from the ranking (:func:`choose`: best mean, one-standard-error rule, or the
preferred setting not significantly worse than the best), with a "tie" verdict when no setting
is significantly worse than the best.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from topaz_lightning.errors import ConfigError
from topaz_lightning.report.sweeps import (
    REPLICATE_KEYS,
    _hashable,
    best_row,
    key_text,
    mean_std,
    parse_override,
)

#: the test every paired comparison uses, as printed under each table
PAIRED_TEST = "paired t-test (scipy.stats.ttest_rel, two-sided)"
#: the rules that pick a setting from a ranking (see :func:`choose`)
CHOICE_RULES = ("best", "one_se", "not_worse")


def finite_values(values: Iterable[Any]) -> list[float]:
    """The values that are finite numbers (None, NaN and non-numbers dropped)."""
    out = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out.append(number)
    return out


def mean_std_of(values: Iterable[Any], digits: int = 3) -> str:
    """:func:`mean_std` of a list of values (sample std, ddof 1; non-finite values dropped)."""
    finite = finite_values(values)
    if not finite:
        return "-"
    array = np.asarray(finite)
    std = float(array.std(ddof=1)) if len(finite) > 1 else math.nan
    return mean_std(float(array.mean()), std, len(finite), digits)


def p_text(p: float | None) -> str:
    """A p-value for a table: ``0.031``, ``2.1e-05``, ``-`` when undefined."""
    if p is None or not math.isfinite(p):
        return "-"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def paired_ttest(a: dict[Any, float], b: dict[Any, float]) -> tuple[float, float, float, int]:
    """Paired t-test of two settings over their matched replicates (same key in ``a`` and ``b``).

    ``a`` and ``b`` map a replicate (a fold, a seed, a tuple of them) to a metric value; only
    replicates finite in both count. Returns ``(mean difference a - b, t, two-sided p, n
    pairs)``; t and p are NaN with fewer than 2 pairs or when every difference is the same (the
    test is undefined there, scipy would divide by zero).
    """
    from scipy.stats import ttest_rel

    keys = [k for k in a if k in b and len(finite_values([a[k], b[k]])) == 2]
    n = len(keys)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    x = np.array([float(a[k]) for k in keys])
    y = np.array([float(b[k]) for k in keys])
    diff = x - y
    mean_diff = float(diff.mean())
    if n < 2 or float(diff.max() - diff.min()) <= 1e-12 * max(1.0, abs(mean_diff)):
        return mean_diff, math.nan, math.nan, n
    result = ttest_rel(x, y)
    return mean_diff, float(result.statistic), float(result.pvalue), n


@dataclass
class PairedResult:
    """One setting against the reference: mean difference (reference - other), t, p, n pairs."""

    setting: dict[str, Any]
    mean_diff: float
    t: float
    p: float
    n: int
    replicate_keys: list[str]

    def text(self, metric: str) -> str:
        """``vs data.pi=0.1: val/aupr +0.310 (paired t-test over 2 matched data.fold, p=0.021)``."""
        name = setting_text(self.setting)
        over = ", ".join(self.replicate_keys) or "replicates"
        return (
            f"vs {name}: {metric} {self.mean_diff:+.3f} (paired t-test over {self.n} matched "
            f"{over}, p={p_text(self.p)})"
        )


def setting_text(setting: dict[str, Any]) -> str:
    """``data.pi=0.03, objective=nnpu``."""
    return ", ".join(f"{k}={key_text(v)}" for k, v in setting.items())


def _same(a: Any, b: Any) -> bool:
    return _hashable(a) == _hashable(b)


def replicate_values(
    jobs: pd.DataFrame, setting: dict[str, Any], metric: str, replicate: Sequence[str]
) -> dict[tuple, float]:
    """The metric of each job of one setting, keyed by its replicate keys (fold, seeds)."""
    if metric not in jobs.columns:
        return {}
    mask = np.ones(len(jobs), dtype=bool)
    for key, value in setting.items():
        mask &= jobs[key].map(lambda v, value=value: _same(v, value)).to_numpy(dtype=bool)
    out = {}
    for _, row in jobs[mask].iterrows():
        value = finite_values([row[metric]])
        if value:
            out[tuple(_hashable(row.get(k)) for k in replicate)] = value[0]
    return out


def paired_tests(
    jobs: pd.DataFrame, group_by: Sequence[str], reference: dict[str, Any], metric: str
) -> list[PairedResult]:
    """The reference setting against every other group, paired over matched replicates.

    Jobs are matched on the replicate keys (``REPLICATE_KEYS``: folds, seeds) present in the
    jobs, so a fold that is hard for every setting does not hide a consistent difference.
    Groups with fewer than 2 matched replicates get NaN t and p (see :func:`paired_ttest`).
    """
    replicate = [k for k in REPLICATE_KEYS if k in jobs.columns and k not in group_by]
    if not replicate or metric not in jobs.columns:
        return []
    ref_values = replicate_values(jobs, reference, metric, replicate)
    out = []
    for group in jobs[list(group_by)].drop_duplicates().to_dict("records"):
        if all(_same(group[k], reference[k]) for k in group_by):
            continue
        other = replicate_values(jobs, group, metric, replicate)
        diff, t, p, n = paired_ttest(ref_values, other)
        out.append(PairedResult(group, diff, t, p, n, replicate))
    return out


def parse_reference(text: Any, group_by: Sequence[str], table: pd.DataFrame) -> dict[str, Any]:
    """``reference=`` of tzl-report as a setting of the table.

    ``data.pi=0.05`` (``key=value``, comma-separated for several keys) or, with one group key,
    the bare value ``0.05``. Raises ConfigError naming the groups when no group matches.
    """
    if isinstance(text, dict):
        setting = {str(k): v for k, v in text.items()}
    else:
        text = str(text)
        setting = {}
        parts = [p.strip() for p in text.split(",")] if "=" in text else [text]
        for part in parts:
            if "=" in part:
                key, value = parse_override(part)
            elif len(group_by) == 1:
                key, value = group_by[0], parse_override(f"x={part}")[1]
            else:
                raise ConfigError(
                    "reference", f"give key=value for each of {', '.join(group_by)}, got {text!r}"
                )
            setting[key] = value
    missing = [k for k in group_by if k not in setting]
    unknown = [k for k in setting if k not in group_by]
    if missing or unknown:
        raise ConfigError(
            "reference",
            f"must set exactly the grouped keys {', '.join(group_by)}; got {text!r}",
        )
    for _, row in table.iterrows():
        if all(_same(row[k], setting[k]) for k in group_by):
            return {k: row[k] for k in group_by}
    groups = "; ".join(setting_text({k: r[k] for k in group_by}) for _, r in table.iterrows())
    raise ConfigError("reference", f"{text!r} is none of the settings: {groups}")


@dataclass
class Choice:
    """The setting a rule picks from a ranking, with the evidence to print.

    ``best``: the highest (or lowest, mode=min) mean; ``setting``: the rule's choice;
    ``tests``: the best against every other setting (:func:`paired_tests`); ``tie``: no test
    is significant at ``alpha`` (the ranking does not separate the settings).
    """

    rule: str
    setting: dict[str, Any]
    best: dict[str, Any]
    row: pd.Series
    best_row: pd.Series
    tests: list[PairedResult]
    alpha: float
    tie: bool
    rule_text: str

    def lines(self, metric: str) -> list[str]:
        """The choice as printed: setting, score, n, rule, test and the tie verdict."""
        score = mean_std(
            self.row[f"{metric} mean"], self.row[f"{metric} std"], int(self.row[f"{metric} n"])
        )
        out = [
            f"Chosen: {setting_text(self.setting)} (mean {metric} {score}, "
            f"n={int(self.row[f'{metric} n'])}) by {self.rule_text}."
        ]
        tested = [t for t in self.tests if math.isfinite(t.p)]
        chosen = next(
            (t for t in self.tests if all(_same(t.setting[k], v) for k, v in self.setting.items())),
            None,
        )
        if chosen is not None:
            # the rule's choice is not the best mean: say how far below it is, on the same test
            verdict = (
                "significantly worse on the paired test, though within the rule's margin"
                if math.isfinite(chosen.p) and chosen.p < self.alpha
                else "not significantly different"
            )
            out.append(
                f"The choice against the best mean ({setting_text(self.best)}): {metric} "
                f"{-chosen.mean_diff:+.3f}, p={p_text(chosen.p)} over {chosen.n} pairs: {verdict}."
            )
        if not self.tests:
            out.append("No paired test: the jobs share no fold or seed to match on.")
        elif self.tie:
            n = sorted({t.n for t in tested}) or [0]
            out.append(
                f"tie: the best mean ({setting_text(self.best)}) is not significantly better than "
                f"any other setting ({PAIRED_TEST}, n={'/'.join(map(str, n))} matched pairs, "
                f"alpha={self.alpha:g}); the choice is a tie, not a finding."
            )
        else:
            worse = [t for t in tested if t.p < self.alpha]
            out.append(
                f"{len(worse)} of {len(self.tests)} other setting(s) significantly worse than the "
                f"best mean ({setting_text(self.best)}; {PAIRED_TEST}, alpha={self.alpha:g})."
            )
        return out


def choose(
    table: pd.DataFrame,
    jobs: pd.DataFrame,
    group_by: Sequence[str],
    metric: str,
    mode: str = "max",
    rule: str = "best",
    alpha: float = 0.05,
    prefer: str = "smallest",
) -> Choice | None:
    """Pick a setting from the aggregated ``table`` by a stated rule; None if no group scores.

    ``best``: the best mean. ``one_se`` (one-standard-error rule): among the settings whose
    mean is within one standard error (std / sqrt(n)) of the best mean, the ``prefer``-most by
    the first grouped key. ``not_worse``: among the best and the settings not significantly worse
    than it (paired test, p >= ``alpha``), the ``prefer``-most. ``prefer``: ``smallest`` or
    ``largest`` value of the first grouped key (numbers only; otherwise the best mean is kept).
    """
    if rule not in CHOICE_RULES:
        raise ConfigError("rule", f"must be one of {', '.join(CHOICE_RULES)}, got {rule!r}")
    if prefer not in ("smallest", "largest"):
        raise ConfigError("prefer", f"must be smallest or largest, got {prefer!r}")
    if not 0 < float(alpha) < 1:
        raise ConfigError("alpha", f"must be in (0, 1), got {alpha}")
    top = best_row(table, metric, mode)
    if top is None or not group_by:
        return None
    best = {k: top[k] for k in group_by}
    tests = paired_tests(jobs, group_by, best, metric)
    tie = all(not (math.isfinite(t.p) and t.p < alpha) for t in tests) and bool(tests)
    sign = 1.0 if mode == "max" else -1.0
    if rule == "best":
        candidates = [top]
        text = f"the rule 'best' ({'highest' if mode == 'max' else 'lowest'} mean {metric})"
    elif rule == "one_se":
        n = int(top[f"{metric} n"])
        se = float(top[f"{metric} std"]) / math.sqrt(n) if n > 1 else math.nan
        if not math.isfinite(se):
            se = 0.0
        bound = float(top[f"{metric} mean"]) - sign * se
        candidates = [
            row
            for _, row in table.iterrows()
            if math.isfinite(float(row[f"{metric} mean"]))
            and sign * (float(row[f"{metric} mean"]) - bound) >= 0
        ]
        text = (
            f"the one-standard-error rule (the {prefer} {group_by[0]} with mean within one "
            f"standard error, {se:.3f}, of the best mean)"
        )
    else:
        not_worse = [
            t.setting for t in tests if not (math.isfinite(t.p) and t.p < alpha) and t.n >= 2
        ]
        candidates = [top] + [
            row
            for _, row in table.iterrows()
            if any(all(_same(row[k], s[k]) for k in group_by) for s in not_worse)
        ]
        text = (
            f"the rule 'not_worse' (the {prefer} {group_by[0]} not significantly worse than the "
            f"best mean: {PAIRED_TEST}, p >= {alpha:g}, at least 2 pairs)"
        )
    first = group_by[0]
    if len(candidates) > 1 and all(
        isinstance(c[first], int | float | np.integer | np.floating)
        and not isinstance(c[first], bool)
        for c in candidates
    ):
        pick = (min if prefer == "smallest" else max)(candidates, key=lambda c: float(c[first]))
    else:
        pick = top
    setting = {k: pick[k] for k in group_by}
    return Choice(rule, setting, best, pick, top, tests, float(alpha), tie, text)
