"""Image-formation physics for the simulator: CTF, pseudo-atomic particles, rotations, projections."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# phase shift per Angstrom of protein relative to vitreous ice at 300 kV: interaction constant
# (~6.5e-4 rad / (V A)) times the ~2.4 V difference in mean inner potential
PROTEIN_PHASE_PER_A = 1.6e-3


def electron_wavelength_a(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Angstrom at an accelerating voltage in kV."""
    volts = voltage_kv * 1e3
    return 12.2643247 / math.sqrt(volts * (1 + 0.978466e-6 * volts))


@dataclass(frozen=True)
class CTFParams:
    """One micrograph's optics. Defocus is positive for underfocus; angle in radians from +x."""

    defocus_u_um: float
    defocus_v_um: float
    astigmatism_angle_rad: float
    pixel_size_a: float
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    b_factor_a2: float = 0.0

    @property
    def defocus_um(self) -> float:
        """Mean defocus in microns."""
        return 0.5 * (self.defocus_u_um + self.defocus_v_um)


def frequency_grid(
    shape: tuple[int, int], pixel_size_a: float, half: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies (1/A) ``(kx, ky)`` of an image's FFT, broadcastable to the FFT's shape.

    ``half=True`` matches ``numpy.fft.rfft2`` (last axis 0..W/2), otherwise ``fft2``.
    """
    height, width = shape
    ky = np.fft.fftfreq(height, d=pixel_size_a).astype(np.float32)[:, None]
    if half:
        kx = np.fft.rfftfreq(width, d=pixel_size_a).astype(np.float32)[None, :]
    else:
        kx = np.fft.fftfreq(width, d=pixel_size_a).astype(np.float32)[None, :]
    return kx, ky


def ctf_phase_shift(kx: np.ndarray, ky: np.ndarray, params: CTFParams) -> np.ndarray:
    """The wave aberration chi(k) = pi lambda df(theta) k^2 - pi/2 Cs lambda^3 k^4 (radians)."""
    lam = electron_wavelength_a(params.voltage_kv)
    cs_a = params.cs_mm * 1e7
    k2 = kx * kx + ky * ky
    theta = np.arctan2(ky, kx)
    mean = 0.5 * (params.defocus_u_um + params.defocus_v_um) * 1e4
    diff = 0.5 * (params.defocus_u_um - params.defocus_v_um) * 1e4
    defocus_a = mean + diff * np.cos(2 * (theta - params.astigmatism_angle_rad))
    return (np.pi * lam * defocus_a * k2 - 0.5 * np.pi * cs_a * lam**3 * k2 * k2).astype(np.float32)


def ctf_transfer(
    shape: tuple[int, int], params: CTFParams, half: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Transfer functions (times the B-factor envelope) of a phase object and an amplitude object.

    An image of a weak object with phase ``phi`` and absorption ``a`` is
    ``1 + 2 * ifft(phase_tf * fft(phi)) - 2 * ifft(amplitude_tf * fft(a))``, where
    ``phase_tf = -(sqrt(1 - A^2) sin chi + A cos chi)`` (negative at low frequency: protein is dark
    in underfocus) and ``amplitude_tf = cos chi``.
    """
    kx, ky = frequency_grid(shape, params.pixel_size_a, half=half)
    chi = ctf_phase_shift(kx, ky, params)
    envelope = np.exp(-params.b_factor_a2 * (kx * kx + ky * ky) / 4).astype(np.float32)
    amp = params.amplitude_contrast
    phase_tf = -(math.sqrt(1 - amp * amp) * np.sin(chi) + amp * np.cos(chi)) * envelope
    amplitude_tf = np.cos(chi) * envelope
    return phase_tf.astype(np.float32), amplitude_tf.astype(np.float32)


def ctf_1d(freq_per_a: np.ndarray, defocus_um: float, params: CTFParams) -> np.ndarray:
    """The phase CTF (no envelope) along a radius at one defocus: for plots and checks."""
    lam = electron_wavelength_a(params.voltage_kv)
    cs_a = params.cs_mm * 1e7
    k2 = np.asarray(freq_per_a, dtype=np.float64) ** 2
    chi = np.pi * lam * defocus_um * 1e4 * k2 - 0.5 * np.pi * cs_a * lam**3 * k2 * k2
    amp = params.amplitude_contrast
    return -(math.sqrt(1 - amp * amp) * np.sin(chi) + amp * np.cos(chi))


def ctf_zero_frequencies(defocus_um: float, params: CTFParams, max_freq_per_a: float) -> np.ndarray:
    """Spatial frequencies (1/A) where the phase CTF at ``defocus_um`` crosses zero, up to a limit.

    Zeros satisfy chi(k) + atan(A / sqrt(1 - A^2)) = n pi, n = 1, 2, ...; with u = k^2 this is a
    quadratic whose smaller root is the n-th zero.
    """
    lam = electron_wavelength_a(params.voltage_kv)
    cs_a = params.cs_mm * 1e7
    amp = params.amplitude_contrast
    offset = math.atan2(amp, math.sqrt(1 - amp * amp))
    a = 0.5 * np.pi * cs_a * lam**3
    b = np.pi * lam * defocus_um * 1e4
    zeros = []
    n = 1
    while True:
        c = n * np.pi - offset
        if a > 0:
            disc = b * b - 4 * a * c
            if disc < 0:
                break
            u = (b - math.sqrt(disc)) / (2 * a)
        else:
            u = c / b
        k = math.sqrt(u)
        if k > max_freq_per_a:
            break
        zeros.append(k)
        n += 1
    return np.asarray(zeros)


# ---------------------------------------------------------------------- particles
@dataclass(frozen=True)
class Molecule:
    """A particle's 3-D density as Gaussian pseudo-atoms (coordinates in A, centred at the origin)."""

    coords_a: np.ndarray  # (N, 3)
    weights: np.ndarray  # (N,) integrated projected phase of each atom, rad * px^2
    sigma_a: float
    kind: str

    @property
    def radius_a(self) -> float:
        """Largest distance of an atom centre from the origin."""
        return float(np.sqrt((self.coords_a**2).sum(axis=1)).max())


def _random_rotation_matrices(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` rotations drawn uniformly over SO(3), from normalised Gaussian quaternions."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def random_orientations(
    rng: np.random.Generator, n: int, orientation: str = "uniform", max_tilt_deg: float = 90.0
) -> np.ndarray:
    """``n`` rotation matrices (n, 3, 3).

    ``uniform``: uniform over SO(3). ``flat``: the molecule's x axis (a filament's long axis) lies
    within ``max_tilt_deg`` of the ice plane, as thin particles do in thin ice; spin about that
    axis and in-plane angle are uniform.
    """
    if orientation == "uniform":
        return _random_rotation_matrices(rng, n)
    spin = rng.uniform(0, 2 * np.pi, n)
    tilt = np.deg2rad(rng.uniform(-max_tilt_deg, max_tilt_deg, n))
    psi = rng.uniform(0, 2 * np.pi, n)
    zeros, ones = np.zeros(n), np.ones(n)
    c, s = np.cos(spin), np.sin(spin)
    rx = np.stack(
        [
            np.stack([ones, zeros, zeros], -1),
            np.stack([zeros, c, -s], -1),
            np.stack([zeros, s, c], -1),
        ],
        1,
    )
    c, s = np.cos(tilt), np.sin(tilt)
    ry = np.stack(
        [
            np.stack([c, zeros, s], -1),
            np.stack([zeros, ones, zeros], -1),
            np.stack([-s, zeros, c], -1),
        ],
        1,
    )
    c, s = np.cos(psi), np.sin(psi)
    rz = np.stack(
        [
            np.stack([c, -s, zeros], -1),
            np.stack([s, c, zeros], -1),
            np.stack([zeros, zeros, ones], -1),
        ],
        1,
    )
    return rz @ ry @ rx


def _uniform_in_ellipsoids(
    rng: np.random.Generator, n: int, axes: np.ndarray, rotation: np.ndarray
) -> np.ndarray:
    direction = rng.standard_normal((n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = rng.random(n) ** (1 / 3)
    return (direction * radius[:, None] * axes) @ rotation.T


def globular_molecule(
    rng: np.random.Generator, diameter_a: float, num_atoms: int, sigma_a: float, pixel_size_a: float
) -> Molecule:
    """A compact asymmetric complex: 3-6 ellipsoidal domains of pseudo-atoms around a core.

    The domains give the projections internal structure (lobes and grooves) that changes with
    orientation; the atom weights make the integrated phase match a protein of that size.
    """
    num_domains = int(rng.integers(3, 7))
    centres = rng.standard_normal((num_domains, 3))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres *= rng.uniform(0.15, 0.3, (num_domains, 1)) * diameter_a
    axes = rng.uniform(0.1, 0.2, (num_domains, 3)) * diameter_a
    volumes = axes.prod(axis=1)
    counts = np.maximum(1, np.round(num_atoms * volumes / volumes.sum()).astype(int))
    parts = [
        centres[i]
        + _uniform_in_ellipsoids(rng, counts[i], axes[i], _random_rotation_matrices(rng, 1)[0])
        for i in range(num_domains)
    ]
    coords = np.concatenate(parts)[:num_atoms]
    coords -= coords.mean(axis=0)
    # scale so that the molecule (atom centres plus one atom width) spans diameter_a
    extent = 2 * np.sqrt((coords**2).sum(axis=1)).max()
    coords *= max(diameter_a - 2 * sigma_a, 0.5 * diameter_a) / extent
    volume_a3 = 0.5 * np.pi / 6 * diameter_a**3
    return _with_weights(rng, coords, volume_a3, sigma_a, pixel_size_a, "globular")


def filament_molecule(
    rng: np.random.Generator,
    length_a: float,
    diameter_a: float,
    bend_deg: float,
    num_atoms: int,
    sigma_a: float,
    pixel_size_a: float,
) -> Molecule:
    """A bent filament segment along x: a helix of subunits (pseudo-atoms) around a thin core."""
    t = np.sort(rng.uniform(-0.5, 0.5, num_atoms)) * (length_a - 2 * sigma_a)
    bend = np.deg2rad(rng.uniform(0.3, 1.0) * bend_deg)
    helix_radius = max(0.5 * diameter_a - sigma_a, 0.25 * diameter_a)
    pitch_a = rng.uniform(0.6, 1.2) * diameter_a
    on_helix = rng.random(num_atoms) < 0.75
    angle = 2 * np.pi * t / pitch_a + np.where(rng.random(num_atoms) < 0.5, 0.0, np.pi)
    r = np.where(
        on_helix,
        helix_radius * rng.uniform(0.7, 1.0, num_atoms),
        rng.uniform(0, 0.3, num_atoms) * helix_radius,
    )
    local = np.stack([t, r * np.cos(angle), r * np.sin(angle)], axis=1)
    if bend > 1e-6:
        # wrap the straight segment onto an arc in the x-y plane of the molecule
        arc_radius = length_a / bend
        phi = local[:, 0] / arc_radius
        rr = arc_radius + local[:, 1]
        local = np.stack([rr * np.sin(phi), rr * np.cos(phi) - arc_radius, local[:, 2]], axis=1)
    local -= local.mean(axis=0)
    volume_a3 = np.pi * (diameter_a / 2) ** 2 * length_a * 0.6
    return _with_weights(rng, local, volume_a3, sigma_a, pixel_size_a, "filament")


def _with_weights(
    rng: np.random.Generator,
    coords: np.ndarray,
    volume_a3: float,
    sigma_a: float,
    pixel_size_a: float,
    kind: str,
) -> Molecule:
    weights = rng.uniform(0.6, 1.4, len(coords))
    total_phase = PROTEIN_PHASE_PER_A * volume_a3 / pixel_size_a**2  # rad * px^2
    weights *= total_phase / weights.sum()
    return Molecule(coords.astype(np.float64), weights.astype(np.float64), float(sigma_a), kind)


def splat_gaussians(
    xy_px: np.ndarray, weights: np.ndarray, sigma_px: float | np.ndarray, box: int
) -> np.ndarray:
    """Render sums of 2-D Gaussians into boxes, all at once.

    ``xy_px`` (P, A, 2) are atom centres relative to each box's central pixel; ``weights`` (A,) or
    (P, A) are each Gaussian's integral; ``sigma_px`` a scalar or (A,)/(P, A). Separable Gaussians
    make each box a matrix product: (b x A) @ (A x b). Returns (P, box, box) float32.
    """
    half = box // 2
    grid = np.arange(-half, half + 1, dtype=np.float32)
    sigma = np.broadcast_to(np.asarray(sigma_px, dtype=np.float32), xy_px.shape[:2])
    w = np.broadcast_to(np.asarray(weights, dtype=np.float32), xy_px.shape[:2]) / (
        2 * np.pi * sigma * sigma
    )
    dx = grid[None, None, :] - xy_px[..., 0:1].astype(np.float32)
    dy = grid[None, None, :] - xy_px[..., 1:2].astype(np.float32)
    inv = (-0.5 / (sigma * sigma))[..., None]
    gx = np.exp(dx * dx * inv)  # (P, A, b)
    gy = np.exp(dy * dy * inv) * w[..., None]
    return np.einsum("pay,pax->pyx", gy, gx, optimize=True).astype(np.float32)


def project_molecule(
    molecule: Molecule, rotations: np.ndarray, pixel_size_a: float
) -> tuple[np.ndarray, int]:
    """Projections of the molecule along z for each rotation: ((P, box, box) phase maps, box)."""
    sigma_px = max(molecule.sigma_a / pixel_size_a, 0.6)
    half = int(math.ceil(molecule.radius_a / pixel_size_a + 3 * sigma_px))
    box = 2 * half + 1
    out = np.empty((len(rotations), box, box), dtype=np.float32)
    # chunks bound the temporary (particles x atoms x box) arrays to a few tens of MB
    for start in range(0, len(rotations), 256):
        chunk = rotations[start : start + 256]
        rotated = np.einsum("pij,aj->pai", chunk, molecule.coords_a) / pixel_size_a
        out[start : start + len(chunk)] = splat_gaussians(
            rotated[..., :2], molecule.weights, sigma_px, box
        )
    return out, box


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """A smooth random field with zero mean and unit standard deviation, features ~``scale_px``.

    Gaussian bumps on a coarse lattice, evaluated separably: ``Gy @ C @ Gx.T``.
    """
    height, width = shape
    spacing = max(scale_px / 2, 2.0)
    ny = int(math.ceil(height / spacing)) + 3
    nx = int(math.ceil(width / spacing)) + 3
    coeffs = rng.standard_normal((ny, nx)).astype(np.float32)
    yc = (np.arange(ny) - 1.5) * spacing
    xc = (np.arange(nx) - 1.5) * spacing
    gy = np.exp(-0.5 * ((np.arange(height)[:, None] - yc[None, :]) / spacing) ** 2).astype(
        np.float32
    )
    gx = np.exp(-0.5 * ((np.arange(width)[:, None] - xc[None, :]) / spacing) ** 2).astype(
        np.float32
    )
    field = gy @ coeffs @ gx.T
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field
