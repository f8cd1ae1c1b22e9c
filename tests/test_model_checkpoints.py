"""A training checkpoint (RUN/checkpoints/<name>.ckpt) loads as a model with its run's model.pt:
the checkpoint's weights, the run's architecture and card (tzl-pick model_path=, ensembles)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from topaz_lightning.errors import InputError
from topaz_lightning.models import Conv31, load_model, save_model
from topaz_lightning.picking.ensemble import EnsembleNet


def _run(tmp_path, seed: int = 0):
    """RUN/model.pt (seed 0's weights) and RUN/checkpoints/step5.ckpt (other weights), as a
    Lightning checkpoint holds them: the module's state_dict with the classifier under net.*"""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    final = Conv31(widths=(4, 6, 8))
    save_model(run / "model.pt", final)
    torch.manual_seed(seed + 1)
    step = Conv31(widths=(4, 6, 8))
    state = {f"net.{k}": v for k, v in step.state_dict().items()}
    state["decoder.weight"] = torch.zeros(3)  # another head: not the classifier's
    torch.save({"state_dict": state, "global_step": 5}, run / "checkpoints" / "step5.ckpt")
    return run, final, step


def test_a_checkpoint_loads_with_its_runs_model_file(tmp_path):
    run, final, step = _run(tmp_path)
    net, extra = load_model(run / "checkpoints" / "step5.ckpt")
    _, run_extra = load_model(run / "model.pt")
    assert not net.training and extra == run_extra
    for name, value in net.state_dict().items():
        assert torch.equal(value, step.state_dict()[name]), name
    assert not torch.equal(net.state_dict()["classifier.weight"], final.classifier.weight)
    # and as a member of a checkpoint ensemble, next to the final model
    members = [load_model(p)[0] for p in (run / "checkpoints" / "step5.ckpt", run / "model.pt")]
    ensemble = EnsembleNet(members).eval()
    patches = torch.randn(3, 1, 31, 31)
    with torch.no_grad():
        expected = (step.eval()(patches) + final.eval()(patches)) / 2
        np.testing.assert_allclose(ensemble(patches), expected, rtol=0, atol=1e-5)


def test_a_checkpoint_without_its_runs_model_file_is_refused(tmp_path):
    run, _, _ = _run(tmp_path)
    (run / "model.pt").unlink()
    with pytest.raises(InputError, match="model.pt") as err:
        load_model(run / "checkpoints" / "step5.ckpt")
    assert "step5.ckpt" in str(err.value)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    run, _, _ = _run(tmp_path)
    other = {f"net.{k}": v for k, v in Conv31(widths=(5, 6, 8)).state_dict().items()}
    torch.save({"state_dict": other}, run / "checkpoints" / "other.ckpt")
    with pytest.raises(InputError, match="do not fit"):
        load_model(run / "checkpoints" / "other.ckpt")
    torch.save({"weights": 1}, run / "checkpoints" / "foreign.ckpt")
    with pytest.raises(InputError, match="no state_dict"):
        load_model(run / "checkpoints" / "foreign.ckpt")
