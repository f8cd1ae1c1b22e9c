"""Coarse-to-fine scoring: the classifier at its native stride, exact dense scores only where picks can be.

A classifier whose strides multiply to ``s`` (conv31, resnet8: 4; resnet8_prelu: 8), run on a
whole micrograph as written (patch mode, no dilation), gives the dense score at every ``s``-th
pixel: output ``[i, j]`` is the patch centred on pixel ``(x, y) = (s * j, s * i)``. That *coarse*
map costs about ``1 / s**2`` of dense scoring. The other ``s * s - 1`` polyphase components are computed
only in square tiles (``fine_tile`` pixels a side, batched, with their receptive-field context)
chosen by a flood fill at a score ``level``:

1. seed: every tile holding a coarse sample with score ``>= level`` (``- seed_margin``);
2. grow: after scoring tiles densely, every unscored tile holding a pixel 8-adjacent to a scored
   pixel with score ``>= level`` is scored too; repeat until nothing is added.

Guarantee (exact, not statistical): every 8-connected region of pixels whose dense score is
``>= level`` and which contains at least one coarse sample is scored in full. Greedy NMS decides
a pick with score ``v`` only from candidates scoring ``>= v``, so running the same NMS on the
returned map (unscored pixels ``-inf``, coarse samples outside the tiles keep their exact
scores) yields exactly the dense picks with score ``>= level``, up to float rounding of the
scores, *unless* some region above ``level`` contains no coarse sample at all (a peak narrower
than the stride that falls between samples; not seen on the data measured, see
docs/picking_evaluation.md). Picks below ``level`` come from the coarse samples and partly
scored tiles: real scores at slightly shifted positions (within ``s / 2`` pixels of a sample).
The tiles' crop is a multiple of the stride, so the flood fill never needs a finer unit.

Test-time augmentation (``tta=8``) averages the logits of the 8 rotations/mirrors of every
patch (``tta=1``: the plain classifier); the micrograph is zero-padded so the coarse grid maps
onto itself under each of them, which leaves every in-image score unchanged (the dense
contract already pads with zeros).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation
from torch import nn

from topaz_lightning.errors import ConfigError

TTA_CHOICES = (1, 8)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th (0-7) rotation/mirror of the last two dims: mirror in x if ``k >= 4``, then
    rotate by ``(k % 4) * 90`` degrees."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x


def dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` ``k``."""
    if k % 4:
        x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def check_tta(tta: int) -> int:
    """``tta`` as an int in TTA_CHOICES or ConfigError."""
    if tta not in TTA_CHOICES:
        raise ConfigError("tta", f"must be one of {TTA_CHOICES}, got {tta!r}")
    return int(tta)


def native_stride(net: nn.Module) -> int:
    """Product of the classifier's convolution strides (distance between coarse samples)."""
    strides = getattr(net, "phase_strides", None)
    if strides is None or not hasattr(net, "trunk"):
        raise ConfigError(
            "scoring",
            f"coarse_to_fine needs a PatchClassifier (trunk + phase_strides); "
            f"{type(net).__name__} has none: use scoring=dense",
        )
    return int(math.prod(strides))


def coarse_scores(net: nn.Module, images: torch.Tensor, tta: int = 1) -> torch.Tensor:
    """Logits ``(B, ceil(H / s), ceil(W / s))`` at pixels ``(s * i, s * j)`` of images
    ``(B, 1, H, W)``: the network run as written (strided) on the zero-padded images.

    With ``tta=8`` the 8 rotations/mirrors are averaged; this needs ``(H - 1)`` and ``(W - 1)``
    to be multiples of ``s`` so that each of them maps the sample grid onto itself.
    """
    r = net.receptive_field // 2
    s = native_stride(net)
    if tta != 1 and ((images.shape[-2] - 1) % s or (images.shape[-1] - 1) % s):
        raise ValueError(f"tta needs (H - 1) and (W - 1) divisible by the stride {s}")
    weight = net.classifier.weight.view(1, net.num_features, 1, 1)
    total = None
    for k in range(tta):
        x = F.pad(dihedral(images, k), (r, r, r, r))
        logits = F.conv2d(net.trunk(x, dense=False), weight, net.classifier.bias)[:, 0]
        logits = dihedral_inverse(logits, k)
        total = logits if total is None else total + logits
    return total / tta


def _fine_tiles(
    net: nn.Module, context: torch.Tensor, tiles: np.ndarray, tile: int, tta: int, chunk: int
) -> np.ndarray:
    """Dense logits ``(n, tile, tile)`` of the tiles ``(n, 2)`` (tile row, col) of ``context``
    (the micrograph zero-padded by the receptive-field radius on every side)."""
    side = tile + net.receptive_field - 1
    windows = context.unfold(0, side, tile).unfold(1, side, tile)  # (rows, cols, side, side) view
    out = np.empty((len(tiles), tile, tile), dtype=np.float32)
    for start in range(0, len(tiles), chunk):
        part = tiles[start : start + chunk]
        rows = torch.as_tensor(part[:, 0], device=context.device)
        cols = torch.as_tensor(part[:, 1], device=context.device)
        crops = windows[rows, cols][:, None]  # (n, 1, side, side)
        total = None
        for k in range(tta):
            logits = dihedral_inverse(net.valid_score_map(dihedral(crops, k)), k)
            total = logits if total is None else total + logits
        out[start : start + len(part)] = (total / tta).float().cpu().numpy()
    return out


