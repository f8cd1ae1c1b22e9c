"""Regenerate the paper's tables (Tables 1-5, Supplementary Table 1) on simulated or real data, beside the paper's values.

Data: a simulator preset (``--preset``; ``empiar10096_like`` and ``shapiro_like`` only imitate the
paper's datasets' size, particle density and difficulty, ``demo``/``tiny`` are smaller still), or
a real dataset described by an experiment config (``--experiment NAME`` =
``configs/experiment/NAME.yaml``: micrographs, coordinates, the test micrographs as
``data.val_list``, downsampling, radii and pi; e.g. ``empiar10017_table5``, the 4 EMPIAR-10017
dev micrographs, 3 train / 1 test). Numbers on simulated data are not comparable with the paper's;
they show the same experiments, run the same way.

One command per table, named as in the paper (``table1`` datasets, ``table2`` EMPIAR-10096 vs
EMAN2, ``table3`` the same on the Shapiro-lab data, ``table4`` autoencoder, ``table5``
objectives, ``supp1`` region AUPR), e.g.::

    python scripts/paper_tables.py table1 --preset empiar10096_like --out tables/
    python scripts/paper_tables.py table5 --preset empiar10096_like --steps 2000 --replicates 3 \
        --out tables/
    python scripts/paper_tables.py table3 --preset shapiro_like --steps 2000 --out tables/
    python scripts/paper_tables.py table5 --experiment empiar10017_table5 --steps 1000 \
        --replicates 3 --eval val --out tables/
    python scripts/paper_tables.py table5 --experiment paper_empiar10096 \
        --train-arg data.micrographs=/data/10096/micrographs \
        --train-arg data.coordinates=/data/10096/particles.star \
        --train-arg data.val_list=/data/10096/test.txt --steps 50000 --replicates 50,10

Every table shows the paper's published value beside ours (``PAPER_VALUES``, typed from the
paper's Tables 1-5 and Supplementary Table 1): the paper's AUPR and our difference in the table,
then every metric in a comparison table, and whether the paper's ordering of the methods holds in
ours (per label count, by mean AUPR; region AUPR for ``supp1``). The paper dataset compared with
is ``--paper-dataset`` (default: Shapiro-lab for ``table3`` and for a preset or experiment whose
name has ``shapiro``, EMPIAR-10096 otherwise).

Every cell is mean ± std (n) over replicates; replicate r of every cell uses ``seed=r`` and, for
subsampled labels, the same labeled subset (``data.labeled_seed=r``), so cells of one label count
are matched and compared with paired t-tests (``scipy.stats.ttest_rel`` on AUPR; Table 5: each
method against the best one, Table 4: with vs without the autoencoder, Table 2: Topaz vs the
template-matching baseline ``EMAN2-byRef-like``, built from the same labeled particles of each
replicate). Every pairwise test is listed under the table.

Each table is a set of *cells* (objective x decoder x number of labeled particles). A cell is
one ``tzl-train --multirun`` over replicates (``seed=0..R-1``; for subsampled label sets the
label sample changes with the replicate, ``data.labeled_seed=${seed}``; for "all" labels only the
initialization and minibatches change, like the paper's 10 models on one set of 1000). Finished
cells are reused by later tables (the run directory is named by its settings). Metrics per job:
``--eval val`` reads the final held-out picking metrics that tzl-train computed on
the simulator's test micrographs (``test.txt``, with the dataset's NMS radius and matching
distance); ``--eval pick`` (default) runs tzl-pick and tzl-evaluate on the test micrographs for
each job, as the paper evaluates. The two agree closely but not exactly (tzl-pick fits the GMM
normalization on the picked micrographs alone). The table gives mean ± std over the
replicates; a precision at a recall level a model never reaches counts as 0.

Paper scale: ``--steps 50000 --replicates 50,10`` (50 replicates of 10 labels, 10 of 100; 10
models for 1000/all). See docs/reports.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# one mean ± std, one paired t-test and one p-value format for every report (topaz_lightning.report)
from topaz_lightning.report import mean_std_of, p_text, paired_ttest  # noqa: E402

# the paper's published values live in the package (tzl-report view=table5 reads them too)
from topaz_lightning.report.paper import (  # noqa: E402, F401
    OBJECTIVE_NAMES,
    OBJECTIVES,
    PAPER_DATASETS,
    PAPER_TABLE1,
    PAPER_VALUES,
    PICK_METRICS,
    RECALL_LEVELS,
)

TABLES = ("table1", "table2", "table3", "table4", "table5", "supp1")
# defaults per table: label counts, objectives
DEFAULT_LABELS = {
    "table1": "10",
    "table2": "10,100,1000",
    "table3": "10,100,all",
    "table4": "10,100,1000",
    "table5": "10,100",
    "supp1": "10,100,1000",
}
# the paper's experiment config per simulated preset (whose settings stand in for it)
PAPER_EXPERIMENT = {"empiar10096_like": "paper_empiar10096", "shapiro_like": "paper_shapiro"}


@dataclass(frozen=True)
class Cell:
    """One table cell: a training setting (or the template baseline), run for every replicate."""

    objective: str
    decoder: bool
    labels: int | None  # None = every training particle
    baseline: bool = False  # the template-matching picker built from the labeled particles

    @property
    def name(self) -> str:
        """Directory-safe name, e.g. ``ge_binomial+ae_n100`` or ``template_n10``."""
        n = "all" if self.labels is None else str(self.labels)
        if self.baseline:
            return f"template_n{n}"
        return f"{self.objective}{'+ae' if self.decoder else ''}_n{n}"

    @property
    def method(self) -> str:
        """The method without the label count (``ge_binomial+ae``, ``template``): the key of
        ``PAPER_VALUES``."""
        return self.name.rsplit("_n", 1)[0]

    @property
    def model_name(self) -> str:
        """Row label like the paper's: ``GE-binomial`` or ``GE-binomial + autoencoder``."""
        if self.baseline:
            return BASELINE_NAME
        return OBJECTIVE_NAMES.get(self.objective, self.objective) + (
            " + autoencoder" if self.decoder else ""
        )


#: the paper's Table 2 compares with EMAN2's reference-based picker; ours is template matching
#: with the rotationally averaged mean of the labeled particles as the reference
BASELINE_NAME = "EMAN2-byRef-like [template matching]"
TOPAZ_NAME = "Topaz [classifier+autoencoder, GE-binomial]"
TOPAZ_CLASSIFIER_NAME = "Topaz [classifier, GE-binomial]"


