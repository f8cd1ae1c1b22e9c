"""scoring=strided against dense on the leave-one-micrograph-out folds of the real EMPIAR-10017 sample.

Uses the models the accuracy study trains (scripts/accuracy_study.py, setting ``base1k``:
conv31, current defaults, 1,000 steps) and its held-out normalization (GMM fitted on the picked
micrograph, as tzl-pick does). Every variant picks each held-out micrograph with
:func:`topaz_lightning.picking.predict.pick_micrograph` and tzl-pick's default PickSettings
(NMS 1.25 particle radii, edge bands masked), so the picks are the ones tzl-pick writes.
Reported per fold: AUPR at the match distance r (one particle radius) and at r / 2, precision at
recall 0.9 (r), best F1 (r), and the seconds per micrograph of pick_micrograph (scoring, NMS,
band mask; CPU seconds of the process and wall seconds, median of ``--repeats`` runs, dense
once: it is the slow one).

    # train the models first (one at a time, 1 thread), e.g.
    OMP_NUM_THREADS=1 .venv/bin/python scripts/accuracy_study.py --out accuracy_out \\
        --stage train --only base1k --jobs 1
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_strided.py --out accuracy_out --labels 100

Results are cached per (labels, fold, variant) in ``<out>/strided/*.json`` (resumable); the
markdown table is printed and written to ``<out>/strided/table.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

#: name -> PickSettings changes (on top of tzl-pick's defaults) and strided_picks extras
VARIANTS: dict[str, dict] = {
    "dense": {"scoring": "dense"},
    "strided": {"scoring": "strided", "refine": "window"},
    "strided_centroid": {"scoring": "strided", "refine": "centroid"},
    "strided_none": {"scoring": "strided", "refine": "none"},
    "strided_quadratic": {"scoring": "strided", "refine": "quadratic"},
    # exact windows for the best 700 / 1300 picks of the 1024 x 1024 micrograph (1.1x / 2x the
    # ~650 particles the models expect; tzl-pick's refine_exact=1.0 is the expected count)
    "strided_top700": {"scoring": "strided", "refine_exact_per_px_model": 700 / 1024**2},
    "strided_top1300": {"scoring": "strided", "refine_exact_per_px_model": 1300 / 1024**2},
}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def pick_once(net, image: np.ndarray, settings, name: str) -> tuple[pd.DataFrame, float, float]:
    """Picks (micrograph frame) of one micrograph, the wall seconds and the CPU seconds of this
    process (steadier than the wall clock on a shared machine) it took."""
    from topaz_lightning.picking.predict import pick_micrograph

    start, cpu = time.perf_counter(), time.process_time()
    picks = pick_micrograph(net, image, settings, name).picks
    return picks, time.perf_counter() - start, time.process_time() - cpu


def evaluate(picks: pd.DataFrame, held) -> dict:
    from topaz_lightning.metrics import evaluate_picks

    out = {}
    for key, distance in (("r", held.match_distance), ("r2", held.match_distance / 2)):
        ev = evaluate_picks(picks, held.truth, distance, micrographs=held.test_names)
        out[f"aupr_{key}"] = ev.aupr
        out[f"p_at_r0.9_{key}"] = ev.precision_at_recall.get(0.9) or 0.0
        out[f"best_f1_{key}"] = ev.best_f1
    out["n_picks"] = int(len(picks))
    return out


def run_fold(out: Path, data, labels: str, fold: int, variants: list[str], repeats: int) -> None:
    import accuracy_study as study
    import torch

    from topaz_lightning.geometry import NMS_RADIUS_PER_PARTICLE_RADIUS
    from topaz_lightning.models import load_model
    from topaz_lightning.picking.settings import PickSettings

    run = out / "train" / "base1k" / f"labels{labels}" / f"fold{fold}"
    if not (run / "model.pt").is_file():
        print(f"skip labels={labels} fold={fold}: no {run / 'model.pt'}", flush=True)
        return
    cache = out / "strided"
    cache.mkdir(parents=True, exist_ok=True)
    todo = [v for v in variants if not (cache / f"labels{labels}_fold{fold}_{v}.json").is_file()]
    if not todo:
        return
    held = data.held(study.TrainSetting("base1k"), fold)
    net, _ = load_model(run / "model.pt")
    net.eval()
    base = PickSettings(
        nms_radius_px_model=NMS_RADIUS_PER_PARTICLE_RADIUS * held.radius,
        downsample=held.downsample,
    )
    (name,) = held.test_names
    image = held.normalized["pick"][name]
    torch.set_num_threads(1)
    pick_once(net, image[:64, :64], base, name)  # oneDNN set-up outside the timing
    for variant in todo:
        settings = base.replace(**VARIANTS[variant])
        times, cpus = [], []
        for _ in range(1 if variant == "dense" else repeats):
            picks, seconds, cpu = pick_once(net, image, settings, name)
            times.append(seconds)
            cpus.append(cpu)
        result = {
            "labels": labels,
            "fold": fold,
            "variant": variant,
            "seconds": float(np.median(times)),
            "seconds_all": times,
            "cpu_seconds": float(np.median(cpus)),
            "cpu_seconds_all": cpus,
            **evaluate(picks, held),
        }
        path = cache / f"labels{labels}_fold{fold}_{variant}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result), flush=True)


def table(out: Path, variants: list[str]) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((out / "strided").glob("labels*_fold*.json"))]
    if not rows:
        return "(no results)"
    df = pd.DataFrame(rows)
    df = df[df["variant"].isin(variants)]
    lines = [f"CPU: {cpu_name()}, 1 thread (torch.set_num_threads(1)), shared machine", ""]
    cols = ["aupr_r", "aupr_r2", "p_at_r0.9_r", "best_f1_r"]
    if "cpu_seconds" not in df:
        df["cpu_seconds"] = np.nan
    head = (
        "| labels | variant | fold | AUPR r | AUPR r/2 | P@R0.9 r | best F1 r | "
        "CPU s / micrograph | wall s / micrograph | picks |"
    )
    lines += [head, "|" + "---|" * 10]
    for (labels, variant), group in df.groupby(["labels", "variant"], sort=True):
        group = group.sort_values("fold")
        for _, row in group.iterrows():
            cells = [f"{row[c]:.3f}" for c in cols]
            cells += [f"{row['cpu_seconds']:.2f}", f"{row['seconds']:.2f}"]
            lines.append(
                f"| {labels} | {variant} | {row['fold']} | "
                + " | ".join(cells)
                + f" | {int(row['n_picks'])} |"
            )
        mean = [f"**{group[c].mean():.3f}**" for c in cols]
        lines.append(
            f"| {labels} | {variant} | mean of {len(group)} | "
            + " | ".join(mean)
            + f" | {group['cpu_seconds'].median():.2f} (median) "
            + f"| {group['seconds'].median():.2f} (median) | |"
        )
    # the rule, on the folds both dense and the variant have
    lines += ["", "Difference to dense (mean over the folds both have):", ""]
    for labels, sub in df.groupby("labels"):
        dense = sub[sub["variant"] == "dense"].set_index("fold")
        for variant, group in sub[sub["variant"] != "dense"].groupby("variant"):
            group = group.set_index("fold")
            folds = sorted(set(group.index) & set(dense.index))
            if not folds:
                continue
            d_r = (group.loc[folds, "aupr_r"] - dense.loc[folds, "aupr_r"]).mean()
            d_r2 = (group.loc[folds, "aupr_r2"] - dense.loc[folds, "aupr_r2"]).mean()
            speed = (dense.loc[folds, "cpu_seconds"] / group.loc[folds, "cpu_seconds"]).median()
            wall = (dense.loc[folds, "seconds"] / group.loc[folds, "seconds"]).median()
            ok = d_r >= -0.005 and d_r2 >= -0.01
            lines.append(
                f"- labels {labels}, {variant}: AUPR r {d_r:+.4f}, r/2 {d_r2:+.4f} "
                f"({len(folds)} folds; rule -0.005 / -0.01: {'met' if ok else 'NOT met'}); "
                f"pick_micrograph {speed:.1f}x less CPU than dense ({wall:.1f}x on the wall "
                "clock; medians of the per-fold ratios)"
            )
    return "\n".join(lines)


def window_timing(model_path: Path, n: int = 700, repeats: int = 3) -> None:
    """Seconds for ``n`` refinement windows (5 x 5, random positions on a 1024 px micrograph;
    700 is what ``refine_exact=1.0`` gives on the bench's micrographs) per dense method and batch
    size (None: ``window_scores``' rule), with the network's leading stages shared across the
    windows by ``window_scores``' rule and without (every window on its own crop), and for the
    coarse map of that micrograph (1 thread), with the weights laid out as tzl-pick's default
    lays them out."""
    import torch

    from topaz_lightning.models import load_model
    from topaz_lightning.models.base import laid_out
    from topaz_lightning.picking import strided
    from topaz_lightning.utils.allocator import keep_freed_memory

    keep_freed_memory()  # as every tzl-* command does
    torch.set_num_threads(1)
    net, _ = load_model(model_path)
    net = laid_out(net.eval(), "auto", "cpu")
    image = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))
    xy = np.random.default_rng(0).integers(0, 1024, size=(n, 2))
    plain = net.valid_score_map
    print(f"CPU: {cpu_name()}, 1 thread; {n} windows", flush=True)
    rule = strided.WINDOW_SHARE_RATIO
    with torch.inference_mode():
        for label, ratio in (("shared stages (rule)", rule), ("crop by crop", float("inf"))):
            strided.WINDOW_SHARE_RATIO = ratio
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                strided.window_scores(net, image, xy, 2, 1)
                times.append(time.perf_counter() - start)
            print(f"{label:20s}: {np.median(times):.2f} s", flush=True)
        # the methods and batch sizes of the crop-by-crop path (strided.WINDOW_SHARE_RATIO: inf)
        for method in ("dilated", "polyphase"):
            net.valid_score_map = lambda x, _method=None, m=method: plain(x, m)
            for chunk in (None, 16, 64, 256):
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    strided.window_scores(net, image, xy, 2, 1, chunk)
                    times.append(time.perf_counter() - start)
                print(f"{method:9s} chunk {chunk!s:>4}: {np.median(times):.2f} s", flush=True)
        net.valid_score_map = plain
        strided.WINDOW_SHARE_RATIO = rule
        start = time.perf_counter()
        strided.coarse_scores(net, image[None, None])
        print(f"coarse map 1024 x 1024: {time.perf_counter() - start:.2f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "accuracy_out")
    parser.add_argument("--labels", default="100", help="comma-separated: 10, 100, all")
    parser.add_argument("--folds", default="0,1,2,3")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument(
        "--window-timing",
        type=Path,
        metavar="MODEL_PT",
        help="only time the refinement windows per dense method and batch size",
    )
    args = parser.parse_args(argv)
    if args.window_timing is not None:
        window_timing(args.window_timing)
        return 0
    out = args.out.resolve()
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    if not args.table_only:
        import accuracy_study as study

        if not (out / "pre" / "names.txt").is_file():
            parser.error(f"{out}: no prepared study (run scripts/accuracy_study.py first)")
        data = study.Data(out)
        for labels in args.labels.split(","):
            for fold in (int(f) for f in args.folds.split(",")):
                run_fold(out, data, labels, fold, variants, args.repeats)
    text = table(out, variants)
    (out / "strided").mkdir(parents=True, exist_ok=True)
    (out / "strided" / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
