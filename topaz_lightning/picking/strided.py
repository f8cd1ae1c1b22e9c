"""Strided picking: the classifier at its native stride, NMS on that grid, each pick refined on real positions.

A classifier whose convolution strides multiply to ``s`` (conv31, resnet8, resnet16 and
resnet16_prelu: 4; resnet8_prelu: 8), run on a whole micrograph as written, gives the dense
score at every ``s``-th pixel
(:func:`topaz_lightning.picking.coarse.coarse_scores`) for about ``1 / s**2`` of the cost of
dense scoring. A particle is many strides wide, so the coarse map already finds the particles;
what it loses is position (a pick can sit up to ``s / 2`` pixels from the best pixel) and the
score of that best pixel. Strided picking therefore:

1. scores the coarse map (the ``s``-th pixels);
2. runs greedy NMS on the coarse grid with the NMS radius divided by ``s`` (coarse samples below
   ``threshold - refine_margin`` are not candidates: refinement can only raise a score);
3. refines every kept pick (``refine``):

   - ``"window"`` (exact): scores the ``(2 * (s // 2) + 1)**2`` real pixels around the sample
     (the sample itself included) with the dense network on a small window holding their
     receptive fields, all picks in batches, and moves the pick to the best of them with that
     pixel's score (a dense score, equal to what ``scoring=dense`` gives at that pixel);
     With ``exact_top`` only the best ``exact_top`` picks (ranked by their quadratic estimate)
     get windows, the rest keep the quadratic estimate: the picks a user keeps are exact, the
     long tail of weak maxima costs nothing;
   - ``"quadratic"`` (no network cost): per axis a parabola through the sample and its two
     coarse neighbours gives the pick's sub-sample position and peak score;
   - ``"centroid"`` (no network cost): moves the pick to the softmax-weighted centroid of its
     3 x 3 coarse neighbourhood and keeps the sample's score;
   - ``"none"``: the coarse sample's position and score;

4. re-ranks by the refined score and drops picks below ``threshold``. The coarse samples of
   two picks are at least the NMS radius apart; refinement moves each by at most
   ``s / sqrt(2)``, so refined picks are at least ``radius - sqrt(2) * s`` apart (no second
   NMS on the refined positions: on the real data it removed true particles).

A network of stride 1 gives exactly the dense picks (the coarse map is the dense map and the
window is the pixel itself). The band mask, top-k, and the frame conversion are applied after
this by :func:`topaz_lightning.picking.predict.pick_micrograph`, exactly as for dense scoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from topaz_lightning.errors import ConfigError
from topaz_lightning.models.base import laid_out, run_stages
from topaz_lightning.picking.coarse import (
    check_tta,
    coarse_scores,
    dihedral,
    dihedral_inverse,
    native_stride,
)
from topaz_lightning.picking.nms import NMS_BOUNDARIES, non_maximum_suppression

#: how strided picking refines a coarse pick (module docstring)
REFINE_METHODS = ("window", "quadratic", "centroid", "none")
#: coarse samples down to ``threshold - DEFAULT_REFINE_MARGIN`` (logits) are refined: the best
#: pixel near a sample can score above it (same margin as coarse_to_fine's seeds)
DEFAULT_REFINE_MARGIN = 2.0


def check_refine(refine: str) -> str:
    """``refine`` if it is one of REFINE_METHODS, else ConfigError."""
    if refine not in REFINE_METHODS:
        raise ConfigError("refine", f"must be one of {REFINE_METHODS}, got {refine!r}")
    return refine


@dataclass
class StridedPicks:
    """Output of :func:`strided_picks` (model frame).

    ``xy`` (n, 2) float64 columns ``x, y``; ``scores`` (n,) float64 logits, best first.
    ``coarse`` (ceil(H / s), ceil(W / s)) float32: the coarse logits at pixels ``(s * i, s * j)``.
    ``stride``: ``s``. ``n_refined``: picks scored on a window. ``sample_xy`` (n, 2): the coarse
    sample (model px, x, y) each pick was refined from. ``score_map``: (H, W) picture of the
    scores (each pixel the nearest coarse sample, refined windows pasted in) when asked.
    """

    xy: np.ndarray
    scores: np.ndarray
    coarse: np.ndarray
    stride: int
    n_refined: int
    sample_xy: np.ndarray
    score_map: np.ndarray | None = None


def _coarse_map(net: nn.Module, image: torch.Tensor, tta: int) -> np.ndarray:
    """Coarse logits of ``image`` (H, W): samples at ``(s * i, s * j)`` inside the image."""
    s = native_stride(net)
    height, width = image.shape
    if tta == 1:
        padded = image[None, None]
    else:  # (s * n + 1) a side: every rotation/mirror maps the grid onto itself
        grid_h, grid_w = -(-(height - 1) // s) * s + 1, -(-(width - 1) // s) * s + 1
        padded = F.pad(image, (0, grid_w - width, 0, grid_h - height))[None, None]
    coarse = coarse_scores(net, padded, tta)[0].float().cpu().numpy()
    return np.ascontiguousarray(coarse[: -(-height // s), : -(-width // s)])


#: input pixels per batch of refinement windows (chunk = this // side**2, side = the window plus
#: the receptive field): small batches keep the activations in cache. 512 windows, one thread,
#: AMD EPYC (2 MB L2), `scripts/bench_strided.py --window-timing MODEL`: resnet8 (75 px crops)
#: 4.6-4.7 s at 256 a batch, 3.4-3.6 s by this rule (11); conv31 (35 px crops) 0.39-0.43 s at
#: 256, 0.31-0.44 s by this rule (53): the same within the noise
WINDOW_BATCH_PIXELS = 2**16
#: a leading stage of the network runs once on the whole micrograph, not per window, when the
#: windows would compute this many times the pixels of its output (overlapping windows compute
#: the same pixels again). Not 1: a batch of small crops runs faster per pixel than one large
#: map. resnet8, 700 windows on a 1024 px micrograph (AMD EPYC, 1 thread): its first two stages
#: (windows 2.8x and 1.9x the whole map's pixels) took 0.05 s and 0.57 s on the whole map against
#: 0.15 s and 1.06 s in the windows; its third (1.25x) 2.1 s against 1.07 s
WINDOW_SHARE_RATIO = 1.5
#: the shared stages' output may take this much memory (bytes); stages beyond run per window
WINDOW_SHARE_MAX_BYTES = 1 << 30
#: the shared stages run on bands of the micrograph this many output rows high, so that their
#: intermediate maps stay small (the band's rows plus the stages' field)
SHARED_BAND_ROWS = 128


def _stage_geometry(stages: list, rf: int, image: torch.Tensor) -> list[tuple[int, int]]:
    """``(field, channels)`` after each of a network's ``stages``: the input pixels (per side)
    one output pixel sees so far and the output's channels, from one patch of the receptive
    field ``rf`` in dilated mode."""
    x, jump = image.new_zeros((1, 1, rf, rf)), 1
    geometry = []
    for stage in stages:
        x, jump = stage(x, "dilated", jump)
        geometry.append((rf - x.shape[-1] + 1, x.shape[1]))
    return geometry


def shared_stage_count(
    geometry: list[tuple[int, int]], n_windows: int, side_in: int, context_hw: tuple[int, int]
) -> int:
    """How many leading stages run once on the whole ``context_hw`` map rather than in each of
    ``n_windows`` crops of side ``side_in``: those whose windows would compute at least
    :data:`WINDOW_SHARE_RATIO` times the pixels of the whole map's output, within
    :data:`WINDOW_SHARE_MAX_BYTES` (``geometry`` from :func:`_stage_geometry`)."""
    count = 0
    for field, channels in geometry:
        whole = (context_hw[0] - field + 1) * (context_hw[1] - field + 1)
        per_window = (side_in - field + 1) ** 2
        if n_windows * per_window < WINDOW_SHARE_RATIO * whole:
            break
        if whole * channels * 4 > WINDOW_SHARE_MAX_BYTES:
            break
        count += 1
    return count


def _shared_map(stages: list, context: torch.Tensor, field: int) -> tuple[torch.Tensor, int]:
    """``stages`` (whose output pixel sees ``field`` input pixels a side) run in dilated mode on
    the whole ``context`` (H, W), in bands of :data:`SHARED_BAND_ROWS` output rows so that only
    the final map is held whole. Returns that map as an (H', W', C) view (the crops cut from it
    come out channels-last, as the weights' layout wants) and the jump after the stages."""
    rows_out = context.shape[0] - field + 1
    whole, jump = None, 1
    for top in range(0, rows_out, SHARED_BAND_ROWS):
        bottom = min(top + SHARED_BAND_ROWS, rows_out)
        band, jump = run_stages(stages, context[None, None, top : bottom + field - 1], "dilated")
        band = band[0].permute(1, 2, 0)
        if whole is None:
            whole = band.new_empty((rows_out, *band.shape[1:]))
        whole[top:bottom] = band
    return whole, jump


def window_scores(
    net: nn.Module,
    image: torch.Tensor,
    xy_px_model: np.ndarray,
    half: int,
    tta: int = 1,
    chunk: int | None = None,
) -> np.ndarray:
    """Dense logits ``(n, 2 * half + 1, 2 * half + 1)`` of the pixels ``(x + dx, y + dy)``,
    ``|dx|, |dy| <= half``, around each integer position ``xy_px_model`` (n, 2) of ``image``
    (H, W); pixels outside the image get ``-inf``. Each window is scored with the network's
    dense map on a crop holding its receptive fields, so a value equals the dense score of that
    pixel (zeros beyond the image, as in dense scoring) up to float rounding. ``chunk``: windows
    per batch; None: as many as hold :data:`WINDOW_BATCH_PIXELS` input pixels.

    Where many windows overlap, the network's leading stages run once on the whole zero-padded
    micrograph and the windows are cropped from their output (:func:`shared_stage_count`;
    ``tta=1`` only): the same arithmetic on the same pixels, in the dilated dense mode."""
    height, width = image.shape
    side_out = 2 * half + 1
    out = np.full((len(xy_px_model), side_out, side_out), -np.inf, dtype=np.float32)
    if len(xy_px_model) == 0:
        return out
    r = net.receptive_field // 2
    pad = r + half
    context = F.pad(image, (pad, pad, pad, pad))
    side_in = side_out + 2 * r
    chunk = chunk or max(1, WINDOW_BATCH_PIXELS // side_in**2)
    xs = np.asarray(xy_px_model[:, 0], dtype=np.int64)
    ys = np.asarray(xy_px_model[:, 1], dtype=np.int64)
    shared = 0
    if tta == 1 and hasattr(net, "stages"):
        stages = net.stages()
        geometry = _stage_geometry(stages, net.receptive_field, image)
        shared = shared_stage_count(geometry, len(xs), side_in, tuple(context.shape))
    if shared:
        field = geometry[shared - 1][0]
        source, jump = _shared_map(stages[:shared], context, field)
        side = side_in - field + 1
    else:
        source, side = context, side_in
    steps = torch.arange(side, device=image.device)
    for start in range(0, len(xs), chunk):
        # output pixel x needs context columns x - r + pad ...: the crop starts at x0 - half - r
        # + pad = x0 (context frame) for the window's first pixel x0 - half; a stage's output
        # pixel i holds the context pixels from i on, so its crops start there too
        x0 = torch.as_tensor(xs[start : start + chunk], device=image.device)
        y0 = torch.as_tensor(ys[start : start + chunk], device=image.device)
        rows = (y0[:, None] + steps[None, :])[:, :, None]
        cols = (x0[:, None] + steps[None, :])[:, None, :]
        if shared:
            features, _ = run_stages(
                stages[shared:], source[rows, cols].permute(0, 3, 1, 2), "dilated", jump
            )
            logits = net.dense_head(features)
        else:
            crops = source[rows, cols][:, None]  # (n, 1, side_in, side_in)
            logits = None
            for k in range(tta):
                # the dilated method: as fast as polyphase at 64 crops a batch and faster at
                # 256+ (scripts/bench_strided.py --window-timing; conv31, 1 thread)
                one = dihedral_inverse(net.valid_score_map(dihedral(crops, k)), k)
                logits = one if logits is None else logits + one
            logits = logits / tta
        out[start : start + len(x0)] = logits.float().cpu().numpy()
    d = np.arange(-half, half + 1)
    inside_y = (ys[:, None] + d[None, :] >= 0) & (ys[:, None] + d[None, :] < height)
    inside_x = (xs[:, None] + d[None, :] >= 0) & (xs[:, None] + d[None, :] < width)
    out[~(inside_y[:, :, None] & inside_x[:, None, :])] = -np.inf
    return out


def _centroids(coarse: np.ndarray, ij: np.ndarray, stride: int) -> np.ndarray:
    """Softmax-weighted centroids (model px, columns x, y) of the 3 x 3 coarse neighbourhoods of
    the samples ``ij`` (n, 2) rows (i, j)."""
    rows, cols = coarse.shape
    padded = np.pad(coarse.astype(np.float64), 1, constant_values=-np.inf)
    d = np.arange(-1, 2)
    vals = padded[ij[:, 0, None, None] + 1 + d[None, :, None], ij[:, 1, None, None] + 1 + d]
    weights = np.exp(vals - vals.max(axis=(1, 2), keepdims=True))  # outside the grid: 0
    weights /= weights.sum(axis=(1, 2), keepdims=True)
    dy = (weights.sum(axis=2) * d).sum(axis=1)
    dx = (weights.sum(axis=1) * d).sum(axis=1)
    return np.stack([(ij[:, 1] + dx) * stride, (ij[:, 0] + dy) * stride], axis=1)


def _quadratic_peaks(
    coarse: np.ndarray, ij: np.ndarray, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-sample peaks of the coarse logits at the samples ``ij`` (n, 2) rows (i, j): per axis a
    parabola through the sample and its two neighbours (separable fit), vertex clamped to half a
    stride. Returns positions (model px, columns x, y) and the peak logits (the sample's logit
    plus each axis's rise). A neighbour outside the grid, or an axis that is not curved
    downwards, leaves that axis at the sample."""
    c = coarse.astype(np.float64)
    i, j = ij[:, 0], ij[:, 1]
    centre = c[i, j]
    offsets, rises = [], []
    for axis, (idx, size) in enumerate(((i, c.shape[0]), (j, c.shape[1]))):
        inside = (idx > 0) & (idx < size - 1)
        lo, hi = np.clip(idx - 1, 0, size - 1), np.clip(idx + 1, 0, size - 1)
        before = c[lo, j] if axis == 0 else c[i, lo]
        after = c[hi, j] if axis == 0 else c[i, hi]
        curve = before - 2.0 * centre + after
        ok = inside & (curve < 0) & np.isfinite(curve)
        safe = np.where(ok, curve, -1.0)
        offset = np.where(ok, np.clip((before - after) / (2.0 * safe), -0.5, 0.5), 0.0)
        slope = np.where(ok, (after - before) / 2.0, 0.0)
        offsets.append(offset)
        rises.append(slope * offset + 0.5 * np.where(ok, curve, 0.0) * offset**2)
    xy = np.stack([(j + offsets[1]) * stride, (i + offsets[0]) * stride], axis=1)
    return xy, centre + rises[0] + rises[1]


def strided_picks(
    net: nn.Module,
    image: torch.Tensor,
    radius_px_model: float,
    threshold: float = -math.inf,
    *,
    boundary: str = "keep",
    refine: str = "window",
    tta: int = 1,
    refine_margin: float = DEFAULT_REFINE_MARGIN,
    chunk: int | None = None,
    keep_score_map: bool = False,
    exact_top: int | None = None,
    memory_format: str = "auto",
) -> StridedPicks:
    """Picks of one micrograph ``image`` (H, W) tensor on the net's device (module docstring).

    ``radius_px_model``: the NMS radius (model px); ``threshold``: logit (picks scoring less are
    dropped); ``boundary``: as in :func:`topaz_lightning.picking.nms.non_maximum_suppression`;
    ``refine``: REFINE_METHODS; ``tta``: 1 or 8 (rotations/mirrors averaged, coarse map and
    windows alike); ``chunk``: windows per batch (None: :func:`window_scores`' rule);
    ``exact_top`` (``window`` only): score the windows of only the best ``exact_top`` picks as
    ranked by their quadratic estimate, the rest keep that estimate (None = every pick);
    ``memory_format``: the weights' layout while scoring
    (models.base.MEMORY_FORMATS; auto: a channels_last copy on the CPU, a whole tzl-pick run 8 %
    less CPU (models.base), scores equal to float rounding). The net must be in eval mode; call under
    ``torch.inference_mode()``.
    """
    if image.dim() != 2:
        raise ValueError(f"expected a 2-D micrograph tensor, got shape {tuple(image.shape)}")
    check_refine(refine)
    tta = check_tta(tta)
    if boundary not in NMS_BOUNDARIES:
        raise ConfigError("nms_boundary", f"must be one of {NMS_BOUNDARIES}, got {boundary!r}")
    s = native_stride(net)
    net = laid_out(net, memory_format, image.device.type)
    coarse = _coarse_map(net, image, tta)
    floor = threshold - refine_margin if refine in ("window", "quadratic") else threshold
    ij_xy, coarse_vals = non_maximum_suppression(
        coarse, float(radius_px_model) / s, floor, boundary=boundary
    )
    ij = ij_xy[:, ::-1].astype(np.int64)  # (i, j) = (row, col) on the coarse grid
    xy = ij[:, ::-1].astype(np.float64) * s
    scores = coarse_vals.astype(np.float64)
    windows = None
    half = s // 2
    exact = np.arange(len(ij))  # the picks whose windows are scored
    if refine == "window" and exact_top is not None and len(ij) > exact_top:
        xy, scores = _quadratic_peaks(coarse, ij, s)
        exact = np.sort(np.argsort(-scores, kind="stable")[: max(int(exact_top), 0)])
    if refine == "window" and len(exact):
        centres = (ij[exact, ::-1] * s).astype(np.int64)
        windows = window_scores(net, image, centres, half, tta, chunk)
        flat = windows.reshape(len(windows), -1)
        # best pixel of each window; ties: the first in row-major order (as dense NMS's order)
        best = flat.argmax(axis=1)
        dy, dx = np.divmod(best, 2 * half + 1)
        xy[exact] = centres + np.stack([dx - half, dy - half], axis=1)
        scores[exact] = flat[np.arange(len(flat)), best].astype(np.float64)
    elif refine == "centroid" and len(ij):
        xy = _centroids(coarse, ij, s)
    elif refine == "quadratic" and len(ij):
        xy, scores = _quadratic_peaks(coarse, ij, s)
    # best first (ties: smaller flat position first, as dense NMS). No second NMS on the
    # refined positions: it dropped 19 % of the picks, 11 of them true, and cost AUPR 0.010 at
    # the match distance on the real fold 0 (docs/picking_evaluation.md)
    kept = np.lexsort((xy[:, 0], xy[:, 1], -scores))
    keep_score = scores[kept] >= threshold if threshold > -math.inf else slice(None)
    kept = kept[keep_score]
    score_map = None
    if keep_score_map:
        score_map = _picture(coarse, image.shape, s, ij[exact, ::-1] * s, windows, half)
    return StridedPicks(
        xy[kept].reshape(-1, 2),
        scores[kept],
        coarse,
        s,
        0 if windows is None else len(windows),
        (ij[kept, ::-1] * s).astype(np.float64).reshape(-1, 2),
        score_map,
    )


def _picture(
    coarse: np.ndarray,
    shape: tuple[int, int],
    s: int,
    centres: np.ndarray,
    windows: np.ndarray | None,
    half: int,
) -> np.ndarray:
    """(H, W) map for saving and plotting: the nearest coarse sample's score at every pixel, the
    refined windows' dense scores (centred on the coarse samples ``centres`` (n, 2) x, y) pasted
    in (not for NMS: strided picks do not come from it)."""
    height, width = int(shape[0]), int(shape[1])
    iy = np.minimum(np.rint(np.arange(height) / s).astype(np.int64), coarse.shape[0] - 1)
    ix = np.minimum(np.rint(np.arange(width) / s).astype(np.int64), coarse.shape[1] - 1)
    picture = coarse[iy[:, None], ix[None, :]].astype(np.float32)
    if windows is not None:
        d = np.arange(-half, half + 1)
        for (cx, cy), block in zip(centres, windows, strict=True):
            ys, xs = cy + d, cx + d
            ok_y, ok_x = (ys >= 0) & (ys < height), (xs >= 0) & (xs < width)
            picture[np.ix_(ys[ok_y], xs[ok_x])] = block[np.ix_(ok_y, ok_x)]
    return picture
