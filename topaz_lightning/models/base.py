"""Shared machinery for patch classifiers that also score whole micrographs densely.

A classifier is written once, as a stack of unpadded ("valid") convolutions, some of them
strided. It runs in two modes:

* patch mode: the layers run as written (with their strides) on a ``w x w`` patch, where
  ``w`` is the receptive field; the last feature map is ``1 x 1``.
* dense mode: the patch-mode network evaluated at every pixel of an image zero-padded by
  ``w // 2`` on each side, so the score map has the input's size and
  ``score_map[b, y, x] == forward(patch centred on (x, y))`` exactly (up to float rounding).
  Two equivalent implementations (``method``):

  - ``"dilated"``: every stride is removed and the later layers are dilated by the product of
    the strides before them (the "jump").
  - ``"polyphase"``: a convolution dilated by ``J`` on a map equals an
    ordinary convolution on each of the ``J x J`` polyphase components of that map. So each
    layer runs undilated; after a stride-``s`` convolution the map is split into its ``s x s``
    polyphase components, stacked along the batch dimension (``pixel_unshuffle`` + reshape,
    padded at the bottom/right to a multiple of ``s``). The final logits are interleaved back
    (``pixel_shuffle``, innermost split first) and cropped to the image size. Same arithmetic
    as the dilated path with ordinary stride-1 convolutions. Measured on this project's CPU
    (oneDNN, AVX-512) it is 10-30% *slower* than ``"dilated"``, whose dilated convolutions
    already run near the machine's sgemm peak, so ``"dilated"`` is the default.

In both, no patch is ever unfolded, so dense scoring costs one feature map per layer, and it
can be tiled to bound memory further (``tile_size``).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from topaz_lightning.errors import ConfigError

DenseMethod = Literal["dilated", "polyphase"]
#: one stage of a trunk: ``(x, dense, jump) -> (y, next jump)`` (see :func:`apply_conv`)
Stage = Callable[[Tensor, "bool | str", int], "tuple[Tensor, int]"]
DENSE_METHODS: tuple[str, ...] = ("dilated", "polyphase")
#: how weights and inputs are laid out: ``auto`` is channels_last on the CPU (oneDNN's NHWC
#: kernels: on the AMD EPYC of docs/training.md a conv31 Lightning step took 13% less CPU, a
#: whole tzl-pick run 8% (strided) and 11% (dense) less) and contiguous (NCHW) elsewhere, where
#: it was not measured
MEMORY_FORMATS: tuple[str, ...] = ("auto", "channels_last", "contiguous")


def use_channels_last(memory_format: str, device_type: str) -> bool:
    """Whether ``memory_format`` (one of :data:`MEMORY_FORMATS`) means channels_last on
    ``device_type`` (``"cpu"``, ``"cuda"``, ...)."""
    if memory_format not in MEMORY_FORMATS:
        raise ConfigError("memory_format", f"one of {MEMORY_FORMATS}, got {memory_format!r}")
    return memory_format == "channels_last" or (memory_format == "auto" and device_type == "cpu")


def laid_out(net: nn.Module, memory_format: str, device_type: str) -> nn.Module:
    """The network to run: ``net`` itself when its weights already have the layout
    ``memory_format`` asks for on ``device_type``, else a copy laid out so (the caller's network,
    e.g. the one being trained, keeps its own layout)."""
    channels_last = use_channels_last(memory_format, device_type)
    want = torch.channels_last if channels_last else torch.contiguous_format
    if all(p.is_contiguous(memory_format=want) for p in net.parameters() if p.dim() == 4):
        return net
    return copy.deepcopy(net).to(memory_format=want)


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


def dense_mode(dense: bool | str) -> str:
    """Normalise a ``dense`` argument: False -> ``"patch"``, True -> ``"dilated"`` (the
    original dense path), or one of ``"dilated"``/``"polyphase"``/``"patch"`` as given."""
    if dense is False:
        return "patch"
    if dense is True:
        return "dilated"
    if dense in DENSE_METHODS or dense == "patch":
        return str(dense)
    raise ValueError(f"dense scoring method must be one of {DENSE_METHODS}, got {dense!r}")


def split_phases(x: Tensor, stride: int) -> Tensor:
    """``(N, C, h, w)`` -> ``(N * s * s, C, ceil(h / s), ceil(w / s))``: the ``s x s`` polyphase
    components ``x[..., i::s, j::s]`` (row-major in ``(i, j)``) stacked along the batch.

    The map is zero-padded at the bottom/right to a multiple of ``s`` first; the padding only
    ever adds rows/columns past the valid ones, which :func:`merge_phases` callers crop off.
    """
    if stride == 1:
        return x
    n, c, h, w = x.shape
    x = F.pad(x, (0, -w % stride, 0, -h % stride))
    x = F.pixel_unshuffle(x, stride)  # channel c * s * s + i * s + j holds x[c, i::s, j::s]
    x = x.view(n, c, stride * stride, *x.shape[-2:]).transpose(1, 2)
    return x.reshape(n * stride * stride, c, *x.shape[-2:])


def merge_phases(x: Tensor, stride: int) -> Tensor:
    """Inverse of :func:`split_phases` (without the crop): ``(N * s * s, C, h, w)`` ->
    ``(N, C, s * h, s * w)``, interleaving the polyphase components back."""
    if stride == 1:
        return x
    ns2, c, h, w = x.shape
    n = ns2 // (stride * stride)
    x = x.view(n, stride * stride, c, h, w).transpose(1, 2)
    return F.pixel_shuffle(x.reshape(n, c * stride * stride, h, w), stride)


def apply_conv(conv: nn.Conv2d, x: Tensor, dense: bool | str, jump: int) -> tuple[Tensor, int]:
    """Run ``conv`` in patch mode (as written) or one of the dense modes.

    ``dense`` is False (patch mode), True or ``"dilated"`` (stride -> dilation by ``jump``),
    or ``"polyphase"`` (undilated stride-1 conv on the polyphase components stacked in the
    batch, then a split into ``stride x stride`` finer components; see :func:`split_phases`).
    Returns the output and the jump of the next layer (unchanged in patch mode, where the
    stride already subsampled the tensor; multiplied by the stride in the dense modes).
    """
    mode = dense_mode(dense)
    if mode == "patch":
        return conv(x), jump
    return _dense_conv(conv, conv.weight, conv.bias, x, mode, jump)


def _dense_conv(
    conv: nn.Conv2d, weight: Tensor, bias: Tensor | None, x: Tensor, mode: str, jump: int
) -> tuple[Tensor, int]:
    """``conv``'s geometry with the given weight/bias in dense ``mode``; returns (y, next jump)."""
    stride = conv.stride[0]
    if mode == "polyphase":
        y = F.conv2d(x, weight, bias, stride=1, padding=0, dilation=conv.dilation)
        return split_phases(y, stride), jump * stride
    y = F.conv2d(x, weight, bias, stride=1, padding=0, dilation=jump * conv.dilation[0])
    return y, jump * stride


