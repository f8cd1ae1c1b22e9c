"""Tests for PULitModule: loss wiring, reconstruction weight, pi from the datamodule, a short fit."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from tests.helpers import quiet_trainer
from topaz_lightning.errors import ConfigError
from topaz_lightning.module import PULitModule, reconstruction_error, resolve_recon_weight

torch.set_num_threads(1)


# ---------------------------------------------------------------- helpers
class PNObjective(nn.Module):
    """Stand-in objective (unlabeled treated as negative) so these tests do not depend on objectives/."""

    def forward(self, logits, labels, pi):
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        return loss, {"pn": loss.detach()}


def _objective() -> nn.Module:
    try:
        from topaz_lightning.objectives import GEBinomial

        return GEBinomial()
    except ImportError:
        return PNObjective()


def synthetic_micrographs(n: int = 3, size: int = 128, particles: int = 12, seed: int = 0):
    """Micrographs with bright Gaussian blobs (sigma 3 px) on N(0,1) noise; returns images, xy list."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, coords = [], []
    for _ in range(n):
        xy = rng.uniform(12, size - 12, size=(particles, 2))
        image = rng.normal(0, 1, (size, size)).astype(np.float32)
        for x, y in xy:
            image += 3.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2)).astype(
                np.float32
            )
        images.append(image)
        coords.append(xy)
    return images, coords


class TinyPUData(pl.LightningDataModule):
    """Minimal datamodule over the real PU sampler, exposing pi_unlabeled / num_labeled_particles."""

    def __init__(
        self, patch_size: int = 31, n_positive: int = 4, n_unlabeled: int = 60, seed: int = 0
    ):
        super().__init__()
        from topaz_lightning.data.sampler import PUBatchDataset, PUPatchSampler

        images, coords = synthetic_micrographs()
        self.sampler = PUPatchSampler.from_coordinates(
            images,
            coords,
            radius_px_model=3,
            patch_size=patch_size,
            n_positive=n_positive,
            n_unlabeled=n_unlabeled,
            seed=seed,
        )
        self.dataset = PUBatchDataset(self.sampler, steps_per_epoch=10, step_provider=self._step)
        self.pi_unlabeled = 0.05
        self.num_labeled_particles = sum(len(c) for c in coords)
        self.patch_size = patch_size

    def _step(self) -> int:
        return self.trainer.fit_loop.epoch_loop._batches_that_stepped if self.trainer else 0

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=None)


def _conv31():
    from topaz_lightning.models import Conv31

    return Conv31()


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


# ---------------------------------------------------------------- pure functions
def test_reconstruction_error_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 1, 7, 7)).astype(np.float32)
    y = rng.normal(size=(5, 1, 7, 7)).astype(np.float32)
    expected = np.mean([np.sum((x[i] - y[i]) ** 2) for i in range(5)])
    got = reconstruction_error(torch.from_numpy(x), torch.from_numpy(y))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_recon_weight_auto_is_10_over_p_and_bad_values_raise():
    assert resolve_recon_weight("auto", 100) == pytest.approx(0.1)
    assert resolve_recon_weight(0.5, None) == 0.5
    with pytest.raises(ConfigError, match="recon_weight"):
        resolve_recon_weight("auto", None)
    with pytest.raises(ConfigError, match="recon_weight"):
        resolve_recon_weight("ten", 10)
    with pytest.raises(ConfigError, match="recon_weight"):
        resolve_recon_weight(-1.0, 10)


def test_pi_must_be_known_and_in_range():
    module = PULitModule(_conv31(), PNObjective(), pi_unlabeled=1.5)
    with pytest.raises(ConfigError, match="pi_unlabeled"):
        module.finalize()
    module = PULitModule(_conv31(), PNObjective())
    with pytest.raises(ConfigError, match="pi_unlabeled"):
        module.finalize()


def test_configure_optimizers_completes_partial_with_l2():
    net = _conv31()
    module = PULitModule(
        net, PNObjective(), functools.partial(torch.optim.Adam, lr=1e-3, weight_decay=1e-4), 0.1
    )
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["lr"] == 1e-3 and opt.defaults["weight_decay"] == 1e-4
    n_params = sum(p.numel() for p in net.parameters())
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == n_params
    # default: the paper's Adam at 2e-4
    assert PULitModule(net, PNObjective(), None, 0.1).configure_optimizers().defaults["lr"] == 2e-4


