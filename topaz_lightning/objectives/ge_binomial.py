"""GE-binomial: the paper's criterion on the number of positives among the unlabeled regions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from topaz_lightning.objectives.common import GECriterion

# added to the variance so the normal approximation stays defined when all predictions saturate
VARIANCE_EPS = 1e-6


def binomial_log_pmf(n: int, pi: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """log Binomial(n, pi) pmf at k = 0..n."""
    k = torch.arange(n + 1, dtype=dtype, device=device)
    log_choose = math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    return log_choose + k * math.log(pi) + (n - k) * math.log1p(-pi)


def normal_count_probs(z_u: Tensor) -> Tensor:
    """q_k, k = 0..N: the normal approximation to the number of positives among N regions.

    Mean ``sum g``, variance ``sum g (1 - g) + VARIANCE_EPS`` with ``g = sigmoid(z)``. It is
    discretised by integrating the normal density over ``[k - 0.5, k + 0.5]``; the two end bins
    take the tails (``q_0 = Phi(0.5)``, ``q_N = 1 - Phi(N - 0.5)`` in standardized units), so the
    q_k sum to one over the possible counts.
    """
    n = z_u.numel()
    g = torch.sigmoid(z_u)
    mean = g.sum()
    # g (1 - g) = exp(log sigmoid(z) + log sigmoid(-z)): exact even where 1 - g rounds to 0
    variance = torch.exp(F.logsigmoid(z_u) + F.logsigmoid(-z_u)).sum() + VARIANCE_EPS
    std = variance.sqrt()
    inner = torch.arange(n, dtype=z_u.dtype, device=z_u.device) + 0.5  # edges 0.5 .. N - 0.5
    cdf = torch.special.ndtr((inner - mean) / std)
    upper_tail = torch.special.ndtr((mean - inner[-1:]) / std)  # 1 - Phi without cancellation
    return torch.cat([cdf[:1], cdf[1:] - cdf[:-1], upper_tail])


class GEBinomial(GECriterion):
    """``E_P[L(g, 1)] + slack * (-sum_k q_k log p_k)`` (the paper: slack 1).

    q_k is ``normal_count_probs`` of the N unlabeled logits, p_k the Binomial(N, pi) pmf,
    k = 0..N; the second term is the cross entropy of q from p (the paper writes it with a
    plus sign on ``sum q log p``; minimizing the cross entropy is what is meant). Terms
    (summing to the loss): ``positive`` and ``ge``; a term with no data is left out.
    """

    def __init__(self, slack: float = 1.0):
        super().__init__(slack)

    def penalty(self, z_u: Tensor, pi: float) -> Tensor:
        """Cross entropy ``-sum_k q_k log p_k`` of the count distributions, k = 0..N."""
        q = normal_count_probs(z_u)
        log_p = binomial_log_pmf(z_u.numel(), pi, z_u.dtype, z_u.device)
        return -(q * log_p).sum()
