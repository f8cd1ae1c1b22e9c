"""data.unlabeled_micrographs: which micrographs, the mixture prior, sampling shares, records, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.test_datamodule import synthetic
from topaz_lightning.data import FilesDataModule, unlabeled_prior
from topaz_lightning.data.splits import record_split
from topaz_lightning.data.unlabeled import (
    HELD_OUT,
    mixture_unlabeled_prior,
    resolve_unlabeled_micrographs,
)
from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.io.micrographs import write_micrograph


def make(**kwargs):
    images, coords = synthetic()
    args = dict(
        micrographs=images,
        coordinates=coords,
        pi=0.2,
        normalize="none",
        patch_size=11,
        seed=0,
        val_list=["mic04", "mic05"],
    )
    args.update(kwargs)
    return FilesDataModule(**args)


def test_mixture_prior_is_the_area_weighted_mix_and_the_unlabeled_prior_of_the_union():
    pi, n_lab, n_t, n_x = 0.1, 300, 6000, 2000
    p = mixture_unlabeled_prior(pi, n_lab, n_t, n_x)
    pi_u = (pi * n_t - n_lab) / (n_t - n_lab)
    share = n_x / (n_t - n_lab + n_x)
    assert p["labeled_micrographs"] == pytest.approx(pi_u)
    assert p["unlabeled_micrographs"] == pi
    assert p["share_unlabeled_micrographs"] == pytest.approx(share)
    assert p["mixture"] == pytest.approx((1 - share) * pi_u + share * pi)
    assert p["mixture"] == pytest.approx(unlabeled_prior(pi, n_lab, n_t + n_x))
    # between pi_u (labeled micrographs only) and pi (label-free micrographs only)
    assert pi_u < p["mixture"] < pi
    assert mixture_unlabeled_prior(pi, n_lab, n_t, 0)["mixture"] == pytest.approx(pi_u)


def test_mixture_prior_when_every_positive_of_the_labeled_micrographs_is_labeled():
    # pi below the labeled fraction: those regions hold no positive; the label-free ones pi
    p = mixture_unlabeled_prior(0.01, 100, 1000, 900)
    assert p["labeled_micrographs"] == 0.0
    assert p["mixture"] == pytest.approx(900 / 1800 * 0.01)


def test_held_out_names_the_validation_micrographs_and_the_geometry_gets_the_mixture():
    base = make()
    base.setup()
    dm = make(unlabeled_micrographs=HELD_OUT)
    dm.setup()
    assert sorted(dm.unlabeled_micrographs) == ["mic04", "mic05"]
    assert sorted(dm.val_micrographs) == ["mic04", "mic05"]  # still evaluated on
    g, g0 = dm.geometry, base.geometry
    extra = sum(image.size for image in dm.unlabeled_micrographs.values())
    assert g.num_regions == g0.num_regions + extra
    assert g.num_labeled_positive_regions == g0.num_labeled_positive_regions
    assert g.pi == g0.pi == 0.2
    expected = unlabeled_prior(0.2, g.num_labeled_positive_regions, g0.num_regions + extra)
    assert g.pi_unlabeled == pytest.approx(expected)
    assert g0.pi_unlabeled < g.pi_unlabeled < 0.2
    # the labels are the same; only the unlabeled pool grew
    pd.testing.assert_frame_equal(dm.train_coordinates, base.train_coordinates)


def test_unlabeled_draws_land_on_the_extra_micrographs_in_proportion_to_their_area():
    dm = make(unlabeled_micrographs=["mic04", "mic05"])
    dm.setup()
    sampler = dm.train_sampler()
    assert sampler.num_regions == dm.geometry.num_regions
    gen = torch.Generator().manual_seed(0)
    m, y, x = sampler.draw_unlabeled(40000, gen)
    extra_index = torch.tensor([4, 5])  # the sampler stacks training micrographs, then extra ones
    on_extra = torch.isin(m, extra_index).float().mean().item()
    n_extra = sum(image.size for image in dm.unlabeled_micrographs.values())
    share = n_extra / (dm.geometry.num_regions - dm.geometry.num_labeled_positive_regions)
    assert on_extra == pytest.approx(share, abs=0.01)
    # positives only ever come from the labeled training micrographs
    mp, _, _ = sampler.draw_positive(5000, gen)
    assert int(mp.max()) < 4
    patches, labels = sampler.batch(0)
    assert patches.shape == (256, 1, 11, 11) and int(labels.sum()) == 16


def test_extra_micrographs_change_the_fingerprint_and_the_split_record(tmp_path):
    base = make()
    dm = make(unlabeled_micrographs=HELD_OUT)
    base.setup()
    dm.setup()
    assert dm.data_fingerprint() != base.data_fingerprint()
    assert make().data_fingerprint() == base.data_fingerprint()
    record_split(tmp_path, dm, dm.geometry)
    assert (tmp_path / "unlabeled_micrographs.txt").read_text().split() == ["mic04", "mic05"]
    record_split(tmp_path / "b", base, base.geometry)
    assert not (tmp_path / "b" / "unlabeled_micrographs.txt").exists()


def test_files_outside_data_micrographs_are_read_and_preprocessed(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "to_pick"
    folder.mkdir()
    for name in ("new_a", "new_b"):
        image = (rng.normal(size=(48, 64)) * 5 + 100).astype(np.float32)
        write_micrograph(folder / f"{name}.mrc", image)
    dm = make(unlabeled_micrographs=str(folder), normalize="standardize")
    dm.setup()
    assert sorted(dm.unlabeled_micrographs) == ["new_a", "new_b"]
    # preprocessed like the training micrographs (standardized: mean 0, sd 1)
    image = dm.unlabeled_micrographs["new_a"]
    assert abs(float(image.mean())) < 1e-3 and float(image.std()) == pytest.approx(1, abs=1e-3)
    # a glob and a list file of paths give the same micrographs
    listing = tmp_path / "list.txt"
    listing.write_text("to_pick/new_a.mrc\nto_pick/new_b.mrc\n")
    for setting in (str(folder / "*.mrc"), str(listing)):
        other = make(unlabeled_micrographs=setting, normalize="standardize")
        other.setup()
        assert sorted(other.unlabeled_micrographs) == ["new_a", "new_b"]


def test_a_list_file_of_names_of_data_micrographs(tmp_path):
    listing = tmp_path / "names.txt"
    listing.write_text("# the ones to pick\nmic05\n")
    dm = make(unlabeled_micrographs=str(listing))
    dm.setup()
    assert list(dm.unlabeled_micrographs) == ["mic05"]


def test_a_training_micrograph_is_refused_naming_it():
    with pytest.raises(ConfigError, match="unlabeled_micrographs.*'mic01' is a training"):
        make(unlabeled_micrographs=["mic04", "mic01"]).setup()


def test_missing_files_and_unknown_names_are_refused(tmp_path):
    with pytest.raises(InputError, match="not found"):
        make(unlabeled_micrographs=str(tmp_path / "nowhere")).setup()
    with pytest.raises(ConfigError, match=r"unlabeled_micrographs\[1\].*'nope'"):
        make(unlabeled_micrographs=["mic04", "nope"]).setup()
    listing = tmp_path / "list.txt"
    listing.write_text("gone.mrc\n")
    with pytest.raises(InputError, match="list.txt"):
        make(unlabeled_micrographs=str(listing)).setup()


def test_bad_settings_are_refused_at_construction():
    for bad in ([], "", 3, {"a": 1}):
        with pytest.raises(ConfigError, match="data.unlabeled_micrographs"):
            make(unlabeled_micrographs=bad)


def test_held_out_without_validation_micrographs_is_refused():
    with pytest.raises(ConfigError, match="held_out.*has none"):
        make(val_list=None, unlabeled_micrographs=HELD_OUT).setup()


def test_a_different_pixel_size_in_the_header_is_refused(tmp_path):
    image = np.random.default_rng(0).normal(size=(48, 64)).astype(np.float32)
    write_micrograph(tmp_path / "other.mrc", image, pixel_size_a=2.0)
    with pytest.raises(InputError, match="other.mrc.*pixel size 2"):
        make(unlabeled_micrographs=[str(tmp_path / "other.mrc")], pixel_size_a=1.0).setup()


def test_resolve_reuses_the_images_of_data_micrographs():
    images, _ = synthetic()
    out = resolve_unlabeled_micrographs(["mic03"], images, ["mic00"], ["mic03"])
    assert out["mic03"] is images["mic03"]


def test_the_config_key_exists_and_defaults_to_none(configs_dir):
    text = (Path(configs_dir) / "data" / "_base.yaml").read_text()
    assert "\nunlabeled_micrographs: null\n" in text


def test_the_mixture_prior_is_the_positive_share_of_the_unlabeled_draws_by_brute_force():
    # all particles known: pi = the true positive fraction over every sampled micrograph; the
    # share of unlabeled draws that land on a true particle's region must equal pi_unlabeled
    from topaz_lightning.data import positive_mask

    images, coords = synthetic(per_mic=12, seed=4)
    dm = make(
        micrographs=images, coordinates=coords, num_labeled=10, unlabeled_micrographs=HELD_OUT
    )
    dm.setup()
    names = [*dm.train_micrographs, *dm.unlabeled_micrographs]
    truth = {
        n: positive_mask(images[n].shape, coords.query("micrograph == @n")[["x", "y"]], 3)
        for n in names
    }
    pi_true = sum(int(m.sum()) for m in truth.values()) / sum(m.size for m in truth.values())
    exact = make(
        micrographs=images,
        coordinates=coords,
        num_labeled=10,
        unlabeled_micrographs=HELD_OUT,
        pi=pi_true,
    )
    exact.setup()
    sampler = exact.train_sampler()
    m, y, x = sampler.draw_unlabeled(200000, torch.Generator().manual_seed(1))
    stack = torch.zeros((len(names), *sampler._masks.shape[1:]), dtype=torch.bool)
    for i, n in enumerate(names):
        h, w = truth[n].shape
        stack[i, :h, :w] = torch.as_tensor(truth[n])
    share = stack[m, y, x].float().mean().item()
    assert share == pytest.approx(exact.geometry.pi_unlabeled, abs=0.003)
    # and not the labeled micrographs' own pi_u
    parts = mixture_unlabeled_prior(
        pi_true,
        exact.geometry.num_labeled_positive_regions,
        sum(image.size for image in exact.train_micrographs.values()),
        sum(image.size for image in exact.unlabeled_micrographs.values()),
    )
    assert abs(parts["labeled_micrographs"] - share) > 0.005
