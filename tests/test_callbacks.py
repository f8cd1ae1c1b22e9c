"""Tests of the held-out picking callback: metrics through a real Trainer, sharding, pictures."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import PixelLogitNet, quiet_trainer
from topaz_lightning.callbacks import HeldOutPicking
from topaz_lightning.callbacks.validation import (
    ShardResult,
    compute_metrics,
    merge_shards,
    pick_shard,
)
from topaz_lightning.errors import ConfigError
from topaz_lightning.geometry import RunGeometry
from topaz_lightning.picking.settings import PickSettings
from topaz_lightning.utils.distributed import (
    all_gather_objects,
    barrier,
    broadcast_object,
    rank_and_world_size,
    shard_names,
)

torch.set_num_threads(1)
warnings.filterwarnings("ignore", ".*does not have many workers.*")

SHAPE = (64, 80)
MAX_DISTANCE = 3.0
NMS_RADIUS = 5.0


# ---------------------------------------------------------------------------------------------
# a tiny fake world: the "classifier" returns its input, so the micrograph *is* the score map


class StubModule(pl.LightningModule):
    def __init__(self, net: nn.Module | None = None):
        super().__init__()
        self.net = PixelLogitNet() if net is None else net
        self.weight = nn.Parameter(torch.ones(1))
        self.modes_seen: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.modes_seen.append(self.net.training)
        # the net's parameters join the graph (gradient 0: SGD leaves them as they are) so DDP
        # sees every parameter used
        unused = sum(p.sum() for p in self.net.parameters())
        return ((self.weight - batch[0]) ** 2).sum() + 0.0 * unused

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class StubData(pl.LightningDataModule):
    """Held-out data and a resolved run geometry (label radius ``radius_px``, model frame)."""

    def __init__(self, micrographs, coordinates, radius_px=2.0, num_batches=8, **geometry):
        super().__init__()
        self.val_micrographs = micrographs
        self.val_coordinates = coordinates
        self.geometry = (
            None if radius_px is None else RunGeometry(label_radius_px_model=radius_px, **geometry)
        )
        self.num_batches = num_batches

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(self.num_batches, 1)), batch_size=1)


def _particles(seed: int, n: int = 6) -> np.ndarray:
    """n particle centres at least 14 px apart and 8 px from the border."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < n:
        p = rng.integers([8, 8], [SHAPE[1] - 8, SHAPE[0] - 8]).astype(float)
        if all(np.hypot(*(p - q)) >= 14 for q in out):
            out.append(p)
    return np.array(out)