def paper_dataset_for(table: str, source_name: str, explicit: str | None = None) -> str:
    """The paper dataset a table is compared with (``empiar10096`` or ``shapiro``)."""
    if explicit is not None:
        if explicit not in PAPER_DATASETS:
            raise SystemExit(
                f"error: --paper-dataset must be one of {', '.join(PAPER_DATASETS)}, "
                f"got {explicit!r}"
            )
        return explicit
    if table == "table3" or "shapiro" in source_name.lower():
        return "shapiro"
    return "empiar10096"


def paper_table_key(table: str, dataset: str) -> tuple[str, str]:
    """The ``PAPER_VALUES`` key: Table 2 is EMPIAR-10096's, Table 3 Shapiro-lab's."""
    if table in ("table2", "table3"):
        return ("table3", "shapiro") if dataset == "shapiro" else ("table2", "empiar10096")
    return (table, dataset)


def paper_value(table: str, dataset: str | None, cell: Cell, metric: str):
    """The paper's ``(mean, std or None)`` of a cell's metric, or None if it has none."""
    if dataset is None:
        return None
    rows = PAPER_VALUES.get(paper_table_key(table, dataset), {})
    return rows.get((cell.labels, cell.method), {}).get(metric)


@dataclass
class DataSpec:
    """The data a table runs on: a simulated dataset or a real one from an experiment config.

    Radii are in model-frame pixels (after ``downsample``). ``overrides`` select the data in
    tzl-train; ``test_names`` are the micrographs the table is measured on.
    """

    name: str
    simulated: bool
    overrides: list[str]
    nms_radius_px_model: float
    match_distance_px_model: float
    particle_radius_px_model: float | None
    downsample: float = 1.0
    num_train: int | None = None
    dataset: Path | None = None
    micrographs: str | None = None
    coordinates: str | None = None
    test_names: list[str] = field(default_factory=list)
    description: str = ""
    # Table 1: micrographs and particles of the train and test splits (None: unknown)
    split_counts: dict[str, int] | None = None


def parse_int_list(text: str) -> list[int | None]:
    """``"10,100,all"`` -> ``[10, 100, None]``."""
    out: list[int | None] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if part == "all":
            out.append(None)
        else:
            value = int(part)
            if value < 1:
                raise ValueError(f"label counts must be >= 1 or 'all', got {part}")
            out.append(value)
    if not out:
        raise ValueError(f"empty list: {text!r}")
    return out


def table_cells(table: str, labels: Sequence[int | None], objectives: Sequence[str]) -> list[Cell]:
    """The cells a table needs (rows in the paper's order)."""
    if table == "table5":
        return [Cell(o, False, n) for n in labels for o in objectives]
    if table == "table4":
        return [Cell("ge_binomial", d, n) for n in labels for d in (False, True)]
    if table in ("table2", "table3"):
        # the paper's Topaz row: classifier + autoencoder at 10 and 100 labels, the classifier
        # alone at 1000 / every label (where the autoencoder no longer helps, its Table 4)
        return [
            c
            for n in labels
            for c in (
                Cell("template", False, n, baseline=True),
                Cell("ge_binomial", n is not None and n < 1000, n),
            )
        ]
    if table == "supp1":
        return [Cell(o, False, n) for o in objectives for n in labels] + [
            Cell("ge_binomial", True, n) for n in labels
        ]
    raise ValueError(f"unknown table {table!r}; choose from {', '.join(TABLES)}")


def replicate_counts(text: str, labels: Sequence[int | None]) -> dict[int | None, int]:
    """``--replicates 3`` (every label count) or ``50,10`` (per label count; the last repeats)."""
    values = [int(v) for v in str(text).split(",") if v.strip()]
    if not values or min(values) < 1:
        raise ValueError(f"--replicates must be positive integers, got {text!r}")
    return {n: values[min(i, len(values) - 1)] for i, n in enumerate(labels)}


def label_overrides(labels: int | None, seed: int | str) -> list[str]:
    """Labeled-subset overrides of one replicate (``all`` keeps one fixed set)."""
    if labels is None:
        return ["data.num_labeled=null", "data.labeled_seed=0"]
    return [f"data.num_labeled={labels}", f"data.labeled_seed={seed}"]


def train_command(
    cell: Cell,
    seeds: Sequence[int],
    sweep_dir: Path,
    steps: int,
    data_overrides: Sequence[str],
    extra: Sequence[str] = (),
    tzl_train: str = "tzl-train",
) -> list[str]:
    """The ``tzl-train --multirun`` command line of one cell (replicates = ``seed`` values).

    Each job lands in ``<sweep_dir>/r<seed>``; held-out picking runs once, at the end.
    """
    cmd = [tzl_train, "-m", *data_overrides, f"objective={cell.objective}"]
    cmd.append("decoder=dcgan" if cell.decoder else "decoder=none")
    cmd += label_overrides(cell.labels, "${seed}")
    cmd += [
        "seed=" + ",".join(str(s) for s in seeds),
        f"trainer.max_steps={steps}",
        f"callbacks.held_out_picking.every_n_steps={steps}",
        "callbacks.progress_bar=null",
        f"task_name=paper_tables_{cell.name}",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=r${seed}",
        # only jobs without metrics.json are (re)run: replace what a crashed attempt left behind
        "overwrite=true",
        *extra,
    ]
    return cmd


def pick_commands(
    job_dir: Path, dataset: Path, radius: float, max_distance: float, tzl: str = ""
) -> list[list[str]]:
    """tzl-pick + tzl-evaluate of one job's model on a simulated dataset's test micrographs."""
    return _pick_commands(
        job_dir,
        micrographs=str(dataset / "micrographs"),
        subset=str(dataset / "test.txt"),
        truth=str(dataset / "particles.tsv"),
        radius=radius,
        max_distance=max_distance,
        tzl=tzl,
    )


