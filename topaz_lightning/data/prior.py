"""The class prior pi: its definition, its one check, its resolution from settings or data, and its unlabeled share.

Definitions used everywhere in topaz-lightning:

- A *region* is a candidate patch centre: every pixel of every training micrograph in the model
  frame (after downsampling), ``N_regions = sum(H * W)``.
- A region is *positive* when it lies within ``label_radius_px_model`` of a particle centre (a
  2-D disk of ``geometry.disk_area(r)`` pixels, 29 at r=3).
- ``pi`` (the dataset prior) is the fraction of all regions that are positive regions of some
  particle, labeled or not. From the expected number of particles per micrograph ``n``, the quantity
  users know: ``pi = n * disk_area(r) / (H * W)``.
- Unlabeled draws are uniform over all regions EXCEPT the labeled positive regions (the union of
  the labeled particles' disks, ``N_lab`` pixels). Among those, the expected positives are the
  particles nobody labeled, so the prior of a positive among unlabeled draws is
  ``pi_unlabeled = max(0, (pi * N_regions - N_lab) / (N_regions - N_lab))``. This, not ``pi``, is
  what the PU objectives receive. It is 0 when every positive is labeled (pi at or below the
  labeled fraction).
- Annotations are never complete, so a pi from the user's settings at (or just above) the labeled
  fraction may mean "the user counted the labeled particles" rather than "nothing is left to
  find". With ``module.min_unlabeled_per_labeled = r > 0`` the LightningModule keeps at least r
  unlabeled positive regions per labeled one (:func:`prior_with_room`:
  ``pi_unlabeled >= r * N_lab / (N_regions - N_lab)``) and says so, never for a simulated
  dataset's recorded truth (:func:`pi_is_an_estimate`). The default r is 0 (the PN objective when
  pi is at the labeled fraction, as Topaz does): on the EMPIAR-10017 folds the room won in one
  fold and lost in another (docs/accuracy.md, "pi with complete annotation").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from topaz_lightning.errors import ConfigError, check_number
from topaz_lightning.geometry import disk_area

#: ``pi_source`` of a prior from the user's settings (:func:`resolve_pi`); ``data.pi=auto`` hands
#: its estimate on as ``data.pi``
PI_SETTING = "data.pi"
PARTICLES_SETTING = "data.particles_per_micrograph"


def pi_is_an_estimate(pi_source: str | None) -> bool:
    """True when pi came from the user's settings (a count, often of the labeled particles) or
    from an unknown source; False for a dataset's recorded prior (a simulated dataset.yaml, whose
    truth is complete), which the floor of :func:`prior_with_room` leaves alone."""
    return pi_source is None or pi_source.split("=")[0] in (PI_SETTING, PARTICLES_SETTING)


def check_prior_settings(
    pi: float | None, particles_per_micrograph: float | None, key_prefix: str = "data."
) -> None:
    """The one check of the user's prior settings: at most one of them, pi in (0, 1), n > 0."""
    if pi is not None and particles_per_micrograph is not None:
        raise ConfigError(
            f"{key_prefix}pi", "give at most one of pi and particles_per_micrograph, not both"
        )
    if pi is not None:
        try:
            ok = 0 < float(pi) < 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"{key_prefix}pi", f"must be in (0, 1), got {pi!r}")
    if particles_per_micrograph is not None:
        try:
            n = float(particles_per_micrograph)
            ok = n > 0 and math.isfinite(n)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                f"{key_prefix}particles_per_micrograph",
                f"must be a number > 0, got {particles_per_micrograph!r}",
            )


def pi_from_particles_per_micrograph(
    particles_per_micrograph: float,
    shape: tuple[float, float],
    label_radius_px_model: float,
    key: str = "data.particles_per_micrograph",
) -> float:
    """Dataset prior ``pi = particles_per_micrograph * disk_area(label_radius_px_model) / (H * W)``.

    ``shape`` is the (H, W) of a micrograph as the classifier sees it (model frame); for
    micrographs of different sizes pass the mean area as ``(1, mean_H_times_W)``. Overlap between
    neighbouring particles' disks is ignored (it is small at the radii used, 3-4 px). A result
    >= 1 is a ConfigError naming ``key``.
    """
    if not (particles_per_micrograph >= 0 and math.isfinite(particles_per_micrograph)):
        raise ValueError(
            f"particles_per_micrograph must be a finite number >= 0, got {particles_per_micrograph}"
        )
    n_regions = float(shape[0]) * float(shape[1])
    if n_regions <= 0:
        raise ValueError(f"micrograph shape must be positive, got {tuple(shape)}")
    pi = particles_per_micrograph * disk_area(label_radius_px_model) / n_regions
    if pi >= 1:
        raise ConfigError(
            key,
            f"{particles_per_micrograph} particles with label radius {label_radius_px_model} model px cover "
            f"{pi:.3g} of a micrograph of {n_regions:.0f} model pixels (pi must be < 1)",
        )
    return float(pi)


