"""Automatic class prior: estimate pi from the labeled particles and the unlabeled regions (PU mixture proportion).

Under the usual PU assumption (the labeled particles are a random sample of all particles), the
unlabeled regions are a mixture ``U = pi_u * P + (1 - pi_u) * N`` of the positive distribution
``P`` (which the labeled regions sample) and the negatives ``N``. A classifier trained to tell
labeled from unlabeled regions ranks positives high; if its top-scoring regions are (nearly)
pure positives, the fractions above a threshold ``t`` satisfy ``q_u(t) = pi_u q_p(t) +
(1 - pi_u) q_n(t) >= pi_u q_p(t)``, with equality where ``q_n(t) = 0``. Two estimators:

- **Best bin (BBE)**, Garg, Wu, Smola, Balakrishnan and Lipton, "Mixture proportion estimation
  and PU learning: a modern approach", NeurIPS 2021: ``t* = argmin_t q_u(t)/q_p(t) +
  (1 + gamma)/q_p(t) * (sqrt(log(4/delta)/(2 n_p)) + sqrt(log(4/delta)/(2 n_u)))`` and
  ``pi_u = q_u(t*)/q_p(t*)``, on labeled positives the classifier did not train on.
- **Elkan-Noto** (KDD 2008, estimator e1): ``c = E[g(x) | x labeled positive]`` for the
  classifier's probability ``g`` of "labeled"; with labeled draws a fraction ``lam`` of the
  classifier's minibatches, ``pi_u = lam (1 - c) / ((1 - lam) c)``. It trusts ``g``'s
  calibration, which a briefly trained CNN does not have; BBE needs only its ranking.

:func:`estimate_pi` cross-fits: the labeled particles are split into ``folds`` parts; for each
part a PN classifier (labeled vs unlabeled, the paper's PN objective) is trained on the other
parts, the training micrographs are scored densely, the held-out part's regions are the
positive sample and every region outside the training part's disks is the unlabeled sample.
The unlabeled prior of that fit is converted to the dataset prior ``pi`` (fraction of all
regions that are positive, see :mod:`topaz_lightning.data.prior`); the folds' values are
averaged. Pixels inside one particle's disk are strongly correlated, so the sample sizes in the
BBE bound count particles (``n_p``) and disk-sized areas (``n_u``), not pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from topaz_lightning.data.prior import dataset_prior, unlabeled_prior

log = logging.getLogger("topaz_lightning")


@dataclass(frozen=True)
class PiEstimate:
    """Result of :func:`estimate_pi`: the dataset prior and its pieces.

    ``pi``: fraction of all training regions that are positive (what ``data.pi`` means);
    ``pi_unlabeled``: fraction of positives among the regions outside the labeled disks (all
    labels); ``fold_pi``: the per-fold estimates of ``pi``; ``method``: ``bbe`` or
    ``elkan_noto``; ``other``: the other estimator's ``pi`` on the same fits (for comparison).
    """

    pi: float
    pi_unlabeled: float
    method: str
    fold_pi: list[float] = field(default_factory=list)
    other: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    folds: int = 0
    seconds: float | None = None

    @property
    def spread(self) -> float:
        """Range of the cross-fits' estimates (max - min of ``fold_pi``; 0 with one fit)."""
        return float(max(self.fold_pi) - min(self.fold_pi)) if self.fold_pi else 0.0

    def text(self) -> str:
        """The log line's summary: estimate, method, each fit's value and their spread."""
        fits = ", ".join(f"{v:.4g}" for v in self.fold_pi)
        relative = f" = {self.spread / self.pi:.0%} of the estimate" if self.pi > 0 else ""
        return (
            f"pi={self.pi:.5g} ({self.method}, mean of {self.folds} cross-fitted fits of "
            f"{self.steps} steps: {fits}; spread {self.spread:.2g}{relative})"
        )

    def metrics(self) -> dict[str, float]:
        """metrics.json entries ``pi_auto/...``: estimate, each fit, spread, steps, seconds."""
        out = {"pi_auto/pi": float(self.pi), "pi_auto/pi_unlabeled": float(self.pi_unlabeled)}
        out |= {f"pi_auto/fit{k}_pi": float(v) for k, v in enumerate(self.fold_pi)}
        out["pi_auto/spread"] = self.spread
        out |= {f"pi_auto/{name}_pi": float(v) for name, v in self.other.items()}
        out["pi_auto/steps"] = float(self.steps)
        if self.seconds is not None:
            out["pi_auto/seconds"] = float(self.seconds)
        return out