def dense_logits(
    net: nn.Module, images: torch.Tensor, tile_size: int | None = 1024, tta: int = 1
) -> torch.Tensor:
    """Dense logits ``(B, H, W)`` of images ``(B, 1, H, W)`` with ``net.score_map`` (tiled when
    it takes ``tile_size``), averaged over the ``tta`` rotations/mirrors."""
    tiled = tile_size is not None and "tile_size" in inspect.signature(net.score_map).parameters
    total = None
    for k in range(tta):
        x = dihedral(images, k)
        logits = net.score_map(x, tile_size=tile_size) if tiled else net.score_map(x)
        logits = dihedral_inverse(logits, k)
        total = logits if total is None else total + logits
    return total if tta == 1 else total / tta


@dataclass
class CoarseToFineResult:
    """Output of :func:`coarse_to_fine_score_map`.

    ``score_map`` (H, W) float32: exact dense logits in the scored tiles, the coarse samples'
    (also exact) logits elsewhere on the grid, ``-inf`` everywhere else; NMS-ready.
    ``coarse`` (ceil(H/s), ceil(W/s)): the coarse samples. ``level``: the flood-fill level.
    ``fraction_scored``: share of the micrograph's pixels scored densely. ``rounds``: flood-fill
    rounds. ``stride``: ``s``.
    """

    score_map: np.ndarray
    coarse: np.ndarray
    level: float
    fraction_scored: float
    rounds: int
    stride: int


def coarse_to_fine_score_map(
    net: nn.Module,
    image: torch.Tensor,
    level: float,
    fine_tile: int = 16,
    tta: int = 1,
    chunk: int = 64,
    max_tile_share: float = 0.5,
    seed_margin: float = 0.0,
) -> CoarseToFineResult:
    """Coarse-to-fine logits of one micrograph ``image`` (H, W) tensor (module docstring).

    ``level`` (logit): every 8-connected region scoring ``>= level`` that holds a coarse sample
    is scored exactly, so NMS on ``score_map`` returns exactly the dense picks scoring
    ``>= level``. ``fine_tile`` (pixels, rounded up to a multiple of the stride) trades
    wasted pixels against per-tile context overhead; ``chunk`` tiles are scored per batch.
    ``seed_margin`` (logits) also seeds the tiles of samples scoring ``>= level - seed_margin``:
    it catches regions above ``level`` that lie between samples near such a sample (they
    widen the guarantee; growth stays at ``level``).
    Once more than ``max_tile_share`` of the tiles need scoring, the whole micrograph is scored
    densely instead (a tile's context makes it ~1.6x dearer per pixel than whole-image dense
    scoring), so coarse-to-fine never costs much more than dense. The net must be in eval mode
    (the caller's job, as for dense scoring).
    """
    if image.dim() != 2:
        raise ValueError(f"expected a 2-D micrograph tensor, got shape {tuple(image.shape)}")
    if math.isnan(level):
        raise ConfigError("level", "must be a number (logit) or -inf, got NaN")
    tta = check_tta(tta)
    s = native_stride(net)
    tile = max(s, int(math.ceil(int(fine_tile) / s)) * s)
    height, width = image.shape
    r = net.receptive_field // 2

    # coarse grid: pad to (s * n + 1) so every rotation/mirror keeps the grid (zeros beyond the
    # image change no in-image score)
    grid_h, grid_w = -(-(height - 1) // s) * s + 1, -(-(width - 1) // s) * s + 1
    padded = F.pad(image, (0, grid_w - width, 0, grid_h - height))[None, None]
    coarse = coarse_scores(net, padded, tta)[0].float().cpu().numpy()
    coarse = coarse[: -(-height // s), : -(-width // s)]  # samples inside the image only

    rows, cols = -(-height // tile), -(-width // tile)
    context = F.pad(image, (r, r + cols * tile - width, r, r + rows * tile - height))
    canvas = np.full((rows * tile, cols * tile), -np.inf, dtype=np.float32)
    scored = np.zeros((rows, cols), dtype=bool)
    # seeds: tiles holding a coarse sample >= level
    pending = np.zeros((rows, cols), dtype=bool)
    seed_i, seed_j = np.nonzero(coarse >= level - seed_margin)
    pending[(seed_i * s) // tile, (seed_j * s) // tile] = True
    rounds = 0
    eight = np.ones((3, 3), dtype=bool)
    while pending.any():
        rounds += 1
        if (scored | pending).mean() > max_tile_share:
            dense = dense_logits(net, image[None, None], 1024, tta)[0].float().cpu().numpy()
            coarse_exact = dense[::s, ::s]
            return CoarseToFineResult(dense, coarse_exact, float(level), 1.0, rounds, s)
        tiles = np.argwhere(pending)
        values = _fine_tiles(net, context, tiles, tile, tta, chunk)
        for (ti, tj), block in zip(tiles, values, strict=True):
            canvas[ti * tile : (ti + 1) * tile, tj * tile : (tj + 1) * tile] = block
        canvas[height:, :] = -np.inf  # pixels of edge tiles beyond the image are not scores
        canvas[:, width:] = -np.inf
        scored |= pending
        # grow: tiles holding a pixel 8-adjacent to a scored pixel >= level
        near = binary_dilation(canvas >= level, structure=eight)
        touched = near.reshape(rows, tile, cols, tile).any(axis=(1, 3))
        pending = touched & ~scored

    score_map = canvas[:height, :width].copy()
    fraction = float(np.isfinite(score_map).mean()) if score_map.size else 0.0
    # coarse samples outside the scored tiles: exact scores, they keep the low picks nearby
    gy, gx = np.meshgrid(
        np.arange(coarse.shape[0]) * s, np.arange(coarse.shape[1]) * s, indexing="ij"
    )
    outside = ~np.isfinite(score_map[gy, gx])
    score_map[gy[outside], gx[outside]] = coarse[outside]
    return CoarseToFineResult(score_map, coarse, float(level), fraction, rounds, s)
