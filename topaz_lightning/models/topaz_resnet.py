"""Topaz's ResNet8 and ResNet16 region classifiers (ReLU, receptive fields 71 and 91), written from
their published layer description so that ``model=resnet8`` means the same network in both tools.

Layers (Topaz 0.3, ``topaz.model.features.resnet``, default ``pooling=None`` so the downsampling is
the stride of a convolution; ``units = u`` gives widths ``u, 2u, 4u``):

- a *basic conv* is conv k x k (no padding) -> BatchNorm -> ReLU (with ``bn=False``: a conv with
  bias -> ReLU);
- a *residual block* ``(n_in -> n_out, dilation d, stride s)`` is conv 3x3 -> BN -> ReLU ->
  conv 3x3 (dilation d, stride s), plus the input cropped by ``1 + d`` on every side (a 1 x 1
  projection, no bias, with stride s when the width changes; otherwise every s-th pixel), then
  BN of the sum -> ReLU. The block sees ``3 + 2 d`` pixels.

ResNet8: basic 7x7/u stride 2; block (u, d2); block (u -> 2u, d2, s2); block (2u, d2);
basic 5x5/4u; linear. Receptive field 7 + 12 + 4 + 8 + 24 + 16 = 71.

ResNet16: basic 7x7/u; block (u, s2); 3 x block (u); block (u -> 2u, s2); 2 x block (2u);
basic 5x5/4u; linear (blocks with dilation 1). Receptive field 91.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from topaz_lightning.models.base import (
    PatchClassifier,
    Stage,
    apply_conv,
    apply_conv_bn,
    dense_mode,
    module_stages,
    receptive_field,
    split_phases,
)


class BasicConv(nn.Module):
    """conv k x k (stride s, no padding) -> BatchNorm -> ReLU; a biased conv -> ReLU without BN."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, bn: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, bias=not bn)
        self.bn = nn.BatchNorm2d(out_channels) if bn else None

    def forward(
        self, x: Tensor, dense: bool | str, jump: int, fold: bool = True
    ) -> tuple[Tensor, int]:
        """Output and the next layer's jump (see ``models.base.apply_conv``)."""
        if self.bn is None:
            y, jump = apply_conv(self.conv, x, dense, jump)
        else:
            y, jump = apply_conv_bn(self.conv, self.bn, x, dense, jump, fold)
        return F.relu(y), jump


class TopazResidualBlock(nn.Module):
    """Topaz's residual block (module docstring): conv 3x3 -> BN -> ReLU -> conv 3x3 (dilation
    d, stride s), plus the input cropped by ``1 + d``, then BN of the sum -> ReLU.

    The output ``j`` of the second conv sits on input pixel ``s * j + (1 + d)`` (patch mode), on
    ``j + jump * (1 + d)`` in dilated dense mode, and the skip is taken there. The projection is a
    stride-1 1 x 1 conv applied to the already subsampled skip (same arithmetic and parameters as
    a strided 1 x 1 conv).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilation: int = 1,
        stride: int = 1,
        bn: bool = True,
    ):
        super().__init__()
        self.stride = int(stride)
        self.edge = 1 + int(dilation)
        self.conv0 = nn.Conv2d(in_channels, in_channels, 3, bias=not bn)
        self.bn0 = nn.BatchNorm2d(in_channels) if bn else None
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, dilation=dilation, stride=stride, bias=not bn
        )
        self.project = (
            nn.Conv2d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else None
        )
        self.bn1 = nn.BatchNorm2d(out_channels) if bn else None

    def forward(
        self, x: Tensor, dense: bool | str, jump: int, fold: bool = True
    ) -> tuple[Tensor, int]:
        """Block output and the next layer's jump (see ``models.base.apply_conv``)."""
        mode = dense_mode(dense)
        if self.bn0 is None:
            h, mid_jump = apply_conv(self.conv0, x, mode, jump)
        else:
            h, mid_jump = apply_conv_bn(self.conv0, self.bn0, x, mode, jump, fold)
        h = F.relu(h)
        y, out_jump = apply_conv(self.conv1, h, mode, mid_jump)
        rows, cols = y.shape[-2:]
        if mode == "polyphase":
            skip = split_phases(x[..., self.edge :, self.edge :], self.stride)[..., :rows, :cols]
        else:
            start, step = (self.edge * jump, 1) if mode == "dilated" else (self.edge, self.stride)
            skip = x[
                ...,
                start : start + step * (rows - 1) + 1 : step,
                start : start + step * (cols - 1) + 1 : step,
            ]
        if self.project is not None:
            skip = self.project(skip)
        y = y + skip
        if self.bn1 is not None:  # BN of the sum: per-channel affine in eval, exact in every mode
            y = self.bn1(y)
        return F.relu(y), out_jump


