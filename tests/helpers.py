"""Helpers shared by the tests: a stand-in network, a quiet trainer, a blob micrograph, pick settings.

Configs are composed with :func:`tests.conftest.compose_config` (no per-file wrapper).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from tests.conftest import compose_config

#: the ``_target_`` of :class:`PixelLogitNet` in a model file
PIXEL_LOGIT_NET_TARGET = f"{__name__}.PixelLogitNet"


class PixelLogitNet(nn.Module):
    """Stand-in classifier whose logit at a pixel is the pixel's value (times ``weight``, 1).

    Lets a test place score peaks exactly where it wants: the micrograph *is* the score map.
    ``receptive_field`` 1, one parameter (so the module has a device), a ``config`` so
    ``save_model`` can store it (load it with :func:`admit_pixel_logit_net`).
    """

    receptive_field = 1
    num_features = 1

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    @property
    def config(self) -> dict:
        return {"_target_": PIXEL_LOGIT_NET_TARGET}

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return patches[:, 0, 0, 0] * self.weight

    def score_map(self, images: torch.Tensor, tile_size: int | None = None) -> torch.Tensor:
        return images[:, 0] * self.weight


def admit_pixel_logit_net(monkeypatch) -> None:
    """Let ``load_model`` build :class:`PixelLogitNet` in this process: model files are built only
    from the package's own classes (the allow-list), so the test adds the stand-in to it."""
    from topaz_lightning.models import io as model_io

    classes = model_io.model_classes()
    classes[PIXEL_LOGIT_NET_TARGET] = PixelLogitNet
    monkeypatch.setattr(model_io, "model_classes", lambda: classes)


def quiet_trainer(tmp_path: Path, callbacks: Sequence[pl.Callback] = (), **settings) -> pl.Trainer:
    """A one-CPU trainer that writes nothing the test did not ask for: no logger, no progress
    bar, no model summary, checkpoints only when a ModelCheckpoint is among ``callbacks``, files
    under ``tmp_path``. ``settings`` (max_steps, max_epochs, logger, devices, ...) are passed on
    and override these."""
    callbacks = list(callbacks)
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return pl.Trainer(callbacks=callbacks, **{**defaults, **settings})


def add_gaussian_blobs(
    image: np.ndarray, blobs: Iterable[tuple[float, float, float]], sigma_px: float
) -> np.ndarray:
    """``image`` plus ``amplitude * exp(-r^2 / (2 sigma_px^2))`` about each ``(x, y, amplitude)``
    of ``blobs`` (x = column, y = row, micrograph pixels); returns a new float64 array."""
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    out = np.array(image, dtype=np.float64)
    for x, y, amplitude in blobs:
        out += amplitude * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma_px**2))
    return out


def blob_micrograph(
    blobs: Iterable[tuple[float, float, float]],
    shape: tuple[int, int] = (96, 96),
    sigma_px: float = 3.0,
    noise_std: float = 0.01,
    seed: int = 0,
) -> np.ndarray:
    """A float32 micrograph: Gaussian noise (``noise_std``, ``seed``) with a Gaussian blob of
    ``sigma_px`` at each ``(x, y, amplitude)`` of ``blobs``."""
    noise = np.random.default_rng(seed).normal(0, noise_std, shape)
    return add_gaussian_blobs(noise, blobs, sigma_px).astype(np.float32)


def pick_overrides(model: Path, micrographs: Path, output_dir: Path, *extra: str) -> list[str]:
    """``tzl-pick`` overrides for ``model`` on ``micrographs`` writing to ``output_dir``, quiet and
    on the CPU; ``extra`` overrides are appended (for a config or a command line)."""
    return [
        f"model_path={model}",
        f"micrographs={micrographs}",
        f"output_dir={output_dir}",
        "progress=false",
        "device=cpu",
        *extra,
    ]


def pick_config(model: Path, micrographs: Path, output_dir: Path, *extra: str):
    """The composed ``configs/pick.yaml`` with :func:`pick_overrides`."""
    return compose_config("pick", pick_overrides(model, micrographs, output_dir, *extra))


def evaluate_config(picks: Path, truth: Path, output_dir: Path, *extra: str):
    """The composed ``configs/evaluate.yaml`` for ``picks`` against ``truth`` writing to
    ``output_dir``; ``extra`` overrides are appended."""
    return compose_config(
        "evaluate", [f"picks={picks}", f"truth={truth}", f"output_dir={output_dir}", *extra]
    )
