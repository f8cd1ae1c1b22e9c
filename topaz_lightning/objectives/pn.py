"""PN: treat unlabeled regions as negatives (the naive positive-negative baseline)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from topaz_lightning.objectives.common import PriorName, PUObjective, loss_negative, loss_positive


class PN(PUObjective):
    """``pi * E_P[L(g, 1)] + (1 - pi) * E_U[L(g, 0)]`` with cross-entropy L (the paper's PN).

    ``pi`` is the class prior of the whole population (``prior = "pi"``): it only weights the two
    classes, as in a positive-negative risk; PN makes no correction for positives hidden among the
    unlabeled regions. The training module also falls back to PN (with pi = the labeled fraction)
    when every positive is labeled (``pi_unlabeled == 0``). Terms (they sum to the loss):
    ``positive`` = pi * E_P[L(g, 1)], ``unlabeled`` = (1 - pi) * E_U[L(g, 0)]. A term whose part
    of the minibatch is empty is left out.
    """

    prior: ClassVar[PriorName] = "pi"

    def terms(self, z_p: Tensor, z_u: Tensor, pi: float) -> dict[str, Tensor]:
        """Named loss terms from the labeled-positive and unlabeled logits."""
        terms = {}
        if z_p.numel():
            terms["positive"] = pi * loss_positive(z_p).mean()
        if z_u.numel():
            terms["unlabeled"] = (1.0 - pi) * loss_negative(z_u).mean()
        return terms
