"""Benchmark tzl-pick as whole processes: wall time and peak memory (PSS summed over the process tree) for N micrographs.

Compares this checkout's tzl-pick (the Lightning predict loop) with another checkout's (e.g. the
version before it, made with ``git worktree add /tmp/old <commit>``), alternating the runs, and
checks that both wrote the same picks.

Usage::

    nice -n 10 .venv/bin/python scripts/bench_pick_loop.py --micrographs 100 --repeat 3 \
        [--old-root /tmp/old] [--work /tmp/bench_pick_loop]

The micrographs are copies of the simulator's ``tiny`` preset (256 x 256; ``--micrographs``
of them), the model a randomly initialized Conv31 (downsample 2, GMM normalization, seed 0).
Prints one line per run and the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tree_pss_kib(root: int) -> int:
    """Proportional set size of ``root`` and all its descendants (KiB), from /proc: pages shared
    between processes (a DataLoader worker forked from the main process) count once in total."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    tree = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                changed = True
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def run_measured(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, int]:
    """(wall seconds, peak tree PSS MiB, exit status) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_pss_kib(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        print(err[-3000:], file=sys.stderr)
    return wall, peak / 1024, proc.returncode


def make_data(work: Path, count: int) -> tuple[Path, Path]:
    """``count`` tiny-preset micrographs (tzl-simulate) and a random Conv31 model.pt."""
    import torch

    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.models import Conv31, save_model

    data = work / "data"
    if not (data / "micrographs").is_dir():
        subprocess.run(
            [
                sys.executable, "-m", "topaz_lightning.cli.simulate", "simulate=tiny",
                f"simulate.num_micrographs={count}", "simulate.num_test=1",
                f"out_dir={data}", "contact_sheet=false", f"hydra.run.dir={work / 'simulate'}",
            ],
            check=True, cwd=REPO, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    model = work / "model.pt"
    if not model.exists():
        torch.manual_seed(0)
        geometry = RunGeometry(downsample=2.0, nms_radius_px_model=7.0, normalize="gmm")
        extra = {
            "preprocess": {"downsample": 2.0, "normalize": "gmm"},
            "geometry": geometry.to_dict(),
        }
        save_model(model, Conv31(), extra=extra)
    return data / "micrographs", model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micrographs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--old-root", type=Path, default=None, help="checkout of the old version")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_pick_loop"))
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    mics, model = make_data(args.work, args.micrographs)
    versions = {"new": REPO}
    if args.old_root is not None:
        versions["old"] = args.old_root.resolve()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
    for k in range(args.repeat):
        for name, root in versions.items():
            out = args.work / f"{name}_{k}"
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(root)}
            cmd = [
                sys.executable, "-m", "topaz_lightning.cli.pick", f"model_path={model}",
                f"micrographs={mics}", f"output_dir={out}", "radius=7", "device=cpu",
                "progress=false", "overwrite=true",
            ]  # fmt: skip
            wall, peak, status = run_measured(cmd, env, args.work)
            if status != 0:
                raise SystemExit(f"{name} run {k} failed with status {status}")
            results[name].append((wall, peak))
            print(f"{name} run {k}: {wall:.1f} s, peak PSS {peak:.0f} MiB", flush=True)
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        peak = statistics.median(r[1] for r in runs)
        print(f"{name}: median {wall:.1f} s, median peak PSS {peak:.0f} MiB "
              f"({args.micrographs} micrographs, {args.repeat} runs)")  # fmt: skip
    if "old" in versions:
        same = (args.work / "new_0" / "picks.tsv").read_bytes() == (
            args.work / "old_0" / "picks.tsv"
        ).read_bytes()
        print(f"identical picks.tsv: {same}")


if __name__ == "__main__":
    main()
