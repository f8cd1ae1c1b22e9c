"""Time forward+backward of one minibatch of patches for the classifiers on the CPU.

Example usage:
    .venv/bin/python scripts/bench_models.py --threads 2 --batch 256 --repeats 10

Each model gets patches of its receptive-field size (31 for conv31, 49 for resnet8), fp32,
in train mode, with and without channels_last; the median over ``--repeats`` timed steps is
printed after ``--warmup`` untimed ones (both layouts are warmed, then timed alternately). Also times dense scoring of one ``--image`` square
micrograph in eval mode. Numbers on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from topaz_lightning.models import Conv31, ResNet8, ResNet16


def train_step(net, patches, labels) -> float:
    """Seconds of one forward + backward (BCE loss) on one minibatch."""
    start = time.perf_counter()
    net.zero_grad(set_to_none=True)
    F.binary_cross_entropy_with_logits(net(patches), labels).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--image", type=int, default=512, help="side of the dense-scoring test image"
    )
    parser.add_argument("--models", default="conv31,resnet8")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    builders = {"conv31": Conv31, "resnet8": ResNet8, "resnet16": ResNet16}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, fp32")
    for name in args.models.split(","):
        net = builders[name]().train()
        w = net.receptive_field
        patches = torch.randn(args.batch, 1, w, w)
        labels = (torch.rand(args.batch) < 0.1).float()
        formats = {False: torch.contiguous_format, True: torch.channels_last}
        nets = {cl: copy.deepcopy(net).to(memory_format=fmt) for cl, fmt in formats.items()}
        inputs = {cl: patches.contiguous(memory_format=fmt) for cl, fmt in formats.items()}
        times = {cl: [] for cl in formats}
        # the first steps pay for oneDNN kernel selection and allocation: warm both layouts,
        # then alternate them so machine noise hits both alike
        for i in range(args.warmup + args.repeats):
            for cl in formats:
                seconds = train_step(nets[cl], inputs[cl], labels)
                if i >= args.warmup:
                    times[cl].append(seconds)
        for cl in formats:
            med, best = statistics.median(times[cl]) * 1e3, min(times[cl]) * 1e3
            print(
                f"{name:8s} {w}x{w} channels_last={cl!s:5s} fwd+bwd median {med:7.1f} ms"
                f"  min {best:7.1f} ms"
            )
        net = net.to(memory_format=torch.contiguous_format).eval()
        image = torch.randn(1, 1, args.image, args.image)
        with torch.no_grad():
            net.score_map(image[..., :64, :64])
            start = time.perf_counter()
            net.score_map(image)
        print(
            f"{name:8s} dense score_map {args.image}x{args.image}: {time.perf_counter() - start:.2f} s"
        )


if __name__ == "__main__":
    main()
