"""Side-by-side benchmark against Topaz 0.3.20: training steps/s, picking micrographs/s, test AUPR.

Example usage:

    make bench-topaz                                   # creates .bench/topaz_venv, runs everything
    .venv/bin/python scripts/bench_topaz.py --repeats 3 --train-steps 100 --aupr-steps 1000
    .venv/bin/python scripts/bench_topaz.py --topaz-venv /tmp/topaz_venv --only train_conv31

Topaz is installed into its own virtual environment (``--topaz-venv``, default
``.bench/topaz_venv``; torch==2.13.0 first, then topaz-em==0.3.20, both with ``-c
constraints.txt``); it is never a dependency of this package. Topaz's commands run there through a
small launcher that first puts an empty module in place of ``torchvision._meta_registrations``:
the torchvision wheel pip pulls registers fake kernels for C++ ops that do not load next to the
CPU build of torch ("operator torchvision::nms does not exist"); Topaz only uses torchvision's
``rotate``, which does not need them.

Both tools get the SAME inputs: the micrographs are preprocessed once by ``tzl-preprocess``
(real data: 4x Fourier-crop + GMM normalization; simulated preset: GMM normalization only) into
float32 MRC files; both tools then read those files with no further downsampling or
normalization (Topaz train/extract never normalize; our runs pass ``data.downsample=1
data.normalize=none``). Labels are one shared coordinate file (integer pixels of the
preprocessed frame); the test truth is another; both tools' picks are scored by ``tzl-evaluate``
with the same match distance. Every measurement is a whole process (start-up, data loading,
writing outputs), the two tools alternate (A B A B ...), and the table gives medians. Each
process's wall time and CPU time (user + sys of the process and its reaped children, from
``wait4``) are recorded; on a loaded machine the CPU time is the steadier measure of work.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPAZ_VERSION = "0.3.20"
TORCH_PIN = "torch==2.13.0"
REAL_NAMES = (
    "Falcon_2012_06_12-14_57_34_0",
    "Falcon_2012_06_12-15_14_01_0",
    "Falcon_2012_06_12-15_17_31_0",
)
REAL_TEST = "Falcon_2012_06_12-15_27_22_0"

# Run inside the Topaz venv as `python -c LAUNCHER <topaz command> <args>`: skip torchvision's
# fake-kernel registration (see the module docstring), then hand over to Topaz's own CLI.
LAUNCHER = (
    "import sys, types\n"
    "sys.modules['torchvision._meta_registrations'] = "
    "types.ModuleType('torchvision._meta_registrations')\n"
    "from topaz.main import main\n"
    "sys.argv = ['topaz'] + sys.argv[1:]\n"
    "main()\n"
)


# the same, under cProfile: `python -c PROFILE_LAUNCHER <stats file> <topaz command> <args>`
PROFILE_LAUNCHER = (
    "import cProfile, sys, types\n"
    "sys.modules['torchvision._meta_registrations'] = "
    "types.ModuleType('torchvision._meta_registrations')\n"
    "from topaz.main import main\n"
    "out = sys.argv[1]\n"
    "sys.argv = ['topaz'] + sys.argv[2:]\n"
    "cProfile.run('main()', out)\n"
)


# ---------------------------------------------------------------------------- pure helpers
def disk_pixels(radius: int) -> int:
    """Pixels (dx, dy) with dx^2 + dy^2 <= r^2: the label disk of both tools."""
    r = int(radius)
    return sum(
        1 for dx in range(-r, r + 1) for dy in range(-r, r + 1) if dx * dx + dy * dy <= r * r
    )


def topaz_pixels_per_particle(radius: int) -> int:
    """What Topaz 0.3.20's ``stats.pixels_given_radius(r, dims=2)`` returns: (2r+1) x the disk.

    It builds a 3-D meshgrid even for dims=2 and sums the 2-D disk mask over the unused third
    axis, so its ``p_observed`` (labeled positive fraction) and its ``-n``-derived pi are both
    (2r+1) times too large. The benchmark therefore gives Topaz ``--pi`` explicitly (see
    :func:`topaz_pi_for`).
    """
    return (2 * int(radius) + 1) * disk_pixels(radius)


def topaz_pi_for(pi_unlabeled: float, num_labels: int, radius: int, total_pixels: int) -> float:
    """The ``--pi`` that makes Topaz's GE objectives use ``pi_unlabeled`` as ours does.

    Topaz trains GE-KL/GE-binomial with ``pi - p_observed`` where ``p_observed = num_labels *
    pixels_given_radius(r) / total_pixels`` (with the (2r+1) factor above); adding its own
    ``p_observed`` back gives the same prior on the unlabeled draws in both tools.
    """
    if total_pixels <= 0:
        raise ValueError(f"total_pixels must be > 0, got {total_pixels}")
    p_observed = num_labels * topaz_pixels_per_particle(radius) / total_pixels
    return float(pi_unlabeled) + p_observed


def median(values: Sequence[float]) -> float:
    """Median of the finite values (nan when there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(finite) if finite else float("nan")


def ratio(ours: float, topaz: float) -> float:
    """ours / Topaz for rates (steps/s, micrographs/s, AUPR); nan when undefined."""
    if not (math.isfinite(ours) and math.isfinite(topaz)) or topaz == 0:
        return float("nan")
    return ours / topaz


def lscpu_summary(text: str) -> dict[str, str]:
    """Model name, CPU count, threads per core and sockets from ``lscpu`` output."""
    wanted = {
        "Model name": "model",
        "CPU(s)": "cpus",
        "Thread(s) per core": "threads_per_core",
        "Core(s) per socket": "cores_per_socket",
        "Socket(s)": "sockets",
    }
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in wanted and wanted[key.strip()] not in out:
            out[wanted[key.strip()]] = value.strip()
    return out


def sample_labels(
    rows: Sequence[tuple[str, float, float]], names: Sequence[str], count: int, seed: int
) -> list[tuple[str, int, int]]:
    """``count`` particles drawn (seeded, without replacement) from the micrographs ``names``.

    Coordinates are rounded to integer pixels: Topaz's coordinate tables are integers, and both
    tools must see identical labels.
    """
    pool = sorted((n, x, y) for n, x, y in rows if n in set(names))
    if count > len(pool):
        raise ValueError(f"asked for {count} labels, only {len(pool)} particles in {list(names)}")
    chosen = random.Random(seed).sample(pool, count)
    return sorted((n, int(round(x)), int(round(y))) for n, x, y in chosen)


def find_aupr(metrics: object) -> float | None:
    """The first ``aupr`` value in a tzl-evaluate metrics.json (searched depth-first)."""
    if isinstance(metrics, Mapping):
        if "aupr" in metrics and isinstance(metrics["aupr"], int | float):
            return float(metrics["aupr"])
        for value in metrics.values():
            found = find_aupr(value)
            if found is not None:
                return found
    elif isinstance(metrics, list):
        for value in metrics:
            found = find_aupr(value)
            if found is not None:
                return found
    return None


@dataclass
class Run:
    """One whole process: its wall and CPU seconds, peak RSS and exit status."""

    wall_s: float
    cpu_s: float
    maxrss_mib: float
    rc: int


@dataclass
class Row:
    """One table row: a measurement with the runs of both tools."""

    name: str
    unit: str
    work: float  # steps or micrographs per run
    ours: list[Run] = field(default_factory=list)
    topaz: list[Run] = field(default_factory=list)
    note: str = ""
    #: picking rows: the key of Bench.aupr (``"<dataset> <model>"``) and our scoring mode, so
    #: the table shows the test AUPR of the very mode timed beside its speed
    aupr_key: str = ""
    scoring: str = ""

    def rate(self, runs: list[Run], clock: str) -> float:
        """Median work per second of the successful runs (clock: wall_s or cpu_s)."""
        return median([self.work / getattr(r, clock) for r in runs if r.rc == 0])


def aupr_cell(row: Row, aupr: Mapping[str, Mapping[str, float | None]]) -> str:
    """``ours / Topaz`` test AUPR of a picking row's scoring mode (``-`` for other rows)."""
    res = aupr.get(row.aupr_key) if row.aupr_key else None
    if not res:
        return "-"
    ours = res.get(f"ours_{row.scoring or 'dense'}")
    return f"{_f(ours)} / {_f(res.get('topaz'))}"


def render_table(
    rows: Sequence[Row], aupr: Mapping[str, Mapping[str, float | None]] | None = None
) -> str:
    """Markdown table: medians of both tools (wall and CPU clock) and the ratios ours/Topaz;
    picking rows carry the test AUPR of the same model and scoring mode (``aupr``)."""
    aupr = aupr or {}
    lines = [
        "| measurement | unit | runs (ours/Topaz) | ours, wall | Topaz, wall | ratio wall | "
        "ours, CPU | Topaz, CPU | ratio CPU | peak RSS MiB (ours/Topaz) | "
        "test AUPR (ours/Topaz) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ow, tw = row.rate(row.ours, "wall_s"), row.rate(row.topaz, "wall_s")
        oc, tc = row.rate(row.ours, "cpu_s"), row.rate(row.topaz, "cpu_s")
        rss_o = median([r.maxrss_mib for r in row.ours if r.rc == 0])
        rss_t = median([r.maxrss_mib for r in row.topaz if r.rc == 0])
        ok_o = sum(r.rc == 0 for r in row.ours)
        ok_t = sum(r.rc == 0 for r in row.topaz)
        lines.append(
            f"| {row.name} | {row.unit} | {ok_o}/{ok_t} | {ow:.3g} | {tw:.3g} | "
            f"**{ratio(ow, tw):.2f}** | {oc:.3g} | {tc:.3g} | **{ratio(oc, tc):.2f}** | "
            f"{rss_o:.0f} / {rss_t:.0f} | {aupr_cell(row, aupr)} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- processes
def run_process(cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Run:
    """Run ``cmd`` (niced by the caller), its output to ``log``; measure wall, CPU and peak RSS."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write("$ " + " ".join(str(c) for c in cmd) + "\n")
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, cpu, usage.ru_maxrss / 1024, proc.returncode)


class Bench:
    """Inputs, tools and the bookkeeping of one benchmark run."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.bin = ROOT / ".venv" / "bin"
        self.venv = Path(args.topaz_venv).resolve()
        self.env = dict(os.environ)
        threads = str(args.threads)
        self.env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, WANDB_MODE="disabled")
        self.nice = ["nice", "-n", str(args.nice)] if args.nice else []
        self.rows: list[Row] = []
        self.aupr: dict[str, dict[str, float | None]] = {}
        self.commands: dict[str, str] = {}
        self.merged = False

    # ------------------------------------------------------------------ set-up
    def ensure_topaz(self) -> None:
        """Create the Topaz venv unless it already runs Topaz; torch first (local CPU build)."""
        py = self.venv / "bin" / "python"
        if py.exists() and self.topaz_version() == TOPAZ_VERSION:
            return
        print(f"creating {self.venv} (torch, then topaz-em=={TOPAZ_VERSION})", flush=True)
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
        subprocess.run([*pip, TORCH_PIN], check=True)
        subprocess.run([*pip, f"topaz-em=={TOPAZ_VERSION}"], check=True)
        found = self.topaz_version()
        if found != TOPAZ_VERSION:
            raise SystemExit(f"error: Topaz in {self.venv} reports {found!r}")

    def topaz_version(self) -> str | None:
        code = LAUNCHER.split("from topaz.main")[0] + "import topaz; print(topaz.__version__)"
        res = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code], capture_output=True, text=True
        )
        return res.stdout.strip() if res.returncode == 0 else None

    def topaz(self, *args: object) -> list[str]:
        return [*self.nice, str(self.venv / "bin" / "python"), "-c", LAUNCHER, *map(str, args)]

    def ours(self, tool: str, *args: object) -> list[str]:
        return [*self.nice, str(self.bin / tool), *map(str, args)]

    def prepare(self, name: str) -> dict:
        """Preprocess a dataset once; write the shared inputs; return their description."""
        base = self.work / name
        info_path = base / "inputs.json"
        if info_path.exists():
            return json.loads(info_path.read_text())
        base.mkdir(parents=True, exist_ok=True)
        pre = base / "pre"
        if name == "real":
            src = ROOT / "data" / "samples" / "empiar10017_dev"
            cmd = self.ours(
                "tzl-preprocess",
                f"input={src / 'images'}",
                f"output_dir={pre}",
                "downsample=4",
                "normalize=gmm",
                f"coordinates={src / 'coords'}",
                "coordinates_output=particles.tsv",
                "progress=false",
                "overwrite=true",
            )
            train_names, test_names = list(REAL_NAMES), [REAL_TEST]
            truth_file = pre / "particles.tsv"
            # particle 108 px at full size -> 27 px after 4x; Topaz's default label radius 3
            geometry = {
                "diameter_px": 27.0,
                "label_radius": 3,
                "nms_radius": 13,
                "match_distance": 13,
                "particles_per_micrograph": 700,
            }
            labels_from = None
        else:
            sim = base / "sim"
            run = self.run_checked(
                self.ours(
                    "tzl-simulate",
                    f"simulate={self.args.preset}",
                    f"out_dir={sim}",
                    "contact_sheet=false",
                    "overwrite=true",
                ),
                base / "simulate.log",
            )
            del run
            ds = _read_yaml(sim / "dataset.yaml")
            cmd = self.ours(
                "tzl-preprocess",
                f"input={sim / 'micrographs'}",
                f"output_dir={pre}",
                "downsample=1",
                "normalize=gmm",
                "progress=false",
                "overwrite=true",
            )
            train_names = (sim / "train.txt").read_text().split()
            test_names = (sim / "test.txt").read_text().split()
            truth_file = sim / "particles.tsv"
            geometry = {
                "diameter_px": 2 * float(ds["particle_radius_px"]),
                "label_radius": int(ds["label_radius_px"]),
                "nms_radius": int(round(float(ds["nms_radius_px"]))),
                "match_distance": float(ds["match_distance_px"]),
                "pi": float(ds["suggested_pi"]),
            }
            labels_from = sim / "labeled" / f"particles_{self.args.labels}.tsv"
        self.commands[f"preprocess ({name})"] = " ".join(cmd[len(self.nice) :])
        self.run_checked(cmd, base / "preprocess.log")
        truth = _read_coords(truth_file)
        if labels_from is not None and labels_from.exists():
            labels = sample_labels(
                _read_coords(labels_from), train_names, len(_read_coords(labels_from)), 0
            )
        else:
            labels = sample_labels(truth, train_names, self.args.labels, 0)
        test_truth = [(n, int(round(x)), int(round(y))) for n, x, y in truth if n in test_names]
        # .txt: Topaz detects its coordinate format from the extension (tsv is refused)
        _write_coords(base / "labels.txt", labels)
        _write_coords(base / "truth_test.txt", test_truth)
        for split, names in (("train", train_names), ("test", test_names)):
            (base / f"{split}.txt").write_text("\n".join(names) + "\n")
            with open(base / f"{split}_images.txt", "w") as f:
                f.write("image_name\tpath\n")
                for n in names:
                    f.write(f"{n}\t{pre / (n + '.mrc')}\n")
            (base / f"{split}_paths.txt").write_text(
                "\n".join(str(pre / (n + ".mrc")) for n in names) + "\n"
            )
        shape = _mrc_shape(pre / (train_names[0] + ".mrc"))
        info = {
            "pre": str(pre),
            "train": train_names,
            "test": test_names,
            "num_labels": len(labels),
            "shape": shape,
            "total_train_pixels": shape[0] * shape[1] * len(train_names),
            **geometry,
        }
        info_path.write_text(json.dumps(info, indent=1))
        return info

    def run_checked(self, cmd: Sequence[str], log: Path) -> Run:
        run = run_process(cmd, log, self.env)
        if run.rc != 0:
            raise SystemExit(f"error: {' '.join(map(str, cmd))} failed (exit {run.rc}); see {log}")
        return run

    # ------------------------------------------------------------------ commands
    def ours_train(self, ds: str, info: dict, model: str, steps: int, out: Path) -> list[str]:
        prior = (
            f"data.pi={info['pi']}"
            if "pi" in info
            else f"data.particles_per_micrograph={info['particles_per_micrograph']}"
        )
        base = self.work / ds
        return self.ours(
            "tzl-train",
            "data=files",
            f"data.micrographs={base / 'train_paths.txt'}",
            f"data.coordinates={base / 'labels.txt'}",
            "data.coordinates_format=tsv",
            "data.downsample=1",
            "data.normalize=none",
            f"data.particle_diameter_px={info['diameter_px']}",
            f"data.label_radius_px_model={info['label_radius']}",
            prior,
            f"data.steps_per_epoch={steps}",
            f"trainer.max_steps={steps}",
            f"model={model}",
            "objective=ge_binomial",
            "callbacks=none",
            "+trainer.enable_checkpointing=false",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            f"seed={self.args.seed}",
            f"hydra.run.dir={out}",
        )

    def topaz_train(
        self, ds: str, info: dict, model: str, steps: int, pi: float, out: Path
    ) -> list[str]:
        base = self.work / ds
        out.mkdir(parents=True, exist_ok=True)
        return self.topaz(
            "train",
            "--train-images",
            base / "train_images.txt",
            "--train-targets",
            base / "labels.txt",
            "-m",
            model,
            "--no-pretrained",
            "--units",
            32,
            "--pi",
            f"{pi:.8g}",
            "-r",
            info["label_radius"],
            "--method",
            "GE-binomial",
            "--minibatch-size",
            256,
            "--minibatch-balance",
            0.0625,
            "--epoch-size",
            steps,
            "--num-epochs",
            1,
            "-d",
            -1,
            "-j",
            self.args.threads,
            "--num-workers",
            0,
            "--save-prefix",
            out / "model",
            "-o",
            out / "train.tsv",
        )

    def ours_pick(
        self,
        ds: str,
        info: dict,
        model_path: Path,
        paths: Path,
        out: Path,
        threshold: float | None,
        scoring: str | None,
    ) -> list[str]:
        extra = [f"scoring={scoring}"] if scoring else []
        thr = "threshold=null" if threshold is None else f"threshold={threshold}"
        return self.ours(
            "tzl-pick",
            f"model_path={model_path}",
            f"micrographs={paths}",
            f"output_dir={out}",
            f"nms_radius_px_model={info['nms_radius']}",
            "nms_boundary=suppress",
            thr,
            "progress=false",
            "overwrite=true",
            "device=cpu",
            *extra,
        )

    def topaz_pick(
        self, info: dict, model_path: Path, paths: Sequence[str], out: Path, threshold: float | None
    ) -> list[str]:
        out.mkdir(parents=True, exist_ok=True)
        thr = "-inf" if threshold is None else str(threshold)
        return self.topaz(
            "extract",
            "-m",
            model_path,
            "-r",
            info["nms_radius"],
            f"--threshold={thr}",  # "=": argparse would take "-inf" for an option
            "-d",
            -1,
            "-j",
            self.args.threads,
            "-o",
            out / "picks.txt",
            *paths,
        )

    def evaluate(self, ds: str, info: dict, picks: Path, out: Path) -> float | None:
        base = self.work / ds
        cmd = self.ours(
            "tzl-evaluate",
            f"picks={picks}",
            "picks_format=tsv",
            f"truth={base / 'truth_test.txt'}",
            "truth_format=tsv",
            f"micrographs={base / 'test.txt'}",
            f"max_distance={info['match_distance']}",
            f"output_dir={out}",
            "plot=null",
            "overwrite=true",
        )
        self.commands.setdefault(f"evaluate ({ds})", " ".join(cmd[len(self.nice) :]))
        self.run_checked(cmd, out.with_suffix(".log"))
        return find_aupr(json.loads((out / "metrics.json").read_text()))

    def scorings(self) -> tuple[str, ...]:
        """Our scoring modes to time, each with its own row (``--scorings``, default all)."""
        from topaz_lightning.picking.scoring import SCORING_METHODS

        wanted = [s for s in self.args.scorings.split(",") if s]
        unknown = set(wanted) - set(SCORING_METHODS)
        if unknown:
            raise SystemExit(
                f"--scorings: unknown {sorted(unknown)}; tzl-pick has {SCORING_METHODS}"
            )
        return tuple(wanted)

    def pick_supports_scoring(self) -> bool:
        pick_yaml = ROOT / "topaz_lightning" / "configs" / "pick.yaml"
        return any(line.startswith("scoring:") for line in pick_yaml.read_text().splitlines())

    # ------------------------------------------------------------------ measurements
    def our_pi_unlabeled(self, model_pt: Path) -> float:
        import torch

        payload = torch.load(model_pt, map_location="cpu", weights_only=True)
        geometry = payload.get("extra", {}).get("geometry", {})
        return float(geometry["pi_unlabeled"])

    def train_timing(self, ds: str, info: dict, ours_model: str, topaz_model: str) -> None:
        steps = self.args.train_steps
        row = Row(
            f"train {ours_model} vs Topaz {topaz_model} ({ds}, {steps} steps)", "steps/s", steps
        )
        pi = None
        self.rows.append(row)
        for rep in range(self.args.repeats):
            d = self.work / ds / f"train_{ours_model}" / f"rep{rep}"
            cmd = self.ours_train(ds, info, ours_model, steps, d / "ours")
            shutil.rmtree(d / "ours", ignore_errors=True)
            row.ours.append(run_process(cmd, d / "ours.log", self.env))
            self._print(row.name, "ours", rep, row.ours[-1])
            if pi is None:
                pi = topaz_pi_for(
                    self.our_pi_unlabeled(d / "ours" / "model.pt"),
                    info["num_labels"],
                    info["label_radius"],
                    info["total_train_pixels"],
                )
            tcmd = self.topaz_train(ds, info, topaz_model, steps, pi, d / "topaz")
            row.topaz.append(run_process(tcmd, d / "topaz.log", self.env))
            self._print(row.name, "Topaz", rep, row.topaz[-1])
            self.save()
        self.commands[row.name + " (ours)"] = " ".join(cmd[len(self.nice) :])
        self.commands[row.name + " (Topaz)"] = "topaz " + " ".join(
            map(str, tcmd[len(self.nice) + 3 :])
        )
        self.save()

    def aupr_and_pick(self, ds: str, info: dict, model: str) -> tuple[Path, Path]:
        """Train both tools for --aupr-steps, pick the test micrographs, score with tzl-evaluate."""
        steps = self.args.aupr_steps
        d = self.work / ds / f"aupr_{model}"
        ours_dir, topaz_dir = d / "ours_train", d / "topaz_train"
        if not (ours_dir / "model.pt").exists():
            shutil.rmtree(ours_dir, ignore_errors=True)
            self.run_checked(
                self.ours_train(ds, info, model, steps, ours_dir), d / "ours_train.log"
            )
        pi = topaz_pi_for(
            self.our_pi_unlabeled(ours_dir / "model.pt"),
            info["num_labels"],
            info["label_radius"],
            info["total_train_pixels"],
        )
        topaz_model = topaz_dir / "model_epoch1.sav"
        if not topaz_model.exists():
            self.run_checked(
                self.topaz_train(ds, info, model, steps, pi, topaz_dir), d / "topaz_train.log"
            )
        result: dict[str, float | None] = {"steps": steps, "topaz_pi": pi}
        variants = [("dense", None)]
        if self.pick_supports_scoring():
            variants = [(s, s) for s in self.scorings()]
        for label, scoring in variants:
            out = d / f"ours_pick_{label}"
            self.run_checked(
                self.ours_pick(
                    ds,
                    info,
                    ours_dir / "model.pt",
                    self.work / ds / "test_paths.txt",
                    out,
                    None,
                    scoring,
                ),
                d / f"ours_pick_{label}.log",
            )
            result[f"ours_{label}"] = self.evaluate(
                ds, info, out / "picks.tsv", d / f"eval_ours_{label}"
            )
        test_paths = (self.work / ds / "test_paths.txt").read_text().split()
        self.run_checked(
            self.topaz_pick(info, topaz_model, test_paths, d / "topaz_pick", None),
            d / "topaz_pick.log",
        )
        result["topaz"] = self.evaluate(ds, info, d / "topaz_pick" / "picks.txt", d / "eval_topaz")
        self.aupr[f"{ds} {model}"] = result
        print(f"AUPR {ds} {model}: {result}", flush=True)
        self.save()
        return ours_dir / "model.pt", topaz_model

    def pick_timing(
        self, ds: str, info: dict, label: str, ours_model: Path, topaz_model: Path
    ) -> None:
        names = (info["train"] + info["test"])[: self.args.pick_micrographs]
        paths = [str(Path(info["pre"]) / f"{n}.mrc") for n in names]
        listing = self.work / ds / "all_paths.txt"
        listing.write_text("\n".join(paths) + "\n")
        scorings = list(self.scorings()) if self.pick_supports_scoring() else [None]
        rows = {
            s: Row(
                f"pick {label} {s or 'dense'} ({ds}, {len(paths)} micrographs, "
                f"threshold {self.args.pick_threshold})",
                "micrographs/s",
                len(paths),
                aupr_key=f"{ds} {label}",
                scoring=s or "dense",
            )
            for s in scorings
        }
        self.rows.extend(rows.values())
        for rep in range(self.args.repeats):
            d = self.work / ds / f"pick_{label}" / f"rep{rep}"
            for s in scorings:
                cmd = self.ours_pick(
                    ds, info, ours_model, listing, d / f"ours_{s}", self.args.pick_threshold, s
                )
                rows[s].ours.append(run_process(cmd, d / f"ours_{s}.log", self.env))
                self._print(rows[s].name, "ours", rep, rows[s].ours[-1])
                self.commands[rows[s].name + " (ours)"] = " ".join(cmd[len(self.nice) :])
            tcmd = self.topaz_pick(info, topaz_model, paths, d / "topaz", self.args.pick_threshold)
            run = run_process(tcmd, d / "topaz.log", self.env)
            for s in scorings:  # one Topaz run is the reference of every scoring mode
                rows[s].topaz.append(run)
            self._print(label, "Topaz", rep, run)
            self.save()
            self.commands[f"pick {label} (Topaz)"] = "topaz " + " ".join(
                map(str, tcmd[len(self.nice) + 3 :])
            )
        self.save()

    def profile(self, ds: str, info: dict, steps: int) -> None:
        """cProfile one short training run and one single-micrograph picking run of each tool."""
        d = self.work / ds / "profile"
        d.mkdir(parents=True, exist_ok=True)
        pstats_lines: list[str] = []
        ours_dir = d / "ours_train"
        shutil.rmtree(ours_dir, ignore_errors=True)
        train = self.ours_train(ds, info, "conv31", steps, ours_dir)
        prof = [*self.nice, str(self.bin / "python"), "-m", "cProfile", "-o"]
        runs = {
            "ours train": [*prof, str(d / "ours_train.prof"), *train[len(self.nice) :]],
        }
        self.run_checked(runs["ours train"], d / "ours_train.log")
        pi = topaz_pi_for(
            self.our_pi_unlabeled(ours_dir / "model.pt"),
            info["num_labels"],
            info["label_radius"],
            info["total_train_pixels"],
        )
        tcmd = self.topaz_train(ds, info, "conv31", steps, pi, d / "topaz_train")
        tcmd = [
            *self.nice,
            str(self.venv / "bin" / "python"),
            "-c",
            PROFILE_LAUNCHER,
            str(d / "topaz_train.prof"),
            *tcmd[len(self.nice) + 3 :],
        ]
        self.run_checked(tcmd, d / "topaz_train.log")
        first = Path(info["pre"]) / f"{info['test'][0]}.mrc"
        listing = d / "one.txt"
        listing.write_text(f"{first}\n")
        for scoring in self.scorings():
            pick = self.ours_pick(
                ds,
                info,
                ours_dir / "model.pt",
                listing,
                d / f"ours_{scoring}",
                self.args.pick_threshold,
                scoring,
            )
            self.run_checked(
                [*prof, str(d / f"ours_pick_{scoring}.prof"), *pick[len(self.nice) :]],
                d / f"ours_pick_{scoring}.log",
            )
        tpick = self.topaz_pick(
            info,
            d / "topaz_train" / "model_epoch1.sav",
            [str(first)],
            d / "topaz_pick",
            self.args.pick_threshold,
        )
        tpick = [
            *self.nice,
            str(self.venv / "bin" / "python"),
            "-c",
            PROFILE_LAUNCHER,
            str(d / "topaz_pick.prof"),
            *tpick[len(self.nice) + 3 :],
        ]
        self.run_checked(tpick, d / "topaz_pick.log")
        import io
        import pstats

        for name in (
            "ours_train",
            "topaz_train",
            *(f"ours_pick_{s}" for s in self.scorings()),
            "topaz_pick",
        ):
            buf = io.StringIO()
            stats = pstats.Stats(str(d / f"{name}.prof"), stream=buf)
            stats.sort_stats("tottime").print_stats(12)
            pstats_lines.append(f"==== {name} (cProfile, sorted by own time)\n{buf.getvalue()}")
        text = "\n".join(pstats_lines)
        (d / "profile.txt").write_text(text)
        print(text, flush=True)

    # ------------------------------------------------------------------ output
    def _print(self, name: str, tool: str, rep: int, run: Run) -> None:
        print(
            f"{name} | {tool} rep {rep}: wall {run.wall_s:.1f} s, CPU {run.cpu_s:.1f} s, "
            f"{run.maxrss_mib:.0f} MiB, exit {run.rc}",
            flush=True,
        )

    def save(self) -> None:
        data = {
            "rows": [
                {
                    "name": r.name,
                    "unit": r.unit,
                    "work": r.work,
                    "ours": [vars(x) for x in r.ours],
                    "topaz": [vars(x) for x in r.topaz],
                    "aupr_key": r.aupr_key,
                    "scoring": r.scoring,
                }
                for r in self.rows
            ],
            "aupr": self.aupr,
            "commands": self.commands,
            "args": vars(self.args),
        }
        (self.work / "results.json").write_text(json.dumps(data, indent=1))

    def merge(self, path: Path) -> None:
        """Add the rows, AUPR results and commands of another run's results.json."""
        data = json.loads(Path(path).read_text())
        self.merged = True
        for r in data["rows"]:
            self.rows.append(
                Row(
                    r["name"],
                    r["unit"],
                    r["work"],
                    [Run(**x) for x in r["ours"]],
                    [Run(**x) for x in r["topaz"]],
                    aupr_key=r.get("aupr_key", ""),
                    scoring=r.get("scoring", ""),
                )
            )
        self.aupr.update(data["aupr"])
        for k, v in data["commands"].items():
            self.commands.setdefault(k, v)

    def machine(self) -> dict[str, str]:
        res = subprocess.run(["lscpu"], capture_output=True, text=True)
        info = lscpu_summary(res.stdout)
        info["load_average_at_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        info["python"] = platform.python_version()
        info["topaz"] = self.topaz_version() or "?"
        import torch

        info["torch"] = torch.__version__
        try:
            rev = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
            ).stdout.strip()
        except OSError:
            rev = "?"
        info["topaz_lightning_commit"] = rev
        return info

    def report(self) -> str:
        m = self.machine()
        lines = [
            "## Results (generated by scripts/bench_topaz.py)",
            "",
            f"- Machine: {m.get('model', '?')}, {m.get('cpus', '?')} CPUs "
            f"({m.get('threads_per_core', '?')} threads/core, {m.get('cores_per_socket', '?')} "
            f"cores/socket, {m.get('sockets', '?')} socket(s)); load average at the end "
            f"{m['load_average_at_end']}",
            f"- Versions: Topaz {m['topaz']}, torch {m['torch']} (both venvs), Python "
            f"{m['python']}, topaz-lightning commit {m['topaz_lightning_commit']}",
            f"- Settings: {self.args.threads} thread(s) per process (OMP_NUM_THREADS, Topaz -j), "
            f"nice {self.args.nice}, ours and Topaz alternating, medians; "
            + (
                "repeats, steps and micrographs per row (the runs column, the row names), "
                "picking threshold in the row names"
                if self.merged
                else f"{self.args.repeats} repeat(s); training timing {self.args.train_steps} "
                f"steps, AUPR training {self.args.aupr_steps} steps, picking threshold "
                f"{self.args.pick_threshold} (logit)"
            ),
            "- Rates are work / seconds of the whole process; the CPU clock is user + sys time "
            "of the process and its children. Ratios are ours / Topaz (> 1: ours is faster).",
            "",
            render_table(self.rows, self.aupr),
            "",
            "### Test AUPR (tzl-evaluate on both tools' picks, same truth and match distance)",
            "",
            "| dataset / model | training steps | ours | Topaz | ours - Topaz |",
            "|---|---|---|---|---|",
        ]
        for key, res in self.aupr.items():
            topaz_aupr = res.get("topaz")
            for k, v in res.items():
                if not k.startswith("ours_"):
                    continue
                diff = (v - topaz_aupr) if (v is not None and topaz_aupr is not None) else None
                lines.append(
                    f"| {key} ({k[5:]}) | {res['steps']} | {_f(v)} | {_f(topaz_aupr)} | {_f(diff)} |"
                )
        lines += ["", "### Commands", "", "```"]
        # paths relative to the repository, as a user would type them
        lines += [f"# {k}\n{v}".replace(str(ROOT) + "/", "") for k, v in self.commands.items()]
        lines += ["```", ""]
        return "\n".join(lines)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _read_coords(path: Path) -> list[tuple[str, float, float]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        return [(r["image_name"], float(r["x_coord"]), float(r["y_coord"])) for r in reader]


def _write_coords(path: Path, rows: Sequence[tuple[str, int, int]]) -> None:
    with open(path, "w") as f:
        f.write("image_name\tx_coord\ty_coord\n")
        for n, x, y in rows:
            f.write(f"{n}\t{x}\t{y}\n")


def _mrc_shape(path: Path) -> tuple[int, int]:
    import mrcfile

    with mrcfile.open(path, permissive=True, header_only=True) as mrc:
        return int(mrc.header.ny), int(mrc.header.nx)


def write_doc(path: Path, generated: str) -> None:
    """Replace the generated part of ``path`` (from its '## Results' heading on), keep the intro."""
    marker = "## Results (generated by scripts/bench_topaz.py)"
    intro = ""
    if path.exists():
        intro = path.read_text().split(marker)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(intro + generated)


def find_models(work: Path, model: str) -> tuple[Path, Path]:
    """Both tools' trained ``model`` in a work directory: the AUPR run's, else a timing run's.

    The weights do not change the cost of dense scoring; a threshold does make the NMS cost depend
    on how many pixels score above it (said in the report).
    """
    aupr = work / "real" / f"aupr_{model}"
    pairs = [(aupr / "ours_train" / "model.pt", aupr / "topaz_train" / "model_epoch1.sav")]
    for rep in sorted((work / "real" / f"train_{model}").glob("rep*")):
        pairs.append((rep / "ours" / "model.pt", rep / "topaz" / "model_epoch1.sav"))
    for ours, topaz in pairs:
        if ours.exists() and topaz.exists():
            return ours, topaz
    raise SystemExit(f"error: no trained {model} of both tools under {work}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topaz-venv", default=str(ROOT / ".bench" / "topaz_venv"))
    parser.add_argument("--work", default=str(ROOT / ".bench" / "topaz_work"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--aupr-steps", type=int, default=1000)
    parser.add_argument(
        "--scorings",
        default="dense,coarse_to_fine,strided",
        help="our scoring modes: each gets an AUPR run and a picking-speed row",
    )
    parser.add_argument(
        "--labels", type=int, default=100, help="labeled particles (both data sets)"
    )
    parser.add_argument("--preset", default="demo", help="tzl-simulate preset")
    parser.add_argument(
        "--pick-threshold",
        type=float,
        default=-6.0,
        help="logit threshold for the picking timing (Topaz's default -6)",
    )
    parser.add_argument(
        "--pick-micrographs", type=int, default=4, help="micrographs per picking run (real: <= 4)"
    )
    parser.add_argument(
        "--models-from",
        default=None,
        help="work directory whose trained models the pick_* parts time (default: --work)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only",
        nargs="*",
        default=[
            "aupr_real",
            "aupr_sim",
            "train_conv31",
            "train_resnet8",
            "pick_conv31",
            "pick_resnet8",
        ],
        help="parts to run, in this order (setup: only the venv and the inputs)",
    )
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks" / "topaz.md"))
    parser.add_argument(
        "--merge",
        nargs="*",
        default=[],
        help="results.json of other runs (e.g. parts run in parallel) to include in the doc",
    )
    args = parser.parse_args(argv)

    bench = Bench(args)
    bench.ensure_topaz()
    real = bench.prepare("real") if args.only else {}
    models: dict[str, tuple[Path, Path]] = {}
    for part in args.only:
        if part == "setup":
            continue  # the venv and the preprocessed real data only
        if part == "aupr_real":
            models["conv31"] = bench.aupr_and_pick("real", real, "conv31")
        elif part == "aupr_sim":
            bench.aupr_and_pick("sim", bench.prepare("sim"), "conv31")
        elif part == "profile":
            bench.profile("real", real, min(args.train_steps, 20))
        elif part == "train_conv31":
            bench.train_timing("real", real, "conv31", "conv31")
        elif part == "train_resnet8":
            bench.train_timing("real", real, "resnet8", "resnet8")
        elif part.startswith("pick_"):
            model = part[len("pick_") :]
            if model not in models:
                models[model] = find_models(Path(args.models_from or bench.work), model)
            bench.pick_timing("real", real, model, *models[model])
        else:
            parser.error(f"unknown part {part!r}")
    for path in args.merge:
        bench.merge(Path(path))
    text = bench.report()
    print(text)
    write_doc(Path(args.doc), text)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
