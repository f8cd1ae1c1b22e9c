"""Contact sheet of a simulated micrograph: truth circles, lowpassed crop, Thon rings, particle gallery."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from topaz_lightning.simulate.physics import CTFParams, ctf_zero_frequencies


def power_spectrum(image: np.ndarray, tile: int = 256) -> np.ndarray:
    """Averaged periodogram of square tiles (Welch), centred (zero frequency at tile // 2)."""
    image = np.asarray(image, dtype=np.float64)
    tile = min(tile, *image.shape)
    height, width = image.shape
    window = np.hanning(tile)[:, None] * np.hanning(tile)[None, :]
    total = np.zeros((tile, tile))
    count = 0
    for y in range(0, height - tile + 1, tile // 2):
        for x in range(0, width - tile + 1, tile // 2):
            patch = image[y : y + tile, x : x + tile]
            patch = (patch - patch.mean()) * window
            total += np.abs(np.fft.fft2(patch)) ** 2
            count += 1
    return np.fft.fftshift(total / max(count, 1))


def radial_profile(spectrum: np.ndarray) -> np.ndarray:
    """Mean of a centred square spectrum over rings of integer radius (index = radius in bins)."""
    size = spectrum.shape[0]
    yy, xx = np.indices(spectrum.shape)
    radius = np.rint(np.hypot(yy - size // 2, xx - size // 2)).astype(int)
    sums = np.bincount(radius.ravel(), spectrum.ravel())
    counts = np.bincount(radius.ravel())
    return (sums / np.maximum(counts, 1))[: size // 2]


def _display(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    lo, hi = np.percentile(image, [1, 99])
    return image, float(lo), float(hi)


def write_contact_sheet(
    image: np.ndarray,
    particles_xy: np.ndarray,
    ctf: CTFParams,
    radius_px: float,
    path: str | os.PathLike,
    title: str = "",
    lowpass_sigma_px: float | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a PNG with four panels: the micrograph with truth circles, a lowpassed crop without
    circles (a Gaussian of 4 particle radii subtracted to flatten the ice gradient) (are the particles visible by eye?), the power spectrum with the Thon-ring zeros the
    CTF formula predicts, and a gallery of lowpassed particles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Ellipse

    from topaz_lightning.utils.atomic import atomic_output

    image = np.asarray(image, dtype=np.float32)
    sigma = lowpass_sigma_px if lowpass_sigma_px is not None else max(radius_px / 5, 1.0)
    # lowpass for the eye; the ice-thickness gradient is taken out so contrast goes to particles
    lowpassed = gaussian_filter(image, sigma) - gaussian_filter(image, 4 * radius_px)
    fig = plt.figure(figsize=(16, 9.6), dpi=55)
    grid = fig.add_gridspec(2, 4)

    ax = fig.add_subplot(grid[:, :2])
    shown, lo, hi = _display(lowpassed)
    ax.imshow(shown, cmap="gray", vmin=lo, vmax=hi)
    for x, y in particles_xy:
        ax.add_patch(Circle((x, y), radius_px, fill=False, color="#00c8ff", lw=1.2))
    ax.set_title(
        f"{title}: {len(particles_xy)} particles (truth), lowpass sigma {sigma:.1f} px, flattened"
    )
    ax.set_axis_off()

    crop = min(256, *image.shape)
    ax = fig.add_subplot(grid[0, 2])
    shown, lo, hi = _display(lowpassed[:crop, :crop])
    ax.imshow(shown, cmap="gray", vmin=lo, vmax=hi)
    ax.set_title(f"lowpassed {crop} x {crop} crop, no labels")
    ax.set_axis_off()

    ax = fig.add_subplot(grid[0, 3])
    spectrum = power_spectrum(image)
    size = spectrum.shape[0]
    log_spec = np.log(spectrum + 1e-12)
    log_spec[size // 2, size // 2] = np.median(log_spec)
    lo, hi = np.percentile(log_spec, [5, 99.5])
    ax.imshow(log_spec, cmap="gray", vmin=lo, vmax=hi)
    nyquist = 0.5 / ctf.pixel_size_a
    zeros_u = ctf_zero_frequencies(ctf.defocus_u_um, ctf, nyquist)
    zeros_v = ctf_zero_frequencies(ctf.defocus_v_um, ctf, nyquist)
    scale = ctf.pixel_size_a * size  # spatial frequency (1/A) -> spectrum pixels
    for ku, kv in zip(zeros_u, zeros_v, strict=False):
        ax.add_patch(
            Ellipse(
                (size // 2, size // 2),
                2 * ku * scale,
                2 * kv * scale,
                angle=math.degrees(ctf.astigmatism_angle_rad),
                fill=False,
                color="#ff3020",
                lw=1.0,
                ls="--",
            )
        )
    ax.set_title(f"power spectrum, predicted CTF zeros\ndefocus {ctf.defocus_um:.2f} um")
    ax.set_axis_off()

    ax = fig.add_subplot(grid[1, 2:])
    box = int(2 * math.ceil(radius_px * 1.6) + 1)
    half = box // 2
    keep = [
        (int(x), int(y))
        for x, y in particles_xy
        if half <= x < image.shape[1] - half and half <= y < image.shape[0] - half
    ][:24]
    cols = 8
    rows = max(1, math.ceil(len(keep) / cols))
    gallery = np.full((rows * (box + 2), cols * (box + 2)), np.nan, dtype=np.float32)
    for i, (x, y) in enumerate(keep):
        r, c = divmod(i, cols)
        gallery[r * (box + 2) : r * (box + 2) + box, c * (box + 2) : c * (box + 2) + box] = (
            lowpassed[y - half : y + half + 1, x - half : x + half + 1]
        )
    lo, hi = np.nanpercentile(gallery, [1, 99]) if keep else (0, 1)
    ax.imshow(gallery, cmap="gray", vmin=lo, vmax=hi)
    ax.set_title(f"particle gallery ({box} px boxes, lowpassed)")
    ax.set_axis_off()

    fig.tight_layout()
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    # a 256-colour palette keeps the picture small enough to live in the repository
    from PIL import Image

    buffer.seek(0)
    picture = Image.open(buffer).convert("RGB").quantize(colors=256)
    with atomic_output(path, overwrite=overwrite) as tmp:
        picture.save(tmp, format="PNG", optimize=True)
    return path


def dataset_contact_sheet(
    dataset_dir: str | os.PathLike, path: str | os.PathLike, index: int = 0, overwrite: bool = True
) -> Path:
    """Contact sheet of micrograph ``index`` of a simulated dataset (reads its files back)."""
    import pandas as pd

    from topaz_lightning.io.micrographs import read_micrograph
    from topaz_lightning.simulate.dataset import load_dataset_info

    dataset_dir = Path(dataset_dir)
    info = load_dataset_info(dataset_dir)
    names = sorted(info["micrographs"])
    name = names[index]
    meta = info["micrographs"][name]
    settings = info["settings"]
    image = read_micrograph(dataset_dir / info["micrograph_dir"] / f"{name}.mrc")
    truth = pd.read_csv(dataset_dir / info["truth"], sep="\t")
    xy = truth.loc[truth["image_name"] == name, ["x_coord", "y_coord"]].to_numpy(dtype=float)
    ctf = CTFParams(
        defocus_u_um=meta["defocus_u_um"],
        defocus_v_um=meta["defocus_v_um"],
        astigmatism_angle_rad=math.radians(meta["astigmatism_angle_deg"]),
        pixel_size_a=info["pixel_size_a"],
        voltage_kv=settings["voltage_kv"],
        cs_mm=settings["cs_mm"],
        amplitude_contrast=settings["amplitude_contrast"],
        b_factor_a2=settings["b_factor_a2"],
    )
    return write_contact_sheet(
        image, xy, ctf, info["particle_radius_px"], path, title=name, overwrite=overwrite
    )