def _peak_image(centres: np.ndarray, heights=None) -> np.ndarray:
    """Background -5 with a Gaussian bump of the given height (default 5) at each centre."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    image = np.full(SHAPE, -5.0)
    heights = np.full(len(centres), 5.0) if heights is None else heights
    for (x, y), h in zip(centres, heights, strict=True):
        image = np.maximum(image, -5.0 + (h + 5.0) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0))
    return image.astype(np.float32)


def _fake_world(shift: float = 0.0, n_micrographs: int = 3):
    micrographs, rows = {}, []
    for i in range(n_micrographs):
        name = f"mic{i}"
        truth = _particles(i)
        micrographs[name] = _peak_image(truth + np.array([shift, 0.0]))
        rows += [{"micrograph": name, "x": x, "y": y} for x, y in truth]
    return micrographs, pd.DataFrame(rows)


def _held_out(threshold: float | None = None, **kwargs) -> HeldOutPicking:
    """The callback without the border-band mask: the fake world's flat background, rows
    repeating their neighbour exactly, reads as striped bands along the edges."""
    pick = {"border_bands": False, **({} if threshold is None else {"threshold": threshold})}
    return HeldOutPicking(pick=pick, **kwargs)


def _settings(radius: float = NMS_RADIUS, **pick) -> PickSettings:
    """tzl-pick's settings (PickSettings' defaults) without the band mask, as _held_out picks."""
    return PickSettings(nms_radius_px_model=radius, **{"border_bands": False, **pick})


# ---------------------------------------------------------------------------------------------
# through a real Trainer


def test_peaks_at_particles_give_aupr_one_and_checkpoint_sees_it(tmp_path):
    micrographs, coords = _fake_world()
    callback = _held_out(
        every_n_steps=2, nms_radius_px_model=NMS_RADIUS, match_distance_px_model=MAX_DISTANCE
    )
    best = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt",
        monitor="val/aupr",
        mode="max",
        every_n_train_steps=2,
        filename="best",
        save_last=True,
    )
    logger = pl.loggers.CSVLogger(tmp_path, name="csv")
    module = StubModule()
    trainer = quiet_trainer(tmp_path, [best, callback], max_steps=4, logger=logger)
    trainer.fit(module, datamodule=StubData(micrographs, coords))

    assert [h["step"] for h in callback.history] == [2.0, 4.0]  # on global_step, no duplicate
    for h in callback.history:
        assert h["val/aupr"] == 1.0
        assert h["val/precision@0.9"] == 1.0
        assert h["val/precision@0.25"] == 1.0
    # region AUPR at the final evaluation only (region_aupr=final, the default)
    assert "val/region_aupr" not in callback.history[0]
    assert callback.history[1]["val/region_aupr"] == pytest.approx(1.0)
    assert float(trainer.callback_metrics["val/region_aupr"]) == pytest.approx(1.0)
    assert float(trainer.callback_metrics["val/aupr"]) == 1.0
    assert float(best.best_model_score) == 1.0
    assert Path(best.best_model_path).name == "best.ckpt"
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
    # eval mode during scoring only: training steps always saw train mode, and it is restored
    assert all(module.modes_seen) and module.net.training
    # logged to the logger at the right steps
    logged = pd.read_csv(Path(logger.log_dir) / "metrics.csv")
    rows = logged.dropna(subset=["val/aupr"])
    assert list(rows["step"]) == [2, 4]
    assert np.allclose(rows["val/aupr"], 1.0)
    assert callback.last_evaluation.n_true == len(coords)


def test_peaks_beyond_matching_distance_give_aupr_zero(tmp_path):
    micrographs, coords = _fake_world(shift=MAX_DISTANCE + 2.0)
    # threshold 0 keeps only the bump peaks (the near-flat background has stray local maxima,
    # some of which fall next to a true particle by chance)
    callback = _held_out(
        every_n_steps=3,
        nms_radius_px_model=NMS_RADIUS,
        match_distance_px_model=MAX_DISTANCE,
        threshold=0.0,
    )
    trainer = quiet_trainer(tmp_path, [callback], max_steps=3)
    trainer.fit(StubModule(), datamodule=StubData(micrographs, coords))
    (h,) = callback.history
    assert h["val/aupr"] == 0.0
    assert h["val/precision@0.9"] == 0.0  # 0.9 recall never reached: logged as 0
    assert "val/precision@0.25" not in h  # other levels only when reached
    assert h["val/region_aupr"] < 0.5


def test_final_evaluation_when_max_steps_is_not_a_multiple(tmp_path):
    micrographs, coords = _fake_world(n_micrographs=1)
    callback = _held_out(
        every_n_steps=2, nms_radius_px_model=NMS_RADIUS, match_distance_px_model=MAX_DISTANCE
    )
    trainer = quiet_trainer(tmp_path, [callback], max_steps=5)
    trainer.fit(StubModule(), datamodule=StubData(micrographs, coords))
    assert [h["step"] for h in callback.history] == [2.0, 4.0, 5.0]
    # and with max_epochs: 3 batches per epoch, 2 epochs -> steps 2, 4 and the final 6
    callback = _held_out(
        every_n_steps=4, nms_radius_px_model=NMS_RADIUS, match_distance_px_model=MAX_DISTANCE
    )
    trainer = quiet_trainer(tmp_path, [callback], max_epochs=2)
    trainer.fit(StubModule(), datamodule=StubData(micrographs, coords, num_batches=3))
    assert [h["step"] for h in callback.history] == [4.0, 6.0]
    assert float(trainer.callback_metrics["val/aupr"]) == 1.0


def test_max_micrographs_and_region_radius(tmp_path):
    micrographs, coords = _fake_world()
    micrographs = dict(micrographs)
    micrographs["mic1"] = _peak_image(_particles(1) + np.array([MAX_DISTANCE + 2.0, 0.0]))
    callback = _held_out(
        every_n_steps=1, nms_radius_px_model=NMS_RADIUS, match_distance_px_model=MAX_DISTANCE, max_micrographs=1,
        region_radius_px_model=None,
    )  # fmt: skip
    trainer = quiet_trainer(tmp_path, [callback], max_steps=1)
    # mic1 (bad) is excluded, and the datamodule has no radius: no region AUPR
    trainer.fit(StubModule(), datamodule=StubData(micrographs, coords, radius_px=None))
    (h,) = callback.history
    assert h["val/aupr"] == 1.0 and "val/region_aupr" not in h
    assert callback.last_evaluation.n_true == int((coords["micrograph"] == "mic0").sum())


def test_pictures_saved_and_logged_to_tensorboard(tmp_path, monkeypatch):
    micrographs, coords = _fake_world(n_micrographs=2)
    callback = _held_out(
        every_n_steps=2,
        nms_radius_px_model=NMS_RADIUS,
        match_distance_px_model=MAX_DISTANCE,
        log_images=True,
    )
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="tb")
    tags: list[tuple[str, tuple, int]] = []
    monkeypatch.setattr(
        logger.experiment,
        "add_image",
        lambda tag, img, global_step=None, dataformats="CHW": tags.append(
            (tag, img.shape, global_step)
        ),
    )
    trainer = quiet_trainer(tmp_path, [callback], max_steps=4, logger=logger)
    trainer.fit(StubModule(), datamodule=StubData(micrographs, coords))
    for step in (2, 4):
        folder = Path(logger.log_dir) / "val_images" / f"step_{step:06d}"
        names = sorted(p.name for p in folder.iterdir())
        assert names == ["overlay_mic0.png", "pr_curve.png", "score_map_mic0.png"]
        assert all((folder / n).stat().st_size > 500 for n in names)
    logged = {(t, s) for t, _, s in tags}
    assert logged >= {("val/pr_curve", 2), ("val/overlay/mic0", 4), ("val/score_map/mic0", 4)}
    assert all(len(shape) == 3 and shape[2] == 3 for _, shape, _ in tags)


def test_images_go_to_default_root_dir_without_logger(tmp_path):
    micrographs, coords = _fake_world(n_micrographs=1)
    callback = _held_out(
        every_n_steps=1,
        nms_radius_px_model=NMS_RADIUS,
        match_distance_px_model=MAX_DISTANCE,
        log_images=True,
    )
    quiet_trainer(tmp_path, [callback], max_steps=1).fit(
        StubModule(), datamodule=StubData(micrographs, coords)
    )
    assert (tmp_path / "val_images" / "step_000001" / "overlay_mic0.png").is_file()


def test_distances_from_the_run_geometry(tmp_path):
    micrographs, coords = _fake_world(n_micrographs=1)
    data = StubData(
        micrographs, coords, downsample=2.0, nms_radius_px_model=5.0, match_distance_px_model=3.0
    )
    callback = _held_out(every_n_steps=1)
    quiet_trainer(tmp_path, [callback], max_steps=1).fit(StubModule(), datamodule=data)
    # model-frame values are used as they are: no second division by the downsample factor
    assert callback.settings.nms_radius_px_model == 5.0 and callback.match_distance_px_model == 3.0
    assert callback.history[0]["val/aupr"] == 1.0
    # a geometry without NMS radius (no particle size) and no setting: a clear error
    match = "held_out_picking.nms_radius_px_model.*particle_diameter_px"
    with pytest.raises(ConfigError, match=match):
        quiet_trainer(tmp_path, [_held_out(every_n_steps=1)], max_steps=1).fit(
            StubModule(), datamodule=StubData(micrographs, coords)
        )


def test_no_held_out_micrographs_asks_for_no_radius(tmp_path):
    # data=files without validation micrographs: the callback turns itself off, no ConfigError
    callback = HeldOutPicking(every_n_steps=1)
    data = StubData({}, pd.DataFrame(columns=["micrograph", "x", "y"]))
    with pytest.warns(UserWarning, match="no held-out micrographs"):
        quiet_trainer(tmp_path, [callback], max_steps=2).fit(StubModule(), datamodule=data)
    assert callback.history == [] and callback.settings is None


def test_missing_held_out_data_is_a_clear_error(tmp_path):
    class NoVal(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1)

    callback = _held_out(every_n_steps=1, nms_radius_px_model=5, match_distance_px_model=3)
    with pytest.raises(ConfigError, match="val_micrographs"):
        quiet_trainer(tmp_path, [callback], max_steps=1).fit(StubModule(), datamodule=NoVal())


def test_micrographs_passed_directly(tmp_path):
    micrographs, coords = _fake_world(n_micrographs=1)
    callback = _held_out(
        every_n_steps=1,
        nms_radius_px_model=5,
        match_distance_px_model=3,
        micrographs=micrographs,
        coordinates=coords,
    )
    module = StubModule()
    loader = DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1)
    quiet_trainer(tmp_path, [callback], max_steps=1).fit(module, train_dataloaders=loader)
    assert callback.history[0]["val/aupr"] == 1.0


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"every_n_steps": 0}, "every_n_steps"),
        ({"every_n_steps": 2.5}, "every_n_steps"),
        ({"nms_radius_px_model": -1.0}, "held_out_picking.nms_radius_px_model'"),
        ({"nms_radius_px_model": 0}, "held_out_picking.nms_radius_px_model'"),
        ({"match_distance_px_model": 0.0}, "match_distance_px_model'"),
        ({"match_distance_px_model": "far"}, "match_distance_px_model'"),
        ({"pick": {"max_picks": -1}}, "held_out_picking.pick.max_picks'"),
        ({"max_micrographs": 0}, "max_micrographs'"),
        ({"region_radius_px_model": -2}, "region_radius_px_model'"),
        # the pick settings are PickSettings' own checks, named under the callback's key
        ({"pick": {"border_bands": "maybe"}}, "held_out_picking.pick.border_bands'"),
        ({"pick": {"border_padding_px_model": -1.0}}, "pick.border_padding_px_model'"),
        ({"pick": {"border_margin_px_model": -1.0}}, "pick.border_margin_px_model'"),
        ({"pick": {"scoring": "sparse"}}, "pick.scoring'"),
        ({"pick": {"tta": 3}}, "pick.tta'"),
        ({"pick": {"threshold": float("nan")}}, "pick.threshold'"),
        ({"pick": {"nms_radius_px_model": 3}}, "pick.nms_radius_px_model'.*held_out_picking"),
        ({"pick": {"downsample": 2}}, "pick.downsample'"),
        ({"pick": {"radius": 3}}, "pick.radius'.*known: nms_boundary"),
        ({"nms_radius": 3}, "held_out_picking.nms_radius'"),
        ({"radius": 4, "nms_radius_px_model": 4}, "held_out_picking.radius'.*together"),
    ],
)
def test_bad_settings(kwargs, key):
    with pytest.raises(ConfigError, match=key), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        HeldOutPicking(**kwargs)


def test_old_names_warn_and_still_work():
    old = {"radius": 4.0, "max_distance": 2.0, "region_radius_px": 1.0, "threshold": 0.5}
    old |= {"border_bands": False, "border_padding_px_model": 1.5, "border_margin_px_model": 2.0}
    with pytest.warns(FutureWarning) as caught:
        callback = HeldOutPicking(**old)
    assert len(caught) == len(old)
    assert "held_out_picking.radius is deprecated: use callbacks.held_out_picking.nms_radius_px_model" in str(caught[0].message)  # fmt: skip
    assert callback.nms_radius_setting == 4.0 and callback.match_distance_setting == 2.0
    assert callback.region_radius_setting == 1.0
    assert callback.pick == {
        "threshold": 0.5, "border_bands": False, "border_padding_px_model": 1.5,
        "border_margin_px_model": 2.0,
    }  # fmt: skip


def test_state_dict_round_trip():
    a = HeldOutPicking(every_n_steps=3, nms_radius_px_model=4, match_distance_px_model=2)
    a._last_step = 6
    a.history = [{"step": 6.0, "val/aupr": 0.5}]
    b = HeldOutPicking(every_n_steps=3, nms_radius_px_model=4, match_distance_px_model=2)
    b.load_state_dict(a.state_dict())
    assert b._last_step == 6 and b.history == a.history


# ---------------------------------------------------------------------------------------------
# the border-band mask: the picks tzl-pick would make


BAND_ROWS = 12


def _banded_world():
    """A 96 x 96 noise micrograph (the net's input and score map) whose top BAND_ROWS rows repeat
    the row below them (a striped band, as Fourier-cropped real micrographs have), with a bright
    column inside the band, the best score on the micrograph, and two true particles inside."""
    rng = np.random.default_rng(0)
    image = (0.1 * rng.normal(size=(96, 96))).astype(np.float32)
    image[:BAND_ROWS, :] = image[BAND_ROWS, :]
    image[:BAND_ROWS, 40] = 5.0
    truth = np.array([[30.0, 50.0], [70.0, 70.0]])
    for x, y in truth:
        image[int(y), int(x)] = 4.0
    coords = pd.DataFrame({"micrograph": "mic0", "x": truth[:, 0], "y": truth[:, 1]})
    return {"mic0": image}, coords


@pytest.mark.parametrize("bands", [True, False])
def test_border_bands_drop_the_pick_in_the_band(tmp_path, bands):
    micrographs, coords = _banded_world()
    callback = HeldOutPicking(
        every_n_steps=1, nms_radius_px_model=NMS_RADIUS, match_distance_px_model=MAX_DISTANCE,
        micrographs=micrographs, coordinates=coords, region_radius_px_model=2.0,
        pick={"threshold": 1.0, **({} if bands else {"border_bands": False})},
    )  # fmt: skip
    loader = DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1)
    quiet_trainer(tmp_path, [callback], max_steps=1).fit(StubModule(), train_dataloaders=loader)
    picks = callback.last_evaluation.picks
    in_band = picks["y"] < BAND_ROWS
    (h,) = callback.history
    if bands:
        # the default: dropped, as tzl-pick drops it; the two particles remain
        assert callback.settings.border_padding_px_model == NMS_RADIUS / 2  # tzl-pick's rule
        assert not in_band.any() and len(picks) == 2 and h["val/aupr"] == 1.0
    else:
        # kept: the bright column in the band outscores the particles
        assert in_band.any() and (picks.loc[in_band, "x"] == 40).all()
        assert h["val/aupr"] < 1.0
    # region AUPR is a pixel metric: the mask leaves it alone
    shards = [
        pick_shard(PixelLogitNet().eval(), micrographs, coords, ["mic0"], _settings(border_bands=b),
                   region_radius_px_model=2.0)[0]
        for b in (True, False)
    ]  # fmt: skip
    assert len(shards[0].picks) < len(shards[1].picks)
    np.testing.assert_array_equal(shards[0].region_logits[0], shards[1].region_logits[0])
    assert h["val/region_aupr"] == pytest.approx(
        compute_metrics(shards[1], coords, MAX_DISTANCE)[0]["val/region_aupr"]
    )


def test_border_padding_rule_is_tzl_picks():
    from topaz_lightning.picking.border import border_padding_px_model

    assert border_padding_px_model(None, 13.5) == 6.75
    assert border_padding_px_model(2, 13.5) == 2.0
    geometry = RunGeometry(nms_radius_px_model=8.0, match_distance_px_model=3.0)
    for pick, padding in [({"border_padding_px_model": 1.5}, 1.5), ({}, 4.0)]:
        callback = HeldOutPicking(pick=pick, geometry=geometry)
        callback._resolve(None)  # the geometry given explicitly: no trainer needed
        assert callback.settings.border_padding_px_model == padding


# ---------------------------------------------------------------------------------------------
# one picking pipeline: the callback's picks are tzl-pick's


TZL_NMS_RADIUS = 6.0


def _tiny_model_and_banded_micrograph() -> tuple[nn.Module, np.ndarray]:
    """A random conv31 (non-trivial BatchNorm) and a noise micrograph whose top BAND_ROWS rows
    repeat the row below them, a striped band that tzl-pick's default mask drops picks on."""
    from tests.conftest import randomize_batchnorm
    from topaz_lightning.models import Conv31

    torch.manual_seed(0)
    net = Conv31(widths=(2, 3, 4))
    randomize_batchnorm(net)
    image = np.random.default_rng(3).normal(size=(96, 112)).astype(np.float32)
    image[:BAND_ROWS] = image[BAND_ROWS]
    return net.eval(), image


def _callback_picks(tmp_path: Path, net: nn.Module, image: np.ndarray) -> pd.DataFrame:
    """The picks table of the callback with the default config node's settings (no pick key)."""
    coords = pd.DataFrame({"micrograph": ["mic0"], "x": [50.0], "y": [50.0]})
    callback = HeldOutPicking(every_n_steps=1, micrographs={"mic0": image}, coordinates=coords)
    geometry = RunGeometry(nms_radius_px_model=TZL_NMS_RADIUS, match_distance_px_model=4.0)
    callback.set_run_geometry(geometry)  # what train.py hands over (no datamodule here)
    loader = DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1)
    quiet_trainer(tmp_path, [callback], max_steps=1).fit(StubModule(net), train_dataloaders=loader)
    assert callback.settings == PickSettings(nms_radius_px_model=TZL_NMS_RADIUS)
    return callback.last_picks