def pick_commands_for(job_dir: Path, spec: DataSpec, tzl: str = "") -> list[list[str]]:
    """tzl-pick + tzl-evaluate of one job's model on the test micrographs of ``spec``.

    tzl-pick takes its NMS radius in model pixels and writes micrograph-frame coordinates;
    tzl-evaluate matches them in the micrograph frame (match distance x downsample).
    """
    from topaz_lightning.geometry import to_micrograph_px

    if spec.simulated:
        return pick_commands(
            job_dir,
            spec.dataset,
            spec.nms_radius_px_model,
            to_micrograph_px(spec.match_distance_px_model, spec.downsample),
            tzl,
        )
    names = "[" + ",".join(spec.test_names) + "]"
    return _pick_commands(
        job_dir,
        micrographs=str(spec.micrographs),
        subset=names,
        truth=str(spec.coordinates),
        radius=spec.nms_radius_px_model,
        max_distance=to_micrograph_px(spec.match_distance_px_model, spec.downsample),
        tzl=tzl,
    )


def _pick_commands(
    job_dir: Path,
    micrographs: str,
    subset: str,
    truth: str,
    radius: float,
    max_distance: float,
    tzl: str,
) -> list[list[str]]:
    return [
        [
            f"{tzl}tzl-pick",
            f"model_path={job_dir / 'model.pt'}",
            f"micrographs={micrographs}",
            f"subset={subset}",
            f"nms_radius_px_model={radius:g}",
            f"output_dir={job_dir / 'test_picks'}",
            "progress=false",
            "overwrite=true",
        ],
        [
            f"{tzl}tzl-evaluate",
            f"picks={job_dir / 'test_picks' / 'picks.tsv'}",
            f"truth={truth}",
            f"micrographs={subset}",
            f"max_distance={max_distance:g}",
            f"output_dir={job_dir / 'test_eval'}",
            "plot=null",
            "include_curve=false",
            "overwrite=true",
        ],
    ]


def _finite_or_zero(value) -> float:
    """Precision at an unreached recall (None/NaN) counts as 0."""
    if value is None:
        return 0.0
    value = float(value)
    return value if math.isfinite(value) else 0.0


def metrics_from_training(metrics: dict) -> dict[str, float]:
    """The table's metrics from tzl-train's ``metrics.json`` (final held-out picking)."""
    out = {"aupr": float(metrics.get("val/aupr", math.nan))}
    for r in RECALL_LEVELS:
        out[f"precision@{r:g}"] = _finite_or_zero(metrics.get(f"val/precision@{r:g}"))
    out["region_aupr"] = float(metrics.get("val/region_aupr", math.nan))
    out["train_val_aupr"] = out["aupr"]
    return out


def metrics_from_evaluation(metrics: dict) -> dict[str, float]:
    """The table's metrics from tzl-evaluate's ``metrics.json``."""
    par = metrics.get("precision_at_recall") or {}
    out = {"aupr": float(metrics["aupr"]) if metrics.get("aupr") is not None else math.nan}
    for r in RECALL_LEVELS:
        out[f"precision@{r:g}"] = _finite_or_zero(par.get(str(r), par.get(f"{r:g}")))
    return out


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_std_cell(values: Sequence[float], n_row: int | None = None) -> str:
    """``0.335 ± 0.072`` over the finite values (report.mean_std_of); ``-`` if none.

    When fewer values are finite than the row's replicates (``n_row``), the count is added:
    ``0.335 ± 0.072 (n=2)``.
    """
    finite = _finite(values)
    text = mean_std_of(finite)
    if finite and (n_row is None or len(finite) != n_row):
        text += f" (n={len(finite)})"
    return text


def label_text(n: int | None, num_train: int | None = None) -> str:
    """``10``, or ``all (640)`` for every training particle."""
    if n is None:
        return f"all ({num_train})" if num_train else "all"
    return str(n)


def _by_replicate(rows: Sequence[dict], metric: str) -> dict[int, float]:
    return {int(r.get("replicate", i)): float(r.get(metric, math.nan)) for i, r in enumerate(rows)}


def _mean(rows: Sequence[dict], metric: str) -> float:
    values = _finite([r.get(metric, math.nan) for r in rows])
    return sum(values) / len(values) if values else -math.inf


def ttest_rows(
    cells: Sequence[Cell], results: dict[Cell, list[dict]], metric: str = "aupr"
) -> list[dict]:
    """Every pairwise paired t-test between the cells of one label count, on ``metric``."""
    out = []
    groups: dict[int | None, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.labels, []).append(cell)
    for labels, group in groups.items():
        for i, first in enumerate(group):
            for second in group[i + 1 :]:
                diff, t, p, n = paired_ttest(
                    _by_replicate(results.get(first, []), metric),
                    _by_replicate(results.get(second, []), metric),
                )
                out.append(
                    {
                        "labels": labels,
                        "a": first,
                        "b": second,
                        "metric": metric,
                        "mean_diff": diff,
                        "t": t,
                        "p": p,
                        "n": n,
                    }
                )
    return out


def _reference_cells(table: str, cells: Sequence[Cell], results) -> dict[Cell, Cell | None]:
    """The cell each row's p-value compares with (None for the reference row itself).

    Table 5: the best mean AUPR of the label count; Table 4: the classifier without the
    autoencoder; Table 2: the Topaz row.
    """
    reference: dict[Cell, Cell | None] = {}
    groups: dict[int | None, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.labels, []).append(cell)
    for group in groups.values():
        if table == "table5":
            ref = max(group, key=lambda c: _mean(results.get(c, []), "aupr"))
        elif table == "table4":
            ref = next((c for c in group if not c.decoder), None)
        else:
            ref = next((c for c in group if not c.baseline), None)
        for cell in group:
            reference[cell] = None if cell == ref else ref
    return reference


P_HEADER = {
    "table5": "p vs best (AUPR)",
    "table4": "p vs classifier (AUPR)",
    "table2": "p vs Topaz (AUPR)",
    "table3": "p vs Topaz (AUPR)",
}


