"""Tests for positive-region labels (2-D disks) and the class prior formulas."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from topaz_lightning.data import (
    check_prior_settings,
    labeled_fraction,
    pi_from_particles_per_micrograph,
    positive_mask,
    positive_masks,
    unlabeled_prior,
)
from topaz_lightning.errors import ConfigError
from topaz_lightning.geometry import disk_area, disk_offsets


def slow_positive_mask(shape, xy, radius):
    """Obvious reference: every pixel against every (pixel-snapped) particle."""
    mask = np.zeros(shape, dtype=bool)
    for x, y in np.asarray(xy, dtype=float).reshape(-1, 2):
        cx, cy = np.rint(x), np.rint(y)
        for row in range(shape[0]):
            for col in range(shape[1]):
                if (row - cy) ** 2 + (col - cx) ** 2 <= radius**2:
                    mask[row, col] = True
    return mask


@pytest.mark.parametrize("radius,count", [(0, 1), (1, 5), (2, 13), (3, 29), (4, 49), (3.5, 37)])
def test_disk_area_is_a_2d_disk(radius, count):
    assert disk_area(radius) == count
    offsets = disk_offsets(radius)
    assert len(np.unique(offsets, axis=0)) == count
    assert np.all((offsets**2).sum(1) <= radius**2)


def test_one_particle_marks_29_pixels_at_r3_and_49_at_r4():
    xy = np.array([[20.0, 15.0]])
    assert positive_mask((40, 50), xy, 3).sum() == 29
    assert positive_mask((40, 50), xy, 4).sum() == 49
    # not a 3-D ball (123 voxels at r=3) and not a square (49 at r=3)
    mask = positive_mask((40, 50), xy, 3)
    assert mask[15, 20] and mask[15, 23] and mask[18, 20] and mask[17, 22]  # 2^2 + 2^2 <= 9
    assert not mask[15, 24] and not mask[18, 22]  # 4 px away; 3^2 + 2^2 > 9


def test_positive_mask_matches_slow_reference_on_random_particles():
    rng = np.random.default_rng(0)
    for trial in range(5):
        shape = (int(rng.integers(10, 30)), int(rng.integers(10, 30)))
        n = int(rng.integers(0, 6))
        xy = rng.uniform(-0.4, 1, size=(n, 2)) * [shape[1] - 1, shape[0] - 1]
        radius = float(rng.choice([0, 1, 2.5, 3, 4]))
        expected = slow_positive_mask(shape, xy, radius)
        np.testing.assert_array_equal(
            positive_mask(shape, xy, radius), expected, err_msg=f"{trial}"
        )


def test_disks_clip_at_border_and_merge_when_overlapping():
    corner = positive_mask((10, 10), np.array([[0.0, 0.0]]), 3)
    assert corner.sum() == 11  # the quarter disk: 29 -> 11 pixels inside the image
    both = positive_mask((30, 30), np.array([[10.0, 10.0], [12.0, 10.0]]), 3)
    single = positive_mask((30, 30), np.array([[10.0, 10.0]]), 3)
    assert single.sum() < both.sum() < 2 * 29


def test_coordinates_are_snapped_to_their_pixel():
    a = positive_mask((20, 20), np.array([[7.4, 9.6]]), 3)
    b = positive_mask((20, 20), np.array([[7.0, 10.0]]), 3)
    np.testing.assert_array_equal(a, b)


def test_pi_from_particles_per_micrograph():
    assert pi_from_particles_per_micrograph(80, (512, 512), 3) == pytest.approx(80 * 29 / 512**2)
    assert pi_from_particles_per_micrograph(290, (928, 960), 4) == pytest.approx(
        290 * 49 / (928 * 960)
    )
    with pytest.raises(ConfigError, match="particles_per_micrograph.*pi must be < 1"):
        pi_from_particles_per_micrograph(10, (10, 10), 3)


def test_unlabeled_prior_equals_the_positive_share_of_the_unlabeled_set():
    """Brute force: with pi = the true positive fraction, pi_unlabeled is exactly the fraction
    of truly positive regions among the regions unlabeled draws can land on."""
    rng = np.random.default_rng(1)
    shape = (60, 70)
    truth = rng.uniform(5, 55, size=(12, 2))
    truth_mask = positive_mask(shape, truth, 3)
    labeled_mask = positive_mask(shape, truth[:4], 3)
    n_regions = truth_mask.size
    pi = truth_mask.mean()
    unlabeled = ~labeled_mask
    expected = truth_mask[unlabeled].mean()
    got = unlabeled_prior(pi, int(labeled_mask.sum()), n_regions)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got < pi
    assert labeled_fraction(int(labeled_mask.sum()), n_regions) == pytest.approx(
        labeled_mask.mean()
    )


def test_unlabeled_prior_with_nothing_labeled_is_pi():
    assert unlabeled_prior(0.02, 0, 1000) == pytest.approx(0.02)


def test_unlabeled_prior_is_zero_when_pi_at_or_below_labeled_fraction():
    # every positive already labeled: exactly 0 (the module switches to PN), no clamp, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert unlabeled_prior(0.01, 20, 1000) == 0.0
        assert unlabeled_prior(0.02, 20, 1000) == 0.0  # exactly equal: nothing left to find
        assert unlabeled_prior(0.03, 20, 1000) == pytest.approx(10 / 980)


@pytest.mark.parametrize(
    "pi,n,match",
    [
        (0.1, 5, "at most one"),
        (1.0, None, r"data.pi.*\(0, 1\)"),
        (0.0, None, r"data.pi.*\(0, 1\)"),
        ("x", None, "data.pi"),
        (None, -3, "data.particles_per_micrograph"),
        (None, float("inf"), "data.particles_per_micrograph"),
    ],
)
def test_prior_settings_are_checked_once_with_the_key(pi, n, match):
    with pytest.raises(ConfigError, match=match):
        check_prior_settings(pi, n)


@pytest.mark.parametrize("pi", [0.0, 1.0, -0.1, float("nan")])
def test_unlabeled_prior_rejects_impossible_pi(pi):
    with pytest.raises(ValueError, match="pi must be in"):
        unlabeled_prior(pi, 0, 100)


def test_positive_masks_per_micrograph_from_a_table():
    import pandas as pd

    table = pd.DataFrame(
        {
            "micrograph": ["a", "a", "b", "elsewhere"],
            "x": [2.0, 9.0, 4.0, 1.0],
            "y": [3.0, 5.0, 0.0, 1.0],
        }
    )
    shapes = {"a": (8, 12), "b": (6, 7), "empty": (5, 5)}
    masks = positive_masks(shapes, table, 2.0)
    assert sorted(masks) == ["a", "b", "empty"]
    np.testing.assert_array_equal(masks["a"], slow_positive_mask((8, 12), [[2, 3], [9, 5]], 2.0))
    np.testing.assert_array_equal(masks["b"], slow_positive_mask((6, 7), [[4, 0]], 2.0))
    assert masks["empty"].shape == (5, 5) and not masks["empty"].any()
