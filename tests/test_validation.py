"""Settings are checked before any data is read (exit 2 naming the key); tzl-evaluate's name and distance checks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import compose_config
from tests.helpers import evaluate_config
from topaz_lightning.cli.validate import validate
from topaz_lightning.errors import ConfigError, InputError

BIN = Path(sys.executable).parent

PICK = [
    "model_path=/nonexistent/model.pt",
    "micrographs=/nonexistent",
    "nms_radius_px_model=5",
    "output_dir=/tmp/x",
]
EVALUATE = ["picks=p.tsv", "truth=t.tsv", "output_dir=/tmp/x"]

BAD = [
    ("train", ["trainer.max_steps=abc"], "trainer.max_steps"),
    ("train", ["trainer.max_steps=0"], "trainer.max_steps"),
    ("train", ["trainer.max_steps=-5"], "trainer.max_steps"),
    ("train", ["trainer.max_steps=1.5"], "trainer.max_steps"),
    ("train", ["module.optimizer.lr=-1"], "module.optimizer.lr"),
    ("train", ["module.optimizer.lr=abc"], "module.optimizer.lr"),
    ("train", ["module.optimizer.lr=0"], "module.optimizer.lr"),
    ("train", ["data.batch_positive=0"], "data.batch_positive"),
    ("train", ["data.patch_size=0"], "data.patch_size"),
    ("train", ["data.patch_size=32"], "data.patch_size"),
    ("train", ["data.num_labeled=0"], "data.num_labeled"),
    ("train", ["data.pi=1.5"], "data.pi"),
    ("train", ["data.downsample=0.5"], "data.downsample"),
    ("train", ["data.normalize=zscore"], "data.normalize"),
    ("train", ["data.num_folds=3", "data.fold=3"], "data.fold"),
    ("train", ["trainer.enable_progress_bar=maybe"], "trainer.enable_progress_bar"),
    (
        "train",
        ["+callbacks.held_out_picking.pick.border_bands=maybe"],
        "callbacks.held_out_picking.pick.border_bands",
    ),
    (
        "train",
        ["+callbacks.held_out_picking.pick.border_padding_px_model=-1"],
        "callbacks.held_out_picking.pick.border_padding_px_model",
    ),
    (
        "train",
        ["+callbacks.held_out_picking.pick.tta=3"],
        "callbacks.held_out_picking.pick.tta",
    ),
    (
        "train",
        ["+callbacks.held_out_picking.pick.max_pick=3"],
        "callbacks.held_out_picking.pick.max_pick",
    ),
    (
        "train",
        ["callbacks.held_out_picking.nms_radius_px_model=0"],
        "callbacks.held_out_picking.nms_radius_px_model",
    ),
    ("pick", [*PICK, "tile_size=0"], "tile_size"),
    ("pick", [*PICK, "chunk_size=-1"], "chunk_size"),
    ("pick", [*PICK, "batch_size=0"], "batch_size"),
    ("pick", [*PICK, "radius=abc"], "radius"),
    ("pick", [*PICK, "threshold_probability=2"], "threshold_probability"),
    ("pick", [*PICK, "score=odds"], "score"),
    ("pick", [*PICK, "format=xml"], "format"),
    ("pick", [*PICK, "format=box"], "box_size"),
    ("pick", [*PICK, "output=picks.box"], "box_size"),
    ("pick", [*PICK, "output=picks.xyz"], "output"),
    ("pick", [*PICK, "per_micrograph=true"], "format"),
    ("evaluate", [*EVALUATE, "max_distance=-1"], "max_distance"),
    ("evaluate", [*EVALUATE, "max_distance=abc"], "max_distance"),
    ("evaluate", [*EVALUATE, "matching=closest"], "matching"),
    ("preprocess", ["input=x", "output_dir=/tmp/x", "downsample=0"], "downsample"),
    ("preprocess", ["input=x", "output_dir=/tmp/x", "num_workers=0"], "num_workers"),
    ("convert", ["input=x", "output=y", "scale=0"], "scale"),
    ("convert", ["input=x", "output=y", "box_size=-3"], "box_size"),
]


@pytest.mark.parametrize(("command", "overrides", "key"), BAD)
def test_bad_setting_names_its_key(command, overrides, key):
    cfg = compose_config(command, overrides)
    with pytest.raises(ConfigError, match=f"'{key}'"):
        validate(command, cfg)


@pytest.mark.parametrize("command", ["train", "pick", "evaluate", "preprocess", "convert"])
def test_default_configs_pass(command):
    overrides = {"pick": PICK, "evaluate": EVALUATE}.get(command, [])
    validate(command, compose_config(command, overrides))


@pytest.mark.parametrize(
    "experiment",
    sorted(p.stem for p in (Path(__file__).parents[1] / "configs/experiment").glob("*.yaml")),
)
def test_experiment_configs_pass(experiment):
    validate("train", compose_config("train", [f"experiment={experiment}"]))


def test_pick_output_in_a_read_only_directory_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        cfg = compose_config("pick", [*PICK[:3], f"output_dir={locked / 'run'}"])
        with pytest.raises(ConfigError, match="read-only"):
            validate("pick", cfg)
    finally:
        locked.chmod(0o755)


def test_batch_positive_in_the_thousands_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="topaz_lightning"):
        validate("train", compose_config("train", ["data.batch_positive=5000"]))
    assert "data.batch_positive=5000" in caplog.text


def test_progress_bar_off_simply_works(tmp_path):
    """enable_progress_bar=false with the default TQDMProgressBar callback (Lightning refuses it)."""
    from topaz_lightning.train import instantiate_callbacks

    cfg = compose_config("train", ["trainer.enable_progress_bar=false"], output_dir=tmp_path)
    validate("train", cfg)
    callbacks = instantiate_callbacks(cfg.callbacks)
    assert not any("ProgressBar" in type(c).__name__ for c in callbacks)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False, accelerator="cpu")
    assert not trainer.progress_bar_callback


def test_train_command_exits_2_before_reading_data(tmp_path):
    """The data paths do not exist: the error is about the setting, so nothing was read first."""
    result = subprocess.run(
        [
            str(BIN / "tzl-train"),
            "trainer.max_steps=abc",
            "data=files",
            f"data.micrographs={tmp_path / 'none'}",
            f"data.coordinates={tmp_path / 'none.tsv'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "trainer.max_steps" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ data-dependent


@pytest.fixture
def small_files(tmp_path) -> Path:
    from topaz_lightning.io.micrographs import write_micrograph

    rng = np.random.default_rng(0)
    rows = []
    for k in range(3):
        write_micrograph(
            tmp_path / "mics" / f"m{k}.mrc", rng.normal(size=(48, 48)).astype(np.float32)
        )
        rows += [f"m{k}\t{10 + 5 * j}\t{12 + 4 * j}" for j in range(4)]
    (tmp_path / "parts.tsv").write_text("image_name\tx_coord\ty_coord\n" + "\n".join(rows) + "\n")
    return tmp_path


def _datamodule(small_files: Path, *overrides: str):
    cfg = compose_config(
        "train",
        [
            "data=files",
            f"data.micrographs={small_files / 'mics'}",
            f"data.coordinates={small_files / 'parts.tsv'}",
            "data.num_val_micrographs=1",
            "data.particles_per_micrograph=4",
            *overrides,
        ],
    )
    return instantiate(cfg.data)


def test_num_labeled_above_available_fails_before_normalizing(small_files, monkeypatch):
    dm = _datamodule(small_files, "data.num_labeled=1000")

    def never(*args, **kwargs):
        raise AssertionError("micrographs were preprocessed before the check")

    monkeypatch.setattr("topaz_lightning.data.datamodule.preprocess_for_training", never)
    with pytest.raises(ConfigError, match="data.num_labeled.*1000.*only 8"):
        dm.setup("fit")


def test_patch_size_larger_than_micrographs(small_files, monkeypatch):
    dm = _datamodule(small_files, "data.patch_size=61")
    with pytest.raises(ConfigError, match="data.patch_size"):
        dm.setup("fit")


# ------------------------------------------------------------------------------ tzl-evaluate


def _evaluate(tmp_path: Path, picks: str, truth: str, *extra: str):
    from topaz_lightning.cli.evaluate import run

    (tmp_path / "p.tsv").write_text(picks)
    (tmp_path / "t.tsv").write_text(truth)
    return run(
        evaluate_config(tmp_path / "p.tsv", tmp_path / "t.tsv", tmp_path / "e", "plot=null", *extra)
    )


TRUTH = "image_name\tx_coord\ty_coord\nmic_1\t10\t10\nmic_2\t20\t20\n"


def test_evaluate_fails_when_no_pick_matches_a_truth_name(tmp_path):
    picks = "image_name\tx_coord\ty_coord\tscore\nmic_1.mrc\t10\t10\t1.0\nmic_2.mrc\t20\t20\t1.0\n"
    with pytest.raises(InputError, match="names do not match") as err:
        _evaluate(tmp_path, picks, TRUTH, "max_distance=3")
    assert "'mic_1.mrc'" in str(err.value) and "'mic_1'" in str(err.value)
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_evaluate_warns_about_one_sided_names(tmp_path, caplog):
    picks = "image_name\tx_coord\ty_coord\tscore\nmic_1\t10\t10\t1.0\nother\t20\t20\t1.0\n"
    with caplog.at_level(logging.WARNING, logger="topaz_lightning"):
        result = _evaluate(tmp_path, picks, TRUTH, "max_distance=3")
    assert "'other'" in caplog.text and "'mic_2'" in caplog.text
    assert result["n_true"] == 2


@pytest.mark.slow  # a subprocess; the in-process test above covers the check itself
def test_evaluate_cli_exit_status_2_for_mismatched_names(tmp_path):
    (tmp_path / "p.tsv").write_text("image_name\tx_coord\ty_coord\tscore\nzzz\t1\t1\t1\n")
    (tmp_path / "t.tsv").write_text(TRUTH)
    result = subprocess.run(
        [str(BIN / "tzl-evaluate"), f"picks={tmp_path / 'p.tsv'}", f"truth={tmp_path / 't.tsv'}", "max_distance=3", f"output_dir={tmp_path / 'e'}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 2 and "'zzz'" in result.stderr


def _model_with_geometry(path: Path, match_px_model: float | None, downsample: float) -> Path:
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.models import Conv31, save_model

    geometry = RunGeometry(downsample=downsample, match_distance_px_model=match_px_model)
    return save_model(path, Conv31(widths=(2, 2, 2)), extra={"geometry": geometry.to_dict()})


def test_evaluate_max_distance_from_model_dataset_or_explicit(tmp_path):
    from topaz_lightning.cli.evaluate import resolve_max_distance

    model = _model_with_geometry(tmp_path / "model.pt", 3.0, 4.0)
    cfg = OmegaConf.create({"max_distance": None, "model_path": str(model), "dataset": None})
    assert resolve_max_distance(cfg) == 12.0  # model frame x downsample = micrograph pixels
    cfg.max_distance = 5
    assert resolve_max_distance(cfg) == 5.0
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset.yaml").write_text("shape: [64, 64]\nmatch_distance_px: 7\n")
    cfg = OmegaConf.create(
        {"max_distance": None, "model_path": None, "dataset": str(tmp_path / "ds")}
    )
    assert resolve_max_distance(cfg) == 7.0
    cfg.dataset = None
    with pytest.raises(ConfigError, match="max_distance"):
        resolve_max_distance(cfg)
    bare = _model_with_geometry(tmp_path / "bare.pt", None, 1.0)
    with pytest.raises(ConfigError, match="no match distance"):
        resolve_max_distance(OmegaConf.create({"max_distance": None, "model_path": str(bare)}))


def test_pick_then_evaluate_with_a_micrograph_called_data_0001(tmp_path):
    """A STAR-looking name in a TSV row must not make the picks file "STAR" (issue 8)."""
    from topaz_lightning.cli.evaluate import run as evaluate
    from topaz_lightning.cli.pick import run as pick
    from topaz_lightning.io.coordinates import detect_format
    from topaz_lightning.io.micrographs import write_micrograph
    from topaz_lightning.models import Conv31, save_model

    rng = np.random.default_rng(1)
    for name in ("data_0001", "loop_2"):
        write_micrograph(
            tmp_path / "mics" / f"{name}.mrc", rng.normal(size=(64, 64)).astype(np.float32)
        )
    torch.manual_seed(0)
    extra = {"preprocess": {"downsample": 1.0, "normalize": "none"}}
    model = save_model(tmp_path / "model.pt", Conv31(widths=(2, 2, 2)), extra=extra)
    pick(compose_config("pick", [f"model_path={model}", f"micrographs={tmp_path / 'mics'}", "nms_radius_px_model=6", f"output_dir={tmp_path / 'picks'}", "progress=false", "device=cpu"]))  # fmt: skip
    picks = tmp_path / "picks" / "picks.tsv"
    assert picks.read_text().splitlines()[1].startswith("data_0001\t")
    assert detect_format(picks) == "tsv"
    truth = pd.DataFrame(
        {"micrograph": ["data_0001", "loop_2"], "x": [30.0, 20.0], "y": [30.0, 40.0]}
    )
    truth.to_csv(tmp_path / "truth.csv", index=False)
    cfg = evaluate_config(
        picks, tmp_path / "truth.csv", tmp_path / "e", "max_distance=6", "plot=null"
    )
    result = evaluate(cfg)
    assert result["n_true"] == 2


def test_preprocess_refuses_coordinates_outside_the_image_before_work(small_files):
    from topaz_lightning.cli.preprocess import run

    (small_files / "out.tsv").write_text("image_name\tx_coord\ty_coord\nm0\t10\t10\nm1\t60\t5\n")
    out = small_files / "pre"
    cfg = compose_config(
        "preprocess",
        [f"input={small_files / 'mics'}", f"output_dir={out}", f"coordinates={small_files / 'out.tsv'}", "progress=false"],
    )  # fmt: skip
    with pytest.raises(InputError, match="outside the image") as err:
        run(cfg)
    assert "'m1', x=60" in str(err.value)
    assert not list(out.glob("*.mrc")) if out.exists() else True


def test_read_micrograph_shape_from_headers(small_files, empiar10017_dir):
    from topaz_lightning.io.micrographs import read_micrograph, read_micrograph_shape

    for path in [
        small_files / "mics" / "m0.mrc",
        *sorted((empiar10017_dir / "images").glob("*.jpg"))[:1],
    ]:
        assert read_micrograph_shape(path) == read_micrograph(path).shape
