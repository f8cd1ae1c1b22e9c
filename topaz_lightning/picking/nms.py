"""Greedy non-maximum suppression of a dense score map into particle coordinates (exact, vectorized)."""

from __future__ import annotations

import math
import time

import numpy as np

from topaz_lightning.errors import InputError
from topaz_lightning.geometry import disk_offsets

#: what happens to a candidate exactly ``radius`` from an accepted pick
NMS_BOUNDARIES: tuple[str, ...] = ("keep", "suppress")

# Definition (the paper's "greedy ... at least r distance apart"):
#   candidates are the pixels with a finite-or-+inf score >= threshold; they are visited in the
#   total order (score descending, then flat index y * W + x ascending); a candidate is accepted
#   unless an already accepted pick lies inside the suppression disk around it. The disk is
#   geometry.disk_offsets(radius, include_boundary=...):
#   - boundary="keep" (this project's default): distance < radius suppresses, so accepted picks
#     are pairwise at least `radius` apart (a pick exactly `radius` away is kept);
#   - boundary="suppress" (Topaz's convention): distance <= radius suppresses, so accepted picks
#     are more than `radius` apart. The two differ only for picks at exactly `radius`
#     (integer pixel offsets with dx**2 + dy**2 == radius**2, e.g. (0, 10), (6, 8) at r = 10).
#   Below, "within the disk" is whichever of the two is chosen.
#
# Fast exact algorithm (rounds): call a still-undecided ("alive") candidate a *local leader* if it
# precedes, in the total order, every other alive candidate within the disk. In one round
# every local leader is accepted and every alive candidate within the disk of a leader is
# suppressed. Why this equals the sequential greedy result, by induction over rounds: assume all
# decisions made so far agree with greedy. Greedy's decision on a candidate c only depends on the
# accepted picks that precede c and lie within the disk. For a leader c, every candidate within
# the disk that precedes c is already decided; none of those was accepted (an accepted one would
# have suppressed c), so greedy accepts c too. A suppressed candidate q lies within the disk of a
# leader c that precedes q (c was a leader while q was alive) and that greedy accepts, so greedy
# rejects q. Two leaders are never in conflict (of two alive candidates within the disk only the
# earlier one can lead). The globally first alive candidate is always a leader, so each round
# decides at least one candidate.
#
# Leaders are found with a max filter over the disk footprint of the alive score map (the disk max
# is built from horizontal running maxima of growing width, each one numpy max of shifted views, so
# it costs O(H * W * radius) per round with a few float32 arrays of the map's size). Exact ties in
# score are resolved by comparing the leader candidates with their earlier-index neighbours.
# Rounds that decide few picks (long greedy dependency chains, e.g. a smooth ramp) are slower than
# visiting the remaining candidates in order, so the remainder is finished sequentially: a Python
# loop over *accepted picks* (not pixels), each suppressing its disk with one fancy-index write.
# Memory is linear in the micrograph size throughout.


def disk_rows(radius: float, boundary: str = "keep") -> list[tuple[int, int]]:
    """The suppression disk as rows ``(dy, w)``: row ``dy`` spans ``dx`` in ``[-w, w]``.

    The fast form of ``geometry.disk_offsets(radius, include_boundary=boundary == "suppress")``
    (rows with no pixel omitted), which defines the disk. An empty list means nothing is
    suppressed; ``[(0, 0)]`` means only the pick's own pixel, so no two distinct pixels conflict.
    """
    offsets = disk_offsets(radius, include_boundary=boundary == "suppress")
    rows: dict[int, int] = {}
    for dy, dx in offsets.tolist():
        rows[dy] = max(rows.get(dy, 0), abs(dx))
    return sorted(rows.items())


