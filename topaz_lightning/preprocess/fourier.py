"""Fourier-crop downsampling of micrographs and the matching scaling of particle coordinates."""

from __future__ import annotations

import math

import numpy as np

from topaz_lightning.geometry import check_downsample


def downsampled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """Output shape of ``downsample``: each side ``n`` becomes ``floor(n / factor + 0.5)`` (at least 1)."""
    # ConfigError (a ValueError) naming the factor's key when it is not a finite number >= 1
    factor = check_downsample(factor, "downsample")
    return tuple(max(1, math.floor(n / factor + 0.5)) for n in shape)  # type: ignore[return-value]


def _crop_axis0(spectrum: np.ndarray, m: int) -> np.ndarray:
    """Keep the m lowest frequencies along axis 0 of a full (two-sided) DFT axis.

    For an even output size the output's Nyquist bin ``m/2`` is the alias of both input bins
    ``+m/2`` and ``-m/2``, so it receives their sum: this is exactly what sampling the
    band-limited image on the coarser grid gives.
    """
    n = spectrum.shape[0]
    if m == n:
        return spectrum
    h = m // 2
    if m % 2:
        return np.concatenate([spectrum[: h + 1], spectrum[n - h :]], axis=0)
    nyquist = spectrum[h : h + 1] + spectrum[n - h : n - h + 1]
    return np.concatenate([spectrum[:h], nyquist, spectrum[n - h + 1 :]], axis=0)


def downsample(image: np.ndarray, factor: float) -> np.ndarray:
    """Downsample a 2-D image by a real ``factor >= 1`` by cropping its Fourier transform.

    Convention: an ``(H, W)`` image becomes ``(h, w) = downsampled_shape((H, W), factor)``
    (``round(n / factor)``, halves rounded up). All spatial frequencies the output grid can
    represent are kept with their amplitude (``|k| < h/2`` rows, ``|k| < w/2`` columns); for an
    even output side the Nyquist bin gets the sum of the input's ``+n/2`` and ``-n/2`` bins (its
    alias), everything above is discarded. The spectrum is scaled by ``(h*w)/(H*W)`` so the mean
    intensity, and the values of any image band-limited below the new Nyquist frequency, are
    preserved exactly. Output pixel ``(i, j)`` sits at input position ``(i*H/h, j*W/w)``: pixel
    (0, 0) stays at (0, 0) and the effective factor per axis is ``n/round(n/factor)``, so
    ``x / factor`` (``geometry.coordinates_to_model_frame``) is off by at most ``x/W * 0.5 <= 0.5`` output px.
    Factor 1 returns a float32 copy. The image is treated as periodic (as any FFT method does).
    """
    factor = check_downsample(factor, "downsample")
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"downsample expects a 2-D image, got shape {image.shape}")
    shape_out = downsampled_shape(image.shape, factor)
    if shape_out == image.shape:
        return np.array(image, dtype=np.float32)
    import scipy.fft

    (n_y, n_x), (m_y, m_x) = image.shape, shape_out
    # last axis is one-sided (rfft): keep bins 0..m_x//2. The 2-D transform is the rows' rfft,
    # then an FFT down each column; only the kept columns get the second step (each column's
    # FFT is independent, so this is rfft2's very result for them, at 1/factor of its cost)
    h = m_x // 2
    spectrum = scipy.fft.rfft(np.asarray(image, dtype=np.float64), axis=1)
    if m_x < n_x:
        spectrum = spectrum[:, : h + 1]
    spectrum = _crop_axis0(scipy.fft.fft(spectrum, axis=0), m_y)
    if m_x < n_x:
        spectrum = spectrum.copy()
        if m_x % 2 == 0:
            # fold the input's -h column onto the Nyquist column; for a real image its value at
            # row ky is conj(value at +h, row -ky)
            mirror = np.conj(np.roll(spectrum[::-1, h], 1))
            spectrum[:, h] += mirror
    spectrum *= (m_y * m_x) / (n_y * n_x)
    out = scipy.fft.irfft2(spectrum, s=(m_y, m_x))
    return out.astype(np.float32)
