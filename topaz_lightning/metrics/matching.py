"""One-to-one matching of predicted to true particle coordinates within a maximum distance."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from topaz_lightning.errors import InputError
from topaz_lightning.metrics._renamed import accept_renamed_keywords

# Definition (the paper's "one-to-one assignment ... that minimizes the Euclidean distance ...
# up to a maximum distance threshold"): a prediction and a true particle may be matched only if
# their distance is <= max_distance_px (boundary="inclusive", this project's default) or
# < max_distance_px (boundary="exclusive", Topaz's convention; the two differ only for pairs at
# exactly that distance, which integer picks and particles reach often, e.g. offset (0, 7) at 7). Among all one-to-one assignments of such pairs we
# take one with the MOST matches and, among those, the smallest total distance. (Minimizing
# distance alone would match nothing; maximum cardinality first is what "assign each prediction
# within the cutoff" means.) The matching ignores scores, as in the paper: when two predictions
# compete for one particle the closer one wins even if its score is lower, which can move a true
# positive to a lower threshold on the precision-recall curve. Scores only enter afterwards, in
# the curve. Matched predictions count once per particle, so duplicates are false positives.
#
# Candidate pairs come from a k-d tree (never a dense n_pred x n_true matrix). The bipartite graph
# of candidate pairs falls apart into connected components that can be solved independently;
# components with a single edge are matched directly, the rest by linear_sum_assignment on the
# component's compact cost matrix, with non-edges costing more than any set of real edges so the
# solver maximizes the number of real matches first.


def _as_xy(xy, name: str) -> np.ndarray:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{name} must have shape (n, 2) as x, y; got {arr.shape}", where=name)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains non-finite coordinates", where=name)
    return arr


#: whether a pair at exactly ``max_distance_px`` may match: inclusive (<=, ours) or exclusive (<, Topaz)
MATCH_BOUNDARIES: tuple[str, ...] = ("inclusive", "exclusive")


@accept_renamed_keywords
def candidate_pairs(
    pred_xy: np.ndarray, true_xy: np.ndarray, max_distance_px: float, boundary: str = "inclusive"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ``(i_pred, j_true, distance)`` with distance ``<= max_distance_px`` (``boundary=
    "inclusive"``) or ``< max_distance_px`` (``"exclusive"``), via k-d trees. The distance is in
    the pixels of the coordinates given (micrograph or model frame alike)."""
    if boundary not in MATCH_BOUNDARIES:
        raise InputError(
            f"boundary must be one of {MATCH_BOUNDARIES}, got {boundary!r}", where="boundary"
        )
    pred_xy = _as_xy(pred_xy, "pred_xy")
    true_xy = _as_xy(true_xy, "true_xy")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if len(pred_xy) == 0 or len(true_xy) == 0:
        return empty
    # query slightly wider, then apply the exact inclusive cut on recomputed distances
    reach = max_distance_px * (1 + 1e-9) + 1e-12
    pairs = cKDTree(pred_xy).sparse_distance_matrix(cKDTree(true_xy), reach, output_type="ndarray")
    i = pairs["i"].astype(np.int64)
    j = pairs["j"].astype(np.int64)
    d = np.hypot(*(pred_xy[i] - true_xy[j]).T)
    keep = d <= max_distance_px if boundary == "inclusive" else d < max_distance_px
    return i[keep], j[keep], d[keep]


MATCHING_METHODS = ("distance", "score")


@accept_renamed_keywords
def match_picks(
    pred_xy,
    true_xy,
    max_distance_px: float,
    scores=None,
    method: str = "distance",
    boundary: str = "inclusive",
) -> np.ndarray:
    """Index of the true particle matched to each prediction (``-1``: unmatched), shape (n_pred,).

    One-to-one, only pairs at distance ``<= max_distance_px`` (``boundary="inclusive"``, the
    default) or ``< max_distance_px`` (``boundary="exclusive"``, Topaz's convention), in the
    pixels of the coordinates given (``max_distance=`` still works, with a DeprecationWarning).
    ``method="distance"`` (the paper's): maximizes the number of matches, then minimizes their
    total distance; scores are not used (see the module notes). ``method="score"`` (an alternative, not the paper's): predictions
    in order of descending ``scores`` (ties: lower index first) each take the nearest still
    free particle, so a higher-scoring pick is never displaced by a lower-scoring one.
    """
    if not (max_distance_px >= 0):
        raise InputError(
            f"max_distance_px must be >= 0, got {max_distance_px}", where="max_distance_px"
        )
    if method not in MATCHING_METHODS:
        raise InputError(
            f"unknown matching method {method!r}; expected one of {MATCHING_METHODS}",
            where="method",
        )
    pred_xy = _as_xy(pred_xy, "pred_xy")
    true_xy = _as_xy(true_xy, "true_xy")
    n_pred, n_true = len(pred_xy), len(true_xy)
    match = np.full(n_pred, -1, dtype=np.int64)
    i, j, d = candidate_pairs(pred_xy, true_xy, max_distance_px, boundary)
    if i.size == 0:
        return match
    if method == "score":
        if scores is None:
            raise InputError("matching by score needs the scores", where="scores")
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (n_pred,):
            raise InputError(
                f"scores must have shape ({n_pred},), got {scores.shape}", where="scores"
            )
        return _match_by_score(i, j, d, scores, match, n_true)
    # components of the bipartite graph; nodes 0..n_pred-1 predictions, n_pred.. truths
    graph = coo_matrix((np.ones(i.size), (i, j + n_pred)), shape=(n_pred + n_true,) * 2)
    _, label = connected_components(graph, directed=False)
    edge_comp = label[i]
    edges_per_comp = np.bincount(edge_comp, minlength=label.max() + 1)
    single = edges_per_comp[edge_comp] == 1
    match[i[single]] = j[single]

    rest = np.flatnonzero(~single)
    if rest.size:
        order = rest[np.argsort(edge_comp[rest], kind="stable")]
        comps = edge_comp[order]
        starts = np.flatnonzero(np.r_[True, comps[1:] != comps[:-1]])
        for block in np.split(order, starts[1:]):
            bi, bj, bd = i[block], j[block], d[block]
            rows, ri = np.unique(bi, return_inverse=True)
            cols, ci = np.unique(bj, return_inverse=True)
            k = min(len(rows), len(cols))
            big = (k + 1) * (max_distance_px + 1.0)
            cost = np.full((len(rows), len(cols)), big)
            cost[ri, ci] = bd
            r_idx, c_idx = linear_sum_assignment(cost)
            real = cost[r_idx, c_idx] < big
            match[rows[r_idx[real]]] = cols[c_idx[real]]
    return match


def _match_by_score(i, j, d, scores, match, n_true: int) -> np.ndarray:
    # candidate pairs in the order the greedy visits them: pick by score, then nearest particle;
    # the loop runs over candidate pairs only (a few per pick)
    order = np.lexsort((j, d, i, -scores[i]))
    taken = np.zeros(n_true, dtype=bool)
    for p, t in zip(i[order].tolist(), j[order].tolist(), strict=True):
        if match[p] < 0 and not taken[t]:
            match[p] = t
            taken[t] = True
    return match


def matched_distances(pred_xy, true_xy, match: np.ndarray) -> np.ndarray:
    """Distances of the matched pairs (``match >= 0``), in prediction order."""
    pred_xy = _as_xy(pred_xy, "pred_xy")
    true_xy = _as_xy(true_xy, "true_xy")
    ok = match >= 0
    return np.hypot(*(pred_xy[ok] - true_xy[match[ok]]).T)
