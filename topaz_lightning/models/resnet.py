"""This project's own residual classifiers (PReLU, receptive fields 49 and 85); Topaz's ResNet8/16
are in ``models.topaz_resnet``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from topaz_lightning.models.base import (
    PatchClassifier,
    Stage,
    apply_conv_bn,
    dense_mode,
    module_stages,
    receptive_field,
    split_phases,
)


class ResidualBlock(nn.Module):
    """conv k x k (stride s) + BN + PReLU -> conv k x k + BN, plus a skip path, then PReLU.

    All convolutions are unpadded, so the skip path is the input cropped to the centres of the
    outputs: output ``j`` sits on input ``s * j + (k // 2) * (1 + s)`` (patch mode), or on input
    ``j + jump * (k // 2) * (1 + s)`` in dilated dense mode. In polyphase dense mode the input's
    components are ``jump`` pixels apart, so the skip starts at ``(k // 2) * (1 + s)`` and is
    split into ``s x s`` components like the main path. A 1 x 1 conv + BN projects the skip when
    the width changes or the block is strided.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel: int = 3):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.PReLU(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.project: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.act = nn.PReLU(out_channels)
        self.offset = (kernel // 2) * (1 + stride)

    def forward(
        self, x: Tensor, dense: bool | str, jump: int, fold: bool = True
    ) -> tuple[Tensor, int]:
        """Block output and the jump for the next layer (see ``models.base.apply_conv``);
        ``fold`` folds eval BatchNorm into the convolutions in dense modes."""
        mode = dense_mode(dense)
        h, mid_jump = apply_conv_bn(self.conv1, self.bn1, x, mode, jump, fold)
        h = self.act1(h)
        h, out_jump = apply_conv_bn(self.conv2, self.bn2, h, mode, mid_jump, fold)
        rows, cols = h.shape[-2:]
        if mode == "polyphase":
            start = self.offset
            skip = split_phases(x[..., start:, start:], self.stride)[..., :rows, :cols]
        else:
            start, step = (
                (self.offset * jump, 1) if mode == "dilated" else (self.offset, self.stride)
            )
            skip = x[
                ...,
                start : start + step * (rows - 1) + 1 : step,
                start : start + step * (cols - 1) + 1 : step,
            ]
        if self.project is not None:
            skip = self.project(skip)
        return self.act(h + skip), out_jump


class ResNet(PatchClassifier):
    """Stem conv (``stem_kernel``, stride 1) + BN + PReLU, residual blocks, linear to a logit.

    ``blocks`` is a list of ``(width, stride)``; each block holds two 3 x 3 convolutions.
    """

    def __init__(
        self,
        blocks: Sequence[Sequence[int]],
        stem_width: int = 32,
        stem_kernel: int = 7,
    ):
        super().__init__()
        blocks = [(int(w), int(s)) for w, s in blocks]
        self._init_kwargs = {
            "blocks": [list(b) for b in blocks],
            "stem_width": int(stem_width),
            "stem_kernel": int(stem_kernel),
        }
        self.stem = nn.Conv2d(1, stem_width, stem_kernel, bias=False)
        self.stem_bn = nn.BatchNorm2d(stem_width)
        self.stem_act = nn.PReLU(stem_width)
        layers = [(stem_kernel, 1)]
        modules = []
        in_channels = stem_width
        for width, stride in blocks:
            modules.append(ResidualBlock(in_channels, width, stride))
            layers += [(3, stride), (3, 1)]
            in_channels = width
        self.blocks = nn.ModuleList(modules)
        self.receptive_field = receptive_field(layers)
        self.phase_strides = tuple(stride for _, stride in layers)
        self.num_features = in_channels
        self.classifier = nn.Linear(self.num_features, 1)

    def stages(self) -> list[Stage]:
        """The stem, then one stage per residual block (see ``models.base``)."""
        return [self._stem, *module_stages(self.blocks, self.fold_batchnorm)]

    def _stem(self, x: Tensor, dense: bool | str, jump: int) -> tuple[Tensor, int]:
        x, jump = apply_conv_bn(self.stem, self.stem_bn, x, dense, jump, self.fold_batchnorm)
        return self.stem_act(x), jump


class PReLUResNet8(ResNet):
    """``model=resnet8_prelu``: 8 weighted layers, stem 7x7 + 3 residual blocks (strides 2, 2, 2)
    + linear, PReLU activations.

    Receptive field 1 + 6 + (2 + 4) + (4 + 8) + (8 + 16) = 49 pixels. Not Topaz's ``resnet8``
    (receptive field 71, ReLU; :class:`topaz_lightning.models.ResNet8`).
    """

    def __init__(self, width: int = 32):
        w = int(width)
        super().__init__(blocks=[(w, 2), (2 * w, 2), (4 * w, 2)], stem_width=w)
        self._init_kwargs = {"width": w}


class PReLUResNet16(ResNet):
    """``model=resnet16_prelu``: 16 weighted layers, stem 7x7 + 7 residual blocks (strides 1, 2,
    1, 2, 1, 1, 1) + linear, PReLU activations.

    Receptive field 1 + 6 + 4 + 6 + 8 + 12 + 16 + 16 + 16 = 85 pixels, for larger particles. Not
    Topaz's ``resnet16`` (receptive field 91, ReLU; :class:`topaz_lightning.models.ResNet16`).
    """

    def __init__(self, width: int = 32):
        w = int(width)
        super().__init__(
            blocks=[(w, 1), (2 * w, 2), (2 * w, 1), (4 * w, 2), (4 * w, 1), (4 * w, 1), (4 * w, 1)],
            stem_width=w,
        )
        self._init_kwargs = {"width": w}
