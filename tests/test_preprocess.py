"""Tests for Fourier-crop downsampling, coordinate scaling, the scaled-GMM EM fit and normalization."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.geometry import coordinates_to_model_frame
from topaz_lightning.preprocess import (
    downsample,
    downsampled_shape,
    fit_gmm,
    fit_gmm_samples,
    normalize_gmm,
    preprocess_images,
    standardize,
)


def _band_limited_reference(image: np.ndarray, shape_out: tuple[int, int]) -> np.ndarray:
    """Evaluate the image's trigonometric interpolant, limited to |k| <= m/2, on the coarse grid."""
    spectrum = np.fft.fft2(image.astype(np.float64))
    mats, keeps = [], []
    for n, m in zip(image.shape, shape_out, strict=True):
        k = np.fft.fftfreq(n, d=1.0 / n)  # signed integer frequencies
        keep = np.abs(k) <= m / 2 if m < n else np.ones(n, bool)
        positions = np.arange(m) * n / m  # output pixel j sits at input position j * n / m
        mats.append(np.exp(2j * np.pi * np.outer(positions, k[keep]) / n))
        keeps.append(keep)
    out = mats[0] @ spectrum[np.ix_(*keeps)] @ mats[1].T / image.size
    return out.real


def _signal(y: np.ndarray, x: np.ndarray, h: int, w: int) -> np.ndarray:
    return (
        3.0
        + np.cos(2 * np.pi * 4 * y / h)
        + 0.5 * np.sin(2 * np.pi * (3 * x / w + 2 * y / h))
        + 0.25 * np.cos(2 * np.pi * (5 * x / w - 1 * y / h) + 0.3)
    )


@pytest.mark.parametrize("factor", [2, 3, 2.5, 1.7, 4.0])
def test_downsample_band_limited_matches_analytic(factor):
    h, w = 60, 90
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    image = _signal(yy, xx, h, w)
    out = downsample(image, factor)
    m_y, m_x = downsampled_shape((h, w), factor)
    assert (
        out.shape
        == (m_y, m_x)
        == (int(np.floor(h / factor + 0.5)), int(np.floor(w / factor + 0.5)))
    )
    assert out.dtype == np.float32
    y, x = np.mgrid[0:m_y, 0:m_x].astype(float)
    expected = _signal(y * h / m_y, x * w / m_x, h, w)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out.mean() == pytest.approx(image.mean(), abs=1e-5)


@pytest.mark.parametrize(
    "shape,factor", [((64, 48), 2), ((63, 50), 3.3), ((41, 77), 2.0), ((30, 30), 1.5)]
)
def test_downsample_matches_slow_reference_on_noise(shape, factor):
    rng = np.random.default_rng(1)
    image = rng.standard_normal(shape) + 5
    out = downsample(image, factor)
    expected = _band_limited_reference(image, downsampled_shape(shape, factor))
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert out.mean() == pytest.approx(image.mean(), abs=1e-5)


def test_downsample_nyquist_is_sampled_exactly():
    yy, xx = np.mgrid[0:40, 0:88].astype(float)
    image = np.cos(np.pi * (xx + yy) / 2)  # exactly the output Nyquist frequency for factor 2
    out = downsample(image, 2)
    i, j = np.mgrid[0:20, 0:44]
    np.testing.assert_allclose(out, (-1.0) ** (i + j), atol=1e-6)
    assert np.abs(downsample(np.sin(np.pi * xx / 2), 2)).max() < 1e-6


def test_downsample_factor_one_is_identity_copy():
    image = np.random.default_rng(0).standard_normal((17, 23)).astype(np.float32)
    out = downsample(image, 1)
    np.testing.assert_array_equal(out, image)
    assert out is not image


@pytest.mark.parametrize("bad", [0.5, 0, -2, float("nan"), float("inf")])
def test_downsample_rejects_bad_factor(bad):
    with pytest.raises(ValueError):
        downsample(np.ones((8, 8)), bad)


@pytest.mark.parametrize("factor", [2, 4, 3.0, 2.5])
def test_bright_dot_lands_at_scaled_coordinates(factor):
    h, w = 200, 240
    x0, y0 = 131.0, 77.0
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    sigma = 3.0 * factor  # wide enough to survive the crop
    image = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    out = downsample(image, factor)
    yi, xi = np.unravel_index(np.argmax(out), out.shape)
    # sub-pixel peak by centroid of the 5x5 neighbourhood
    win = out[yi - 2 : yi + 3, xi - 2 : xi + 3].astype(float)
    wy, wx = np.mgrid[-2:3, -2:3]
    cy = yi + (win * wy).sum() / win.sum()
    cx = xi + (win * wx).sum() / win.sum()
    scaled = coordinates_to_model_frame(
        pd.DataFrame({"micrograph": ["a"], "x": [x0], "y": [y0]}), factor
    )
    assert abs(cx - scaled.x.iloc[0]) < 0.5
    assert abs(cy - scaled.y.iloc[0]) < 0.5


