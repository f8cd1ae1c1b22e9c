"""GPU benchmark of training steps and dense picking: fp32, channels_last, bf16 and fp16 autocast.

Example usage:

    .venv/bin/python scripts/bench_gpu.py                          # conv31 and resnet8
    .venv/bin/python scripts/bench_gpu.py --models resnet8 --steps 200 --micrographs 16

Runs unchanged wherever ``torch.cuda.is_available()``; elsewhere it prints "no CUDA device" and
exits with status 0 (so ``make bench`` passes on CPU-only machines).

Training: the micrographs live on the device (``PUPatchSampler(device="cuda")``), so patch
gathering, random rotation and mirroring run there too; one step = sampler.batch + forward +
GE-binomial + backward + Adam, exactly PULitModule.compute_loss. Picking: dense scoring of whole
1024 x 1024 micrographs already on the device (``net.score_map``, eval mode, no gradients).
Each variant reports the median over the timed iterations after warm-up (CUDA-synchronized),
steps/s or micrographs/s, and the peak device memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch

VARIANTS = ("fp32", "channels_last", "bf16", "fp16", "channels_last+bf16")


def make_net(name: str) -> torch.nn.Module:
    from topaz_lightning.models import MODELS

    return MODELS[name]()


def settings(variant: str) -> tuple[bool, torch.dtype | None]:
    """(channels_last, autocast dtype or None) of a variant name."""
    parts = set(variant.split("+"))
    dtype = torch.bfloat16 if "bf16" in parts else torch.float16 if "fp16" in parts else None
    return "channels_last" in parts, dtype


def synthetic(n: int, size: int, particles: int, device: torch.device):
    """Noise micrographs (already on ``device``) and random particle centres."""
    rng = np.random.default_rng(0)
    images = [torch.randn(size, size, device=device) for _ in range(n)]
    coords = [rng.uniform(20, size - 20, size=(particles, 2)) for _ in range(n)]
    return images, coords


DEVICE = torch.device("cuda")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, iterations: int, warmup: int) -> list[float]:
    """Seconds per call of ``fn`` (synchronized), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def bench_train(name: str, variant: str, args: argparse.Namespace) -> dict[str, float]:
    from topaz_lightning.data.sampler import PUPatchSampler
    from topaz_lightning.module import PULitModule
    from topaz_lightning.objectives import GEBinomial

    device = DEVICE
    channels_last, dtype = settings(variant)
    torch.manual_seed(0)
    net = make_net(name)
    module = PULitModule(net, GEBinomial(), None, pi_unlabeled=0.02, num_labeled_particles=100)
    module.finalize()
    module.to(device).train()
    if channels_last:
        module.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(module.parameters(), lr=2e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    images, coords = synthetic(args.micrographs, args.size, args.particles, device)
    sampler = PUPatchSampler.from_coordinates(
        images,
        coords,
        radius_px_model=3,
        patch_size=net.receptive_field,
        n_positive=16,
        n_unlabeled=240,
        device=device,
    )
    state = {"step": 0}

    def step() -> None:
        patches, labels = sampler.batch(state["step"])
        state["step"] += 1
        if channels_last:
            patches = patches.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        ctx = torch.autocast(DEVICE.type, dtype=dtype) if dtype is not None else nullcontext()
        with ctx:
            loss, _ = module.compute_loss(patches, labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    _reset_peak()
    times = timed(step, args.steps, args.warmup)
    return {"rate": 1.0 / statistics.median(times), "peak_gib": _peak()}


def bench_pick(name: str, variant: str, args: argparse.Namespace) -> dict[str, float]:
    device = DEVICE
    channels_last, dtype = settings(variant)
    torch.manual_seed(0)
    net = make_net(name).to(device).eval()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    images = torch.randn(args.pick_micrographs, 1, args.size, args.size, device=device)
    state = {"i": 0}

    @torch.no_grad()
    def score() -> None:
        image = images[state["i"] % len(images)][None]
        state["i"] += 1
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(DEVICE.type, dtype=dtype) if dtype is not None else nullcontext()
        with ctx:
            net.score_map(image, tile_size=args.tile_size)

    _reset_peak()
    times = timed(score, args.pick_iterations, args.warmup)
    return {"rate": 1.0 / statistics.median(times), "peak_gib": _peak()}


def _reset_peak() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE.type == "cuda" else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["conv31", "resnet8"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--micrographs", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--particles", type=int, default=250)
    parser.add_argument("--pick-micrographs", type=int, default=4)
    parser.add_argument("--pick-iterations", type=int, default=20)
    parser.add_argument("--tile-size", type=int, default=None, help="score_map tile (null: whole)")
    parser.add_argument(
        "--device", default="cuda", help="cuda (default); cpu only to smoke-test this script"
    )
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to benchmark (torch.cuda.is_available() is False)")
        return 0
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else "cpu"
    print(
        f"device={name} torch={torch.__version__} "
        f"cuda={torch.version.cuda} batch=16+240 micrographs={args.micrographs}x{args.size}^2 "
        f"(resident on the device)"
    )
    print(
        f"{'model':<10}{'variant':<20}{'train steps/s':>14}{'GiB':>7}{'pick mics/s':>13}{'GiB':>7}"
    )
    for name in args.models:
        base = None
        for variant in args.variants:
            try:
                train = bench_train(name, variant, args)
                pick = bench_pick(name, variant, args)
            except RuntimeError as err:  # e.g. a dtype the device does not support
                print(f"{name:<10}{variant:<20} failed: {str(err).splitlines()[0][:80]}")
                continue
            base = base or (train["rate"], pick["rate"])
            print(
                f"{name:<10}{variant:<20}{train['rate']:>14.1f}{train['peak_gib']:>7.2f}"
                f"{pick['rate']:>13.2f}{pick['peak_gib']:>7.2f}"
                f"   (x{train['rate'] / base[0]:.2f} train, x{pick['rate'] / base[1]:.2f} pick "
                f"vs {args.variants[0]})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
