"""Where training data comes from: micrograph + coordinate files, or a simulated dataset directory.

A *data source* reads micrographs and particle coordinates in the micrograph frame and says what
the data itself suggests (pixel size, particle size, radii, prior); :class:`PUDataModule` turns
that into a resolved :class:`~topaz_lightning.geometry.RunGeometry`, labels and batches. A new
source is one class with ``prepare()`` and ``load() -> LoadedData`` plus a DataModule subclass
in :mod:`topaz_lightning.data.modules` that builds it from plain keyword arguments (see
``FilesDataModule``), and one yaml in ``configs/data/`` whose defaults list takes the shared keys
from ``_base.yaml``. This module imports nothing of the DataModule (the arrow goes one way:
``modules`` -> ``datamodule`` and ``sources``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from topaz_lightning.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class LoadedData:
    """What a source read, all in the micrograph frame.

    ``dataset`` holds the data's own suggestions with dataset.yaml's keys and units (micrograph
    pixels): ``pixel_size_a``, ``particle_radius_px``, ``label_radius_px``, ``nms_radius_px``,
    ``match_distance_px``, ``suggested_pi``, ``mean_particles_per_micrograph``. ``train_list`` /
    ``val_list`` are the source's default split (used when the user gives no split).
    """

    micrographs: dict[str, np.ndarray]
    coordinates: pd.DataFrame
    source: str
    dataset: dict[str, Any] = field(default_factory=dict)
    dataset_source: str = "dataset.yaml"
    train_list: Path | None = None
    val_list: Path | None = None


class DataSource(Protocol):
    """The contract of a data source (see the module docstring)."""

    def prepare(self) -> None:
        """Create the data once if it is generated (called on one process only)."""

    def load(self) -> LoadedData:
        """Read and validate micrographs and coordinates."""


class FileSource:
    """Micrographs (directory, glob, list file, list of paths, or ``{name: array}``) and particle
    coordinates (any format ``read_coordinates`` knows, or a DataFrame micrograph, x, y) at the
    micrographs' own pixel size. The pixel size is read from the first MRC header when set."""

    def __init__(
        self,
        micrographs: str
        | os.PathLike
        | Sequence[str | os.PathLike]
        | Mapping[str, np.ndarray]
        | None,
        coordinates: str | os.PathLike | pd.DataFrame | None,
        coordinates_format: str | None = None,
    ):
        if micrographs is None or coordinates is None:
            missing = "micrographs" if micrographs is None else "coordinates"
            raise ConfigError(
                f"data.{missing}",
                "required: give micrographs (directory, glob or list file) and coordinates "
                "(a coordinate file or directory), or use data=simulated",
            )
        self.micrographs = micrographs
        self.coordinates = coordinates
        self.coordinates_format = coordinates_format

    def prepare(self) -> None:
        """Nothing to create."""

    def load(self) -> LoadedData:
        """Read every micrograph and the coordinates; validate them against the images."""
        from topaz_lightning.io.coordinates import read_coordinates, validate_coordinates

        dataset: dict[str, Any] = {}
        if isinstance(self.micrographs, Mapping):
            images = {str(k): np.asarray(v, dtype=np.float32) for k, v in self.micrographs.items()}
            for name, image in images.items():
                if image.ndim != 2:
                    raise ConfigError(
                        f"data.micrographs[{name}]", f"must be 2-D, got {image.shape}"
                    )
        else:
            from topaz_lightning.io.micrographs import (
                list_micrographs,
                read_micrograph,
                read_pixel_size,
            )

            paths = list_micrographs(self.micrographs)
            images = {name: read_micrograph(path) for name, path in paths.items()}
            if paths:
                pixel_size = read_pixel_size(next(iter(paths.values())))
                if pixel_size is not None:
                    dataset["pixel_size_a"] = pixel_size
        if not images:
            raise ConfigError("data.micrographs", "no micrographs")
        if isinstance(self.coordinates, pd.DataFrame):
            truth = self.coordinates.copy()
            source = "coordinates table"
        else:
            truth = read_coordinates(self.coordinates, fmt=self.coordinates_format)
            source = os.fspath(self.coordinates)
        truth = _checked_truth(truth, images, source, validate_coordinates)
        return LoadedData(images, truth, source, dataset, dataset_source="micrograph header")


class SimulatedSource:
    """A dataset written by ``topaz_lightning.simulate.simulate_dataset`` (generated by
    :meth:`prepare` from ``preset`` and ``seed`` when ``dataset_dir`` has no dataset.yaml).
    Its train.txt/test.txt are the default split; its dataset.yaml suggests pixel size,
    particle radius, label/NMS/match radii and pi."""

    def __init__(self, dataset_dir: str | os.PathLike, preset: str = "demo", seed: int = 0):
        if dataset_dir is None:
            raise ConfigError("data.simulated_dir", "required: the simulated dataset directory")
        self.dataset_dir = Path(dataset_dir)
        self.preset = preset
        self.seed = seed

    def prepare(self) -> None:
        """Generate the dataset if absent."""
        if (self.dataset_dir / "dataset.yaml").exists():
            return
        from topaz_lightning.simulate import simulate_dataset

        log.info(
            "generating simulated dataset %s (preset %s, seed %s)",
            self.dataset_dir,
            self.preset,
            self.seed,
        )
        simulate_dataset(self.dataset_dir, preset=self.preset, seed=self.seed)

    def load(self) -> LoadedData:
        """Read the micrographs, the complete truth and dataset.yaml."""
        from topaz_lightning.io.coordinates import read_coordinates, validate_coordinates
        from topaz_lightning.io.micrographs import list_micrographs, read_micrograph
        from topaz_lightning.simulate import load_dataset_info

        if not (self.dataset_dir / "dataset.yaml").exists():
            self.prepare()
        info = load_dataset_info(self.dataset_dir)
        paths = list_micrographs(self.dataset_dir / str(info.get("micrograph_dir", "micrographs")))
        images = {name: read_micrograph(path) for name, path in paths.items()}
        truth_path = self.dataset_dir / str(info.get("truth", "particles.tsv"))
        truth = read_coordinates(truth_path)
        truth = _checked_truth(truth, images, os.fspath(truth_path), validate_coordinates)
        return LoadedData(
            images,
            truth,
            os.fspath(truth_path),
            dataset=dict(info),
            dataset_source=os.fspath(self.dataset_dir / "dataset.yaml"),
            train_list=self.dataset_dir / str(info.get("train", "train.txt")),
            val_list=self.dataset_dir / str(info.get("test", "test.txt")),
        )


def _checked_truth(truth: pd.DataFrame, images: Mapping[str, np.ndarray], source: str, validate):
    truth = truth.copy()
    if "micrograph" in truth.columns:
        truth["micrograph"] = truth["micrograph"].astype(str)
    validate(truth, {n: im.shape for n, im in images.items()}, source)  # refuses an empty table
    return truth[["micrograph", "x", "y"]].astype({"x": float, "y": float})