def format_table(
    table: str,
    cells: Sequence[Cell],
    results: dict[Cell, list[dict[str, float]]],
    labels: Sequence[int | None],
    num_train: int | None = None,
    paper_dataset: str | None = None,
) -> str:
    """The markdown table shaped like the paper's: mean ± std over each cell's replicates, n,
    and the paired t-test p-value of each row against its reference row (see
    :func:`_reference_cells`), then every pairwise test of the label count. With
    ``paper_dataset`` the paper's value and our difference follow (AUPR in the table, every
    metric in :func:`paper_comparison`), with the check of the paper's ordering."""
    from topaz_lightning.report import markdown_table

    compare = (
        "\n\n" + paper_comparison(table, cells, results, paper_dataset, num_train)
        if paper_dataset
        else ""
    )

    def n_of(cell):
        return len(results.get(cell, []))

    def col(cell, metric, n_row=None):
        return mean_std_cell([r.get(metric, math.nan) for r in results.get(cell, [])], n_row)

    metric_header = ["AUPR", *(f"P@R {r:g}" for r in RECALL_LEVELS), "n"]
    if table == "supp1":
        header = ["Model (region AUPR)", *(label_text(n, num_train) for n in labels)]
        rows = []
        for decoder in (False, True):
            names = dict.fromkeys(c.model_name for c in cells if c.decoder == decoder)
            for name in names:
                row = [("classifier: " if not decoder else "classifier+autoencoder: ") + name]
                for n in labels:
                    match = [c for c in cells if c.model_name == name and c.labels == n]
                    row.append(col(match[0], "region_aupr") if match else "-")
                rows.append(row)
        return (
            markdown_table(header, rows)
            + "\n\n"
            + ttest_markdown(ttest_rows(cells, results, "region_aupr"), num_train)
            + compare
        )
    first = {"table5": "Method", "table4": "Model", "table2": "Method", "table3": "Method"}[table]
    header = ["Labeled particles", first, *metric_header, P_HEADER[table]]
    if paper_dataset:
        header += [f"paper AUPR ({PAPER_DATASETS[paper_dataset]})", "Δ AUPR (ours - paper)"]
    reference = _reference_cells(table, cells, results)
    rows = []
    previous = object()
    for cell in cells:
        if table == "table4":
            method = "classifier + autoencoder" if cell.decoder else "classifier"
        elif table in ("table2", "table3"):
            method = (
                BASELINE_NAME
                if cell.baseline
                else TOPAZ_NAME
                if cell.decoder
                else TOPAZ_CLASSIFIER_NAME
            )
        else:
            method = cell.model_name
        labeled = label_text(cell.labels, num_train) if cell.labels != previous else ""
        previous = cell.labels
        ref = reference.get(cell)
        if ref is None:
            p_cell = "(best)" if table == "table5" else "(reference)"
        else:
            p_cell = p_text(
                paired_ttest(
                    _by_replicate(results.get(cell, []), "aupr"),
                    _by_replicate(results.get(ref, []), "aupr"),
                )[2]
            )
        n_row = n_of(cell)
        row = [labeled, method, *(col(cell, m, n_row) for m in PICK_METRICS), str(n_row), p_cell]
        if paper_dataset:
            row += _paper_cells(table, paper_dataset, cell, results, "aupr")
        rows.append(row)
    return (
        markdown_table(header, rows)
        + "\n\n"
        + ttest_markdown(ttest_rows(cells, results, "aupr"), num_train)
        + compare
    )


def _paper_value_text(value) -> str:
    if value is None:
        return "-"
    mean, std = value
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def _our_mean(results, cell: Cell, metric: str) -> float:
    values = _finite([r.get(metric, math.nan) for r in results.get(cell, [])])
    return sum(values) / len(values) if values else math.nan


def _paper_cells(table: str, dataset: str, cell: Cell, results, metric: str) -> list[str]:
    """The paper's value of a cell and our mean minus it (``-`` where the paper has none)."""
    value = paper_value(table, dataset, cell, metric)
    ours = _our_mean(results, cell, metric)
    diff = ours - value[0] if value is not None and math.isfinite(ours) else math.nan
    return [_paper_value_text(value), f"{diff:+.3f}" if math.isfinite(diff) else "-"]


def paper_comparison(
    table: str,
    cells: Sequence[Cell],
    results: dict[Cell, list[dict[str, float]]],
    dataset: str,
    num_train: int | None = None,
) -> str:
    """Every metric beside the paper's value (with our difference), then whether the paper's
    ordering of the methods holds in ours, per label count."""
    from topaz_lightning.report import markdown_table

    metrics = ("region_aupr",) if table == "supp1" else PICK_METRICS
    name = PAPER_DATASETS[dataset]
    paper_table = {"supp1": "Supplementary Table 1"}.get(table, table.replace("table", "Table "))
    if table in ("table2", "table3"):
        paper_table = "Table 3" if dataset == "shapiro" else "Table 2"
    header = ["Labeled particles", "Method", "Metric", "ours (mean ± std)", "paper", "ours - paper"]
    rows = []
    for cell in cells:
        for metric in metrics:
            value = paper_value(table, dataset, cell, metric)
            if value is None:
                continue
            ours = [r.get(metric, math.nan) for r in results.get(cell, [])]
            rows.append(
                [
                    label_text(cell.labels, num_train),
                    cell.model_name,
                    metric,
                    mean_std_cell(ours, len(ours)),
                    _paper_value_text(value),
                    *_paper_cells(table, dataset, cell, results, metric)[1:],
                ]
            )
    if not rows:
        return (
            f"The paper's {paper_table} ({name}) has no value for these label counts and methods."
        )
    text = (
        f"Beside the paper's {paper_table} ({name}; the paper's numbers are on its real data, "
        "ours on the data named above):\n\n" + markdown_table(header, rows)
    )
    orderings = paper_orderings(table, cells, results, dataset, num_train)
    if orderings:
        text += "\n\nThe paper's ordering of methods (by mean " + metrics[0] + "):\n\n"
        text += "\n".join(f"- {line}" for line in orderings)
    return text


