"""Simulation settings: every knob of the micrograph simulator, its checks, and the named presets (configs/simulate/*.yaml)."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topaz_lightning.errors import ConfigError

# fraction of a plane that random sequential placement of disks can fill before it jams (~0.547);
# asking for more particles than this allows cannot succeed
_JAMMING_COVERAGE = 0.5


@dataclass
class SimulationSettings:
    """All settings of a simulated dataset (units in the names: _px pixels, _a Angstrom, _um microns).

    Ranges are ``[low, high]`` pairs drawn uniformly per micrograph (or per object). A preset is a
    complete ``SimulationSettings``; ``SimulationSettings(**preset_dict)`` checks every value.
    """

    name: str = "custom"
    # dataset layout
    num_micrographs: int = 4
    num_test: int = 1
    shape: tuple[int, int] = (256, 256)  # (height, width) in pixels
    pixel_size_a: float = 7.0
    labeled_sizes: tuple[int, ...] = (10, 100, 1000)
    coordinate_format: str = "tsv"
    # the particle: one molecule per dataset, seen in random orientations
    particle_kind: str = "globular"  # globular | filament
    particle_diameter_a: float = 100.0  # globular: largest extent; filament: length
    filament_diameter_a: float = 48.0  # filament thickness
    filament_bend_deg: float = 30.0  # largest bend of the filament segment
    num_atoms: int = 300
    atom_sigma_a: float = 5.0
    orientation: str = "uniform"  # uniform | flat (long axis near the ice plane)
    max_tilt_deg: float = 90.0  # for orientation=flat: largest out-of-plane tilt
    # placement
    particles_per_micrograph: float = 20.0
    min_distance_px: float = 14.0
    edge_margin_px: float | None = None  # None: the particle radius
    clustering: float = 0.0  # 0 uniform; larger values give clusters and empty patches
    cluster_scale_px: float = 64.0
    contaminant_clearance_px: float = 4.0
    # optics and contrast transfer function
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    defocus_um: tuple[float, float] = (0.8, 3.0)
    astigmatism_um: tuple[float, float] = (0.0, 0.1)
    b_factor_a2: float = 150.0
    # ice, carbon, contaminants
    ice_thickness_a: tuple[float, float] = (300.0, 700.0)
    ice_scale_px: float = 256.0
    ice_mean_free_path_a: float = 3500.0
    structural_noise_fraction: float = 0.3  # share of background noise that is CTF-filtered ice
    carbon_probability: float = 0.3
    carbon_phase_rad: float = 0.3
    carbon_attenuation: float = 0.08
    ice_crystals_per_micrograph: float = 1.0
    ice_crystal_radius_px: tuple[float, float] = (12.0, 60.0)
    aggregates_per_micrograph: float = 2.0
    aggregate_radius_px: tuple[float, float] = (8.0, 25.0)
    dark_blobs_per_micrograph: float = 8.0
    dark_blob_radius_px: tuple[float, float] = (2.0, 25.0)
    # noise: snr sets the dose per micrograph; with snr null, dose_e_per_a2 is used as given.
    # snr is quoted at the detector's raw pixel (raw_pixel_size_a), as usual for unbinned movies;
    # binning by pixel_size_a / raw_pixel_size_a multiplies it by that factor squared.
    snr: float | None = 0.05
    raw_pixel_size_a: float = 1.75
    dose_e_per_a2: float | None = None
    # metadata handed to training and evaluation (dataset.yaml)
    label_radius_px: int = 4
    suggested_pi: float | None = None  # None: measured from the truth with label_radius_px
    nms_radius_px: float = 10.0
    match_distance_px: float = 7.0

    def __post_init__(self) -> None:
        self.shape = tuple(int(v) for v in _seq(self.shape, "shape", 2))
        self.labeled_sizes = tuple(int(v) for v in _seq(self.labeled_sizes, "labeled_sizes"))
        for key in (
            "defocus_um",
            "astigmatism_um",
            "ice_thickness_a",
            "ice_crystal_radius_px",
            "aggregate_radius_px",
            "dark_blob_radius_px",
        ):
            low, high = (float(v) for v in _seq(getattr(self, key), key, 2))
            if not (math.isfinite(low) and math.isfinite(high)) or low > high or low < 0:
                raise ConfigError(
                    key, f"expected a range [low, high] with 0 <= low <= high, got {[low, high]}"
                )
            setattr(self, key, (low, high))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ConfigError naming the first impossible setting."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(self.name)):
            raise ConfigError(
                "name", f"use letters, digits, '_', '.', '-' (it names files); got {self.name!r}"
            )
        _positive(self, "num_micrographs", integer=True)
        if not 0 <= self.num_test < self.num_micrographs:
            raise ConfigError("num_test", f"must be in [0, num_micrographs-1]; got {self.num_test}")
        if min(self.shape) < 32:
            raise ConfigError("shape", f"micrographs must be at least 32 x 32 px; got {self.shape}")
        for key in (
            "pixel_size_a",
            "raw_pixel_size_a",
            "particle_diameter_a",
            "filament_diameter_a",
            "atom_sigma_a",
            "min_distance_px",
            "cluster_scale_px",
            "voltage_kv",
            "ice_scale_px",
            "ice_mean_free_path_a",
            "nms_radius_px",
            "match_distance_px",
        ):
            _positive(self, key)
        _positive(self, "num_atoms", integer=True)
        for key in (
            "particles_per_micrograph",
            "clustering",
            "contaminant_clearance_px",
            "cs_mm",
            "b_factor_a2",
            "carbon_phase_rad",
            "filament_bend_deg",
            "ice_crystals_per_micrograph",
            "aggregates_per_micrograph",
            "dark_blobs_per_micrograph",
        ):
            _non_negative(self, key)
        for key in ("amplitude_contrast", "carbon_probability", "carbon_attenuation"):
            value = getattr(self, key)
            if not 0 <= value <= 1:
                raise ConfigError(key, f"must be in [0, 1]; got {value}")
        if not 0 <= self.structural_noise_fraction < 1:
            raise ConfigError(
                "structural_noise_fraction",
                f"must be in [0, 1); got {self.structural_noise_fraction}",
            )
        if self.particle_kind not in ("globular", "filament"):
            raise ConfigError(
                "particle_kind", f"expected 'globular' or 'filament'; got {self.particle_kind!r}"
            )
        if self.orientation not in ("uniform", "flat"):
            raise ConfigError(
                "orientation", f"expected 'uniform' or 'flat'; got {self.orientation!r}"
            )
        if not 0 <= self.max_tilt_deg <= 90:
            raise ConfigError("max_tilt_deg", f"must be in [0, 90]; got {self.max_tilt_deg}")
        if (
            self.particle_kind == "filament"
            and self.particle_diameter_a < 4 * self.filament_diameter_a
        ):
            raise ConfigError(
                "filament_diameter_a",
                "a filament must be at least 4 times longer (particle_diameter_a) than it is thick",
            )
        if self.edge_margin_px is not None and self.edge_margin_px < 0:
            raise ConfigError("edge_margin_px", f"must be >= 0; got {self.edge_margin_px}")
        if self.snr is None and self.dose_e_per_a2 is None:
            raise ConfigError("snr", "set snr, or set snr to null and give dose_e_per_a2")
        if self.snr is not None and not (math.isfinite(self.snr) and self.snr > 0):
            raise ConfigError("snr", f"must be > 0 (or null to use dose_e_per_a2); got {self.snr}")
        if self.dose_e_per_a2 is not None and not (
            math.isfinite(self.dose_e_per_a2) and self.dose_e_per_a2 > 0
        ):
            raise ConfigError("dose_e_per_a2", f"must be > 0; got {self.dose_e_per_a2}")
        if any(n <= 0 for n in self.labeled_sizes):
            raise ConfigError(
                "labeled_sizes", f"sizes must be positive; got {list(self.labeled_sizes)}"
            )
        if self.label_radius_px < 0:
            raise ConfigError("label_radius_px", f"must be >= 0; got {self.label_radius_px}")
        if self.suggested_pi is not None and not 0 < self.suggested_pi < 1:
            raise ConfigError("suggested_pi", f"must be in (0, 1) or null; got {self.suggested_pi}")
        margin = self.edge_margin
        height, width = self.shape
        usable = (height - 2 * margin) * (width - 2 * margin)
        if usable <= 0:
            raise ConfigError(
                "edge_margin_px", f"margin {margin} px leaves no room in a {self.shape} micrograph"
            )
        coverage = (
            self.particles_per_micrograph * math.pi * (self.min_distance_px / 2) ** 2 / usable
        )
        if coverage > _JAMMING_COVERAGE:
            most = int(_JAMMING_COVERAGE * usable / (math.pi * (self.min_distance_px / 2) ** 2))
            raise ConfigError(
                "min_distance_px",
                f"{self.min_distance_px} px apart, at most ~{most} particles fit in a {height} x {width} "
                f"micrograph; particles_per_micrograph={self.particles_per_micrograph} is impossible",
            )

    # ------------------------------------------------------------------ derived values
    @property
    def particle_radius_px(self) -> float:
        """Half the particle's largest extent (semi-major axis for a filament), in pixels."""
        return self.particle_diameter_a / 2 / self.pixel_size_a

    @property
    def edge_margin(self) -> float:
        """Distance from the micrograph edge that particle centres keep, in pixels."""
        return (
            self.particle_radius_px if self.edge_margin_px is None else float(self.edge_margin_px)
        )

    @property
    def binned_snr(self) -> float | None:
        """The particle SNR at the simulated pixel size: snr * (pixel_size_a / raw_pixel_size_a)^2."""
        if self.snr is None:
            return None
        return self.snr * (self.pixel_size_a / self.raw_pixel_size_a) ** 2

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists instead of tuples) for YAML output."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def replace(self, **overrides: Any) -> SimulationSettings:
        """A copy with some settings changed; unknown keys raise ConfigError."""
        known = {f.name for f in dataclasses.fields(self)}
        for key in overrides:
            if key not in known:
                raise ConfigError(
                    key, f"unknown simulation setting; known: {', '.join(sorted(known))}"
                )
        return dataclasses.replace(self, **overrides)


