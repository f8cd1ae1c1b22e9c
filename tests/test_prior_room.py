"""Room for unlabeled particles when pi is at (or just above) the labeled fraction: the floor on
pi_unlabeled (data.prior.prior_with_room) and the LightningModule's choice between it and PN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from topaz_lightning.data import FilesDataModule
from topaz_lightning.data.prior import (
    DEFAULT_MIN_UNLABELED_PER_LABELED,
    check_min_unlabeled_per_labeled,
    pi_is_an_estimate,
    prior_with_room,
    resolve_pi,
    room_for_unlabeled,
    unlabeled_prior,
)
from topaz_lightning.errors import ConfigError
from topaz_lightning.geometry import RunGeometry
from topaz_lightning.models import Conv31
from topaz_lightning.module import PULitModule
from topaz_lightning.objectives import NNPU, PN, GEBinomial

# ------------------------------------------------------------------ the floor itself


def test_floor_is_r_labeled_regions_per_unlabeled_region():
    # 30 labeled positive regions of 1000; pi from the annotated count leaves pi_unlabeled = 0
    room = prior_with_room(0.0, 30, 1000, 0.25)
    assert room.raised
    assert room.pi_unlabeled == pytest.approx(0.25 * 30 / 970)
    # the same as pi = (1 + r) * labeled fraction, and consistent with unlabeled_prior
    assert room.pi == pytest.approx(1.25 * 30 / 1000)
    assert unlabeled_prior(room.pi, 30, 1000) == pytest.approx(room.pi_unlabeled, rel=1e-12)
    assert room.given_unlabeled_per_labeled == 0.0


def test_floor_counts_expected_unlabeled_positives_on_a_brute_force_mask():
    # a truth mask with 40 disks, 32 labeled: the floor at r keeps r * (labeled regions)
    # expected positive regions among the unlabeled draws
    rng = np.random.default_rng(0)
    labeled = np.zeros((200, 200), bool)
    labeled.flat[rng.choice(labeled.size, 500, replace=False)] = True
    n_lab, n = int(labeled.sum()), labeled.size
    room = prior_with_room(0.0, n_lab, n, 0.5)
    expected_unlabeled_positives = room.pi_unlabeled * int((~labeled).sum())
    assert expected_unlabeled_positives == pytest.approx(0.5 * n_lab)


def test_priors_above_the_floor_come_back_unchanged():
    # 100 labels: pi_unlabeled well above the floor (the default setting is not touched)
    pi_u = unlabeled_prior(0.03, 5, 1000)
    room = prior_with_room(pi_u, 5, 1000, 0.25)
    assert not room.raised and room.pi_unlabeled == pi_u
    assert room.pi == pytest.approx(0.03)
    assert room.given_unlabeled_per_labeled == pytest.approx((0.03 * 1000 - 5) / 5)


def test_zero_room_never_raises():
    room = prior_with_room(0.0, 30, 1000, 0.0)
    assert not room.raised and room.pi_unlabeled == 0.0
    assert room.pi == pytest.approx(0.03)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x", None, True])
def test_bad_setting_is_a_config_error_naming_the_key(bad):
    with pytest.raises(ConfigError, match="module.min_unlabeled_per_labeled"):
        check_min_unlabeled_per_labeled(bad)


def test_floor_that_cannot_fit_is_a_config_error():
    # labels cover 600 of 1000 regions: 1 unlabeled per labeled would need 1200 positives
    with pytest.raises(ConfigError, match="do not fit"):
        prior_with_room(0.0, 600, 1000, 1.0)


# ------------------------------------------------------------------ the module's choice


def _module(
    objective,
    pi,
    room,
    labeled=30,
    regions=1000,
    pi_unlabeled_arg=None,
    source="data.particles_per_micrograph=650",
):
    """A module finalized from a run geometry whose pi_unlabeled follows from pi."""
    module = PULitModule(
        Conv31(widths=(2, 2, 2)),
        objective,
        None,
        pi_unlabeled_arg,
        min_unlabeled_per_labeled=room,
    )
    module.set_run_geometry(
        RunGeometry(
            pi=pi,
            pi_unlabeled=unlabeled_prior(pi, labeled, regions),
            pi_source=source,
            num_regions=regions,
            num_labeled_positive_regions=labeled,
        )
    )
    return module


def _loss(module):
    patches = torch.randn(4, 1, 31, 31)
    loss, _ = module.compute_loss(patches, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    return loss


def test_pi_at_the_labeled_fraction_keeps_room_instead_of_pn(caplog):
    with caplog.at_level("WARNING", logger="topaz_lightning"):
        module = _module(GEBinomial(), pi=0.029, room=0.25)
    assert module.active_objective is module.objective
    assert module.hparams["objective_optimized"] == "GEBinomial"
    assert module.hparams["objective_prior"] == "pi_unlabeled"
    assert module.hparams["objective_prior_value"] == pytest.approx(0.25 * 30 / 970)
    assert module.hparams["prior_raised"] is True
    assert module.hparams["pi"] == pytest.approx(1.25 * 0.03)
    # the run geometry (pick counts, the model card's geometry) keeps the user's pi
    assert module.geometry.pi == 0.029 and module.geometry.pi_unlabeled == 0.0
    text = caplog.text
    assert "annotations are rarely complete" in text and "GEBinomial" in text
    assert "module.min_unlabeled_per_labeled" in text and "objective=pn" in text
    assert "data.particles_per_micrograph=650" in text
    assert "PN with pi" not in text
    assert torch.isfinite(_loss(module))


def test_pi_just_above_the_labeled_fraction_is_raised_to_the_floor():
    # pi_unlabeled 0.001 > 0 but below the floor: raised (no jump between PN and a tiny prior)
    module = _module(GEBinomial(), pi=0.031, room=0.25)
    assert module.prior_value == pytest.approx(0.25 * 30 / 970)
    assert module.prior_raised


def test_room_zero_keeps_the_pn_switch(caplog):
    with caplog.at_level("WARNING", logger="topaz_lightning"):
        module = _module(GEBinomial(), pi=0.029, room=0.0)
    assert isinstance(module.active_objective, PN)
    assert module.prior_value == pytest.approx(0.03)  # the labeled fraction
    assert module.hparams["prior_raised"] is False
    assert "PN with pi=0.03" in caplog.text
    # the PN line points at the setting, for users whose micrographs hold unlabeled particles
    assert "set module.min_unlabeled_per_labeled" in caplog.text


def test_explicit_pn_objective_is_not_raised(caplog):
    with caplog.at_level("WARNING", logger="topaz_lightning"):
        module = _module(PN(), pi=0.029, room=0.0)
        module = _module(PN(), pi=0.029, room=0.25)
    assert isinstance(module.active_objective, PN) and not module.prior_raised
    assert module.prior_value == pytest.approx(0.03)
    assert "min_unlabeled_per_labeled" not in caplog.text  # PN was asked for: no hint


def test_no_floor_without_a_geometry():
    assert room_for_unlabeled(None, 0.0, 0.25) is None
    geometry = RunGeometry(pi=0.029, pi_unlabeled=0.0, pi_source="data.pi")  # no region counts
    assert room_for_unlabeled(geometry, 0.0, 0.25) is None


def test_explicit_pi_unlabeled_is_used_as_given():
    module = _module(GEBinomial(), pi=0.029, room=0.25, pi_unlabeled_arg=0.0)
    assert isinstance(module.active_objective, PN) and not module.prior_raised


def test_a_simulated_datasets_recorded_pi_is_trusted():
    # a simulated dataset.yaml's pi is its complete truth: PN as before, no floor
    module = _module(GEBinomial(), pi=0.029, room=0.25, source="dataset.yaml suggested_pi")
    assert isinstance(module.active_objective, PN) and not module.prior_raised
    # data.pi (also what data.pi=auto hands on) is the user's estimate: the floor applies
    assert _module(GEBinomial(), pi=0.029, room=0.25, source="data.pi").prior_raised


@pytest.mark.parametrize(
    "source,estimate",
    [
        ("data.pi", True),
        ("data.particles_per_micrograph=650", True),
        (None, True),
        ("dataset.yaml suggested_pi", False),
        ("dataset.yaml particles per micrograph (80)", False),
    ],
)
def test_pi_sources_that_are_estimates(source, estimate):
    assert pi_is_an_estimate(source) is estimate


def test_resolve_pi_names_the_sources_pi_is_an_estimate_knows():
    _, from_pi = resolve_pi(0.02, None, None, 3, 1, 1000)
    _, from_count = resolve_pi(None, 5, None, 3, 1, 1000)
    _, from_dataset = resolve_pi(
        None, None, {"suggested_pi": 0.02, "label_radius_px": 3}, 3, 1, 1000
    )
    assert pi_is_an_estimate(from_pi) and pi_is_an_estimate(from_count)
    assert not pi_is_an_estimate(from_dataset)


def test_few_labels_are_untouched():
    # 100 labels of ~2,600: pi from 650 per micrograph is far above the floor
    module = _module(GEBinomial(), pi=0.03, room=0.25, labeled=1)
    assert not module.prior_raised
    assert module.prior_value == pytest.approx(unlabeled_prior(0.03, 1, 1000))


def test_nnpu_gets_the_raised_pi_and_the_labeled_fraction():
    module = _module(NNPU(), pi=0.029, room=0.5)
    assert module.active_objective is module.objective
    assert module.prior_name == "pi" and module.prior_value == pytest.approx(1.5 * 0.03)
    assert module.objective_kwargs == {"labeled_fraction": pytest.approx(0.03)}
    assert torch.isfinite(_loss(module))


# ------------------------------------------------------------------ wiring from the config


def test_config_default_matches_the_code_default(cfg_train):
    cfg = cfg_train()
    assert cfg.module.min_unlabeled_per_labeled == DEFAULT_MIN_UNLABELED_PER_LABELED


def _all_labels_datamodule(per_mic=12):
    rng = np.random.default_rng(1)
    images, rows = {}, []
    for i in range(4):
        name = f"mic{i}"
        images[name] = rng.normal(size=(64, 64)).astype(np.float32)
        for _ in range(per_mic):
            rows.append((name, rng.uniform(8, 56), rng.uniform(8, 56)))
    coords = pd.DataFrame(rows, columns=["micrograph", "x", "y"])
    # pi from the annotated count: at most the labeled fraction (overlapping disks aside)
    return FilesDataModule(
        micrographs=images,
        coordinates=coords,
        particles_per_micrograph=per_mic * 0.95,
        label_radius_px_model=3,
        normalize="none",
        patch_size=11,
        num_labeled=None,
        val_list=["mic3"],
        seed=0,
    )


@pytest.mark.parametrize("room", [0.0, 0.25])
def test_all_labels_with_pi_from_the_annotated_count_through_the_config(cfg_train, room):
    dm = _all_labels_datamodule()
    dm.setup()
    assert dm.geometry.pi_unlabeled == 0.0  # the data layer still reports the plain prior
    cfg = cfg_train([f"module.min_unlabeled_per_labeled={room}"])
    factory = instantiate(cfg.module, _partial_=True)
    module = factory(net=Conv31(widths=(2, 2, 2)), objective=GEBinomial())
    module.set_run_geometry(dm.geometry)
    g = dm.geometry
    if room == 0.0:
        assert isinstance(module.active_objective, PN)
    else:
        assert module.active_objective is module.objective
        floor = (
            room * g.num_labeled_positive_regions / (g.num_regions - g.num_labeled_positive_regions)
        )
        assert module.prior_value == pytest.approx(floor)


def test_a_negative_room_is_refused_before_training_starts():
    from omegaconf import OmegaConf

    from topaz_lightning.cli.validate import validate

    cfg = OmegaConf.create({"module": {"min_unlabeled_per_labeled": -0.5}})
    with pytest.raises(ConfigError, match="module.min_unlabeled_per_labeled.*>= 0"):
        validate("train", cfg)
