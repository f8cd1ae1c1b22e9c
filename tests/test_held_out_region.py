"""The held-out picking callback's region AUPR schedule (region_aupr) and its PR-curve marks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from tests.helpers import quiet_trainer
from tests.test_callbacks import (
    MAX_DISTANCE,
    NMS_RADIUS,
    StubData,
    StubModule,
    _fake_world,
    _held_out,
)
from topaz_lightning.callbacks import HeldOutPicking
from topaz_lightning.callbacks.held_out import compute_metrics, pick_shard
from topaz_lightning.errors import ConfigError
from topaz_lightning.geometry import RunGeometry
from topaz_lightning.picking.settings import PickSettings

torch.set_num_threads(1)
warnings.filterwarnings("ignore", ".*does not have many workers.*")

PICK_KEYS = ("val/aupr", "val/best_f1", *(f"val/precision@{r}" for r in (0.25, 0.5, 0.75, 0.9)))


def _fit(tmp_path, callback, **trainer_settings):
    micrographs, coords = _fake_world(n_micrographs=2)
    num_batches = trainer_settings.pop("num_batches", 8)
    trainer = quiet_trainer(tmp_path, [callback], **trainer_settings)
    trainer.fit(StubModule(), datamodule=StubData(micrographs, coords, num_batches=num_batches))
    return trainer


def _callback(region_aupr: str, every_n_steps: int = 2) -> HeldOutPicking:
    return _held_out(
        every_n_steps=every_n_steps,
        nms_radius_px_model=NMS_RADIUS,
        match_distance_px_model=MAX_DISTANCE,
        region_aupr=region_aupr,
    )


def test_region_aupr_setting_is_checked_and_in_the_config():
    from tests.conftest import compose_config

    with pytest.raises(ConfigError, match=r"callbacks\.held_out_picking\.region_aupr.*final"):
        HeldOutPicking(region_aupr="sometimes")
    cfg = compose_config("train", [])
    assert cfg.callbacks.held_out_picking.region_aupr == "final"
    assert HeldOutPicking().region_aupr == "final"


def test_pick_metrics_identical_with_and_without_the_region_map():
    """Strided picking (the default) with the dense map beside it for region AUPR, and without:
    the same picks, so val/aupr and val/precision@R are identical (only the region AUPR goes)."""
    from tests.conftest import randomize_batchnorm
    from topaz_lightning.models import Conv31

    torch.manual_seed(1)
    net = Conv31(widths=(2, 3, 4))
    randomize_batchnorm(net)
    net.eval()
    rng = np.random.default_rng(5)
    micrographs = {f"m{i}": rng.normal(size=(80, 96)).astype(np.float32) for i in range(2)}
    coords = pd.DataFrame(
        {
            "micrograph": ["m0"] * 4 + ["m1"] * 3,
            "x": rng.uniform(5, 90, 7),
            "y": rng.uniform(5, 75, 7),
        }
    )
    settings = PickSettings(nms_radius_px_model=4.0, border_bands=False)
    assert settings.scoring == "strided"
    names = sorted(micrographs)
    without, _ = pick_shard(net, micrographs, coords, names, settings, None)
    with_map, _ = pick_shard(net, micrographs, coords, names, settings, 2.0)
    pd.testing.assert_frame_equal(without.picks, with_map.picks)
    assert not without.region_logits and len(with_map.region_logits) == 2
    plain, _ = compute_metrics(without, coords, 6.0)
    full, _ = compute_metrics(with_map, coords, 6.0)
    assert "val/region_aupr" not in plain and math.isfinite(full["val/region_aupr"])
    assert {k: full[k] for k in plain} == plain
    assert set(plain) >= {"val/aupr", "val/precision@0.9", "val/best_f1"}


@pytest.mark.parametrize("mode", ["final", "never"])
def test_region_aupr_schedule_keeps_the_pick_metrics(tmp_path, mode):
    always = _callback("always")
    _fit(tmp_path / "always", always, max_steps=6)
    other = _callback(mode)
    trainer = _fit(tmp_path / mode, other, max_steps=6)
    assert [h["step"] for h in always.history] == [h["step"] for h in other.history] == [2, 4, 6]
    assert all("val/region_aupr" in h for h in always.history)
    for a, b in zip(always.history, other.history, strict=True):
        assert {k: a[k] for k in PICK_KEYS if k in a} == {k: b[k] for k in PICK_KEYS if k in b}
    has_region = ["val/region_aupr" in h for h in other.history]
    if mode == "final":
        assert has_region == [False, False, True]
        assert other.history[-1]["val/region_aupr"] == always.history[-1]["val/region_aupr"]
        assert float(trainer.callback_metrics["val/region_aupr"]) == pytest.approx(
            always.history[-1]["val/region_aupr"]
        )
    else:
        assert has_region == [False] * 3 and "val/region_aupr" not in trainer.callback_metrics


def test_final_by_epochs_and_after_a_stop_request(tmp_path):
    # max_epochs: the step evaluation on the last batch of the last epoch is the final one
    callback = _callback("final", every_n_steps=3)
    _fit(tmp_path / "epochs", callback, max_epochs=2, num_batches=3)
    assert [h["step"] for h in callback.history] == [3, 6]
    assert ["val/region_aupr" in h for h in callback.history] == [False, True]
    # not a multiple: the end-of-training evaluation carries it
    callback = _callback("final", every_n_steps=2)
    _fit(tmp_path / "extra", callback, max_steps=5)
    assert [h["step"] for h in callback.history] == [2, 4, 5]
    assert ["val/region_aupr" in h for h in callback.history] == [False, False, True]

    # a stop requested after the step's evaluation (as an early-stopping callback would): the
    # end of training redoes that evaluation with region AUPR, replacing it in the history
    class StopAt(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 2:
                trainer.should_stop = True

    callback = _callback("final", every_n_steps=2)
    micrographs, coords = _fake_world(n_micrographs=2)
    trainer = quiet_trainer(tmp_path / "stop", [callback, StopAt()], max_steps=10)
    trainer.fit(StubModule(), datamodule=StubData(micrographs, coords))
    assert trainer.global_step == 2
    (h,) = callback.history
    assert h["step"] == 2 and h["val/region_aupr"] == pytest.approx(1.0)


def test_is_last_batch_reads_the_trainer_limits():
    from types import SimpleNamespace

    from topaz_lightning.callbacks.training_end import is_final_epoch, is_last_batch

    def trainer(step=3, epoch=0, max_steps=-1, max_epochs=-1, batches=4.0, stop=False):
        return SimpleNamespace(
            should_stop=stop, global_step=step, current_epoch=epoch, max_steps=max_steps,
            max_epochs=max_epochs, num_training_batches=batches,
        )  # fmt: skip

    assert is_last_batch(trainer(max_steps=3), 0) and not is_last_batch(trainer(max_steps=4), 3)
    assert is_last_batch(trainer(stop=True), 0)
    # by epochs: only the last batch of the last epoch
    assert is_last_batch(trainer(epoch=1, max_epochs=2), 3)
    assert not is_last_batch(trainer(epoch=1, max_epochs=2), 2)
    assert not is_last_batch(trainer(epoch=0, max_epochs=2), 3)
    # an endless loader (the patch sampler) never has a last batch; max_epochs -1: no limit
    assert not is_last_batch(trainer(epoch=1, max_epochs=2, batches=math.inf), 10**6)
    assert not is_last_batch(trainer(batches=4.0), 3)
    assert is_final_epoch(trainer(epoch=1, max_epochs=2)) and not is_final_epoch(trainer())


def test_callback_pr_curve_marks_the_default_count(tmp_path, monkeypatch):
    """The PR curve of the callback marks tzl-pick's default count (the run's pi) beside best F1,
    with tzl-evaluate's mark (metrics.operating_points)."""
    from topaz_lightning import plots
    from topaz_lightning.data.prior import expected_particles_per_micrograph
    from topaz_lightning.metrics.operating_points import expected_count_mark, expected_counts

    drawn = []
    real = plots.plot_pr_curves
    monkeypatch.setattr(
        plots, "plot_pr_curves", lambda *a, **k: drawn.append(k["marks"]) or real(*a, **k)
    )
    micrographs, coords = _fake_world(n_micrographs=2)
    callback = _held_out(
        every_n_steps=2,
        nms_radius_px_model=NMS_RADIUS,
        match_distance_px_model=MAX_DISTANCE,
        log_images=True,
    )
    data = StubData(micrographs, coords, pi=0.01)  # label radius 2 model px
    quiet_trainer(tmp_path, [callback], max_steps=2).fit(StubModule(), datamodule=data)
    (marks,) = drawn
    (points,) = marks.values()
    assert [p[0].split(" (")[0] for p in points] == ["best F1", "default: pi's count"]
    counts = expected_counts(data.geometry, {n: m.shape for n, m in micrographs.items()})
    h, w = micrographs["mic0"].shape
    assert counts["mic0"] == round(expected_particles_per_micrograph(0.01, (h, w), 2.0)) > 0
    assert points[1] == expected_count_mark(callback.last_evaluation, counts)
    assert points[1][1:] == pytest.approx(
        plots.pr_point(callback.last_evaluation, per_micrograph=counts)
    )
    # no prior in the run geometry: best F1 only
    assert expected_counts(RunGeometry(label_radius_px_model=2.0), {"mic0": (h, w)}) == {}


