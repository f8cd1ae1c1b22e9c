"""Profile tzl-pick as a whole process: CPU seconds per stage (cProfile on the CPU clock), totals, peak memory.

The micrographs are the real EMPIAR-10017 samples (``data/samples/empiar10017_dev/images``, four
4096 px JPEGs), repeated under new names (symbolic links ``<stem>_c<k>.jpg``) up to
``--micrographs``, so runs of 16 or 200 micrographs need no other data. Each run is a fresh
process: ``tzl-pick`` with ``--downsample`` (4: 1024 px model frame), ``device=cpu``,
``progress=false``, ``overwrite=true`` and any ``--set key=value`` overrides.

Two kinds of run:

- ``--profile`` (one run, ``num_workers=0`` so that every stage runs in the profiled process):
  cProfile with ``time.process_time`` as its clock (CPU seconds: steadier than the wall clock on
  a shared machine), the stage table (cumulative CPU seconds of the functions that make each
  stage) and the top functions by own time;
- ``--repeat N`` (default 1, with the configured ``num_workers``, no profiler): wall seconds, CPU
  seconds of the process tree (user + system, workers included) and the peak PSS of the tree
  (sampled every 0.2 s, :func:`bench_pick_loop.run_measured`) plus the peak RSS of the largest
  process (``ru_maxrss``).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/profile_pick.py --model model.pt \\
        --micrographs 16 --profile --repeat 1 --work /tmp/profile_pick

Prints markdown tables; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples" / "empiar10017_dev" / "images"

#: stage -> (function name, file suffix) whose cumulative CPU time makes it (summed)
STAGES: list[tuple[str, list[tuple[str, str]]]] = [
    ("imports, all (also those inside pick(cfg): Lightning, ...)", [("_find_and_load", "_bootstrap>")]),
    ("GMM first pass (read + crop of the fit's micrographs, the fit)", [("run_fit", "normalization.py"), ("fit_over_micrographs", "normalization.py")]),
    ("  of which the EM fit", [("fit_gmm_samples", "gmm.py")]),
    ("read (JPEG/MRC decode), all", [("read_micrograph", "micrographs.py")]),
    ("Fourier crop, all", [("downsample", "fourier.py")]),
    ("normalization of each micrograph (own scale EM + apply)", [("fit_scale", "normalization.py"), ("normalize_gmm", "gmm.py")]),
    ("network: channels-last copy", [("scoring_layout", "strided.py")]),
    ("network: coarse map", [("_coarse_map", "strided.py")]),
    ("network: refinement windows", [("window_scores", "strided.py")]),
    ("network: dense map", [("score_micrograph", "scoring.py")]),
    ("NMS", [("non_maximum_suppression", "nms.py")]),
    ("band detection + mask", [("drop_masked_picks", "border.py")]),
    ("writing parts", [("write_part", "predict.py")]),
    ("assembling the output (parts, extract, write)", [("read_parts", "predict.py"), ("extract", "outputs.py"), ("write_output", "outputs.py")]),
    ("expected counts (headers)", [("_expected_counts", "pick.py")]),
    ("pick browser page", [("_write_browser", "pick.py")]),
]  # fmt: skip


def make_micrographs(work: Path, count: int, source: Path = SAMPLES) -> Path:
    """``work/mics_<count>/``: ``count`` links to the samples, cycling, named ``<stem>_c<k>``."""
    samples = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".mrc", ".tif"))
    if not samples:
        raise SystemExit(f"no micrographs in {source}")
    out = work / f"mics_{count}"
    out.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        src = samples[k % len(samples)]
        link = out / f"{src.stem}_c{k // len(samples):03d}{src.suffix}"
        if not link.exists():
            link.symlink_to(src.resolve())
    return out


def pick_command(args, mics: Path, out: Path, extra: list[str]) -> list[str]:
    return [
        f"model_path={args.model}", f"micrographs={mics}", f"output_dir={out}",
        f"downsample={args.downsample}", "device=cpu", "progress=false", "overwrite=true",
        *args.set, *extra,
    ]  # fmt: skip


def child(prof_path: str, argv: list[str]) -> None:
    """Run tzl-pick in this process under cProfile on the CPU clock (imports included)."""
    profiler = cProfile.Profile(time.process_time)
    sys.argv = ["tzl-pick", *argv]
    profiler.enable()
    try:
        from topaz_lightning.cli.pick import main

        main()
    except SystemExit as err:
        if err.code not in (0, None):
            raise
    finally:
        profiler.disable()
        profiler.dump_stats(prof_path)


def stage_table(prof: Path) -> tuple[list[tuple[str, float]], float, str]:
    """(stage, CPU s) rows, the profile's total CPU seconds and the top functions by own time."""
    stats = pstats.Stats(str(prof))
    table = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]

    def cumulative(name: str, suffix: str) -> float:
        # a recursive function's cumulative time counts once (pstats keeps the outermost)
        return sum(v[3] for k, v in table.items() if k[2] == name and k[0].endswith(suffix))

    rows = []
    if any(k[2] == "run_fit" for k in table):  # fit_over_micrographs calls run_fit: once
        parts_of = dict(STAGES)
        first_pass = next(label for label, _ in STAGES if label.startswith("GMM first pass"))
        parts_of[first_pass] = [("run_fit", "normalization.py")]
    else:
        parts_of = dict(STAGES)
    pick_cum = cumulative("pick", os.path.join("topaz_lightning", "pick.py"))
    rows.append(("outside pick(cfg): start-up imports, Hydra compose, exit", total - pick_cum))
    for label, _ in STAGES:
        rows.append((label, sum(cumulative(n, s) for n, s in parts_of[label])))
    buffer = io.StringIO()
    pstats.Stats(str(prof), stream=buffer).sort_stats("tottime").print_stats(15)
    return rows, total, buffer.getvalue()


