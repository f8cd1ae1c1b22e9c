"""Coarse-to-fine scoring and 8-fold TTA against dense scoring: maps, the flood-fill guarantee, picks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy import ndimage

from tests.conftest import randomize_batchnorm
from topaz_lightning.errors import ConfigError
from topaz_lightning.models import Conv31, ResNet8
from topaz_lightning.picking import non_maximum_suppression, score_micrograph
from topaz_lightning.picking.coarse import (
    coarse_scores,
    coarse_to_fine_score_map,
    dihedral,
    dihedral_inverse,
    native_stride,
)
from topaz_lightning.picking.scoring import fill_unscored, scoring_level

# ResNet8 (receptive field 49) costs several times Conv31 per test: it runs under `make test-slow`
NETS = [Conv31, pytest.param(ResNet8, marks=pytest.mark.slow)]
MODEL_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "model").glob("*.yaml"))


def _randomize(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights with non-trivial BatchNorm statistics, eval mode."""
    torch.manual_seed(seed)
    randomize_batchnorm(net, seed)
    return net.eval()


def _net(net_cls, seed: int) -> torch.nn.Module:
    """``net_cls()`` built from a fixed seed (not the test order's global RNG), randomized."""
    torch.manual_seed(seed)
    return _randomize(net_cls(), seed)


def _smooth_kernels(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random channel mixing times one Gaussian spatial profile per kernel: a random net whose
    score map is smooth (little aliasing between the polyphase components), like a trained one
    at the particle scale, so that its regions above a level hold coarse samples."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            out_ch, in_ch, k, _ = m.weight.shape
            c = torch.arange(k) - k // 2
            profile = torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * (k / 4) ** 2))
            mix = torch.randn(out_ch, in_ch, 1, 1, generator=gen)
            m.weight.data.copy_(mix * profile / (in_ch**0.5 * profile.sum()))
    return net


