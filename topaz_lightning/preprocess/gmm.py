"""The paper's micrograph normalization: a two-component Gaussian mixture with a scale per image, fit by EM."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from topaz_lightning.errors import InputError

log = logging.getLogger("topaz_lightning")

DEFAULT_SAMPLE_SIZE = 200_000
MIN_SAMPLES_PER_IMAGE = 1_000


@dataclass
class GMMFit:
    """Fitted parameters of the scaled two-component mixture (see ``fit_gmm``).

    ``pi`` is P(z = 1); component 0 has the lower mean (``mu[0] <= mu[1]``); ``alpha[k]`` is
    the scale of image ``k`` (named ``names[k]``), normalized to geometric mean 1.
    ``log_likelihood`` is the mean log-likelihood per sampled pixel at the returned parameters.
    """

    pi: float
    mu: np.ndarray
    sigma: np.ndarray
    alpha: np.ndarray
    names: list[str]
    log_likelihood: float = float("nan")
    n_iter: int = 0
    converged: bool = False
    history: list[float] = field(default_factory=list, repr=False)

    @property
    def dominant(self) -> int:
        """Index of the component with the larger mixing weight (the paper: 0 if pi < 0.5 else 1)."""
        return 0 if self.pi < 0.5 else 1

    @property
    def mu_prime(self) -> float:
        return float(self.mu[self.dominant])

    @property
    def sigma_prime(self) -> float:
        return float(self.sigma[self.dominant])

    def index_of(self, index: int | str) -> int:
        """Position of an image in ``alpha`` given its position or its name."""
        if isinstance(index, str):
            try:
                return self.names.index(index)
            except ValueError:
                raise KeyError(f"micrograph '{index}' was not part of the GMM fit") from None
        return int(index)

    def as_dict(self) -> dict:
        """Plain-Python summary (for logs and yaml)."""
        return {
            "pi": float(self.pi),
            "mu": [float(v) for v in self.mu],
            "sigma": [float(v) for v in self.sigma],
            "alpha": {n: float(a) for n, a in zip(self.names, self.alpha, strict=True)},
            "dominant": self.dominant,
            "log_likelihood": float(self.log_likelihood),
            "n_iter": self.n_iter,
            "converged": self.converged,
        }

    def to_record(self) -> dict:
        """THE serialized form (job records, normalization.json, the model card): plain values
        that strict JSON holds (a NaN log-likelihood becomes null) and that read back bit for bit
        through :meth:`from_record`."""
        ll = float(self.log_likelihood)
        return {
            "pi": float(self.pi),
            "mu": [float(v) for v in self.mu],
            "sigma": [float(v) for v in self.sigma],
            "names": [str(n) for n in self.names],
            "alpha": [float(v) for v in self.alpha],
            "log_likelihood": ll if math.isfinite(ll) else None,
            "n_iter": int(self.n_iter),
            "converged": bool(self.converged),
        }

    @classmethod
    def from_record(cls, data: object, source: str | None = None) -> GMMFit:
        """A fit from :meth:`to_record` (or the older :meth:`as_dict`, whose ``alpha`` maps names
        to scales) read from a file that may be untrusted: only plain finite numbers, 0 < pi < 1,
        two means, two positive deviations and positive scales pass; InputError names ``source``.
        """
        where = "normalize_fit"

        def fail(problem: str) -> InputError:
            return InputError(problem, path=source, where=where)

        def number(value: object, key: str) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise fail(f"{key} must be a number")
            if not math.isfinite(float(value)):
                raise fail(f"{key} is not finite")
            return float(value)

        if not isinstance(data, Mapping):
            raise fail("normalization fit is not a mapping")
        try:
            pi = number(data["pi"], "pi")
            mu = np.array([number(v, "mu") for v in data["mu"]], dtype=np.float64)
            sigma = np.array([number(v, "sigma") for v in data["sigma"]], dtype=np.float64)
        except (KeyError, TypeError) as err:
            raise fail(f"missing or malformed entry ({err})") from err
        if not 0 < pi < 1 or mu.shape != (2,) or sigma.shape != (2,) or not (sigma > 0).all():
            raise fail("expected 0 < pi < 1 and two means and two positive deviations")
        alphas = data.get("alpha") or {}
        if isinstance(alphas, Mapping):  # as_dict(): name -> scale
            names = [str(n) for n in alphas]
            values = list(alphas.values())
        elif isinstance(alphas, list | tuple):
            names = data.get("names")
            if not isinstance(names, list | tuple) or len(names) != len(alphas):
                names, values = [], []  # scales without their names: unusable for others
            else:
                names, values = [str(n) for n in names], list(alphas)
        else:
            raise fail("alpha must map micrograph names to scales")
        alpha = np.array([number(v, "alpha") for v in values], dtype=np.float64)
        if (alpha <= 0).any():
            raise fail("alpha must be positive")
        ll = data.get("log_likelihood")
        n_iter = data.get("n_iter", 0)
        return cls(
            pi=pi,
            mu=mu,
            sigma=sigma,
            alpha=alpha,
            names=names,
            log_likelihood=float("nan") if ll is None else number(ll, "log_likelihood"),
            n_iter=int(number(n_iter, "n_iter")),
            converged=bool(data.get("converged", False)),
        )


def check_not_constant(image: np.ndarray, name: str | None = None) -> None:
    """Raise InputError naming the micrograph if every pixel has the same value."""
    image = np.asarray(image)
    if image.size == 0 or float(np.ptp(image)) == 0.0:
        raise InputError("constant image (zero variance): it cannot be normalized", path=name)


def sample_pixels(image: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` pixel values drawn uniformly with replacement (all pixels, if ``n >= image.size``)."""
    flat = np.asarray(image).reshape(-1)
    if n >= flat.size:
        return flat.astype(np.float64)
    return flat[rng.integers(0, flat.size, size=n)].astype(np.float64)


