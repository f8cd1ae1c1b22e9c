"""Synthetic cryo-EM micrographs with complete ground truth (CTF, ice, contaminants, shot noise)."""

from topaz_lightning.simulate.dataset import (
    load_dataset_info,
    resolve_settings,
    simulate_dataset,
    simulate_micrographs,
)
from topaz_lightning.simulate.micrograph import (
    SimulatedMicrograph,
    make_molecule,
    simulate_micrograph,
)
from topaz_lightning.simulate.physics import CTFParams, ctf_transfer, ctf_zero_frequencies
from topaz_lightning.simulate.settings import (
    SimulationSettings,
    get_preset,
    load_preset,
    preset_names,
)

__all__ = [
    "CTFParams",
    "SimulatedMicrograph",
    "SimulationSettings",
    "ctf_transfer",
    "ctf_zero_frequencies",
    "get_preset",
    "load_dataset_info",
    "load_preset",
    "make_molecule",
    "preset_names",
    "resolve_settings",
    "simulate_dataset",
    "simulate_micrograph",
    "simulate_micrographs",
]
