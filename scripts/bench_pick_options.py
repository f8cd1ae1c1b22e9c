"""What two picking choices do to the picks of the real EMPIAR-10017 samples: the GMM fit's micrograph count, and bf16 autocast.

``--mode gmm``: tzl-pick fits the run's GMM on at most ``FIT_MICROGRAPHS`` micrographs (evenly
spaced) and gives the others their own scale against that mixture
(:mod:`topaz_lightning.picking.normalization`). On the four samples (all in one fit by default)
this fits on ``--fit-counts`` of them instead (e.g. 4, 2, 1) and reports AUPR at the match
distance r and at r / 2, precision at recall 0.9 and best F1 over all four micrographs, picks
made as tzl-pick makes them (:func:`pick_micrograph`, default PickSettings: strided,
window refinement, NMS 1.25 r, bands masked).

``--mode bf16``: CPU seconds of the strided scoring's two network calls (the coarse map of a
256 px image, 128 refinement windows) in float32 and under ``torch.autocast("cpu",
dtype=torch.bfloat16)``, the network as written and its channels-last copy (median of
``--repeats``).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_pick_options.py --model model.pt --mode gmm
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_pick_options.py --model model.pt --mode bf16

The model's particle radius (model.pt's geometry, model px) with ``--downsample`` (4: the
4096 px JPEGs to 1024 px) gives the match distance in micrograph px.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples" / "empiar10017_dev"


def truth_table(coords: Path) -> pd.DataFrame:
    from topaz_lightning.io.coordinates import read_coordinates

    frames = [read_coordinates(p) for p in sorted(coords.iterdir()) if p.suffix == ".csv"]
    return pd.concat(frames, ignore_index=True)


def scores(picks: pd.DataFrame, truth: pd.DataFrame, radius_px: float, names) -> dict:
    from topaz_lightning.metrics import evaluate_picks

    out = {}
    for key, distance in (("r", radius_px), ("r/2", radius_px / 2)):
        ev = evaluate_picks(picks, truth, distance, micrographs=list(names))
        out[f"AUPR {key}"] = ev.aupr
        if key == "r":
            out["P@R0.9"] = ev.precision_at_recall.get(0.9) or 0.0
            out["best F1"] = ev.best_f1
            out["best-F1 threshold"] = ev.best_f1_threshold
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--mode", choices=("gmm", "bf16"), required=True)
    parser.add_argument("--downsample", type=float, default=4.0)
    parser.add_argument("--fit-counts", default="4,2,1")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from topaz_lightning.geometry import NMS_RADIUS_PER_PARTICLE_RADIUS, RunGeometry
    from topaz_lightning.io.micrographs import list_micrographs
    from topaz_lightning.models import load_model
    from topaz_lightning.picking.normalization import PickNormalization, run_fit
    from topaz_lightning.picking.predict import Preprocess, pick_micrograph
    from topaz_lightning.picking.settings import PickSettings

    torch.set_num_threads(1)
    net, extra = load_model(args.model)
    net.eval()
    geometry = RunGeometry.from_dict(extra["geometry"])
    radius_model = float(geometry.particle_radius_px) / float(geometry.downsample)
    settings = PickSettings(
        nms_radius_px_model=NMS_RADIUS_PER_PARTICLE_RADIUS * radius_model,
        downsample=args.downsample,
    )
    match_px = radius_model * args.downsample
    sources = list_micrographs(SAMPLES / "images")
    truth = truth_table(SAMPLES / "coords")
    print(f"model {args.model}, match distance r = {match_px:g} px, {len(sources)} micrographs")

    if args.mode == "gmm":
        rows = []
        for count in [int(c) for c in args.fit_counts.split(",")]:
            fit, prepared = run_fit(sources, args.downsample, max_micrographs=count)
            norm = PickNormalization("gmm", fit, "run", 0)
            step = Preprocess(args.downsample, norm, prepared)
            picks = pd.concat(
                [pick_micrograph(net, step(n, p), settings, n).picks for n, p in sources.items()],
                ignore_index=True,
            )
            row = {"fit on": f"{len(fit.names)} of {len(sources)}", "fit": ", ".join(fit.names)}
            row.update(scores(picks, truth, match_px, sources))
            rows.append(row)
            print(row, flush=True)
        keys = [k for k in rows[0] if k not in ("fit", "best-F1 threshold")]
        print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
        for row in rows:
            cells = [v if isinstance(v, str) else f"{v:.4f}" for v in (row[k] for k in keys)]
            print("| " + " | ".join(cells) + " |")
        return

    bf16_timing(net, args.repeats)


def bf16_timing(net, repeats: int) -> None:
    """CPU seconds of the coarse map of a 256 px image and of 128 refinement windows, float32
    and under bf16 autocast, with the network as written and with its channels-last copy."""
    import torch

    from topaz_lightning.picking.strided import _coarse_map, scoring_layout, window_scores

    image = torch.from_numpy(np.random.default_rng(0).standard_normal((256, 256)))
    image = image.float()
    xy = np.random.default_rng(1).integers(1, 63, size=(128, 2)) * 4
    flags = torch.backends.cpu.get_cpu_capability()
    print(f"torch CPU capability: {flags}; avx512_bf16 in /proc/cpuinfo: {_has_bf16()}")
    print("| precision | layout | coarse map 256 px (CPU s) | 128 windows (CPU s) |")
    print("|---|---|---|---|")
    reference = None
    with torch.inference_mode():
        for label in ("float32", "bf16 autocast"):
            for layout, model in (
                ("as written", net),
                ("channels-last", scoring_layout(net, "cpu")),
            ):
                enabled = label != "float32"
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                    coarse = _coarse_map(model, image, 1)  # set-up outside the timing
                    times = []
                    for _ in range(repeats):
                        start = time.process_time()
                        coarse = _coarse_map(model, image, 1)
                        middle = time.process_time()
                        window_scores(model, image, xy, 2)
                        times.append((middle - start, time.process_time() - middle))
                if reference is None:
                    reference = coarse
                c, w = (statistics.median(t[i] for t in times) for i in range(2))
                diff = float(np.abs(coarse - reference).max())
                print(f"| {label} | {layout} | {c:.3f} | {w:.3f} | (max coarse diff {diff:.3g})")


def _has_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
