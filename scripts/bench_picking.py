"""Benchmark picking and evaluation: NMS time/peak memory, dense scoring with Conv31, matching.

Dense scoring is timed with the default ``score_map`` (BatchNorm folded into the
convolutions) and as before (``net.fold_batchnorm = False``), for the before/after comparison.

Usage: OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_picking.py [--quick]
Prints one line per measurement with its settings. Peak memory is the largest traced numpy
allocation total above the input (tracemalloc sees numpy buffers), in MiB and in multiples of
the float32 score map.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from topaz_lightning.metrics import match_picks
from topaz_lightning.picking import non_maximum_suppression, score_micrograph


def _time(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _peak_mib(fn) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak / 2**20


def bench_nms(size: int, radius: float, kind: str, repeat: int) -> None:
    rng = np.random.default_rng(0)
    score_map = rng.normal(size=(size, size)).astype(np.float32)
    if kind == "smooth":  # closer to a CNN score map: correlated over a few pixels
        score_map = gaussian_filter(score_map, 3.0).astype(np.float32)
    n = len(non_maximum_suppression(score_map, radius)[1])
    t = _time(lambda: non_maximum_suppression(score_map, radius), repeat)
    t_seq = _time(lambda: non_maximum_suppression(score_map, radius, _dense_rounds=0), 1)
    peak = _peak_mib(lambda: non_maximum_suppression(score_map, radius))
    map_mib = score_map.nbytes / 2**20
    print(
        f"nms {kind:6s} {size}x{size} radius={radius:g}: {t:.3f} s ({n} picks); "
        f"sequential-only {t_seq:.3f} s; peak {peak:.0f} MiB = {peak / map_mib:.1f}x the float32 map",
        flush=True,
    )


def bench_scoring(size: int) -> None:
    from topaz_lightning.models import Conv31

    torch.manual_seed(0)
    net = Conv31().eval()
    image = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
    score_micrograph(net, image[:64, :64])  # warm-up
    t = _time(lambda: score_micrograph(net, image, "cpu"), 2)
    print(
        f"score_micrograph Conv31 (widths 32/64/128) {size}x{size} on CPU, "
        f"{torch.get_num_threads()} thread(s), default score_map (dilated, BatchNorm folded), "
        f"min of 2: {t:.2f} s",
        flush=True,
    )
    # before: the original dense path (BatchNorm as its own layer); same scores, a bit slower
    net.fold_batchnorm = False
    t_old = _time(lambda: score_micrograph(net, image, "cpu"), 2)
    net.fold_batchnorm = True
    print(
        f"score_micrograph Conv31 {size}x{size} before (fold_batchnorm=False), min of 2: "
        f"{t_old:.2f} s -> now {t_old / t:.2f}x faster",
        flush=True,
    )


def bench_matching(n: int) -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 4096, (n, 2))
    pred = np.concatenate([true + rng.normal(0, 3, true.shape), rng.uniform(0, 4096, (n, 2))])
    t = _time(lambda: match_picks(pred, true, 7.0), 1)
    print(f"match_picks {len(pred)} picks x {n} particles, max_distance 7: {t:.3f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1024 px only")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    for size in (1024,) if args.quick else (1024, 4096):
        for kind in ("random", "smooth"):
            bench_nms(size, 10.0, kind, repeat=3 if size <= 1024 else 1)
    bench_matching(20000)
    bench_scoring(1024)


if __name__ == "__main__":
    main()