def samples_per_image(num_images: int, sample_size: int) -> int:
    """Pixels sampled from each image: an equal share of ``sample_size``, at least 1000."""
    return max(MIN_SAMPLES_PER_IMAGE, math.ceil(sample_size / max(num_images, 1)))


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator used to sample image ``index`` (same in memory and in the CLI)."""
    return np.random.default_rng([int(seed), int(index)])


def fit_gmm(
    images: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-8,
) -> GMMFit:
    """Fit the scaled two-component Gaussian mixture over a pixel sample from all images.

    Each image contributes ``samples_per_image(K, sample_size)`` pixels drawn with
    ``image_rng(seed, k)``; see ``fit_gmm_samples`` for the model and the EM updates.
    A constant image raises ``InputError`` naming it.
    """
    if isinstance(images, Mapping):
        names = [str(n) for n in images]
        arrays = list(images.values())
    else:
        arrays = list(images)
        names = [str(i) for i in range(len(arrays))]
    if not arrays:
        raise ValueError("fit_gmm needs at least one image")
    n = samples_per_image(len(arrays), sample_size)
    samples = []
    for k, (name, image) in enumerate(zip(names, arrays, strict=True)):
        check_not_constant(image, name)
        samples.append(sample_pixels(image, n, image_rng(seed, k)))
    return fit_gmm_samples(samples, names=names, max_iter=max_iter, tol=tol)


def _log_normal(y: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return -0.5 * ((y - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def fit_gmm_samples(
    samples: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    max_iter: int = 300,
    tol: float = 1e-8,
) -> GMMFit:
    """Maximum-likelihood fit of the scaled mixture to per-image pixel samples by EM.

    Model (Bepler et al., supplementary methods): for pixel i of image k,
    ``z_ik ~ Bernoulli(pi)`` and ``x_ik | z ~ N(alpha_k mu_z, (alpha_k sigma_z)^2)``.
    Equivalently ``y = x / alpha_k`` follows the unscaled mixture, with Jacobian ``1/alpha_k``.

    E-step: ``r_ik = P(z_ik = 1 | x_ik)`` under the current parameters.

    M-step (coordinate-wise; each update maximizes the expected complete log-likelihood Q in
    its own parameters with the others fixed, so the likelihood never decreases):

    - ``pi = mean(r)``;
    - with ``y = x / alpha_k`` and weights ``w_1 = r``, ``w_0 = 1 - r``:
      ``mu_z = sum(w_z y) / sum(w_z)``, ``sigma_z^2 = sum(w_z (y - mu_z)^2) / sum(w_z)``;
    - ``alpha_k``: with ``beta = 1/alpha_k``, Q restricted to image k is
      ``n_k log(beta) - sum_i sum_z w_iz (beta x_i - mu_z)^2 / (2 sigma_z^2)``, concave in beta.
      Setting its derivative to zero gives ``A beta^2 - B beta - n_k = 0`` with
      ``A = sum_i sum_z w_iz x_i^2 / sigma_z^2`` and ``B = sum_i sum_z w_iz x_i mu_z / sigma_z^2``,
      whose one positive root is ``beta = (B + sqrt(B^2 + 4 A n_k)) / (2 A)``; ``alpha_k = 1/beta``.

    Identifiability: multiplying every alpha by c and mu, sigma by 1/c leaves the likelihood
    unchanged, so after every iteration alpha is rescaled to geometric mean 1 (mu, sigma
    compensate). Components are ordered so that ``mu_0 <= mu_1`` (pi is P(z = 1)).
    Initialization: ``alpha_k`` proportional to the image's sample standard deviation, means at
    the 25th/75th percentiles of ``y``, both sigmas half the pooled deviation, ``pi = 0.5``.
    Each sigma is floored at 1e-3 of the pooled deviation so that a component cannot collapse
    onto one repeated value (as saturated 8-bit pixels would invite). Stops when the mean
    log-likelihood per pixel changes by less than ``tol * (1 + |ll|)`` or after ``max_iter``.
    """
    samples = [np.asarray(s, dtype=np.float64).reshape(-1) for s in samples]
    if names is None:
        names = [str(i) for i in range(len(samples))]
    names = list(names)
    if len(names) != len(samples) or not samples:
        raise ValueError("fit_gmm_samples needs one name per non-empty list of samples")
    for name, s in zip(names, samples, strict=True):
        check_not_constant(s, name)
    x = np.concatenate(samples)
    image_of = np.concatenate([np.full(len(s), k) for k, s in enumerate(samples)])
    counts = np.array([len(s) for s in samples], dtype=np.float64)
    num_images = len(samples)

    stds = np.array([s.std() for s in samples])
    alpha = stds / math.exp(np.mean(np.log(stds)))
    y = x / alpha[image_of]
    pooled = float(y.std())
    floor = 1e-3 * pooled
    mu = np.quantile(y, [0.25, 0.75]).astype(np.float64)
    if mu[0] == mu[1]:
        mu = np.array([y.mean() - pooled / 2, y.mean() + pooled / 2])
    sigma = np.array([pooled / 2, pooled / 2])
    pi = 0.5

    history: list[float] = []
    converged = False
    ll = -np.inf
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported
        # E-step
        log_alpha = np.log(alpha)[image_of]
        y = x / alpha[image_of]
        lp0 = math.log(1 - pi) + _log_normal(y, mu[0], sigma[0])
        lp1 = math.log(pi) + _log_normal(y, mu[1], sigma[1])
        top = np.maximum(lp0, lp1)
        log_mix = top + np.log(np.exp(lp0 - top) + np.exp(lp1 - top))
        new_ll = float(np.mean(log_mix - log_alpha))
        r = np.exp(lp1 - log_mix)
        history.append(new_ll)
        if abs(new_ll - ll) < tol * (1 + abs(new_ll)):
            ll = new_ll
            converged = True
            break
        ll = new_ll
        # M-step: pi, then mu/sigma given alpha, then alpha given mu/sigma
        pi = float(np.clip(r.mean(), 1e-9, 1 - 1e-9))
        weights = (1 - r, r)
        for z in (0, 1):
            w = weights[z]
            total = w.sum()
            mu[z] = float((w * y).sum() / total)
            sigma[z] = max(math.sqrt(float((w * (y - mu[z]) ** 2).sum() / total)), floor)
        prec = (1 - r) / sigma[0] ** 2 + r / sigma[1] ** 2
        prec_mu = (1 - r) * mu[0] / sigma[0] ** 2 + r * mu[1] / sigma[1] ** 2
        a = np.bincount(image_of, weights=prec * x * x, minlength=num_images)
        b = np.bincount(image_of, weights=prec_mu * x, minlength=num_images)
        beta = (b + np.sqrt(b * b + 4 * a * counts)) / (2 * a)
        alpha = 1.0 / beta
        # fix the scale ambiguity: geometric mean of alpha = 1
        g = math.exp(float(np.mean(np.log(alpha))))
        alpha /= g
        mu *= g
        sigma *= g
        floor *= g

    if not converged:
        log.warning(
            "GMM normalization: EM did not converge in %d iterations (last change %.3g); "
            "using the last parameters",
            max_iter,
            history[-1] - history[-2] if len(history) > 1 else float("nan"),
        )
    if mu[0] > mu[1]:
        mu, sigma, pi = mu[::-1].copy(), sigma[::-1].copy(), 1 - pi
    return GMMFit(
        pi=float(pi),
        mu=mu,
        sigma=sigma,
        alpha=alpha,
        names=names,
        log_likelihood=ll,
        n_iter=n_iter,
        converged=converged,
        history=history,
    )


def normalize_gmm(image: np.ndarray, fit: GMMFit, index: int | str) -> np.ndarray:
    """Normalize one image with a fitted mixture: ``x' = (x / alpha_k - mu') / sigma'``.

    ``index`` is the image's position in the fit or its name; ``mu'``, ``sigma'`` belong to the
    dominant component (the larger mixing weight). Returns float32.
    """
    k = fit.index_of(index)
    alpha = float(fit.alpha[k])
    out = (np.asarray(image, dtype=np.float64) / alpha - fit.mu_prime) / fit.sigma_prime
    return out.astype(np.float32)
