"""Fourier-crop downsampling transforms only the kept columns: the result is the full 2-D transform's."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from topaz_lightning.preprocess.fourier import downsample, downsampled_shape


def _full_transform_reference(image: np.ndarray, factor: float) -> np.ndarray:
    """Fourier crop from the full 2-D spectrum (np.fft), kept bins listed one by one."""
    n_y, n_x = image.shape
    m_y, m_x = downsampled_shape(image.shape, factor)
    spectrum = np.fft.fft2(image.astype(np.float64))
    out = np.zeros((m_y, m_x), dtype=complex)
    for ky in range(-(n_y // 2), (n_y + 1) // 2):
        for kx in range(-(n_x // 2), (n_x + 1) // 2):
            # an output bin k receives every input bin that aliases onto it, within |k| <= m/2
            if abs(ky) > m_y / 2 or abs(kx) > m_x / 2:
                continue
            out[ky % m_y, kx % m_x] += spectrum[ky % n_y, kx % n_x]
    return np.real(np.fft.ifft2(out * (m_y * m_x) / (n_y * n_x)))


@pytest.mark.parametrize("shape", [(40, 36), (37, 41), (32, 33)])
@pytest.mark.parametrize("factor", [2.0, 3.0, 1.5, 4.0])
def test_downsample_equals_the_full_transform_crop(shape, factor):
    image = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(
        downsample(image, factor), _full_transform_reference(image, factor), rtol=0, atol=2e-6
    )


def test_only_kept_columns_are_transformed_and_nothing_changes():
    image = np.random.default_rng(1).standard_normal((96, 130))
    m_y, m_x = downsampled_shape(image.shape, 4.0)
    # rfft2 followed by the crop, as written before the pruning: bit for bit the same
    spectrum = scipy.fft.rfft2(image)
    pruned_columns = scipy.fft.fft(scipy.fft.rfft(image, axis=1)[:, : m_x // 2 + 1], axis=0)
    assert np.array_equal(spectrum[:, : m_x // 2 + 1], pruned_columns)
    assert downsample(image, 4.0).shape == (m_y, m_x)
