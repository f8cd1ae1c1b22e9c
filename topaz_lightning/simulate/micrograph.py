"""One simulated micrograph: contaminants, particle placement, CTF image formation and shot noise."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy.ndimage import gaussian_filter
from scipy.special import expit

from topaz_lightning.simulate.physics import (
    CTFParams,
    Molecule,
    ctf_transfer,
    filament_molecule,
    globular_molecule,
    project_molecule,
    random_orientations,
    smooth_field,
    splat_gaussians,
)
from topaz_lightning.simulate.settings import SimulationSettings

# number of reference projections used to measure the particle signal when calibrating the noise
_REFERENCE_VIEWS = 16


@dataclass
class SimulatedMicrograph:
    """A simulated micrograph and everything known about it."""

    image: np.ndarray  # (H, W) float32 electron counts
    particles_xy: np.ndarray  # (n, 2) float64 x, y of particle centres (integers)
    contaminants: list[dict[str, Any]]  # kind, x, y, radius_px of each hard negative
    ctf: CTFParams
    meta: dict[str, Any] = field(default_factory=dict)


def make_molecule(settings: SimulationSettings, rng: np.random.Generator) -> Molecule:
    """The dataset's molecule (one per dataset, like a single-particle sample)."""
    if settings.particle_kind == "filament":
        return filament_molecule(
            rng,
            settings.particle_diameter_a,
            settings.filament_diameter_a,
            settings.filament_bend_deg,
            settings.num_atoms,
            settings.atom_sigma_a,
            settings.pixel_size_a,
        )
    return globular_molecule(
        rng,
        settings.particle_diameter_a,
        settings.num_atoms,
        settings.atom_sigma_a,
        settings.pixel_size_a,
    )


def _add_box(canvas: np.ndarray, box: np.ndarray, x: int, y: int) -> None:
    """Add ``box`` centred at (x, y) into ``canvas``, clipping at the borders."""
    half_y, half_x = box.shape[0] // 2, box.shape[1] // 2
    height, width = canvas.shape
    y0, x0 = y - half_y, x - half_x
    y1, x1 = y0 + box.shape[0], x0 + box.shape[1]
    cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)
    if cy0 >= cy1 or cx0 >= cx1:
        return
    canvas[cy0:cy1, cx0:cx1] += box[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]


