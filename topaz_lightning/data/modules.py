"""The DataModules that configs/data/*.yaml build: PUDataModule over one data source each."""

from __future__ import annotations

import os
from typing import Any

from topaz_lightning.data.datamodule import PUDataModule
from topaz_lightning.data.sources import FileSource, SimulatedSource


class FilesDataModule(PUDataModule):
    """:class:`PUDataModule` over :class:`FileSource` (``data=files``): ``micrographs``,
    ``coordinates``, ``coordinates_format``, plus every shared keyword of PUDataModule."""

    def __init__(
        self,
        micrographs: Any = None,
        coordinates: Any = None,
        coordinates_format: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(FileSource(micrographs, coordinates, coordinates_format), **kwargs)


class SimulatedDataModule(PUDataModule):
    """:class:`PUDataModule` over :class:`SimulatedSource` (``data=simulated``):
    ``simulated_dir``, ``simulated_preset``, ``simulated_seed``, plus every shared keyword."""

    def __init__(
        self,
        simulated_dir: str | os.PathLike | None = None,
        simulated_preset: str = "demo",
        simulated_seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(SimulatedSource(simulated_dir, simulated_preset, simulated_seed), **kwargs)
