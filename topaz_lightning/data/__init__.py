"""PU training data: positive-region labels, the class prior, the patch sampler and the DataModule."""

from __future__ import annotations

from topaz_lightning.data.labels import disk_area, disk_offsets, positive_mask, positive_masks
from topaz_lightning.data.prior import (
    PriorWarning,
    labeled_fraction,
    pi_from_particles_per_micrograph,
    unlabeled_prior,
)
from topaz_lightning.data.sampler import PUBatchDataset, PUPatchSampler, rotate_patches
from topaz_lightning.data.splits import kfold_split, random_split

__all__ = [
    "PUBatchDataset",
    "PUDataModule",
    "PUPatchSampler",
    "PriorWarning",
    "disk_area",
    "disk_offsets",
    "kfold_split",
    "labeled_fraction",
    "pi_from_particles_per_micrograph",
    "positive_mask",
    "positive_masks",
    "random_split",
    "rotate_patches",
    "unlabeled_prior",
]


def __getattr__(name: str):
    # the DataModule pulls in pytorch_lightning; load it only when asked for
    if name == "PUDataModule":
        from topaz_lightning.data.datamodule import PUDataModule

        return PUDataModule
    raise AttributeError(f"module 'topaz_lightning.data' has no attribute {name!r}")
