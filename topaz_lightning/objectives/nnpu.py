"""NNPU: the non-negative unbiased PU risk estimator of Kiryo et al."""

from __future__ import annotations

from torch import Tensor, nn

from topaz_lightning.objectives.common import check_pi, loss_negative, loss_positive, split, total


class NNPU(nn.Module):
    """``pi * E_P[L(g, 1)] + max{0, E_U[L(g, 0)] - pi * E_P[L(g, 0)]}`` with cross-entropy L.

    The bracket estimates the risk of the negatives; the max keeps it non-negative. As in the
    paper's formula, the max is used as is: while the bracket is negative its gradient is zero
    and only the positive term trains the model (Kiryo et al.'s extra "step back along the
    negative risk" update is not implemented). Terms (summing to the loss): ``positive`` and
    ``unlabeled`` (the clamped bracket). Without positives the bracket is max{0, E_U[L(g, 0)]};
    without unlabeled regions it is dropped.
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
            negative_risk = loss_negative(z_u).mean()
            if z_p.numel():
                negative_risk = negative_risk - pi * loss_negative(z_p).mean()
            terms["unlabeled"] = negative_risk.clamp(min=0.0)
        return total(logits, terms), terms