def apply_conv_bn(
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d,
    x: Tensor,
    dense: bool | str,
    jump: int,
    fold: bool = True,
) -> tuple[Tensor, int]:
    """``bn(conv(x))`` via :func:`apply_conv`. In a dense mode with ``fold`` and ``bn`` in eval
    mode, the BatchNorm (an affine map per channel) is folded into the convolution's weight and
    bias, which saves one pass over the feature map; the result differs only by float rounding.
    Patch mode (training and ``forward``) always runs the two layers as written."""
    mode = dense_mode(dense)
    if mode == "patch" or not fold or bn.training or not bn.track_running_stats:
        y, jump = apply_conv(conv, x, mode, jump)
        return bn(y), jump
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    return _dense_conv(conv, conv.weight * scale.view(-1, 1, 1, 1), shift, x, mode, jump)


def run_stages(
    stages: Sequence[Stage], x: Tensor, dense: bool | str, jump: int = 1
) -> tuple[Tensor, int]:
    """Run ``stages`` in order on ``x`` entering with ``jump``; returns the output and its jump."""
    for stage in stages:
        x, jump = stage(x, dense, jump)
    return x, jump


def module_stages(modules: Sequence[nn.Module], fold: bool) -> list[Stage]:
    """Stages from modules whose ``forward(x, dense, jump, fold)`` returns ``(y, jump)``."""
    return [functools.partial(module, fold=fold) for module in modules]


