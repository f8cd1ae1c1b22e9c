"""PN: treat unlabeled regions as negatives (the naive positive-negative baseline)."""

from __future__ import annotations

from torch import Tensor

from topaz_lightning.objectives.common import PUObjective, loss_negative, loss_positive


class PN(PUObjective):
    """``pi * E_P[L(g, 1)] + (1 - pi) * E_U[L(g, 0)]`` with cross-entropy L.

    Terms (they sum to the loss): ``positive`` = pi * E_P[L(g, 1)], ``unlabeled`` =
    (1 - pi) * E_U[L(g, 0)]. A term whose part of the minibatch is empty is left out.
    """

    def terms(self, z_p: Tensor, z_u: Tensor, pi: float) -> dict[str, Tensor]:
        """Named loss terms from the labeled-positive and unlabeled logits."""
        terms = {}
        if z_p.numel():
            terms["positive"] = pi * loss_positive(z_p).mean()
        if z_u.numel():
            terms["unlabeled"] = (1.0 - pi) * loss_negative(z_u).mean()
        return terms
