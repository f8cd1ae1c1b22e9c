"""Model classes of installed packages (entry-point group ``topaz_lightning.models``): loadable by
``load_model`` and ``tzl-pick``, while a class named only by a model file is never imported."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers import blob_micrograph, pick_config
from topaz_lightning.errors import InputError
from topaz_lightning.models import Conv31, load_model, save_model
from topaz_lightning.models import io as model_io

THIS_MODULE = __name__  # tests.test_model_entry_points


class ResearchNet(nn.Module):
    """A model defined outside topaz_lightning/models/: the logit is ``gain`` x the pixel."""

    receptive_field = 1
    num_features = 1

    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.gain = float(gain)
        self.weight = nn.Parameter(torch.tensor(1.0))

    @property
    def config(self) -> dict:
        return {"_target_": f"{THIS_MODULE}.ResearchNet", "gain": self.gain}

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return patches[:, 0, 0, 0] * self.weight * self.gain

    def score_map(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, 0] * self.weight * self.gain


class NotAClassifier(nn.Module):
    """An nn.Module without ``score_map``: a building block, never a model file's class."""


def _entry(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group=model_io.ENTRY_POINT_GROUP)


def _install(monkeypatch, *entries: importlib.metadata.EntryPoint) -> None:
    """Make ``entries`` the installed entry points of the models group (as a package would)."""
    real = importlib.metadata.entry_points

    def entry_points(**selection):
        if selection.get("group") == model_io.ENTRY_POINT_GROUP:
            return list(entries)
        return real(**selection)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def _research_file(path: Path) -> Path:
    net = ResearchNet(gain=2.0)
    with torch.no_grad():
        net.weight.fill_(1.5)
    return save_model(path, net)


def test_a_model_class_of_an_installed_entry_point_loads(tmp_path, monkeypatch):
    path = _research_file(tmp_path / "model.pt")
    _install(monkeypatch, _entry("research", f"{THIS_MODULE}:ResearchNet"))
    net, _ = load_model(path)
    assert type(net) is ResearchNet and net.gain == 2.0
    assert float(net.weight.detach()) == 1.5 and not net.training
    classes = model_io.known_model_classes()
    # under the entry point's target and the class's own full name; built-ins still there
    assert classes[f"{THIS_MODULE}.ResearchNet"] is ResearchNet
    assert classes["topaz_lightning.models.Conv31"] is Conv31
    # model_classes() stays this package's own
    assert f"{THIS_MODULE}.ResearchNet" not in model_io.model_classes()


def test_without_the_entry_point_the_file_is_refused_naming_it_and_the_known_classes(
    tmp_path, monkeypatch
):
    path = _research_file(tmp_path / "model.pt")
    _install(monkeypatch)
    with pytest.raises(InputError) as err:
        load_model(path)
    message = str(err.value)
    assert str(path) in message and "model_config._target_" in message
    assert f"'{THIS_MODULE}.ResearchNet' is not a known model class" in message
    assert "Conv31" in message and "ResNet8" in message
    assert model_io.ENTRY_POINT_GROUP in message and "none" in message
    # with a plug-in installed, its classes are listed too
    _install(monkeypatch, _entry("research", f"{THIS_MODULE}:ResearchNet"))
    bad = save_model(tmp_path / "other.pt", Conv31(widths=(2, 2, 2)))
    payload = torch.load(bad, weights_only=True)
    payload["model_config"]["_target_"] = "elsewhere.Net"
    torch.save(payload, bad)
    with pytest.raises(InputError, match=rf"{THIS_MODULE}\.ResearchNet"):
        load_model(bad)


def test_a_class_named_only_by_the_file_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "tzl_untrusted_module.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def score_map(self, images):\n"
        "        return images[:, 0]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    _install(monkeypatch, _entry("research", f"{THIS_MODULE}:ResearchNet"))
    path = save_model(tmp_path / "model.pt", ResearchNet())
    payload = torch.load(path, weights_only=True)
    payload["model_config"] = {"_target_": "tzl_untrusted_module.Net"}
    torch.save(payload, path)
    with pytest.raises(InputError, match="tzl_untrusted_module.Net' is not a known model class"):
        load_model(path)
    assert not marker.exists() and "tzl_untrusted_module" not in sys.modules


def test_broken_and_non_classifier_entry_points_are_left_out_with_a_warning(
    tmp_path, monkeypatch, caplog
):
    _install(
        monkeypatch,
        _entry("broken", "tzl_no_such_package_anywhere:Net"),
        _entry("block", f"{THIS_MODULE}:NotAClassifier"),
        _entry("research", f"{THIS_MODULE}:ResearchNet"),
    )
    with caplog.at_level(logging.WARNING, logger="topaz_lightning"):
        classes = model_io.plugin_model_classes()
    assert set(classes.values()) == {ResearchNet}
    assert "'broken'" in caplog.text and "not loaded" in caplog.text
    assert "'block'" in caplog.text and "not a classifier" in caplog.text
    # the package's own models load as before
    net, _ = load_model(save_model(tmp_path / "conv.pt", Conv31(widths=(2, 2, 2))))
    assert type(net) is Conv31


def test_tzl_pick_picks_with_a_model_of_an_installed_package(tmp_path, monkeypatch):
    from topaz_lightning.io.micrographs import write_micrograph
    from topaz_lightning.pick import pick

    _install(monkeypatch, _entry("research", f"{THIS_MODULE}:ResearchNet"))
    blobs = [(20.0, 24.0, 1.0), (60.0, 30.0, 0.8), (40.0, 70.0, 0.6)]
    write_micrograph(tmp_path / "mics" / "a.mrc", blob_micrograph(blobs, shape=(90, 80)))
    model = _research_file(tmp_path / "model.pt")
    cfg = pick_config(
        model,
        tmp_path / "mics",
        tmp_path / "out",
        "num_workers=0",
        "normalize=none",
        "nms_radius_px_model=6",
        "particles_per_micrograph=3",
        "border_bands=false",
    )
    metrics, objects = pick(cfg)
    assert metrics["pick/picks"] == 3
    picks = objects["picks"]
    np.testing.assert_allclose(picks[["x", "y"]].to_numpy(), [b[:2] for b in blobs])
    # the score is the plug-in's own: gain x weight x pixel
    assert picks["score"].iloc[0] == pytest.approx(3.0 * 1.0, abs=0.1)
