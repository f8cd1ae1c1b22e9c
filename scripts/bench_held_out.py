"""CPU time of one held-out picking evaluation (the HeldOutPicking callback's work) on a real micrograph.

Times ``HeldOutPicking.evaluate`` (pick, gather, metrics) on one micrograph, preprocessed as
training does (Fourier-crop ``--downsample``, GMM normalization), with a trained model's network
and run geometry, in four variants:

- ``strided``: tzl-pick's default scoring, picks only (no region AUPR: what an evaluation costs
  with ``region_aupr=final`` between the end-of-training one);
- ``strided+map``: the same picks plus the dense score map for region AUPR (every evaluation
  before ``region_aupr``; the final one now);
- ``dense+region``: ``pick.scoring=dense`` with region AUPR (the map is the one picked from);
- ``dense``: ``pick.scoring=dense``, picks only (so ``dense+region - dense`` is the region AUPR
  computation itself).

Example (the EMPIAR-10017 micrograph held out by ``make demo-real``, 4096 -> 1024 px)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_held_out.py \\
        --model <make demo-real run>/train/model.pt \\
        --micrograph data/samples/empiar10017_dev/images/Falcon_2012_06_12-15_27_22_0.jpg \\
        --coordinates data/samples/empiar10017_dev/coords/Falcon_2012_06_12-15_27_22_0.csv

Prints one line per variant: the CPU seconds (``time.process_time``) of each repeat, their
minimum, and val/aupr, val/precision@0.9 and val/region_aupr (when computed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model.pt from tzl-train")
    parser.add_argument("--micrograph", required=True, help="one micrograph file")
    parser.add_argument("--coordinates", required=True, help="its true particles (any format)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--variants",
        default="strided,strided+map,dense+region,dense",
        help="comma-separated subset",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    from types import SimpleNamespace

    from topaz_lightning.callbacks import HeldOutPicking
    from topaz_lightning.geometry import RunGeometry, coordinates_to_model_frame
    from topaz_lightning.io import read_coordinates, read_micrograph
    from topaz_lightning.models import load_model
    from topaz_lightning.preprocess.pipeline import preprocess_images

    net, extra = load_model(args.model)
    geometry = RunGeometry.from_dict(extra["geometry"], source=args.model)
    path = Path(args.micrograph)
    name = path.stem
    image = preprocess_images(
        {name: read_micrograph(path)}, geometry.downsample, geometry.normalize or "gmm"
    )
    truth = read_coordinates(args.coordinates)
    truth["micrograph"] = name
    truth = coordinates_to_model_frame(truth, geometry.downsample)
    print(
        f"{name}: {image[name].shape[1]} x {image[name].shape[0]} model px, {len(truth)} "
        f"particles, {type(net).__name__}, downsample {geometry.downsample:g}, "
        f"torch threads {torch.get_num_threads()}"
    )
    # the callback as tzl-train builds it (the config node's defaults, the run geometry handed
    # over); its evaluate() is one held-out evaluation: pick, gather (one process), metrics
    trainer = SimpleNamespace(datamodule=None)
    module = SimpleNamespace(net=net, device=torch.device("cpu"))
    variants = {  # label: (pick settings, with region AUPR)
        "strided": ({}, False),
        "strided+map": ({}, True),
        "dense+region": ({"scoring": "dense"}, True),
        "dense": ({"scoring": "dense"}, False),
    }
    for label in args.variants.split(","):
        pick, region = variants[label]
        callback = HeldOutPicking(
            pick=pick, micrographs=image, coordinates=truth, geometry=geometry
        )
        seconds, metrics = [], {}
        for _ in range(args.repeats):
            start = time.process_time()
            metrics, *_ = callback.evaluate(trainer, module, region=region)
            seconds.append(time.process_time() - start)
        shown = " ".join(f"{s:.2f}" for s in seconds)
        values = " ".join(
            f"{k}={metrics[k]:.4f}"
            for k in ("val/aupr", "val/precision@0.9", "val/region_aupr")
            if k in metrics
        )
        print(f"{label:12s} CPU s per evaluation: {shown} (min {min(seconds):.2f})  {values}")


if __name__ == "__main__":
    main()
