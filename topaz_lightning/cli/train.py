"""tzl-train: train a positive-unlabeled particle classifier from a composed Hydra config.

Example usage:

    # default: the simulator's demo dataset, conv31 + GE-binomial, CPU, CSV logs
    tzl-train
    # paper settings on your own micrographs and coordinates
    tzl-train experiment=paper_empiar10096 data=files data.micrographs=mics/ data.coordinates=parts.star
    # continue an interrupted run (its own settings, its own directory), or train it further
    tzl-train resume=outputs/train/<time>
    tzl-train resume=outputs/train/<time> trainer.max_steps=100000
    # sweep pi with 5-fold cross-validation (locally, or on SLURM with hydra/launcher=slurm)
    tzl-train -m hparams_search=pi_kfold

Outputs in the run directory: config.yaml (resolved, stamped), checkpoints/last.ckpt (every 500
steps and every 10 minutes), training_curve.png (from the CSV log), model.pt (the classifier plus
its model card: geometry, preprocessing with the GMM fit, objective optimized, data fingerprint,
which tzl-pick reads), logs. A checkpoint given as ckpt_path is read
as untrusted input (weights only; docs/training.md, "Resume from a checkpoint").
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from topaz_lightning.cli._hydra import USER_ERRORS, entry_point
from topaz_lightning.errors import EXIT_USER_ERROR


@entry_point("train")
def run(cfg: DictConfig) -> float | None:
    """Run :func:`topaz_lightning.train.train`; return the optimized metric for Hydra sweepers."""
    from topaz_lightning.train import train

    metrics = train(cfg)
    key = cfg.get("optimized_metric")
    if key and key in metrics:
        return float(metrics[key])
    return None


def main() -> None:
    """The ``tzl-train`` command: ``resume=<run dir>`` becomes the run's own overrides
    (:func:`topaz_lightning.cli.resume.resume_command_line`), then the Hydra app runs."""
    from topaz_lightning.cli.resume import resume_command_line

    try:
        replayed = resume_command_line(sys.argv[1:])
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    if replayed is not None:
        print(f"resuming with: {' '.join(replayed)}", file=sys.stderr)
        sys.argv = [sys.argv[0], *replayed]
    run()


if __name__ == "__main__":
    main()