def _seq(value: Any, key: str, length: int | None = None) -> tuple:
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(key, f"expected a list, got {value!r}") from None
    if length is not None and len(items) != length:
        raise ConfigError(key, f"expected {length} values, got {list(items)}")
    return items


def _positive(settings: SimulationSettings, key: str, integer: bool = False) -> None:
    value = getattr(settings, key)
    if integer and (isinstance(value, bool) or int(value) != value):
        raise ConfigError(key, f"must be an integer; got {value!r}")
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(key, f"must be > 0; got {value!r}")


def _non_negative(settings: SimulationSettings, key: str) -> None:
    value = getattr(settings, key)
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(key, f"must be >= 0; got {value!r}")


#: the preset files: configs/simulate/<name>.yaml (packaged with topaz_lightning/configs)
PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "simulate"


def preset_names() -> list[str]:
    """Names of the built-in presets (the files in configs/simulate/)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(preset: str) -> dict[str, Any]:
    """The settings of a preset as written in configs/simulate/<preset>.yaml (without _target_)."""
    import yaml

    if preset not in preset_names():
        raise ConfigError(
            "preset", f"unknown preset {preset!r}; choose one of {', '.join(preset_names())}"
        )
    values = yaml.safe_load((PRESET_DIR / f"{preset}.yaml").read_text())
    values.pop("_target_", None)
    # a preset may extend another (Hydra's group-relative defaults: ``[other, _self_]``): the
    # other's settings, then its own on top, as tzl-simulate composes it
    bases = [d for d in values.pop("defaults", []) if d != "_self_"]
    if len(bases) > 1 or any(not isinstance(b, str) or b == preset for b in bases):
        raise ConfigError("preset", f"{preset}.yaml: defaults may name one other preset: {bases}")
    return {**load_preset(bases[0]), **values} if bases else values


def get_preset(preset: str, /, **overrides: Any) -> SimulationSettings:
    """The named preset as ``SimulationSettings``, with optional overrides (checked)."""
    return SimulationSettings(**load_preset(preset)).replace(**overrides)


__all__ = ["PRESET_DIR", "SimulationSettings", "get_preset", "load_preset", "preset_names"]
