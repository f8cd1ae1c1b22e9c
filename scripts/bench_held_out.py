"""CPU time of one held-out picking evaluation (the HeldOutPicking callback's work) on a real micrograph.

Times ``callbacks.held_out.pick_shard`` + ``compute_metrics`` on one micrograph, preprocessed as
training does (Fourier-crop ``--downsample``, GMM normalization), with a trained model's network
and run geometry, in three variants:

- ``strided``: tzl-pick's default scoring, picks only (no region AUPR: what an evaluation costs
  with ``region_aupr=final`` between the end-of-training one);
- ``strided+map``: the same picks plus the dense score map for region AUPR (every evaluation
  before ``region_aupr``; the final one now);
- ``dense``: ``pick.scoring=dense`` with region AUPR (the map is the one picked from).

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
        "--variants", default="strided,strided+map,dense", help="comma-separated subset"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    from topaz_lightning.callbacks.held_out import compute_metrics, pick_shard
    from topaz_lightning.geometry import RunGeometry, coordinates_to_model_frame
    from topaz_lightning.io import read_coordinates, read_micrograph
    from topaz_lightning.models import load_model
    from topaz_lightning.picking.settings import PickSettings
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
    radius = float(geometry.nms_radius_px_model)
    region_radius = float(geometry.label_radius_px_model)
    variants = {
        "strided": (PickSettings(nms_radius_px_model=radius), None),
        "strided+map": (PickSettings(nms_radius_px_model=radius), region_radius),
        "dense": (PickSettings(nms_radius_px_model=radius, scoring="dense"), region_radius),
    }
    for label in args.variants.split(","):
        settings, region = variants[label]
        seconds, metrics = [], {}
        for _ in range(args.repeats):
            start = time.process_time()
            shard, _ = pick_shard(net, image, truth, [name], settings, region)
            metrics, _ = compute_metrics(shard, truth, float(geometry.match_distance_px_model))
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