def _micrograph(seed: int, shape=(90, 107), n_blobs: int = 8) -> np.ndarray:
    """Smooth background plus a few Gaussian blobs (particle-like score peaks), float32."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.normal(size=shape), 3.0) * 3
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(n_blobs):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        image -= 2.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 4.0**2))
    return image.astype(np.float32)


def _dense(net, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net.score_map(torch.from_numpy(image)[None, None])[0].numpy()


def _c2f(net, image: np.ndarray, level: float, **kw):
    with torch.inference_mode():
        return coarse_to_fine_score_map(net, torch.from_numpy(image), level, **kw)


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_coarse_samples_are_the_dense_scores_on_the_stride_grid(config):
    torch.manual_seed(0)
    net = _randomize(instantiate(OmegaConf.load(config)), 0)
    s = native_stride(net)
    image = np.random.default_rng(1).normal(size=(37, 50)).astype(np.float32)
    dense = _dense(net, image)
    with torch.inference_mode():
        coarse = coarse_scores(net, torch.from_numpy(image)[None, None])[0].numpy()
    assert coarse.shape == (math.ceil(37 / s), math.ceil(50 / s))
    np.testing.assert_allclose(coarse, dense[::s, ::s], atol=1e-4)


@pytest.mark.parametrize("net_cls", NETS)
def test_scored_values_are_dense_values_and_level_minus_inf_scores_everything(net_cls):
    net = _net(net_cls, 2)
    image = _micrograph(3)
    dense = _dense(net, image)
    full = _c2f(net, image, -math.inf, fine_tile=8, max_tile_share=1.0)
    assert full.fraction_scored == 1.0
    np.testing.assert_allclose(full.score_map, dense, atol=1e-4)
    part = _c2f(net, image, float(np.quantile(dense, 0.9)), fine_tile=8, max_tile_share=1.0)
    scored = np.isfinite(part.score_map)
    assert 0 < part.fraction_scored < 1
    np.testing.assert_allclose(part.score_map[scored], dense[scored], atol=1e-4)


@pytest.mark.parametrize("net_cls", NETS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flood_fill_scores_every_region_above_level_that_holds_a_sample(net_cls, seed):
    """The guarantee itself: each 8-connected region with dense score >= level that contains a
    coarse sample is scored in full (checked pixel by pixel against the dense map)."""
    net = _net(net_cls, seed)
    s = native_stride(net)
    image = _micrograph(10 + seed)
    dense = _dense(net, image)
    grew = False
    for q in (0.6, 0.85, 0.97):
        level = float(np.quantile(dense, q))
        result = _c2f(net, image, level, fine_tile=8, max_tile_share=1.0)
        regions, _ = ndimage.label(dense >= level, structure=np.ones((3, 3)))
        sampled = np.unique(regions[::s, ::s])
        must = np.isin(regions, sampled[sampled > 0])
        assert must.any()
        assert np.isfinite(result.score_map[must]).all(), f"level {level}: region left unscored"
        grew |= result.rounds >= 2
    assert grew, "no case exercised the growing step"


@pytest.mark.parametrize("net_cls", NETS)
@pytest.mark.parametrize("fine_tile", [8, 16])
def test_coarse_to_fine_picks_equal_dense_picks_above_level(net_cls, fine_tile):
    radius = 6.0
    checked = 0
    for seed in range(3):
        net = _smooth_kernels(_net(net_cls, seed), seed)
        s = native_stride(net)
        image = _micrograph(seed, shape=(120, 96), n_blobs=10)
        dense = _dense(net, image)
        ref_xy, ref_scores = non_maximum_suppression(dense, radius)
        for q in (0.5, 0.8, 0.95):
            level = float(np.quantile(dense, q))
            regions, n = ndimage.label(dense >= level, structure=np.ones((3, 3)))
            if len(np.setdiff1d(np.arange(1, n + 1), regions[::s, ::s])):
                continue  # a region between samples: outside the guarantee (next test)
            result = _c2f(net, image, level, fine_tile=fine_tile, max_tile_share=1.0)
            assert result.fraction_scored < 1
            xy, scores = non_maximum_suppression(result.score_map, radius)
            keep, ref_keep = scores >= level, ref_scores >= level
            assert ref_keep.sum() >= 2
            np.testing.assert_array_equal(xy[keep], ref_xy[ref_keep])
            np.testing.assert_allclose(scores[keep], ref_scores[ref_keep], atol=1e-5)
            checked += 1
    assert checked >= 4, "the smooth nets should keep most regions sampled"


def test_region_between_samples_is_the_stated_limit():
    """A peak between coarse samples whose region above the level holds no sample is not found
    (the documented limit): the flood fill seeds from samples only."""
    net = _net(Conv31, 5)
    image = _micrograph(7, shape=(120, 96), n_blobs=10)
    dense = _dense(net, image)
    s = native_stride(net)
    peak = np.unravel_index(np.argmax(dense), dense.shape)
    assert peak[0] % s or peak[1] % s, "choose an image whose best pixel is off the grid"
    neighbours = dense[max(peak[0] - 1, 0) : peak[0] + 2, max(peak[1] - 1, 0) : peak[1] + 2]
    below = max(np.sort(neighbours.ravel())[-2], dense[::s, ::s].max())
    level = float(below + dense[peak]) / 2  # the region above it is the peak pixel alone
    result = _c2f(net, image, level, fine_tile=8, max_tile_share=1.0)
    assert not np.isfinite(result.score_map[peak])
    assert non_maximum_suppression(dense, 6.0, level)[1].size == 1
    assert non_maximum_suppression(result.score_map, 6.0, level)[1].size == 0


def test_tta_averages_the_eight_rotations_and_mirrors_of_each_patch():
    net = _net(Conv31, 0)
    image = _micrograph(4, shape=(45, 52))
    scores = score_micrograph(net, image, tta=8)
    r = net.receptive_field // 2
    padded = torch.nn.functional.pad(torch.from_numpy(image), (r, r, r, r))
    for y, x in [(0, 0), (10, 33), (44, 51), (20, 5)]:
        patch = padded[y : y + 2 * r + 1, x : x + 2 * r + 1][None, None]
        with torch.inference_mode():
            expected = torch.cat([net(dihedral(patch, k)) for k in range(8)]).mean()
        assert scores[y, x] == pytest.approx(float(expected), abs=1e-4)
    # the 8 transforms are distinct and each inverse undoes its transform
    t = torch.arange(12.0).view(3, 4)
    assert len({tuple(dihedral(t, k).flatten().tolist()) for k in range(8)}) == 8
    for k in range(8):
        assert torch.equal(dihedral_inverse(dihedral(t, k), k), t)


@pytest.mark.parametrize("net_cls", NETS)
def test_coarse_to_fine_with_tta_matches_dense_tta(net_cls):
    net = _net(net_cls, 1)
    image = _micrograph(6, shape=(61, 70))
    dense8 = score_micrograph(net, image, tta=8)
    full = score_micrograph(net, image, scoring="coarse_to_fine", tta=8, level=-math.inf)
    np.testing.assert_allclose(full, dense8, atol=1e-4)
    s = native_stride(net)
    with torch.inference_mode():
        part = coarse_to_fine_score_map(
            net, torch.from_numpy(image), float(np.quantile(dense8, 0.9)), 8, 8, max_tile_share=1
        )
    np.testing.assert_allclose(part.coarse, dense8[::s, ::s], atol=1e-4)
    scored = np.isfinite(part.score_map)
    np.testing.assert_allclose(part.score_map[scored], dense8[scored], atol=1e-4)


def test_pick_threshold_sets_the_level_and_nms_matches_dense():
    net = _smooth_kernels(_net(Conv31, 0), 0)
    image = _micrograph(0, shape=(120, 96), n_blobs=10)
    dense = score_micrograph(net, image)
    threshold = float(np.quantile(dense, 0.9))
    sparse = score_micrograph(
        net, image, scoring="coarse_to_fine", threshold=threshold, seed_margin=0.0, fine_tile=8
    )
    assert np.isinf(sparse).any()
    ref = non_maximum_suppression(dense, 6.0, threshold)
    got = non_maximum_suppression(sparse, 6.0, threshold)
    np.testing.assert_array_equal(got[0], ref[0])
    assert scoring_level(None, threshold) == threshold
    assert scoring_level(-1.5) == -1.5


def test_large_share_falls_back_to_dense():
    net = _net(Conv31, 0)
    image = _micrograph(3)
    result = _c2f(net, image, -math.inf, fine_tile=8)  # every tile: over the default share
    assert result.fraction_scored == 1.0
    np.testing.assert_allclose(result.score_map, _dense(net, image), atol=1e-4)


def test_bad_settings_are_config_errors():
    net = _net(Conv31, 0)
    image = np.zeros((40, 40), np.float32)
    with pytest.raises(ConfigError, match="scoring"):
        score_micrograph(net, image, scoring="sparse")
    with pytest.raises(ConfigError, match="tta"):
        score_micrograph(net, image, tta=4)

    class Plain(torch.nn.Module):
        def score_map(self, x):
            return x[:, 0]

    with pytest.raises(ConfigError, match="dense"):
        score_micrograph(Plain(), image, scoring="coarse_to_fine")
    assert score_micrograph(Plain(), image).shape == (40, 40)  # dense needs only score_map


def test_fill_unscored_fills_from_the_nearest_scored_pixel():
    score_map = np.full((5, 6), -np.inf, np.float32)
    score_map[0, 0], score_map[4, 5] = 1.0, 2.0
    filled = fill_unscored(score_map)
    assert np.isfinite(filled).all()
    assert filled[0, 1] == 1.0 and filled[4, 4] == 2.0 and filled[0, 0] == 1.0
