"""data.val_normalize_fit: the held-out micrographs get the pixels tzl-pick gives them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from topaz_lightning.data import FilesDataModule
from topaz_lightning.errors import ConfigError


def _micrograph(seed: int, shape=(704, 720)) -> np.ndarray:
    # a skewed background whose scale differs per micrograph, with a few bright blobs: the
    # held-out set's own fit differs from the fit over all micrographs
    rng = np.random.default_rng(seed)
    image = rng.gamma(2.0 + seed, 1.0 + 0.6 * seed, size=shape)
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    for x, y in rng.uniform(12, min(shape) - 12, size=(40, 2)):
        image += 6 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 20.0)
    return image.astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    from topaz_lightning.io.micrographs import write_micrograph

    root = tmp_path_factory.mktemp("val_norm")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(6):
        write_micrograph(root / f"m{k}.mrc", _micrograph(k))
        for x, y in rng.uniform(16, 680, size=(4, 2)):
            rows.append((f"m{k}", x, y))
    return root, pd.DataFrame(rows, columns=["micrograph", "x", "y"])


def _datamodule(data, **kwargs) -> FilesDataModule:
    root, coords = data
    args = dict(
        micrographs=str(root),
        coordinates=coords,
        pi=0.05,
        normalize="gmm",
        downsample=2.0,
        patch_size=11,
        seed=7,  # not tzl-pick's seed: the held-out fit must not depend on the run's
        val_list=["m2", "m5"],
    )
    args.update(kwargs)
    dm = FilesDataModule(**args)
    dm.setup("fit")
    return dm


def test_held_out_micrographs_get_tzl_picks_pixels_and_training_is_unchanged(data):
    from topaz_lightning.picking.normalization import PickNormalization, run_fit

    root, _ = data
    own = _datamodule(data)  # the default: held_out
    joint = _datamodule(data, val_normalize_fit="joint")
    # what tzl-pick (normalize_fit=run, its default seed) does when it picks the held-out set,
    # e.g. `tzl-pick subset=RUN/val_micrographs.txt`
    sources = {name: root / f"{name}.mrc" for name in own.val_micrographs}
    fit, prepared = run_fit(sources, 2.0, seed=0)
    norm = PickNormalization("gmm", fit, "run", 0)
    for name in ["m2", "m5"]:
        np.testing.assert_allclose(own.val_micrographs[name], norm(name, prepared[name]), atol=1e-6)
        # the joint fit gives other pixels (this is what the setting changes)
        assert np.abs(joint.val_micrographs[name] - own.val_micrographs[name]).max() > 1e-2
    # training micrographs, labels and the model card's fit are the same in both modes
    assert list(own.train_micrographs) == list(joint.train_micrographs)
    for name in own.train_micrographs:
        np.testing.assert_array_equal(own.train_micrographs[name], joint.train_micrographs[name])
    pd.testing.assert_frame_equal(own.train_coordinates, joint.train_coordinates)
    assert own.normalize_fit.pi == joint.normalize_fit.pi
    np.testing.assert_array_equal(own.normalize_fit.alpha, joint.normalize_fit.alpha)
    assert own.data_fingerprint() != joint.data_fingerprint()  # the validation pixels differ


def test_held_out_fit_needs_gmm_and_bad_values_are_refused(data):
    plain = _datamodule(data, normalize="standardize")
    also = _datamodule(data, normalize="standardize", val_normalize_fit="joint")
    for name in plain.val_micrographs:
        np.testing.assert_array_equal(plain.val_micrographs[name], also.val_micrographs[name])
    with pytest.raises(ConfigError, match="data.val_normalize_fit.*held_out, joint"):
        FilesDataModule(micrographs=str(data[0]), coordinates=data[1], val_normalize_fit="own")


def test_validate_refuses_an_unknown_val_normalize_fit():
    from omegaconf import OmegaConf

    from topaz_lightning.cli.validate import choice
    from topaz_lightning.data.preprocessing import VAL_NORMALIZE_FITS

    cfg = OmegaConf.create({"data": {"val_normalize_fit": "pick"}})
    with pytest.raises(ConfigError, match="data.val_normalize_fit"):
        choice(cfg, "data.val_normalize_fit", VAL_NORMALIZE_FITS)


def test_held_out_seed_is_tzl_picks_default_seed():
    from omegaconf import OmegaConf

    from topaz_lightning.data.preprocessing import HELD_OUT_FIT_SEED

    pick = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "pick.yaml")
    assert pick.seed == HELD_OUT_FIT_SEED
