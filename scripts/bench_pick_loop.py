"""Benchmark tzl-pick as whole processes: wall and CPU time, peak memory (PSS summed over the process tree).

Compares this checkout's tzl-pick (the Lightning predict loop) with another checkout's (e.g. the
version before it, made with ``git worktree add /tmp/old <commit>``), alternating the runs, and
checks that both wrote the same picks.

Usage::

    nice -n 10 .venv/bin/python scripts/bench_pick_loop.py --micrographs 100 --counts 20,100 \
        --repeat 3 [--old-root /tmp/old] [--work /tmp/bench_pick_loop]

CPU seconds (user + system of the command and the children it waited for) are steadier than
wall time on a shared machine; the difference between two ``--counts`` gives the cost per
micrograph without the fixed start-up (imports).

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


def run_measured(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds of the process tree, peak tree PSS MiB, exit status)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    status = None
    while status is None:
        peak = max(peak, _tree_pss_kib(proc.pid))
        time.sleep(0.2)
        pid, raw, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status = os.waitstatus_to_exitcode(raw)
    wall = time.perf_counter() - start
    # the command's own CPU time plus that of the children it waited for (DataLoader workers)
    cpu = usage.ru_utime + usage.ru_stime
    proc.returncode = status
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if status != 0:
        print(err[-3000:], file=sys.stderr)
    return wall, cpu, peak / 1024, status


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
    parser.add_argument(
        "--counts",
        default=None,
        help="comma-separated numbers of micrographs to pick (default: all)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--old-root", type=Path, default=None, help="checkout of the old version")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_pick_loop"))
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs")
    parser.add_argument(
        "--no-workers-too", action="store_true", help="also run this checkout with num_workers=0"
    )
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    mics, model = make_data(args.work, args.micrographs)
    names = sorted(p.stem for p in mics.iterdir() if p.suffix == ".mrc")
    counts = [int(c) for c in args.counts.split(",")] if args.counts else [len(names)]
    for count in counts:
        (args.work / f"subset_{count}.txt").write_text("\n".join(names[:count]) + "\n")
    versions: dict[str, tuple[Path, list[str]]] = {"new": (REPO, [])}
    if args.no_workers_too:
        versions["new_w0"] = (REPO, ["num_workers=0"])
    if args.old_root is not None:
        versions["old"] = (args.old_root.resolve(), [])
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for k in range(args.repeat):
        for count in counts:
            for name, (root, extra) in versions.items():
                out = args.work / f"{name}_{count}_{k}"
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(root)}
                cmd = [
                    sys.executable, "-m", "topaz_lightning.cli.pick", f"model_path={model}",
                    f"micrographs={mics}", f"subset={args.work / f'subset_{count}.txt'}",
                    f"output_dir={out}", "nms_radius_px_model=7", "device=cpu", "progress=false",
                    "overwrite=true", *extra,
                ]  # fmt: skip
                wall, cpu, peak, status = run_measured(cmd, env, args.work)
                if status != 0:
                    raise SystemExit(f"{name} run {k} failed with status {status}")
                results.setdefault((name, count), []).append((wall, cpu, peak))
                print(
                    f"{name} {count} micrographs, run {k}: {wall:.1f} s wall, {cpu:.1f} s CPU, "
                    f"peak PSS {peak:.0f} MiB",
                    flush=True,
                )
    for (name, count), runs in results.items():
        wall, cpu, peak = (statistics.median(r[i] for r in runs) for i in range(3))
        print(
            f"{name} {count} micrographs: median {wall:.1f} s wall, {cpu:.1f} s CPU, "
            f"peak PSS {peak:.0f} MiB ({len(runs)} runs)"
        )
    if "old" in versions:
        for count in counts:
            same = (args.work / f"new_{count}_0" / "picks.tsv").read_bytes() == (
                args.work / f"old_{count}_0" / "picks.tsv"
            ).read_bytes()
            print(f"{count} micrographs: identical picks.tsv from both versions: {same}")


if __name__ == "__main__":
    main()
