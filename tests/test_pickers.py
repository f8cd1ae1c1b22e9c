"""tzl-pick's picker group (configs/picker/): the classical baselines run through the same
pipeline as a model (picks, parts, continue/rerun, picks.html, tzl-evaluate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.conftest import CONFIGS, compose_config
from tests.helpers import blob_micrograph
from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.pick import STATE_FILE

#: dark particles (underfocus), sigma 3 px: a diameter of about 16 px
BLOBS = [(24.0, 26.0, -1.0), (70.0, 30.0, -0.9), (46.0, 74.0, -0.8), (90.0, 80.0, -0.7)]
QUIET = ("progress=false", "device=cpu", "num_workers=0")


def _micrographs(root: Path) -> Path:
    from topaz_lightning.io.micrographs import write_micrograph

    for k in range(2):
        image = blob_micrograph(BLOBS, shape=(104, 120), noise_std=0.05, seed=k)
        write_micrograph(root / "mics" / f"m{k}.mrc", image)
    return root / "mics"


def _config(root: Path, picker: str, *extra: str, out: str = "out"):
    return compose_config(
        "pick",
        [
            f"picker={picker}",
            f"micrographs={root / 'mics'}",
            f"output_dir={root / out}",
            *QUIET,
            *extra,
        ],
    )


def _pick(root: Path, picker: str, *extra: str, out: str = "out"):
    from topaz_lightning.pick import pick

    return pick(_config(root, picker, *extra, out=out))


DOG = ("picker.particle_diameter_px=16", "picker.downsample=2")


def test_dog_through_tzl_pick_equals_the_classical_picker(tmp_path):
    """Same score map, NMS and frames as baselines.classical (with its border mask off)."""
    from topaz_lightning.baselines import dog_score_map, pick_with_score_maps
    from topaz_lightning.io.micrographs import read_micrograph
    from topaz_lightning.preprocess import downsample

    mics = _micrographs(tmp_path)
    metrics, objects = _pick(
        tmp_path, "dog", *DOG, "border_bands=false", "particles_per_micrograph=all"
    )
    assert metrics["pick/micrographs"] == 2
    images = {p.stem: downsample(read_micrograph(p), 2) for p in sorted(mics.glob("*.mrc"))}
    # radius 16 / 2 / 2 = 4 model px; NMS 1.25 x 4 = 5 model px
    maps = {n: dog_score_map(image, 4.0) for n, image in images.items()}
    expected = pick_with_score_maps(maps, 5.0)
    got = objects["picks"]
    assert len(got) == len(expected) > 4
    np.testing.assert_allclose(got[["x", "y"]].to_numpy(), 2 * expected[["x", "y"]].to_numpy())
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-6)
    # the four particles are the best picks of each micrograph (micrograph frame, +-2 px)
    for _, group in got.groupby("micrograph"):
        best = group.head(4)[["x", "y"]].to_numpy()
        for x, y, _ in BLOBS:
            assert np.hypot(best[:, 0] - x, best[:, 1] - y).min() <= 2.0


def test_a_baseline_run_has_the_outputs_and_rerun_behaviour_of_a_model_run(tmp_path):
    _micrographs(tmp_path)
    metrics, objects = _pick(tmp_path, "dog", *DOG, "particles_per_micrograph=4")
    out = tmp_path / "out"
    assert metrics["pick/scored"] == 2 and len(objects["picks"]) == 8
    assert (out / "picks.tsv").is_file() and (out / "picks.html").is_file()
    assert sorted(p.name for p in (out / "picks_by_micrograph").glob("*.tsv")) == [
        "m0.tsv",
        "m1.tsv",
    ]
    # the browser's particle size is the picker's diameter (micrograph pixels)
    assert objects["settings"].particle_diameter_px == 16.0
    # a rerun continues without scoring; a new top k re-extracts from the parts
    again, objects = _pick(tmp_path, "dog", *DOG, "particles_per_micrograph=2")
    assert again["pick/scored"] == 0 and len(objects["picks"]) == 4
    # another picker setting is refused, naming it; overwrite=true starts over
    with pytest.raises(InputError, match=r"changed: .*picker"):
        _pick(tmp_path, "dog", *DOG, "picker.ratio=2.0")
    over, _ = _pick(tmp_path, "dog", *DOG, "picker.ratio=2.0", "overwrite=true")
    assert over["pick/scored"] == 2
    # the job record holds the picker's description
    record = json.loads((out / "picks_by_micrograph" / STATE_FILE).read_text())
    assert record["settings"]["picker"]["ratio"] == 2.0


def test_a_model_run_records_no_picker_key(tmp_path):
    """A model run's job record is what it was before the picker group (old runs continue)."""
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.models import Conv31, save_model

    _micrographs(tmp_path)
    geometry = RunGeometry(downsample=1.0, normalize="none", particle_radius_px=8.0)
    save_model(
        tmp_path / "model.pt", Conv31(widths=(2, 2, 2)), extra={"geometry": geometry.to_dict()}
    )
    _pick(tmp_path, "model", f"model_path={tmp_path / 'model.pt'}", "particles_per_micrograph=2")
    record = json.loads((tmp_path / "out" / "picks_by_micrograph" / STATE_FILE).read_text())
    assert "picker" not in record["settings"] and "model_path" not in record["settings"]


