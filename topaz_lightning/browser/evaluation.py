"""The pick browser of an evaluation: picks with the truth's matched / false / missed colours."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from topaz_lightning.browser.page import write_pick_browser


def write_evaluation_browser(
    picks: pd.DataFrame,
    truth: pd.DataFrame,
    files: Mapping[str, str | os.PathLike],
    evaluated: set[str],
    max_distance_px: float,
    out_path: str | os.PathLike,
    overwrite: bool = False,
) -> Path | None:
    """``out_path``: the browser for the evaluated micrographs that have an image in ``files``,
    with the truth and the PR curve at the slider's threshold; None when none has an image.
    Circles are drawn at twice the match distance (the particle diameter when the match distance
    is the particle radius, the default)."""
    shown = {n: files[n] for n in sorted(evaluated) if n in files}
    if not shown:
        return None
    keep = set(shown)
    return write_pick_browser(
        picks[picks["micrograph"].astype(str).isin(keep)],
        shown,
        out_path,
        particle_diameter_px=2 * float(max_distance_px),
        truth=truth[truth["micrograph"].astype(str).isin(keep)],
        match_distance_px=float(max_distance_px),
        overwrite=overwrite,
    )
