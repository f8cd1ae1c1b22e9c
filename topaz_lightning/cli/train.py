"""tzl-train: train a positive-unlabeled particle classifier from a composed Hydra config.

Example usage:

    # default: the simulator's demo dataset, conv31 + GE-binomial, CPU, CSV logs
    tzl-train
    # paper settings on your own micrographs and coordinates
    tzl-train experiment=paper_empiar10096 data=files data.micrographs=mics/ data.coordinates=parts.star
    # a quick run, then resume it to more steps
    tzl-train debug=fast
    tzl-train hydra.run.dir=outputs/train/<run> ckpt_path=last trainer.max_steps=200
    # sweep pi with 5-fold cross-validation (locally, or on SLURM with hydra/launcher=slurm)
    tzl-train -m hparams_search=pi_kfold

Outputs in the run directory: config.yaml (resolved, stamped), checkpoints/last.ckpt,
model.pt (the classifier plus its model card: geometry, preprocessing with the GMM fit, objective
optimized, data fingerprint, which tzl-pick reads), logs. A checkpoint given as ckpt_path is read
as untrusted input (weights only; docs/training.md, "Resume").
"""

from __future__ import annotations

from omegaconf import DictConfig

from topaz_lightning.cli._hydra import entry_point


@entry_point("train")
def main(cfg: DictConfig) -> float | None:
    """Run :func:`topaz_lightning.train.train`; return the optimized metric for Hydra sweepers."""
    from topaz_lightning.train import train

    metrics = train(cfg)
    key = cfg.get("optimized_metric")
    if key and key in metrics:
        return float(metrics[key])
    return None


if __name__ == "__main__":
    main()
