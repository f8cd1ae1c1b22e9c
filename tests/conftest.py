"""Shared fixtures: the real sample data in data/samples, the composed train config, thread limits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
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
