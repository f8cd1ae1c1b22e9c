"""Shared fixtures: the real sample data in data/samples, the composed train config, thread limits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SAMPLES = REPO / "data" / "samples"

# two cores on CI, two xdist workers: keep each worker single-threaded
torch.set_num_threads(1)


def sample_data(label: str) -> Path:
    """Path of a sample dataset in data/samples by label (tracked in the repository: never skipped)."""
    path = SAMPLES / label
    assert path.is_dir(), f"sample data {label} missing at {path} (it is tracked in git)"
    return path


@pytest.fixture
def empiar10017_dir() -> Path:
    return sample_data("empiar10017_dev")


@pytest.fixture
def ucsf_dir() -> Path:
    return sample_data("ucsf_mrc_sample")


@pytest.fixture
def configs_dir() -> Path:
    return REPO / "configs"


def compose_config(
    name: str, overrides: Sequence[str] = (), output_dir: str | Path | None = None
) -> DictConfig:
    """Compose the real ``configs/<name>.yaml`` as its command would (no copied configs), with
    the ``hydra:`` paths pinned: ``paths.root_dir`` = the repository, ``paths.output_dir`` =
    ``output_dir`` (for train without one: a path that does not exist). Every test that needs a
    config uses this (or the ``cfg_train`` fixture)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides))
    if "paths" in cfg:
        with open_dict(cfg):
            cfg.paths.root_dir = str(REPO)
            if output_dir is not None or name == "train":
                cfg.paths.output_dir = str(output_dir) if output_dir else "/nonexistent/output"
    return cfg


#: what cfg_train adds to every composed training config: small, quiet, on the CPU
TEST_TRAIN_OVERRIDES = (
    "trainer=cpu",
    "logger=none",
    "callbacks.progress_bar=null",
    "trainer.enable_model_summary=false",
    "data.device=cpu",
)


@pytest.fixture
def cfg_train(tmp_path) -> Callable[..., DictConfig]:
    """The real tzl-train config (like lightning-hydra-template's ``cfg_train``), shrunk for
    tests: ``cfg_train(overrides, output_dir=tmp_path / "run")``."""

    def make(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
        out = output_dir if output_dir is not None else tmp_path / "run"
        return compose_config("train", [*TEST_TRAIN_OVERRIDES, *overrides], out)

    return make


def randomize_batchnorm(net, seed: int = 0) -> None:
    """Give BatchNorm non-trivial running statistics and affine parameters (tests of dense scoring)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.fixture(autouse=True)
def _fresh_package_loggers():
    """A command run in-process (``main()``) lets Hydra configure logging; its handlers and the
    loggers it disables would hide later tests' records from ``caplog`` (which then saw ''). Each
    test starts with the package's loggers propagating to the root again."""
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name == "topaz_lightning" or name.startswith("topaz_lightning."):
            logger = logging.getLogger(name)
            logger.disabled = False
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
    yield