def paper_orderings(
    table: str,
    cells: Sequence[Cell],
    results: dict[Cell, list[dict[str, float]]],
    dataset: str,
    num_train: int | None = None,
) -> list[str]:
    """Per label count: the paper's order of the methods and whether ours keeps it.

    The methods with a paper value and a mean of ours are ranked by the first metric (AUPR,
    region AUPR for ``supp1``); each pair the paper orders is checked (ties in the paper's
    rounded values are skipped). "holds" means every pair keeps the paper's order.
    """
    metric = "region_aupr" if table == "supp1" else "aupr"
    groups: dict[int | None, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.labels, []).append(cell)
    lines = []
    for labels, group in groups.items():
        scored = []
        for cell in group:
            value = paper_value(table, dataset, cell, metric)
            ours = _our_mean(results, cell, metric)
            if value is not None and math.isfinite(ours):
                scored.append((cell, value[0], ours))
        if len(scored) < 2:
            continue
        paper_order = sorted(scored, key=lambda x: -x[1])
        ours_order = sorted(scored, key=lambda x: -x[2])
        pairs = kept = 0
        broken = []
        for i, (a, pa, oa) in enumerate(paper_order):
            for b, pb, ob in paper_order[i + 1 :]:
                if pa == pb:
                    continue
                pairs += 1
                if oa > ob:
                    kept += 1
                else:
                    broken.append(f"{a.model_name} > {b.model_name}")
        verdict = "holds" if kept == pairs else f"does not hold (reversed: {'; '.join(broken)})"
        lines.append(
            f"{label_text(labels, num_train)} labels: paper "
            + " > ".join(f"{c.model_name} ({p:.3f})" for c, p, _ in paper_order)
            + "; ours "
            + " > ".join(f"{c.model_name} ({o:.3f})" for c, _, o in ours_order)
            + f": {kept} of {pairs} pairs in the paper's order, {verdict}"
        )
    return lines


def ttest_markdown(tests: Sequence[dict], num_train: int | None = None) -> str:
    """The pairwise paired t-tests as a markdown table (A - B, t, two-sided p, n pairs)."""
    from topaz_lightning.report import markdown_table

    if not tests:
        return ""
    metric = tests[0]["metric"]
    header = ["Labeled particles", "A", "B", f"mean {metric} A - B", "t", "p", "n pairs"]
    rows = [
        [
            label_text(t["labels"], num_train),
            t["a"].model_name,
            t["b"].model_name,
            f"{t['mean_diff']:+.3f}" if math.isfinite(t["mean_diff"]) else "-",
            f"{t['t']:.2f}" if math.isfinite(t["t"]) else "-",
            p_text(t["p"]),
            str(t["n"]),
        ]
        for t in tests
    ]
    return (
        f"Paired t-tests (scipy.stats.ttest_rel over matched replicates, {metric}):\n\n"
        + markdown_table(header, rows)
    )


def count_train_particles(dataset: Path, split: str = "train") -> int:
    """Particles on the training micrographs (``train.txt``; ``split="test"``: ``test.txt``) of a
    simulated dataset."""
    names = _split_names(dataset, split)
    count = 0
    with open(dataset / "particles.tsv") as fh:
        next(fh)
        for line in fh:
            if line.split("\t", 1)[0] in names:
                count += 1
    return count


def _split_names(dataset: Path, split: str) -> set[str]:
    path = dataset / f"{split}.txt"
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def simulated_split_counts(dataset: Path) -> dict[str, int] | None:
    """Table 1's counts of a simulated dataset (None without train.txt/test.txt/particles.tsv)."""
    if not all((dataset / n).is_file() for n in ("train.txt", "test.txt", "particles.tsv")):
        return None
    return {
        "train_micrographs": len(_split_names(dataset, "train")),
        "train_particles": count_train_particles(dataset, "train"),
        "test_micrographs": len(_split_names(dataset, "test")),
        "test_particles": count_train_particles(dataset, "test"),
    }


TABLE_TITLES = {
    "table1": "Table 1 (datasets)",
    "table2": "Table 2 (EMPIAR-10096: Topaz vs EMAN2 byRef)",
    "table3": "Table 3 (Shapiro-lab: Topaz vs EMAN2 byRef)",
    "table4": "Table 4 (GE-binomial with and without the autoencoder)",
    "table5": "Table 5 (four PU objectives)",
    "supp1": "Supplementary Table 1 (region AUPR)",
}


def table1_markdown(spec: DataSpec, paper_dataset: str) -> str:
    """Table 1: micrographs and particles of our train/test split beside the paper's dataset."""
    from topaz_lightning.report import markdown_table

    ours = spec.split_counts
    if ours is None:
        raise SystemExit(f"error: {spec.name}: the train/test split counts are unknown")
    paper = PAPER_TABLE1[paper_dataset]
    keys = ("train_micrographs", "train_particles", "test_micrographs", "test_particles")
    header = ["Dataset", "Train images", "Train particles", "Test images", "Test particles"]
    rows = [
        [f"ours: {spec.name}", *(str(ours[k]) for k in keys)],
        [f"paper: {PAPER_DATASETS[paper_dataset]}", *(str(paper[k]) for k in keys)],
        ["ours / paper", *(f"{ours[k] / paper[k]:.3g}" for k in keys)],
    ]
    return markdown_table(header, rows)


def write_table1(spec: DataSpec, paper_dataset: str, args, argv, out: Path) -> int:
    """``table1``: no training; the dataset's split counts beside the paper's Table 1."""
    from topaz_lightning.utils.atomic import atomic_output

    if args.dry_run:
        return 0
    text = (
        f"# table1: {TABLE_TITLES['table1']} on `{spec.name}`\n\n{spec.description}.\n"
        f"Command: `python scripts/paper_tables.py "
        f"{shlex.join(argv if argv is not None else sys.argv[1:])}`\n\n"
        + table1_markdown(spec, paper_dataset)
        + "\n"
    )
    path = out / f"table1_{spec.name}.md"
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(text)
    print(text)
    print(f"wrote {path}")
    return 0


def _run(cmd: Sequence[str], env: dict, dry_run: bool, log_path: Path | None = None) -> None:
    print("+ " + shlex.join(cmd), flush=True)
    if dry_run:
        return
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as fh:
            result = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    else:
        result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        hint = f"; see {log_path}" if log_path is not None else ""
        raise SystemExit(f"error: command failed with status {result.returncode}{hint}")


