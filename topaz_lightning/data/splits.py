"""Splitting micrographs into training and validation sets: random hold-out and k folds (name lists: io.read_micrograph_names)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from topaz_lightning.errors import ConfigError


def random_split(names: Sequence[str], num_val: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Hold out ``num_val`` micrographs chosen with ``seed``; returns sorted (train, val) names."""
    names = sorted(names)
    if not 0 <= num_val < len(names):
        raise ConfigError(
            "num_val_micrographs",
            f"must be in [0, {len(names)}) for {len(names)} micrographs (at least one must train), "
            f"got {num_val}",
        )
    order = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in order[:num_val])
    train = sorted(set(names) - set(val))
    return train, val


def kfold_split(
    names: Sequence[str], num_folds: int, fold: int, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split micrographs into ``num_folds`` folds (shuffled with ``seed``); fold ``fold`` validates.

    Folds are disjoint, differ in size by at most one, and together cover every micrograph.
    Returns sorted (train, val) names.
    """
    names = sorted(names)
    if not 2 <= num_folds <= len(names):
        raise ConfigError(
            "num_folds",
            f"must be between 2 and the number of micrographs ({len(names)}), got {num_folds}",
        )
    if not 0 <= fold < num_folds:
        raise ConfigError(
            "fold", f"must be in [0, {num_folds}) for num_folds={num_folds}, got {fold}"
        )
    order = np.random.default_rng(seed).permutation(len(names))
    folds = np.array_split(order, num_folds)
    val = sorted(names[i] for i in folds[fold])
    train = sorted(set(names) - set(val))
    return train, val


def record_split(output_dir: Path, datamodule, geometry, write: bool = True) -> None:
    """Name the held-out micrographs and the particle size in the log, and write the split as
    ``train_micrographs.txt`` / ``val_micrographs.txt`` (name lists for ``tzl-evaluate
    micrographs=`` and ``tzl-pick subset=``: evaluate only what the model did not train on), and
    ``unlabeled_micrographs.txt`` when ``data.unlabeled_micrographs`` gave some."""
    from topaz_lightning.utils.atomic import atomic_output

    splits = {
        "train": list(getattr(datamodule, "train_micrographs", {}) or {}),
        "val": list(getattr(datamodule, "val_micrographs", {}) or {}),
    }
    shown = ", ".join(splits["val"][:10]) + (" ..." if len(splits["val"]) > 10 else "")
    diameter = getattr(geometry, "particle_radius_px", None)
    logging.getLogger("topaz_lightning").info(
        "held out for validation: %d micrograph(s)%s; particle diameter %s micrograph px",
        len(splits["val"]),
        f" ({shown})" if shown else "",
        "unknown" if diameter is None else f"{2 * diameter:g}",
    )
    unlabeled = list(getattr(datamodule, "unlabeled_micrographs", {}) or {})
    if unlabeled:  # micrographs that gave only unlabeled patches (data.unlabeled_micrographs)
        splits["unlabeled"] = unlabeled
    if not write:  # the extra DDP ranks only log
        return
    for role, names in splits.items():
        with atomic_output(output_dir / f"{role}_micrographs.txt", overwrite=True) as tmp:
            tmp.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
