"""NNPU: the non-negative PU risk of Kiryo et al. (2017) and their training rule."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from topaz_lightning.errors import ConfigError
from topaz_lightning.objectives.common import (
    PriorName,
    PUObjective,
    loss_negative,
    loss_positive,
)

NNPURule = Literal["kiryo", "clamp"]
NNPU_RULES: tuple[str, ...] = ("kiryo", "clamp")


def straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    """A tensor equal to ``value`` whose gradient is the gradient of ``surrogate``.

    ``surrogate - surrogate.detach()`` is exactly zero in floating point, so the value is not
    perturbed; autograd sees only ``surrogate``.
    """
    return value.detach() + (surrogate - surrogate.detach())


class NNPU(PUObjective):
    """``pi * E_P[L(g, 1)] + max{0, E_U[L(g, 0)] - pi * E_P[L(g, 0)]}`` with cross-entropy L.

    ``pi`` is the class prior of the whole population (``prior = "pi"``); the bracket estimates
    the risk of the negatives, ``(1 - pi) E_N[L(g, 0)]``, which needs ``E_U`` over the whole
    population. This project's unlabeled draws never land on a labeled positive region (a
    fraction ``f = labeled_fraction`` of all regions), so the whole-population mean is rebuilt
    from both samples, ``f E_P[L(g,0)] + (1 - f) E_U[L(g,0)]``, and the bracket is
    ``(1 - f) E_U[L(g,0)] - (pi - f) E_P[L(g,0)]`` (the paper's bracket when ``f = 0``, i.e.
    when U is drawn from every region, as in Topaz). The loss VALUE is always this
    non-negative risk (so ``train/loss`` and ``val/loss`` are the risk). Its GRADIENT depends on
    ``rule``:

    - ``"kiryo"`` (default; Kiryo et al. 2017, Algorithm 1): while the bracket is >= ``-beta``
      the gradient is that of the unbiased risk ``pi E_P[L(g,1)] + bracket``; when the bracket
      falls below ``-beta`` (the model overfits the positives and drives the estimate negative)
      the step instead follows the gradient of ``-gamma * bracket``, i.e. it pushes the negative
      risk back up and ignores the positive term for that step. Kiryo et al. discount the step
      size by gamma; multiplying the gradient by gamma is the same for SGD (for Adam, whose steps
      are scale-free, gamma only matters through the moment estimates). Paper defaults:
      beta = 0, gamma = 1.
    - ``"clamp"``: the gradient of the max as written (zero gradient for the unlabeled logits
      while the bracket is negative); what this project did before, kept for comparison.

    The rule is applied inside the loss tensor (:func:`straight_through`), so the objective stays
    a plain function of the logits and never touches an optimizer. Terms (summing to the loss):
    ``positive`` and ``unlabeled`` (the clamped bracket). Without positives the bracket is
    ``(1 - f) E_U[L(g, 0)] >= 0``; without unlabeled regions it is dropped.
    """

    prior: ClassVar[PriorName] = "pi"
    #: the training module passes ``labeled_fraction`` (see the class docstring)
    uses_labeled_fraction: ClassVar[bool] = True

    def __init__(self, rule: NNPURule = "kiryo", beta: float = 0.0, gamma: float = 1.0):
        super().__init__()
        if rule not in NNPU_RULES:
            raise ConfigError("objective.rule", f"must be one of {NNPU_RULES}, got {rule!r}")
        if not float(beta) >= 0.0:
            raise ConfigError("objective.beta", f"must be >= 0, got {beta}")
        if not float(gamma) > 0.0:
            raise ConfigError("objective.gamma", f"must be > 0, got {gamma}")
        self.rule = rule
        self.beta = float(beta)
        self.gamma = float(gamma)

    def terms(
        self, z_p: Tensor, z_u: Tensor, pi: float, labeled_fraction: float = 0.0
    ) -> dict[str, Tensor]:
        """Named loss terms from the labeled-positive and unlabeled logits; ``labeled_fraction``
        = fraction of ALL regions that are labeled positives, which the unlabeled draws exclude
        (0: U drawn from every region). ``forward`` (the base class's) checks it."""
        return self._terms(z_p, z_u, pi, float(labeled_fraction))

    def _terms(self, z_p: Tensor, z_u: Tensor, pi: float, f: float) -> dict[str, Tensor]:
        terms = {}
        positive = pi * loss_positive(z_p).mean() if z_p.numel() else None
        if positive is not None:
            terms["positive"] = positive
        if not z_u.numel():
            return terms
        bracket = (1.0 - f) * loss_negative(z_u).mean()
        if z_p.numel():
            bracket = bracket - (pi - f) * loss_negative(z_p).mean()
        clamped = bracket.clamp(min=0.0)
        if self.rule == "clamp":
            terms["unlabeled"] = clamped
            return terms
        # torch.where instead of a Python branch: no device sync, and the choice is per step
        defensive = bracket.detach() < -self.beta
        surrogate = torch.where(defensive, -self.gamma * bracket, bracket)
        terms["unlabeled"] = straight_through(clamped, surrogate)
        if positive is not None:
            terms["positive"] = torch.where(defensive, positive.detach(), positive)
        return terms
