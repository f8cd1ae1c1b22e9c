"""PUDataModule's settings: their range checks, the checks against the loaded data, and the
train/validation split and labeled subsample they choose.

Plain functions of keyword values (no datamodule), so the rules read in one place and can be
tested without loading data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from topaz_lightning.data.prior import check_prior_settings
from topaz_lightning.data.splits import kfold_split, random_split
from topaz_lightning.errors import ConfigError
from topaz_lightning.geometry import check_geometry_settings
from topaz_lightning.preprocess.pipeline import NORMALIZATIONS

__all__ = [
    "NORMALIZATIONS",
    "check_data_settings",
    "check_settings_against_data",
    "choose_split",
    "sample_labeled",
]


#: patches of one kind per training step beyond which a step takes minutes on a CPU (100,000
#: labeled patches per step ran over 8 minutes a step); the paper's minibatch is 16 + 240
MAX_BATCH_PATCHES = 16384


def check_data_settings(
    *,
    pi: float | None,
    particles_per_micrograph: float | None,
    val_list: Any,
    num_val_micrographs: int | None,
    val_fraction: float | None,
    num_folds: int | None,
    num_labeled: int | None,
    batch_positive: int,
    batch_unlabeled: int,
    steps_per_epoch: int,
    patch_size: int | None,
    normalize: str,
    geometry_settings: Mapping[str, Any],
    downsample: float,
) -> None:
    """ConfigError naming the ``data.*`` key for a value out of range or a contradicting pair."""
    check_prior_settings(pi, particles_per_micrograph)
    if num_val_micrographs is not None and val_fraction is not None:
        raise ConfigError(
            "data.num_val_micrographs", "give at most one of num_val_micrographs and val_fraction"
        )
    if val_fraction is not None and not 0 <= float(val_fraction) < 1:
        raise ConfigError("data.val_fraction", f"must be in [0, 1), got {val_fraction}")
    if num_folds is not None and (
        val_list is not None or num_val_micrographs is not None or val_fraction is not None
    ):
        raise ConfigError(
            "data.num_folds",
            "k-fold picks the validation micrographs itself; do not also set val_list, "
            "num_val_micrographs or val_fraction",
        )
    if num_labeled is not None and int(num_labeled) < 1:
        raise ConfigError("data.num_labeled", f"must be >= 1 or null (all), got {num_labeled}")
    if batch_positive < 0 or batch_unlabeled < 0:
        raise ConfigError("data.batch_positive", "batch sizes must be >= 0")
    if batch_positive + batch_unlabeled == 0:
        raise ConfigError("data.batch_positive", "a minibatch needs at least one patch")
    for key, value in (
        ("data.batch_positive", batch_positive),
        ("data.batch_unlabeled", batch_unlabeled),
    ):
        if value > MAX_BATCH_PATCHES:
            raise ConfigError(
                key,
                f"{value} patches per step is beyond {MAX_BATCH_PATCHES} (the paper draws 16 "
                "labeled + 240 unlabeled); a step would take minutes",
            )
    if steps_per_epoch < 1:
        raise ConfigError("data.steps_per_epoch", f"must be >= 1, got {steps_per_epoch}")
    if patch_size is not None and (int(patch_size) < 1 or int(patch_size) % 2 == 0):
        raise ConfigError("data.patch_size", f"must be a positive odd number, got {patch_size}")
    if normalize not in NORMALIZATIONS:
        raise ConfigError(
            "data.normalize", f"must be one of {', '.join(NORMALIZATIONS)}; got {normalize!r}"
        )
    check_geometry_settings(geometry_settings, downsample)


def check_settings_against_data(
    *,
    coordinates: pd.DataFrame,
    shapes_px: Mapping[str, tuple[int, ...]],
    train_names: Sequence[str],
    val_names: Sequence[str],
    num_labeled: int | None,
    patch_size: int | None,
    downsample: float,
) -> None:
    """ConfigError for settings the data contradicts (more labeled particles than the training
    micrographs hold, a patch larger than a micrograph), before the slow preprocessing."""
    if num_labeled is not None:
        available = int(coordinates["micrograph"].isin(train_names).sum())
        if int(num_labeled) > available:
            raise ConfigError(
                "data.num_labeled",
                f"asks for {int(num_labeled)} labeled particles but the training "
                f"micrographs hold only {available}",
            )
    if patch_size is not None and shapes_px:
        smallest = min(min(shapes_px[n]) for n in list(train_names) + list(val_names))
        side = int(smallest / float(downsample))
        if int(patch_size) > side:
            raise ConfigError(
                "data.patch_size",
                f"{int(patch_size)} px is larger than the smallest micrograph side "
                f"({side} px after downsampling by {float(downsample):g})",
            )


def choose_split(
    names: list[str],
    *,
    train_list: Any,
    val_list: Any,
    source_train_list: Any,
    source_val_list: Any,
    num_folds: int | None,
    fold: int,
    num_val_micrographs: int | None,
    val_fraction: float | None,
    split_seed: int,
) -> tuple[list[str], list[str]]:
    """(training, validation) micrograph names, by the first rule that applies: k-fold
    (``num_folds``, ``fold``), ``val_list``, a random split (``num_val_micrographs`` or
    ``val_fraction``), the source's validation list, none. The training pool is ``train_list``
    (or the source's) when given, else every micrograph not held out."""
    if train_list is None and val_list is None and source_train_list is not None:
        # the source's split: its training pool; its validation list unless another split
        # is asked for
        train_list = source_train_list
        if num_folds is None and num_val_micrographs is None and val_fraction is None:
            val_list = source_val_list
    val_named: list[str] = []
    if val_list is not None:
        val_named = _name_list(val_list, names, "data.val_list")
    if train_list is not None:
        pool = _name_list(train_list, names, "data.train_list")
        overlap = sorted(set(pool) & set(val_named))
        if overlap:
            raise ConfigError(
                "data.val_list",
                f"{len(overlap)} micrograph(s) are in both train_list and val_list, "
                f"e.g. '{overlap[0]}'",
            )
    else:
        pool = [n for n in names if n not in set(val_named)]
    pool = sorted(pool)
    if num_folds is not None:
        return kfold_split(pool, int(num_folds), int(fold), split_seed)
    if val_list is not None:
        train, val = pool, sorted(val_named)
    elif num_val_micrographs is not None or val_fraction is not None:
        num_val = (
            int(num_val_micrographs)
            if num_val_micrographs is not None
            else int(round(float(val_fraction) * len(pool)))
        )
        train, val = random_split(pool, num_val, split_seed)
    else:
        train, val = pool, []
    if not train:
        raise ConfigError("data.train_list", "no training micrographs left after the split")
    return train, val


def sample_labeled(train_truth: pd.DataFrame, num_labeled: int | None, seed: int) -> pd.DataFrame:
    """``num_labeled`` particles of ``train_truth`` drawn with ``seed`` (table order kept);
    all of them when ``num_labeled`` is None."""
    if num_labeled is None:
        return train_truth
    n = int(num_labeled)
    if n > len(train_truth):
        raise ConfigError(
            "data.num_labeled",
            f"asks for {n} labeled particles but the training micrographs hold only "
            f"{len(train_truth)}",
        )
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(train_truth), size=n, replace=False))
    return train_truth.iloc[keep].reset_index(drop=True)


def _name_list(source: Any, known: list[str], key: str) -> list[str]:
    from topaz_lightning.io.micrographs import read_micrograph_names

    return list(dict.fromkeys(read_micrograph_names(source, known=known, key=key)))