def _disk_max(values: np.ndarray, rows: list[tuple[int, int]], fill) -> np.ndarray:
    """Max of ``values`` over the disk described by ``rows`` around every pixel (outside = fill)."""
    height = values.shape[0]
    out = np.full_like(values, fill)
    by_width: dict[int, list[int]] = {}
    for dy, w in rows:
        by_width.setdefault(w, []).append(dy)
    running = values  # running[y, x] = max of values[y, x - w : x + w + 1] (never written)
    spare = None
    width = 0
    for w in sorted(by_width):
        while width < w:
            # widen by one on each side: one max of two shifted views (plus the two edge columns)
            grown = np.empty_like(values) if spare is None else spare
            np.maximum(running[:, :-2], running[:, 2:], out=grown[:, 1:-1])
            if width == 0:  # the first step must keep the centre column too
                np.maximum(grown[:, 1:-1], running[:, 1:-1], out=grown[:, 1:-1])
            if values.shape[1] > 1:
                np.maximum(running[:, 0], running[:, 1], out=grown[:, 0])
                np.maximum(running[:, -1], running[:, -2], out=grown[:, -1])
            else:
                grown[:, 0] = running[:, 0]
            spare = running if running is not values else None
            running = grown
            width += 1
        for dy in by_width[w]:
            lo, hi = max(0, -dy), min(height, height - dy)
            if lo < hi:
                np.maximum(out[lo:hi], running[lo + dy : hi + dy], out=out[lo:hi])
    return out


def _as_score_array(score_map) -> np.ndarray:
    if hasattr(score_map, "detach"):  # torch tensor (half/bfloat16 have no numpy dtype)
        import torch

        wide = torch.float64 if score_map.dtype == torch.float64 else torch.float32
        score_map = score_map.detach().to("cpu", wide).numpy()
    arr = np.asarray(score_map)
    if arr.ndim != 2:
        raise InputError(f"score map must be 2-D (H, W), got shape {arr.shape}", where="score_map")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(
            f"score map must be real numbers, got dtype {arr.dtype}", where="score_map"
        )
    if np.isnan(arr).any():
        raise InputError("score map contains NaN", where="score_map")
    return arr


