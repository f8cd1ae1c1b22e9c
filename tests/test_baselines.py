"""Tests for the classical baseline pickers (DoG, template matching) against obvious references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.signal import correlate

from topaz_lightning.baselines import (
    average_precision,
    average_template,
    dog_picks,
    dog_score_map,
    template_picks,
    template_score_map,
)
from topaz_lightning.errors import InputError


def _disks(shape, centres, radius, depth=1.0, noise=0.0, seed=0) -> np.ndarray:
    yy, xx = np.indices(shape)
    image = np.zeros(shape, dtype=np.float32)
    for x, y in centres:
        image -= depth * ((xx - x) ** 2 + (yy - y) ** 2 <= radius**2)
    return image + noise * np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_dog_peaks_on_dark_disks_of_the_particle_size():
    centres = [(30, 40), (90, 70), (60, 100)]
    image = _disks((128, 128), centres, 6)
    score = dog_score_map(image, 6)
    assert score.shape == image.shape and score.dtype == np.float32
    for x, y in centres:
        window = score[y - 3 : y + 4, x - 3 : x + 4]
        assert window.max() == pytest.approx(score[y - 10 : y + 11, x - 10 : x + 11].max())
    # bright disks are not particles in underfocus
    assert dog_score_map(-image, 6)[40, 30] < 0


def test_template_score_equals_direct_cross_correlation():
    rng = np.random.default_rng(1)
    image = rng.standard_normal((40, 50)).astype(np.float32)
    template = rng.standard_normal((7, 7)).astype(np.float32)
    fast = template_score_map(image, template)
    standardized = (image - image.mean()) / image.std()
    t = template - template.mean()
    slow = correlate(standardized, t, mode="same") / np.sqrt((t**2).sum())
    np.testing.assert_allclose(fast, slow, atol=1e-4)


def test_average_template_is_rotationally_symmetric_and_dark_in_the_middle():
    centres = [(20, 20), (60, 30), (40, 60)]
    image = _disks((80, 80), centres, 5, noise=0.1)
    coords = pd.DataFrame(
        {"micrograph": "a", "x": [c[0] for c in centres], "y": [c[1] for c in centres]}
    )
    template = average_template({"a": image}, coords, box=21)
    assert template.shape == (21, 21)
    np.testing.assert_allclose(template, template.T, atol=1e-5)
    np.testing.assert_allclose(template, template[::-1, :], atol=1e-5)
    assert template[10, 10] < template[0, 10]
    with pytest.raises(InputError):
        average_template({"b": image}, coords, box=21)


def test_baselines_find_clean_particles_and_evaluate_with_aupr_one():
    rng = np.random.default_rng(2)
    centres = [(int(x), int(y)) for x, y in rng.integers(12, 116, (6, 2))]
    # keep them apart
    centres = [
        c
        for i, c in enumerate(centres)
        if all(np.hypot(c[0] - d[0], c[1] - d[1]) > 20 for d in centres[:i])
    ]
    image = _disks((128, 128), centres, 5, noise=0.05)
    truth = pd.DataFrame(
        {"micrograph": "m", "x": [c[0] for c in centres], "y": [c[1] for c in centres]}
    )
    picks = dog_picks({"m": image}, 5, nms_radius_px=8)
    assert list(picks.columns) == ["micrograph", "x", "y", "score"]
    assert average_precision(picks, truth, 3) == pytest.approx(1.0)
    template = average_template({"m": image}, truth, 15)
    picks = template_picks({"m": image}, template, nms_radius_px=8)
    assert average_precision(picks, truth, 3) == pytest.approx(1.0)


def test_bad_baseline_arguments():
    with pytest.raises(InputError, match="radius_px"):
        dog_score_map(np.zeros((10, 10)), 0)
    with pytest.raises(InputError):
        dog_score_map(np.zeros((2, 10, 10)), 3)
    with pytest.raises(InputError, match="template"):
        template_score_map(np.zeros((10, 10)), np.ones((3, 3)))