def test_evaluate_and_callback_counts_agree(tmp_path, monkeypatch):
    """tzl-evaluate's expected counts (micrograph frame, model_path's geometry) are the shared
    function's on the model-frame sizes."""
    from tests.conftest import compose_config
    from tests.helpers import PixelLogitNet, admit_pixel_logit_net
    from topaz_lightning.cli.evaluate_pictures import _expected_counts
    from topaz_lightning.metrics.operating_points import expected_counts
    from topaz_lightning.models import save_model

    admit_pixel_logit_net(monkeypatch)
    geometry = RunGeometry(downsample=4.0, label_radius_px_model=4.0, pi=0.0327)
    model = save_model(
        tmp_path / "m.pt", PixelLogitNet(), extra={"geometry": geometry.to_dict()}, overwrite=True
    )
    cfg = compose_config(
        "evaluate", ["picks=p.tsv", "truth=t.tsv", f"output_dir={tmp_path}", f"model_path={model}"]
    )
    got = _expected_counts(cfg, {"a": (4096, 4096), "b": (4096, 2048)})
    assert got == expected_counts(geometry, {"a": (1024, 1024), "b": (1024, 512)})
    # 0.0327 * 1024 * 1024 / 49 (the pixels of the r = 4 disk) = 699.8: 700, as make demo-real
    assert got["a"] == 700 and got["b"] == 350
