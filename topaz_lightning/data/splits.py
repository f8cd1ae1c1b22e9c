"""Splitting micrographs into training and validation sets: name lists, random hold-out, k folds."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.io.coordinates import micrograph_name_from_reference as _name_of


def read_name_list(
    source: str | os.PathLike | Iterable[str], known: Iterable[str], key: str
) -> list[str]:
    """Micrograph names from a list file (one name or path per line; ``#`` comments) or a list.

    A path entry is reduced to its micrograph name (file stem). Every name must be in ``known``;
    otherwise :class:`InputError` names the file and line (or ``ConfigError`` names ``key`` for an
    in-memory list). Duplicates are dropped, order kept.
    """
    known = set(known)
    names: list[str] = []
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"micrograph name list for '{key}' not found", path)
        entries = [
            (f"line {i}", line.strip())
            for i, line in enumerate(path.read_text().splitlines(), start=1)
        ]
        entries = [(w, e) for w, e in entries if e and not e.startswith("#")]
        if not entries:
            raise InputError(f"micrograph name list for '{key}' is empty", path)
        for where, entry in entries:
            name = _name_of(entry)
            if name not in known:
                raise InputError(
                    f"micrograph '{name}' is not among the micrographs ({_show(sorted(known))})",
                    path,
                    where,
                )
            names.append(name)
    else:
        for i, entry in enumerate(source):
            name = _name_of(str(entry))
            if name not in known:
                raise ConfigError(
                    f"{key}[{i}]",
                    f"micrograph '{name}' is not among the micrographs ({_show(sorted(known))})",
                )
            names.append(name)
        if not names:
            raise ConfigError(key, "the micrograph list is empty")
    return list(dict.fromkeys(names))


def _show(names: Sequence[str]) -> str:
    return "known: " + ", ".join(repr(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")


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
