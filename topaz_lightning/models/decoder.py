"""The paper's DCGAN-style decoder: reconstructs a patch from the classifier's final features."""

from __future__ import annotations

from torch import Tensor, nn


def upsampling_plan(patch_size: int) -> tuple[int, list[int], int]:
    """``(first_kernel, output_paddings, final_output_padding)`` reaching ``patch_size`` natively.

    The decoder is: transposed conv ``k0 x k0`` (1 x 1 -> ``k0 x k0``), then transposed convs 4x4
    stride 2 padding 1 (``s -> 2 s + output_padding``), then a transposed conv 3x3 stride 2
    padding 1 (``s -> 2 s - 1 + output_padding``). Working back from ``patch_size``, each stride-2
    layer halves the size (rounding down, the remainder becoming its output padding) while the
    size is >= 8; what is left is ``k0`` (4..7). At 31 this is 4 -> 8 -> 16 -> 31 with no output
    padding: the DCGAN/Topaz generator for the paper's 31 x 31 patches.
    """
    size = int(patch_size)
    if size < 1:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    half = (size + 1) // 2  # final layer: 2 * half - 1 + pad = size
    final_pad = size - (2 * half - 1)
    pads: list[int] = []
    while half >= 8:
        pads.append(half % 2)
        half //= 2
    return half, pads[::-1], final_pad


class Decoder(nn.Module):
    """DCGAN-style decoder producing ``patch_size`` x ``patch_size`` reconstructions natively.

    z (1 x 1, ``num_features``) -> transposed conv ``k0 x k0`` to ``units * 2**depth`` channels +
    BN + LeakyReLU(0.2) -> ``depth`` x [transposed conv 4x4 stride 2, channels halved, + BN +
    LeakyReLU(0.2)] -> transposed conv 3x3 stride 2 to 1 channel. Sizes from
    :func:`upsampling_plan`; for the paper's conv31 (31 x 31): 4 -> 8 -> 16 -> 31 with 128, 64,
    32 channels, as Topaz builds it (``ConvGenerator``, ngf = 32, depth 2). No interpolation and no
    crop: every output pixel is a transposed-convolution output.
    """

    def __init__(self, num_features: int, patch_size: int, units: int = 32):
        super().__init__()
        self.num_features = int(num_features)
        self.patch_size = int(patch_size)
        units = int(units)
        if units < 1:
            raise ValueError(f"units must be positive, got {units}")
        first_kernel, pads, final_pad = upsampling_plan(self.patch_size)
        channels = units * 2 ** len(pads)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(self.num_features, channels, first_kernel, bias=False),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(0.2),
        ]
        for pad in pads:
            layers += [
                nn.ConvTranspose2d(
                    channels, channels // 2, 4, stride=2, padding=1, output_padding=pad, bias=False
                ),
                nn.BatchNorm2d(channels // 2),
                nn.LeakyReLU(0.2),
            ]
            channels //= 2
        layers.append(
            nn.ConvTranspose2d(channels, 1, 3, stride=2, padding=1, output_padding=final_pad)
        )
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        """Reconstructions ``(B, 1, patch_size, patch_size)`` from features ``(B, F)``."""
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"expected features of shape (B, {self.num_features}), got {tuple(features.shape)}"
            )
        out = self.layers(features[:, :, None, None])
        if out.shape[-1] != self.patch_size:  # would mean upsampling_plan's arithmetic is wrong
            raise RuntimeError(f"decoder produced {out.shape[-1]} px, expected {self.patch_size}")
        return out
