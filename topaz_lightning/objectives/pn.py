"""PN: treat unlabeled regions as negatives (the naive positive-negative baseline)."""

from __future__ import annotations

from torch import Tensor, nn

from topaz_lightning.objectives.common import check_pi, loss_negative, loss_positive, split, total


class PN(nn.Module):
    """``pi * E_P[L(g, 1)] + (1 - pi) * E_U[L(g, 0)]`` with cross-entropy L.

    Terms (they sum to the loss): ``positive`` = pi * E_P[L(g, 1)], ``unlabeled`` =
    (1 - pi) * E_U[L(g, 0)]. A term whose part of the minibatch is empty is left out.
    """

    def forward(
        self, logits: Tensor, labels: Tensor, pi: float
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss and its terms for logits ``(B,)``, labels ``(B,)`` (1 = labeled positive)."""
        pi = check_pi(pi)
        z_p, z_u = split(logits, labels)
        terms = {}
        if z_p.numel():
            terms["positive"] = pi * loss_positive(z_p).mean()
        if z_u.numel():
            terms["unlabeled"] = (1.0 - pi) * loss_negative(z_u).mean()
        return total(logits, terms), terms