def _tool(name: str) -> str:
    """The console script beside this Python (the virtualenv's), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(
        description="Regenerate a table of Bepler et al. on simulated stand-in data or on a "
        "real dataset given by an experiment config.",
    )
    p.add_argument("table", choices=TABLES)
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--preset",
        default="demo",
        help="simulator preset (demo, tiny, empiar10096_like, shapiro_like)",
    )
    source.add_argument(
        "--experiment",
        default=None,
        help="real data: configs/experiment/<NAME>.yaml with data.micrographs, "
        "data.coordinates, data.val_list (the test micrographs) and "
        "callbacks.held_out_picking.nms_radius_px_model/match_distance_px_model, e.g. "
        "empiar10017_table5",
    )
    p.add_argument("--data-seed", type=int, default=0, help="seed of the simulated dataset")
    p.add_argument(
        "--dataset", type=Path, default=None, help="an existing simulated dataset directory"
    )
    p.add_argument(
        "--particle-radius-px-model",
        type=float,
        default=None,
        help="particle radius in model pixels for the template baseline (table2); default: "
        "dataset.yaml's, or for --experiment the NMS radius",
    )
    p.add_argument(
        "--steps", type=int, default=2000, help="training steps per model (paper: 50000)"
    )
    p.add_argument(
        "--replicates", default="3", help="replicates per label count: 3, or 50,10 (per count)"
    )
    p.add_argument("--labels", default=None, help="label counts, e.g. 10,100,1000 or 10,all")
    p.add_argument("--objectives", default=",".join(OBJECTIVES), help="objectives (table5/supp1)")
    p.add_argument("--model", default="conv31", help="classifier config (model=...)")
    p.add_argument(
        "--eval",
        choices=("val", "pick"),
        default="pick",
        help="pick: tzl-pick + tzl-evaluate on the test micrographs (the paper's protocol); "
        "val: reuse tzl-train's final held-out picking on them (faster, close but not identical)",
    )
    p.add_argument(
        "--paper-settings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="for empiar10096_like / shapiro_like: pi and label radius of "
        "configs/experiment/paper_{empiar10096,shapiro}.yaml (default on)",
    )
    p.add_argument("--threads", type=int, default=1, help="OMP/torch threads per training run")
    p.add_argument("--out", type=Path, default=Path("tables"))
    p.add_argument(
        "--train-arg",
        action="append",
        default=[],
        help="extra tzl-train override (repeatable); with --experiment it also completes the "
        "experiment (e.g. data.micrographs=..., data.val_list=...) before the table reads it",
    )
    p.add_argument(
        "--paper-dataset",
        choices=tuple(PAPER_DATASETS),
        default=None,
        help="the paper's dataset to compare with (default: shapiro for table3 and for a "
        "preset/experiment named *shapiro*, else empiar10096)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    return p


def paper_overrides(preset: str) -> list[str]:
    """pi and label radius of the paper's experiment config that the preset stands in for."""
    import yaml

    name = PAPER_EXPERIMENT.get(preset)
    if name is None:
        return []
    config = yaml.safe_load((ROOT / "configs" / "experiment" / f"{name}.yaml").read_text())
    data = config.get("data", {})
    # the label radius is data.radius_px in older configs, data.label_radius_px_model in newer
    keys = ("pi", "radius_px", "label_radius_px_model")
    return [f"data.{k}={data[k]}" for k in keys if k in data]


def compose_train(overrides: Sequence[str]):
    """The composed tzl-train config for ``overrides`` (paths relative to the current directory)."""
    from hydra import compose, initialize_config_dir

    from topaz_lightning.cli._hydra import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.root_dir={os.getcwd()}", *overrides])


def simulated_spec(dataset: Path, preset: str, overrides: Sequence[str]) -> DataSpec:
    """The spec of a simulated dataset (radii from its dataset.yaml, micrograph frame = model)."""
    from topaz_lightning.simulate import load_dataset_info

    meta = load_dataset_info(dataset)
    radius = meta.get("particle_radius_px")
    return DataSpec(
        name=preset,
        simulated=True,
        overrides=[f"data.simulated_dir={dataset}", *overrides],
        nms_radius_px_model=float(meta["nms_radius_px"]),
        match_distance_px_model=float(meta["match_distance_px"]),
        particle_radius_px_model=None if radius is None else float(radius),
        num_train=count_train_particles(dataset) if (dataset / "particles.tsv").is_file() else None,
        dataset=dataset,
        split_counts=simulated_split_counts(dataset),
        description=f"SIMULATED preset `{preset}` ({dataset.name}); NOT the paper's "
        "EMPIAR-10096 / Shapiro-lab data, not comparable with the paper's numbers",
    )


def _known_names(wanted: Sequence[str], known: Sequence[str], key: str, path: Path) -> list[str]:
    missing = [n for n in wanted if n not in set(known)]
    if missing:
        raise SystemExit(f"error: {path}: {key} names unknown micrograph(s): {', '.join(missing)}")
    return list(dict.fromkeys(wanted))


