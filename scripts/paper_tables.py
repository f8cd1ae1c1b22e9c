"""Regenerate the paper's result tables (Tables 2, 4, 5, Supplementary Table 1) on simulated stand-ins.

The paper's datasets (EMPIAR-10096, the Shapiro-lab set) are NOT used here: the simulator's
presets ``empiar10096_like`` and ``shapiro_like`` only imitate their size, particle density and
difficulty, and ``demo``/``tiny`` are smaller still. Numbers from this script are therefore not
comparable with the paper's; they show the same experiments, run the same way.

One command per table, e.g.::

    python scripts/paper_tables.py table5 --preset empiar10096_like --steps 2000 --replicates 3 \
        --out tables/

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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLES = ("table2", "table4", "table5", "supp1")
OBJECTIVES = ("pn", "nnpu", "ge_kl", "ge_binomial")
OBJECTIVE_NAMES = {"pn": "PN", "nnpu": "NNPU", "ge_kl": "GE-KL", "ge_binomial": "GE-binomial"}
RECALL_LEVELS = (0.25, 0.5, 0.75, 0.9)
PICK_METRICS = ("aupr", *(f"precision@{r:g}" for r in RECALL_LEVELS))
# defaults per table: label counts, objectives
DEFAULT_LABELS = {
    "table2": "10,100,1000",
    "table4": "10,100,1000",
    "table5": "10,100",
    "supp1": "10,100,1000",
}
# the paper's experiment config per simulated preset (whose settings stand in for it)
PAPER_EXPERIMENT = {"empiar10096_like": "paper_empiar10096", "shapiro_like": "paper_shapiro"}


@dataclass(frozen=True)
class Cell:
    """One table cell: a training setting, run for every replicate."""

    objective: str
    decoder: bool
    labels: int | None  # None = every training particle

    @property
    def name(self) -> str:
        """Directory-safe name, e.g. ``ge_binomial+ae_n100``."""
        n = "all" if self.labels is None else str(self.labels)
        return f"{self.objective}{'+ae' if self.decoder else ''}_n{n}"

    @property
    def model_name(self) -> str:
        """Row label like the paper's: ``GE-binomial`` or ``GE-binomial + autoencoder``."""
        return OBJECTIVE_NAMES.get(self.objective, self.objective) + (
            " + autoencoder" if self.decoder else ""
        )


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
    if table == "table2":
        return [Cell("ge_binomial", True, n) for n in labels]
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
    if cell.decoder:
        cmd.append("decoder=dcgan")
    if cell.labels is None:
        cmd += ["data.num_labeled=null", "data.labeled_seed=0"]
    else:
        cmd += [f"data.num_labeled={cell.labels}", "data.labeled_seed=${seed}"]
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
    """tzl-pick + tzl-evaluate of one job's model on the dataset's test micrographs."""
    return [
        [
            f"{tzl}tzl-pick",
            f"model_path={job_dir / 'model.pt'}",
            f"micrographs={dataset / 'micrographs'}",
            f"subset={dataset / 'test.txt'}",
            f"radius={radius:g}",
            f"output_dir={job_dir / 'test_picks'}",
            "progress=false",
            "overwrite=true",
        ],
        [
            f"{tzl}tzl-evaluate",
            f"picks={job_dir / 'test_picks' / 'picks.tsv'}",
            f"truth={dataset / 'particles.tsv'}",
            f"micrographs={dataset / 'test.txt'}",
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


def mean_std_cell(values: Sequence[float]) -> str:
    """``0.335 ± 0.072`` over the finite values (sample std, ddof 1); ``-`` if none."""
    from topaz_lightning.report import mean_std

    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return "-"
    mean = sum(finite) / len(finite)
    std = (
        math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
        if len(finite) > 1
        else math.nan
    )
    return mean_std(mean, std, len(finite))


def label_text(n: int | None, num_train: int | None = None) -> str:
    """``10``, or ``all (640)`` for every training particle."""
    if n is None:
        return f"all ({num_train})" if num_train else "all"
    return str(n)


def format_table(
    table: str,
    cells: Sequence[Cell],
    results: dict[Cell, list[dict[str, float]]],
    labels: Sequence[int | None],
    num_train: int | None = None,
) -> str:
    """The markdown table shaped like the paper's (mean ± std over each cell's replicates)."""
    from topaz_lightning.report import markdown_table

    def n_of(cell):
        return len(results.get(cell, []))

    def col(cell, metric):
        return mean_std_cell([r.get(metric, math.nan) for r in results.get(cell, [])])

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
        return markdown_table(header, rows)
    first = {"table5": "Method", "table4": "Model", "table2": "Method"}[table]
    header = ["Labeled particles", first, *metric_header]
    rows = []
    previous = object()
    for cell in cells:
        if table == "table4":
            method = "classifier + autoencoder" if cell.decoder else "classifier"
        elif table == "table2":
            method = "Topaz [classifier+autoencoder, GE-binomial]"
        else:
            method = cell.model_name
        labeled = label_text(cell.labels, num_train) if cell.labels != previous else ""
        previous = cell.labels
        rows.append([labeled, method, *(col(cell, m) for m in PICK_METRICS), str(n_of(cell))])
    return markdown_table(header, rows)


def count_train_particles(dataset: Path) -> int:
    """Particles on the training micrographs (``train.txt``) of a simulated dataset."""
    names = {
        line.strip() for line in (dataset / "train.txt").read_text().splitlines() if line.strip()
    }
    count = 0
    with open(dataset / "particles.tsv") as fh:
        next(fh)
        for line in fh:
            if line.split("\t", 1)[0] in names:
                count += 1
    return count


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
        description="Regenerate a table of Bepler et al. on SIMULATED stand-in data "
        "(not the paper's datasets).",
    )
    p.add_argument("table", choices=TABLES)
    p.add_argument(
        "--preset",
        default="demo",
        help="simulator preset (demo, tiny, empiar10096_like, shapiro_like)",
    )
    p.add_argument("--data-seed", type=int, default=0, help="seed of the simulated dataset")
    p.add_argument(
        "--dataset", type=Path, default=None, help="an existing simulated dataset directory"
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
        help="pick: tzl-pick + tzl-evaluate on test.txt (the paper's protocol); val: reuse "
        "tzl-train's final held-out picking on test.txt (faster, close but not identical)",
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
        "--train-arg", action="append", default=[], help="extra tzl-train override (repeatable)"
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
    return [f"data.{k}={data[k]}" for k in ("pi", "radius_px") if k in data]


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or print, with --dry-run) the experiments of one table and write it as markdown + CSV."""
    args = build_parser().parse_args(argv)
    labels = parse_int_list(args.labels or DEFAULT_LABELS[args.table])
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise SystemExit(f"error: unknown objective(s) {unknown}; choose from {OBJECTIVES}")
    if args.steps < 1:
        raise SystemExit("error: --steps must be >= 1")
    out = args.out.resolve()
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    env.setdefault("MKL_NUM_THREADS", str(args.threads))

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
    num_train = None
    if (dataset / "particles.tsv").is_file():
        num_train = count_train_particles(dataset)
        # a label count at or above the training particles means all of them
        labels = list(
            dict.fromkeys(None if (n is not None and n >= num_train) else n for n in labels)
        )
    reps = replicate_counts(args.replicates, labels)
    cells = list(dict.fromkeys(table_cells(args.table, labels, objectives)))

    data_overrides = [f"data.simulated_dir={dataset}", f"model={args.model}"]
    paper = paper_overrides(args.preset) if args.paper_settings else []
    data_overrides += paper
    runs = out / "runs" / f"{dataset.name}" / f"{args.model}_steps{args.steps}"
    if paper:
        runs = runs.with_name(runs.name + "_paper")
    results: dict[Cell, list[dict[str, float]]] = {}
    for cell in cells:
        sweep_dir = runs / cell.name
        seeds = list(range(reps[cell.labels]))
        missing = [s for s in seeds if not (sweep_dir / f"r{s}" / "metrics.json").is_file()]
        if missing:
            cmd = train_command(
                cell,
                missing,
                sweep_dir,
                args.steps,
                data_overrides,
                args.train_arg,
                _tool("tzl-train"),
            )
            _run(cmd, env, args.dry_run, out / "logs" / f"{cell.name}.log")
        if args.dry_run:
            continue
        import yaml

        meta = yaml.safe_load((dataset / "dataset.yaml").read_text())
        rows = []
        for s in seeds:
            job = sweep_dir / f"r{s}"
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
                    for cmd in pick_commands(
                        job,
                        dataset,
                        float(meta["nms_radius_px"]),
                        float(meta["match_distance_px"]),
                        tzl=str(Path(sys.executable).parent) + os.sep,
                    ):
                        _run(cmd, env, False, out / "logs" / f"{cell.name}_pick.log")
                row.update(metrics_from_evaluation(json.loads(evaluated.read_text())))
            rows.append(row)
        results[cell] = rows
    if args.dry_run:
        return 0

    text = format_table(args.table, cells, results, labels, num_train)
    rep_text = ", ".join(f"{label_text(n, num_train)}: {r}" for n, r in reps.items())
    header = (
        f"# {args.table} on simulated data (preset `{args.preset}`, seed {args.data_seed})\n\n"
        "SIMULATED stand-in, NOT the paper's EMPIAR-10096 / Shapiro-lab data; not comparable with "
        "the paper's numbers.\n"
        f"{args.model}, {args.steps} steps, replicates ({rep_text}), metrics: "
        + (
            "region AUPR over every pixel of test.txt (tzl-train's val/region_aupr)"
            if args.table == "supp1"
            else "final held-out picking on test.txt (tzl-train); unreached recall counts as precision 0"
            if args.eval == "val"
            else "tzl-pick + tzl-evaluate on test.txt; unreached recall counts as precision 0"
        )
        + "; mean ± std over replicates.\n"
        f"Command: `python scripts/paper_tables.py {shlex.join(argv if argv is not None else sys.argv[1:])}`\n\n"
    )
    from topaz_lightning.utils.atomic import atomic_output

    md_path = out / f"{args.table}_{args.preset}.md"
    with atomic_output(md_path, overwrite=True) as tmp:
        tmp.write_text(header + text + "\n")
    csv_path = out / f"{args.table}_{args.preset}.csv"
    with atomic_output(csv_path, overwrite=True) as tmp:
        lines = [
            "cell,objective,decoder,labels,replicate,"
            + ",".join([*PICK_METRICS, "region_aupr", "train_val_aupr"])
        ]
        for cell, rows in results.items():
            for i, row in enumerate(rows):
                values = ",".join(
                    f"{row.get(m, math.nan):.6g}"
                    for m in (*PICK_METRICS, "region_aupr", "train_val_aupr")
                )
                lines.append(
                    f"{cell.name},{cell.objective},{int(cell.decoder)},"
                    f"{label_text(cell.labels)},{i},{values}"
                )
        tmp.write_text("\n".join(lines) + "\n")
    print(header + text)
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
