"""Tests for the vectorized PU patch sampler: counts, label correctness, uniformity, rotation, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from topaz_lightning.data import PUBatchDataset, PUPatchSampler, positive_mask, rotate_patches
from topaz_lightning.data.sampler import rotation_window


def index_images(shapes):
    """Micrographs whose pixel value encodes (micrograph, row, col); exact in float32 for small sizes."""
    images, start = [], 1
    for h, w in shapes:
        images.append((start + np.arange(h * w, dtype=np.float64)).reshape(h, w).astype(np.float32))
        start += h * w
    return images


def decode_centres(patches, shapes):
    """(micrograph, row, col) of each patch's centre pixel, from index_images values."""
    w = patches.shape[-1]
    values = np.rint(patches[:, 0, w // 2, w // 2].numpy()).astype(np.int64) - 1
    starts = np.cumsum([0] + [h * ww for h, ww in shapes])
    m = np.searchsorted(starts, values, side="right") - 1
    local = values - starts[m]
    widths = np.array([ww for _, ww in shapes])[m]
    return m, local // widths, local % widths


SHAPES = [(20, 20), (12, 15)]
PARTICLES = [np.array([[5.0, 6.0], [14.0, 13.0]]), np.zeros((0, 2))]


def make_sampler(**kwargs):
    images = index_images(SHAPES)
    args = dict(patch_size=7, rotate=False, mirror=False, seed=3)
    args.update(kwargs)
    return PUPatchSampler.from_coordinates(images, PARTICLES, 3, **args)


def test_batch_shape_counts_and_positives_first():
    sampler = make_sampler(rotate=True, mirror=True)
    patches, labels = sampler.batch(0)
    assert patches.shape == (256, 1, 7, 7) and patches.dtype == torch.float32
    assert labels.shape == (256,) and labels.dtype == torch.float32
    assert labels[:16].eq(1).all() and labels[16:].eq(0).all()
    small = make_sampler(n_positive=3, n_unlabeled=5)
    assert small.batch(1)[1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("rotate", [False, True])
def test_positive_centres_lie_within_radius_and_unlabeled_outside_labeled_regions(rotate):
    sampler = make_sampler(rotate=rotate, mirror=True)
    for step in range(5):
        patches, labels = sampler.batch(step)
        m, rows, cols = decode_centres(patches, SHAPES)
        pos = labels.numpy() == 1
        assert np.all(m[pos] == 0)  # only micrograph 0 has particles
        d2 = (cols[pos, None] - PARTICLES[0][None, :, 0]) ** 2 + (
            rows[pos, None] - PARTICLES[0][None, :, 1]
        ) ** 2
        assert np.all(d2.min(axis=1) <= 9)
        masks = [positive_mask(s, p, 3) for s, p in zip(SHAPES, PARTICLES, strict=True)]
        in_labeled = np.array([masks[a][b, c] for a, b, c in zip(m, rows, cols, strict=True)])
        assert not in_labeled[~pos].any()


def test_unlabeled_draws_are_uniform_over_exactly_the_unlabeled_set():
    sampler = make_sampler(n_positive=0, n_unlabeled=240)
    masks = [positive_mask(s, p, 3) for s, p in zip(SHAPES, PARTICLES, strict=True)]
    allowed = np.concatenate([(~mk).ravel() for mk in masks])
    counts = np.zeros(sum(h * w for h, w in SHAPES), dtype=np.int64)
    starts = np.cumsum([0] + [h * w for h, w in SHAPES])
    for step in range(250):
        m, rows, cols = decode_centres(sampler.batch(step)[0], SHAPES)
        widths = np.array([w for _, w in SHAPES])[m]
        np.add.at(counts, starts[m] + rows * widths + cols, 1)
    # support is exactly the unlabeled set (every region but the 58 labeled positive ones)
    np.testing.assert_array_equal(counts > 0, allowed)
    observed = counts[allowed]
    assert len(observed) == 400 - 58 + 180
    # frequencies uniform (area-weighted across the two micrographs): chi-square goodness of fit
    assert stats.chisquare(observed).pvalue > 1e-3


def test_positive_draws_are_uniform_over_all_labeled_positive_regions():
    sampler = make_sampler(n_positive=64, n_unlabeled=0)
    mask = positive_mask(SHAPES[0], PARTICLES[0], 3)
    counts = np.zeros(SHAPES[0], dtype=np.int64)
    for step in range(150):
        m, rows, cols = decode_centres(sampler.batch(step)[0], SHAPES)
        np.add.at(counts, (rows, cols), 1)
    np.testing.assert_array_equal(counts > 0, mask)
    assert stats.chisquare(counts[mask]).pvalue > 1e-3


def test_gather_matches_slicing_a_zero_padded_image():
    rng = np.random.default_rng(0)
    images = [
        rng.normal(size=(25, 30)).astype(np.float32),
        rng.normal(size=(18, 22)).astype(np.float32),
    ]
    masks = [positive_mask(im.shape, np.array([[10.0, 10.0]]), 2) for im in images]
    sampler = PUPatchSampler(images, masks, patch_size=9, rotate=False, mirror=False)
    centres = torch.tensor([[0, 1, 1, 0], [0, 17, 5, 24], [0, 21, 3, 29]])
    windows = sampler.gather(centres).numpy()
    for k, (m, y, x) in enumerate(centres.T.tolist()):
        padded = np.pad(images[m], 4)
        np.testing.assert_array_equal(windows[k], padded[y : y + 9, x : x + 9])
    flipped = sampler.gather(centres, torch.tensor([True, False, True, False])).numpy()
    np.testing.assert_array_equal(flipped[0], windows[0][:, ::-1])
    np.testing.assert_array_equal(flipped[1], windows[1])


def test_rotate_patches_is_a_rigid_rotation_about_the_centre():
    window = torch.arange(81.0).reshape(1, 1, 9, 9)
    crop = window[0, 0, 2:7, 2:7]
    no_turn = rotate_patches(window, torch.tensor([0.0]), torch.tensor([False]), 5)
    torch.testing.assert_close(no_turn[0, 0], crop)
    quarter = rotate_patches(window, torch.tensor([math.pi / 2]), torch.tensor([False]), 5)
    torch.testing.assert_close(quarter[0, 0], torch.rot90(crop, 1), atol=1e-4, rtol=0)
    mirrored = rotate_patches(window, torch.tensor([0.0]), torch.tensor([True]), 5)
    torch.testing.assert_close(mirrored[0, 0], crop.flip(-1))


def test_rotation_keeps_a_centred_symmetric_blob_centred():
    size = 64
    yy, xx = np.mgrid[:size, :size]
    particles = np.array([[20.0, 22.0], [44.0, 40.0]])
    image = np.zeros((size, size), np.float32)
    for x, y in particles:
        image += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5**2)).astype(np.float32)
    sampler = PUPatchSampler.from_coordinates(
        [image],
        [particles],
        0,
        patch_size=15,
        rotate=True,
        mirror=True,
        n_positive=32,
        n_unlabeled=0,
    )
    patches = sampler.batch(0)[0][:, 0].numpy()
    reference = image[22 - 7 : 22 + 8, 20 - 7 : 20 + 8]
    grid = np.arange(15) - 7
    for patch in patches:
        total = patch.sum()
        cy = (patch.sum(1) * grid).sum() / total
        cx = (patch.sum(0) * grid).sum() / total
        assert abs(cy) < 0.05 and abs(cx) < 0.05
        assert patch[7, 7] == pytest.approx(1.0, abs=1e-5)  # centre pixel read exactly
        np.testing.assert_allclose(patch, reference, atol=0.03)


def test_rotation_window_fits_any_angle():
    for w in (7, 31, 71):
        g = rotation_window(w)
        assert g % 2 == 1 and (g // 2) >= (w - 1) / 2 * math.sqrt(2) + 1


def test_batches_are_a_function_of_seed_rank_and_step():
    a = make_sampler(rotate=True, mirror=True)
    b = make_sampler(rotate=True, mirror=True)
    pa, _ = a.batch(7)
    pb, _ = b.batch(7)
    torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert not torch.equal(pa, a.batch(8)[0])
    other_rank = make_sampler(rotate=True, mirror=True, rank=1)
    assert not torch.equal(pa, other_rank.batch(7)[0])
    other_seed = make_sampler(rotate=True, mirror=True, seed=4)
    assert not torch.equal(pa, other_seed.batch(7)[0])


def test_dataset_resume_at_step_k_reproduces_the_uninterrupted_stream():
    sampler = make_sampler(rotate=True, mirror=True)
    dataset = PUBatchDataset(sampler, steps_per_epoch=3)
    assert len(dataset) == 3
    uninterrupted = [p for _ in range(2) for p, _ in dataset]  # two epochs: steps 0..5
    resumed = PUBatchDataset(make_sampler(rotate=True, mirror=True), steps_per_epoch=3)
    resumed.set_start_step(4)
    later = [p for p, _ in resumed]
    for got, expected in zip(later[:2], uninterrupted[4:], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    provided = PUBatchDataset(make_sampler(rotate=True, mirror=True), 3, step_provider=lambda: 2)
    torch.testing.assert_close(next(iter(provided))[0], uninterrupted[2], rtol=0, atol=0)


def test_bad_sampler_inputs():
    image = np.zeros((10, 10), np.float32)
    with pytest.raises(ValueError, match="odd"):
        PUPatchSampler([image], [np.zeros((10, 10), bool)], patch_size=8)
    with pytest.raises(ValueError, match="no labeled positive regions"):
        PUPatchSampler([image], [np.zeros((10, 10), bool)], patch_size=7)
    with pytest.raises(ValueError, match="every region is a labeled positive"):
        PUPatchSampler([image], [np.ones((10, 10), bool)], patch_size=7)
    with pytest.raises(ValueError, match="shape"):
        PUPatchSampler([image], [np.ones((10, 9), bool)], patch_size=7)