def _synthetic_mixture(alpha, pi, mu, sigma, shape=(200, 200), seed=0):
    rng = np.random.default_rng(seed)
    images = {}
    for k, a in enumerate(alpha):
        z = rng.random(shape) < pi
        values = np.where(
            z,
            mu[1] + sigma[1] * rng.standard_normal(shape),
            mu[0] + sigma[0] * rng.standard_normal(shape),
        )
        images[f"mic{k}"] = (a * values).astype(np.float32)
    return images


@pytest.mark.parametrize(
    "pi,mu,sigma",
    [
        (0.3, (2.0, 5.0), (1.0, 0.5)),
        (0.85, (-3.0, 4.0), (2.0, 1.5)),
        (0.5, (10.0, 14.0), (1.0, 2.0)),
    ],
)
def test_em_recovers_known_parameters_within_2_percent(pi, mu, sigma):
    alpha = np.array([0.8, 1.0, 1.25, 1.1, 0.9])
    images = _synthetic_mixture(alpha, pi, mu, sigma)
    fit = fit_gmm(images, sample_size=200_000, seed=3)
    assert fit.converged
    # identifiability: the fit fixes geometric-mean(alpha) = 1, so compare with rescaled truth
    g = np.exp(np.log(alpha).mean())
    np.testing.assert_allclose(fit.alpha, alpha / g, rtol=0.02)
    np.testing.assert_allclose(fit.mu, np.array(mu) * g, rtol=0.02)
    np.testing.assert_allclose(fit.sigma, np.array(sigma) * g, rtol=0.02)
    assert fit.pi == pytest.approx(pi, rel=0.02)
    assert np.exp(np.mean(np.log(fit.alpha))) == pytest.approx(1.0, abs=1e-9)
    assert fit.names == list(images)


def test_em_log_likelihood_never_decreases_and_beats_alternatives():
    images = _synthetic_mixture([0.7, 1.4], 0.2, (1.0, 3.0), (0.5, 0.4), shape=(100, 100), seed=5)
    fit = fit_gmm(images, sample_size=20_000)
    history = np.array(fit.history)
    assert (np.diff(history) >= -1e-10).all()
    # the fitted alpha is a stationary point: perturbing one image's scale lowers the likelihood
    samples = [v.reshape(-1).astype(float) for v in images.values()]
    from scipy.stats import norm

    def loglik(alpha):
        total = 0.0
        for s, a in zip(samples, alpha, strict=True):
            y = s / a
            p = (1 - fit.pi) * norm.pdf(y, fit.mu[0], fit.sigma[0]) + fit.pi * norm.pdf(
                y, fit.mu[1], fit.sigma[1]
            )
            total += np.sum(np.log(p / a))
        return total

    best = loglik(fit.alpha)
    for delta in (0.98, 1.02):
        assert loglik(fit.alpha * np.array([delta, 1.0])) < best


def test_alpha_update_is_the_closed_form_root():
    """One M-step for alpha against a brute-force 1-D maximization of the expected log-likelihood."""
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 1.0, 500) * 1.7
    r = rng.random(500)
    mu, sigma = np.array([2.0, 4.0]), np.array([0.8, 1.3])

    def neg_q(alpha):
        y = x / alpha
        return -np.sum(
            (1 - r) * (-np.log(alpha * sigma[0]) - 0.5 * ((y - mu[0]) / sigma[0]) ** 2)
            + r * (-np.log(alpha * sigma[1]) - 0.5 * ((y - mu[1]) / sigma[1]) ** 2)
        )

    brute = minimize_scalar(neg_q, bounds=(0.1, 10), method="bounded", options={"xatol": 1e-10}).x
    prec = (1 - r) / sigma[0] ** 2 + r / sigma[1] ** 2
    a = np.sum(prec * x * x)
    b = np.sum(((1 - r) * mu[0] / sigma[0] ** 2 + r * mu[1] / sigma[1] ** 2) * x)
    beta = (b + np.sqrt(b * b + 4 * a * len(x))) / (2 * a)
    assert 1 / beta == pytest.approx(brute, rel=1e-6)