def expected_particles_per_micrograph(
    pi: float, shape_px_model: tuple[float, float], label_radius_px_model: float
) -> float:
    """Particles a micrograph of ``shape_px_model`` (H, W, model frame) holds at prior ``pi``:
    ``pi * H * W / disk_area(label_radius_px_model)``, the inverse of
    :func:`pi_from_particles_per_micrograph` (what ``tzl-pick`` keeps by default)."""
    area = disk_area(label_radius_px_model)
    if not (0 <= pi < 1) or area <= 0:
        raise ValueError(
            f"need 0 <= pi < 1 and a label radius > 0, got {pi}, {label_radius_px_model}"
        )
    return float(pi) * float(shape_px_model[0]) * float(shape_px_model[1]) / area


def labeled_fraction(n_labeled_positive_regions: int, n_regions: int) -> float:
    """Observed fraction of regions that are labeled positive: ``N_lab / N_regions``."""
    if n_regions <= 0:
        raise ValueError(f"n_regions must be > 0, got {n_regions}")
    return n_labeled_positive_regions / n_regions


def dataset_prior(pi_unlabeled: float, num_labeled_regions: int, num_regions: int) -> float:
    """``pi`` from the prior among unlabeled regions: ``(pi_u (N - N_lab) + N_lab) / N`` (the
    inverse of :func:`unlabeled_prior` above the labeled fraction)."""
    return float(
        (pi_unlabeled * (num_regions - num_labeled_regions) + num_labeled_regions) / num_regions
    )


def _check_region_counts(n_labeled_positive_regions: int, n_regions: int) -> None:
    """``0 <= N_lab < N`` and ``N > 0`` (ValueError: a caller's bug, not user input)."""
    if n_regions <= 0:
        raise ValueError(f"n_regions must be > 0, got {n_regions}")
    if not 0 <= n_labeled_positive_regions < n_regions:
        raise ValueError(
            f"n_labeled_positive_regions must be in [0, n_regions={n_regions}), "
            f"got {n_labeled_positive_regions}"
        )


def unlabeled_prior(pi: float, n_labeled_positive_regions: int, n_regions: int) -> float:
    """Prior of a positive among unlabeled draws: ``max(0, (pi*N - N_lab) / (N - N_lab))``.

    ``pi`` is the dataset prior (fraction of all ``N = n_regions`` regions that are positive),
    ``N_lab = n_labeled_positive_regions`` the number of labeled positive regions, which unlabeled
    draws never land on. When ``pi`` is at or below the observed labeled fraction ``N_lab / N``
    every positive is already labeled: the result is 0.0 (no clamp, no warning here; the
    LightningModule switches to the PN objective and logs it).
    """
    if not 0 < pi < 1:
        raise ValueError(f"pi must be in (0, 1), got {pi}")
    _check_region_counts(n_labeled_positive_regions, n_regions)
    n_unlabeled = n_regions - n_labeled_positive_regions
    value = (pi * n_regions - n_labeled_positive_regions) / n_unlabeled
    return float(max(0.0, value))


def resolve_pi(
    pi: float | None,
    particles_per_micrograph: float | None,
    dataset: Mapping[str, Any] | None,
    label_radius_px_model: float,
    downsample: float,
    mean_area_px_model: float,
    dataset_source: str = "dataset.yaml",
) -> tuple[float, str]:
    """The dataset prior and where it came from, first that applies: ``pi``;
    ``particles_per_micrograph``; the dataset's ``suggested_pi`` (only when its label radius and
    frame are the run's: downsample 1 and the same label radius); the dataset's expected particles
    per micrograph. Settings are assumed checked (:func:`check_prior_settings`).
    """
    if pi is not None:
        return float(pi), PI_SETTING
    if particles_per_micrograph is not None:
        n = float(particles_per_micrograph)
        value = pi_from_particles_per_micrograph(n, (1, mean_area_px_model), label_radius_px_model)
        return value, f"{PARTICLES_SETTING}={n:g}"
    info = dataset or {}
    suggested = info.get("suggested_pi", info.get("pi"))
    native_radius = info.get("label_radius_px")
    if (
        suggested is not None
        and float(downsample) == 1.0
        and native_radius is not None
        and float(native_radius) == float(label_radius_px_model)
    ):
        return float(suggested), f"{dataset_source} suggested_pi"
    per_mic = info.get("mean_particles_per_micrograph", info.get("particles_per_micrograph"))
    if per_mic is not None:
        value = pi_from_particles_per_micrograph(
            float(per_mic), (1, mean_area_px_model), label_radius_px_model, key="data.pi"
        )
        return value, f"{dataset_source} particles per micrograph ({float(per_mic):g})"
    raise ConfigError(
        "data.pi",
        "set data.pi (fraction of regions that are positive) or data.particles_per_micrograph "
        f"(expected particles per micrograph; pi = n * {disk_area(label_radius_px_model)} / (H*W) "
        "in model pixels)",
    )