# ---------------------------------------------------------------------------------------------
# the estimators (pure functions of scores)


def bbe_mixture_proportion(
    positive_scores: np.ndarray,
    unlabeled_scores: np.ndarray,
    n_positive: float | None = None,
    n_unlabeled: float | None = None,
    delta: float = 0.1,
    gamma: float = 0.01,
) -> float:
    """Best-bin estimate of the positive fraction among unlabeled scores (Garg et al. 2021).

    ``positive_scores``: scores of positives the classifier did not train on;
    ``unlabeled_scores``: scores of unlabeled samples. ``n_positive`` / ``n_unlabeled``: the
    effective sample sizes in the confidence term (default: the array lengths). Returns a value
    in ``[0, 1]``: ``min`` over thresholds of the penalized ratio, reported without the penalty.
    """
    p = np.sort(np.asarray(positive_scores, dtype=np.float64).ravel())
    u = np.sort(np.asarray(unlabeled_scores, dtype=np.float64).ravel())
    if p.size == 0 or u.size == 0:
        raise ValueError("need at least one positive and one unlabeled score")
    if not (0 < delta < 1) or gamma < 0:
        raise ValueError(f"need 0 < delta < 1 and gamma >= 0, got {delta}, {gamma}")
    n_p = float(n_positive if n_positive is not None else p.size)
    n_u = float(n_unlabeled if n_unlabeled is not None else u.size)
    # candidate thresholds: every positive score (the ratio only changes where q_p does)
    thresholds = np.unique(p)
    q_p = 1.0 - np.searchsorted(p, thresholds, side="left") / p.size
    q_u = 1.0 - np.searchsorted(u, thresholds, side="left") / u.size
    slack = math.sqrt(math.log(4 / delta) / (2 * n_p)) + math.sqrt(math.log(4 / delta) / (2 * n_u))
    objective = q_u / q_p + (1 + gamma) * slack / q_p
    best = int(np.argmin(objective))
    return float(min(1.0, q_u[best] / q_p[best]))


def elkan_noto_mixture_proportion(
    positive_probabilities: np.ndarray, labeled_share: float
) -> float:
    """Elkan-Noto e1: ``c = mean g`` over held-out positives -> positive fraction among unlabeled.

    ``positive_probabilities``: the classifier's P(labeled | x) on positives it did not train on;
    ``labeled_share``: the fraction of labeled samples in the data it was trained on (16/256 for
    the paper's minibatches). Returns ``lam (1 - c) / ((1 - lam) c)`` clipped to ``[0, 1]``.
    """
    lam = float(labeled_share)
    if not 0 < lam < 1:
        raise ValueError(f"labeled_share must be in (0, 1), got {labeled_share}")
    c = float(np.mean(np.asarray(positive_probabilities, dtype=np.float64)))
    if not c > 0:
        return 1.0
    return float(np.clip(lam * (1 - c) / ((1 - lam) * c), 0.0, 1.0))


# ---------------------------------------------------------------------------------------------
# the cross-fitted procedure on micrographs


def _masks(
    shapes: Mapping[str, tuple[int, int]], coordinates: pd.DataFrame, radius: float
) -> dict[str, np.ndarray]:
    from topaz_lightning.data.labels import positive_masks

    return positive_masks(shapes, coordinates, radius)