#: the imports of a tzl-pick process, in the order they happen (each line's CPU time excludes
#: what the lines before it imported already)
IMPORT_STEPS = [
    ("torch, numpy, pandas", "import torch, numpy, pandas"),
    ("topaz_lightning.cli.pick (package modules, scipy parts, Hydra)", "import topaz_lightning.cli.pick"),
    ("matplotlib.pyplot (pulled in by torchmetrics, imported by Lightning)", "import matplotlib.pyplot"),
    ("scipy.signal (the same way)", "import scipy.signal"),
    ("torchmetrics, the rest", "import torchmetrics"),
    ("pytorch_lightning, the rest", "import pytorch_lightning"),
]  # fmt: skip


def import_times() -> None:
    """CPU seconds of each import step in a fresh process (run ``--imports`` a few times)."""
    code = "import time\n"
    for k, (_, statement) in enumerate(IMPORT_STEPS):
        code += f"t{k} = time.process_time()\n{statement}\n"
    code += f"t{len(IMPORT_STEPS)} = time.process_time()\n"
    code += "print(" + ", ".join(f"t{k + 1} - t{k}" for k in range(len(IMPORT_STEPS))) + ")\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    values = [float(v) for v in out.stdout.split()]
    print("| import (fresh process) | CPU s |\n|---|---|")
    for (label, _), value in zip(IMPORT_STEPS, values, strict=True):
        print(f"| {label} | {value:.2f} |")
    print(f"| **total** | **{sum(values):.2f}** |")


def print_table(rows: list[tuple[str, float]], total: float, top: str, label: str) -> None:
    print(f"\n| stage (cumulative CPU s under cProfile; {label}) | CPU s | share |")
    print("|---|---|---|")
    for stage, value in rows:
        print(f"| {stage} | {value:.2f} | {100 * value / total:.0f} % |")
    print(f"| **total (profiled process)** | **{total:.2f}** | 100 % |")
    print(f"\ntop functions by own CPU time:\n{top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=False)
    parser.add_argument("--micrographs", type=int, default=16)
    parser.add_argument("--downsample", type=float, default=4.0)
    parser.add_argument("--source", type=Path, default=SAMPLES, help="micrographs to repeat")
    parser.add_argument("--work", type=Path, default=Path("/tmp/profile_pick"))
    parser.add_argument("--profile", action="store_true", help="one run under cProfile")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (0: none)")
    parser.add_argument("--set", action="append", default=[], help="extra tzl-pick override")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--table", type=Path, default=None, help="only print PROF's table")
    parser.add_argument("--imports", action="store_true", help="only time the start-up imports")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1:])
        return
    if args.table:
        print_table(*stage_table(args.table), label=str(args.table))
        return
    if args.imports:
        import_times()
        return
    if args.model is None:
        parser.error("--model is required")
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_pick_loop import run_measured

    args.work.mkdir(parents=True, exist_ok=True)
    mics = make_micrographs(args.work, args.micrographs, args.source)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["PYTHONPATH"] = str(REPO)
    report: dict = {"micrographs": args.micrographs, "downsample": args.downsample, "runs": []}
    n = args.micrographs
    for k in range(args.repeat):
        out = args.work / f"run_{n}_{k}"
        cmd = [sys.executable, "-m", "topaz_lightning.cli.pick", *pick_command(args, mics, out, [])]
        wall, cpu, pss, status = run_measured(cmd, env, REPO)
        if status != 0:
            raise SystemExit(f"run {k} failed with status {status}")
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        report["runs"].append({"wall_s": wall, "cpu_s": cpu, "peak_pss_mib": pss, "rss_mib": rss})
        print(
            f"{n} micrographs, run {k}: {wall:.1f} s wall, {cpu:.1f} s CPU (tree), peak PSS "
            f"{pss:.0f} MiB (tree), largest process RSS so far {rss:.0f} MiB",
            flush=True,
        )
    if args.profile:
        prof = args.work / f"profile_{n}.prof"
        out = args.work / f"profile_run_{n}"
        argv = pick_command(args, mics, out, ["num_workers=0"])
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(prof), *argv],
            env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wall = time.perf_counter() - start
        rows, total, top = stage_table(prof)
        report["profile"] = {"total_cpu_s": total, "wall_s": wall, "stages": dict(rows)}
        print_table(rows, total, top, f"{n} micrographs, num_workers=0, wall {wall:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
