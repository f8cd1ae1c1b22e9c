"""The class prior pi: its definition, its derivation from particles per micrograph, and its unlabeled share.

Definitions used everywhere in topaz-lightning:

- A *region* is a candidate patch centre: every pixel of every training micrograph (after any
  downsampling), ``N_regions = sum(H * W)``.
- A region is *positive* when it lies within ``radius_px`` of a particle centre (a 2-D disk of
  ``disk_area(radius_px)`` pixels, 29 at r=3).
- ``pi`` (the dataset prior) is the fraction of all regions that are positive regions of some
  particle, labeled or not. From the expected number of particles per micrograph ``n``, the quantity
  users know: ``pi = n * disk_area(radius_px) / (H * W)``.
- Unlabeled draws are uniform over all regions EXCEPT the labeled positive regions (the union of
  the labeled particles' disks, ``N_lab`` pixels). Among those, the expected positives are the
  particles nobody labeled, so the prior of a positive among unlabeled draws is
  ``pi_unlabeled = (pi * N_regions - N_lab) / (N_regions - N_lab)``. This, not ``pi``, is what
  the PU objectives receive.
"""

from __future__ import annotations

import math
import warnings

from topaz_lightning.data.labels import disk_area

#: value ``pi_unlabeled`` is clamped to when pi does not exceed the labeled fraction (with a warning)
PI_UNLABELED_EPSILON = 1e-4


class PriorWarning(UserWarning):
    """pi is inconsistent with the labels (e.g. at or below the observed labeled fraction)."""


def pi_from_particles_per_micrograph(
    particles_per_micrograph: float, shape: tuple[int, int], radius_px: float
) -> float:
    """Dataset prior ``pi = particles_per_micrograph * disk_area(radius_px) / (H * W)``.

    ``shape`` is the (H, W) of a micrograph as the classifier sees it (after downsampling); for
    micrographs of different sizes pass the mean area as ``(1, mean_H_times_W)``. Overlap between
    neighbouring particles' disks is ignored (it is small at the radii used, 3-4 px).
    """
    if not (particles_per_micrograph >= 0 and math.isfinite(particles_per_micrograph)):
        raise ValueError(
            f"particles_per_micrograph must be a finite number >= 0, got {particles_per_micrograph}"
        )
    n_regions = float(shape[0]) * float(shape[1])
    if n_regions <= 0:
        raise ValueError(f"micrograph shape must be positive, got {tuple(shape)}")
    pi = particles_per_micrograph * disk_area(radius_px) / n_regions
    if pi >= 1:
        raise ValueError(
            f"particles_per_micrograph={particles_per_micrograph} with radius_px={radius_px} covers "
            f"{pi:.3g} of a {shape[0]}x{shape[1]} micrograph (pi must be < 1)"
        )
    return float(pi)


def labeled_fraction(n_labeled_positive_regions: int, n_regions: int) -> float:
    """Observed fraction of regions that are labeled positive: ``N_lab / N_regions``."""
    if n_regions <= 0:
        raise ValueError(f"n_regions must be > 0, got {n_regions}")
    return n_labeled_positive_regions / n_regions


def unlabeled_prior(
    pi: float,
    n_labeled_positive_regions: int,
    n_regions: int,
    epsilon: float = PI_UNLABELED_EPSILON,
) -> float:
    """Prior of a positive among unlabeled draws: ``(pi*N - N_lab) / (N - N_lab)``.

    ``pi`` is the dataset prior (fraction of all ``N = n_regions`` regions that are positive),
    ``N_lab = n_labeled_positive_regions`` the number of labeled positive regions, which unlabeled
    draws never land on. When ``pi`` is at or below the observed labeled fraction ``N_lab / N``
    the formula gives ``<= 0`` (every positive is already labeled, or pi is too small): a
    :class:`PriorWarning` naming the values is issued and the result is clamped to ``epsilon``;
    the objective is not changed behind the user's back.
    """
    if not 0 < pi < 1:
        raise ValueError(f"pi must be in (0, 1), got {pi}")
    if n_regions <= 0:
        raise ValueError(f"n_regions must be > 0, got {n_regions}")
    if not 0 <= n_labeled_positive_regions < n_regions:
        raise ValueError(
            f"n_labeled_positive_regions must be in [0, n_regions={n_regions}), "
            f"got {n_labeled_positive_regions}"
        )
    n_unlabeled = n_regions - n_labeled_positive_regions
    value = (pi * n_regions - n_labeled_positive_regions) / n_unlabeled
    if value <= 0:
        observed = n_labeled_positive_regions / n_regions
        warnings.warn(
            f"pi={pi:.6g} is at or below the observed labeled fraction {observed:.6g} "
            f"({n_labeled_positive_regions} labeled positive regions of {n_regions}): the prior "
            f"of a positive among unlabeled regions would be {value:.6g}; clamping it to "
            f"{epsilon:g}. Raise pi (or particles_per_micrograph) if the micrographs hold "
            f"unlabeled particles, or use the PN objective if the labels are complete.",
            PriorWarning,
            stacklevel=2,
        )
        return float(epsilon)
    return float(value)
