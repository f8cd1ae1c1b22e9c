"""GE-KL: generalized expectation criterion with a KL penalty on the unlabeled mean prediction."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from topaz_lightning.objectives.common import GECriterion


class GEKL(GECriterion):
    """``E_P[L(g, 1)] + slack * KL(Bernoulli(pi) || Bernoulli(mean_U g))`` (paper: slack 100).

    ``KL = pi log(pi / m) + (1 - pi) log((1 - pi) / (1 - m))`` with ``m = mean_U sigmoid(z)``;
    ``log m`` and ``log(1 - m)`` are computed as log-mean-exp of log sigmoid(+-z), so the
    penalty stays finite when every prediction saturates. Terms (summing to the loss):
    ``positive`` = E_P[L(g, 1)] and ``ge`` = slack * KL; a term with no data is left out.
    """

    def __init__(self, slack: float = 100.0):
        super().__init__(slack)

    def penalty(self, z_u: Tensor, pi: float) -> Tensor:
        """``KL(Bernoulli(pi) || Bernoulli(mean_U sigmoid(z)))`` in the log domain."""
        log_n = math.log(z_u.numel())
        log_mean = torch.logsumexp(F.logsigmoid(z_u), 0) - log_n
        log_mean_neg = torch.logsumexp(F.logsigmoid(-z_u), 0) - log_n
        return pi * (math.log(pi) - log_mean) + (1.0 - pi) * (math.log1p(-pi) - log_mean_neg)
