"""Each setting's allowed values are written once: tzl-pick's validation builds PickSettings, and the
normalize / matching choices come from their components."""

from __future__ import annotations

import pytest

from tests.conftest import compose_config
from topaz_lightning.cli.validate import validate
from topaz_lightning.errors import ConfigError

PICK = ["model_path=/nonexistent/model.pt", "micrographs=/nonexistent", "output_dir=/tmp/x"]


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        (["nms_radius_px_model=0"], "nms_radius_px_model", "> 0"),  # issue 18: 262,144 picks
        (["nms_radius_px=0"], "nms_radius_px", "> 0"),
        (["radius=-2"], "radius", "> 0"),
        (
            ["nms_radius_px_model=5", "particles_per_micrograph=-1"],
            "particles_per_micrograph",
            ">= 0",
        ),
        (["tta=3"], "tta", ""),
        (["scoring=sparse"], "scoring", ""),
        (["nms_boundary=drop"], "nms_boundary", "keep"),
        (["border_bands=maybe"], "border_bands", "true or false"),
        (["border_margin_px_model=-1"], "border_margin_px_model", ">= 0"),
        (["tile_size=0"], "tile_size", ""),
        (["threshold=abc"], "threshold", "logit"),
    ],
)
def test_pick_settings_are_checked_by_pick_settings(overrides, key, problem):
    cfg = compose_config("pick", [*PICK, *overrides])
    with pytest.raises(ConfigError, match=f"'{key}'") as err:
        validate("pick", cfg)
    assert problem in str(err.value)


def test_pick_settings_from_model_pass_without_a_radius():
    validate("pick", compose_config("pick", PICK))  # the NMS radius comes from model.pt later


@pytest.mark.parametrize(
    ("command", "overrides", "key"),
    [
        ("pick", [*PICK, "normalize=zscore"], "normalize"),
        ("train", ["data.normalize=zscore"], "data.normalize"),
        ("preprocess", ["input=x", "output_dir=/tmp/x", "normalize=zscore"], "normalize"),
        ("evaluate", ["picks=p", "truth=t", "output_dir=/tmp/x", "matching=near"], "matching"),
        ("evaluate", ["picks=p", "truth=t", "output_dir=/tmp/x", "match_boundary=x"], "match_boundary"),
    ],
)  # fmt: skip
def test_choices_come_from_the_component(command, overrides, key):
    """The message lists the component's own tuple (NORMALIZATIONS, MATCHING_METHODS, ...)."""
    from topaz_lightning.metrics.matching import MATCH_BOUNDARIES, MATCHING_METHODS
    from topaz_lightning.preprocess.pipeline import NORMALIZATIONS

    options = {"matching": MATCHING_METHODS, "match_boundary": MATCH_BOUNDARIES}
    cfg = compose_config(command, overrides)
    with pytest.raises(ConfigError, match=f"'{key}'") as err:
        validate(command, cfg)
    assert ", ".join(options.get(key, NORMALIZATIONS)) in str(err.value)


def test_pick_output_extension_comes_from_the_registry():
    cfg = compose_config("pick", [*PICK, "output=picks.json"])
    with pytest.raises(ConfigError, match="'output'") as err:
        validate("pick", cfg)
    assert ".box/.csv/.star/.tsv/.txt" in str(err.value)
    validate("pick", compose_config("pick", [*PICK, "output=picks.star"]))