class TopazResNet(PatchClassifier):
    """A chain of basic convs and Topaz residual blocks, then a linear layer to one logit.

    ``layers``: ``("conv", out, kernel, stride)`` or ``("block", out, dilation, stride)`` in order;
    the input has one channel. Subclasses fix the chain (ResNet8, ResNet16).
    """

    def __init__(self, layers: Sequence[tuple], bn: bool = True):
        super().__init__()
        modules: list[nn.Module] = []
        geometry: list[tuple[int, int]] = []  # (effective kernel, stride) for the field arithmetic
        in_channels = 1
        for kind, out, size, stride in layers:
            if kind == "conv":
                modules.append(BasicConv(in_channels, out, size, stride, bn))
                geometry.append((size, stride))
            else:
                modules.append(TopazResidualBlock(in_channels, out, size, stride, bn))
                geometry += [(3, 1), (2 * size + 1, stride)]  # dilated 3x3 spans 2 d + 1
            in_channels = out
        self.layers = nn.ModuleList(modules)
        self.receptive_field = receptive_field(geometry)
        self.phase_strides = tuple(stride for _, stride in geometry)
        self.num_features = in_channels
        self.classifier = nn.Linear(self.num_features, 1)

    def stages(self) -> list[Stage]:
        """One stage per basic conv and residual block (see ``models.base``)."""
        return module_stages(self.layers, self.fold_batchnorm)


class ResNet8(TopazResNet):
    """Topaz's ``resnet8`` (its default model): receptive field 71, ReLU, widths u, 2u, 4u.

    basic 7x7/u (stride 2) -> block (u, dilation 2) -> block (u -> 2u, dilation 2, stride 2) ->
    block (2u, dilation 2) -> basic 5x5/4u -> linear. ``units`` is Topaz's ``--units`` (32 by
    default; its pretrained models use 32 or 64 without BatchNorm, ``bn=False``).
    """

    def __init__(self, units: int = 32, bn: bool = True):
        u = int(units)
        if u < 1:
            raise ValueError(f"units must be positive, got {units}")
        super().__init__(
            [
                ("conv", u, 7, 2),
                ("block", u, 2, 1),
                ("block", 2 * u, 2, 2),
                ("block", 2 * u, 2, 1),
                ("conv", 4 * u, 5, 1),
            ],
            bn=bool(bn),
        )
        self._init_kwargs = {"units": u, "bn": bool(bn)}


class ResNet16(TopazResNet):
    """Topaz's ``resnet16``: receptive field 91, ReLU, widths u, 2u, 4u.

    basic 7x7/u -> block (u, stride 2) -> 3 x block (u) -> block (u -> 2u, stride 2) ->
    2 x block (2u) -> basic 5x5/4u -> linear (all blocks dilation 1).
    """

    def __init__(self, units: int = 32, bn: bool = True):
        u = int(units)
        if u < 1:
            raise ValueError(f"units must be positive, got {units}")
        super().__init__(
            [
                ("conv", u, 7, 1),
                ("block", u, 1, 2),
                ("block", u, 1, 1),
                ("block", u, 1, 1),
                ("block", u, 1, 1),
                ("block", 2 * u, 1, 2),
                ("block", 2 * u, 1, 1),
                ("block", 2 * u, 1, 1),
                ("conv", 4 * u, 5, 1),
            ],
            bn=bool(bn),
        )
        self._init_kwargs = {"units": u, "bn": bool(bn)}
