"""Time forward+backward of one minibatch of patches for the classifiers on the CPU.

Example usage:
    .venv/bin/python scripts/bench_models.py --threads 2 --batch 256 --repeats 10
    .venv/bin/python scripts/bench_models.py --skip-train --threads 1 --image 512,1024

Each model gets patches of its receptive-field size (31 for conv31, 71 for resnet8, 49 for resnet8_prelu), fp32,
in train mode, with and without channels_last; the median over ``--repeats`` timed steps is
printed after ``--warmup`` untimed ones (both layouts are warmed, then timed alternately).
Then dense scoring (``score_map``, eval mode, ``torch.inference_mode``) of one square
micrograph per ``--image`` side is timed, minimum over ``--score-repeats`` runs, for each
``--methods`` entry: ``before`` (the original path: strides -> dilations, BatchNorm as a
separate layer, i.e. ``method="dilated"`` with ``net.fold_batchnorm = False``), ``dilated``
(the default: BatchNorm folded into the convolutions) and ``polyphase`` (undilated
convolutions on polyphase components, BatchNorm folded). Each is printed with its speed-up
over ``before``. Numbers on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from topaz_lightning.models import MODELS


def train_step(net, patches, labels) -> float:
    """Seconds of one forward + backward (BCE loss) on one minibatch."""
    start = time.perf_counter()
    net.zero_grad(set_to_none=True)
    F.binary_cross_entropy_with_logits(net(patches), labels).backward()
    return time.perf_counter() - start


def time_score_map(net, image, method: str, repeats: int) -> float:
    """Minimum seconds over ``repeats`` calls of ``net.score_map`` with ``method`` (``before``
    is ``dilated`` without BatchNorm folding)."""
    net.fold_batchnorm = method != "before"
    method = "dilated" if method == "before" else method
    try:
        with torch.inference_mode():
            net.score_map(image[..., :64, :64], method=method)  # oneDNN set-up, allocator
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                net.score_map(image, method=method)
                best = min(best, time.perf_counter() - start)
    finally:
        net.fold_batchnorm = True
    return best


def bench_scoring(name: str, net, sizes: list[int], methods: list[str], repeats: int) -> None:
    """Print the dense-scoring time of each method on random square images of each size."""
    net = net.to(memory_format=torch.contiguous_format).eval()
    for size in sizes:
        image = torch.randn(1, 1, size, size)
        times = {}
        for method in methods:
            times[method] = time_score_map(net, image, method, repeats)
            ratio = f" ({times['before'] / times[method]:.2f}x before)" if "before" in times else ""
            print(
                f"{name:8s} dense score_map {size}x{size} {method:9s} "
                f"min of {repeats}: {times[method]:6.2f} s{ratio}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--image", default="1024", help="comma-separated sides of the dense-scoring test images"
    )
    parser.add_argument(
        "--methods", default="before,dilated,polyphase", help="before, dilated, polyphase"
    )
    parser.add_argument("--score-repeats", type=int, default=2)
    parser.add_argument("--skip-train", action="store_true", help="time dense scoring only")
    parser.add_argument("--models", default="conv31,resnet8")
    args = parser.parse_args()
    sizes = [int(s) for s in args.image.split(",")]
    methods = args.methods.split(",")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    builders = MODELS
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, fp32")
    for name in args.models.split(","):
        net = builders[name]().train()
        if args.skip_train:
            bench_scoring(name, net, sizes, methods, args.score_repeats)
            continue
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
        bench_scoring(name, net, sizes, methods, args.score_repeats)


if __name__ == "__main__":
    main()
