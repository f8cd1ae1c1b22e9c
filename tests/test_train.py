"""Tests for train(cfg) and the tzl-train configs: composition, a short run, exact resume, every objective."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from tests.conftest import CONFIGS, compose_config, sample_data

torch.set_num_threads(1)


def make_dataset(root: Path, n: int = 3, size: int = 128, particles: int = 12, seed: int = 0):
    """A few MRC micrographs with bright disks (radius 4) on noise, and a TSV of their centres."""
    from topaz_lightning.io.coordinates import write_coordinates
    from topaz_lightning.io.micrographs import write_micrograph

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    mics = root / "micrographs"
    mics.mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"mic{i}"
        xy = rng.uniform(10, size - 10, size=(particles, 2))
        image = rng.normal(0, 1, (size, size)).astype(np.float32)
        for x, y in xy:
            image[(xx - x) ** 2 + (yy - y) ** 2 <= 16] += 2.5
        write_micrograph(mics / f"{name}.mrc", image)
        rows += [{"micrograph": name, "x": float(x), "y": float(y)} for x, y in xy]
    coords = root / "particles.tsv"
    write_coordinates(pd.DataFrame(rows), coords)
    return mics, coords


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    return make_dataset(tmp_path_factory.mktemp("data"))


def compose_train(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """configs/train.yaml composed like tzl-train would (conftest.compose_config)."""
    return compose_config("train", overrides, output_dir)


def small_overrides(mics: Path, coords: Path, steps: int, extra: list[str] = ()) -> list[str]:
    return [
        "data=files",
        f"data.micrographs={mics}",
        f"data.coordinates={coords}",
        "data.pi=0.05",
        "data.normalize=standardize",
        "data.num_val_micrographs=1",
        "data.batch_positive=4",
        "data.batch_unlabeled=60",
        "data.steps_per_epoch=10",
        "data.val_batches=1",
        "data.device=cpu",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        "callbacks.progress_bar=null",
        "callbacks.held_out_picking.nms_radius_px_model=6",
        "callbacks.held_out_picking.match_distance_px_model=4",
        "callbacks.held_out_picking.every_n_steps=10",
        "trainer.enable_model_summary=false",
        *extra,
    ]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


# ---------------------------------------------------------------- composition
def test_default_config_composes_with_paper_defaults():
    cfg = compose_train([])
    assert cfg.data._target_ == "topaz_lightning.data.SimulatedDataModule"
    assert cfg.model._target_.endswith("Conv31")
    assert cfg.objective._target_.endswith("GEBinomial")
    assert cfg.get("decoder") is None
    assert cfg.module.optimizer.lr == pytest.approx(2e-4)
    assert cfg.data.batch_positive == 16 and cfg.data.batch_unlabeled == 240
    assert cfg.trainer.max_steps == 50000 and cfg.trainer.accelerator == "auto"
    assert cfg.trainer.precision == "32-true"
    assert cfg.callbacks.model_checkpoint.save_last is True
    assert "csv" in cfg.logger


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
)
def test_experiment_configs_compose_and_resolve(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["task_name"] == experiment
    assert resolved["trainer"]["max_steps"] > 0


def test_paper_empiar10096_matches_the_appendix():
    cfg = compose_train(["experiment=paper_empiar10096"])
    assert cfg.trainer.max_steps == 50000
    assert cfg.data.pi == 0.02 and cfg.data.downsample == 4
    assert cfg.data.label_radius_px_model == 4
    assert cfg.data.nms_radius_px_model == 10 and cfg.data.match_distance_px_model == 7
    assert cfg.decoder is not None and cfg.module.recon_weight == "auto"
    assert cfg.objective._target_.endswith("GEBinomial")


@pytest.mark.parametrize("trainer", ["auto", "cpu", "gpu", "ddp", "ddp_cpu"])
def test_trainer_configs_compose(trainer):
    cfg = compose_train([f"trainer={trainer}"])
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if trainer.startswith("ddp"):
        assert cfg.trainer.use_distributed_sampler is False


def test_loggers_instantiate_offline(tmp_path, monkeypatch):
    from topaz_lightning.train import instantiate_loggers

    monkeypatch.delenv("WANDB_MODE", raising=False)
    for name in ["csv", "tensorboard", "wandb", "many", "none"]:
        cfg = compose_train([f"logger={name}"], tmp_path)
        loggers = instantiate_loggers(cfg.logger)
        assert len(loggers) == {"many": 2, "none": 0}.get(name, 1)
        if name == "wandb":
            assert loggers[0]._offline is True  # never contacts the server


def test_bad_callback_node_is_a_config_error(tmp_path):
    from topaz_lightning.errors import ConfigError
    from topaz_lightning.train import instantiate_callbacks

    cfg = OmegaConf.create({"callbacks": {"bad": 3}})
    with pytest.raises(ConfigError, match="callbacks.bad"):
        instantiate_callbacks(cfg.callbacks)
    # null entries and leftovers without _target_ (a tuned node of a disabled group) are skipped
    cfg = OmegaConf.create({"callbacks": {"gone": None, "tuned": {"radius": 3}}})
    assert instantiate_callbacks(cfg.callbacks) == []


def test_hparams_search_sweeps_pi_over_folds():
    cfg = compose_train(["hparams_search=pi_kfold"])
    # the sweeper params live under hydra:, which compose drops; read the file instead
    raw = OmegaConf.load(CONFIGS / "hparams_search" / "pi_kfold.yaml")
    params = raw.hydra.sweeper.params
    assert params["data.pi"].split(",")[0] == "0.01" and params["data.pi"].split(",")[-1] == "0.1"
    assert params["data.fold"] == "range(0,5)"
    assert cfg.optimized_metric == "val/aupr"


# ---------------------------------------------------------------- training runs
def test_short_training_lowers_loss_and_saves_a_reloadable_model(dataset, tmp_path):
    from topaz_lightning.models import load_model
    from topaz_lightning.train import train

    mics, coords = dataset
    cfg = compose_train(
        small_overrides(mics, coords, 30, ["module.optimizer.lr=1e-3"]), tmp_path / "run"
    )
    metrics = train(cfg)
    assert metrics["global_step"] == 30
    out = tmp_path / "run"
    assert (out / "checkpoints" / "last.ckpt").is_file()
    net, extra = load_model(out / "model.pt")
    assert extra["receptive_field"] == 31 == net.receptive_field
    geometry = extra["geometry"]
    assert geometry["pi"] == pytest.approx(0.05) and geometry["pi_source"] == "data.pi"
    assert geometry["label_radius_px_model"] == 3  # no particle size: the paper's 3 px
    assert "preprocess" not in extra  # the card's geometry holds downsample and normalize
    assert geometry["downsample"] == 1.0 and geometry["normalize"] == "standardize"
    # the model card: one versioned record of how the classifier was trained
    card = extra["card"]
    assert card["card_version"] == 2 and card["geometry"] == geometry
    assert card["preprocessing"] == {"downsample": 1.0, "normalize": "standardize"}
    assert card["objective"]["configured"].endswith("GEBinomial")
    assert card["objective"]["optimized"] == "GEBinomial"
    assert card["objective"]["prior"] == "pi_unlabeled"
    assert card["objective"]["prior_value"] == pytest.approx(geometry["pi_unlabeled"])
    assert card["training"]["patch_size_px_model"] == 31
    assert card["training"]["global_step"] == 30 and card["training"]["seed"] == 0
    assert len(card["training"]["data_fingerprint"]) == 64
    stored = torch.load(out / "model.pt", map_location="cpu", weights_only=True)["extra"]
    assert set(stored) == {"card"}  # nothing stored twice
    assert 0 < geometry["pi_unlabeled"] < 0.05
    assert geometry["num_labeled_particles"] == 24  # 2 training micrographs x 12
    # the logged hyperparameters carry the resolved values, not null
    hparams = OmegaConf.load(next((out / "logs" / "csv").rglob("hparams.yaml")))
    assert hparams.pi_unlabeled == pytest.approx(geometry["pi_unlabeled"])
    assert hparams.num_labeled_particles == 24
    assert hparams.geometry.label_radius_px_model == 3
    log = pd.read_csv(next((out / "logs" / "csv").rglob("metrics.csv")))
    losses = log["train/loss"].dropna().to_numpy()
    assert len(losses) >= 25 and np.all(np.isfinite(losses))
    assert losses[-5:].mean() < losses[:5].mean()
    assert "train/loss" in metrics
    # validation ran at the end of each 10-step epoch on the held-out micrograph
    assert 0.0 <= metrics["val/patch_aupr"] <= 1.0
    assert (out / "model_best.pt").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["global_step"] == 30 and saved["train/loss"] == pytest.approx(
        metrics["train/loss"]
    )
    # the split, as name lists for tzl-evaluate micrographs= / tzl-pick subset=
    held_out = (out / "val_micrographs.txt").read_text().split()
    trained = (out / "train_micrographs.txt").read_text().split()
    assert len(held_out) >= 1 and trained and not set(held_out) & set(trained)


def test_resume_from_checkpoint_gives_identical_weights(dataset, tmp_path):
    from topaz_lightning.train import train

    mics, coords = dataset
    extra = [
        "logger=none",
        "callbacks.best_checkpoint=null",
        "callbacks.held_out_picking=null",
        "data.steps_per_epoch=100",
    ]
    straight = tmp_path / "straight"
    train(compose_train(small_overrides(mics, coords, 6, extra), straight))
    first = tmp_path / "resumed"
    train(compose_train(small_overrides(mics, coords, 3, extra), first))
    half = _weights(first / "checkpoints" / "last.ckpt")
    second = tmp_path / "resumed2"
    metrics = train(
        compose_train(
            small_overrides(
                mics, coords, 6, [*extra, f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"]
            ),
            second,
        )
    )
    assert metrics["global_step"] == 6
    a = _weights(straight / "checkpoints" / "last.ckpt")
    b = _weights(second / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # and the resumed run really moved on from the half-way weights
    assert any(not torch.equal(a[k], half[k]) for k in a if a[k].is_floating_point())


def test_resume_ignores_hostile_hyperparameters_and_refuses_foreign_paths(
    dataset, tmp_path, monkeypatch
):
    """Issue 18: a checkpoint that passes weights_only chooses no class and no path."""
    from topaz_lightning.errors import InputError
    from topaz_lightning.train import train

    monkeypatch.chdir(tmp_path)
    mics, coords = dataset
    extra = [
        "logger=none",
        "callbacks.best_checkpoint=null",
        "callbacks.held_out_picking=null",
        "data.steps_per_epoch=100",
    ]
    first = tmp_path / "first"
    train(compose_train(small_overrides(mics, coords, 2, extra), first))
    last = first / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    evil = {"_target_": "os.system", "command": "touch PWNED"}
    state["hyper_parameters"]["run_config"] = {"model": evil, "data": evil}
    state["hyper_parameters"]["pi_unlabeled"] = 0.9
    state["topaz_lightning"] = {"run_config": {"model": evil}, "geometry": {"pi": 0.9}}
    hostile = tmp_path / "hostile.ckpt"
    torch.save(state, hostile)
    overrides = small_overrides(mics, coords, 4, [*extra, f"ckpt_path={hostile}"])
    metrics = train(compose_train(overrides, tmp_path / "second"))
    assert metrics["global_step"] == 4 and not (tmp_path / "PWNED").exists()
    from topaz_lightning.models import load_model

    _, card = load_model(tmp_path / "second" / "model.pt")
    assert card["geometry"]["pi"] == pytest.approx(0.05)  # from the command's config
    # a ModelCheckpoint state for this run's directory naming a file elsewhere (Lightning would
    # restore it and later delete by it)
    for name in state["callbacks"]:
        if "dirpath" in state["callbacks"][name]:  # ModelCheckpoint and RunCheckpoint states
            state["callbacks"][name]["dirpath"] = str(tmp_path / "third" / "checkpoints")
            state["callbacks"][name]["best_model_path"] = str(tmp_path / "thesis.ckpt")
    torch.save(state, hostile)
    with pytest.raises(InputError, match="best_model_path"):
        train(compose_train(overrides, tmp_path / "third"))


def test_missing_checkpoint_is_a_config_error(dataset, tmp_path):
    from topaz_lightning.errors import ConfigError
    from topaz_lightning.train import train

    mics, coords = dataset
    cfg = compose_train(
        small_overrides(mics, coords, 2, [f"ckpt_path={tmp_path / 'nope.ckpt'}"]), tmp_path
    )
    with pytest.raises(ConfigError, match="ckpt_path"):
        train(cfg)


OBJECTIVES = sorted(p.stem for p in (CONFIGS / "objective").glob("*.yaml"))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_trains_two_steps(objective, dataset, tmp_path):
    from topaz_lightning.train import train

    mics, coords = dataset
    extra = [
        f"objective={objective}",
        "logger=none",
        "callbacks.best_checkpoint=null",
        "callbacks.held_out_picking=null",
    ]
    metrics = train(compose_train(small_overrides(mics, coords, 2, extra), tmp_path))
    assert metrics["global_step"] == 2
    assert np.isfinite(metrics["train/loss"])


MODELS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_two_steps_with_decoder(model, dataset, tmp_path):
    from topaz_lightning.models import load_model
    from topaz_lightning.train import train

    mics, coords = dataset
    extra = [
        f"model={model}",
        "decoder=dcgan",
        "logger=none",
        "callbacks.best_checkpoint=null",
        "callbacks.held_out_picking=null",
        "data.batch_unlabeled=12",
    ]
    metrics = train(compose_train(small_overrides(mics, coords, 2, extra), tmp_path))
    assert metrics["global_step"] == 2 and "train/recon" in metrics
    net, extra_saved = load_model(tmp_path / "model.pt")
    assert extra_saved["geometry"]["num_labeled_particles"] > 0


def test_bf16_mixed_precision_trains_on_cpu(dataset, tmp_path):
    from topaz_lightning.train import train

    mics, coords = dataset
    extra = [
        "trainer.precision=bf16-mixed",
        "decoder=dcgan",
        "logger=none",
        "callbacks.best_checkpoint=null",
        "callbacks.held_out_picking=null",
    ]
    metrics = train(compose_train(small_overrides(mics, coords, 2, extra), tmp_path))
    assert metrics["global_step"] == 2 and np.isfinite(metrics["train/loss"])


def test_short_training_on_the_simulators_tiny_preset(tmp_path):
    from topaz_lightning.models import load_model
    from topaz_lightning.train import train

    overrides = [
        "data.simulated_preset=tiny",
        f"data.simulated_dir={tmp_path / 'tiny'}",
        "data.batch_unlabeled=120",
        "data.device=cpu",
        "trainer.max_steps=10",
        "logger=none",
        "callbacks.progress_bar=null",
        "callbacks.held_out_picking.every_n_steps=10",
    ]
    metrics = train(compose_train(overrides, tmp_path / "run"))
    assert metrics["global_step"] == 10 and np.isfinite(metrics["train/loss"])
    assert 0.0 <= metrics["val/aupr"] <= 1.0
    _, extra = load_model(tmp_path / "run" / "model.pt")
    geometry = extra["geometry"]
    # dataset.yaml of the tiny preset: label 4, NMS 10, match 7 px at its own pixel size
    assert geometry["label_radius_px_model"] == 4 and geometry["nms_radius_px_model"] == 10
    assert geometry["match_distance_px_model"] == 7 and 0 < geometry["pi"] < 1
    assert extra["normalize_fit"]["mu"] and 0 < extra["normalize_fit"]["pi"] < 1
    from topaz_lightning.preprocess.gmm import GMMFit

    fit = GMMFit.from_record(extra["card"]["preprocessing"]["gmm"])
    assert len(fit.names) == len(fit.alpha) > 0  # the training fit with its image scales


def test_fresh_run_refuses_to_replace_an_earlier_runs_model(dataset, tmp_path):
    from topaz_lightning.errors import OutputExistsError
    from topaz_lightning.train import train

    mics, coords = dataset
    (tmp_path / "model.pt").write_bytes(b"an earlier run's model")
    extra = ["logger=none", "callbacks.best_checkpoint=null", "callbacks.held_out_picking=null"]
    with pytest.raises(OutputExistsError, match="model.pt"):
        train(compose_train(small_overrides(mics, coords, 2, extra), tmp_path))
    assert (tmp_path / "model.pt").read_bytes() == b"an earlier run's model"
    metrics = train(
        compose_train(small_overrides(mics, coords, 2, [*extra, "overwrite=true"]), tmp_path)
    )
    assert metrics["global_step"] == 2
    assert (tmp_path / "model.pt").read_bytes() != b"an earlier run's model"


def _files_overrides(mics: Path, coords: Path, steps: int) -> list[str]:
    """data=files as a user writes it: no radius anywhere (the README's example, shrunk)."""
    return [
        "data=files",
        f"data.micrographs={mics}",
        f"data.coordinates={coords}",
        "data.pi=0.05",
        "data.normalize=standardize",
        "data.batch_positive=4",
        "data.batch_unlabeled=60",
        "data.steps_per_epoch=10",
        "data.val_batches=1",
        f"trainer.max_steps={steps}",
        f"callbacks.held_out_picking.every_n_steps={steps}",
    ]


def test_files_run_without_validation_micrographs_asks_for_no_radius(dataset, cfg_train):
    from topaz_lightning.models import load_model
    from topaz_lightning.train import train

    mics, coords = dataset
    cfg = cfg_train(_files_overrides(mics, coords, 2) + ["callbacks.best_checkpoint=null"])
    assert cfg.callbacks.held_out_picking.nms_radius_px_model is None  # nothing computed by hand
    metrics = train(cfg)
    assert metrics["global_step"] == 2 and "val/aupr" not in metrics
    _, extra = load_model(Path(cfg.paths.output_dir) / "model.pt")
    assert extra["geometry"]["nms_radius_px_model"] is None  # no particle size was given


def test_particle_size_gives_the_held_out_radii(dataset, cfg_train):
    from topaz_lightning.geometry import NMS_RADIUS_PER_PARTICLE_RADIUS
    from topaz_lightning.models import load_model
    from topaz_lightning.train import train

    mics, coords = dataset
    overrides = _files_overrides(mics, coords, 2) + [
        "data.num_val_micrographs=1",
        "data.particle_diameter_px=8",  # the bright disks of make_dataset have radius 4
    ]
    metrics = train(cfg_train(overrides))
    assert 0.0 <= metrics["val/aupr"] <= 1.0
    _, extra = load_model(Path(cfg_train().paths.output_dir) / "model.pt")
    geometry = extra["geometry"]
    assert geometry["particle_radius_px"] == 4
    assert geometry["nms_radius_px_model"] == NMS_RADIUS_PER_PARTICLE_RADIUS * 4
    assert geometry["match_distance_px_model"] == 4 and geometry["label_radius_px_model"] == 1


@pytest.mark.slow
def test_readme_files_example_on_the_sample_data(cfg_train):
    """README "Usage": data=files on the real EMPIAR-10017 sample, downsample 4, particle size
    in pixels, validation micrograph, no radius given (shrunk to a few steps)."""
    from topaz_lightning.geometry import NMS_RADIUS_PER_PARTICLE_RADIUS
    from topaz_lightning.models import load_model
    from topaz_lightning.train import train

    sample = sample_data("empiar10017_dev")
    cfg = cfg_train(
        [
            "data=files",
            f"data.micrographs={sample / 'images'}",
            f"data.coordinates={sample / 'coords'}",
            "data.particle_diameter_px=108",
            "data.downsample=4",
            "data.particles_per_micrograph=700",
            "data.num_labeled=100",
            "data.num_val_micrographs=1",
            "data.batch_unlabeled=60",
            "objective=nnpu",
            "model=resnet8",
            "trainer.max_steps=4",
            "callbacks.held_out_picking.every_n_steps=4",
            "callbacks.held_out_picking.max_micrographs=1",
        ]
    )
    metrics = train(cfg)
    assert metrics["global_step"] == 4 and 0 <= metrics["val/aupr"] <= 1
    _, extra = load_model(Path(cfg.paths.output_dir) / "model.pt")
    g = extra["geometry"]
    assert (g["downsample"], g["particle_radius_px"]) == (4, 54)
    nms = NMS_RADIUS_PER_PARTICLE_RADIUS * 13.5  # 1.25 r = 16.875 model px
    assert (g["label_radius_px_model"], g["nms_radius_px_model"]) == (4, nms)
    assert g["match_distance_px_model"] == 13.5 and g["num_labeled_particles"] == 100


def test_few_labels_hint_flags_long_runs_on_very_few_labels():
    from topaz_lightning.train import few_labels_hint

    assert "max_steps=50000" in few_labels_hint(10, 50000)
    assert few_labels_hint(10, 2000) is None  # short enough
    assert few_labels_hint(100, 50000) is None  # 100 labels still gained at 10k steps
    assert few_labels_hint(None, 50000) is None  # all labels
