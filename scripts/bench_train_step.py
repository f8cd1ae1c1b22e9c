"""Benchmark one PU training step (minibatch 16 + 240) per model and the share spent drawing patches.

Example usage:

    .venv/bin/python scripts/bench_train_step.py                       # conv31 and resnet8, CPU
    .venv/bin/python scripts/bench_train_step.py --models conv31 --steps 20 --threads 1
    .venv/bin/python scripts/bench_train_step.py --device cuda --decoder
    .venv/bin/python scripts/bench_train_step.py --models conv31 --memory-format contiguous

A step is what PULitModule does per minibatch: sampler.batch(step) (gather + random rotation of
256 patches, one indexed read), forward, objective (GE-binomial when available), backward, Adam.
Micrographs are synthetic (N(0,1) noise + bright blobs), 8 of 1024 x 1024 by default, the size of
a 4x-downsampled EMPIAR-10096 micrograph. Reports medians over the timed steps after warm-up.

It also prints the framework overhead ratio per model (target <= 1.25; ``--no-overhead`` skips
it): the median wall time of one step of ``Trainer.fit`` (Lightning, the patch sampler feeding it
through the DataModule's step dataset, logging of the loss terms; measured from one
``on_train_batch_end`` to the next, so drawing the next batch is included) divided by the median
of a bare PyTorch step (forward, objective, backward, Adam) on one fixed batch of the same
sampler, with the same model and optimizer. Bare steps are timed before and after the Lightning
run and pooled, so a change in machine load affects both sides.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from topaz_lightning.models.base import MEMORY_FORMATS, use_channels_last


def synthetic(n: int, size: int, particles: int, seed: int = 0):
    """``n`` noise micrographs with ``particles`` Gaussian blobs each, and their (x, y) centres."""
    rng = np.random.default_rng(seed)
    images, coords = [], []
    for _ in range(n):
        xy = rng.uniform(20, size - 20, size=(particles, 2))
        image = rng.normal(0, 1, (size, size)).astype(np.float32)
        images.append(image)
        coords.append(xy)
    return images, coords


def objective():
    """GE-binomial if the objectives package is present, else a PN stand-in."""
    try:
        from topaz_lightning.objectives import GEBinomial

        return GEBinomial()
    except ImportError:

        class PN(torch.nn.Module):
            def forward(self, logits, labels, pi):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
                return loss, {"pn": loss.detach()}

        return PN()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Time ``args.steps`` steps of model ``name``; return medians in milliseconds."""
    from topaz_lightning import models
    from topaz_lightning.module import PULitModule

    device = torch.device(args.device)
    net = _net(name)
    decoder = models.Decoder(net.num_features, net.receptive_field) if args.decoder else None
    module = PULitModule(
        net, objective(), None, pi_unlabeled=0.02, decoder=decoder, num_labeled_particles=100
    ).to(device)
    module.finalize()
    module.train()
    # the layout Trainer.fit gives the weights (PULitModule.configure_model)
    if use_channels_last(args.memory_format, device.type):
        module.to(memory_format=torch.channels_last)
    optimizer = module.configure_optimizers()
    images, coords = synthetic(args.micrographs, args.size, args.particles)
    sampler = _sampler(images, coords, net, device)
    sample_ms, compute_ms = [], []
    for step in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        patches, labels = sampler.batch(step)
        sync(device)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss, _ = module.compute_loss(patches, labels)
        loss.backward()
        optimizer.step()
        sync(device)
        t2 = time.perf_counter()
        if step >= args.warmup:
            sample_ms.append((t1 - t0) * 1e3)
            compute_ms.append((t2 - t1) * 1e3)
    sample = statistics.median(sample_ms)
    compute = statistics.median(compute_ms)
    total = [s + c for s, c in zip(sample_ms, compute_ms, strict=True)]
    return {
        "step_ms": statistics.median(total),
        "step_ms_min": min(total),
        "sample_ms": sample,
        "compute_ms": compute,
        "sample_share": sample / (sample + compute),
    }


# the overhead ratio's clock: wall (perf_counter) or, with --cpu-clock, this process's CPU time,
# steadier on a machine shared with other jobs (with one torch thread the two agree when idle)
CLOCK = time.perf_counter


