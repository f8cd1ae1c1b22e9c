"""tzl-train's model.pt as a checkpoint ensemble (callbacks.checkpoint_ensemble): the saved
ensemble scores as the mean of the step checkpoints' logits, survives a resume, reloads safely,
and the last weights alone stay in model_last.pt."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_train import compose_train, make_dataset, small_overrides
from topaz_lightning.callbacks.ensemble import CheckpointEnsemble, snapshot_steps
from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.models import (
    Conv31,
    EnsembleNet,
    HomogeneousEnsembleNet,
    load_model,
    save_model,
)
from topaz_lightning.models.ensemble import ensemble_config

STEP_CHECKPOINTS = [
    "callbacks=step_checkpoints",
    "callbacks.step_checkpoints.every_n_train_steps=5",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


def _overrides(mics, coords, steps, extra=()):
    # a group override (callbacks=) applies before the values, wherever it stands
    return small_overrides(mics, coords, steps, [*STEP_CHECKPOINTS, *extra])


def _maps(net, images):
    with torch.no_grad():
        return net.eval().score_map(images)


def test_snapshot_steps_leave_out_the_last_step_zero_and_repeats():
    assert snapshot_steps([0.5, 0.75], 20) == [10, 15]
    assert snapshot_steps([0.5, 0.75], 50000) == [25000, 37500]
    assert snapshot_steps([0.5, 0.75], 1) == []  # 0.5 -> 0 (or 1, the last): nothing to add
    assert snapshot_steps([0.3, 0.31], 3) == [1]


@pytest.mark.parametrize("fractions", [[1.0], [0.0], [-0.5], ["half"], [True]])
def test_fractions_outside_the_run_are_a_config_error(fractions):
    with pytest.raises(ConfigError, match="checkpoint_ensemble.fractions"):
        CheckpointEnsemble(fractions=fractions)


def test_model_pt_is_the_mean_of_the_step_checkpoints_and_the_last_weights(dataset, tmp_path):
    from topaz_lightning.train import train

    mics, coords = dataset
    run = tmp_path / "run"
    metrics = train(compose_train(_overrides(mics, coords, 20), run))
    net, extra = load_model(run / "model.pt")
    assert isinstance(net, HomogeneousEnsembleNet) and len(net.members) == 3
    assert extra["card"]["training"]["ensemble_steps"] == [10, 15, 20]
    assert extra["card"]["training"]["global_step"] == 20
    assert metrics["model_steps"] == [10, 15, 20]
    # the last weights alone: model_last.pt == the final checkpoint's classifier
    last, last_extra = load_model(run / "model_last.pt")
    assert type(last) is Conv31
    # the single network's card: model.pt's without the members' steps
    single = {**extra["card"]["training"]}
    del single["ensemble_steps"]
    assert last_extra["card"] == {**extra["card"], "training": single}
    assert "ensemble_steps" not in load_model(run / "model_best.pt")[1]["card"]["training"]
    step20, _ = load_model(run / "checkpoints" / "step20.ckpt")  # read with model.pt's member
    for key, value in last.state_dict().items():
        assert torch.equal(value, step20.state_dict()[key]), key
    # model.pt scores exactly as picker=ensemble of the 10, 15 and 20 step checkpoints
    members = [load_model(run / "checkpoints" / f"step{s}.ckpt")[0] for s in (10, 15, 20)]
    assert not torch.equal(members[0].classifier.weight, members[2].classifier.weight)
    images = torch.randn(2, 1, 64, 80)
    torch.testing.assert_close(_maps(net, images), _maps(EnsembleNet(members), images))
    expected = sum(_maps(m, images) for m in members) / 3
    torch.testing.assert_close(_maps(net, images), expected, rtol=0, atol=1e-4)
    # scored on the held-out micrograph at the end, under its own names
    saved = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= saved["val_model/aupr"] <= 1.0 and "val_model/precision@0.9" in saved
    assert saved["last_model_path"].endswith("model_last.pt")


def test_an_empty_fraction_list_saves_the_last_weights_alone(dataset, tmp_path):
    from topaz_lightning.train import train

    mics, coords = dataset
    run = tmp_path / "run"
    extra = ["callbacks.checkpoint_ensemble.fractions=[]", "callbacks.held_out_picking=null",
             "callbacks.best_checkpoint=null"]  # fmt: skip
    metrics = train(compose_train(_overrides(mics, coords, 10, extra), run))
    net, card = load_model(run / "model.pt")
    assert type(net) is Conv31 and "ensemble_steps" not in card["card"]["training"]
    assert not (run / "model_last.pt").exists() and "val_model/aupr" not in metrics


def test_a_resumed_run_keeps_the_weights_kept_before_the_interruption(dataset, tmp_path):
    from topaz_lightning.train import train

    mics, coords = dataset
    extra = ["logger=none", "callbacks.best_checkpoint=null", "callbacks.held_out_picking=null",
             "data.steps_per_epoch=100"]  # fmt: skip
    straight = tmp_path / "straight"
    train(compose_train(_overrides(mics, coords, 20, extra), straight))
    # continue from the step-15 checkpoint: the step-10 and step-15 copies come from its state
    resumed = tmp_path / "resumed"
    ckpt = straight / "checkpoints" / "step15.ckpt"
    train(compose_train(_overrides(mics, coords, 20, [*extra, f"ckpt_path={ckpt}"]), resumed))
    a = torch.load(straight / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and any(k.startswith("members.2.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_same_architecture_ensemble_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    members = [Conv31(widths=(4, 6, 8)) for _ in range(3)]
    ensemble = EnsembleNet(members).eval()
    path = save_model(tmp_path / "ens.pt", ensemble)
    loaded, _ = load_model(path)
    assert isinstance(loaded, HomogeneousEnsembleNet)
    images = torch.randn(1, 1, 40, 40)
    torch.testing.assert_close(_maps(loaded, images), _maps(ensemble, images))
    with pytest.raises(TypeError, match="differ in architecture"):
        _ = EnsembleNet([Conv31(widths=(4, 6, 8)), Conv31(widths=(3, 6, 8))]).config


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"num_members": 10_000}, "num_members"),
        ({"num_members": 0}, "num_members"),
        ({"member_target": "os.system"}, "not a known model class"),
        ({"member_target": "topaz_lightning.models.ensemble.HomogeneousEnsembleNet"}, "ensemble"),
        ({"member_kwargs": {"widths": [4, 6]}}, "three positive widths"),
    ],
)
def test_a_hostile_ensemble_file_is_refused_naming_it(tmp_path, change, problem):
    good = Conv31(widths=(4, 6, 8))
    config = {**ensemble_config(good.config, 2), **change}
    path = tmp_path / "hostile.pt"
    # weights of a real two-member ensemble, the architecture as the file claims
    save_model(path, EnsembleNet([good, Conv31(widths=(4, 6, 8))]), model_config=config)
    with pytest.raises(InputError, match=problem) as err:
        load_model(path)
    assert "hostile.pt" in str(err.value)
