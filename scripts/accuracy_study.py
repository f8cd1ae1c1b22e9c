"""Leave-one-micrograph-out accuracy study on real EMPIAR-10017 data (plus a simulated preset).

One command runs the whole protocol of docs/accuracy.md, resumably (finished runs are skipped):

    nice -n 5 env OMP_NUM_THREADS=1 .venv/bin/python scripts/accuracy_study.py --out accuracy_out

Stages:
1. prepare: read the 4 micrographs once, Fourier-downsample them 4x (1024 px) and write them as
   MRC with the coordinates in the downsampled (model) frame; the fold lists hold out one each.
2. train: ``tzl-train`` per training setting x labels (10, 100, all) x fold, with checkpoints
   every 1,000 steps and an EMA of the weights (``callbacks=ema``), so one run yields the steps
   (1k/2k/3k), last-vs-best and weight-averaging levers.
3. pick + evaluate (in process): score each held-out micrograph once per model variant and
   normalization, then sweep the pick-time levers (NMS radius, border mask, test-time
   augmentation) on the cached score maps; every evaluation writes ``metrics.json`` and
   ``.hydra/overrides.yaml`` so ``tzl-report`` aggregates the folds.
4. report: ``tzl-report`` over the evaluation directory -> mean +/- std per setting.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from topaz_lightning.geometry import (
    NMS_RADIUS_PER_PARTICLE_RADIUS,
    coordinates_to_micrograph_frame,
    coordinates_to_model_frame,
    to_micrograph_px,
)
from topaz_lightning.picking.border import border_padding_px_model

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
log = logging.getLogger("accuracy_study")

DOWNSAMPLE = 4
PARTICLE_DIAMETER_PX = 108.0  # EMPIAR-10017 annotation (Diameter column), micrograph frame
PARTICLE_RADIUS_PX_MODEL = PARTICLE_DIAMETER_PX / 2 / DOWNSAMPLE  # 13.5
LABELS = {"10": 10, "100": 100, "all": None}
#: --code DIR: run tzl-train from this copy of the package instead of the working tree
CODE: Path | None = None


def data_dir() -> Path:
    for path in (
        ROOT / "data/samples/empiar10017_dev",
        ROOT.parent / "shared/data/empiar10017_dev",
    ):
        if (path / "images").is_dir():
            return path
    raise SystemExit("error: EMPIAR-10017 sample data not found (data/samples/empiar10017_dev)")


# ------------------------------------------------------------------------------------------------
# 1. prepare


def prepare(out: Path) -> list[str]:
    """Downsampled MRCs + model-frame coordinates + fold lists under ``out/pre`` (once)."""
    from topaz_lightning.io.coordinates import read_coordinates, write_coordinates
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph, write_micrograph
    from topaz_lightning.preprocess.fourier import downsample

    pre = out / "pre"
    done = pre / "names.txt"
    if done.is_file():
        return done.read_text().split()
    src = data_dir()
    (pre / "images").mkdir(parents=True, exist_ok=True)
    paths = list_micrographs(src / "images")
    names = sorted(paths)
    for name in names:
        small = downsample(read_micrograph(paths[name]), DOWNSAMPLE)
        write_micrograph(pre / "images" / f"{name}.mrc", small, overwrite=True)
    truth = read_coordinates(src / "coords")
    truth = truth[truth["micrograph"].isin(names)]
    model = truth.assign(x=truth["x"] / DOWNSAMPLE, y=truth["y"] / DOWNSAMPLE)
    write_coordinates(model[["micrograph", "x", "y"]], pre / "coords_model.tsv", overwrite=True)
    write_coordinates(truth[["micrograph", "x", "y"]], pre / "coords_full.tsv", overwrite=True)
    for k, held in enumerate(names):
        (pre / f"fold{k}_train.txt").write_text("\n".join(n for n in names if n != held) + "\n")
        (pre / f"fold{k}_test.txt").write_text(held + "\n")
    done.write_text("\n".join(names) + "\n")
    return names


# ------------------------------------------------------------------------------------------------
# 2. train


@dataclass(frozen=True)
class TrainSetting:
    """A named set of tzl-train overrides (applied on top of the base overrides)."""

    name: str
    overrides: tuple[str, ...] = ()
    steps: int = 3000
    labels: tuple[str, ...] = ("10", "100", "all")
    folds: tuple[int, ...] = (0, 1, 2, 3)
    simulated: bool = False
    #: the labeled subset (data.labeled_seed) and the training seed (seed): several per fold
    labeled_seed: int = 0
    seed: int = 0
    #: the simulated preset (configs/simulate/<preset>.yaml), when ``simulated``
    preset: str = "demo"


def base_overrides(out: Path, fold: int) -> list[str]:
    pre = out / "pre"
    return [
        "data=files",
        f"data.micrographs={pre / 'images'}",
        f"data.coordinates={pre / 'coords_model.tsv'}",
        f"data.train_list={pre / f'fold{fold}_train.txt'}",
        "data.downsample=1",
        # the micrographs are already 4x downsampled: 108 px / 4 across
        f"data.particle_diameter_px={PARTICLE_DIAMETER_PX / DOWNSAMPLE:g}",
        "data.label_radius_px_model=4",
        "data.particles_per_micrograph=650",
    ]


COMMON_TRAIN = [
    "data.steps_per_epoch=1000",
    "callbacks=ema",
    # time constant ~100 steps: at 0.999 a 1,000-step run's average still holds 37% of the
    # first steps' weights (measured: AUPR 0.59 vs 0.77 raw on two folds)
    "callbacks.ema.decay=0.99",
    "callbacks.held_out_picking=null",
    "callbacks.best_checkpoint=null",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.model_checkpoint.filename='step{step}'",
    "callbacks.model_checkpoint.save_top_k=-1",
    "callbacks.model_checkpoint.every_n_train_steps=1000",
    "callbacks.model_checkpoint.save_last=false",
]


def simulated_dir(out: Path, preset: str) -> Path:
    return out / "sim" / f"{preset}_seed0"


def simulated_overrides(out: Path, preset: str) -> list[str]:
    return [
        "data=simulated",
        f"data.simulated_preset={preset}",
        f"data.simulated_dir={simulated_dir(out, preset)}",
        # not in the trainer config: ++ adds it
        "++trainer.limit_val_batches=0",
    ]


def train_dir(out: Path, setting: TrainSetting, labels: str, fold: int) -> Path:
    return out / "train" / setting.name / f"labels{labels}" / f"fold{fold}"


def train_command(out: Path, setting: TrainSetting, labels: str, fold: int) -> list[str]:
    run = train_dir(out, setting, labels, fold)
    data = (
        simulated_overrides(out, setting.preset) if setting.simulated else base_overrides(out, fold)
    )
    n = LABELS[labels]
    return [
        str(BIN / "tzl-train"),
        *data,
        f"data.num_labeled={'null' if n is None else n}",
        f"data.labeled_seed={setting.labeled_seed}",
        f"seed={setting.seed}",
        f"trainer.max_steps={setting.steps}",
        *COMMON_TRAIN,
        *setting.overrides,
        f"hydra.run.dir={run}",
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _wait_for_running(run: Path) -> bool:
    """If an earlier invocation's tzl-train for ``run`` still runs, wait for it; True if it
    produced model.pt (a restarted study does not start the same run twice)."""
    pid_file = run / "train.pid"
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text().split()[0])
    while _alive(pid) and not (run / "model.pt").is_file():
        time.sleep(20)
    while _alive(pid):  # model.pt is written just before the process exits
        time.sleep(2)
    return (run / "model.pt").is_file()


def run_training(out: Path, jobs: list[tuple[TrainSetting, str, int]], workers: int) -> None:
    """Run the missing training jobs, ``workers`` at a time; a failure is logged, not fatal."""

    def one(job: tuple[TrainSetting, str, int]) -> None:
        setting, labels, fold = job
        run = train_dir(out, setting, labels, fold)
        if (run / "model.pt").is_file():
            return
        if _wait_for_running(run):
            return
        cmd = train_command(out, setting, labels, fold)
        run.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
        if CODE is not None:
            # a frozen copy of the package (git archive): the shared tree changes under long runs
            env["PYTHONPATH"] = str(CODE)
        t0 = time.time()
        log.info("train %s labels=%s fold=%d", setting.name, labels, fold)
        with open(run.parent / f"fold{fold}.log", "w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            (run / "train.pid").write_text(f"{proc.pid}\n")
            rc = proc.wait()
        (run.parent / f"fold{fold}.seconds").write_text(f"{time.time() - t0:.1f}\n")
        if rc != 0:
            log.error(
                "FAILED (%d): %s labels=%s fold=%d, see %s",
                rc,
                setting.name,
                labels,
                fold,
                run.parent / f"fold{fold}.log",
            )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, jobs))


# ------------------------------------------------------------------------------------------------
# 3. pick + evaluate (in process, on cached score maps)


@dataclass(frozen=True)
class PickSetting:
    """How one held-out micrograph is picked from one training run.

    ``step``: checkpoint (None = the run's last); ``weights``: raw | ema; ``normalize``: the GMM
    fitted at pick time on the picked micrograph (pick) or on the training micrographs (train);
    ``tta``: average the logits over the 8 rotations/mirrors; ``nms``: NMS radius in particle
    radii; ``margin``: exclude picks within this many model px of the edge; ``bands``: exclude
    the striped bands detected along the edges (widened by ``band_padding`` model px).
    """

    step: int | None = None
    weights: str = "raw"
    normalize: str = "pick"
    tta: bool = False
    nms: float = 12 / PARTICLE_RADIUS_PX_MODEL
    margin: float = 0.0
    bands: bool = False
    band_padding: float = 0.0

    def name(self) -> str:
        parts = [
            f"s{self.step if self.step is not None else 'last'}",
            self.weights,
            f"norm-{self.normalize}",
        ]
        if self.tta:
            parts.append("tta")
        parts.append(f"nms{self.nms:.2f}r")
        if self.margin:
            parts.append(f"margin{self.margin:g}")
        if self.bands:
            parts.append(f"bands+{self.band_padding:g}")
        return "_".join(parts)

    def map_key(self, last: int) -> str:
        step = self.step if self.step is not None else last
        return f"s{step}_{self.weights}_norm-{self.normalize}{'_tta' if self.tta else ''}"


def checkpoints(run: Path) -> dict[int, Path]:
    """``{step: path}`` of the run's step checkpoints (``step{N}.ckpt``)."""
    out = {}
    for path in (run / "checkpoints").glob("step*.ckpt"):
        digits = path.stem[4:]
        if digits.isdigit():
            out[int(digits)] = path
    return dict(sorted(out.items()))


def ema_name(run: Path) -> str:
    """``ema`` for the study's EMA decay (0.99), ``ema999`` for runs trained with 0.999."""
    overrides = run / ".hydra" / "overrides.yaml"
    text = overrides.read_text() if overrides.is_file() else ""
    return "ema" if "callbacks.ema.decay=0.99\n" in text or "decay=0.99'" in text else "ema999"


def load_net(run: Path, step: int, weights: str):
    """The classifier of ``run`` at checkpoint ``step``: raw weights or their EMA."""
    import torch

    from topaz_lightning.models import load_model

    net, _ = load_model(run / "model.pt")
    ckpt = torch.load(checkpoints(run)[step], map_location="cpu", weights_only=False)
    # EMAWeightAveraging stores the average as state_dict and the raw weights beside it
    if weights.startswith("ema"):
        if "current_model_state" not in ckpt:
            raise RuntimeError(f"{run}: checkpoint step {step} has no EMA weights")
        state = ckpt["state_dict"]
    else:
        state = ckpt.get("current_model_state", ckpt["state_dict"])
    net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    net.eval()
    return net


def score_tta(net, image: np.ndarray, tta: bool) -> np.ndarray:
    """Dense logits; with ``tta`` the mean over the 8 rotations/mirrors (each mapped back)."""
    from topaz_lightning.picking.scoring import score_micrograph

    if not tta:
        return score_micrograph(net, image, tile_size=None)
    total = np.zeros(image.shape, dtype=np.float64)
    for flip in (False, True):
        base = image[:, ::-1] if flip else image
        for k in range(4):
            s = score_micrograph(net, np.ascontiguousarray(np.rot90(base, k)), tile_size=None)
            s = np.rot90(s, -k)
            total += s[:, ::-1] if flip else s
    return (total / 8).astype(np.float32)


class HeldOut:
    """The held-out micrograph(s) of one run: raw (downsampled) images, truth, normalizations."""

    def __init__(
        self,
        train_names: list[str],
        test_names: list[str],
        images: dict[str, np.ndarray],
        truth_full: pd.DataFrame,
        downsample: float = DOWNSAMPLE,
        particle_radius_px_model: float = PARTICLE_RADIUS_PX_MODEL,
        target_count: int = 650,
    ):
        from topaz_lightning.preprocess.gmm import fit_gmm, normalize_gmm

        self.test_names = test_names
        #: expected particles per micrograph (what a user gives for pi), for the top-k threshold
        self.target_count = int(target_count)
        self.downsample = float(downsample)
        self.radius = float(particle_radius_px_model)
        # a pick matches within one particle radius (micrograph frame)
        self.match_distance = to_micrograph_px(self.radius, self.downsample)
        self.truth = truth_full[truth_full["micrograph"].isin(test_names)]
        tests = {n: images[n] for n in test_names}
        pick_fit = fit_gmm(tests, seed=0)
        self.normalized = {
            "pick": {n: normalize_gmm(im, pick_fit, n) for n, im in tests.items()},
        }
        if train_names:
            train_fit = fit_gmm({n: images[n] for n in train_names}, seed=0)
            mu, sigma = train_fit.mu_prime, train_fit.sigma_prime
            # the training fit's component, each test image at the training images' mean scale
            self.normalized["train"] = {
                n: ((im.astype(np.float64) - mu) / sigma).astype(np.float32)
                for n, im in tests.items()
            }
        self.bands = {}
        from topaz_lightning.picking.border import detect_bands

        for n, im in tests.items():
            self.bands[n] = detect_bands(im)


def threshold_metrics(picks: pd.DataFrame, held: HeldOut) -> dict[str, float]:
    """Precision, recall and F1 of two ways to choose a threshold without the truth: the top
    ``held.target_count`` picks per micrograph (the expected particle count, as given for pi),
    and logit >= 0 (probability 0.5)."""
    from topaz_lightning.metrics import evaluate_picks

    ranked = picks.sort_values("score", ascending=False, kind="stable")
    subsets = {
        "topk": ranked.groupby("micrograph", sort=False).head(held.target_count),
        "logit0": ranked[ranked["score"] >= 0],
    }
    out: dict[str, float] = {}
    for name, sub in subsets.items():
        ev = evaluate_picks(sub, held.truth, held.match_distance, micrographs=held.test_names)
        p = ev.n_matched / max(ev.n_pred, 1)
        r = ev.n_matched / max(ev.n_true, 1)
        out[f"precision_{name}"] = p
        out[f"recall_{name}"] = r
        out[f"f1_{name}"] = 2 * p * r / (p + r) if p + r > 0 else 0.0
        out[f"n_{name}"] = int(ev.n_pred)
    return out


def evaluate_setting(
    run: Path,
    eval_dir: Path,
    held: HeldOut,
    setting: PickSetting,
    maps: dict[str, dict[str, np.ndarray]],
    last: int,
    overrides: list[str],
) -> dict | None:
    """Pick the held-out micrographs as ``setting`` says and write metrics.json (skip if there)."""
    from topaz_lightning.metrics import evaluate_picks
    from topaz_lightning.picking.border import border_mask, keep_unmasked
    from topaz_lightning.picking.nms import non_maximum_suppression

    target = eval_dir / "metrics.json"
    if target.is_file():
        return json.loads(target.read_text())
    key = setting.map_key(last)
    if key not in maps:
        return None
    frames, masked_frames = [], []
    for name, score in maps[key].items():
        xy, scores = non_maximum_suppression(score, setting.nms * held.radius)
        mask = border_mask(
            score.shape,
            margin=setting.margin,
            bands=held.bands[name] if setting.bands else None,
            band_padding=setting.band_padding,
        )
        keep = keep_unmasked(xy, mask)
        table = coordinates_to_micrograph_frame(
            pd.DataFrame({"micrograph": name, "x": xy[:, 0], "y": xy[:, 1], "score": scores}),
            held.downsample,
        )
        frames.append(table[keep])
        masked_frames.append(table[~keep])
    picks = pd.concat(frames, ignore_index=True)
    ev = evaluate_picks(picks, held.truth, held.match_distance, micrographs=held.test_names)
    metrics = {
        "aupr": ev.aupr,
        "best_f1": ev.best_f1,
        "n_pred": ev.n_pred,
        "n_true": ev.n_true,
        "n_matched": ev.n_matched,
    }
    for level, value in ev.precision_at_recall.items():
        metrics[f"precision@{float(level):g}"] = 0.0 if value is None else value
    metrics.update(threshold_metrics(picks, held))
    if setting.margin or setting.bands:
        # of the unmasked picks' top-ranked false positives, how many the mask removes
        removed = pd.concat(masked_frames, ignore_index=True).assign(masked=True)
        full = pd.concat([picks.assign(masked=False), removed], ignore_index=True)
        full = full.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
        ev_full = evaluate_picks(
            full[["micrograph", "x", "y", "score"]],
            held.truth,
            held.match_distance,
            micrographs=held.test_names,
        )
        # evaluate_picks keeps the row order of its input within the evaluated micrographs
        matched = ev_full.picks.set_index(["micrograph", "x", "y", "score"])["matched"]
        full["matched"] = matched.reindex(
            pd.MultiIndex.from_frame(full[["micrograph", "x", "y", "score"]])
        ).to_numpy()
        fp = full[~full["matched"].astype(bool)]
        for top in (25, 50, 100):
            metrics[f"masked_of_top{top}_fp"] = int(fp["masked"].to_numpy()[:top].sum())
        metrics["masked_picks"] = int(len(removed))
        metrics["masked_true_positives"] = int(full.loc[full["masked"], "matched"].sum())
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / ".hydra").mkdir(exist_ok=True)
    (eval_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    tmp = eval_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    tmp.replace(target)
    return metrics


def score_maps(run: Path, held: HeldOut, keys: dict[str, PickSetting]) -> dict[str, dict]:
    """Score maps per map key, cached as .npy in ``run/score_maps``."""
    cache = run / "score_maps"
    cache.mkdir(exist_ok=True)
    maps: dict[str, dict[str, np.ndarray]] = {}
    nets: dict[tuple[int, str], object] = {}
    for key, ps in keys.items():
        if ps.normalize not in held.normalized:
            continue
        maps[key] = {}
        for name in held.test_names:
            path = cache / f"{key}__{name}.npy"
            if path.is_file():
                maps[key][name] = np.load(path)
                continue
            if (ps.step, ps.weights) not in nets:
                nets[(ps.step, ps.weights)] = load_net(run, ps.step, ps.weights)
            net = nets[(ps.step, ps.weights)]
            t0 = time.time()
            score = score_tta(net, held.normalized[ps.normalize][name], ps.tta)
            log.info("scored %s %s %s in %.1f s", run, key, name, time.time() - t0)
            np.save(path.with_suffix(".tmp.npy"), score)
            path.with_suffix(".tmp.npy").replace(path)
            maps[key][name] = score
    return maps


#: TTA is measured on the central CROP x CROP model px of each held-out micrograph (8 score maps
#: of a quarter of the image cost two full ones); CONTEXT px around it make the crop's scores
#: equal to the full map's (conv31 sees 15 px either side)
CROP, CONTEXT = 512, 32


def crop_tta_evaluate(
    out: Path,
    run: Path,
    held: HeldOut,
    tag: dict[str, str],
    weights: str = "raw",
    nms_grid: tuple[float, ...] = (12 / PARTICLE_RADIUS_PX_MODEL, 1.0, 1.25),
) -> int:
    """TTA vs none on the central crop (same region, same model, same NMS); metrics per crop."""
    from topaz_lightning.metrics import evaluate_picks
    from topaz_lightning.picking.nms import non_maximum_suppression

    ckpts = checkpoints(run)
    if not (run / "model.pt").is_file() or not ckpts:
        return 0
    last = max(ckpts)
    todo = []
    for tta in (False, True):
        for n in nms_grid:
            name = f"crop{CROP}_{weights}_norm-pick{'_tta' if tta else ''}_nms{n:.2f}r"
            eval_dir = (
                out
                / "eval"
                / "__".join(
                    [
                        tag["train"],
                        f"s{last}_{name}",
                        f"labels{tag['labels']}",
                        f"fold{tag['fold']}",
                    ]
                )
            )
            if not (eval_dir / "metrics.json").is_file():
                todo.append((tta, n, name, eval_dir))
    if not todo:
        return 0
    cache = run / "score_maps"
    cache.mkdir(exist_ok=True)
    net = None
    written = 0
    for name in held.test_names:
        image = held.normalized["pick"][name]
        h, w = image.shape
        y0, x0 = (h - CROP) // 2, (w - CROP) // 2
        lo_y, lo_x = max(y0 - CONTEXT, 0), max(x0 - CONTEXT, 0)
        window = image[lo_y : y0 + CROP + CONTEXT, lo_x : x0 + CROP + CONTEXT]
        maps = {}
        for tta in (False, True):
            path = cache / f"s{last}_{weights}_crop{CROP}{'_tta' if tta else ''}__{name}.npy"
            if path.is_file():
                maps[tta] = np.load(path)
                continue
            if net is None:
                net = load_net(run, last, weights)
            t0 = time.time()
            score = score_tta(net, np.ascontiguousarray(window), tta)
            log.info("scored %s crop tta=%s %s in %.1f s", run, tta, name, time.time() - t0)
            score = score[y0 - lo_y : y0 - lo_y + CROP, x0 - lo_x : x0 - lo_x + CROP]
            np.save(path, score)
            maps[tta] = score
        truth = held.truth[held.truth["micrograph"] == name]
        model_truth = coordinates_to_model_frame(truth, held.downsample)
        fx, fy = model_truth["x"] - x0, model_truth["y"] - y0
        inside = (fx >= 0) & (fx <= CROP - 1) & (fy >= 0) & (fy <= CROP - 1)
        truth = truth[inside]
        for tta, n, pick_name, eval_dir in todo:
            xy, scores = non_maximum_suppression(maps[tta], n * held.radius)
            picks = coordinates_to_micrograph_frame(
                pd.DataFrame(
                    {"micrograph": name, "x": xy[:, 0] + x0, "y": xy[:, 1] + y0, "score": scores}
                ),
                held.downsample,
            )
            ev = evaluate_picks(picks, truth, held.match_distance, micrographs=[name])
            metrics = {
                "aupr": ev.aupr,
                "best_f1": ev.best_f1,
                "n_true": ev.n_true,
                "n_pred": ev.n_pred,
                "n_matched": ev.n_matched,
            }
            for level, value in ev.precision_at_recall.items():
                metrics[f"precision@{float(level):g}"] = 0.0 if value is None else value
            eval_dir.mkdir(parents=True, exist_ok=True)
            (eval_dir / ".hydra").mkdir(exist_ok=True)
            overrides = [
                f"train={tag['train']}",
                f"pick=s{last}_{pick_name}",
                f"labels={tag['labels']}",
                f"data.fold={tag['fold']}",
                f"steps={last}",
            ]
            (eval_dir / ".hydra" / "overrides.yaml").write_text(
                "".join(f"- {o}\n" for o in overrides)
            )
            (eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            written += 1
    return written


def pick_and_evaluate(
    out: Path, run: Path, held: HeldOut, settings: list[PickSetting], tag: dict[str, str]
) -> int:
    """Evaluate every pick setting on one training run; returns how many were written."""
    ckpts = checkpoints(run)
    if not (run / "model.pt").is_file() or not ckpts:
        return 0
    last = max(ckpts)
    todo = []
    ema = ema_name(run)
    settings = [
        PickSetting(**{**ps.__dict__, "weights": ema}) if ps.weights == "ema" else ps
        for ps in settings
    ]
    for ps in settings:
        ps = ps if ps.step is None or ps.step in ckpts else None
        if ps is None:
            continue
        resolved = PickSetting(**{**ps.__dict__, "step": ps.step if ps.step else last})
        eval_dir = (
            out
            / "eval"
            / "__".join([tag["train"], ps.name(), f"labels{tag['labels']}", f"fold{tag['fold']}"])
        )
        if not (eval_dir / "metrics.json").is_file():
            todo.append((ps, resolved, eval_dir))
    if not todo:
        return 0
    keys = {r.map_key(last): r for _, r, _ in todo}
    maps = score_maps(run, held, keys)
    n = 0
    for ps, resolved, eval_dir in todo:
        overrides = [
            f"train={tag['train']}",
            f"pick={ps.name()}",
            f"labels={tag['labels']}",
            f"data.fold={tag['fold']}",
            f"steps={resolved.step}",
        ]
        if evaluate_setting(run, eval_dir, held, resolved, maps, last, overrides) is not None:
            n += 1
    return n


# ------------------------------------------------------------------------------------------------
# the grid


R = PARTICLE_RADIUS_PX_MODEL
#: NMS radii swept at pick time, in particle radii (12 px = demo-real's old setting = 0.89 r)
NMS_GRID = (0.5, 0.6, 0.7, 0.8, 12 / R, 1.0, 1.1, 1.25, 1.5)


#: tzl-pick's defaults: NMS 1.25 r (geometry.NMS_RADIUS_PER_PARTICLE_RADIUS) and the band mask
#: widened by half the NMS radius (picking.border.border_padding_px_model)
DEFAULTS = {
    "nms": NMS_RADIUS_PER_PARTICLE_RADIUS,
    "bands": True,
    "band_padding": border_padding_px_model(None, NMS_RADIUS_PER_PARTICLE_RADIUS * R),
}


def pick_settings(ckpts: list[int], labels: str, tta: bool = False) -> list[PickSetting]:
    """The pick-time levers, each alone around the baseline (last checkpoint, raw weights, GMM
    fitted at pick time, no TTA, NMS 12 px = 0.89 r, no mask), plus combinations.

    A dense 1024 px score map costs ~50 s of one contended CPU core here, so the score maps are
    few: last raw + last EMA for every run (the NMS and mask sweeps reuse them), earlier
    checkpoints and the training-fit normalization, and TTA (8 maps) only when asked.
    """
    out = []
    for weights in ("raw", "ema"):
        out += [PickSetting(weights=weights, nms=n) for n in NMS_GRID]
        out += [PickSetting(weights=weights, margin=m) for m in (8, 16, 24, 32)]
        out += [PickSetting(weights=weights, bands=True, band_padding=p) for p in (0, 7, 13.5)]
        for n in (1.0, 1.1, 1.25):
            out.append(PickSetting(weights=weights, nms=n, bands=True, band_padding=7))
            out.append(PickSetting(weights=weights, nms=n, margin=24))
        # the defaults after this study: NMS 1.25 r, band padding = half the NMS radius
        out.append(PickSetting(weights=weights, **DEFAULTS))
        # earlier checkpoints (training length, best vs last): raw weights only, one score map
        # each, picked with the old baseline and with the current defaults (1.0 r + bands)
        for step in ckpts[:-1] if weights == "raw" else ():
            out += [PickSetting(step=step, weights=weights, nms=n) for n in (12 / R, 1.0, 1.1)]
            out.append(PickSetting(step=step, weights=weights, nms=1.0, bands=True, band_padding=7))
            out.append(PickSetting(step=step, weights=weights, **DEFAULTS))
        if labels == "100":  # two more score maps: measured at 100 labels only
            out.append(PickSetting(weights=weights, normalize="train"))
            out.append(PickSetting(weights=weights, normalize="train", nms=1.1))
    if tta:
        for n in (12 / R, 1.0, 1.1, 1.25):
            out.append(PickSetting(weights="ema", nms=n, tta=True))
            out.append(PickSetting(weights="ema", nms=n, tta=True, bands=True, band_padding=7))
    seen, unique = set(), []
    for ps in out:
        if ps.name() not in seen:
            seen.add(ps.name())
            unique.append(ps)
    return unique


#: training jobs in priority order: (setting, labels, folds); see docs/accuracy.md for the budget
TRAIN_JOBS: list[tuple[TrainSetting, tuple[str, ...]]] = [
    (TrainSetting("base1k", steps=1000), ("100", "10", "all")),
    (TrainSetting("radius6", overrides=("data.label_radius_px_model=6",), steps=1000), ("100",)),
    (TrainSetting("radius3", overrides=("data.label_radius_px_model=3",), steps=1000), ("100",)),
    (
        TrainSetting("ppm400", overrides=("data.particles_per_micrograph=400",), steps=1000),
        ("100",),
    ),
    (TrainSetting("base", steps=2000), ("100",)),
    # training length and best-vs-last: one 10k-step run per fold with a checkpoint every 1k
    # steps gives 1k, 2k, ..., 10k (same seed and labeled subset as base1k)
    (TrainSetting("steps10k", steps=10000), ("100",)),
    (TrainSetting("steps5k", steps=5000), ("10",)),
    # the autoencoder head at 10 labels (the paper: it helps with few labels); c = 10/P = 1
    (TrainSetting("ae1k", overrides=("decoder=dcgan",), steps=1000), ("10",)),
    # more labeled subsets and training seeds per fold (seed 0 is base1k)
    # (all labels: no subset to draw, only the training seed; one extra run on fold 0)
    (TrainSetting("seed1_1k", labeled_seed=1, seed=1, steps=1000), ("10", "100")),
    (TrainSetting("seed2_1k", labeled_seed=2, seed=2, steps=1000), ("10", "100")),
    # models: Topaz's resnet8 (RF 71) and resnet16 (RF 91)
    (TrainSetting("resnet8_1k", overrides=("model=resnet8",), steps=1000), ("100",)),
    (TrainSetting("resnet16_1k", overrides=("model=resnet16",), steps=1000), ("100",)),
    # pi from the automatic estimate (data.pi=auto, BBE) instead of 650 particles per micrograph
    (
        TrainSetting(
            "piauto_1k",
            overrides=("data.particles_per_micrograph=null", "data.pi=auto"),
            steps=1000,
        ),
        ("100",),
    ),
]
SIM_JOBS: list[tuple[TrainSetting, tuple[str, ...]]] = [
    (TrainSetting("sim_base1k", steps=1000, simulated=True, folds=(0,)), ("10", "100", "all")),
    # more seeds (labeled subset + training) on demo; one seed on the other presets
    *[
        (
            TrainSetting(
                f"sim_{preset}_seed{k}_1k",
                steps=1000,
                simulated=True,
                folds=(0,),
                labeled_seed=k,
                seed=k,
                preset=preset,
            ),
            ("10", "100", "all"),
        )
        for preset, k in (
            ("demo", 1),
            ("demo", 2),
            ("empiar10096_like", 0),
            ("shapiro_like", 0),
        )
    ],
    # empiar10096_like seed 0 had all labels below 100 labels: two more seeds at 100 and all
    *[
        (
            TrainSetting(
                f"sim_empiar10096_like_seed{k}_1k",
                steps=1000,
                simulated=True,
                folds=(0,),
                labeled_seed=k,
                seed=k,
                preset="empiar10096_like",
            ),
            ("100", "all"),
        )
        for k in (1, 2)
    ],
]


def job_list(names: list[str] | None, simulated: bool) -> list[tuple[TrainSetting, str, int]]:
    jobs = []
    for setting, labels in TRAIN_JOBS + (SIM_JOBS if simulated else []):
        if names and setting.name not in names:
            continue
        # folds outer: when time runs out every label count has the same first folds
        for fold in setting.folds:
            for lab in labels:
                jobs.append((setting, lab, fold))
    return jobs


class Data:
    """The prepared real data (and, when asked, the simulated preset), read once."""

    def __init__(self, out: Path):
        from topaz_lightning.io.coordinates import read_coordinates
        from topaz_lightning.io.micrographs import read_micrograph

        pre = out / "pre"
        self.out = out
        self.names = (pre / "names.txt").read_text().split()
        self.images = {n: read_micrograph(pre / "images" / f"{n}.mrc") for n in self.names}
        self.truth = read_coordinates(pre / "coords_full.tsv")
        self._held: dict[tuple, HeldOut] = {}

    def held(self, setting: TrainSetting, fold: int) -> HeldOut:
        key = (setting.preset if setting.simulated else "", fold)
        if key in self._held:
            return self._held[key]
        if setting.simulated:
            self._held[key] = simulated_held_out(self.out, setting.preset)
        else:
            test = [self.names[fold]]
            train = [n for n in self.names if n != self.names[fold]]
            self._held[key] = HeldOut(train, test, self.images, self.truth)
        return self._held[key]


def simulated_held_out(out: Path, preset: str) -> HeldOut:
    """A simulated preset's test micrographs (complete truth), at their native pixel size."""
    from topaz_lightning.io.coordinates import read_coordinates
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph
    from topaz_lightning.simulate import load_dataset_info

    sim = simulated_dir(out, preset)
    meta = load_dataset_info(sim)
    test = (sim / "test.txt").read_text().split()
    train = (sim / "train.txt").read_text().split()
    paths = list_micrographs(sim / "micrographs")
    images = {n: read_micrograph(paths[n]) for n in train + test}
    truth = read_coordinates(sim / "particles.tsv")
    radius = float(meta.get("particle_radius_px") or meta["match_distance_px"])
    # the true mean count per test micrograph (complete truth) as the expected count
    count = round(int(truth["micrograph"].isin(test).sum()) / len(test))
    return HeldOut(
        train,
        test,
        images,
        truth,
        downsample=1.0,
        particle_radius_px_model=radius,
        target_count=count,
    )


def run_jobs(
    out: Path,
    data: Data,
    jobs: list[tuple[TrainSetting, str, int]],
    workers: int,
    train: bool,
    tta: bool = False,
) -> None:
    """Train (when ``train``) then pick/evaluate each job, ``workers`` jobs at a time."""

    def one(job: tuple[TrainSetting, str, int]) -> None:
        setting, labels, fold = job
        if train:
            run_training(out, [job], 1)
        run = train_dir(out, setting, labels, fold)
        if not (run / "model.pt").is_file():
            return
        try:
            held = data.held(setting, fold)
            ckpts = sorted(checkpoints(run))
            n = pick_and_evaluate(
                out,
                run,
                held,
                pick_settings(ckpts, labels, tta),
                {"train": setting.name, "labels": labels, "fold": str(fold)},
            )
            if labels == "100" and not setting.simulated:
                n += crop_tta_evaluate(
                    out, run, held, {"train": setting.name, "labels": labels, "fold": str(fold)}
                )
            log.info(
                "evaluated %d pick settings for %s labels=%s fold=%d", n, setting.name, labels, fold
            )
        except Exception:  # one broken run must not stop the study
            log.exception(
                "pick/evaluate failed for %s labels=%s fold=%d", setting.name, labels, fold
            )

    def running_first(job: tuple[TrainSetting, str, int]) -> bool:
        pid_file = train_dir(out, *job) / "train.pid"
        return not (pid_file.is_file() and _alive(int(pid_file.read_text().split()[0])))

    jobs = sorted(jobs, key=running_first)  # stable: otherwise the priority order
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, jobs))


