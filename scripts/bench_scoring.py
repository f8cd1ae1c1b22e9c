"""Benchmark coarse-to-fine against dense scoring: time per micrograph, picks and AUPR of each.

Example usage:
    # a trained model on the real sample micrographs (4x downsampled by the model's preprocessing)
    .venv/bin/python scripts/bench_scoring.py --model run/model.pt \
        --micrographs data/samples/empiar10017_dev/images --truth data/samples/empiar10017_dev/coords \
        --test Falcon_2012_06_12-15_27_22_0 --levels=-2,-1,0
    # no --model: trains its own quick models (real fold + simulated demo) in --workdir first
    .venv/bin/python scripts/bench_scoring.py --quick

For every micrograph the dense map (``scoring=dense``) and each coarse-to-fine variant are
computed alternately ``--repeats`` times (median seconds per micrograph, so load spikes of a
shared machine hit all methods alike), then NMS (same radius, threshold -inf) gives the picks.
Printed per method: median time per micrograph and the speed-up over dense, the share of
pixels scored densely, AUPR on the ``--test`` micrographs (and on all micrographs with truth),
and whether the picks scoring at or above dense's best-F1 threshold (and the flood-fill level)
are the dense ones. ``level=inf`` is the coarse map alone (no fine step), for reference.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from topaz_lightning.geometry import coordinates_to_model_frame
from topaz_lightning.io.coordinates import read_coordinates
from topaz_lightning.io.micrographs import list_micrographs, read_micrograph
from topaz_lightning.metrics import evaluate_picks
from topaz_lightning.models import load_model
from topaz_lightning.picking import picks_from_score_map, score_micrograph
from topaz_lightning.preprocess import preprocess_images

REAL = Path("data/samples/empiar10017_dev")
REAL_TEST = "Falcon_2012_06_12-15_27_22_0"


def _run(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), flush=True)
    with open(log, "w") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        sys.exit(f"command failed (exit {rc}), see {log}")


def quick_models(workdir: Path, steps: int) -> list[dict]:
    """Train (once, reused later) a conv31 on the real fold and on the simulated demo preset."""
    bin_dir = Path(sys.executable).parent
    workdir.mkdir(parents=True, exist_ok=True)
    real = workdir / f"real_{steps}"
    if not (real / "model.pt").exists():
        _run(
            [
                str(bin_dir / "tzl-train"),
                "experiment=empiar10017_table5",
                f"trainer.max_steps={steps}",
                "callbacks.progress_bar=null",
                "overwrite=true",
                f"hydra.run.dir={real}",
            ],
            workdir / f"real_{steps}.log",
        )
    sim = workdir / "demo_data"
    if not (sim / "dataset.yaml").exists():
        _run(
            [
                str(bin_dir / "tzl-simulate"),
                "simulate=demo",
                "seed=0",
                f"out_dir={sim}",
                "num_workers=1",
                f"hydra.run.dir={workdir / 'simulate_log'}",
            ],
            workdir / "simulate.log",
        )
    sim_run = workdir / f"demo_{steps}"
    if not (sim_run / "model.pt").exists():
        _run(
            [
                str(bin_dir / "tzl-train"),
                f"data.simulated_dir={sim}",
                f"trainer.max_steps={steps}",
                "callbacks.progress_bar=null",
                "overwrite=true",
                f"hydra.run.dir={sim_run}",
            ],
            workdir / f"demo_{steps}.log",
        )
    from topaz_lightning.simulate import load_dataset_info

    meta = load_dataset_info(sim)
    return [
        dict(
            label=f"real EMPIAR-10017 (conv31, {steps} steps)",
            model=real / "model.pt",
            micrographs=REAL / "images",
            truth=REAL / "coords",
            test=[REAL_TEST],
            radius=13.5,
            match=13.5,
        ),
        dict(
            label=f"simulated demo (conv31, {steps} steps)",
            model=sim_run / "model.pt",
            micrographs=sim / "micrographs",
            truth=sim / "particles.tsv",
            test=(sim / "test.txt").read_text().split(),
            radius=float(meta["nms_radius_px"]),
            match=float(meta["match_distance_px"]),
        ),
    ]


def _label(level: float | None, margin: float) -> str:
    if level is None:
        return "-"
    return f"{level:g}" + (f" (seed -{margin:g})" if margin else "")


def _picks_above(df: pd.DataFrame, t: float) -> set:
    kept = df[df["score"] >= t]
    return set(zip(kept["x"].round(3), kept["y"].round(3), strict=True))


def bench_set(spec: dict, levels: list[float], args) -> None:
    net, extra = load_model(spec["model"])
    net.eval()
    prep = dict(extra.get("preprocess") or {})
    downsample = float(prep.get("downsample", 1) or 1)
    sources = list_micrographs(spec["micrographs"])
    names = list(sources) if args.max_micrographs is None else list(sources)[: args.max_micrographs]
    for name in spec["test"]:
        if name not in names:
            names.append(name)
    images = preprocess_images(
        {n: read_micrograph(sources[n]) for n in names},
        downsample=downsample,
        normalize=str(prep.get("normalize", "none") or "none"),
    )
    truth = read_coordinates(spec["truth"])
    truth = coordinates_to_model_frame(truth[truth["micrograph"].isin(names)], downsample)
    shape = next(iter(images.values())).shape
    print(
        f"\n## {spec['label']}: {len(names)} micrograph(s) of {shape[0]} x {shape[1]} (model px), "
        f"NMS radius {spec['radius']:g}, match distance {spec['match']:g}, test {spec['test']}, "
        f"fine tile {args.fine_tile}, {torch.get_num_threads()} thread(s)",
        flush=True,
    )
    methods = [
        (scoring, lv, m, tta)
        for tta in args.tta
        for scoring, lv, m in [("dense", None, 0.0)] + [("coarse_to_fine", v, m) for v, m in levels]
    ]
    times: dict[int, list[float]] = {i: [] for i in range(len(methods))}
    cpu_times: dict[int, list[float]] = {i: [] for i in range(len(methods))}
    picks: dict[int, list[pd.DataFrame]] = {i: [] for i in range(len(methods))}
    scored: dict[int, list[float]] = {i: [] for i in range(len(methods))}
    with torch.inference_mode():
        score_micrograph(net, images[names[0]][:64, :64])  # oneDNN set-up
    for name in names:
        for rep in range(args.repeats):
            order = range(len(methods)) if rep % 2 == 0 else reversed(range(len(methods)))
            for i in order:
                scoring, level, margin, tta = methods[i]
                start, cpu_start = time.perf_counter(), time.process_time()
                score_map = score_micrograph(
                    net,
                    images[name],
                    scoring=scoring,
                    level=level,
                    tta=tta,
                    fine_tile=args.fine_tile,
                    seed_margin=margin,
                )
                times[i].append(time.perf_counter() - start)
                cpu_times[i].append(time.process_time() - cpu_start)
                if rep == 0:
                    picks[i].append(picks_from_score_map(name, score_map, spec["radius"]))
                    scored[i].append(float(np.isfinite(score_map).mean()))
    if args.timing_only:
        t_dense = statistics.median(times[0])
        c_dense = statistics.median(cpu_times[0])
        for i, (scoring, level, margin, tta) in enumerate(methods):
            t, c = statistics.median(times[i]), statistics.median(cpu_times[i])
            print(
                f"{scoring:15s} tta {tta} level {_label(level, margin):8s} "
                f"{t:.2f} s/micrograph (median of {len(times[i])}), {t_dense / t:.2f}x dense; "
                f"CPU {c:.2f} s, {c_dense / c:.2f}x dense; "
                f"scored {statistics.mean(scored[i]):.3f}",
                flush=True,
            )
        return
    evals = {}
    for i in range(len(methods)):
        df = pd.concat(picks[i], ignore_index=True)
        evals[i] = (
            df,
            evaluate_picks(df, truth, spec["match"], micrographs=spec["test"]),
            evaluate_picks(df, truth, spec["match"], micrographs=names),
        )
    dense_df, dense_test, dense_all = evals[0]
    t_f1 = dense_test.best_f1_threshold
    t_dense = statistics.median(times[0])
    c_dense = statistics.median(cpu_times[0])
    print(
        f"dense best-F1 threshold (test) {t_f1:.3f}; picks per micrograph "
        f"{len(dense_df) / len(names):.0f}; AUPR test {dense_test.aupr:.4f}, all {dense_all.aupr:.4f}"
    )
    print(
        "| scoring | tta | level | s/micrograph (median) | speed-up | CPU s (median) | CPU speed-up "
        "| scored px | AUPR test | dAUPR "
        "| AUPR all | dAUPR | picks >= best-F1 thr. | picks >= level |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, (scoring, level, margin, tta) in enumerate(methods):
        df, ev_test, ev_all = evals[i]
        t, c = statistics.median(times[i]), statistics.median(cpu_times[i])
        ref_f1, got_f1 = _picks_above(dense_df, t_f1), _picks_above(df, t_f1)
        f1_same = f"{'same' if ref_f1 == got_f1 else 'DIFFER'} ({len(got_f1 ^ ref_f1)} diff / {len(ref_f1)})"
        if level is None or not math.isfinite(level):
            lv_same = "-"
        else:
            ref_lv, got_lv = _picks_above(dense_df, level), _picks_above(df, level)
            lv_same = f"{len(got_lv ^ ref_lv)} diff / {len(ref_lv)}"
        print(
            f"| {scoring} | {tta} | {_label(level, margin)} | {t:.2f} | {t_dense / t:.1f}x | {c:.2f} | {c_dense / c:.1f}x "
            f"| {statistics.mean(scored[i]):.3f} | {ev_test.aupr:.4f} | {ev_test.aupr - dense_test.aupr:+.4f} "
            f"| {ev_all.aupr:.4f} | {ev_all.aupr - dense_all.aupr:+.4f} | {f1_same} | {lv_same} |",
            flush=True,
        )


def thread_study(args) -> int:
    """Rerun this script in one process per (intra-op, inter-op) thread pair; the OpenMP pool
    is fixed per process, so pairs never share one."""
    base = [a for a in sys.argv[1:] if a != "--thread-study"]
    for threads in (1, 2):
        for interop in (1, 2):
            print(f"\n### intra-op threads {threads}, inter-op threads {interop}", flush=True)
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            cmd = [sys.executable, __file__, *base, "--threads", str(threads)]
            rc = subprocess.call([*cmd, "--interop", str(interop)], env=env)
            if rc:
                return rc
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model.pt; none: quick models in --workdir")
    parser.add_argument("--micrographs", type=Path)
    parser.add_argument("--truth", type=Path)
    parser.add_argument("--test", default=None, help="comma-separated test micrograph names")
    parser.add_argument("--radius", type=float, default=13.5, help="NMS radius (model px)")
    parser.add_argument("--match-distance", type=float, default=13.5, help="model px")
    parser.add_argument(
        "--levels",
        default="-2/2,0/2,1/2,inf",
        help="coarse_to_fine levels, each LEVEL or LEVEL/SEED_MARGIN",
    )
    parser.add_argument("--fine-tile", type=int, default=16)
    parser.add_argument("--tta", default="1", help="comma-separated: 1, 8 or 1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as set)")
    parser.add_argument("--interop", type=int, default=None, help="torch inter-op threads")
    parser.add_argument(
        "--thread-study",
        action="store_true",
        help="time each (threads, inter-op) pair in 1,2 x 1,2 in its own process",
    )
    parser.add_argument(
        "--max-micrographs", type=int, default=None, help="first N (0: the test ones only)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("bench_out/scoring"))
    parser.add_argument("--train-steps", type=int, default=500)
    parser.add_argument("--timing-only", action="store_true", help="times only, no picks/AUPR")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 300 training steps")
    args = parser.parse_args()
    if args.interop:
        torch.set_num_interop_threads(args.interop)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.tta = [int(v) for v in str(args.tta).split(",")]
    if args.thread_study:
        return thread_study(args)
    if args.quick:
        args.repeats, args.train_steps = 1, 300
        args.max_micrographs = 2 if args.max_micrographs is None else args.max_micrographs
    # "level" or "level/seed_margin"
    levels = [
        (float(v.split("/")[0]), float(v.split("/")[1]) if "/" in v else 0.0)
        for v in args.levels.split(",")
        if v
    ]
    cpu = (
        next(
            (
                ln.split(":", 1)[1].strip()
                for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")
            ),
            "?",
        )
        if os.path.exists("/proc/cpuinfo")
        else "?"
    )
    print(f"CPU: {cpu}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    if args.model is None:
        specs = quick_models(args.workdir, args.train_steps)
    else:
        specs = [
            dict(
                label=str(args.model),
                model=args.model,
                micrographs=args.micrographs,
                truth=args.truth,
                test=args.test.split(","),
                radius=args.radius,
                match=args.match_distance,
            )
        ]
    for spec in specs:
        bench_set(spec, levels, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