def test_template_from_labeled_particles_equals_the_classical_picker(tmp_path):
    from topaz_lightning.baselines import average_template, pick_with_score_maps, template_score_map
    from topaz_lightning.io.coordinates import write_coordinates
    from topaz_lightning.io.micrographs import read_micrograph

    mics = _micrographs(tmp_path)
    labels = pd.DataFrame(
        {"micrograph": "m0", "x": [b[0] for b in BLOBS[:2]], "y": [b[1] for b in BLOBS[:2]]}
    )
    write_coordinates(labels, tmp_path / "labels.tsv")
    _, objects = _pick(
        tmp_path,
        "template",
        "picker.particle_diameter_px=16",
        "picker.downsample=1",
        f"picker.particles={tmp_path / 'labels.tsv'}",
        "border_bands=false",
        "particles_per_micrograph=all",
    )
    images = {p.stem: read_micrograph(p) for p in sorted(mics.glob("*.mrc"))}
    # box 2 * round(1.5 * 8) + 1 = 25; NMS 1.25 * 8 = 10
    template = average_template({"m0": images["m0"]}, labels, 25)
    maps = {n: template_score_map(image, template) for n, image in images.items()}
    expected = pick_with_score_maps(maps, 10.0)
    got = objects["picks"]
    assert len(got) == len(expected)
    np.testing.assert_allclose(got[["x", "y"]].to_numpy(), expected[["x", "y"]].to_numpy())
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-5)


def test_template_from_an_image_file_finds_the_particles(tmp_path):
    from topaz_lightning.io.micrographs import write_micrograph

    _micrographs(tmp_path)
    yy, xx = np.mgrid[-12:13, -12:13]
    write_micrograph(tmp_path / "ref.mrc", -np.exp(-(xx**2 + yy**2) / 18.0).astype(np.float32))
    _, objects = _pick(
        tmp_path,
        "template",
        "picker.particle_diameter_px=16",
        "picker.downsample=1",
        f"picker.template_path={tmp_path / 'ref.mrc'}",
        "particles_per_micrograph=4",
    )
    for _, group in objects["picks"].groupby("micrograph"):
        xy = group[["x", "y"]].to_numpy()
        for x, y, _ in BLOBS:
            assert np.hypot(xy[:, 0] - x, xy[:, 1] - y).min() <= 1.0


@pytest.mark.parametrize(
    ("picker", "overrides", "key", "text"),
    [
        ("dog", ["picker.downsample=2"], "picker.particle_diameter_px", "is required for picker=dog"),
        ("dog", ["picker.particle_diameter_px=16"], "picker.downsample", "is required"),
        ("dog", [*DOG, "picker.particle_diameter_px=-3"], "picker.particle_diameter_px", "> 0"),
        ("dog", [*DOG, "picker.downsample=0.5"], "picker.downsample", ">= 1"),
        ("dog", [*DOG, "picker.ratio=1"], "picker.ratio", "> 1"),
        ("dog", [*DOG, "downsample=4"], "downsample", "its own picker.downsample"),
        ("dog", [*DOG, "scoring=coarse_to_fine"], "scoring", "use scoring=dense"),
        ("template", list(DOG), "picker.particles", "one template source"),
        ("template", [*DOG, "picker.particles=a.tsv", "picker.template_path=t.mrc"],
         "picker.particles", "both were given"),
        ("model", [], "model_path", "is required (e.g. model_path=model.pt"),
    ],
)  # fmt: skip
def test_missing_or_bad_picker_settings_are_named(tmp_path, picker, overrides, key, text):
    _micrographs(tmp_path)
    with pytest.raises(ConfigError) as err:
        _pick(tmp_path, picker, *overrides)
    assert err.value.key == key and text in str(err.value)
    assert not (tmp_path / "out").exists()


def test_template_particles_on_no_given_micrograph_name_the_file(tmp_path):
    from topaz_lightning.io.coordinates import write_coordinates

    _micrographs(tmp_path)
    write_coordinates(
        pd.DataFrame({"micrograph": "other", "x": [5.0], "y": [5.0]}), tmp_path / "l.tsv"
    )
    with pytest.raises(InputError, match=r"l\.tsv.*none of its micrographs"):
        _pick(tmp_path, "template", *DOG, f"picker.particles={tmp_path / 'l.tsv'}")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("picker/*.yaml")), ids=lambda p: p.stem)
