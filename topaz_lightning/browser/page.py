"""The browser page: one HTML file filled with the picks, thumbnails, histogram and curve.

The page's markup, style and script are package files beside this module (``page.html``,
``page.css``, ``page.js``), read with :mod:`importlib.resources` so wheels carry them.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from topaz_lightning.browser.picks import SCORE_DECIMALS, _check_picks, _ordered, _round_scores
from topaz_lightning.browser.thumbnails import _jpeg_data_uri, _load_image, thumbnail
from topaz_lightning.errors import InputError

log = logging.getLogger("topaz_lightning")

#: micrographs per page of the browser
PAGE_SIZE = 24
#: most points of the precision-recall curve kept in the page
MAX_CURVE_POINTS = 1000
#: bins of the score histogram
HISTOGRAM_BINS = 60
#: colour of picks on micrographs without true particles
PICK_COLOR = "#ffd400"


@cache
def _page_part(name: str) -> str:
    """``page.html``, ``page.css`` or ``page.js`` of this package, as text."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _names_sample(values, limit: int = 3) -> str:
    shown = sorted(values)[:limit]
    return ", ".join(repr(v) for v in shown) + (
        f" ... ({len(values)} in all)" if len(values) > limit else ""
    )


def _json_for_script(data) -> str:
    """JSON that cannot end the ``<script>`` element it sits in, whatever strings it holds."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _thin_curve(recall: np.ndarray, precision: np.ndarray, thresholds: np.ndarray) -> dict:
    n = recall.size
    keep = np.unique(np.r_[np.linspace(0, n - 1, min(n, MAX_CURVE_POINTS)).round().astype(int)])
    return {
        "recall": [round(float(v), 5) for v in recall[keep]],
        "precision": [round(float(v), 5) for v in precision[keep]],
        "threshold": [round(float(v), SCORE_DECIMALS) for v in thresholds[keep]],
    }


def _histogram(
    scores: np.ndarray, annotated: np.ndarray | None, matched: np.ndarray | None
) -> dict:
    """Counts per score bin of all picks and, with truth, of the picks on annotated micrographs
    and of the matched ones (each a subset of the one before)."""
    if scores.size == 0:
        return {"edges": [], "all": [], "annotated": None, "matched": None}
    lo, hi = float(scores.min()), float(scores.max())
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(scores, bins=edges)
    out = {
        "edges": [round(float(e), SCORE_DECIMALS + 1) for e in edges],
        "all": counts.tolist(),
        "annotated": None,
        "matched": None,
    }
    if annotated is not None and matched is not None:
        out["annotated"] = np.histogram(scores[annotated], bins=edges)[0].tolist()
        out["matched"] = np.histogram(scores[matched], bins=edges)[0].tolist()
    return out


def write_pick_browser(
    picks: pd.DataFrame,
    micrographs: Mapping[str, str | os.PathLike | np.ndarray],
    out_path: str | os.PathLike,
    particle_diameter_px: float,
    expected_per_micrograph: float | Mapping[str, float] | None = None,
    truth: pd.DataFrame | None = None,
    match_distance_px: float | None = None,
    downsample_for_thumbnail: int | None = None,
    overwrite: bool = False,
    threshold: float | None = None,
    expected_source: str = "the model's pi",
    title: str = "topaz-lightning picks",
    description: str | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> Path:
    """Write the pick browser for ``picks`` on ``micrographs`` to ``out_path`` (one HTML file).

    ``picks``: DataFrame[micrograph, x, y, score] in the micrograph frame (pixels of the images
    in ``micrographs``), scores are logits. ``micrographs``: ``{name: path or 2-D array}``, in
    display order; picks on other micrographs are ignored with a warning. Circles are drawn at
    ``particle_diameter_px``. ``expected_per_micrograph``: the count expected from the model's
    pi (one number, or one per micrograph name), shown beside the pick counts; None = not shown.
    ``truth``: DataFrame[micrograph, x, y] of true particles; micrographs with none are shown
    without colours and left out of the precision-recall numbers. ``match_distance_px`` defaults
    to the particle radius. ``threshold``: the page's starting threshold (default: the score
    that keeps the expected number of picks in all, else every pick). ``expected_source`` says
    where the expected count comes from, beside it on the page. Written atomically; an
    existing file is refused unless ``overwrite``. Returns the written path.

    A micrograph that cannot be read is left out with a warning and named on the page; when a
    list is given as ``skipped`` it receives ``(name, reason)`` for each. When none can be read
    the first error is raised.
    """
    from topaz_lightning.metrics import match_picks, precision_recall_curve
    from topaz_lightning.plots import MATCHED_COLOR, TRUTH_COLOR, UNMATCHED_COLOR
    from topaz_lightning.utils.atomic import atomic_output, check_writable

    out_path = check_writable(out_path, overwrite)
    diameter = float(particle_diameter_px)
    if not (diameter > 0 and math.isfinite(diameter)):
        raise InputError(
            f"must be a finite number > 0, got {particle_diameter_px!r}",
            where="particle_diameter_px",
        )
    if match_distance_px is None:
        match_distance = diameter / 2
    else:
        match_distance = float(match_distance_px)
        if not (match_distance >= 0 and math.isfinite(match_distance)):
            raise InputError(
                f"must be a finite number >= 0, got {match_distance_px!r}",
                where="match_distance_px",
            )
    if not isinstance(micrographs, Mapping) or not micrographs:
        raise InputError(
            "no micrographs given (expected {name: path or array})", where="micrographs"
        )
    names = [str(n) for n in micrographs]
    table = _check_picks(picks, "picks", need_score=True)
    table["score"] = _round_scores(table["score"].to_numpy())
    picked = set(table["micrograph"])
    if picked and not picked & set(names):
        raise InputError(
            "no pick is on one of the micrographs: the names do not match (picks: "
            f"{_names_sample(picked)}; micrographs: {_names_sample(names)})",
            picks.attrs.get("source"),
        )
    others = picked - set(names)
    if others:
        log.warning(
            "%d micrograph(s) of the picks have no image, their picks are not shown: %s",
            len(others),
            _names_sample(others),
        )
    truth_groups: dict[str, pd.DataFrame] = {}
    if truth is not None:
        truth_table = _check_picks(truth, "true particles", need_score=False)
        truth_groups = {n: g for n, g in truth_table.groupby("micrograph", sort=False)}
        unannotated = [n for n in names if n not in truth_groups]
        if len(unannotated) == len(names):
            raise InputError(
                "no true particle is on one of the micrographs: the names do not match (truth: "
                f"{_names_sample(set(truth_groups))}; micrographs: {_names_sample(names)})",
                truth.attrs.get("source"),
            )
        if unannotated:
            log.warning(
                "%d micrograph(s) have no true particles and are shown without colours: %s",
                len(unannotated),
                _names_sample(unannotated),
            )

    pick_groups = {n: g for n, g in table.groupby("micrograph", sort=False)}
    records = []
    all_scores, all_matched, n_true = [], [], 0
    unreadable: list[tuple[str, str]] = []
    first_error: InputError | None = None
    for name in names:
        try:
            image = _load_image(name, micrographs[name])
        except InputError as err:  # one bad file among many: show the others
            log.warning("skipping micrograph %r: %s", name, err)
            unreadable.append((name, str(err)))
            first_error = first_error or err
            continue
        picture, factor = thumbnail(image, downsample_for_thumbnail)
        group = pick_groups.get(name)
        group = _ordered(group) if group is not None else table.iloc[:0]
        xy = group[["x", "y"]].to_numpy()
        scores = group["score"].to_numpy()
        if isinstance(expected_per_micrograph, Mapping):
            expected = expected_per_micrograph.get(name)
        else:
            expected = expected_per_micrograph
        if expected is not None:
            try:
                value = float(expected)
            except (TypeError, ValueError):
                value = math.nan
            if not (value >= 0 and math.isfinite(value)):
                raise InputError(
                    f"must be a finite number >= 0, got {expected!r} for {name!r}",
                    where="expected_per_micrograph",
                )
        record = {
            "name": name,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "factor": factor,
            "thumb": _jpeg_data_uri(picture),
            # whole pixels: a thumbnail pixel is several micrograph pixels
            "x": np.round(xy[:, 0]).astype(int).tolist(),
            "y": np.round(xy[:, 1]).astype(int).tolist(),
            "score": scores.tolist(),
            "expected": None if expected is None else float(expected),
            "annotated": name in truth_groups,
        }
        if name in truth_groups:
            true_xy = truth_groups[name][["x", "y"]].to_numpy()
            # picks are in descending score order, so "lower index first" breaks ties as the page does
            match = match_picks(xy, true_xy, match_distance, scores=scores, method="score")
            rank_of_truth = np.full(len(true_xy), -1, dtype=np.int64)
            rank_of_truth[match[match >= 0]] = np.flatnonzero(match >= 0)
            record.update(
                matched=(match >= 0).astype(int).tolist(),
                truth_x=np.round(true_xy[:, 0]).astype(int).tolist(),
                truth_y=np.round(true_xy[:, 1]).astype(int).tolist(),
                truth_rank=rank_of_truth.tolist(),
            )
            all_scores.append(scores)
            all_matched.append(match >= 0)
            n_true += len(true_xy)
        records.append(record)
    if skipped is not None:
        skipped.extend(unreadable)
    if not records and first_error is not None:
        raise first_error

    shown_scores = np.concatenate(
        [np.asarray(r["score"], dtype=np.float64) for r in records] or [np.zeros(0)]
    )
    curve = None
    histogram_annotated = histogram_matched = None
    if truth_groups:
        scores_a = np.concatenate(all_scores) if all_scores else np.zeros(0)
        matched_a = np.concatenate(all_matched) if all_matched else np.zeros(0, bool)
        ev = precision_recall_curve(scores_a, matched_a, n_true)
        curve = {
            **_thin_curve(ev.recall, ev.precision, ev.thresholds),
            "aupr": ev.aupr,
            "best_f1": ev.best_f1,
            "best_f1_threshold": ev.best_f1_threshold,
            "n_true": n_true,
        }
        histogram_annotated = np.concatenate(
            [np.full(len(r["score"]), r["annotated"]) for r in records] or [np.zeros(0, bool)]
        )
        histogram_matched = np.concatenate(
            [np.asarray(r.get("matched", [0] * len(r["score"])), dtype=bool) for r in records]
            or [np.zeros(0, bool)]
        )
    expected_total = sum(r["expected"] for r in records if r["expected"] is not None)
    if threshold is None:
        if expected_total > 0 and shown_scores.size:
            k = min(shown_scores.size, max(1, round(expected_total)))
            threshold = float(np.sort(shown_scores)[::-1][k - 1])
        elif shown_scores.size:
            threshold = float(shown_scores.min())
        else:
            threshold = 0.0
    data = {
        "title": str(title),
        "description": None if description is None else str(description),
        "particle_diameter_px": diameter,
        "match_distance_px": match_distance if truth_groups else None,
        "threshold": round(float(threshold), SCORE_DECIMALS),
        "expected_source": str(expected_source),
        "page_size": PAGE_SIZE,
        "colors": {
            "pick": PICK_COLOR,
            "matched": MATCHED_COLOR,
            "false": UNMATCHED_COLOR,
            "missed": TRUTH_COLOR,
        },
        "histogram": _histogram(shown_scores, histogram_annotated, histogram_matched),
        "curve": curve,
        "micrographs": records,
        "unreadable": [name for name, _ in unreadable],
    }
    parts = {
        "TITLE": html.escape(str(title)),
        "STYLE": _page_part("page.css"),
        "SCRIPT": _page_part("page.js"),
        "DATA": _json_for_script(data),
    }
    # one pass over the template: what is put in is never searched for markers again
    page = re.sub(
        r"__(TITLE|STYLE|SCRIPT|DATA)__", lambda m: parts[m.group(1)], _page_part("page.html")
    )
    with atomic_output(out_path, overwrite=overwrite) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info(
        "wrote %s (%d micrographs, %d picks, %.1f MB)",
        out_path,
        len(records),
        shown_scores.size,
        out_path.stat().st_size / 1e6,
    )
    return out_path
