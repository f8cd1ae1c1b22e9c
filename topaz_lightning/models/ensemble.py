"""Several patch classifiers scored as one: the mean of their logits (checkpoint and seed ensembles).

The ensemble's score at a pixel is the **mean of the members' logits** there. Logits, not
probabilities: a mean of logits is a linear map of the members' own logits, so the ensemble is
itself a :class:`~topaz_lightning.models.base.PatchClassifier` (``trunk`` = the members' logit
maps stacked as channels, ``classifier`` = weights ``1/K``, no bias) and every scoring mode
(strided with its exact windows, coarse-to-fine, dense, TTA) runs on it unchanged; the picking
pipeline's threshold and scores are logits too. A mean of probabilities would put a sigmoid
between the members and the average, which the strided path's linear classifier cannot hold.

Two classes:

* :class:`EnsembleNet` holds any members that share a receptive field and a stride sequence
  (``tzl-pick picker=ensemble`` builds one from several model files, which may differ in
  architecture).
* :class:`HomogeneousEnsembleNet` is the form an ensemble takes **in a model file**: ``K``
  networks of one architecture, rebuilt from plain arguments (the member's class name, its
  keyword arguments and ``K``); :func:`topaz_lightning.models.io.build_model` builds each member
  through its list of allowed classes, like any model file. ``tzl-train``'s ``model.pt`` is one when the
  checkpoint-ensemble callback is on (``callbacks.checkpoint_ensemble``, the default): the
  weights at 50% and 75% of the run and the last ones. An :class:`EnsembleNet` whose members
  share one architecture saves as one (its :attr:`~EnsembleNet.config`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from topaz_lightning.models.base import PatchClassifier

#: members at most (each is a whole network in memory and a trunk pass per scored pixel)
MAX_MEMBERS = 64

__all__ = ["MAX_MEMBERS", "EnsembleNet", "HomogeneousEnsembleNet", "ensemble_config"]


class EnsembleNet(PatchClassifier):
    """The mean logit of ``members`` (patch classifiers of one receptive field and one stride
    sequence) as one patch classifier: ``trunk`` gives each member's logit map as a channel
    (``(B, K, h, w)``, in every mode the members' own trunks support), the classifier averages
    them (weights ``1/K``, bias 0). ``score_map``, ``forward`` and strided/coarse scoring are the
    base class's, so each equals the mean of the members' own, up to float rounding (exactly for
    one member)."""

    def __init__(self, members: Sequence[PatchClassifier]):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if len(members) > MAX_MEMBERS:
            raise ValueError(f"an ensemble has at most {MAX_MEMBERS} members, got {len(members)}")
        for k, member in enumerate(members):
            if not isinstance(member, PatchClassifier):
                raise TypeError(f"member {k} is a {type(member).__name__}, not a PatchClassifier")
        first = members[0]
        for k, member in enumerate(members[1:], start=1):
            if member.receptive_field != first.receptive_field:
                raise ValueError(
                    f"member {k} has receptive field {member.receptive_field}, "
                    f"member 0 {first.receptive_field}"
                )
            if tuple(member.phase_strides) != tuple(first.phase_strides):
                raise ValueError(
                    f"member {k} has strides {tuple(member.phase_strides)}, "
                    f"member 0 {tuple(first.phase_strides)}"
                )
        self.members = nn.ModuleList(members)
        self.receptive_field = int(first.receptive_field)
        self.phase_strides = tuple(int(s) for s in first.phase_strides)
        self.num_features = len(members)
        self.classifier = nn.Linear(len(members), 1)
        with torch.no_grad():
            self.classifier.weight.fill_(1.0 / len(members))
            self.classifier.bias.zero_()
        self.requires_grad_(False)

    def trunk(self, x: Tensor, dense: bool | str) -> Tensor:
        """``(B, K, h, w)``: member k's logits (its trunk, then its classifier as a 1 x 1
        convolution) in channel k."""
        maps = []
        for member in self.members:
            weight = member.classifier.weight.view(1, member.num_features, 1, 1)
            maps.append(F.conv2d(member.trunk(x, dense), weight, member.classifier.bias))
        return torch.cat(maps, dim=1)

    def member_architecture(self) -> PatchClassifier:
        """A copy of member 0 (its architecture, with member 0's weights): what a training
        checkpoint of the run whose ``model.pt`` this ensemble is holds weights for."""
        return copy.deepcopy(self.members[0])

    @property
    def config(self) -> dict:
        """The :class:`HomogeneousEnsembleNet` node that rebuilds this ensemble (so it saves as
        one model file); TypeError when the members differ in architecture."""
        configs = []
        for k, member in enumerate(self.members):
            if isinstance(member, EnsembleNet):
                raise TypeError(f"member {k} is itself an ensemble: not saved as one model file")
            configs.append(member.config)
        if any(c != configs[0] for c in configs[1:]):
            raise TypeError(
                "the members differ in architecture: this ensemble is not saved as one model "
                "file (pick with picker=ensemble and its members' files instead)"
            )
        return ensemble_config(configs[0], len(self.members))


def ensemble_config(member_config: Mapping[str, Any], num_members: int) -> dict[str, Any]:
    """The model-file node (``_target_`` + plain arguments) of ``num_members`` networks built by
    ``member_config`` (a classifier's node with ``_target_``), their logits averaged."""
    member = dict(member_config)
    target = member.pop("_target_", None)
    if not isinstance(target, str):
        raise ValueError("the member's config needs a _target_ naming its class")
    return {
        "_target_": f"{HomogeneousEnsembleNet.__module__}.{HomogeneousEnsembleNet.__qualname__}",
        "member_target": target,
        "member_kwargs": member,
        "num_members": int(num_members),
    }


class HomogeneousEnsembleNet(EnsembleNet):
    """Networks of one architecture, their logits averaged: the form an :class:`EnsembleNet`
    takes in a model file. A model file holds it as plain arguments (``member_target``, the
    member's class name, ``member_kwargs``, its keyword arguments, and ``num_members``), read by
    :meth:`from_config`: :func:`topaz_lightning.models.io.build_model` builds each member (this
    package's classifiers and installed entry points only, plain arguments, size-checked; a
    member that is itself an ensemble is refused, so a file cannot nest ensembles)."""

    @classmethod
    def from_config(
        cls,
        build: Callable[[Mapping[str, Any]], nn.Module],
        *,
        member_target: str,
        member_kwargs: Mapping[str, Any],
        num_members: int,
    ) -> HomogeneousEnsembleNet:
        """``num_members`` networks built by ``build`` from ``member_target`` and
        ``member_kwargs``, as one ensemble."""
        if isinstance(num_members, bool) or not isinstance(num_members, int):
            raise ValueError(f"num_members must be an integer, got {num_members!r}")
        if not 1 <= num_members <= MAX_MEMBERS:
            raise ValueError(f"num_members must be 1..{MAX_MEMBERS}, got {num_members}")
        if not isinstance(member_target, str) or not isinstance(member_kwargs, Mapping):
            raise ValueError("member_target must be a class name, member_kwargs a mapping")
        config = {"_target_": member_target, **member_kwargs}
        return cls([build(config) for _ in range(num_members)])