def report(out: Path) -> None:
    """tzl-report over the evaluations: mean +/- std over folds per (train, pick, labels)."""
    cmd = [
        str(BIN / "tzl-report"),
        f"sweep_dir={out / 'eval'}",
        "group_by=[train,pick,labels]",
        "metric=[aupr,precision@0.9,best_f1]",
        f"output_dir={out / 'report'}",
        "overwrite=true",
        "list_jobs=false",
        f"hydra.run.dir={out / 'report' / 'hydra'}",
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))


def load_evaluations(out: Path) -> pd.DataFrame:
    """One row per evaluation: train, pick, labels, fold, steps, pick_core (pick without the
    checkpoint part) and the metrics."""
    from topaz_lightning.report import load_sweep

    jobs = load_sweep(out / "eval").jobs.copy()
    jobs["pick_core"] = jobs["pick"].astype(str).str.split("_", n=1).str[1]
    jobs["labels"] = jobs["labels"].astype(str)
    return jobs


def _cell(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy()
    if len(v) == 0:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.3f} (1)"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f} ({len(v)})"


METRICS = (("aupr", "AUPR"), ("precision@0.9", "P@R0.9"), ("best_f1", "best F1"))


def _select(
    jobs: pd.DataFrame, train: str | tuple[str, ...], core: str, steps: int | str | None
) -> pd.DataFrame:
    """Evaluations of ``train`` (one setting, or several pooled: n = folds x settings) picked
    as ``core`` at checkpoint ``steps`` (None = the run's last; a number = that checkpoint,
    whether or not it was the run's last)."""
    trains = [train] if isinstance(train, str) else list(train)
    sel = jobs["train"].isin(trains) & (jobs["pick_core"] == core)
    if steps is None:
        sel &= jobs["pick"].astype(str).str.startswith("slast")
    else:
        sel &= pd.to_numeric(jobs["steps"], errors="coerce") == int(steps)
    return jobs[sel]


