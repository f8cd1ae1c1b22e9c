"""Leave-one-micrograph-out pick-time study on real EMPIAR-10017 data: what has no config yet.

The studies themselves are configs (docs/accuracy.md): the levers as Hydra multiruns
(``tzl-train -m hparams_search=lomo_levers experiment=lomo_empiar10017 lever=...``, run by the
basic, joblib or SLURM launcher) and their tables as ``tzl-report`` views (``view=levers``).
This script keeps what the framework does not do: many pick-time settings (NMS radius, margin
and band masks, EMA vs raw weights, earlier checkpoints, the GMM fit of the training
micrographs) evaluated from ONE cached score map per model variant, instead of one training per
setting, and the nested checkpoint choice. Its tables are tzl-report's (one home for mean ± std
and paired tests), its test-time augmentation is the framework's (lever=tta8).

    nice -n 5 env OMP_NUM_THREADS=1 .venv/bin/python scripts/accuracy_study.py --out accuracy_out

Stages (resumable: finished runs and evaluations are skipped):
1. prepare: read the 4 micrographs once, Fourier-downsample them 4x (1024 px) and write them as
   MRC with the coordinates in the downsampled (model) frame; the fold lists hold out one each.
2. train: ``tzl-train`` per training setting x labels (10, 100, all) x fold, one after the other,
   with checkpoints every 1,000 steps and an EMA of the weights (``callbacks=ema``), so one run
   yields the steps (1k/2k/3k), last-vs-best and weight-averaging levers.
3. pick + evaluate (in process): score each held-out micrograph once per model variant and
   normalization, then sweep the pick-time levers on the cached score maps; every evaluation
   writes ``metrics.json`` and ``.hydra/overrides.yaml`` (train, pick, labels, data.fold, steps).
4. report: ``tzl-report`` over the evaluations (the default view and ``view=levers`` against
   base1k with the default picks) and the nested checkpoint choice.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from topaz_lightning.geometry import (
    NMS_RADIUS_PER_PARTICLE_RADIUS,
    coordinates_to_micrograph_frame,
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


def run_training(out: Path, jobs: list[tuple[TrainSetting, str, int]]) -> None:
    """Run the missing training jobs one after the other; a failure is logged, not fatal.
    (Parallel runs: the multirun configs, hparams_search=lomo_levers with a launcher.)"""
    for job in jobs:
        setting, labels, fold = job
        run = train_dir(out, setting, labels, fold)
        if (run / "model.pt").is_file() or _wait_for_running(run):
            continue
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


# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# 3. pick + evaluate (in process, on cached score maps)


@dataclass(frozen=True)
class PickSetting:
    """How one held-out micrograph is picked from one training run.

    ``step``: checkpoint (None = the run's last); ``weights``: raw | ema; ``normalize``: the GMM
    fitted at pick time on the picked micrograph (pick) or on the training micrographs (train);
    ``nms``: NMS radius in particle
    radii; ``margin``: exclude picks within this many model px of the edge; ``bands``: exclude
    the striped bands detected along the edges (widened by ``band_padding`` model px).
    """

    step: int | None = None
    weights: str = "raw"
    normalize: str = "pick"
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
        parts.append(f"nms{self.nms:.2f}r")
        if self.margin:
            parts.append(f"margin{self.margin:g}")
        if self.bands:
            parts.append(f"bands+{self.band_padding:g}")
        return "_".join(parts)

    def map_key(self, last: int) -> str:
        step = self.step if self.step is not None else last
        return f"s{step}_{self.weights}_norm-{self.normalize}"


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
    from topaz_lightning.picking.scoring import score_micrograph

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
            score = score_micrograph(net, held.normalized[ps.normalize][name], tile_size=None)
            log.info("scored %s %s %s in %.1f s", run, key, name, time.time() - t0)
            np.save(path.with_suffix(".tmp.npy"), score)
            path.with_suffix(".tmp.npy").replace(path)
            maps[key][name] = score
    return maps


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


def pick_settings(ckpts: list[int], labels: str) -> list[PickSetting]:
    """The pick-time levers, each alone around the baseline (last checkpoint, raw weights, GMM
    fitted at pick time, no TTA, NMS 12 px = 0.89 r, no mask), plus combinations.

    A dense 1024 px score map costs ~50 s of one contended CPU core here, so the score maps are
    few: last raw + last EMA for every run (the NMS and mask sweeps reuse them), earlier
    checkpoints and the training-fit normalization. (Test-time augmentation is a lever of the
    framework's picking: lever=tta8 of hparams_search=lomo_levers.)
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


def run_jobs(out: Path, data: Data, jobs: list[tuple[TrainSetting, str, int]], train: bool) -> None:
    """Train (when ``train``) then pick/evaluate each job, one after the other."""
    for setting, labels, fold in jobs:
        if train:
            run_training(out, [(setting, labels, fold)])
        run = train_dir(out, setting, labels, fold)
        if not (run / "model.pt").is_file():
            continue
        try:
            n = pick_and_evaluate(
                out,
                run,
                data.held(setting, fold),
                pick_settings(sorted(checkpoints(run)), labels),
                {"train": setting.name, "labels": labels, "fold": str(fold)},
            )
            log.info(
                "evaluated %d pick settings for %s labels=%s fold=%d", n, setting.name, labels, fold
            )
        except Exception:  # one broken run must not stop the study
            log.exception(
                "pick/evaluate failed for %s labels=%s fold=%d", setting.name, labels, fold
            )


def report(out: Path) -> None:
    """The tables, by tzl-report over the evaluations (one home for mean ± std and paired tests):
    the default view (mean ± std over folds per train, pick, labels) and view=levers (every
    training setting and pick setting against base1k picked with the defaults, per label count,
    paired over the folds); then the nested checkpoint choice, which has no view."""
    base = f"train=base1k,pick=slast_{DEFAULT_CORE}"
    common = [
        f"sweep_dir={out / 'eval'}",
        "metric=[aupr,precision@0.9,best_f1]",
        "overwrite=true",
        "list_jobs=false",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for extra in (
        ["group_by=[train,pick,labels]", f"output_dir={out / 'report'}"],
        [
            "view=levers",
            "group_by=[train,pick]",
            "view.strata=[labels]",
            f"reference='{base}'",
            f"output_dir={out / 'report'}",
        ],
    ):
        hydra_dir = f"hydra.run.dir={out / 'report' / 'hydra'}"
        subprocess.run(
            [str(BIN / "tzl-report"), *common, *extra, hydra_dir], check=True, cwd=ROOT, env=env
        )
    jobs = load_evaluations(out)
    lines = ["| checkpoint | AUPR | P@R0.9 |", "|---|---|---|"]
    for train, labels in (("steps10k", "100"), ("steps5k", "10"), ("steps5k", "all")):
        text = step_choice(jobs, train, labels)
        if text:
            lines.append(text)
    text = "\n".join(lines) + "\n"
    (out / "report" / "checkpoint_choice.md").write_text(text)
    print(text)


def load_evaluations(out: Path) -> pd.DataFrame:
    """One row per evaluation: train, pick, labels, fold, steps, pick_core (pick without the
    checkpoint part) and the metrics."""
    from topaz_lightning.report import load_sweep

    jobs = load_sweep(out / "eval").jobs.copy()
    jobs["pick_core"] = jobs["pick"].astype(str).str.split("_", n=1).str[1]
    jobs["labels"] = jobs["labels"].astype(str)
    return jobs


#: the defaults at pick time: last checkpoint, raw weights, NMS 1.25 r, band mask + 8.4 px
DEFAULT_CORE = "raw_" + PickSetting(**DEFAULTS).name().split("_", 2)[2]


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
    from topaz_lightning.report import mean_std_of

    lines = []
    for name, (a, b) in rows.items():
        cells = " | ".join(f"{mean_std_of(v)} ({len(v)})" for v in (a, b))
        lines.append(f"| {name} ({labels} labels) | {cells} |")
    lines.append(
        f"| (steps chosen on the other folds, per fold: {', '.join(map(str, chosen))}) | | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global CODE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "accuracy_out")
    parser.add_argument("--stage", choices=("all", "train", "pick", "report"), default="all")
    parser.add_argument("--only", default="", help="comma-separated training setting names")
    parser.add_argument("--folds", default="", help="comma-separated folds (default: all)")
    parser.add_argument("--simulated", action="store_true", help="include the simulated preset")
    # kept so older commands still run; runs are one at a time (parallel: the multirun launchers)
    parser.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
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
        run_jobs(out, data, jobs, train=args.stage != "pick")
    if args.stage in ("all", "report"):
        report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