def non_maximum_suppression(
    score_map,
    radius: float,
    threshold: float = -math.inf,
    max_picks: int | None = None,
    *,
    boundary: str = "keep",
    _dense_rounds: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy non-maximum suppression: picks at least ``radius`` pixels apart, best score first.

    ``score_map`` is a 2-D numpy array or torch tensor indexed ``[y, x]``. Candidates are the
    pixels with score ``>= threshold`` (``-inf`` scores are never picked, NaN raises
    InputError); they are accepted greedily in order of descending score (ties: smaller flat
    index ``y * W + x`` first), skipping any candidate at Euclidean distance ``< radius`` from an
    accepted pick (``boundary="keep"``, the default: picks exactly ``radius`` apart are both
    kept) or ``<= radius`` (``boundary="suppress"``, Topaz's convention: picks are more than
    ``radius`` apart). Scores are compared as float32. ``max_picks`` keeps the best ones only.

    Returns ``(xy, scores)``: ``xy`` (n, 2) float64 columns ``x, y`` (pixel centres) and
    ``scores`` (n,) float64, sorted by descending score (the greedy acceptance order).
    ``_dense_rounds`` (testing only) fixes how many vectorized rounds run before the sequential
    finish (``None``: decided by cost).
    """
    scores_in = _as_score_array(score_map)
    if not (radius >= 0):
        raise InputError(f"radius must be a number >= 0, got {radius}", where="radius")
    if boundary not in NMS_BOUNDARIES:
        raise InputError(
            f"boundary must be one of {NMS_BOUNDARIES}, got {boundary!r}", where="boundary"
        )
    if threshold is None or (isinstance(threshold, float) and math.isnan(threshold)):
        threshold = -math.inf
    if max_picks is not None and max_picks < 0:
        raise InputError(f"max_picks must be >= 0, got {max_picks}", where="max_picks")
    height, width = scores_in.shape
    score32 = scores_in.astype(np.float32, copy=False) + np.float32(0)  # -0.0 -> +0.0
    alive = (score32 >= np.float32(threshold)) & (score32 > -np.inf)
    if threshold > -math.inf:
        # float32 rounding must not admit values the caller's threshold excludes
        alive &= scores_in >= threshold
    rows = disk_rows(radius, boundary) if radius != math.inf else None

    if rows is None:  # infinite radius: only the single best candidate survives
        flat = np.flatnonzero(alive)
        picked = flat[:0]
        if flat.size:
            order = np.lexsort((flat, -score32.ravel()[flat]))
            picked = flat[order[:1]]
    elif len(rows) <= 1 and all(w == 0 for _, w in rows):
        # no two distinct pixels conflict: every candidate is a pick
        flat = np.flatnonzero(alive)
        picked = flat[np.lexsort((flat, -score32.ravel()[flat]))]
    else:
        picked = _greedy_disk(score32, alive, rows, _dense_rounds)

    if max_picks is not None:
        picked = picked[:max_picks]
    ys, xs = np.divmod(picked, width)
    xy = np.stack([xs, ys], axis=1).astype(np.float64).reshape(-1, 2)
    scores = scores_in[ys, xs].astype(np.float64)
    return xy, scores


def _greedy_disk(
    score32: np.ndarray, alive_in: np.ndarray, rows: list[tuple[int, int]], dense_rounds: int | None
) -> np.ndarray:
    """Flat indices (unpadded) of the greedy picks, in acceptance order."""
    height, width = score32.shape
    pad = max(max(abs(dy) for dy, _ in rows), max(w for _, w in rows))
    pw = width + 2 * pad
    # alive scores on a padded canvas (dead / outside = -inf) so neighbour offsets need no checks
    live = np.full((height + 2 * pad, pw), -np.inf, dtype=np.float32)
    live[pad : pad + height, pad : pad + width] = np.where(alive_in, score32, -np.inf)
    flat_live = live.ravel()
    disk = np.array([dy * pw + dx for dy, w in rows for dx in range(-w, w + 1)], dtype=np.int64)
    earlier = np.array(
        [
            dy * pw + dx
            for dy, w in rows
            for dx in range(-w, w + 1)
            if dy < 0 or (dy == 0 and dx < 0)
        ],
        dtype=np.int64,
    )
    accepted: list[np.ndarray] = []  # padded flat indices, one array per round
    n_alive = int(alive_in.sum())
    # Keep doing vectorized rounds while a round decides more picks than the sequential finish
    # would in the same time (it costs ~15 us per pick here). Only speed depends on this choice;
    # the result is the same whichever way it goes.
    seq_cost_per_pick = 15e-6
    round_no = 0
    while n_alive:
        if dense_rounds is not None and round_no >= dense_rounds:
            break
        started = time.perf_counter()
        local_max = _disk_max(live, rows, -np.inf)
        lead = np.flatnonzero((live == local_max) & (live > -np.inf))
        vals = flat_live[lead]
        lose = np.zeros(lead.size, dtype=bool)
        for off in earlier:  # exact ties: an equal, alive, earlier neighbour leads instead
            lose |= flat_live[lead + off] == vals
        lead = lead[~lose]
        accepted.append(lead)
        # suppress the disks of the accepted leaders (chunked to bound the index array's size)
        step = max(1, (1 << 22) // disk.size)
        for start in range(0, lead.size, step):
            flat_live[(lead[start : start + step, None] + disk[None, :]).ravel()] = -np.inf
        n_alive = int(np.count_nonzero(live > -np.inf))
        round_no += 1
        if dense_rounds is None and lead.size * seq_cost_per_pick < time.perf_counter() - started:
            break

    if n_alive:
        accepted.append(_sequential(flat_live, disk))
    picked = np.concatenate(accepted) if accepted else np.zeros(0, dtype=np.int64)
    # acceptance order across rounds is not score order: sort (score desc, index asc)
    ys, xs = np.divmod(picked, pw)
    orig = (ys - pad) * width + (xs - pad)
    vals = score32.ravel()[orig]
    return orig[np.lexsort((orig, -vals))]


def _sequential(flat_live: np.ndarray, disk: np.ndarray) -> np.ndarray:
    """Finish greedily in order over the alive (> -inf) entries; loops once per accepted pick."""
    cand = np.flatnonzero(flat_live > -np.inf)
    order = cand[np.lexsort((cand, -flat_live[cand]))]
    alive = flat_live > -np.inf
    picks = []
    pos, n = 0, order.size
    chunk = 64
    while pos < n:
        block = order[pos : pos + chunk]
        state = alive[block]
        if not state.any():
            pos += block.size
            chunk = min(chunk * 2, 65536)
            continue
        j = int(state.argmax())
        i = int(block[j])
        picks.append(i)
        alive[i + disk] = False
        pos += j + 1
        chunk = 64
    return np.asarray(picks, dtype=np.int64)
