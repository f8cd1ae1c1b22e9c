"""NNPU: the non-negative unbiased PU risk estimator of Kiryo et al."""

from __future__ import annotations

from torch import Tensor

from topaz_lightning.objectives.common import PUObjective, loss_negative, loss_positive


class NNPU(PUObjective):
    """``pi * E_P[L(g, 1)] + max{0, E_U[L(g, 0)] - pi * E_P[L(g, 0)]}`` with cross-entropy L.

    The bracket estimates the risk of the negatives; the max keeps it non-negative. As in the
    paper's formula, the max is used as is: while the bracket is negative its gradient is zero
    and only the positive term trains the model (Kiryo et al.'s extra "step back along the
    negative risk" update is not implemented). Terms (summing to the loss): ``positive`` and
    ``unlabeled`` (the clamped bracket). Without positives the bracket is max{0, E_U[L(g, 0)]};
    without unlabeled regions it is dropped.
    """

    def terms(self, z_p: Tensor, z_u: Tensor, pi: float) -> dict[str, Tensor]:
        """Named loss terms from the labeled-positive and unlabeled logits."""
        terms = {}
        if z_p.numel():
            terms["positive"] = pi * loss_positive(z_p).mean()
        if z_u.numel():
            negative_risk = loss_negative(z_u).mean()
            if z_p.numel():
                negative_risk = negative_risk - pi * loss_negative(z_p).mean()
            terms["unlabeled"] = negative_risk.clamp(min=0.0)
        return terms