def lever_table(
    jobs: pd.DataFrame,
    rows: list[tuple[str, str, str, str | None]],
    labels: tuple[str, ...] = ("10", "100", "all"),
    extra: tuple[str, ...] = (),
) -> str:
    """Markdown: one row per (label, train setting, pick_core, steps or None = last), one
    column per labels x metric, mean ± std (folds) over the folds."""
    present = [lab for lab in labels if (jobs["labels"] == lab).any()]
    header = ["setting"] + [f"{name} ({lab})" for lab in present for _, name in METRICS]
    header += list(extra)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, train, core, steps in rows:
        part = _select(jobs, train, core, steps)
        if part.empty:
            continue
        cells = [label]
        for lab in present:
            sub = part[part["labels"] == lab]
            cells += [_cell(sub[key]) if key in sub else "-" for key, _ in METRICS]
        for key in extra:
            cells.append(_cell(part[key]) if key in part else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(out: Path) -> str:
    """The lever tables of docs/accuracy.md (markdown), from the evaluations on disk."""
    jobs = load_evaluations(out)
    t = "base1k"
    base = "raw_norm-pick_nms0.89r"
    md = ["### Summary: picking settings x labels (conv31 + GE-binomial, 1k steps, raw weights)\n"]
    md.append(
        lever_table(
            jobs,
            [
                ("NMS 0.5 r (Topaz's 7 px), no mask", t, "raw_norm-pick_nms0.50r", None),
                ("NMS 0.89 r (old demo-real 12 px), no mask", t, base, None),
                ("NMS 1.0 r, no mask (previous defaults)", t, "raw_norm-pick_nms1.00r", None),
                (
                    "**NMS 1.0 r + band mask (new defaults)**",
                    t,
                    "raw_norm-pick_nms1.00r_bands+7",
                    None,
                ),
                (
                    "NMS 1.25 r + band mask (best measured)",
                    t,
                    "raw_norm-pick_nms1.25r_bands+7",
                    None,
                ),
            ],
        )
    )
    md.append("\n### NMS radius (pick time; 1k steps, last checkpoint)\n")
    rows = []
    for weights in ("raw", "ema", "ema999"):
        for n in NMS_GRID:
            rows.append(
                (
                    f"{weights}, NMS {n:.2f} r = {n * R:.1f} px",
                    t,
                    f"{weights}_norm-pick_nms{n:.2f}r",
                    None,
                )
            )
    md.append(lever_table(jobs, rows))
    md.append("\n### Border handling (pick time; raw weights, NMS 0.89 r unless named)\n")
    rows = [("none", t, base, None)]
    for m in (8, 16, 24, 32):
        rows.append((f"margin {m} px", t, f"raw_norm-pick_nms0.89r_margin{m}", None))
    for p in (0, 7, 13.5):
        rows.append((f"striped bands + {p:g} px", t, f"raw_norm-pick_nms0.89r_bands+{p:g}", None))
    for n in (1.0, 1.1, 1.25):
        rows.append((f"NMS {n:.2f} r, none", t, f"raw_norm-pick_nms{n:.2f}r", None))
        rows.append(
            (f"NMS {n:.2f} r + bands + 7 px", t, f"raw_norm-pick_nms{n:.2f}r_bands+7", None)
        )
        rows.append(
            (f"NMS {n:.2f} r + margin 24 px", t, f"raw_norm-pick_nms{n:.2f}r_margin24", None)
        )
    for n in (12 / R, 1.1, 1.25):
        rows.append((f"EMA, NMS {n:.2f} r, none", t, f"ema_norm-pick_nms{n:.2f}r", None))
        if n > 1:
            rows.append(
                (
                    f"EMA, NMS {n:.2f} r + bands + 7 px",
                    t,
                    f"ema_norm-pick_nms{n:.2f}r_bands+7",
                    None,
                )
            )
    extra = (
        "masked_of_top25_fp",
        "masked_of_top50_fp",
        "masked_of_top100_fp",
        "masked_true_positives",
    )
    md.append(lever_table(jobs, rows, extra=extra))
    md.append("\n### Weight averaging (EMA of the weights; 1k steps)\n")
    rows = []
    for n in (12 / R, 1.0, 1.1, 1.25):
        for weights, label in (("raw", "raw"), ("ema", "EMA 0.99"), ("ema999", "EMA 0.999")):
            rows.append((f"{label}, NMS {n:.2f} r", t, f"{weights}_norm-pick_nms{n:.2f}r", None))
    md.append(lever_table(jobs, rows))
    md.append("\n### GMM normalization: fitted at pick time vs on the training micrographs\n")
    rows = []
    for weights in ("raw", "ema"):
        for n in (12 / R, 1.1):
            for norm in ("pick", "train"):
                rows.append(
                    (
                        f"{weights}, NMS {n:.2f} r, GMM {norm}",
                        t,
                        f"{weights}_norm-{norm}_nms{n:.2f}r",
                        None,
                    )
                )
    md.append(lever_table(jobs, rows))
    md.append(f"\n### Test-time augmentation (8 rotations/mirrors; central {CROP} px crop)\n")
    rows = []
    for n in (12 / R, 1.0, 1.25):
        for tta in ("", "_tta"):
            rows.append(
                (
                    f"raw, NMS {n:.2f} r{' + TTA' if tta else ''}",
                    t,
                    f"crop{CROP}_raw_norm-pick{tta}_nms{n:.2f}r",
                    "1000",
                )
            )
    md.append(lever_table(jobs, rows, labels=("100",)))
    md.append("\n### Training levers at 1k steps: label radius, pi (100 labels)\n")
    rows = []
    for n in (12 / R, 1.1):
        for weights in ("raw", "ema"):
            core = f"{weights}_norm-pick_nms{n:.2f}r"
            for train, label in (
                (t, "label radius 4 px (0.30 r), 650/micrograph"),
                ("radius3", "label radius 3 px (0.22 r)"),
                ("radius6", "label radius 6 px (0.44 r)"),
                ("ppm400", "pi from 400 particles/micrograph"),
            ):
                rows.append((f"{label}, {weights}, NMS {n:.2f} r", train, core, None))
    md.append(lever_table(jobs, rows, labels=("100",)))
    md.append(new_lever_tables(jobs))
    md.append(sim_tables(jobs))
    return "\n".join(md) + "\n"


#: the defaults at pick time: last checkpoint, raw weights, NMS 1.25 r, band mask + 8.4 px
DEFAULT_CORE = "raw_" + PickSetting(**DEFAULTS).name().split("_", 2)[2]
#: the defaults before this study's third pass: NMS 1.0 r, band mask + 7 px
OLD_CORE = "raw_norm-pick_nms1.00r_bands+7"
SEEDS = ("base1k", "seed1_1k", "seed2_1k")


def step_choice(jobs: pd.DataFrame, train: str, labels: str, core: str = DEFAULT_CORE) -> str:
    """Markdown rows: last checkpoint vs the best step chosen on the OTHER folds (nested: for
    fold k the step with the highest mean AUPR over the remaining folds) vs the best step on
    the held-out micrograph itself (an oracle, optimistic by construction)."""
    sel = (jobs["train"] == train) & (jobs["labels"] == labels) & (jobs["pick_core"] == core)
    part = jobs[sel].copy()
    if part.empty:
        return ""
    part["step"] = pd.to_numeric(part["steps"], errors="coerce")
    part["fold"] = part["data.fold"].astype(int)
    table = part.pivot_table(index="fold", columns="step", values="aupr", aggfunc="first")
    p90 = part.pivot_table(index="fold", columns="step", values="precision@0.9", aggfunc="first")
    table = table.dropna(axis=1)
    if table.shape[0] < 2 or table.shape[1] < 2:
        return ""
    last = table.columns.max()
    rows = {
        "last checkpoint": ([], []),
        "step chosen on the other folds": ([], []),
        "best step on the held-out micrograph (oracle)": ([], []),
    }
    chosen = []
    for fold in table.index:
        others = table.drop(index=fold).mean()
        s_cv = others.idxmax()
        s_or = table.loc[fold].idxmax()
        chosen.append(int(s_cv))
        for name, step in zip(rows, (last, s_cv, s_or), strict=True):
            rows[name][0].append(table.loc[fold, step])
            rows[name][1].append(p90.loc[fold, step])
    lines = []
    for name, (a, b) in rows.items():
        lines.append(
            f"| {name} ({labels} labels) | {_cell(pd.Series(a))} | {_cell(pd.Series(b))} |"
        )
    lines.append(
        f"| (steps chosen on the other folds, per fold: {', '.join(map(str, chosen))}) | | |"
    )
    return "\n".join(lines)


def paired(
    jobs: pd.DataFrame,
    base: tuple[str, str, int | None],
    other: tuple[str, str, int | None],
    labels: str,
    metric: str,
) -> str:
    """``other - base`` per fold (same fold, labeled subset and seed): mean (min to max, n)."""
    a = _select(jobs, *base)
    b = _select(jobs, *other)
    a = a[a["labels"] == labels].set_index("data.fold")[metric]
    b = b[b["labels"] == labels].set_index("data.fold")[metric]
    d = (pd.to_numeric(b, errors="coerce") - pd.to_numeric(a, errors="coerce")).dropna()
    if d.empty:
        return "-"
    return f"{d.mean():+.3f} ({d.min():+.3f} to {d.max():+.3f}, {len(d)})"


def summary_table(jobs: pd.DataFrame) -> str:
    """Every lever against its baseline, paired per fold: the table at the top of
    docs/accuracy.md. Deltas are other minus baseline."""
    b = "base1k"
    nobands = "raw_norm-pick_nms1.00r"
    crop = "crop512_raw_norm-pick"
    ema_core = "ema_" + DEFAULT_CORE[4:]
    rows = [
        # (lever, baseline, other, labels)
        *[
            (
                f"new pick defaults (NMS 1.25 r, band mask + 8.4 px) vs old (1.0 r, + 7 px), {t}",
                (t, OLD_CORE, None),
                (t, DEFAULT_CORE, None),
                ("10", "100", "all"),
            )
            for t in (*SEEDS, "steps10k", "steps5k")
        ],
        (
            "NMS radius 0.5 r (Topaz's 7 px) vs 1.0 r, no mask",
            (b, nobands, None),
            (b, "raw_norm-pick_nms0.50r", None),
            ("10", "100", "all"),
        ),
        (
            "NMS radius 1.25 r vs 1.0 r, band mask + 7 px",
            (b, OLD_CORE, None),
            (b, "raw_norm-pick_nms1.25r_bands+7", None),
            ("10", "100", "all"),
        ),
        (
            "band mask (+7 px) vs none, NMS 1.0 r",
            (b, nobands, None),
            (b, OLD_CORE, None),
            ("10", "100", "all"),
        ),
        (
            "fixed 24 px margin vs band mask, NMS 1.0 r",
            (b, OLD_CORE, None),
            (b, "raw_norm-pick_nms1.00r_margin24", None),
            ("10", "100", "all"),
        ),
        (
            "GMM fitted on the training micrographs vs at pick time (NMS 1.1 r, no mask)",
            (b, "raw_norm-pick_nms1.10r", None),
            (b, "raw_norm-train_nms1.10r", None),
            ("100",),
        ),
        (
            "TTA x8 vs none (central 512 px, NMS 1.0 r, no mask)",
            (b, f"{crop}_nms1.00r", 1000),
            (b, f"{crop}_tta_nms1.00r", 1000),
            ("100",),
        ),
        (
            "EMA 0.99 vs raw weights, 1k steps",
            (b, DEFAULT_CORE, None),
            (b, ema_core, None),
            ("10", "100", "all"),
        ),
        (
            "EMA 0.99 vs raw weights, 10k steps",
            ("steps10k", DEFAULT_CORE, None),
            ("steps10k", ema_core, None),
            ("100",),
        ),
        (
            "EMA 0.99 vs raw weights, 5k steps",
            ("steps5k", DEFAULT_CORE, None),
            ("steps5k", ema_core, None),
            ("10",),
        ),
        (
            "3k vs 1k steps",
            ("steps10k", DEFAULT_CORE, 1000),
            ("steps10k", DEFAULT_CORE, 3000),
            ("100",),
        ),
        (
            "10k vs 1k steps",
            ("steps10k", DEFAULT_CORE, 1000),
            ("steps10k", DEFAULT_CORE, None),
            ("100",),
        ),
        (
            "10k vs 3k steps",
            ("steps10k", DEFAULT_CORE, 3000),
            ("steps10k", DEFAULT_CORE, None),
            ("100",),
        ),
        (
            "3k vs 1k steps",
            ("steps5k", DEFAULT_CORE, 1000),
            ("steps5k", DEFAULT_CORE, 3000),
            ("10",),
        ),
        (
            "5k vs 1k steps",
            ("steps5k", DEFAULT_CORE, 1000),
            ("steps5k", DEFAULT_CORE, None),
            ("10",),
        ),
        (
            "label radius 3 px (0.22 r) vs 4 px (0.3 r)",
            (b, DEFAULT_CORE, None),
            ("radius3", DEFAULT_CORE, None),
            ("100",),
        ),
        (
            "label radius 6 px (0.44 r) vs 4 px (0.3 r)",
            (b, DEFAULT_CORE, None),
            ("radius6", DEFAULT_CORE, None),
            ("100",),
        ),
        (
            "pi from 400 vs 650 particles per micrograph",
            (b, DEFAULT_CORE, None),
            ("ppm400", DEFAULT_CORE, None),
            ("100",),
        ),
        (
            "pi from the automatic estimate (data.pi=auto) vs 650 per micrograph",
            (b, DEFAULT_CORE, None),
            ("piauto_1k", DEFAULT_CORE, None),
            ("100",),
        ),
        (
            "autoencoder head (decoder=dcgan) vs none",
            (b, DEFAULT_CORE, None),
            ("ae1k", DEFAULT_CORE, None),
            ("10",),
        ),
        (
            "resnet8 (Topaz's) vs conv31",
            (b, DEFAULT_CORE, None),
            ("resnet8_1k", DEFAULT_CORE, None),
            ("100",),
        ),
        (
            "resnet16 (Topaz's) vs conv31",
            (b, DEFAULT_CORE, None),
            ("resnet16_1k", DEFAULT_CORE, None),
            ("100",),
        ),
        (
            "labeled subset + seed 1 vs seed 0 (not a lever: the spread of luck)",
            (b, DEFAULT_CORE, None),
            ("seed1_1k", DEFAULT_CORE, None),
            ("10", "100"),
        ),
        (
            "labeled subset + seed 2 vs seed 0",
            (b, DEFAULT_CORE, None),
            ("seed2_1k", DEFAULT_CORE, None),
            ("10", "100"),
        ),
    ]
    lines = [
        "| lever (other vs baseline) | labels | ΔAUPR mean (min to max, folds) | ΔP@R0.9 |",
        "|---|---|---|---|",
    ]
    for name, base, other, label_set in rows:
        for lab in label_set:
            d_aupr = paired(jobs, base, other, lab, "aupr")
            if d_aupr == "-":
                continue
            d_p90 = paired(jobs, base, other, lab, "precision@0.9")
            lines.append(f"| {name} | {lab} | {d_aupr} | {d_p90} |")
    return "\n".join(lines)


def new_lever_tables(jobs: pd.DataFrame) -> str:
    """Tables of the second study (training length, checkpoint choice, seeds, autoencoder,
    models, threshold choice), all picked with the current defaults (DEFAULT_CORE)."""
    md = ["\n### Every lever against its baseline (paired per fold)\n", summary_table(jobs)]
    core = DEFAULT_CORE
    md.append(
        "\n### Training length (one run per fold, checkpoints every 1k steps; picked with the "
        "defaults)\n"
    )
    rows = []
    for step in range(1000, 10001, 1000):
        rows.append((f"{step} steps", ("steps10k", "steps5k"), core, str(step)))
    md.append(lever_table(jobs, rows))
    md.append("\n### Checkpoint choice: last vs best step (AUPR, P@R0.9)\n")
    md.append("| checkpoint | AUPR | P@R0.9 |\n|---|---|---|")
    for train, labels in (("steps10k", "100"), ("steps5k", "10"), ("steps5k", "all")):
        text = step_choice(jobs, train, labels)
        if text:
            md.append(text)
    md.append(
        "\n### Seeds: three labeled subsets and training seeds per fold (1k steps; "
        "n = folds x seeds)\n"
    )
    rows = [("seed 0 (labeled_seed 0)", "base1k", core, None)]
    rows += [(f"seed {k}", f"seed{k}_1k", core, None) for k in (1, 2)]
    rows.append(("**pooled: 3 seeds x 4 folds**", SEEDS, core, None))
    md.append(lever_table(jobs, rows))
    md.append("\n### Autoencoder head (decoder=dcgan, c = 10/P; 1k steps, seed 0)\n")
    rows = [
        ("conv31, no decoder", "base1k", core, None),
        ("conv31 + DCGAN decoder", "ae1k", core, None),
    ]
    md.append(lever_table(jobs, rows, labels=("10", "100")))
    md.append("\n### Models (1k steps, seed 0)\n")
    rows = [
        ("conv31 (RF 31)", "base1k", core, None),
        ("resnet8, Topaz's (RF 71)", "resnet8_1k", core, None),
        ("resnet16, Topaz's (RF 91)", "resnet16_1k", core, None),
    ]
    md.append(lever_table(jobs, rows, labels=("100",)))
    md.append(
        "\n### Threshold choice (defaults; 3 seeds x 4 folds at 1k steps): the best-F1 "
        "threshold (known only with the truth) vs the top 650 per micrograph (the count given "
        "for pi) vs logit 0\n"
    )
    sel = jobs["train"].isin(SEEDS) & (jobs["pick_core"] == core)
    sel &= jobs["pick"].astype(str).str.startswith("slast")
    part = jobs[sel]
    if "f1_topk" in part:
        header = "| labels | best F1 | F1 top-650 | P / R top-650 | F1 logit 0 | P / R logit 0 |"
        md.append(header + "\n|---|---|---|---|---|---|")
        for lab in ("10", "100", "all"):
            sub = part[(part["labels"] == lab) & part["f1_topk"].notna()]
            if sub.empty:
                continue
            md.append(
                f"| {lab} | {_cell(sub['best_f1'])} | {_cell(sub['f1_topk'])} | "
                f"{sub['precision_topk'].mean():.3f} / {sub['recall_topk'].mean():.3f} | "
                f"{_cell(sub['f1_logit0'])} | "
                f"{sub['precision_logit0'].mean():.3f} / {sub['recall_logit0'].mean():.3f} |"
            )
    return "\n".join(md)


def sim_tables(jobs: pd.DataFrame) -> str:
    """Simulated presets (complete truth): mean over the seeds (one split each)."""
    md = ["\n### Simulated presets (complete truth; 1k steps; n = seeds, one split)\n"]
    rows = []
    for preset, trains in (
        ("demo", ("sim_base1k", "sim_demo_seed1_1k", "sim_demo_seed2_1k")),
        ("empiar10096_like", tuple(f"sim_empiar10096_like_seed{k}_1k" for k in range(3))),
        ("shapiro_like", ("sim_shapiro_like_seed0_1k",)),
    ):
        rows.append((f"{preset}, NMS 1.0 r", trains, "raw_norm-pick_nms1.00r", None))
        rows.append((f"{preset}, defaults (NMS 1.25 r + band mask)", trains, DEFAULT_CORE, None))
    md.append(lever_table(jobs, rows))
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    global CODE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "accuracy_out")
    parser.add_argument(
        "--stage", choices=("all", "train", "pick", "report", "tables"), default="all"
    )
    parser.add_argument("--only", default="", help="comma-separated training setting names")
    parser.add_argument("--folds", default="", help="comma-separated folds (default: all)")
    parser.add_argument("--simulated", action="store_true", help="include the simulated preset")
    parser.add_argument(
        "--tta",
        action="store_true",
        help="also score with test-time augmentation (8 score maps per run)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="jobs at a time (default 2)")
    parser.add_argument(
        "--code",
        type=Path,
        default=None,
        help="run tzl-train from this copy of the package (e.g. a git archive)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # a study shares the machine: nice 5 for this process and the tzl-train runs it starts
    if os.nice(0) < 5:
        os.nice(5 - os.nice(0))
    CODE = args.code
    out = args.out.resolve()
    prepare(out)
    names = [n for n in args.only.split(",") if n]
    jobs = job_list(names, args.simulated)
    for preset in sorted({s.preset for s, _, _ in jobs if s.simulated}):
        if not (simulated_dir(out, preset) / "dataset.yaml").is_file():
            subprocess.run(
                [
                    str(BIN / "tzl-simulate"),
                    f"simulate={preset}",
                    f"out_dir={simulated_dir(out, preset)}",
                    "contact_sheet=false",
                    f"hydra.run.dir={out / 'sim' / 'hydra' / preset}",
                ],
                check=True,
                cwd=ROOT,
            )
    if args.folds:
        wanted = {int(f) for f in args.folds.split(",")}
        jobs = [job for job in jobs if job[2] in wanted]
    if args.stage in ("all", "train", "pick"):
        data = Data(out)
        run_jobs(
            out,
            data,
            jobs,
            args.jobs if args.stage != "pick" else 1,
            train=args.stage != "pick",
            tta=args.tta,
        )
    if args.stage in ("all", "report"):
        report(out)
    if args.stage in ("all", "report", "tables"):
        text = tables(out)
        (out / "levers.md").write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