#: default of ``module.min_unlabeled_per_labeled``: the unlabeled particles assumed at least, per
#: labeled one, when pi leaves less room (docs/accuracy.md, "pi with complete annotation")
DEFAULT_MIN_UNLABELED_PER_LABELED = 0.0


def check_min_unlabeled_per_labeled(
    value: Any, key: str = "module.min_unlabeled_per_labeled"
) -> float:
    """The setting as a float >= 0 (0 = trust pi as given: PN when pi is at the labeled fraction)."""
    return float(check_number(key, value, 0))


@dataclass(frozen=True)
class PriorWithRoom:
    """The priors an objective trains with after :func:`prior_with_room`."""

    #: dataset prior consistent with ``pi_unlabeled``: ``(N_lab + pi_unlabeled (N - N_lab)) / N``
    pi: float
    #: prior of a positive among unlabeled draws
    pi_unlabeled: float
    #: True when the floor raised the priors given
    raised: bool
    #: unlabeled positive regions per labeled one that the given ``pi_unlabeled`` implied
    given_unlabeled_per_labeled: float


def prior_with_room(
    pi_unlabeled: float,
    n_labeled_positive_regions: int,
    n_regions: int,
    min_unlabeled_per_labeled: float,
    key: str = "module.min_unlabeled_per_labeled",
) -> PriorWithRoom:
    """Raise ``pi_unlabeled`` so that at least ``r = min_unlabeled_per_labeled`` unlabeled positive
    regions remain per labeled positive region: ``pi_unlabeled >= r * N_lab / (N - N_lab)``.

    Equivalently pi >= (1 + r) * the labeled fraction. Priors already above the floor come back
    unchanged (``raised=False``; ``pi`` then is the dataset prior they imply). ``r = 0`` never
    raises. A floor that would reach 1 (labels covering more than ``1 / (1 + r)`` of the regions)
    is a ConfigError naming ``key``.
    """
    room = check_min_unlabeled_per_labeled(min_unlabeled_per_labeled, key)
    _check_region_counts(n_labeled_positive_regions, n_regions)
    if not 0 <= pi_unlabeled < 1:
        raise ValueError(f"pi_unlabeled must be in [0, 1), got {pi_unlabeled}")
    n_unlabeled = n_regions - n_labeled_positive_regions
    given = (
        pi_unlabeled * n_unlabeled / n_labeled_positive_regions
        if n_labeled_positive_regions
        else math.inf
    )
    floor = room * n_labeled_positive_regions / n_unlabeled
    if floor >= 1:
        raise ConfigError(
            key,
            f"the labels cover {n_labeled_positive_regions} of {n_regions} regions: "
            f"{room:g} unlabeled positives per labeled one do not fit; lower the setting",
        )
    raised = pi_unlabeled < floor
    value = floor if raised else float(pi_unlabeled)
    pi = dataset_prior(value, n_labeled_positive_regions, n_regions)
    return PriorWithRoom(pi, float(value), raised, float(given))


def room_for_unlabeled(
    geometry: Any, pi_unlabeled: float, min_unlabeled_per_labeled: float
) -> PriorWithRoom | None:
    """The raised priors when the floor of :func:`prior_with_room` applies to a run geometry
    (``RunGeometry``: ``pi_source``, ``num_regions``, ``num_labeled_positive_regions``), else None:
    none for r = 0, an unknown region count, a simulated dataset's recorded pi, or a prior
    already above the floor."""
    g = geometry
    if (
        min_unlabeled_per_labeled <= 0
        or g is None
        or not g.num_regions
        or g.num_labeled_positive_regions is None
        or not pi_is_an_estimate(g.pi_source)
    ):
        return None
    room = prior_with_room(
        pi_unlabeled,
        int(g.num_labeled_positive_regions),
        int(g.num_regions),
        min_unlabeled_per_labeled,
    )
    return room if room.raised else None


def room_message(
    geometry: Any, room: PriorWithRoom, min_unlabeled_per_labeled: float, objective: str
) -> str:
    """The one warning line when :func:`room_for_unlabeled` raised the priors."""
    pi = "unknown" if geometry.pi is None else f"{geometry.pi:.4g}"
    return (
        f"pi={pi} ({geometry.pi_source or 'run geometry'}) leaves "
        f"{room.given_unlabeled_per_labeled:.3g} unlabeled particles per labeled one: annotations "
        f"are rarely complete, so {objective} trains with at least {min_unlabeled_per_labeled:g} "
        f"per labeled one, pi={room.pi:.4g}, pi_unlabeled={room.pi_unlabeled:.4g} "
        "(module.min_unlabeled_per_labeled; set it to 0, or objective=pn, to treat every unlabeled "
        "region as a negative)"
    )
