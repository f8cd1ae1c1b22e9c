"""The paper's three-layer CNN region classifier with a 31 x 31 receptive field."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from torch import Tensor, nn

from topaz_lightning.models.base import PatchClassifier, Stage, apply_conv_bn, receptive_field

# (kernel, stride) of each convolution. "Stride by 2" is realised as the stride of the
# convolution itself (no pooling layer), which makes the receptive field exactly
#   1 + (7 - 1) * 1 + (5 - 1) * 2 + (5 - 1) * 4 = 31
# and turns a 31 x 31 patch into 13 x 13, then 5 x 5, then 1 x 1 feature maps.
CONV31_LAYERS = ((7, 2), (5, 2), (5, 1))


class Conv31(PatchClassifier):
    """conv7x7 32 + BN + PReLU (stride 2) -> conv5x5 64 + BN + PReLU (stride 2) ->
    conv5x5 128 + BN + PReLU -> linear to one logit. Receptive field 31 x 31.

    ``widths`` sets the three channel counts (paper: 32, 64, 128).
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"Conv31 needs three positive widths, got {widths}")
        self._init_kwargs = {"widths": widths}
        layers = []
        in_channels = 1
        for (kernel, stride), width in zip(CONV31_LAYERS, widths, strict=True):
            layers.append(
                nn.ModuleDict(
                    {
                        "conv": nn.Conv2d(in_channels, width, kernel, stride=stride, bias=False),
                        "bn": nn.BatchNorm2d(width),
                        "act": nn.PReLU(width),
                    }
                )
            )
            in_channels = width
        self.layers = nn.ModuleList(layers)
        self.receptive_field = receptive_field(list(CONV31_LAYERS))
        self.phase_strides = tuple(stride for _, stride in CONV31_LAYERS)
        self.num_features = widths[-1]
        self.classifier = nn.Linear(self.num_features, 1)

    def stages(self) -> list[Stage]:
        """One stage per conv + BN + PReLU layer (see ``models.base``)."""
        return [functools.partial(self._layer, layer) for layer in self.layers]

    def _layer(
        self, layer: nn.ModuleDict, x: Tensor, dense: bool | str, jump: int
    ) -> tuple[Tensor, int]:
        x, jump = apply_conv_bn(layer["conv"], layer["bn"], x, dense, jump, self.fold_batchnorm)
        return layer["act"](x), jump