def test_normalize_gmm_uses_dominant_component():
    images = _synthetic_mixture([0.5, 2.0], 0.8, (1.0, 6.0), (0.5, 1.0), shape=(150, 150), seed=7)
    fit = fit_gmm(images, sample_size=40_000)
    assert fit.dominant == 1
    for k, (name, image) in enumerate(images.items()):
        out = normalize_gmm(image, fit, name)
        np.testing.assert_allclose(out, normalize_gmm(image, fit, k))
        expected = (image.astype(float) / fit.alpha[k] - fit.mu[1]) / fit.sigma[1]
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        # the dominant component's pixels become roughly standard normal
        dominant = out[np.abs(out) < 3]
        assert abs(dominant.mean()) < 0.1
        assert abs(dominant.std() - 1) < 0.15


def test_constant_image_names_the_micrograph():
    images = {
        "good": np.random.default_rng(0).standard_normal((20, 20)),
        "flat_one": np.full((20, 20), 7.0),
    }
    with pytest.raises(InputError, match="flat_one.*constant"):
        fit_gmm(images)
    with pytest.raises(InputError, match="flat_one.*constant"):
        preprocess_images(images, normalize="standardize")
    with pytest.raises(InputError, match="flat_one"):
        fit_gmm_samples([np.arange(5.0), np.ones(5)], names=["ok", "flat_one"])


def test_standardize():
    image = np.random.default_rng(0).normal(10, 3, (40, 30))
    out = standardize(image)
    assert out.dtype == np.float32
    assert out.mean() == pytest.approx(0, abs=1e-5)
    assert out.std() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(out, (image - image.mean()) / image.std(), atol=1e-5)


def test_preprocess_images_modes_and_settings():
    images = _synthetic_mixture([1.0, 1.5], 0.3, (2.0, 5.0), (1.0, 0.5), shape=(64, 80), seed=1)
    none = preprocess_images(images, downsample=2, normalize="none")
    assert {k: v.shape for k, v in none.items()} == {"mic0": (32, 40), "mic1": (32, 40)}
    np.testing.assert_allclose(none["mic0"], downsample(images["mic0"], 2))
    gmm = preprocess_images(images, downsample=2, normalize="gmm", seed=0)
    again = preprocess_images(images, downsample=2, normalize="gmm", seed=0)
    for k in images:
        np.testing.assert_array_equal(gmm[k], again[k])
        assert gmm[k].dtype == np.float32 and np.isfinite(gmm[k]).all()
    with pytest.raises(ConfigError, match="normalize"):
        preprocess_images(images, normalize="zscore")
    with pytest.raises(ConfigError, match="downsample"):
        preprocess_images(images, downsample=0.5)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    factor=st.floats(1.0, 6.0, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_downsample_shape_and_mean_property(h, w, factor, seed):
    image = np.random.default_rng(seed).normal(3.0, 2.0, (h, w))
    out = downsample(image, factor)
    assert out.shape == downsampled_shape((h, w), factor)
    assert out.shape == tuple(max(1, int(np.floor(n / factor + 0.5))) for n in (h, w))
    assert np.isfinite(out).all()
    assert out.mean() == pytest.approx(image.mean(), abs=1e-4)


def test_gmm_normalization_of_real_jpegs(empiar10017_dir):
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph

    sources = list(list_micrographs(empiar10017_dir / "images").items())[:2]
    images = {name: read_micrograph(path) for name, path in sources}
    small = {name: downsample(image, 8) for name, image in images.items()}
    fit = fit_gmm(small, sample_size=50_000)
    assert fit.converged
    assert 0.5 < fit.alpha.min() <= fit.alpha.max() < 2.0
    out = preprocess_images(images, downsample=8, normalize="gmm", sample_size=50_000)
    for image in out.values():
        assert image.shape == (512, 512) and np.isfinite(image).all()
        # the dominant (background) component is centred near 0 with unit spread
        assert abs(np.median(image)) < 0.5
        assert 0.5 < np.subtract(*np.percentile(image, [75, 25])) / 1.349 < 2.0


def test_em_reports_non_convergence(caplog):
    images = _synthetic_mixture([1.0, 1.2], 0.3, (2.0, 5.0), (1.0, 0.5), shape=(50, 50), seed=2)
    with caplog.at_level("WARNING", logger="topaz_lightning"):
        fit = fit_gmm(images, max_iter=2)
    assert not fit.converged and fit.n_iter == 2
    assert "did not converge" in caplog.text