def test_decoder_loss_adds_weighted_reconstruction_and_runs_trunk_once():
    from topaz_lightning.models import Decoder

    torch.manual_seed(0)
    net, objective = _conv31(), PNObjective()
    decoder = Decoder(net.num_features, 31)
    module = PULitModule(net, objective, None, 0.1, decoder=decoder, num_labeled_particles=20)
    module.finalize()
    assert module.recon_weight == pytest.approx(0.5)
    patches = torch.randn(8, 1, 31, 31)
    labels = torch.tensor([1.0, 1.0] + [0.0] * 6)
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    before = int(bn.num_batches_tracked)
    loss, terms = module.compute_loss(patches, labels)
    assert int(bn.num_batches_tracked) == before + 1  # features computed once per step
    # reference, in eval mode so a second pass gives the same numbers
    module.eval()
    loss_eval, terms_eval = module.compute_loss(patches, labels)
    logits = net(patches)
    ref_obj, _ = objective(logits, labels, 0.1)
    ref_recon = ((decoder(net.features(patches)) - patches) ** 2).sum(dim=(1, 2, 3)).mean()
    assert float(loss_eval) == pytest.approx(float(ref_obj + 0.5 * ref_recon), rel=1e-5)
    assert float(terms_eval["recon"]) == pytest.approx(float(ref_recon), rel=1e-5)
    assert set(terms) == {"pn", "recon"}


def test_decoder_shape_mismatch_is_a_config_error():
    from topaz_lightning.models import Decoder

    net = _conv31()
    module = PULitModule(net, PNObjective(), None, 0.1, Decoder(net.num_features, 29), 1.0)
    module.finalize()
    with pytest.raises(ConfigError, match="patch_size"):
        module.compute_loss(torch.randn(4, 1, 31, 31), torch.tensor([1.0, 0, 0, 0]))


# ---------------------------------------------------------------- training
def test_short_fit_lowers_loss_and_takes_pi_from_the_run_geometry(tmp_path):
    from topaz_lightning.geometry import RunGeometry

    pl.seed_everything(0, workers=True)
    data = TinyPUData()
    module = PULitModule(_conv31(), _objective(), functools.partial(torch.optim.Adam, lr=1e-3))
    # handed down by train(); the module never reads the trainer's datamodule
    module.set_run_geometry(RunGeometry(pi=0.08, pi_unlabeled=0.05, num_labeled_particles=36))
    recorder = LossRecorder()
    trainer = quiet_trainer(tmp_path, [recorder], max_steps=30, log_every_n_steps=1)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 30
    assert module.pi_unlabeled == pytest.approx(0.05) and module.pi == pytest.approx(0.08)
    assert module.num_labeled_particles == 36
    assert module.hparams["geometry"]["pi_unlabeled"] == pytest.approx(0.05)
    losses = np.array(recorder.losses)
    assert len(losses) == 30 and np.all(np.isfinite(losses))
    assert losses[-5:].mean() < losses[:5].mean() * 0.9
    assert {"train/loss"} <= set(trainer.callback_metrics)


def test_the_module_reads_nothing_from_the_datamodule(tmp_path):
    # a datamodule exposing a prior is not consulted: without one given, setup() refuses
    module = PULitModule(_conv31(), _objective())
    with pytest.raises(ConfigError, match="pi_unlabeled"):
        quiet_trainer(tmp_path, max_steps=1, log_every_n_steps=1).fit(
            module, datamodule=TinyPUData()
        )


def test_compute_loss_needs_finalize_first():
    module = PULitModule(_conv31(), PNObjective(), pi_unlabeled=0.1)
    with pytest.raises(RuntimeError, match="finalize"):
        module.compute_loss(torch.randn(2, 1, 31, 31), torch.tensor([1.0, 0.0]))
    module.finalize()
    loss, _ = module.compute_loss(torch.randn(2, 1, 31, 31), torch.tensor([1.0, 0.0]))
    assert torch.isfinite(loss)


