"""`tzl-<command> --help` says what the command does and names its main keys, each of which exists."""

from __future__ import annotations

import importlib
import re
import sys

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONFIGS, compose_config

COMMANDS = ("train", "pick", "evaluate", "preprocess", "convert", "simulate", "report")

#: keys every help must name (beside the required ``???`` ones, which are checked for all)
MAIN_KEYS = {
    "train": ("data", "data.micrographs", "data.coordinates", "data.particle_diameter_px",
              "data.downsample", "data.num_labeled", "data.pi", "model", "objective", "trainer",
              "experiment", "ckpt_path"),
    "pick": ("nms_radius_px_model", "threshold", "output", "subset", "trainer", "overwrite"),
    "evaluate": ("max_distance", "model_path", "micrographs", "matching"),
    "preprocess": ("downsample", "normalize", "coordinates"),
    "convert": ("scale", "downsample", "flip_y", "input_format", "output_format"),
    "simulate": ("simulate", "out_dir", "seed"),
    "report": ("group_by", "metric", "mode"),
}  # fmt: skip


def _help_text(command: str, monkeypatch, capsys) -> str:
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    module = importlib.import_module(f"topaz_lightning.cli.{command}")
    monkeypatch.setattr(sys, "argv", [f"tzl-{command}", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code in (0, None)
    GlobalHydra.instance().clear()
    return capsys.readouterr().out


def _listed_keys(text: str) -> list[str]:
    """The keys of the help's "Main keys:" section (lines ``  key=value  description``)."""
    section = text.split("Main keys:", 1)[1]
    return re.findall(r"^ {2,4}([a-z_][\w.]*)=", section, flags=re.MULTILINE)


def _exists(cfg, key: str) -> bool:
    """A config key or a config group (``model``, ``data``, ``simulate``) of the command."""
    node = cfg
    for part in key.split("."):
        # `in` is False for a ??? value, keys() lists it
        if not OmegaConf.is_dict(node) or part not in node.keys():
            return (CONFIGS / key).is_dir()
        node = node._get_node(part)
    return True


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_main_keys(command, monkeypatch, capsys):
    text = _help_text(command, monkeypatch, capsys)
    # the command's own text, not Hydra's generic one
    assert text.startswith(f"tzl-{command}: "), text[:200]
    assert "powered by Hydra" not in text
    listed = _listed_keys(text)
    assert len(listed) >= 6, listed
    # the data=files keys (micrographs, coordinates) are what users of their own data set
    cfg = compose_config(command, ["data=files"] if command == "train" else [])
    # every required key (??? in the config) is named, with the main keys chosen above
    required = [k for k in cfg if k != "hydra" and OmegaConf.is_missing(cfg, k)]
    for key in [*required, *MAIN_KEYS[command]]:
        assert key in listed, f"tzl-{command} --help does not name {key}"
    # and every key the help names exists (help cannot drift from the config)
    for key in listed:
        assert _exists(cfg, key), f"tzl-{command} --help names {key}, not in configs/{command}.yaml"
    # one line each (Hydra's generated list of config groups grows with every option: not checked)
    main_keys = text.split("Main keys:", 1)[1].split("Config groups (group=option):", 1)[0]
    for line in main_keys.splitlines():
        assert len(line) <= 100, line