def overhead(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Median ms of a Lightning training step (incl. sampling) and of a bare PyTorch step."""
    import copy

    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from topaz_lightning.data.sampler import PUBatchDataset
    from topaz_lightning.module import PULitModule

    torch.manual_seed(0)
    net = _net(name)
    images, coords = synthetic(args.micrographs, args.size, args.particles)
    sampler = _sampler(images, coords, net, "cpu")
    steps = args.warmup + args.steps

    def bare_block() -> list[float]:
        bare_net = copy.deepcopy(net)
        bare_net.train()
        if use_channels_last(args.memory_format, "cpu"):  # the layout the Lightning run gets
            bare_net.to(memory_format=torch.channels_last)
        obj = objective()
        optimizer = torch.optim.Adam(bare_net.parameters(), lr=2e-4)
        patches, labels = sampler.batch(0)
        times = []
        for step in range(steps):
            t0 = CLOCK()
            optimizer.zero_grad(set_to_none=True)
            loss, _ = obj(bare_net(patches), labels, 0.02)
            loss.backward()
            optimizer.step()
            if step >= args.warmup:
                times.append((CLOCK() - t0) * 1e3)
        return times

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_batch_end(self, *_: object) -> None:
            self.marks.append(CLOCK())

    bare = bare_block()
    module = PULitModule(
        copy.deepcopy(net),
        objective(),
        None,
        pi_unlabeled=0.02,
        num_labeled_particles=100,
        memory_format=args.memory_format,
    )
    clock = Clock()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
        num_sanity_val_steps=0,
    )
    loader = DataLoader(PUBatchDataset(sampler, steps + 1), batch_size=None, num_workers=0)
    trainer.fit(module, train_dataloaders=loader)
    bare += bare_block()
    diffs = [(b - a) * 1e3 for a, b in zip(clock.marks, clock.marks[1:], strict=False)]
    lightning = diffs[args.warmup :] or diffs
    return {
        "lightning_ms": statistics.median(lightning),
        "bare_ms": statistics.median(bare),
        "ratio": statistics.median(lightning) / statistics.median(bare),
    }


def _net(name: str) -> torch.nn.Module:
    from topaz_lightning.models import MODELS

    return MODELS[name]()


def _sampler(images, coords, net: torch.nn.Module, device):
    """The paper's minibatch (16 positive + 240 unlabeled patches), label radius 3 px."""
    from topaz_lightning.data.sampler import PUPatchSampler

    return PUPatchSampler.from_coordinates(
        images,
        coords,
        radius_px_model=3,
        patch_size=net.receptive_field,
        n_positive=16,
        n_unlabeled=240,
        device=device,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["conv31", "resnet8"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--memory-format",
        default="auto",
        choices=MEMORY_FORMATS,
        help="weights' layout (module.memory_format; auto: channels_last on the CPU), both sides",
    )
    parser.add_argument("--decoder", action="store_true", help="include the autoencoder head")
    parser.add_argument(
        "--bf16", action="store_true", help="bf16 autocast (trainer.precision=bf16-mixed)"
    )
    parser.add_argument(
        "--no-overhead", action="store_true", help="skip the Lightning/bare step ratio"
    )
    parser.add_argument(
        "--cpu-clock",
        action="store_true",
        help="time the overhead ratio with process CPU time instead of wall time",
    )
    parser.add_argument("--micrographs", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--particles", type=int, default=250)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"batch=16+240 decoder={args.decoder} bf16={args.bf16} micrographs={args.micrographs}x{args.size}^2"
    )
    print(
        f"{'model':<10}{'step ms':>10}{'min ms':>10}{'sample ms':>11}{'compute ms':>12}{'sample %':>10}"
    )
    for name in args.models:
        r = bench(name, args)
        print(
            f"{name:<10}{r['step_ms']:>10.1f}{r['step_ms_min']:>10.1f}{r['sample_ms']:>11.1f}"
            f"{r['compute_ms']:>12.1f}{100 * r['sample_share']:>9.1f}%"
        )
    if args.no_overhead or args.device != "cpu":
        return
    global CLOCK
    CLOCK = time.process_time if args.cpu_clock else time.perf_counter
    clock = "CPU" if args.cpu_clock else "wall"
    print(
        "framework overhead: Lightning step incl. sampling / bare PyTorch step "
        f"(target <= 1.25; {clock} clock)"
    )
    for name in args.models:
        r = overhead(name, args)
        print(
            f"overhead ratio {name}: {r['ratio']:.3f} "
            f"(Lightning {r['lightning_ms']:.1f} ms, bare {r['bare_ms']:.1f} ms, median of "
            f"{args.steps} steps)"
        )


if __name__ == "__main__":
    main()
