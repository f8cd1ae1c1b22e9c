"""Time the PU patch sampler: one 16 + 240 minibatch from a few 1024x1024 micrographs, per setting.

Example usage:
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_sampler.py
    .venv/bin/python scripts/bench_sampler.py --micrographs 8 --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from topaz_lightning.data import PUPatchSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micrographs", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument(
        "--particles", type=int, default=200, help="labeled particles per micrograph"
    )
    parser.add_argument("--radius", type=float, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--patch-sizes", type=int, nargs="+", default=[31, 71])
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = [
        rng.normal(size=(args.size, args.size)).astype(np.float32) for _ in range(args.micrographs)
    ]
    coords = [rng.uniform(10, args.size - 10, size=(args.particles, 2)) for _ in images]
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
        f"{args.micrographs} micrographs {args.size}x{args.size}, {args.particles} particles each, "
        f"radius {args.radius:g}, minibatch 16 + 240, {args.steps} timed steps"
    )
    for patch_size in args.patch_sizes:
        for rotate, mirror in ((True, True), (False, True), (False, False)):
            start = time.perf_counter()
            sampler = PUPatchSampler.from_coordinates(
                images,
                coords,
                args.radius,
                patch_size=patch_size,
                rotate=rotate,
                mirror=mirror,
                device=args.device,
            )
            build = time.perf_counter() - start
            sampler.batch(0)  # warm-up
            sync = torch.cuda.synchronize if sampler.device.type == "cuda" else (lambda: None)
            sync()
            start = time.perf_counter()
            for step in range(1, args.steps + 1):
                patches, labels = sampler.batch(step)
            sync()
            per_batch = (time.perf_counter() - start) / args.steps
            print(
                f"patch {patch_size:3d}  rotate={rotate!s:5}  mirror={mirror!s:5}  "
                f"{per_batch * 1e3:7.2f} ms / 256-patch minibatch  (setup {build:.2f} s)"
            )


if __name__ == "__main__":
    main()
