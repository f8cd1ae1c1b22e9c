"""PU training data: positive-region labels, the class prior, the patch sampler and the DataModule."""

from __future__ import annotations

from topaz_lightning.data.labels import positive_mask, positive_masks
from topaz_lightning.data.prior import (
    check_prior_settings,
    labeled_fraction,
    pi_from_particles_per_micrograph,
    resolve_pi,
    unlabeled_prior,
)
from topaz_lightning.data.sampler import PUBatchDataset, PUPatchSampler, rotate_patches
from topaz_lightning.data.splits import kfold_split, random_split

__all__ = [
    "FileSource",
    "FilesDataModule",
    "PUBatchDataset",
    "PUDataModule",
    "PUPatchSampler",
    "SimulatedDataModule",
    "SimulatedSource",
    "check_prior_settings",
    "kfold_split",
    "labeled_fraction",
    "pi_from_particles_per_micrograph",
    "positive_mask",
    "positive_masks",
    "random_split",
    "resolve_pi",
    "rotate_patches",
    "unlabeled_prior",
]


_SOURCES = ("FileSource", "SimulatedSource")
_MODULES = ("FilesDataModule", "SimulatedDataModule")


def __getattr__(name: str):
    # the DataModule pulls in pytorch_lightning; load it only when asked for
    if name == "PUDataModule":
        from topaz_lightning.data.datamodule import PUDataModule

        return PUDataModule
    if name in _SOURCES:
        from topaz_lightning.data import sources

        return getattr(sources, name)
    if name in _MODULES:
        from topaz_lightning.data import modules

        return getattr(modules, name)
    raise AttributeError(f"module 'topaz_lightning.data' has no attribute {name!r}")
