"""Shared machinery for patch classifiers that also score whole micrographs densely.

A classifier is written once, as a stack of unpadded ("valid") convolutions, some of them
strided. It runs in two modes:

* patch mode: the layers run as written (with their strides) on a ``w x w`` patch, where
  ``w`` is the receptive field; the last feature map is ``1 x 1``.
* dense mode: every stride is removed and the later layers are dilated by the product of the
  strides before them (the "jump"). On an image zero-padded by ``w // 2`` on each side this
  evaluates the patch-mode network at every pixel, so the score map has the input's size and
  ``score_map[b, y, x] == forward(patch centred on (x, y))`` exactly (up to float rounding).

No patch is ever unfolded, so dense scoring costs one feature map per layer, and can be
tiled to bound memory further (``tile_size``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def receptive_field(layers: list[tuple[int, int]]) -> int:
    """Receptive field of a chain of unpadded ``(kernel, stride)`` layers (dilation 1).

    Each layer widens the field by ``(kernel - 1) * jump``, where ``jump`` is the product of
    the strides of all earlier layers (the distance, in input pixels, between neighbouring
    outputs of the previous layer).
    """
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def apply_conv(conv: nn.Conv2d, x: Tensor, dense: bool, jump: int) -> tuple[Tensor, int]:
    """Run ``conv`` in patch mode (as written) or dense mode (stride -> dilation).

    Returns the output and the jump of the next layer (unchanged in patch mode, where the
    stride already subsampled the tensor; multiplied by the stride in dense mode).
    """
    if not dense:
        return conv(x), jump
    dilation = jump * conv.dilation[0]
    y = F.conv2d(x, conv.weight, conv.bias, stride=1, padding=0, dilation=dilation)
    return y, jump * conv.stride[0]


class PatchClassifier(nn.Module):
    """Base class: subclasses set ``receptive_field``, ``num_features``, ``classifier``
    (``nn.Linear(num_features, 1)``) and implement ``trunk(x, dense) -> (B, F, h, w)``."""

    receptive_field: int
    num_features: int
    classifier: nn.Linear

    def trunk(self, x: Tensor, dense: bool) -> Tensor:  # pragma: no cover - abstract
        """Feature maps of ``x``; in patch mode a ``receptive_field`` patch gives ``1 x 1``."""
        raise NotImplementedError

    def _centre_patches(self, patches: Tensor) -> Tensor:
        if patches.dim() != 4 or patches.shape[1] != 1:
            raise ValueError(f"expected patches of shape (B, 1, w, w), got {tuple(patches.shape)}")
        h, w = patches.shape[-2:]
        rf = self.receptive_field
        if h != w or h < rf or h % 2 != 1:
            raise ValueError(
                f"patches must be square with an odd side >= the receptive field {rf}, got {h}x{w}"
            )
        if h > rf:  # larger patches are centre-cropped: only the central w x w is seen
            start = (h - rf) // 2
            patches = patches[..., start : start + rf, start : start + rf]
        return patches

    def features(self, patches: Tensor) -> Tensor:
        """Final convolutional features ``(B, num_features)`` of patches ``(B, 1, w, w)``."""
        h = self.trunk(self._centre_patches(patches), dense=False)
        if h.shape[-2:] != (1, 1):  # would mean the architecture's arithmetic is wrong
            raise RuntimeError(f"trunk produced {tuple(h.shape[-2:])} maps, expected 1x1")
        return h.flatten(1)

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Logits ``(B,)`` from ``features(patches)``; lets an autoencoder share one trunk pass."""
        return self.classifier(features).squeeze(1)

    def forward(self, patches: Tensor) -> Tensor:
        """Logits ``(B,)`` for patches ``(B, 1, w, w)`` centred on the regions to classify."""
        return self.logits_from_features(self.features(patches))

    def _dense_logits(self, padded: Tensor) -> Tensor:
        h = self.trunk(padded, dense=True)
        weight = self.classifier.weight.view(1, self.num_features, 1, 1)
        return F.conv2d(h, weight, self.classifier.bias).squeeze(1)

    def score_map(self, images: Tensor, tile_size: int | None = None) -> Tensor:
        """Dense logits ``(B, H, W)`` for images ``(B, 1, H, W)``.

        ``score_map[b, y, x]`` equals ``forward`` on the ``receptive_field`` patch centred on
        ``(x, y)``, with zeros outside the image. Use the model in eval mode (BatchNorm running
        statistics) for that equality to hold. ``tile_size`` (output pixels per tile side)
        bounds memory on large micrographs; the result is identical to the untiled one.
        """
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(images.shape)}")
        r = self.receptive_field // 2
        padded = F.pad(images, (r, r, r, r))
        height, width = images.shape[-2:]
        if tile_size is None or (tile_size >= height and tile_size >= width):
            return self._dense_logits(padded)
        if tile_size < 1:
            raise ValueError(f"tile_size must be positive, got {tile_size}")
        out = images.new_empty((images.shape[0], height, width))
        for y0 in range(0, height, tile_size):
            y1 = min(y0 + tile_size, height)
            for x0 in range(0, width, tile_size):
                x1 = min(x0 + tile_size, width)
                # output pixels [y0, y1) need padded rows [y0, y1 + 2r)
                tile = padded[..., y0 : y1 + 2 * r, x0 : x1 + 2 * r]
                out[:, y0:y1, x0:x1] = self._dense_logits(tile)
        return out

    @property
    def config(self) -> dict:
        """Hydra node (with ``_target_``) that rebuilds this architecture."""
        cls = type(self)
        return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **self._init_kwargs}

    _init_kwargs: dict


__all__ = ["PatchClassifier", "apply_conv", "receptive_field"]
