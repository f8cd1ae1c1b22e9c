"""A pick browser: one self-contained static HTML page to look at picks and move a threshold.

:func:`write_pick_browser` writes a page that needs no server and no network: the script, the
style, the picks and the thumbnails (JPEG, base64) are all inside the one file. Per micrograph it
shows a downsampled, contrast-stretched thumbnail with the picks drawn as circles of the particle
diameter; a threshold slider and a top-k box redraw every micrograph in the browser, with pick
counts per micrograph and in total beside the count expected from the model's prior. With true
particles the picks are coloured matched / false and the missed particles are drawn, with the
pooled precision-recall curve and the current setting marked on it.

Matching with truth is done once, here, with the greedy-by-score one-to-one matching
(``metrics.match_picks(method="score")``): picks in order of descending score each take the
nearest free particle within the match distance. A pick's status never depends on picks of lower
score, so the matching of the picks above any threshold (or the top k of a micrograph) is the
full matching restricted to them, and the page can colour and count at any setting exactly.

Scores in the page are rounded to 4 decimals (logits); :func:`pick_counts` is the Python-side
count the page shows at a setting.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from topaz_lightning.errors import InputError

log = logging.getLogger("topaz_lightning")

__all__ = [
    "THUMBNAIL_MAX_SIDE_PX",
    "SCORE_DECIMALS",
    "expected_particles",
    "pick_counts",
    "thumbnail",
    "write_pick_browser",
]

#: longest side of a thumbnail unless ``downsample_for_thumbnail`` is given
THUMBNAIL_MAX_SIDE_PX = 512
#: scores are rounded to this many decimals in the page
SCORE_DECIMALS = 4
#: contrast stretch: these percentiles of the thumbnail map to black and white
STRETCH_PERCENTILES = (1.0, 99.0)
#: JPEG quality of the thumbnails: a 512 px EMPIAR-10017 thumbnail is ~92 KB in the page at 75,
#: ~115 KB at 85, ~185 KB at 95 (base64; docs/browser.md)
JPEG_QUALITY = 75
#: micrographs per page of the browser
PAGE_SIZE = 24
#: most points of the precision-recall curve kept in the page
MAX_CURVE_POINTS = 1000
#: bins of the score histogram
HISTOGRAM_BINS = 60
#: colour of picks on micrographs without true particles
PICK_COLOR = "#ffd400"


def expected_particles(
    pi: float, shape_px: tuple[int, int], downsample: float, label_radius_px_model: float
) -> float:
    """Particles expected on a micrograph of ``shape_px`` (H, W, micrograph frame) from the
    model's prior: ``pi * (H / downsample) * (W / downsample) / disk_area(label_radius_px_model)``,
    the inverse of ``data.prior.pi_from_particles_per_micrograph``."""
    from topaz_lightning.geometry import disk_area

    h_model, w_model = shape_px[0] / downsample, shape_px[1] / downsample
    return float(pi) * h_model * w_model / disk_area(label_radius_px_model)


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


def thumbnail(
    image: np.ndarray, downsample: int | None = None, max_side_px: int = THUMBNAIL_MAX_SIDE_PX
) -> tuple[np.ndarray, int]:
    """A uint8 picture of ``image`` for display and its downsampling factor.

    Block means of ``downsample`` x ``downsample`` pixels (default: the smallest factor that
    brings the longer side to ``max_side_px`` or less; the last partial block is dropped), then a
    contrast stretch from the 1st to the 99th percentile. Thumbnail pixel ``i`` covers micrograph
    pixels ``[i f, (i + 1) f)``, so a micrograph coordinate ``x`` lies at ``(x + 0.5) / f`` in
    the thumbnail's continuous frame (0 at its left edge).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) < 1:
        raise InputError(f"expected a 2-D micrograph, got shape {image.shape}", where="image")
    if downsample is None:
        factor = max(1, math.ceil(max(image.shape) / max_side_px))
    else:
        factor = int(downsample)
        if factor < 1 or factor != downsample:
            raise InputError(
                f"must be an integer >= 1, got {downsample!r}", where="downsample_for_thumbnail"
            )
    h, w = image.shape[0] // factor, image.shape[1] // factor
    if h < 1 or w < 1:
        raise InputError(
            f"downsampling by {factor} leaves no pixel of a {image.shape} micrograph",
            where="downsample_for_thumbnail",
        )
    small = image[: h * factor, : w * factor].reshape(h, factor, w, factor).mean(axis=(1, 3))
    finite = small[np.isfinite(small)]
    if finite.size == 0:
        return np.zeros((h, w), dtype=np.uint8), factor
    lo, hi = np.percentile(finite, STRETCH_PERCENTILES)
    if not hi > lo:
        hi = lo + 1.0
    scaled = np.clip((np.nan_to_num(small, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8), factor


def _jpeg_data_uri(picture: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture, mode="L").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _load_image(name: str, source) -> np.ndarray:
    if isinstance(source, str | os.PathLike):
        from topaz_lightning.io.micrographs import read_micrograph

        return read_micrograph(source)
    image = np.asarray(source, dtype=np.float32)
    if image.ndim != 2:
        raise InputError(
            f"expected a 2-D array, got shape {image.shape}", where=f"micrograph {name}"
        )
    return image


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
        "STYLE": _STYLE,
        "SCRIPT": _SCRIPT,
        "DATA": _json_for_script(data),
    }
    # one pass over the template: what is put in is never searched for markers again
    page = re.sub(r"__(TITLE|STYLE|SCRIPT|DATA)__", lambda m: parts[m.group(1)], _TEMPLATE)
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


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>__TITLE__</title>
<style>__STYLE__</style>
</head>
<body>
<header><h1 id="title"></h1><p id="description"></p><p id="settings"></p>
<p id="unreadable"></p></header>
<section id="controls">
  <label>threshold (logit) <input type="range" id="threshold"></label>
  <input type="number" id="threshold-value" aria-label="threshold value">
  <label>top-k per micrograph <input type="number" id="topk" min="0" step="1" placeholder="all"></label>
  <button id="btn-all" type="button">all picks</button>
  <button id="btn-expected" type="button">expected count</button>
  <button id="btn-best-f1" type="button">best F1</button>
  <div id="totals"><span id="total-picks"></span> <span id="total-expected"></span>
   <span id="total-truth"></span></div>
</section>
<section id="plots">
  <figure><svg id="histogram" width="420" height="170"></svg>
   <figcaption>scores of all picks (click to set the threshold)</figcaption></figure>
  <figure id="pr-figure"><svg id="pr-curve" width="240" height="170"></svg>
   <figcaption id="pr-caption"></figcaption></figure>
  <div id="legend"></div>
</section>
<nav id="pager"><label>order <select id="sort">
  <option value="given">as given</option><option value="picks-desc">most picks</option>
  <option value="picks-asc">fewest picks</option><option value="false-desc">most false picks</option>
  <option value="missed-desc">most missed particles</option></select></label>
 <label>name contains <input type="search" id="filter"></label>
 <button id="prev" type="button">&larr; previous</button>
 <span id="page-label"></span><button id="next" type="button">next &rarr;</button></nav>
<main id="grid"></main>
<script type="application/json" id="tzl-data">__DATA__</script>
<script>__SCRIPT__</script>
</body>
</html>
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em; background: #fafafa; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .2em 0; }
header p { margin: .1em 0; color: #555; }
#unreadable { color: #b00; }
#controls { position: sticky; top: 0; background: #fafafa; padding: .5em 0; z-index: 2;
  border-bottom: 1px solid #ddd; }
#controls label { margin-right: 1em; }
#threshold { width: 320px; vertical-align: middle; }
#threshold-value { width: 6em; }
#topk { width: 6em; }
#totals { margin-top: .4em; font-weight: 600; }
#plots { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; margin: .5em 0; }
figure { margin: 0; } figcaption { font-size: .8em; color: #555; }
#histogram { cursor: crosshair; background: #fff; border: 1px solid #ddd; }
#pr-curve { background: #fff; border: 1px solid #ddd; }
#legend span { display: inline-block; margin-right: 1em; font-size: .9em; }
#legend i { display: inline-block; width: .9em; height: .9em; border-radius: 50%;
  border: 2px solid; margin-right: .3em; vertical-align: middle; }
#pager { margin: .5em 0; } #pager span { margin: 0 1em; } #pager label { margin-right: 1em; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: .8em; }
.card { background: #fff; border: 1px solid #ddd; padding: .3em; cursor: zoom-in; }
.card.wide { grid-column: 1 / -1; cursor: zoom-out; }
.card.wide canvas { width: min(100%, 1024px); margin: auto; }
.card canvas { width: 100%; height: auto; display: block; background: #000; }
.card .name { font-size: .8em; word-break: break-all; margin: .2em 0; }
.card .count { font-size: .85em; }
"""

_SCRIPT = r"""
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("tzl-data").textContent);
  const M = D.micrographs;
  const hasTruth = D.curve !== null;
  const $ = (id) => document.getElementById(id);
  const state = { threshold: D.threshold, topk: 0, page: 0 };

  // per micrograph: scores are sorted descending; prefix sums of matched picks
  for (const m of M) {
    if (m.annotated) {
      const c = new Int32Array(m.score.length + 1);
      for (let i = 0; i < m.score.length; i++) c[i + 1] = c[i] + m.matched[i];
      m.cumMatched = c;
    }
  }
  const allScores = [];
  for (const m of M) for (const s of m.score) allScores.push(s);
  allScores.sort((a, b) => b - a);
  const lo = allScores.length ? allScores[allScores.length - 1] : 0;
  const hi = allScores.length ? allScores[0] : 1;
  const span = Math.max(hi - lo, 1e-3);
  const step = Math.pow(10, Math.floor(Math.log10(span / 500)));
  const decimals = Math.max(0, -Math.round(Math.log10(step)));
  const sliderMin = Math.floor(lo / step) * step;
  const sliderMax = Math.ceil(hi / step) * step;

  // number of picks of m with score >= t (binary search on descending scores), then top-k
  function shown(m) {
    const s = m.score;
    let a = 0, b = s.length;
    while (a < b) { const mid = (a + b) >> 1; if (s[mid] >= state.threshold) a = mid + 1; else b = mid; }
    return state.topk > 0 ? Math.min(a, state.topk) : a;
  }
  function counts(m, n) {
    if (!m.annotated) return null;
    const matched = m.cumMatched[n];
    return { matched: matched, false: n - matched, missed: m.truth_x.length - matched };
  }

  function text(el, value) { el.textContent = value; return el; }
  function make(tag, cls) { const el = document.createElement(tag); if (cls) el.className = cls; return el; }
  const svgNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const el = document.createElementNS(svgNS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    return el;
  }
  function fmt(v) { return Number.isInteger(v) ? String(v) : v.toFixed(1); }

  // header
  text($("title"), D.title);
  text($("description"), D.description || "");
  text($("settings"), "particle diameter " + fmt(D.particle_diameter_px) + " px" +
    (D.match_distance_px !== null ? "; match distance " + fmt(D.match_distance_px) + " px" : "") +
    "; " + M.length + " micrographs, " + allScores.length + " picks");

  if (D.unreadable.length) {
    text($("unreadable"), D.unreadable.length + " micrograph(s) could not be read and are not shown: " +
      D.unreadable.slice(0, 5).join(", ") + (D.unreadable.length > 5 ? ", ..." : ""));
  }

  // legend
  const legend = $("legend");
  const items = hasTruth
    ? [["matched pick", D.colors.matched], ["false pick", D.colors.false],
       ["missed particle", D.colors.missed], ["pick (no truth)", D.colors.pick]]
    : [["pick", D.colors.pick]];
  for (const [label, color] of items) {
    const s = make("span"); const i = make("i"); i.style.borderColor = color;
    s.appendChild(i); s.appendChild(document.createTextNode(label)); legend.appendChild(s);
  }

  // controls
  const slider = $("threshold"), box = $("threshold-value"), topk = $("topk");
  slider.min = sliderMin.toFixed(decimals); slider.max = sliderMax.toFixed(decimals);
  slider.step = step.toFixed(decimals); box.step = step.toFixed(decimals);
  function setThreshold(t, from) {
    if (!Number.isFinite(t)) return;
    state.threshold = t;
    if (from !== slider) slider.value = t;
    if (from !== box) box.value = Number(t.toFixed(Math.max(decimals, 4)));
    update();
  }
  slider.addEventListener("input", () => setThreshold(parseFloat(slider.value), slider));
  box.addEventListener("input", () => setThreshold(parseFloat(box.value), box));
  topk.addEventListener("input", () => {
    const k = parseInt(topk.value, 10);
    state.topk = Number.isFinite(k) && k > 0 ? k : 0;
    update();
  });
  $("btn-all").addEventListener("click", () => setThreshold(sliderMin, null));
  const expectedTotal = M.reduce((a, m) => a + (m.expected === null ? 0 : m.expected), 0);
  const haveExpected = M.some((m) => m.expected !== null);
  $("btn-expected").disabled = !(haveExpected && allScores.length);
  $("btn-expected").addEventListener("click", () => {
    const k = Math.min(allScores.length, Math.max(1, Math.round(expectedTotal)));
    setThreshold(allScores[k - 1], null);
  });
  $("btn-best-f1").disabled = !(hasTruth && D.curve.best_f1_threshold !== null);
  $("btn-best-f1").addEventListener("click", () => setThreshold(D.curve.best_f1_threshold, null));

  // histogram
  const H = D.histogram, hist = $("histogram");
  const HW = 420, HH = 170, HL = 36, HB = 20, HT = 6, HR = 6;
  const hx = (v) => HL + (v - H.edges[0]) / ((H.edges[H.edges.length - 1] - H.edges[0]) || 1) * (HW - HL - HR);
  let thresholdLine = null;
  if (H.edges.length) {
    const peak = Math.max(1, ...H.all);
    const hy = (c) => HH - HB - c / peak * (HH - HB - HT);
    // nested bars from the bottom: all picks (grey), on annotated micrographs (false colour),
    // matched (matched colour)
    const layers = [[H.all, "#888"]];
    if (H.annotated) layers.push([H.annotated, D.colors.false], [H.matched, D.colors.matched]);
    for (let i = 0; i < H.all.length; i++) {
      const x0 = hx(H.edges[i]), x1 = hx(H.edges[i + 1]);
      for (const [values, fill] of layers) {
        hist.appendChild(svg("rect", { x: x0, y: hy(values[i]), width: Math.max(x1 - x0 - 0.5, 0.5),
          height: HH - HB - hy(values[i]), fill: fill }));
      }
    }
    hist.appendChild(svg("line", { x1: HL, x2: HW - HR, y1: HH - HB, y2: HH - HB, stroke: "#444" }));
    const ends = [H.edges[0], (H.edges[0] + H.edges[H.edges.length - 1]) / 2, H.edges[H.edges.length - 1]];
    ends.forEach((v, i) => {
      const anchor = ["start", "middle", "end"][i];
      const t = svg("text", { x: hx(v), y: HH - 5, "font-size": 10, "text-anchor": anchor });
      hist.appendChild(text(t, v.toFixed(2)));
    });
    hist.appendChild(text(svg("text", { x: 2, y: HT + 8, "font-size": 10 }), String(peak)));
    thresholdLine = svg("line", { y1: HT, y2: HH - HB, stroke: "#0a0", "stroke-width": 2 });
    hist.appendChild(thresholdLine);
    hist.addEventListener("click", (ev) => {
      const r = hist.getBoundingClientRect();
      const x = (ev.clientX - r.left) * HW / r.width;
      const v = H.edges[0] + (x - HL) / (HW - HL - HR) * (H.edges[H.edges.length - 1] - H.edges[0]);
      setThreshold(Math.min(sliderMax, Math.max(sliderMin, Number(v.toFixed(decimals)))), null);
    });
  }

  // precision-recall curve
  let prMarker = null;
  const PW = 240, PH = 170, PL = 30, PB = 22, PT = 6, PR = 8;
  const px = (r) => PL + r * (PW - PL - PR), py = (p) => PH - PB - p * (PH - PB - PT);
  if (hasTruth) {
    const pr = $("pr-curve"), C = D.curve;
    pr.appendChild(svg("rect", { x: PL, y: PT, width: PW - PL - PR, height: PH - PB - PT, fill: "none", stroke: "#ccc" }));
    const pts = C.recall.map((r, i) => px(r).toFixed(1) + "," + py(C.precision[i]).toFixed(1)).join(" ");
    pr.appendChild(svg("polyline", { points: pts, fill: "none", stroke: "#333", "stroke-width": 1.5 }));
    pr.appendChild(text(svg("text", { x: PL + (PW - PL - PR) / 2, y: PH - 5, "font-size": 10, "text-anchor": "middle" }), "recall"));
    pr.appendChild(text(svg("text", { x: 2, y: PT + 8, "font-size": 10 }), "1"));
    pr.appendChild(text(svg("text", { x: 2, y: PH - PB, "font-size": 10 }), "0"));
    prMarker = svg("circle", { r: 5, fill: "#0a0", stroke: "#fff" });
    pr.appendChild(prMarker);
    text($("pr-caption"), "precision (y) vs recall, " + C.n_true + " true particles; AUPR " +
      (C.aupr === null ? "-" : C.aupr.toFixed(3)) + ", best F1 " +
      (C.best_f1 === null ? "-" : C.best_f1.toFixed(3)) + "; dot: current setting");
  } else {
    $("pr-figure").style.display = "none";
  }

  // thumbnails: one page at a time; images are decoded only for the page shown
  const grid = $("grid");
  // the micrographs listed, in order: filtered by name, sorted at the setting when chosen
  let view = M.map((m, i) => i), pages = 1;
  function makeView() {
    const needle = $("filter").value.toLowerCase();
    view = [];
    for (let i = 0; i < M.length; i++) if (M[i].name.toLowerCase().includes(needle)) view.push(i);
    const how = $("sort").value;
    if (how !== "given") {
      const key = (i) => {
        const n = shown(M[i]), c = counts(M[i], n);
        if (how === "picks-desc") return -n;
        if (how === "picks-asc") return n;
        if (!c) return Infinity;  // unannotated micrographs last
        return how === "false-desc" ? -c.false : -c.missed;
      };
      const keys = new Map(view.map((i) => [i, key(i)]));
      view.sort((a, b) => keys.get(a) - keys.get(b) || a - b);
    }
    pages = Math.max(1, Math.ceil(view.length / D.page_size));
    state.page = 0;
  }
  let cards = [];
  function draw(card) {
    const m = card.m, ctx = card.canvas.getContext("2d");
    if (!card.img.complete || !card.img.naturalWidth) return;
    ctx.drawImage(card.img, 0, 0);
    const f = m.factor, r = D.particle_diameter_px / 2 / f, n = shown(m);
    ctx.lineWidth = Math.max(1.5, card.canvas.width / 250);
    // one path per colour: thousands of circles stroke in one call
    const stroke = (color, xs, ys, keep) => {
      ctx.beginPath(); ctx.strokeStyle = color;
      for (let i = 0; i < xs.length; i++) {
        if (!keep(i)) continue;
        const cx = (xs[i] + 0.5) / f, cy = (ys[i] + 0.5) / f;
        ctx.moveTo(cx + r, cy); ctx.arc(cx, cy, r, 0, 2 * Math.PI);
      }
      ctx.stroke();
    };
    if (m.annotated) {
      stroke(D.colors.missed, m.truth_x, m.truth_y, (j) => m.truth_rank[j] < 0 || m.truth_rank[j] >= n);
      stroke(D.colors.matched, m.x, m.y, (i) => i < n && m.matched[i] === 1);
      stroke(D.colors.false, m.x, m.y, (i) => i < n && m.matched[i] === 0);
    } else {
      stroke(D.colors.pick, m.x, m.y, (i) => i < n);
    }
  }
  function caption(card) {
    const m = card.m, n = shown(m), c = counts(m, n);
    let s = n + " picks";
    if (m.expected !== null) s += " (expected " + fmt(m.expected) + ")";
    if (c) s += "; matched " + c.matched + ", false " + c.false + ", missed " + c.missed;
    text(card.count, s);
    card.count.dataset.count = n;
  }
  function renderPage() {
    grid.replaceChildren();
    cards = [];
    document.body.dataset.loaded = 0;
    const start = state.page * D.page_size;
    for (let k = start; k < Math.min(view.length, start + D.page_size); k++) {
      const i = view[k], m = M[i], el = make("div", "card");
      el.dataset.index = i;
      el.title = "click to enlarge / shrink";
      el.addEventListener("click", () => el.classList.toggle("wide"));
      const canvas = make("canvas");
      canvas.width = Math.floor(m.width / m.factor); canvas.height = Math.floor(m.height / m.factor);
      const name = text(make("div", "name"), m.name);
      const count = make("div", "count"); count.id = "count-" + i;
      el.append(canvas, name, count);
      grid.appendChild(el);
      const img = new Image();
      const card = { m: m, canvas: canvas, count: count, img: img };
      img.onload = () => {
        card.loaded = true;
        draw(card);
        document.body.dataset.loaded = cards.filter((c) => c.loaded).length;
      };
      img.src = m.thumb;
      cards.push(card);
    }
    text($("page-label"), "page " + (state.page + 1) + " / " + pages + " (" +
      (view.length ? start + 1 : 0) + "-" + Math.min(view.length, start + D.page_size) + " of " +
      view.length + (view.length < M.length ? " listed, " + M.length + " in all)" : ")"));
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    for (const card of cards) caption(card);
  }
  $("sort").addEventListener("change", () => { makeView(); renderPage(); });
  $("filter").addEventListener("input", () => { makeView(); renderPage(); });
  if (!hasTruth) for (const v of ["false-desc", "missed-desc"]) $("sort").querySelector("option[value=" + v + "]").remove();
  $("prev").addEventListener("click", () => { if (state.page > 0) { state.page--; renderPage(); } });
  $("next").addEventListener("click", () => { if (state.page < pages - 1) { state.page++; renderPage(); } });

  let drawPending = false;
  function update() {
    const started = performance.now();
    let total = 0, matched = 0, falses = 0, missed = 0, truthTotal = 0;
    for (const m of M) {
      const n = shown(m);
      total += n;
      const c = counts(m, n);
      if (c) { matched += c.matched; falses += c.false; missed += c.missed; truthTotal += m.truth_x.length; }
    }
    const totalEl = $("total-picks");
    text(totalEl, total + " picks on " + M.length + " micrographs");
    totalEl.dataset.count = total;
    const expEl = $("total-expected");
    text(expEl, haveExpected ? "(expected " + fmt(expectedTotal) + " from " + D.expected_source + ")" : "");
    if (hasTruth) {
      const precision = matched + falses > 0 ? matched / (matched + falses) : 1;
      const recall = truthTotal > 0 ? matched / truthTotal : 0;
      const tEl = $("total-truth");
      text(tEl, "matched " + matched + ", false " + falses + ", missed " + missed +
        "; precision " + precision.toFixed(3) + ", recall " + recall.toFixed(3));
      tEl.dataset.matched = matched; tEl.dataset.false = falses; tEl.dataset.missed = missed;
      prMarker.setAttribute("cx", px(recall)); prMarker.setAttribute("cy", py(precision));
    }
    if (thresholdLine) {
      const x = Math.min(HW - HR, Math.max(HL, hx(state.threshold)));
      thresholdLine.setAttribute("x1", x); thresholdLine.setAttribute("x2", x);
    }
    for (const card of cards) caption(card);
    document.body.dataset.threshold = state.threshold;
    document.body.dataset.topk = state.topk;
    document.body.dataset.countMs = (performance.now() - started).toFixed(1);
    // the counts above are current at once; the drawing waits for the next frame, once per frame
    // however many events a dragged slider sends
    if (!drawPending) {
      drawPending = true;
      requestAnimationFrame(() => {
        const t0 = performance.now();
        for (const card of cards) draw(card);
        drawPending = false;
        document.body.dataset.drawMs = (performance.now() - t0).toFixed(1);
        document.body.dataset.drawn = state.threshold + "/" + state.topk;
      });
    }
  }

  makeView();
  renderPage();
  setThreshold(state.threshold, null);
  document.body.dataset.ready = "1";
})();
"""
