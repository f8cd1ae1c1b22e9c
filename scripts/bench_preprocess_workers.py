"""Time tzl-preprocess's per-micrograph work in worker threads vs spawned worker processes.

tzl-preprocess runs its workers as threads (nothing can outlive a killed run); this checks that
threads are not slower than processes, i.e. that the reading, FFT and writing release the GIL.

Example usage:
    nice -n 10 .venv/bin/python scripts/bench_preprocess_workers.py
    .venv/bin/python scripts/bench_preprocess_workers.py --micrographs 16 --size 4096 --workers 1 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from topaz_lightning.io.micrographs import write_micrograph
from topaz_lightning.preprocess.files import _write_job


def _run(pool_kind: str, workers: int, jobs: list[tuple]) -> float:
    start = time.perf_counter()
    if workers == 1:
        for job in jobs:
            _write_job(job)
    elif pool_kind == "threads":
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(_write_job, jobs))
    else:
        # the pool start-up (spawn + imports) is part of what a run pays
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            list(pool.map(_write_job, jobs))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micrographs", type=int, default=8)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--downsample", type=float, default=2.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = []
        for k in range(args.micrographs):
            path = root / "in" / f"mic{k:03d}.mrc"
            path.parent.mkdir(exist_ok=True)
            write_micrograph(path, rng.normal(size=(args.size, args.size)).astype(np.float32))
            sources.append(path)
        print(
            f"{args.micrographs} MRC micrographs {args.size}x{args.size}, downsample "
            f"{args.downsample:g}, normalize standardize, {os.cpu_count()} CPUs visible, "
            f"median of {args.repeats}"
        )
        for workers in args.workers:
            for kind in ("threads", "processes") if workers > 1 else ("serial",):
                times = []
                for r in range(args.repeats):
                    out = root / f"out_{kind}_{workers}_{r}"
                    out.mkdir()
                    jobs = [
                        (p, out / p.name, p.stem, args.downsample, "standardize", None)
                        for p in sources
                    ]
                    times.append(_run(kind, workers, jobs))
                med = statistics.median(times)
                print(
                    f"workers={workers} {kind:9s}: {med:6.2f} s "
                    f"({med / args.micrographs * 1000:.0f} ms per micrograph)"
                )


if __name__ == "__main__":
    main()
