"""Shared fixtures: paths to the real data in ../shared/data, small synthetic images, thread limits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# two cores on CI, two xdist workers: keep each worker single-threaded
torch.set_num_threads(1)


def shared_data(label: str) -> Path:
    """Path of a dataset in ../shared/data by label; skip the test if the folder is absent."""
    path = SHARED_DATA / label
    if not path.exists():
        pytest.skip(f"shared data {label} not present at {path}")
    return path


@pytest.fixture
def empiar10017_dir() -> Path:
    return shared_data("empiar10017_dev")


@pytest.fixture
def ucsf_dir() -> Path:
    return shared_data("ucsf_mrc_sample")


@pytest.fixture
def configs_dir() -> Path:
    return REPO / "configs"
