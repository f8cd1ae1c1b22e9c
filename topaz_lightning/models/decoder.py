"""The paper's DCGAN-style decoder: reconstructs a patch from the classifier's final features."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

# z (1 x 1) -> tconv 4x4 -> 4 x 4 -> tconv 4x4 stride 2 -> 10 x 10 -> tconv 3x3 stride 2 -> 21 x 21
NATIVE_SIZE = 21


class Decoder(nn.Module):
    """z -> transposed conv 4x4 128 + BN + LeakyReLU(0.2) -> transposed conv 4x4 32 stride 2 +
    BN + LeakyReLU(0.2) -> transposed conv 3x3 1 stride 2 -> 21 x 21 -> ``patch_size``.

    The paper's layers give a 21 x 21 image. To reach the ``patch_size`` x ``patch_size`` patch
    the classifier saw, a larger patch is obtained by bilinear interpolation of the 21 x 21
    output (``align_corners=False``, i.e. pixel areas stretched over the same field of view) and
    a smaller one by cropping the central ``patch_size`` x ``patch_size`` pixels.
    """

    def __init__(self, num_features: int, patch_size: int, widths: tuple[int, int] = (128, 32)):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        self.num_features = int(num_features)
        self.patch_size = int(patch_size)
        w1, w2 = (int(w) for w in widths)
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(self.num_features, w1, 4),
            nn.BatchNorm2d(w1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(w1, w2, 4, stride=2),
            nn.BatchNorm2d(w2),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(w2, 1, 3, stride=2),
        )

    def forward(self, features: Tensor) -> Tensor:
        """Reconstructions ``(B, 1, patch_size, patch_size)`` from features ``(B, F)``."""
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"expected features of shape (B, {self.num_features}), got {tuple(features.shape)}"
            )
        x = self.layers(features[:, :, None, None])
        size = self.patch_size
        if size > NATIVE_SIZE:
            return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        start = (NATIVE_SIZE - size) // 2
        return x[..., start : start + size, start : start + size]