def _log_uniform(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    low = max(low, 0.5)
    high = max(high, low)
    return np.exp(rng.uniform(math.log(low), math.log(high), n))


def _ice_crystal(
    rng: np.random.Generator, radius: float, attenuation: float
) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude and phase boxes of a faceted, irregular ice crystal."""
    half = int(math.ceil(radius * 1.4)) + 3
    grid = np.arange(-half, half + 1, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    theta = np.arctan2(yy, xx)
    rho = np.hypot(xx, yy)
    sides = int(rng.integers(4, 8))
    theta0 = rng.uniform(0, 2 * np.pi)
    sector = np.mod(theta - theta0, 2 * np.pi / sides) - np.pi / sides
    edge = radius * math.cos(np.pi / sides) / np.cos(sector)
    harmonics = sum(
        rng.normal(0, 0.08) * np.cos(m * theta + rng.uniform(0, 2 * np.pi)) for m in range(2, 5)
    )
    inside = (rho < edge * (1 + harmonics)).astype(np.float32)
    # a crystal is thicker toward one side; its facets show as steps in thickness
    slope = rng.normal(0, 0.3)
    thickness = inside * (1 + slope * xx / max(radius, 1)) * rng.uniform(0.8, 1.2)
    thickness = gaussian_filter(np.clip(thickness, 0, None), 1.0)
    amp = attenuation * thickness
    return amp, 2.0 * amp


def _dark_blob(radius: float, amp: float) -> np.ndarray:
    sigma = max(radius / 2, 0.7)
    half = int(math.ceil(3 * sigma))
    grid = np.arange(-half, half + 1, dtype=np.float32)
    g = np.exp(-0.5 * (grid / sigma) ** 2)
    return (amp * g[:, None] * g[None, :]).astype(np.float32)


def _place_particles(
    rng: np.random.Generator,
    settings: SimulationSettings,
    target: int,
    blocked: list[tuple[float, float, float]],
    carbon: np.ndarray | None,
) -> np.ndarray:
    """Greedy random placement with a minimum distance, avoiding edges, carbon and contaminants.

    Candidates are drawn from a smooth density (clusters and empty patches when ``clustering``
    > 0) and accepted in order if far enough from all accepted ones.
    """
    height, width = settings.shape
    margin = settings.edge_margin
    x_lo, x_hi = math.ceil(margin), math.floor(width - 1 - margin)
    y_lo, y_hi = math.ceil(margin), math.floor(height - 1 - margin)
    if target == 0 or x_lo > x_hi or y_lo > y_hi:
        return np.zeros((0, 2))
    num_candidates = max(40 * target, 200)
    xs = rng.integers(x_lo, x_hi + 1, num_candidates)
    ys = rng.integers(y_lo, y_hi + 1, num_candidates)
    keep = np.ones(num_candidates, dtype=bool)
    if settings.clustering > 0:
        density = smooth_field(rng, settings.shape, settings.cluster_scale_px)
        weight = np.exp(settings.clustering * 1.5 * density[ys, xs])
        keep &= rng.random(num_candidates) < weight / weight.max()
    if carbon is not None:
        keep &= carbon[ys, xs] < 0.5
    radius = settings.particle_radius_px
    for cx, cy, cr in blocked:
        keep &= (xs - cx) ** 2 + (ys - cy) ** 2 > (
            cr + radius * 0.7 + settings.contaminant_clearance_px
        ) ** 2
    xs, ys = xs[keep], ys[keep]
    accepted = np.empty((target, 2))
    n = 0
    min_d2 = settings.min_distance_px**2
    for x, y in zip(xs, ys, strict=True):
        if n and (((accepted[:n, 0] - x) ** 2 + (accepted[:n, 1] - y) ** 2).min() < min_d2):
            continue
        accepted[n] = (x, y)
        n += 1
        if n == target:
            break
    return accepted[:n].astype(np.float64)


def _reference_signal_power(
    molecule: Molecule, settings: SimulationSettings, ctf: CTFParams, rng: np.random.Generator
) -> float:
    """Mean squared CTF-filtered particle signal per pixel of the particle's footprint.

    Measured on isolated reference projections so the noise level (and so the SNR) does not depend
    on how many particles the micrograph holds.
    """
    rotations = random_orientations(
        rng, _REFERENCE_VIEWS, settings.orientation, settings.max_tilt_deg
    )
    boxes, box = project_molecule(molecule, rotations, settings.pixel_size_a)
    size = int(2 ** math.ceil(math.log2(2 * box)))
    canvas = np.zeros((_REFERENCE_VIEWS, size, size), dtype=np.float32)
    canvas[:, :box, :box] = boxes
    phase_tf, _ = ctf_transfer((size, size), ctf)
    signal = 2 * sfft.irfft2(sfft.rfft2(canvas) * phase_tf, s=(size, size))
    peaks = boxes.reshape(_REFERENCE_VIEWS, -1).max(axis=1, keepdims=True)
    footprint = (boxes.reshape(_REFERENCE_VIEWS, -1) > 0.1 * peaks).sum()
    return float((signal.astype(np.float64) ** 2).sum() / footprint)


def simulate_micrograph(
    settings: SimulationSettings, molecule: Molecule, seed: int | np.random.SeedSequence
) -> SimulatedMicrograph:
    """Simulate one micrograph from its own seed (independent of any other micrograph)."""
    rng = np.random.default_rng(seed)
    height, width = settings.shape
    px = settings.pixel_size_a
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]

    defocus = rng.uniform(*settings.defocus_um)
    astig = rng.uniform(*settings.astigmatism_um)
    ctf = CTFParams(
        defocus_u_um=defocus + astig / 2,
        defocus_v_um=defocus - astig / 2,
        astigmatism_angle_rad=float(rng.uniform(0, np.pi)),
        pixel_size_a=px,
        voltage_kv=settings.voltage_kv,
        cs_mm=settings.cs_mm,
        amplitude_contrast=settings.amplitude_contrast,
        b_factor_a2=settings.b_factor_a2,
    )

    # --- particles: projections rendered once each, before placement
    target = int(rng.poisson(settings.particles_per_micrograph))
    rotations = random_orientations(
        rng, max(target, 1), settings.orientation, settings.max_tilt_deg
    )
    boxes, _ = project_molecule(molecule, rotations, px)
    peak_phase = float(boxes.max(axis=(1, 2)).mean())
    radius_px = settings.particle_radius_px

    # --- carbon film beyond the edge of a large circular hole
    carbon = None
    if rng.random() < settings.carbon_probability:
        hole_radius = rng.uniform(1.5, 4.0) * max(height, width)
        direction = rng.uniform(0, 2 * np.pi)  # points from the hole into the carbon
        nx, ny = math.cos(direction), math.sin(direction)
        extent = abs(width * nx) + abs(height * ny)
        covered = rng.uniform(0.05, 0.35)  # roughly the share of the micrograph on carbon
        edge_x = width / 2 + nx * (0.5 - covered) * extent
        edge_y = height / 2 + ny * (0.5 - covered) * extent
        cx = edge_x - hole_radius * nx
        cy = edge_y - hole_radius * ny
        dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        carbon = expit((dist - hole_radius) / 1.5).astype(np.float32)

    # --- contaminants (hard negatives): ice crystals, protein aggregates, dark blobs
    phase_other = np.zeros((height, width), dtype=np.float32)
    amplitude = np.zeros((height, width), dtype=np.float32)
    contaminants: list[dict[str, Any]] = []
    for r in _log_uniform(
        rng, *settings.ice_crystal_radius_px, rng.poisson(settings.ice_crystals_per_micrograph)
    ):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        amp, ph = _ice_crystal(rng, float(r), rng.uniform(0.15, 0.5))
        _add_box(amplitude, amp, x, y)
        _add_box(phase_other, ph, x, y)
        contaminants.append(dict(kind="ice_crystal", x=x, y=y, radius_px=float(r)))
    sigma_px = max(molecule.sigma_a / px, 0.6)
    for r in _log_uniform(
        rng, *settings.aggregate_radius_px, rng.poisson(settings.aggregates_per_micrograph)
    ):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        # a clump of denatured protein: many blobs, each as dense as a piece of the particle
        n_blobs = int(np.clip(6 * (r / max(radius_px, 1)) ** 2, 6, 400))
        centres = rng.normal(0, r / 2, (1, n_blobs, 2))
        blob_sigma = rng.uniform(0.25, 0.5, n_blobs) * radius_px + sigma_px
        blob_weight = peak_phase * 2 * np.pi * blob_sigma**2 * rng.uniform(0.3, 0.9, n_blobs)
        half = int(math.ceil(r * 1.3 + 3 * blob_sigma.max()))
        box = splat_gaussians(centres, blob_weight[None], blob_sigma[None], 2 * half + 1)[0]
        _add_box(phase_other, box, x, y)
        contaminants.append(dict(kind="aggregate", x=x, y=y, radius_px=float(r)))
    for r in _log_uniform(
        rng, *settings.dark_blob_radius_px, rng.poisson(settings.dark_blobs_per_micrograph)
    ):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        strength = peak_phase * rng.uniform(0.05, 0.3)
        _add_box(amplitude, _dark_blob(float(r), strength), x, y)
        _add_box(phase_other, _dark_blob(float(r), strength * rng.uniform(1.0, 5.0)), x, y)
        contaminants.append(dict(kind="dark_blob", x=x, y=y, radius_px=float(r)))

    blocked = [(c["x"], c["y"], c["radius_px"]) for c in contaminants]
    xy = _place_particles(rng, settings, target, blocked, carbon)
    phase_particles = np.zeros((height, width), dtype=np.float32)
    for (x, y), box in zip(xy.astype(int), boxes, strict=False):
        _add_box(phase_particles, box, int(x), int(y))

    # --- noise calibration: particle SNR = particle signal power / background noise variance
    phase_tf, amplitude_tf = ctf_transfer((height, width), ctf)
    signal_power = _reference_signal_power(molecule, settings, ctf, rng)
    # post-CTF variance of unit white phase noise: 4 * mean |phase_tf|^2 over the full spectrum
    weights = np.full(phase_tf.shape, 2.0, dtype=np.float32)
    weights[:, 0] = 1
    if width % 2 == 0:
        weights[:, -1] = 1
    white_gain = float(4 * (weights * phase_tf**2).sum() / (height * width))
    frac = settings.structural_noise_fraction
    if settings.snr is not None:
        noise_var = signal_power / settings.binned_snr
        counts_per_px = 1 / ((1 - frac) * noise_var)
        dose = counts_per_px / px**2
    else:
        dose = float(settings.dose_e_per_a2)
        counts_per_px = dose * px**2
        noise_var = 1 / counts_per_px / (1 - frac)
    structure_std = math.sqrt(frac * noise_var / white_gain) if white_gain > 0 else 0.0

    # --- ice: smooth thickness; amorphous-ice structure as white phase noise scaled by thickness
    t_lo, t_hi = settings.ice_thickness_a
    thickness_field = smooth_field(rng, settings.shape, settings.ice_scale_px)
    thickness_field += (
        rng.normal(0, 0.7) * (xx - width / 2) / width
        + rng.normal(0, 0.7) * (yy - height / 2) / height
    )
    lo, hi = thickness_field.min(), thickness_field.max()
    thickness = t_lo + (t_hi - t_lo) * (thickness_field - lo) / max(hi - lo, 1e-6)
    relative = np.sqrt(thickness / thickness.mean())
    phase_other += structure_std * relative * rng.standard_normal((height, width), dtype=np.float32)
    transmission = np.exp(-thickness / settings.ice_mean_free_path_a)
    if carbon is not None:
        phase_other += carbon * settings.carbon_phase_rad
        phase_other += carbon * (
            structure_std * rng.standard_normal((height, width), dtype=np.float32)
        )
        amplitude += carbon * settings.carbon_attenuation

    # --- image formation: weak phase/amplitude object through the CTF, then shot noise
    spectrum = (
        sfft.rfft2(phase_particles + phase_other) * phase_tf - sfft.rfft2(amplitude) * amplitude_tf
    )
    intensity = 1 + 2 * sfft.irfft2(spectrum, s=(height, width))
    expected = np.clip(intensity * transmission, 0.0, None) * counts_per_px
    image = rng.poisson(expected).astype(np.float32)

    meta = dict(
        defocus_u_um=round(ctf.defocus_u_um, 4),
        defocus_v_um=round(ctf.defocus_v_um, 4),
        astigmatism_angle_deg=round(math.degrees(ctf.astigmatism_angle_rad), 2),
        dose_e_per_a2=round(float(dose), 4),
        counts_per_px=round(float(counts_per_px), 3),
        binned_snr=None if settings.snr is None else round(float(settings.binned_snr), 4),
        carbon=carbon is not None,
        ice_thickness_a=[round(float(thickness.min()), 1), round(float(thickness.max()), 1)],
        num_particles=int(len(xy)),
        num_contaminants=len(contaminants),
    )
    return SimulatedMicrograph(
        image=image, particles_xy=xy, contaminants=contaminants, ctf=ctf, meta=meta
    )