def _logged_run(tmp_path, every: int, steps: int):
    """(values logged per step, final callback_metrics) of a short fit logging every ``every``."""
    pl.seed_everything(0, workers=True)
    module = PULitModule(_conv31(), _objective(), pi_unlabeled=0.05)
    logged: dict[int, dict[str, float]] = {}
    plain_log, plain_log_dict = module.log, module.log_dict

    def log(name, value, **kw):
        logged.setdefault(module.trainer.global_step, {})[name] = float(value)
        plain_log(name, value, **kw)

    def log_dict(values, **kw):
        for name, value in values.items():
            logged.setdefault(module.trainer.global_step, {})[name] = float(value)
        plain_log_dict(values, **kw)

    module.log, module.log_dict = log, log_dict
    trainer = quiet_trainer(tmp_path, max_steps=steps, log_every_n_steps=every)
    trainer.fit(module, datamodule=TinyPUData())
    final = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return logged, final


def test_training_logs_every_n_steps_with_the_same_numbers(tmp_path):
    every_step, final_every = _logged_run(tmp_path, 1, 13)
    sparse, final_sparse = _logged_run(tmp_path, 4, 13)
    assert sorted(every_step) == list(range(13))
    # the loggers' steps (every 4th), the last of each 10-step epoch and the last of the run
    assert sorted(sparse) == [3, 7, 9, 11, 12]
    for step, values in sparse.items():
        assert values == every_step[step]  # identical numbers, term by term
    assert "train/loss" in sparse[3] and len(sparse[3]) >= 2  # the loss and its terms
    assert final_sparse == final_every


def test_patch_aupr_keeps_saturated_logits_in_order(monkeypatch):
    module = PULitModule(_conv31(), PNObjective(), pi_unlabeled=0.1)
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    module.on_validation_epoch_start()
    # positives rank 1st and 5th: AP = (1/1 + 2/5) / 2 = 0.7; logits above ~17 must not tie
    module._val_logits.append(torch.tensor([30.0, 25.0, 20.0, 18.0, -1.0, -2.0]))
    module._val_labels.append(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
    module.on_validation_epoch_end()
    assert float(logged["val/patch_aupr"]) == pytest.approx(0.7, abs=1e-6)


class _LayoutProbe(pl.Callback):
    """Records the memory layout of a conv weight at each step."""

    def __init__(self):
        self.weights = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        # a weight with several input channels (with one, both layouts are the same strides)
        weight = next(p for p in module.net.parameters() if p.dim() == 4 and p.shape[1] > 1)
        self.weights.append(not weight.is_contiguous())


def _fit_with_layout(tmp_path, memory_format: str, steps: int = 8):
    pl.seed_everything(0, workers=True)
    module = PULitModule(_conv31(), _objective(), pi_unlabeled=0.05, memory_format=memory_format)
    probe, losses = _LayoutProbe(), []
    plain_compute = module.compute_loss

    def compute_loss(patches, labels):
        loss, terms = plain_compute(patches, labels)
        losses.append(float(loss.detach()))
        return loss, terms

    module.compute_loss = compute_loss
    quiet_trainer(tmp_path / memory_format, [probe], max_steps=steps).fit(
        module, datamodule=TinyPUData()
    )
    return module, probe, np.array(losses)


def test_channels_last_on_the_cpu_trains_the_same_numbers_and_ends_contiguous(tmp_path):
    auto, probe, auto_losses = _fit_with_layout(tmp_path, "auto")
    # auto on the CPU: weights channels_last during every step (a one-channel patch is both
    # layouts at once; the layers after the first follow their weights)
    assert all(probe.weights) and len(probe.weights) == 8
    # contiguous again after fit: model.pt and picking see the usual layout
    assert all(p.is_contiguous() for p in auto.net.parameters())
    plain, plain_probe, plain_losses = _fit_with_layout(tmp_path, "contiguous")
    assert not any(plain_probe.weights)
    # the same training up to float rounding (different kernels, same arithmetic)
    np.testing.assert_allclose(auto_losses, plain_losses, rtol=1e-4, atol=1e-6)
    for a, b in zip(auto.net.parameters(), plain.net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_an_unknown_memory_format_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="memory_format"):
        PULitModule(_conv31(), _objective(), pi_unlabeled=0.05, memory_format="nhwc")
