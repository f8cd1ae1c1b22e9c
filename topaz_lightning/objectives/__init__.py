"""Positive-unlabeled objectives: PN, NNPU, GE-KL and GE-binomial (plain nn.Modules)."""

from topaz_lightning.objectives.ge_binomial import GEBinomial
from topaz_lightning.objectives.ge_kl import GEKL
from topaz_lightning.objectives.nnpu import NNPU
from topaz_lightning.objectives.pn import PN

__all__ = ["GEBinomial", "GEKL", "NNPU", "PN"]
