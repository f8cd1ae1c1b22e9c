"""Automatic pi vs the truth: run topaz_lightning.pi_estimate on a dataset and report its error.

For each label count and replicate (``data.labeled_seed = seed = r``, the same labeled subsets as
``paper_tables.py``) the training data of tzl-train's config are set up, pi is estimated from the
labeled particles and the unlabeled regions only, and compared with the fraction of training
regions within the label radius of ANY annotated particle (on simulated data the complete truth;
on real data the annotated particles, a lower bound when the annotation misses particles).

Example usage::

    OMP_NUM_THREADS=1 python scripts/pi_study.py --preset demo --labels 10,100 --replicates 3
    OMP_NUM_THREADS=1 python scripts/pi_study.py --preset demo --labels 100 --steps 100,500
    OMP_NUM_THREADS=1 python scripts/pi_study.py --experiment empiar10017_table5 --labels 10,100

``--steps`` takes several training lengths (minibatches per cross-fitted fit, what
``data.pi_auto_steps`` sets); each row names the estimate, the spread of its fits, the wall time
and the CPU time of the process (the fair measure on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from topaz_lightning.cli._hydra import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.root_dir={os.getcwd()}", *overrides])


def true_pi(data_overrides: list[str]) -> float:
    """Fraction of training regions within the label radius of any annotated particle."""
    from hydra.utils import instantiate

    from topaz_lightning.data.labels import positive_masks

    cfg = _compose([*data_overrides, "data.num_labeled=null"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    shapes = {n: im.shape for n, im in dm.train_micrographs.items()}
    masks = positive_masks(shapes, dm.train_coordinates, dm.geometry.label_radius_px_model)
    return sum(int(m.sum()) for m in masks.values()) / sum(int(np.prod(s)) for s in shapes.values())


def main(argv: list[str] | None = None) -> int:
    """Print one row per (label count, replicate) and the mean absolute relative errors."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default="demo")
    src.add_argument("--experiment", default=None)
    p.add_argument("--data-dir", type=Path, default=None, help="simulated dataset directory")
    p.add_argument("--labels", default="10,100")
    p.add_argument("--replicates", type=int, default=3)
    p.add_argument(
        "--steps", default="300", help="minibatches per cross-fitted fit (comma-separated: several)"
    )
    p.add_argument("--folds", type=int, default=2)
    args = p.parse_args(argv)

    from hydra.utils import instantiate

    from topaz_lightning.pi_estimate import estimate_pi_for_datamodule

    if args.experiment:
        data = [f"experiment={args.experiment}"]
        name = args.experiment
    else:
        directory = args.data_dir or Path("data/simulated") / f"{args.preset}_seed0"
        data = [f"data.simulated_preset={args.preset}", f"data.simulated_dir={directory.resolve()}"]
        name = f"preset {args.preset}"
    truth = true_pi(data)
    lengths = [int(v) for v in str(args.steps).split(",")]
    print(f"# automatic pi on {name}: {args.folds} cross-fitted fits per estimate")
    print(f"true pi (every annotated particle, training micrographs): {truth:.5f}")
    print(
        "| labels | replicate | steps | true pi | BBE pi | BBE error | fits (spread) | "
        "Elkan-Noto pi | EN error | wall s | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    errors: dict[str, list[float]] = {"bbe": [], "en": []}
    for labels, r, steps in (
        (labels, r, steps)
        for labels in [int(v) for v in args.labels.split(",")]
        for r in range(args.replicates)
        for steps in lengths
    ):
        cfg = _compose([*data, f"data.num_labeled={labels}", f"data.labeled_seed={r}", f"seed={r}"])
        dm = instantiate(cfg.data)
        dm.setup("fit")
        start, cpu_start = time.perf_counter(), time.process_time()
        est = estimate_pi_for_datamodule(
            dm,
            lambda cfg=cfg: instantiate(cfg.model),
            steps=steps,
            folds=args.folds,
            seed=r,
        )
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        en = est.other["elkan_noto"]
        errors["bbe"].append((est.pi - truth) / truth)
        errors["en"].append((en - truth) / truth)
        fits = ", ".join(f"{v:.4f}" for v in est.fold_pi)
        print(
            f"| {labels} | {r} | {steps} | {truth:.5f} | {est.pi:.5f} | "
            f"{errors['bbe'][-1]:+.0%} | {fits} ({est.spread:.4f}) | {en:.5f} | "
            f"{errors['en'][-1]:+.0%} | {seconds:.0f} | {cpu:.0f} |",
            flush=True,
        )
    for key, label in (("bbe", "BBE"), ("en", "Elkan-Noto")):
        values = np.abs(errors[key])
        print(
            f"{label}: mean |relative error| {values.mean():.0%} (median {np.median(values):.0%})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
