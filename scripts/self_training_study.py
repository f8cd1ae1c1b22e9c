"""Self-training on the micrograph being picked, on the leave-one-micrograph-out folds (issue 21).

For each fold and seed: the base run (``experiment=lomo_empiar10017``: 100 labels, 1,000 steps)
picks its held-out micrograph; the top ``--k`` picks by score become extra labeled particles on
that micrograph (no truth is used); a second run trains on all four micrographs with the base
run's own 100 labels plus those pseudo-labels; both models pick the held-out micrograph with
tzl-pick's defaults and are scored against its truth by tzl-evaluate. Resumable (finished
runs and evaluations are kept). Prints one JSON line per fold and seed.

Example usage (one thread per process, as in docs/accuracy.md):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/self_training_study.py --out self_training \
        --folds 0 1 2 3 --seeds 0 --k 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATA = ROOT / "data" / "samples" / "empiar10017_dev"


def _run(*command: object) -> None:
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run([str(c) for c in command], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def _train(run_dir: Path, *overrides: str) -> None:
    if not (run_dir / "model.pt").exists():
        _run(
            BIN / "tzl-train",
            "experiment=lomo_empiar10017",
            f"hydra.run.dir={run_dir}",
            "callbacks.progress_bar=null",
            *overrides,
        )


def _pick_and_evaluate(run_dir: Path, subset: Path) -> dict:
    """tzl-pick (defaults) + tzl-evaluate on the micrographs of ``subset``; the metrics."""
    pick, evaluation = run_dir / "pick", run_dir / "pick" / "eval"
    if not (evaluation / "metrics.json").exists():
        _run(
            BIN / "tzl-pick",
            f"model_path={run_dir / 'model.pt'}",
            f"micrographs={DATA / 'images'}",
            f"subset={subset}",
            f"output_dir={pick}",
            "progress=false",
            "browser=false",
            "overwrite=true",
        )
        _run(
            BIN / "tzl-evaluate",
            f"picks={pick}",
            f"truth={DATA / 'coords'}",
            f"micrographs={subset}",
            f"model_path={run_dir / 'model.pt'}",
            f"output_dir={evaluation}",
            "browser=false",
            "plot=null",
            "overwrite=true",
        )
    return json.loads((evaluation / "metrics.json").read_text())


def _base_labels(base: Path):
    """The base run's labeled particles (micrograph frame), drawn by its own datamodule."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(base / "config.yaml")
    datamodule = instantiate(cfg.data, _recursive_=False)
    datamodule.setup("fit")
    labels = datamodule.train_coordinates[["micrograph", "x", "y"]].copy()
    labels[["x", "y"]] = labels[["x", "y"]] * float(cfg.data.downsample)
    return labels


def study(out: Path, fold: int, seed: int, k: int) -> dict:
    import pandas as pd

    from topaz_lightning.io.coordinates import read_coordinates

    base = out / "base" / f"fold{fold}_seed{seed}"
    _train(base, f"data.fold={fold}", f"seed={seed}")
    subset = base / "val_micrographs.txt"
    before = _pick_and_evaluate(base, subset)
    held_out = subset.read_text().split()
    picks = read_coordinates(base / "pick" / "picks.tsv")
    picks = picks[picks["micrograph"].isin(held_out)].nlargest(k, "score")
    run_dir = out / f"self_k{k}" / f"fold{fold}_seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    labels = pd.concat([_base_labels(base), picks[["micrograph", "x", "y"]]])
    labels[["x", "y"]] = labels[["x", "y"]].round().astype(int)
    labels.columns = ["image_name", "x_coord", "y_coord"]
    labels.to_csv(run_dir / "labels.tsv", sep="\t", index=False)
    names = (base / "train_micrographs.txt").read_text().split() + held_out
    _train(
        run_dir,
        f"seed={seed}",
        f"data.coordinates={run_dir / 'labels.tsv'}",
        "data.coordinates_format=tsv",
        "data.num_labeled=null",
        "data.num_folds=null",
        f"data.train_list=[{','.join(names)}]",
    )
    after = _pick_and_evaluate(run_dir, subset)
    keys = ("aupr", "best_f1")
    return {
        "fold": fold,
        "seed": seed,
        "k": k,
        "base": {key: before[key] for key in keys},
        "self_trained": {key: after[key] for key in keys},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "self_training")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--k", type=int, default=100, help="pseudo-labels: the top k picks")
    args = parser.parse_args(argv)
    for seed in args.seeds:
        for fold in args.folds:
            print(json.dumps(study(args.out.resolve(), fold, seed, args.k)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
