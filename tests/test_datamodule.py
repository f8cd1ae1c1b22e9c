"""Tests for PUDataModule and its sources: geometry, splits, k-fold, num_labeled, pi, errors, configs, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_config
from tests.helpers import quiet_trainer
from topaz_lightning.data import FilesDataModule, SimulatedDataModule, kfold_split, positive_mask
from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.geometry import NMS_RADIUS_PER_PARTICLE_RADIUS


def synthetic(num=6, shape=(48, 64), per_mic=5, seed=0):
    """Random micrographs and particles kept 6 px inside the border."""
    rng = np.random.default_rng(seed)
    images, rows = {}, []
    for i in range(num):
        name = f"mic{i:02d}"
        images[name] = rng.normal(size=shape).astype(np.float32)
        for _ in range(per_mic):
            rows.append((name, rng.uniform(6, shape[1] - 6), rng.uniform(6, shape[0] - 6)))
    return images, pd.DataFrame(rows, columns=["micrograph", "x", "y"])


def make(**kwargs):
    images, coords = synthetic()
    args = dict(
        micrographs=images, coordinates=coords, pi=0.2, normalize="none", patch_size=11, seed=0
    )
    args.update(kwargs)
    return FilesDataModule(**args)


def test_setup_exposes_the_data_contract_and_batches():
    dm = make(num_val_micrographs=2, steps_per_epoch=3)
    dm.setup("fit")
    assert len(dm.train_micrographs) == 4 and len(dm.val_micrographs) == 2
    assert set(dm.train_micrographs).isdisjoint(dm.val_micrographs)
    assert set(dm.train_coordinates["micrograph"]) <= set(dm.train_micrographs)
    assert set(dm.val_coordinates["micrograph"]) == set(dm.val_micrographs)
    assert len(dm.val_coordinates) == 10 and dm.num_labeled_particles == 20
    assert dm.pi == 0.2 and dm.patch_size == 11
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    for patches, labels in batches:
        assert patches.shape == (256, 1, 11, 11) and patches.dtype == torch.float32
        assert int(labels.sum()) == 16 and labels[:16].eq(1).all()
    val = list(dm.val_dataloader())
    assert len(val) == 4 and val[0][0].shape == (256, 1, 11, 11)


def test_pi_unlabeled_follows_from_pi_and_the_labeled_regions():
    dm = make(pi=0.1)
    dm.setup()
    masks = [
        positive_mask(img.shape, dm.train_coordinates.query("micrograph == @n")[["x", "y"]], 3)
        for n, img in dm.train_micrographs.items()
    ]
    n_lab = sum(int(m.sum()) for m in masks)
    n_all = sum(m.size for m in masks)
    assert dm.geometry.num_labeled_positive_regions == n_lab and dm.geometry.num_regions == n_all
    assert dm.pi_unlabeled == pytest.approx((0.1 * n_all - n_lab) / (n_all - n_lab))


def test_pi_from_particles_per_micrograph_uses_the_disk_area():
    dm = make(pi=None, particles_per_micrograph=7, label_radius_px_model=4)
    dm.setup()
    assert dm.pi == pytest.approx(7 * 49 / (48 * 64))


def test_pi_at_or_below_the_labeled_fraction_gives_pi_unlabeled_zero_without_a_warning():
    import warnings

    dm = make(pi=0.001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.setup()
    # every positive is labeled: 0 exactly (the module then trains PN), no clamp to 1e-4
    assert dm.pi_unlabeled == 0.0 and dm.geometry.pi == 0.001


def test_num_labeled_subsample_is_reproducible_with_its_seed():
    a, b, c = make(num_labeled=7), make(num_labeled=7), make(num_labeled=7, labeled_seed=1)
    for dm in (a, b, c):
        dm.setup()
    pd.testing.assert_frame_equal(a.train_coordinates, b.train_coordinates)
    assert len(a.train_coordinates) == 7 and a.num_labeled_particles == 7
    assert not a.train_coordinates.equals(c.train_coordinates)
    with pytest.raises(ConfigError, match="num_labeled.*only 30"):
        make(num_labeled=31).setup()


def test_kfold_splits_are_disjoint_and_cover_all_micrographs():
    names = [f"m{i}" for i in range(11)]
    vals = []
    for fold in range(4):
        train, val = kfold_split(names, 4, fold, seed=3)
        assert set(train).isdisjoint(val) and set(train) | set(val) == set(names)
        vals.append(val)
    assert sorted(sum(vals, [])) == sorted(names)
    assert sorted(len(v) for v in vals) == [2, 3, 3, 3]
    seen = []
    for fold in range(3):
        dm = make(num_folds=3, fold=fold)
        dm.setup()
        seen += list(dm.val_micrographs)
        assert len(dm.train_micrographs) == 4
    assert sorted(seen) == [f"mic{i:02d}" for i in range(6)]
    with pytest.raises(ConfigError, match="fold"):
        make(num_folds=3, fold=3).setup()
    with pytest.raises(ConfigError, match="num_folds"):
        make(num_folds=3, num_val_micrographs=1)


def test_train_and_val_lists(tmp_path):
    (tmp_path / "train.txt").write_text("mic00\nmic01.mrc\n# comment\n\nmic02\n")
    (tmp_path / "val.txt").write_text("mic05\n")
    dm = make(train_list=tmp_path / "train.txt", val_list=tmp_path / "val.txt")
    dm.setup()
    assert list(dm.train_micrographs) == ["mic00", "mic01", "mic02"]
    assert list(dm.val_micrographs) == ["mic05"]
    (tmp_path / "bad.txt").write_text("mic00\nnope\n")
    with pytest.raises(InputError, match=r"bad.txt: line 2: micrograph 'nope'"):
        make(val_list=tmp_path / "bad.txt").setup()


def test_coordinates_outside_the_image_are_rejected():
    images, coords = synthetic()
    coords.loc[3, "x"] = 64.5
    with pytest.raises(InputError, match="outside"):
        make(coordinates=coords).setup()


def test_unknown_micrograph_names_are_rejected():
    images, coords = synthetic()
    coords.loc[0, "micrograph"] = "elsewhere"
    with pytest.raises(InputError, match="'elsewhere'"):
        make(coordinates=coords).setup()


def test_empty_coordinate_file_is_rejected(tmp_path):
    path = tmp_path / "picks.tsv"
    path.write_text("image_name\tx_coord\ty_coord\n")
    with pytest.raises(InputError, match="picks.tsv.*empty"):
        make(coordinates=path).setup()


def test_pi_settings_must_be_exactly_one():
    with pytest.raises(ConfigError, match="at most one of pi and particles_per_micrograph"):
        make(pi=0.1, particles_per_micrograph=5)
    with pytest.raises(ConfigError, match="data.pi"):
        make(pi=None).setup()
    with pytest.raises(ConfigError, match=r"data.pi.*\(0, 1\)"):
        make(pi=1.5)


def test_files_config_requires_micrographs_and_coordinates():
    from hydra.utils import instantiate

    cfg = compose_config("train", ["data=files"])
    # Hydra wraps constructor errors in InstantiationException; the ConfigError is its cause
    with pytest.raises(Exception) as info:
        instantiate(cfg.data)
    cause = info.value if isinstance(info.value, ConfigError) else info.value.__cause__
    assert isinstance(cause, ConfigError) and "data.micrographs" in str(cause)
    assert "required" in str(cause)


def test_every_data_config_has_a_target_and_the_shared_keys(configs_dir):
    files = sorted(p for p in (configs_dir / "data").glob("*.yaml") if not p.stem.startswith("_"))
    assert {f.stem for f in files} >= {"files", "simulated"}
    shared = set(OmegaConf.load(configs_dir / "data" / "_base.yaml"))
    for f in files:
        cfg = compose_config("train", [f"data={f.stem}"])
        assert cfg.data._target_.startswith("topaz_lightning.data")
        assert shared <= set(cfg.data), f.stem


def test_files_config_on_real_mrc_and_star(ucsf_dir):
    from hydra.utils import instantiate

    cfg = compose_config(
        "train",
        [
            "data=files",
            f"data.micrographs={ucsf_dir / '*.mrc'}",
            f"data.coordinates={ucsf_dir / 'Ucsf_stack_1142_DW_autopick.star'}",
            "data.particles_per_micrograph=300",
            "data.downsample=2",
            "data.normalize=standardize",
            "data.patch_size=31",
            "data.steps_per_epoch=2",
            "data.device=cpu",
        ],
    )
    dm = instantiate(cfg.data)
    dm.setup()
    ((name, image),) = dm.train_micrographs.items()
    assert image.shape == (927 // 2, 959 // 2 + 1) or abs(image.shape[0] - 463.5) < 1
    assert abs(image.mean()) < 1e-3 and image.std() == pytest.approx(1, abs=1e-3)
    from topaz_lightning.io.coordinates import read_coordinates

    raw = read_coordinates(ucsf_dir / "Ucsf_stack_1142_DW_autopick.star")
    np.testing.assert_allclose(dm.train_coordinates["x"], raw["x"] / 2)
    assert dm.num_labeled_particles == 45
    # the header's pixel size is unset (1.0): unknown, and no particle size was given
    assert dm.geometry.pixel_size_a is None and dm.geometry.nms_radius_px_model is None
    patches, labels = next(iter(dm.train_dataloader()))
    assert patches.shape == (256, 1, 31, 31) and torch.isfinite(patches).all()


def write_fake_simulated(root: Path, pi=0.12):
    """The simulate layout (micrographs/*.mrc, particles.tsv, train/test.txt, dataset.yaml), tiny."""
    from topaz_lightning.io.micrographs import write_micrograph

    images, coords = synthetic(num=4, shape=(40, 40), per_mic=3, seed=5)
    (root / "micrographs").mkdir(parents=True)
    for name, image in images.items():
        write_micrograph(root / "micrographs" / f"{name}.mrc", image)
    lines = ["image_name\tx_coord\ty_coord"] + [
        f"{r.micrograph}\t{r.x:.2f}\t{r.y:.2f}" for r in coords.itertuples()
    ]
    (root / "particles.tsv").write_text("\n".join(lines) + "\n")
    (root / "train.txt").write_text("mic00\nmic01\nmic02\n")
    (root / "test.txt").write_text("mic03\n")
    (root / "dataset.yaml").write_text(
        f"preset: tiny\nseed: 0\nshape: [40, 40]\nlabel_radius_px: 4\n"
        f"particles_per_micrograph: 3\nsuggested_pi: {pi}\n"
        "nms_radius_px: 10\nmatch_distance_px: 7\n"
    )


def test_simulated_layout_gives_split_pi_and_radius(tmp_path):
    from hydra.utils import instantiate

    write_fake_simulated(tmp_path / "sim")
    cfg = compose_config(
        "train",
        [
            f"data.simulated_dir={tmp_path / 'sim'}",
            "data.normalize=none",
            "data.patch_size=9",
            "data.device=cpu",
        ],
    )
    dm = instantiate(cfg.data)
    dm.prepare_data()  # present: nothing generated
    dm.setup()
    assert list(dm.train_micrographs) == ["mic00", "mic01", "mic02"]
    assert list(dm.val_micrographs) == ["mic03"] and len(dm.val_coordinates) == 3
    assert dm.pi == 0.12 and dm.geometry.label_radius_px_model == 4
    assert dm.geometry.nms_radius_px_model == 10 and dm.geometry.match_distance_px_model == 7
    # with downsampling every dataset.yaml length is divided by it (one rule: label 4 -> 2 px,
    # NMS 10 -> 5, match 7 -> 3.5) and the suggested pi no longer applies: derived from the
    # particles per micrograph at the model-frame label radius
    dm2 = SimulatedDataModule(simulated_dir=tmp_path / "sim", downsample=2, normalize="none")
    dm2.setup()
    g = dm2.geometry
    assert (g.label_radius_px_model, g.nms_radius_px_model, g.match_distance_px_model) == (
        2,
        5,
        3.5,
    )
    assert dm2.pi == pytest.approx(3 * 13 / (20 * 20))
    dm3 = SimulatedDataModule(
        simulated_dir=tmp_path / "sim", num_folds=3, fold=1, normalize="none", pi=0.1
    )
    dm3.setup()
    assert (
        len(dm3.val_micrographs) == 1 and "mic03" not in dm3.train_micrographs | dm3.val_micrographs
    )
    dm4 = SimulatedDataModule(
        simulated_dir=tmp_path / "sim", num_val_micrographs=1, normalize="none", pi=0.1
    )
    dm4.setup()
    assert len(dm4.val_micrographs) == 1 and len(dm4.train_micrographs) == 2
    assert "mic03" not in dm4.train_micrographs | dm4.val_micrographs


class Recorder(pl.LightningModule):
    """Records the patches of every training batch; one tiny parameter so the loop steps."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        patches, labels = batch
        self.seen.append(patches.clone())
        return (self.weight * patches.mean()).sum() + self.weight.square().sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(tmp_path, max_steps):
    return quiet_trainer(
        tmp_path, max_steps=max_steps, max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0
    )


def test_resume_mid_epoch_reproduces_the_uninterrupted_batches(tmp_path):
    def datamodule():
        return make(steps_per_epoch=3, batch_unlabeled=16, seed=11)

    full = Recorder()
    trainer(tmp_path, 8).fit(full, datamodule=datamodule())
    assert len(full.seen) == 8
    expected_stream = datamodule()
    expected_stream.setup()
    sampler = expected_stream.train_sampler()
    for step, got in enumerate(full.seen):
        torch.testing.assert_close(got, sampler.batch(step)[0], rtol=0, atol=0)

    first = Recorder()
    t = trainer(tmp_path, 4)
    t.fit(first, datamodule=datamodule())
    t.save_checkpoint(tmp_path / "step4.ckpt")
    resumed = Recorder()
    trainer(tmp_path, 8).fit(resumed, datamodule=datamodule(), ckpt_path=tmp_path / "step4.ckpt")
    assert len(resumed.seen) == 4
    for got, expected in zip(first.seen + resumed.seen, full.seen, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_ranks_draw_different_streams_and_patch_size_is_handed_down():
    from types import SimpleNamespace

    def attached(rank):
        dm = make(patch_size=None, steps_per_epoch=2, seed=5)
        # the trainer the DataModule may read: its own rank, step and device (no lightning_module)
        dm.trainer = SimpleNamespace(
            global_rank=rank,
            global_step=0,
            accumulate_grad_batches=1,
            strategy=SimpleNamespace(root_device=torch.device("cpu")),
        )
        dm.setup()
        with pytest.raises(ConfigError, match="set_patch_size"):
            dm.train_sampler()  # null patch size and nothing handed down yet
        dm.set_patch_size(9)  # train() passes the model's receptive field after setup()
        return dm

    rank0, rank1 = attached(0), attached(1)
    p0 = [p for p, _ in rank0.train_dataloader()]
    p1 = [p for p, _ in rank1.train_dataloader()]
    assert rank1.patch_size == 9 and p1[0].shape == (256, 1, 9, 9)
    assert rank1.train_sampler().rank == 1 and rank0.train_sampler().rank == 0
    assert not torch.equal(p0[0], p1[0])
    torch.testing.assert_close(p1[1], rank1.train_sampler().batch(1)[0], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="odd"):
        rank0.set_patch_size(8)
    explicit = make(patch_size=31)
    with pytest.raises(ConfigError, match="patch_size"):
        explicit.set_patch_size(9)  # an explicit patch size must agree with the run's


def test_data_fingerprint_follows_the_data():
    a, b = make(patch_size=31), make(patch_size=31)
    a.setup()
    b.setup()
    assert a.data_fingerprint() == b.data_fingerprint() and len(a.data_fingerprint()) == 64
    fewer = make(patch_size=31, num_labeled=5)
    fewer.setup()
    assert fewer.data_fingerprint() != a.data_fingerprint()


@pytest.mark.slow
def test_simulated_mode_generates_the_dataset_when_absent(tmp_path):
    dm = SimulatedDataModule(
        simulated_dir=tmp_path / "tiny", simulated_preset="tiny", patch_size=31
    )
    dm.prepare_data()
    assert (tmp_path / "tiny" / "dataset.yaml").is_file()
    dm.setup()
    train = (tmp_path / "tiny" / "train.txt").read_text().split()
    assert sorted(dm.train_micrographs) == sorted(train)
    assert dm.geometry.label_radius_px_model == 4 and 0 < dm.pi_unlabeled < dm.pi < 0.1
    patches, labels = next(iter(dm.train_dataloader()))
    assert patches.shape == (256, 1, 31, 31) and torch.isfinite(patches).all()


def test_train_config_composes_both_data_options(tmp_path):
    from hydra.utils import instantiate

    write_fake_simulated(tmp_path / "sim")
    sim = compose_config("train", [f"data.simulated_dir={tmp_path / 'sim'}", "data.normalize=none"])
    files = compose_config(
        "train",
        [
            "data=files",
            f"data.micrographs={tmp_path / 'sim' / 'micrographs'}",
            f"data.coordinates={tmp_path / 'sim' / 'particles.tsv'}",
            "data.particles_per_micrograph=3",
            "data.normalize=standardize",
            "data.num_folds=2",
        ],
    )
    dm = instantiate(sim.data)
    dm.setup()
    assert dm.pi == 0.12 and len(dm.train_micrographs) == 3
    dm = instantiate(files.data)
    dm.setup()
    assert len(dm.train_micrographs) == 2 and len(dm.val_micrographs) == 2
    assert dm.pi == pytest.approx(3 * 29 / 1600)


# ---------------------------------------------------------------- the run geometry
def _write_mrcs(root: Path, images: dict, pixel_size_a: float | None) -> Path:
    from topaz_lightning.io.micrographs import write_micrograph

    root.mkdir(parents=True)
    for name, image in images.items():
        write_micrograph(root / f"{name}.mrc", image, pixel_size_a=pixel_size_a)
    return root


def test_particle_diameter_in_angstrom_gives_the_same_run_as_in_pixels(tmp_path):
    images, coords = synthetic(num=4, shape=(96, 128), per_mic=8)
    common = dict(coordinates=coords, downsample=2, pi=0.1, normalize="none", patch_size=11)
    # 60 A at 2.5 A/px = 24 px: radius 12 px, 6 model px -> label round(1.8) = 2, NMS 1.25 x 6,
    # match 6
    in_pixels = FilesDataModule(micrographs=images, particle_diameter_px=24, **common)
    in_angstrom = FilesDataModule(
        micrographs=images, particle_diameter_a=60, pixel_size_a=2.5, **common
    )
    # the pixel size read from the MRC header instead of the config
    mrcs = _write_mrcs(tmp_path / "mics", images, pixel_size_a=2.5)
    from_header = FilesDataModule(micrographs=mrcs, particle_diameter_a=60, **common)
    runs = [in_pixels, in_angstrom, from_header]
    for dm in runs:
        dm.setup()
    records = [dm.geometry.to_dict() for dm in runs]
    assert records[0]["pixel_size_a"] is None
    assert records[1]["pixel_size_a"] == records[2]["pixel_size_a"] == 2.5
    for record in records:
        record.pop("pixel_size_a")
    assert records[0] == records[1] == records[2]
    g = in_pixels.geometry
    assert g.particle_radius_px == 12 and g.particle_radius_px_model == 6
    nms = NMS_RADIUS_PER_PARTICLE_RADIUS * 6
    assert (g.label_radius_px_model, g.match_distance_px_model) == (2, 6)
    assert g.nms_radius_px_model == nms
    assert g.nms_radius_px == 2 * nms and g.match_distance_px == 12  # back in micrograph pixels
    # the same labels and the same batches
    for dm in runs[1:]:
        for name in in_pixels._train_masks:
            np.testing.assert_array_equal(dm._train_masks[name], in_pixels._train_masks[name])
    a = in_pixels.train_sampler().batch(0)[0]
    for dm in runs[1:]:
        torch.testing.assert_close(dm.train_sampler().batch(0)[0], a, rtol=0, atol=1e-6)


def test_angstrom_without_any_pixel_size_is_a_config_error():
    dm = make(particle_diameter_a=100)  # synthetic arrays: no header, no pixel_size_a
    with pytest.raises(ConfigError, match="data.particle_diameter_a.*pixel size"):
        dm.setup()
    with pytest.raises(ConfigError, match="not both"):
        make(particle_diameter_a=100, particle_diameter_px=40, pixel_size_a=1.0)
    with pytest.raises(ConfigError, match="data.nms_radius_px_model"):
        make(nms_radius_px_model=-1)


def test_explicit_model_frame_radii_override_the_derived_ones():
    dm = make(particle_diameter_px=40, downsample=2, label_radius_px_model=1, nms_radius_px_model=7)
    dm.setup()
    g = dm.geometry
    assert (g.label_radius_px_model, g.nms_radius_px_model, g.match_distance_px_model) == (1, 7, 10)


def test_coordinates_already_downsampled_are_refused_naming_the_factor():
    images, coords = synthetic(num=3, shape=(256, 256), per_mic=10)
    coords = coords.assign(x=coords.x * 0.9, y=coords.y * 0.9)  # inside, near every border
    ok = FilesDataModule(micrographs=images, coordinates=coords, downsample=4, pi=0.05,
                         normalize="none", patch_size=11)  # fmt: skip
    ok.setup()  # full-size coordinates: accepted
    shrunk = coords.assign(x=coords.x / 4, y=coords.y / 4)
    trap = FilesDataModule(micrographs=images, coordinates=shrunk, downsample=4, pi=0.05,
                           normalize="none", patch_size=11)  # fmt: skip
    with pytest.raises(InputError, match=r"already downsampled.*scale=4"):
        trap.setup()
