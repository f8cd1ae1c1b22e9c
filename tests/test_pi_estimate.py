"""Tests for the automatic class prior (topaz_lightning.pi_estimate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tests.helpers import add_gaussian_blobs
from topaz_lightning.data.labels import positive_masks
from topaz_lightning.pi_estimate import (
    bbe_mixture_proportion,
    dataset_prior,
    elkan_noto_mixture_proportion,
    estimate_pi,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("pi_u", [0.02, 0.1, 0.3])
def test_bbe_recovers_the_mixture_proportion(pi_u):
    rng = np.random.default_rng(0)
    n_u = 200_000
    n_pos = int(pi_u * n_u)
    # positives score high; the top bin is (almost) pure positive, as BBE assumes
    unlabeled = np.concatenate([rng.normal(4, 1, n_pos), rng.normal(0, 1, n_u - n_pos)])
    positives = rng.normal(4, 1, 5000)
    estimate = bbe_mixture_proportion(positives, unlabeled)
    assert estimate == pytest.approx(pi_u, abs=0.15 * pi_u + 0.005)
    # the ratio bounds the truth from above on average: never far below it
    assert estimate > 0.8 * pi_u


def test_bbe_with_overlapping_classes_overestimates_not_underestimates():
    rng = np.random.default_rng(1)
    unlabeled = np.concatenate([rng.normal(1, 1, 10_000), rng.normal(0, 1, 90_000)])
    estimate = bbe_mixture_proportion(rng.normal(1, 1, 3000), unlabeled)
    assert 0.1 - 0.02 < estimate < 0.6


def test_bbe_input_checks():
    with pytest.raises(ValueError):
        bbe_mixture_proportion(np.array([]), np.ones(3))
    with pytest.raises(ValueError):
        bbe_mixture_proportion(np.ones(3), np.ones(3), delta=0)
    # identical distributions: everything unlabeled looks positive
    assert bbe_mixture_proportion(np.arange(100.0), np.arange(100.0)) == pytest.approx(1.0)


def test_elkan_noto_and_dataset_prior_formulas():
    lam = 16 / 256
    # c = lam / (lam + (1 - lam) pi_u) for a perfectly calibrated, separable classifier
    pi_u = 0.05
    c = lam / (lam + (1 - lam) * pi_u)
    assert elkan_noto_mixture_proportion(np.full(10, c), lam) == pytest.approx(pi_u)
    with pytest.raises(ValueError):
        elkan_noto_mixture_proportion(np.ones(3), 0)
    # pi of all regions from pi_u of the regions outside N_lab labeled ones
    assert dataset_prior(0.0, 10, 1000) == pytest.approx(0.01)
    assert dataset_prior(0.1, 100, 1000) == pytest.approx((0.1 * 900 + 100) / 1000)


class _TinyNet(nn.Module):
    """A 5x5 linear filter: enough to find bright blobs, fast to train."""

    receptive_field = 5

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 5)

    def forward(self, patches):
        return self.conv(patches).flatten()

    def score_map(self, images, tile_size=None):
        return nn.functional.conv2d(images, self.conv.weight, self.conv.bias, padding=2)[:, 0]


def _blob_micrographs(seed=0, n_mic=2, size=128, per_mic=40):
    rng = np.random.default_rng(seed)
    images, rows = {}, []
    for m in range(n_mic):
        noise = rng.normal(0, 1, (size, size))
        centres = [rng.uniform(6, size - 6, 2) for _ in range(per_mic)]
        blobs = [(float(x), float(y), 3.0) for x, y in centres]
        images[f"m{m}"] = add_gaussian_blobs(noise, blobs, sigma_px=1.5).astype(np.float32)
        rows += [(f"m{m}", x, y) for x, y, _ in blobs]
    return images, pd.DataFrame(rows, columns=["micrograph", "x", "y"])


@pytest.mark.slow
def test_estimate_pi_on_blob_micrographs_is_close_to_the_truth():
    images, truth = _blob_micrographs()
    radius = 2
    shapes = {n: im.shape for n, im in images.items()}
    masks = positive_masks(shapes, truth, radius)
    true_pi = sum(int(m.sum()) for m in masks.values()) / sum(im.size for im in images.values())
    labeled = truth.sample(n=30, random_state=0)
    torch.manual_seed(0)
    result = estimate_pi(
        images, labeled, radius, _TinyNet, steps=150, folds=2, lr=0.01, nms_radius_px_model=4
    )
    assert result.method == "bbe" and len(result.fold_pi) == 2 and "elkan_noto" in result.other
    # measured: 0.0287 vs 0.0309
    assert result.pi == pytest.approx(true_pi, rel=0.2)
    # at least the labeled regions are positive
    assert result.pi >= 30 * 13 / sum(im.size for im in images.values()) * 0.9
    with pytest.raises(ValueError, match="folds"):
        estimate_pi(images, labeled, radius, _TinyNet, steps=1, folds=1)


@pytest.mark.slow
def test_data_pi_auto_resolves_to_an_estimate(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from topaz_lightning.cli.validate import validate_train
    from topaz_lightning.pi_estimate import estimate_auto_pi

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.root_dir={REPO}",
                "data.simulated_preset=tiny",
                f"data.simulated_dir={tmp_path / 'tiny'}",
                "data.num_labeled=10",
                "data.pi=auto",
            ],
        )
    validate_train(cfg)  # "auto" passes the prior check
    result = estimate_auto_pi(cfg, steps=3, folds=2)
    assert 0 < result.pi < 1 and len(result.fold_pi) == 2 and result.steps == 3
    assert cfg.data.pi == "auto"  # a value is returned; the config is not edited


def test_the_pi_procedure_lives_above_data_and_picking():
    """data/ imports nothing of the automatic pi procedure (it trains and picks, a layer above)."""
    import ast

    package = REPO / "topaz_lightning"
    assert not (package / "data" / "pi_estimate.py").exists()
    for path in (package / "data").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        ] + [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
        assert not any(
            n.startswith(("topaz_lightning.picking", "topaz_lightning.pi_estimate")) for n in names
        ), path
    # sources.py no longer imports the DataModule that imports it (the one circle)
    sources = ast.parse((package / "data" / "sources.py").read_text())
    imported = {n.module for n in ast.walk(sources) if isinstance(n, ast.ImportFrom)}
    assert "topaz_lightning.data.datamodule" not in imported