def experiment_spec(name: str, extra: Sequence[str] = ()) -> DataSpec:
    """The spec of a real dataset described by ``configs/experiment/<name>.yaml``.

    It must name the test micrographs as ``data.val_list`` (a list or a list file) and set the
    held-out picking radii (``callbacks.held_out_picking.nms_radius_px_model`` /
    ``match_distance_px_model``, model px).
    """
    from omegaconf import OmegaConf

    from topaz_lightning.io.coordinates import read_coordinates
    from topaz_lightning.io.micrographs import list_micrographs
    from topaz_lightning.io.micrographs import read_micrograph_names as read_name_list

    path = ROOT / "configs" / "experiment" / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"error: {path}: no such experiment config")
    overrides = [f"experiment={name}", *extra]
    cfg = compose_train(overrides)

    def get(key):
        return OmegaConf.select(cfg, key, default=None)

    for key in ("data.micrographs", "data.coordinates", "data.val_list"):
        if get(key) is None:
            raise SystemExit(
                f"error: {path}: {key} is required for a table (the test micrographs are "
                "data.val_list)"
            )
    # NMS radius and match distance (model pixels): given (data.*_px_model or the held-out
    # callback's), else derived from the particle size as the run geometry does
    downsample = float(get("data.downsample") or 1.0)
    particle_radius = None
    if get("data.particle_diameter_px") is not None or get("data.particle_diameter_a") is not None:
        from topaz_lightning.geometry import default_radii, particle_radius_px, to_model_px

        particle_radius = to_model_px(
            particle_radius_px(
                particle_diameter_a=get("data.particle_diameter_a"),
                particle_diameter_px=get("data.particle_diameter_px"),
                pixel_size_a=get("data.pixel_size_a"),
            ),
            downsample,
        )
        derived = default_radii(particle_radius)
    else:
        derived = {}
    radii = {}
    for radius_name, keys in (
        ("nms", ("data.nms_radius_px_model", "callbacks.held_out_picking.nms_radius_px_model")),
        (
            "match",
            ("data.match_distance_px_model", "callbacks.held_out_picking.match_distance_px_model"),
        ),
    ):
        radii[radius_name] = next((float(get(k)) for k in keys if get(k) is not None), None)
        if radii[radius_name] is None:
            radii[radius_name] = derived.get(f"{keys[0][5:]}")
        if radii[radius_name] is None:
            raise SystemExit(
                f"error: {path}: set data.particle_diameter_px or {' or '.join(keys)} "
                "(model pixels) for a table"
            )
    micrographs = str(get("data.micrographs"))
    names = list(list_micrographs(micrographs))
    val = get("data.val_list")
    val = OmegaConf.to_container(val) if OmegaConf.is_config(val) else val
    test_names = _known_names(read_name_list(val), names, "data.val_list", path)
    train_list = get("data.train_list")
    if OmegaConf.is_config(train_list):
        train_list = OmegaConf.to_container(train_list)
    train_names = (
        _known_names(read_name_list(train_list), names, "data.train_list", path)
        if train_list is not None
        else [n for n in names if n not in set(test_names)]
    )
    coordinates = str(get("data.coordinates"))
    truth = read_coordinates(coordinates, fmt=get("data.coordinates_format"))
    num_train = int(truth["micrograph"].astype(str).isin(set(train_names)).sum())
    num_test = int(truth["micrograph"].astype(str).isin(set(test_names)).sum())
    return DataSpec(
        name=name,
        simulated=False,
        overrides=overrides,
        nms_radius_px_model=radii["nms"],
        match_distance_px_model=radii["match"],
        particle_radius_px_model=particle_radius if particle_radius is not None else radii["nms"],
        downsample=downsample,
        num_train=num_train,
        micrographs=micrographs,
        coordinates=coordinates,
        test_names=list(test_names),
        split_counts={
            "train_micrographs": len(train_names),
            "train_particles": num_train,
            "test_micrographs": len(test_names),
            "test_particles": num_test,
        },
        description=f"REAL micrographs from configs/experiment/{name}.yaml: "
        f"{len(train_names)} training micrograph(s) ({num_train} particles), test: "
        f"{', '.join(test_names)}",
    )