def test_every_picker_config_builds_a_picker_or_names_its_required_keys(path):
    """A new picker is one class and one yaml: its yaml instantiates (required settings given
    as a number) and the object loads through the Picker interface."""
    from topaz_lightning.picking.pickers import Picker, build_picker

    cfg = compose_config("pick", [f"picker={path.stem}"])
    node = OmegaConf.to_container(cfg.picker)
    assert node["_target_"].rsplit(".", 1)[0].startswith("topaz_lightning.")
    try:
        picker = build_picker(cfg.picker)
    except ConfigError as err:
        assert err.key.startswith("picker.") and "required" in str(err)
    else:
        assert isinstance(picker, Picker)


def test_tzl_pick_and_tzl_evaluate_on_a_baseline_from_the_command_line(tmp_path, monkeypatch):
    from hydra.core.global_hydra import GlobalHydra

    from topaz_lightning.cli import evaluate, pick
    from topaz_lightning.io.coordinates import write_coordinates

    _micrographs(tmp_path)
    truth = pd.DataFrame(
        [(f"m{k}", x, y) for k in range(2) for x, y, _ in BLOBS], columns=["micrograph", "x", "y"]
    )
    write_coordinates(truth, tmp_path / "truth.tsv")
    argv = ["tzl-pick", "picker=dog", *DOG, f"micrographs={tmp_path / 'mics'}"]
    argv += [f"output_dir={tmp_path / 'out'}", *QUIET]
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", argv)
    pick.main()
    GlobalHydra.instance().clear()
    monkeypatch.setattr(
        sys,
        "argv",
        ["tzl-evaluate", f"picks={tmp_path / 'out'}", f"truth={tmp_path / 'truth.tsv'}",
         "max_distance=4", f"output_dir={tmp_path / 'eval'}"],
    )  # fmt: skip
    evaluate.main()
    GlobalHydra.instance().clear()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["aupr"] > 0.9
    # a missing baseline setting ends in one line naming the key (exit 2)
    argv = ["tzl-pick", "picker=dog", DOG[0], f"micrographs={tmp_path / 'mics'}"]
    monkeypatch.setattr(sys, "argv", [*argv, f"output_dir={tmp_path / 'out2'}", *QUIET])
    with pytest.raises(SystemExit) as exit_info:
        pick.main()
    GlobalHydra.instance().clear()
    assert exit_info.value.code == 2
    # refused before the run is stamped (no config.<time>.yaml) or anything is read
    assert not list((tmp_path / "out2").glob("config.*.yaml"))
    # picker=model (the default) without model_path: the same, naming model_path
    argv = ["tzl-pick", f"micrographs={tmp_path / 'mics'}", f"output_dir={tmp_path / 'out3'}"]
    monkeypatch.setattr(sys, "argv", [*argv, *QUIET])
    with pytest.raises(SystemExit) as exit_info:
        pick.main()
    GlobalHydra.instance().clear()
    assert exit_info.value.code == 2
    assert not list((tmp_path / "out3").glob("config.*.yaml"))
    assert "model_path" in (tmp_path / "out3" / "pick.log").read_text()


class BrightSpotPicker:
    """A picker written outside the package, as a research repository would: one class."""

    def __init__(self, particle_diameter_px: float):
        self.diameter = float(particle_diameter_px)

    def load(self, model_path=None, micrographs=None):
        from topaz_lightning.geometry import RunGeometry
        from topaz_lightning.picking.pickers import LoadedPicker, ScoreMapNet

        geometry = RunGeometry(particle_radius_px=self.diameter / 2, normalize="none")
        return LoadedPicker(
            net=ScoreMapNet(np.negative),  # dark blobs score high
            card={"geometry": geometry.to_dict()},
            source="picker=bright_spot",
            record={"name": "bright_spot", "particle_diameter_px": self.diameter},
            sets_preprocessing=True,
        )


def test_a_picker_class_from_outside_the_package_runs_through_tzl_pick(tmp_path):
    from omegaconf import open_dict

    from topaz_lightning.pick import pick

    _micrographs(tmp_path)
    cfg = _config(tmp_path, "model", "particles_per_micrograph=4", "border_bands=false")
    with open_dict(cfg):
        cfg.picker = {"_target_": f"{__name__}.BrightSpotPicker", "particle_diameter_px": 12}
    metrics, objects = pick(cfg)
    assert metrics["pick/picks"] == 8
    # NMS 1.25 x 6 px from the card's particle radius; the blob centres are the best pixels
    assert objects["settings"].settings.nms_radius_px_model == 7.5
    for _, group in objects["picks"].groupby("micrograph"):
        xy = group[["x", "y"]].to_numpy()
        for x, y, _ in BLOBS:
            assert np.hypot(xy[:, 0] - x, xy[:, 1] - y).min() <= 1.0
