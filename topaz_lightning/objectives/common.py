"""Shared pieces of the PU objectives: input checks, labeled/unlabeled split, stable losses, base class."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from topaz_lightning.errors import ConfigError

#: which prior an objective's ``forward`` receives as ``pi`` (see :class:`PUObjective`)
PriorName = Literal["pi", "pi_unlabeled"]
PRIOR_NAMES: tuple[str, ...] = ("pi", "pi_unlabeled")


def check_pi(pi: float, name: str = "pi") -> float:
    """Return ``pi`` as a float, or raise ConfigError (key ``name``) unless ``0 < pi < 1``."""
    pi = float(pi)
    if not 0.0 < pi < 1.0:
        raise ConfigError(name, f"the prior must lie strictly between 0 and 1, got {pi}")
    return pi


def split(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Logits of the labeled positives (label 1) and of the unlabeled regions (label 0).

    Half-precision logits are promoted to float32 so the objectives stay accurate under AMP.
    """
    if logits.dim() != 1 or labels.shape != logits.shape:
        raise ValueError(
            f"expected logits and labels of the same shape (B,), got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    positive = labels > 0.5
    return logits[positive], logits[~positive]


def loss_positive(z: Tensor) -> Tensor:
    """Cross entropy L(g, 1) = -log sigmoid(z), elementwise, stable for any z."""
    return -F.logsigmoid(z)


def loss_negative(z: Tensor) -> Tensor:
    """Cross entropy L(g, 0) = -log(1 - sigmoid(z)) = -log sigmoid(-z), elementwise."""
    return -F.logsigmoid(-z)


def total(logits: Tensor, terms: dict[str, Tensor]) -> Tensor:
    """Sum of the terms; an empty batch gives a zero that is still attached to ``logits``."""
    if not terms:
        return logits.sum() * 0.0
    return torch.stack(list(terms.values())).sum()


class PUObjective(nn.Module):
    """Base of the objectives: ``forward`` checks pi, splits the minibatch and sums the terms.

    A subclass implements :meth:`terms`, returning the named loss terms for the labeled-positive
    logits ``z_p`` and unlabeled logits ``z_u`` (either may be empty; a term without data is left
    out). The loss is their sum.

    ``prior`` (class attribute) names the prior the objective's formula is written with, which the
    training module passes as ``pi`` (docs/models_objectives.md, "Which prior"):

    - ``"pi"``: the class prior of the whole population, the fraction of ALL regions that are
      positive (PN's weights, NNPU's risk);
    - ``"pi_unlabeled"``: the expected fraction of positives among the UNLABELED draws,
      ``(pi * N - N_lab) / (N - N_lab)`` (the GE criteria constrain the unlabeled minibatch).
    """

    prior: ClassVar[PriorName] = "pi"
    #: True for objectives whose :meth:`terms` takes ``labeled_fraction`` (the share of all regions
    #: that are labeled positives, which the unlabeled draws exclude); the training module then
    #: passes it to ``forward``, which checks it and hands it on to ``terms``
    uses_labeled_fraction: ClassVar[bool] = False

    def terms(self, z_p: Tensor, z_u: Tensor, pi: float) -> dict[str, Tensor]:
        """Named loss terms (they sum to the loss); implemented by each objective.

        With ``uses_labeled_fraction = True`` the signature is
        ``terms(z_p, z_u, pi, labeled_fraction=0.0)``.
        """
        raise NotImplementedError

    def forward(
        self, logits: Tensor, labels: Tensor, pi: float, labeled_fraction: float | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss and its terms for logits ``(B,)``, labels ``(B,)`` (1 = labeled positive).

        ``labeled_fraction`` (only for objectives with ``uses_labeled_fraction``; None = 0, the
        unlabeled draws cover every region) must lie in ``[0, pi)``.
        """
        pi = check_pi(pi, self.prior)
        z_p, z_u = split(logits, labels)
        if self.uses_labeled_fraction:
            f = check_labeled_fraction(labeled_fraction, pi)
            terms = self.terms(z_p, z_u, pi, labeled_fraction=f)
        else:
            if labeled_fraction is not None:
                raise ConfigError(
                    "labeled_fraction",
                    f"{type(self).__name__} does not use it (uses_labeled_fraction is False)",
                )
            terms = self.terms(z_p, z_u, pi)
        return total(logits, terms), terms


def check_labeled_fraction(labeled_fraction: float | None, pi: float) -> float:
    """The labeled fraction as a float in ``[0, pi)`` (None = 0), or ConfigError."""
    f = 0.0 if labeled_fraction is None else float(labeled_fraction)
    if not 0.0 <= f < pi:
        raise ConfigError(
            "labeled_fraction",
            f"must lie in [0, pi={pi}) (at or above pi every positive is labeled: use PN), got {f}",
        )
    return f


class GECriterion(PUObjective):
    """Generalized expectation: ``E_P[L(g, 1)] + slack * penalty(z_u, pi)``.

    ``pi`` is ``pi_unlabeled`` (``prior``): the penalty constrains the expected fraction of
    positives among the unlabeled draws, which never land on a labeled particle's region.

    Terms: ``positive`` (mean cross entropy of the labeled positives) and ``ge`` (the slack-weighted
    penalty on the unlabeled logits); a term without data is left out. Subclasses define
    :meth:`penalty`.
    """

    prior: ClassVar[PriorName] = "pi_unlabeled"

    def __init__(self, slack: float):
        super().__init__()
        self.slack = float(slack)

    def penalty(self, z_u: Tensor, pi: float) -> Tensor:
        """The GE penalty on a non-empty set of unlabeled logits; implemented by each criterion."""
        raise NotImplementedError

    def terms(self, z_p: Tensor, z_u: Tensor, pi: float) -> dict[str, Tensor]:
        """``positive`` and ``ge`` (see the class docstring)."""
        terms = {}
        if z_p.numel():
            terms["positive"] = loss_positive(z_p).mean()
        if z_u.numel():
            terms["ge"] = self.slack * self.penalty(z_u, pi)
        return terms