class PatchClassifier(nn.Module):
    """Base class: subclasses set ``receptive_field``, ``num_features``, ``classifier``
    (``nn.Linear(num_features, 1)``), ``phase_strides`` (the strides of the trunk's
    convolutions, in the order they run) and implement ``stages()``: the trunk as a chain of
    :data:`Stage` callables, run in order by ``trunk(x, dense) -> (B, F, h, w)``, where ``dense``
    is False, ``"dilated"`` or ``"polyphase"`` (see :func:`apply_conv`). Strided picking's exact
    windows run the leading stages once on the whole micrograph and the rest per window
    (``picking.strided.window_scores``)."""

    receptive_field: int
    num_features: int
    classifier: nn.Linear
    phase_strides: tuple[int, ...]
    #: dense scoring folds eval-mode BatchNorm into the preceding convolution (about 6% faster
    #: on CPU, same scores up to float rounding); set False for the layers exactly as written
    fold_batchnorm: bool = True

    def stages(self) -> Sequence[Stage]:
        """The trunk's layers (or blocks) in order, each a :data:`Stage`. A subclass that
        writes ``trunk`` itself instead is one stage (nothing of it is shared)."""
        if type(self).trunk is PatchClassifier.trunk:
            raise NotImplementedError(f"{type(self).__name__} defines neither stages nor trunk")
        total = math.prod(self.phase_strides)

        def whole(x: Tensor, dense: bool | str, jump: int) -> tuple[Tensor, int]:
            # the jump grows in the dense modes only (apply_conv)
            return self.trunk(x, dense), jump if dense_mode(dense) == "patch" else jump * total

        return [whole]

    def trunk(self, x: Tensor, dense: bool | str) -> Tensor:
        """Feature maps of ``x``; in patch mode a ``receptive_field`` patch gives ``1 x 1``."""
        return run_stages(self.stages(), x, dense)[0]

    def dense_head(self, features: Tensor) -> Tensor:
        """Logits ``(B, h, w)`` of dilated-mode feature maps ``(B, F, h, w)``: the classifier as
        a 1 x 1 convolution."""
        weight = self.classifier.weight.view(1, self.num_features, 1, 1)
        return F.conv2d(features, weight, self.classifier.bias).squeeze(1)

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

    def _dense_logits(self, padded: Tensor, method: str) -> Tensor:
        logits = self.dense_head(self.trunk(padded, dense=method))[:, None]
        if method == "polyphase":
            for stride in reversed(self.phase_strides):  # innermost split is undone first
                logits = merge_phases(logits, stride)
            if logits.shape[0] != padded.shape[0]:  # phase_strides disagrees with the trunk
                raise RuntimeError(
                    f"polyphase merge left batch {logits.shape[0]}, expected {padded.shape[0]}; "
                    f"check phase_strides={self.phase_strides}"
                )
            # the splits padded at the bottom/right only: the valid map is the top-left corner
            out_h, out_w = (n - self.receptive_field + 1 for n in padded.shape[-2:])
            logits = logits[..., :out_h, :out_w]
        return logits.squeeze(1)

    def valid_score_map(self, padded: Tensor, method: DenseMethod = "dilated") -> Tensor:
        """Dense logits ``(B, H - w + 1, W - w + 1)`` of ``(B, 1, H, W)`` inputs that already
        hold their context (no zero padding added): ``score_map`` of a window of a larger
        micrograph (used by coarse-to-fine scoring, ``picking.coarse``)."""
        return self._dense_logits(padded, method)

    def score_map(
        self, images: Tensor, tile_size: int | None = None, method: DenseMethod = "dilated"
    ) -> Tensor:
        """Dense logits ``(B, H, W)`` for images ``(B, 1, H, W)``.

        ``score_map[b, y, x]`` equals ``forward`` on the ``receptive_field`` patch centred on
        ``(x, y)``, with zeros outside the image. Use the model in eval mode (BatchNorm running
        statistics) for that equality to hold. ``tile_size`` (output pixels per tile side)
        bounds memory on large micrographs; the result is identical to the untiled one.
        ``method`` picks the implementation (module docstring): ``"dilated"`` (default, the
        faster one as measured on CPU) or ``"polyphase"``; both give the same scores up to float
        rounding. ``fold_batchnorm`` (attribute) folds eval BatchNorm into the convolutions.
        """
        if method not in DENSE_METHODS:
            raise ValueError(f"method must be one of {DENSE_METHODS}, got {method!r}")
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(images.shape)}")
        r = self.receptive_field // 2
        padded = F.pad(images, (r, r, r, r))
        height, width = images.shape[-2:]
        if tile_size is None or (tile_size >= height and tile_size >= width):
            return self._dense_logits(padded, method)
        if tile_size < 1:
            raise ValueError(f"tile_size must be positive, got {tile_size}")
        out = images.new_empty((images.shape[0], height, width))
        for y0 in range(0, height, tile_size):
            y1 = min(y0 + tile_size, height)
            for x0 in range(0, width, tile_size):
                x1 = min(x0 + tile_size, width)
                # output pixels [y0, y1) need padded rows [y0, y1 + 2r)
                tile = padded[..., y0 : y1 + 2 * r, x0 : x1 + 2 * r]
                out[:, y0:y1, x0:x1] = self._dense_logits(tile, method)
        return out

    @property
    def config(self) -> dict:
        """Hydra node (with ``_target_``) that rebuilds this architecture."""
        cls = type(self)
        return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **self._init_kwargs}

    _init_kwargs: dict


__all__ = [
    "DENSE_METHODS",
    "PatchClassifier",
    "Stage",
    "apply_conv",
    "apply_conv_bn",
    "dense_mode",
    "merge_phases",
    "module_stages",
    "receptive_field",
    "run_stages",
    "split_phases",
]
