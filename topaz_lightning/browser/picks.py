"""The pick tables of the browser: checks, score rounding, the order of the page and its counts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from topaz_lightning.errors import InputError

#: scores are rounded to this many decimals in the page
SCORE_DECIMALS = 4


def expected_particles(
    pi: float, shape_px: tuple[int, int], downsample: float, label_radius_px_model: float
) -> float:
    """Particles expected on a micrograph of ``shape_px`` (H, W, micrograph frame) from the
    model's prior: ``pi * (H / downsample) * (W / downsample) / disk_area(label_radius_px_model)``,
    the inverse of ``data.prior.pi_from_particles_per_micrograph`` (one formula, in data.prior)."""
    from topaz_lightning.data.prior import expected_particles_per_micrograph
    from topaz_lightning.geometry import to_model_px

    shape_px_model = (to_model_px(shape_px[0], downsample), to_model_px(shape_px[1], downsample))
    return expected_particles_per_micrograph(pi, shape_px_model, label_radius_px_model)


def _check_picks(picks: pd.DataFrame, name: str, need_score: bool) -> pd.DataFrame:
    if not isinstance(picks, pd.DataFrame):
        raise InputError(f"{name} must be a table (DataFrame), got {type(picks).__name__}")
    source = picks.attrs.get("source", name)
    need = ["micrograph", "x", "y"] + (["score"] if need_score else [])
    missing = [c for c in need if c not in picks.columns]
    if missing:
        raise InputError(f"{name} lack column(s) {missing} (have {list(picks.columns)})", source)
    out = picks[need].copy()
    out["micrograph"] = out["micrograph"].astype(str)
    for column in need[1:]:
        values = pd.to_numeric(out[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise InputError(
                f"{name} have a non-numeric or non-finite {column}", source, where=f"row {bad[0]}"
            )
        out[column] = values
    return out.reset_index(drop=True)


def _round_scores(scores: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(scores, dtype=np.float64), SCORE_DECIMALS)


def _ordered(group: pd.DataFrame) -> pd.DataFrame:
    """One micrograph's picks by descending (rounded) score, ties in table order: the order of
    the greedy matching and of the page's top-k."""
    return group.iloc[np.argsort(-group["score"].to_numpy(), kind="stable")]


def pick_counts(
    picks: pd.DataFrame, threshold: float | None = None, top_k: int | None = None
) -> pd.Series:
    """Picks per micrograph the browser shows at ``threshold`` (score >= threshold, scores rounded
    as in the page) and ``top_k`` (the best k of each micrograph; None or 0 = all)."""
    table = _check_picks(picks, "picks", need_score=True)
    table["score"] = _round_scores(table["score"].to_numpy())
    keep = np.ones(len(table), dtype=bool)
    if threshold is not None:
        keep &= table["score"].to_numpy() >= float(threshold)
    kept = table[keep]
    counts = kept.groupby("micrograph", sort=False).size()
    if top_k:
        counts = counts.clip(upper=int(top_k))
    return counts.reindex(list(dict.fromkeys(table["micrograph"])), fill_value=0).astype(int)