def _fit_pn(
    net: torch.nn.Module,
    images: list[np.ndarray],
    masks: list[np.ndarray],
    steps: int,
    seed: int,
    batch_positive: int,
    batch_unlabeled: int,
    lr: float,
    device: str,
) -> None:
    """Labeled-vs-unlabeled classifier: the PN objective on the PU sampler's minibatches."""
    from topaz_lightning.data.sampler import PUPatchSampler

    sampler = PUPatchSampler(
        images,
        masks,
        patch_size=int(net.receptive_field),
        n_positive=batch_positive,
        n_unlabeled=batch_unlabeled,
        rotate=True,
        mirror=True,
        seed=seed,
        rank=0,
        device=device,
    )
    net.to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for step in range(steps):
        patches, labels = sampler.batch(step)
        loss = loss_fn(net(patches.to(device)), labels.to(device).float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def _score(
    net: torch.nn.Module, images: Mapping[str, np.ndarray], device: str
) -> dict[str, np.ndarray]:
    net.eval()
    out = {}
    for name, image in images.items():
        x = torch.as_tensor(np.asarray(image, dtype=np.float32), device=device)[None, None]
        out[name] = net.score_map(x, tile_size=1024)[0].float().cpu().numpy()
    return out


def estimate_pi(
    micrographs: Mapping[str, np.ndarray],
    labeled: pd.DataFrame,
    label_radius_px_model: float,
    make_net: Callable[[], torch.nn.Module],
    steps: int = 500,
    folds: int = 2,
    seed: int = 0,
    batch_positive: int = 16,
    batch_unlabeled: int = 240,
    lr: float = 2e-4,
    method: str = "bbe",
    max_unlabeled: int = 400_000,
    nms_radius_px_model: float | None = None,
    device: str = "cpu",
) -> PiEstimate:
    """Estimate the dataset prior ``pi`` of preprocessed training micrographs (model frame).

    ``labeled``: the labeled particles (micrograph, x, y in model-frame pixels, as the images);
    ``label_radius_px_model``: a region is positive within this radius of a particle (as in training);
    ``make_net``: builds a fresh classifier (e.g. ``lambda: instantiate(cfg.model)``). Each of
    the ``folds`` fits trains ``steps`` minibatches. ``method``: ``bbe`` (default) or
    ``elkan_noto``; the other one is reported in ``other``. Needs ``folds >= 2`` labeled particles.
    ``nms_radius_px_model`` (the picking NMS radius): BBE counts particles instead of pixels (see
    :func:`_particle_level_bbe`); without it BBE compares pixel scores, which overestimates
    because pixels just outside a particle's disk score like positives but count as negatives.
    """
    if method not in ("bbe", "elkan_noto"):
        raise ValueError(f"method must be bbe or elkan_noto, got {method!r}")
    if folds < 2:
        raise ValueError(f"folds must be >= 2 (positives must be held out), got {folds}")
    labeled = labeled.reset_index(drop=True)
    if len(labeled) < folds:
        raise ValueError(f"need at least {folds} labeled particles, got {len(labeled)}")
    names = list(micrographs)
    shapes = {n: micrographs[n].shape for n in names}
    num_regions = int(sum(int(np.prod(s)) for s in shapes.values()))
    all_masks = _masks(shapes, labeled, label_radius_px_model)
    num_labeled_regions = int(sum(int(m.sum()) for m in all_masks.values()))
    from topaz_lightning.geometry import disk_area

    disk = disk_area(label_radius_px_model)
    rng = np.random.default_rng(seed)
    part = rng.permutation(len(labeled)) % folds
    lam = batch_positive / (batch_positive + batch_unlabeled)
    estimates: dict[str, list[float]] = {"bbe": [], "elkan_noto": []}
    for k in range(folds):
        train_part = labeled[part != k]
        held_part = labeled[part == k]
        train_masks = _masks(shapes, train_part, label_radius_px_model)
        held_masks = _masks(shapes, held_part, label_radius_px_model)
        torch.manual_seed(seed * 1000 + k)
        net = make_net()
        _fit_pn(
            net,
            [micrographs[n] for n in names],
            [train_masks[n] for n in names],
            steps,
            seed * 1000 + k,
            batch_positive,
            batch_unlabeled,
            lr,
            device,
        )
        scores = _score(net, micrographs, device)
        n_train_regions = int(sum(int(m.sum()) for m in train_masks.values()))
        positive = np.concatenate([scores[n][held_masks[n] & ~train_masks[n]] for n in names])
        if positive.size == 0:
            raise ValueError("the held-out labeled particles cover no region outside the others")
        if nms_radius_px_model is not None:
            pi_bbe = _particle_level_bbe(
                scores,
                held_part,
                train_masks,
                label_radius_px_model,
                float(nms_radius_px_model),
                n_train_regions,
                num_regions,
                disk,
            )
        else:
            unlabeled = np.concatenate([scores[n][~train_masks[n]] for n in names])
            if unlabeled.size > max_unlabeled:
                unlabeled = rng.choice(unlabeled, size=max_unlabeled, replace=False)
            pi_bbe = dataset_prior(
                bbe_mixture_proportion(positive, unlabeled), n_train_regions, num_regions
            )
        probabilities = 1.0 / (1.0 + np.exp(-np.clip(positive, -60, 60)))
        pi_en = dataset_prior(
            elkan_noto_mixture_proportion(probabilities, lam), n_train_regions, num_regions
        )
        estimates["bbe"].append(pi_bbe)
        estimates["elkan_noto"].append(pi_en)
        log.info(
            "pi estimate fold %d/%d (%d held-out particles): BBE pi=%.4g, Elkan-Noto pi=%.4g",
            k + 1,
            folds,
            len(held_part),
            estimates["bbe"][-1],
            estimates["elkan_noto"][-1],
        )
    pi = float(np.mean(estimates[method]))
    other = "elkan_noto" if method == "bbe" else "bbe"
    # an estimate of exactly 0 or 1 (BBE clips at 1) is reported as is, not raised here: the
    # training run's prior check rejects it with the config key
    pi_unlabeled = unlabeled_prior(pi, num_labeled_regions, num_regions) if 0 < pi < 1 else pi
    return PiEstimate(
        pi=pi,
        pi_unlabeled=float(pi_unlabeled),
        method=method,
        fold_pi=[float(v) for v in estimates[method]],
        other={other: float(np.mean(estimates[other]))},
        steps=int(steps),
        folds=int(folds),
    )


def _particle_level_bbe(
    scores: Mapping[str, np.ndarray],
    held_out: pd.DataFrame,
    train_masks: Mapping[str, np.ndarray],
    label_radius_px_model: float,
    nms_radius_px_model: float,
    n_train_regions: int,
    num_regions: int,
    disk: int,
) -> float:
    """BBE over particles: one score per held-out particle, one per unlabeled NMS pick.

    A held-out particle's score is the highest score within the label radius of its centre
    (where its NMS peak lies). The unlabeled sample is every NMS pick (``nms_radius_px_model`` apart)
    outside the training labels' disks. The estimated fraction ``alpha`` of those picks that
    are particles gives the unlabeled particles ``alpha * picks``; each adds a disk of
    positive regions to the labeled ones: ``pi = (N_lab + alpha * picks * disk) / N``.
    """
    from topaz_lightning.geometry import disk_offsets
    from topaz_lightning.picking import non_maximum_suppression

    offsets = disk_offsets(label_radius_px_model)
    positive = []
    for row in held_out.itertuples(index=False):
        score_map = scores[row.micrograph]
        height, width = score_map.shape
        ys = np.clip(int(round(row.y)) + offsets[:, 0], 0, height - 1)
        xs = np.clip(int(round(row.x)) + offsets[:, 1], 0, width - 1)
        positive.append(float(score_map[ys, xs].max()))
    unlabeled = []
    for name, score_map in scores.items():
        xy, values = non_maximum_suppression(score_map, nms_radius_px_model)
        if len(values) == 0:
            continue
        cols = np.clip(np.round(xy[:, 0]).astype(int), 0, score_map.shape[1] - 1)
        rows = np.clip(np.round(xy[:, 1]).astype(int), 0, score_map.shape[0] - 1)
        keep = ~train_masks[name][rows, cols]
        unlabeled.append(np.asarray(values)[keep])
    unlabeled_scores = np.concatenate(unlabeled) if unlabeled else np.zeros(0)
    if unlabeled_scores.size == 0:
        return n_train_regions / num_regions
    alpha = bbe_mixture_proportion(np.array(positive), unlabeled_scores)
    return float(min(1.0, (n_train_regions + alpha * unlabeled_scores.size * disk) / num_regions))


def estimate_pi_for_datamodule(
    datamodule, make_net: Callable[[], torch.nn.Module], **kwargs
) -> PiEstimate:
    """:func:`estimate_pi` on a set-up PUDataModule's training micrographs and labeled particles
    (model frame; the label and NMS radii of its resolved run geometry)."""
    datamodule.setup("fit")
    geometry = datamodule.geometry
    if geometry.nms_radius_px_model is not None:
        kwargs.setdefault("nms_radius_px_model", geometry.nms_radius_px_model)
    return estimate_pi(
        datamodule.train_micrographs,
        datamodule.train_coordinates,
        geometry.label_radius_px_model,
        make_net,
        **kwargs,
    )


#: cost of ``data.pi=auto``: cross-fitted PN fits, and minibatches per fit when the config has
#: no ``data.pi_auto_steps`` (configs/data/_base.yaml sets the same 500)
AUTO_FOLDS = 2
AUTO_STEPS = 500
#: placeholder prior while the estimation's DataModule is set up (it is not used)
_PLACEHOLDER_PI = 0.5


def auto_steps(cfg) -> int:
    """``data.pi_auto_steps`` (minibatches per fit; ``AUTO_STEPS`` when absent or null)."""
    from omegaconf import OmegaConf

    from topaz_lightning.errors import ConfigError

    value = OmegaConf.select(cfg, "data.pi_auto_steps", default=None)
    if value is None:
        return AUTO_STEPS
    whole = isinstance(value, int | float) and not isinstance(value, bool) and value == int(value)
    if not whole or int(value) < 1:
        raise ConfigError("data.pi_auto_steps", f"must be a whole number >= 1, got {value!r}")
    return int(value)


def estimate_auto_pi(cfg, steps: int | None = None, folds: int = AUTO_FOLDS) -> PiEstimate:
    """``data.pi=auto`` in a tzl-train config: estimate pi and return it; ``cfg`` is not changed.

    The training data are set up as configured (same labeled subset), ``folds`` classifiers of
    ``cfg.model`` are fitted for ``steps`` minibatches each (None: ``data.pi_auto_steps``, see
    :func:`auto_steps`) and :func:`estimate_pi` (particle-level BBE when the run has an NMS
    radius) gives pi. The log line names the estimate, each fit's value and their spread;
    ``train()`` builds the training DataModule with ``pi=result.pi`` and writes
    ``result.metrics()`` into the run's metrics.json.
    """
    import time

    from hydra.utils import instantiate

    steps = auto_steps(cfg) if steps is None else int(steps)
    start = time.perf_counter()
    datamodule = instantiate(cfg.data, pi=_PLACEHOLDER_PI, particles_per_micrograph=None)
    datamodule.prepare_data()
    result = estimate_pi_for_datamodule(
        datamodule,
        lambda: instantiate(cfg.model),
        steps=steps,
        folds=folds,
        seed=int(cfg.get("seed", 0)),
    )
    result = replace(result, seconds=time.perf_counter() - start)
    log.info(
        "data.pi=auto: estimated %s in %.0f s; Elkan-Noto would give %.5g",
        result.text(),
        result.seconds,
        next(iter(result.other.values())),
    )
    return result