def baseline_metrics(spec: DataSpec, labels: int | None, seed: int) -> dict[str, float]:
    """The template-matching picker of one replicate, evaluated on the test micrographs.

    The reference is the rotationally averaged mean of the replicate's labeled particles (the
    same subset tzl-train draws for ``data.labeled_seed=seed``, on the same preprocessed
    micrographs), boxed at 3 particle radii; picks are its NMS maxima, matched like the trained
    models' (model frame).
    """
    from hydra.utils import instantiate

    from topaz_lightning.baselines import average_template, template_picks
    from topaz_lightning.metrics import evaluate_picks

    cfg = compose_train([*spec.overrides, *label_overrides(labels, seed), f"seed={seed}"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    if not datamodule.val_micrographs:
        raise SystemExit("error: the data have no test (validation) micrographs")
    radius = spec.particle_radius_px_model
    if radius is None:
        raise SystemExit("error: the template baseline needs --particle-radius-px-model")
    box = int(2 * round(1.5 * radius) + 1)
    template = average_template(datamodule.train_micrographs, datamodule.train_coordinates, box)
    picks = template_picks(datamodule.val_micrographs, template, spec.nms_radius_px_model)
    result = evaluate_picks(
        picks,
        datamodule.val_coordinates,
        spec.match_distance_px_model,
        micrographs=list(datamodule.val_micrographs),
    )
    out = {"aupr": float(result.aupr) if result.aupr is not None else math.nan}
    for r in RECALL_LEVELS:
        out[f"precision@{r:g}"] = _finite_or_zero(result.precision_at_recall.get(r))
    out["num_labeled_particles"] = float(len(datamodule.train_coordinates))
    return out


def code_version() -> str:
    """The git commit the code runs from (``TZL_CODE_VERSION`` overrides it, e.g. a snapshot)."""
    if os.environ.get("TZL_CODE_VERSION"):
        return os.environ["TZL_CODE_VERSION"]
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "topaz_lightning", "configs"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" + uncommitted changes" if dirty else "")


def _load_cell(
    args, spec: DataSpec, cell: Cell, sweep_dir: Path, seeds: Sequence[int], env: dict, out: Path
) -> list[dict[str, float]]:
    rows = []
    for s in seeds:
        job = sweep_dir / f"r{s}"
        if cell.baseline:
            from topaz_lightning.utils.atomic import atomic_output

            path = job / "metrics.json"
            if path.is_file():
                row = json.loads(path.read_text())
            else:
                row = baseline_metrics(spec, cell.labels, s)
                job.mkdir(parents=True, exist_ok=True)
                with atomic_output(path, overwrite=True) as tmp:
                    tmp.write_text(json.dumps(row, indent=2) + "\n")
            rows.append({**row, "replicate": s})
            continue
        train_metrics = json.loads((job / "metrics.json").read_text())
        row = metrics_from_training(train_metrics)
        # supp1 needs only region AUPR, which comes from training; an earlier evaluation of
        # the same model is reused
        if args.eval == "pick" and args.table != "supp1":
            evaluated = job / "test_eval" / "metrics.json"
            if not (
                evaluated.is_file()
                and evaluated.stat().st_mtime >= (job / "model.pt").stat().st_mtime
            ):
                for cmd in pick_commands_for(
                    job, spec, tzl=str(Path(sys.executable).parent) + os.sep
                ):
                    _run(cmd, env, False, out / "logs" / f"{cell.name}_pick.log")
            row.update(metrics_from_evaluation(json.loads(evaluated.read_text())))
        row["replicate"] = s
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or print, with --dry-run) the experiments of one table and write it as markdown + CSV."""
    args = build_parser().parse_args(argv)
    source_name = args.experiment or args.preset
    paper_dataset = paper_dataset_for(args.table, source_name, args.paper_dataset)
    default_labels = DEFAULT_LABELS[args.table]
    if paper_dataset == "shapiro" and args.table in ("table2", "table4", "supp1"):
        default_labels = "10,100,all"  # the paper's Shapiro-lab rows: 10, 100, all 1167
    labels = parse_int_list(args.labels or default_labels)
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise SystemExit(f"error: unknown objective(s) {unknown}; choose from {OBJECTIVES}")
    if args.steps < 1:
        raise SystemExit("error: --steps must be >= 1")
    if args.experiment is not None and args.dataset is not None:
        raise SystemExit("error: give --experiment (real data) or --dataset (simulated), not both")
    out = args.out.resolve()
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    env.setdefault("MKL_NUM_THREADS", str(args.threads))

    model_overrides = [f"model={args.model}"]
    if args.experiment is not None:
        # the --train-arg overrides complete the experiment (e.g. data.micrographs), so the
        # table's own reading of it (test micrographs, radii) sees them too
        spec = experiment_spec(args.experiment, [*model_overrides, *args.train_arg])
        paper: list[str] = []
    else:
        dataset = (args.dataset or out / "data" / f"{args.preset}_seed{args.data_seed}").resolve()
        if not (dataset / "dataset.yaml").is_file():
            if args.dataset is not None:
                raise SystemExit(f"error: {dataset}: no dataset.yaml (not a simulated dataset)")
            _run(
                [
                    _tool("tzl-simulate"),
                    f"simulate={args.preset}",
                    f"seed={args.data_seed}",
                    f"out_dir={dataset}",
                    "contact_sheet=false",
                    f"hydra.run.dir={out / 'logs' / 'simulate'}",
                ],
                env,
                args.dry_run,
            )
        paper = paper_overrides(args.preset) if args.paper_settings else []
        if (dataset / "dataset.yaml").is_file():
            spec = simulated_spec(dataset, args.preset, [*model_overrides, *paper, *args.train_arg])
        else:  # dry run before the dataset exists
            spec = DataSpec(
                args.preset,
                True,
                [f"data.simulated_dir={dataset}", *model_overrides, *paper, *args.train_arg],
                math.nan,
                math.nan,
                None,
                dataset=dataset,
            )
    if args.particle_radius_px_model is not None:
        spec.particle_radius_px_model = float(args.particle_radius_px_model)
    if args.table == "table1":
        return write_table1(spec, paper_dataset, args, argv, out)
    num_train = spec.num_train
    if num_train is not None:
        # a label count at or above the training particles means all of them
        labels = list(
            dict.fromkeys(None if (n is not None and n >= num_train) else n for n in labels)
        )
    reps = replicate_counts(args.replicates, labels)
    cells = list(dict.fromkeys(table_cells(args.table, labels, objectives)))

    data_name = spec.dataset.name if spec.simulated else spec.name
    runs = out / "runs" / data_name / f"{args.model}_steps{args.steps}"
    if args.train_arg:
        # other training settings, other runs: never reuse a cell trained without them
        import hashlib

        digest = hashlib.sha1("\n".join(args.train_arg).encode()).hexdigest()[:8]
        runs = runs.with_name(f"{runs.name}_args{digest}")
    if paper:
        runs = runs.with_name(runs.name + "_paper")
    results: dict[Cell, list[dict[str, float]]] = {}
    for cell in cells:
        sweep_dir = runs / cell.name
        seeds = list(range(reps[cell.labels]))
        if cell.baseline:
            print(f"+ template baseline {cell.name} (in process), replicates {seeds}", flush=True)
            if not args.dry_run:
                results[cell] = _load_cell(args, spec, cell, sweep_dir, seeds, env, out)
            continue
        missing = [s for s in seeds if not (sweep_dir / f"r{s}" / "metrics.json").is_file()]
        if missing:
            cmd = train_command(
                cell, missing, sweep_dir, args.steps, spec.overrides, (), _tool("tzl-train")
            )
            _run(cmd, env, args.dry_run, out / "logs" / f"{cell.name}.log")
        if args.dry_run:
            continue
        results[cell] = _load_cell(args, spec, cell, sweep_dir, seeds, env, out)
    if args.dry_run:
        return 0

    text = format_table(args.table, cells, results, labels, num_train, paper_dataset)
    rep_text = ", ".join(f"{label_text(n, num_train)}: {r}" for n, r in reps.items())
    test_text = "the test micrographs" + (
        " (test.txt)" if spec.simulated else f" ({', '.join(spec.test_names)})"
    )
    header = (
        f"# {args.table}: {TABLE_TITLES[args.table]} on "
        f"{'simulated' if spec.simulated else 'real'} data "
        + (
            f"(preset `{args.preset}`, seed {args.data_seed})"
            if spec.simulated
            else f"(`{spec.name}`)"
        )
        + "\n\n"
        + spec.description
        + ".\n"
        f"{args.model}, {args.steps} steps, replicates ({rep_text}), metrics: "
        + (
            f"region AUPR over every pixel of {test_text} (tzl-train's val/region_aupr)"
            if args.table == "supp1"
            else f"final held-out picking on {test_text} (tzl-train); unreached recall counts as precision 0"
            if args.eval == "val"
            else f"tzl-pick + tzl-evaluate on {test_text}; unreached recall counts as precision 0"
        )
        + f"; NMS radius {spec.nms_radius_px_model:g} px, match distance "
        f"{spec.match_distance_px_model:g} px (model frame); mean ± std (n replicates); p: paired "
        "t-test on AUPR over matched replicates (same seed and labeled subset).\n"
        f"Code: {code_version()}.\n"
        f"Command: `python scripts/paper_tables.py {shlex.join(argv if argv is not None else sys.argv[1:])}`\n\n"
    )
    from topaz_lightning.utils.atomic import atomic_output

    stem = f"{args.table}_{spec.name}"
    md_path = out / f"{stem}.md"
    with atomic_output(md_path, overwrite=True) as tmp:
        tmp.write_text(header + text + "\n")
    csv_path = out / f"{stem}.csv"
    columns = (*PICK_METRICS, "region_aupr", "train_val_aupr")
    with atomic_output(csv_path, overwrite=True) as tmp:
        lines = ["cell,objective,decoder,labels,replicate," + ",".join(columns)]
        for cell, rows in results.items():
            for i, row in enumerate(rows):
                values = ",".join(f"{float(row.get(m, math.nan)):.6g}" for m in columns)
                lines.append(
                    f"{cell.name},{cell.objective},{int(cell.decoder)},"
                    f"{label_text(cell.labels)},{int(row.get('replicate', i))},{values}"
                )
        tmp.write_text("\n".join(lines) + "\n")
    print(header + text)
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