def test_callback_picks_equal_pick_micrograph_with_default_settings(tmp_path):
    from topaz_lightning.picking.predict import pick_micrograph

    net, image = _tiny_model_and_banded_micrograph()
    # what tzl-pick does with this model, micrograph (already in the model frame) and radius
    expected = pick_micrograph(net, image, PickSettings(nms_radius_px_model=TZL_NMS_RADIUS), "mic0")
    unmasked = pick_micrograph(
        net, image, PickSettings(nms_radius_px_model=TZL_NMS_RADIUS, border_bands=False), "mic0"
    )
    # the band mask matters here: it drops picks in (and next to) the band
    assert (unmasked.picks["y"] < BAND_ROWS).any() and len(expected.picks) < len(unmasked.picks)
    assert (expected.picks["y"] >= BAND_ROWS).all()
    got = _callback_picks(tmp_path, net, image)
    pd.testing.assert_frame_equal(got, expected.picks)


@pytest.mark.slow
def test_callback_picks_equal_tzl_pick_command(tmp_path):
    """The same picks through the tzl-pick command (model.pt, MRC file, normalize none, downsample
    1, NMS radius from the model's run geometry): the callback measures what users get."""
    import subprocess
    import sys

    from topaz_lightning.io.coordinates import read_coordinates
    from topaz_lightning.io.micrographs import write_micrograph
    from topaz_lightning.models import save_model

    net, image = _tiny_model_and_banded_micrograph()
    write_micrograph(tmp_path / "mics" / "mic0.mrc", image)
    geometry = RunGeometry(nms_radius_px_model=TZL_NMS_RADIUS, normalize="none")
    save_model(tmp_path / "model.pt", net, extra={"geometry": geometry.to_dict()})
    command = [
        str(Path(sys.executable).parent / "tzl-pick"), f"model_path={tmp_path / 'model.pt'}",
        f"micrographs={tmp_path / 'mics'}", f"output_dir={tmp_path / 'out'}", "device=cpu",
        "num_workers=0", "progress=false",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    tzl_pick = read_coordinates(tmp_path / "out" / "picks.tsv")
    got = _callback_picks(tmp_path, net, image)
    assert len(got) == len(tzl_pick) > 0
    np.testing.assert_array_equal(got[["x", "y"]].to_numpy(), tzl_pick[["x", "y"]].to_numpy())
    np.testing.assert_allclose(got["score"], tzl_pick["score"], rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# DDP pieces with a fake world: shards scored separately then merged == one process


def test_shard_names_partition_round_robin():
    names = [f"m{i}" for i in (3, 0, 4, 1, 2)]
    shards = [shard_names(names, r, 2) for r in range(2)]
    assert shards == [["m0", "m2", "m4"], ["m1", "m3"]]
    for world in (1, 2, 3, 7):
        parts = [shard_names(names, r, world) for r in range(world)]
        assert sorted(sum(parts, [])) == sorted(names)
    with pytest.raises(ValueError):
        shard_names(names, 2, 2)


def test_distributed_helpers_without_a_process_group_are_no_ops():
    assert not torch.distributed.is_initialized()
    obj = {"a": 1}
    assert rank_and_world_size() == (0, 1)
    assert all_gather_objects(obj) == [obj]
    assert broadcast_object(obj) is obj
    barrier()  # returns at once


@pytest.mark.parametrize("world_size", [2, 3])
def test_sharded_scoring_equals_single_process(world_size):
    micrographs, coords = _fake_world(n_micrographs=4)
    # one micrograph partly wrong so the metrics are not trivially 1
    micrographs["mic2"] = _peak_image(_particles(2) + np.array([[4.0, 0.0]] * 3 + [[0.0, 0.0]] * 3))
    names = sorted(micrographs)
    net = PixelLogitNet().eval()
    kw = dict(settings=_settings(), region_radius_px_model=2.0)
    single, _ = pick_shard(net, micrographs, coords, names, **kw)
    expected, ev1 = compute_metrics(merge_shards([single]), coords, MAX_DISTANCE)
    shards = [
        pick_shard(net, micrographs, coords, shard_names(names, r, world_size), **kw)[0]
        for r in range(world_size)
    ]
    merged = merge_shards(shards[::-1])  # gather order must not matter
    got, ev = compute_metrics(merged, coords, MAX_DISTANCE)
    assert got == expected
    assert 0.0 < got["val/aupr"] < 1.0
    pd.testing.assert_frame_equal(merged.picks, merge_shards([single]).picks)
    np.testing.assert_array_equal(
        np.concatenate(merged.region_logits), np.concatenate(single.region_logits)
    )
    with pytest.raises(ValueError, match="more than one rank"):
        merge_shards([single, single])


def test_compute_metrics_against_obvious_reference():
    # picks on two micrographs; reference AUPR computed by hand: sort by score, step-wise AP
    truth = pd.DataFrame({"micrograph": ["a", "a", "b"], "x": [10.0, 30.0, 10.0], "y": [10.0] * 3})
    picks = pd.DataFrame(
        {
            "micrograph": ["a", "a", "b", "b"],
            "x": [10.5, 50.0, 10.0, 11.0],
            "y": [10.0, 10.0, 10.0, 10.0],
            "score": [0.9, 0.8, 0.7, 0.6],
        }
    )
    merged = ShardResult(names=["a", "b"], picks=picks)
    metrics, ev = compute_metrics(merged, truth, match_distance_px_model=2.0)
    # ranks: TP (P=1, R=1/3), FP, TP (P=2/3, R=2/3), FP (duplicate near b's particle)
    assert metrics["val/aupr"] == pytest.approx((1.0 + 2.0 / 3.0) / 3.0)
    assert metrics["val/precision@0.25"] == 1.0
    assert metrics["val/precision@0.5"] == pytest.approx(2.0 / 3.0)
    assert metrics["val/precision@0.9"] == 0.0 and "val/precision@0.75" not in metrics
    # a held-out micrograph without particles: its picks are false positives, not dropped
    extra = pd.DataFrame({"micrograph": ["c"], "x": [1.0], "y": [1.0], "score": [0.95]})
    merged = ShardResult(names=["a", "b", "c"], picks=pd.concat([picks, extra], ignore_index=True))
    metrics, _ = compute_metrics(merged, truth, match_distance_px_model=2.0)
    assert metrics["val/aupr"] == pytest.approx((0.5 / 1 + 2.0 / 4.0) / 3.0)


# ---------------------------------------------------------------------------------------------
# a real 2-process gloo world (slow: process start-up)


def _gloo_worker(rank: int, world_size: int, port: int, queue) -> None:
    import os

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        micrographs, coords = _fake_world(n_micrographs=3)
        names = sorted(micrographs)
        shard, _ = pick_shard(
            PixelLogitNet().eval(), micrographs, coords, shard_names(names, rank, world_size),
            _settings(), region_radius_px_model=2.0,
        )  # fmt: skip
        merged = merge_shards(all_gather_objects(shard))
        # rank 0 computes, every rank gets its numbers (as the callback does)
        metrics = compute_metrics(merged, coords, MAX_DISTANCE)[0] if rank == 0 else None
        metrics = broadcast_object(metrics, src=0)
        barrier()
        queue.put((rank, merged.names, metrics))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_gloo_two_process_gather(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_gloo_worker, args=(2, port, queue), nprocs=2, start_method="spawn")
    results = sorted(queue.get() for _ in range(2))
    assert [r[0] for r in results] == [0, 1]
    for _, names, metrics in results:
        assert names == ["mic0", "mic1", "mic2"]
        assert metrics["val/aupr"] == 1.0 and math.isclose(metrics["val/region_aupr"], 1.0)


def _half_wrong_world():
    """mic1 (scored by rank 1 of 2) has half its peaks shifted away: AUPR strictly between 0, 1."""
    micrographs, coords = _fake_world(n_micrographs=3)
    shift = np.array([[MAX_DISTANCE + 2.0, 0.0]] * 3 + [[0.0, 0.0]] * 3)
    micrographs["mic1"] = _peak_image(_particles(1) + shift)
    return micrographs, coords


@pytest.mark.slow
def test_lightning_ddp_spawn_two_ranks(tmp_path):
    micrographs, coords = _half_wrong_world()
    names = sorted(micrographs)
    single, _ = pick_shard(PixelLogitNet().eval(), micrographs, coords, names, _settings())
    expected, _ = compute_metrics(merge_shards([single]), coords, MAX_DISTANCE)
    assert 0.0 < expected["val/aupr"] < 1.0

    callback = _held_out(
        every_n_steps=2,
        nms_radius_px_model=NMS_RADIUS,
        match_distance_px_model=MAX_DISTANCE,
        log_images=True,
    )
    best = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val/aupr", mode="max", every_n_train_steps=2,
        filename="best", save_last=True,
    )  # fmt: skip
    trainer = quiet_trainer(
        tmp_path,
        [best, callback],
        devices=2,
        strategy="ddp_spawn",
        max_steps=4,
        logger=pl.loggers.CSVLogger(tmp_path, name="csv"),
    )
    trainer.fit(StubModule(), datamodule=StubData(micrographs, coords))
    # every rank logged the broadcast value; the main process gets rank 0's callback metrics
    assert float(trainer.callback_metrics["val/aupr"]) == pytest.approx(expected["val/aupr"])
    assert (tmp_path / "ckpt" / "best.ckpt").is_file()
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
    logged = pd.read_csv(next((tmp_path / "csv").glob("version_*/metrics.csv")))
    rows = logged.dropna(subset=["val/aupr"])
    assert list(rows["step"]) == [2, 4]
    assert np.allclose(rows["val/aupr"], expected["val/aupr"])
    # pictures from rank 0's shard only (mic0, mic2)
    folder = next((tmp_path / "csv").glob("version_*/val_images/step_000004"))
    assert sorted(p.name for p in folder.glob("overlay_*")) == ["overlay_mic0.png"]


# ---------------------------------------------------------------------------------------------
# configs and loggers


@pytest.mark.parametrize(
    "group_file", sorted((Path(__file__).parents[1] / "configs" / "callbacks").glob("*.yaml"))
)
def test_callbacks_configs_compose_and_instantiate(group_file, tmp_path):
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    cfg = compose_config("train", [f"callbacks={group_file.stem}"], tmp_path)
    nodes = {k: v for k, v in (cfg.callbacks or {}).items() if v is not None}
    built = {k: instantiate(v) for k, v in nodes.items()}
    assert all(isinstance(cb, pl.Callback) for cb in built.values())
    if group_file.stem == "default":
        picking = built["held_out_picking"]
        assert isinstance(picking, HeldOutPicking)
        # nothing mirrored by hand: every pick setting is PickSettings' default (tzl-pick's)
        assert picking.pick == {}
        picking.set_run_geometry(RunGeometry(nms_radius_px_model=7.0, match_distance_px_model=5.0))
        picking._resolve(None)
        assert picking.settings == PickSettings(nms_radius_px_model=7.0)
        best = built["best_checkpoint"]
        assert best.monitor == "val/aupr" and best.mode == "max"
        assert best._every_n_train_steps == picking.every_n_steps
        assert any(getattr(cb, "save_last", False) for cb in built.values())


def test_images_sent_to_wandb_like_logger(tmp_path):
    from pytorch_lightning.loggers.logger import DummyLogger

    class WandbLogger(DummyLogger):  # stands in for the real one (matched by class name)
        def __init__(self):
            super().__init__()
            self.images: list[tuple[str, int]] = []

        def log_image(self, key, images, step=None, **kwargs):
            assert images[0].ndim == 3 and images[0].shape[2] == 3
            self.images.append((key, step))

        @property
        def save_dir(self):
            return str(tmp_path)

    logger = WandbLogger()
    micrographs, coords = _fake_world(n_micrographs=1)
    callback = _held_out(
        every_n_steps=1, nms_radius_px_model=5, match_distance_px_model=3, log_images=True
    )
    quiet_trainer(tmp_path, [callback], max_steps=1, logger=logger).fit(
        StubModule(), datamodule=StubData(micrographs, coords)
    )
    assert sorted(logger.images) == [
        ("val/overlay/mic0", 1),
        ("val/pr_curve", 1),
        ("val/score_map/mic0", 1),
    ]
