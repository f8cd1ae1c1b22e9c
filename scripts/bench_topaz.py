"""Side-by-side benchmark against Topaz 0.3.20: training steps/s, picking micrographs/s, test AUPR.

Example usage:

    make bench-topaz                                   # creates .bench/topaz_venv, runs everything
    .venv/bin/python scripts/bench_topaz.py --repeats 3 --train-steps 100 --aupr-steps 1000
    .venv/bin/python scripts/bench_topaz.py --only aupr_real --aupr-models conv31:1000
    .venv/bin/python scripts/bench_topaz.py --snapshot --only pick_conv31 --pick-micrographs 16 \
        --scorings strided:window,strided:window_all,dense --repeats 3 --dense-repeats 1

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
data.normalize=none``, and tzl-pick replays that from model.pt). Labels are one shared
coordinate file (integer pixels of the preprocessed frame); the test truth is another; both
tools' picks are scored by ``tzl-evaluate`` at the match distance r and at r/2. The picking
timing reads ``--pick-micrographs`` files (the 4 real micrographs used repeatedly, copied under
distinct names) with every scoring mode of ``--scorings`` (``SCORING[:REFINE]``) and both tools'
models of the AUPR runs (``aupr_real``), so each speed row has the AUPR of the same model and
mode beside it. Every measurement is a whole process (start-up, data loading, writing
outputs), the two tools alternate (A B A B ...), and the table gives medians. Each process's
wall time and CPU time (user + sys of the process and its reaped children, from ``wait4``) are
recorded, with the load average at its start; on a loaded machine the CPU time is the steadier
measure of work. ``--snapshot`` runs our tools from a ``git archive`` of the committed HEAD, so a
shared checkout's uncommitted edits do not enter the measurement.
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
    """One whole process: its wall and CPU seconds, peak RSS, exit status and the machine's
    1-minute load average when it started (nan in results written before it was recorded)."""

    wall_s: float
    cpu_s: float
    maxrss_mib: float
    rc: int
    load1: float = float("nan")


def parse_scoring_spec(spec: str) -> tuple[str, str | None]:
    """``"strided:centroid"`` -> ``("strided", "centroid")``; ``"dense"`` -> ``("dense", None)``.

    The part after ``:`` is tzl-pick's ``refine`` (only meaningful for ``scoring=strided``);
    without it tzl-pick's own default applies. Raises ValueError for an empty part.
    """
    scoring, sep, refine = spec.strip().partition(":")
    if not scoring or (sep and not refine):
        raise ValueError(f"scoring spec {spec!r}: expected SCORING or SCORING:REFINE")
    return scoring, (refine or None)


#: --scorings refine token for exact windows on every maximum (tzl-pick's refine_exact=all)
WINDOW_ALL = "window_all"


def refine_overrides(refine: str | None) -> list[str]:
    """tzl-pick overrides of a spec's refine token (``window_all``: every maximum exact)."""
    if refine == WINDOW_ALL:
        return ["refine=window", "refine_exact=all"]
    return [f"refine={refine}"] if refine else []


def scoring_label(spec: str, defaults: tuple[str, str] | None = None) -> str:
    """Row text of a scoring spec: ``scoring=strided refine=centroid``; ``(default)`` appended
    when it is tzl-pick's default (``defaults`` = pick.yaml's ``(scoring, refine)``)."""
    scoring, refine = parse_scoring_spec(spec)
    text = " ".join([f"scoring={scoring}"] + refine_overrides(refine))
    if defaults is not None and scoring == defaults[0]:
        if scoring != "strided" or (refine or defaults[1]) == defaults[1]:
            text += " (default)"
    return text


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


#: suffix of the AUPR keys scored at half the match distance (``ours_<spec>`` at r,
#: ``ours_<spec>@half`` at r/2; ``topaz`` and ``topaz@half``)
HALF = "@half"


def aupr_cells(row: Row, aupr: Mapping[str, Mapping[str, float | None]]) -> tuple[str, str]:
    """``ours / Topaz`` test AUPR of a picking row's model and scoring mode at the match
    distance r and at r/2 (``-`` for rows that are not picking rows)."""
    res = aupr.get(row.aupr_key) if row.aupr_key else None
    if not res:
        return "-", "-"
    key = f"ours_{row.scoring or 'dense'}"
    return tuple(  # type: ignore[return-value]
        f"{_f(res.get(key + suffix))} / {_f(res.get('topaz' + suffix))}" for suffix in ("", HALF)
    )


def aupr_cell(row: Row, aupr: Mapping[str, Mapping[str, float | None]]) -> str:
    """``ours / Topaz`` test AUPR at the match distance (``-`` for rows without one)."""
    return aupr_cells(row, aupr)[0]


def aupr_rows(aupr: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """Rows of the AUPR table: one per model and our scoring mode, r and r/2, Topaz beside."""
    lines = []
    for key, res in aupr.items():
        for k, v in res.items():
            if not k.startswith("ours_") or k.endswith(HALF):
                continue
            lines.append(
                f"| {key} | {k[len('ours_') :]} | {res.get('steps', '?')} | {_f(v)} | "
                f"{_f(res.get('topaz'))} | {_f(res.get(k + HALF))} | {_f(res.get('topaz' + HALF))} |"
            )
    return lines


def render_table(
    rows: Sequence[Row], aupr: Mapping[str, Mapping[str, float | None]] | None = None
) -> str:
    """Markdown table: medians of both tools (wall and CPU clock) and the ratios ours/Topaz;
    picking rows carry the test AUPR of the same model and scoring mode at the match distance r
    and at r/2 (``aupr``); the last column is the median 1-minute load average at the runs'
    starts."""
    aupr = aupr or {}
    lines = [
        "| measurement | unit | runs (ours/Topaz) | ours, wall | Topaz, wall | ratio wall | "
        "ours, CPU | Topaz, CPU | ratio CPU | peak RSS MiB (ours/Topaz) | "
        "test AUPR at r (ours/Topaz) | test AUPR at r/2 (ours/Topaz) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    skipped = []
    for row in rows:
        if not any(r.rc == 0 for r in row.ours) or not any(r.rc == 0 for r in row.topaz):
            skipped.append(row.name)  # no ratio without a finished run of each tool
            continue
        ow, tw = row.rate(row.ours, "wall_s"), row.rate(row.topaz, "wall_s")
        oc, tc = row.rate(row.ours, "cpu_s"), row.rate(row.topaz, "cpu_s")
        rss_o = median([r.maxrss_mib for r in row.ours if r.rc == 0])
        rss_t = median([r.maxrss_mib for r in row.topaz if r.rc == 0])
        ok_o = sum(r.rc == 0 for r in row.ours)
        ok_t = sum(r.rc == 0 for r in row.topaz)
        load = median([r.load1 for r in row.ours + row.topaz])
        at_r, at_half = aupr_cells(row, aupr)
        lines.append(
            f"| {row.name} | {row.unit} | {ok_o}/{ok_t} | {ow:.3g} | {tw:.3g} | "
            f"**{ratio(ow, tw):.2f}** | {oc:.3g} | {tc:.3g} | **{ratio(oc, tc):.2f}** | "
            f"{rss_o:.0f} / {rss_t:.0f} | {at_r} | {at_half} | "
            f"{'n/a' if math.isnan(load) else f'{load:.1f}'} |"
        )
    if skipped:
        lines += ["", "Not timed (no finished run of one of the tools): " + "; ".join(skipped)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- processes
def run_process(
    cmd: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Run:
    """Run ``cmd`` (niced by the caller) in ``cwd`` (default: the repository), its output to
    ``log``; measure wall, CPU and peak RSS, and note the load average at its start."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write("$ " + " ".join(str(c) for c in cmd) + "\n")
        out.flush()
        load1 = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd or ROOT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, cpu, usage.ru_maxrss / 1024, proc.returncode, load1)


def git_commit(root: Path) -> str:
    """Short HEAD commit of ``root``, with ``+ uncommitted changes`` when the package or its
    configs differ from it (what a run from the working tree measured)."""

    def git(*args: str) -> str:
        res = subprocess.run(["git", *args], capture_output=True, text=True, cwd=root)
        return res.stdout.strip() if res.returncode == 0 else ""

    rev = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", "topaz_lightning", "configs")
    return f"{rev} + uncommitted changes" if dirty else rev


def make_snapshot(root: Path, base: Path) -> Path:
    """The committed HEAD's package and configs (``git archive``) in ``base/<commit>``: our
    commands run from it (PYTHONPATH, working directory) so that uncommitted edits in the
    checkout do not enter the measurement. Reused when it exists."""
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
    ).stdout.strip()
    dest = base / rev
    if (dest / "COMMIT").exists():
        return dest
    tmp = base / f".{rev}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "HEAD", "topaz_lightning", "configs"],
        capture_output=True,
        cwd=root,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    (tmp / "COMMIT").write_text(rev + "\n")
    tmp.rename(dest)
    return dest


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
        # our commands: the working tree's package, or a snapshot of the committed HEAD
        self.ours_env, self.ours_cwd = dict(self.env), ROOT
        self.commit, self.commit_note = git_commit(ROOT), " (the working tree)"
        if getattr(args, "snapshot", False):
            self.ours_cwd = make_snapshot(ROOT, self.work / "snapshot")
            self.ours_env["PYTHONPATH"] = str(self.ours_cwd)
            self.commit = (self.ours_cwd / "COMMIT").read_text().strip()
            self.commit_note = " (a git archive snapshot)"
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

    def spawn(self, cmd: Sequence[str], log: Path) -> Run:
        """:func:`run_process` with our environment (and snapshot) for our tools' commands."""
        ours = str(self.bin) in str(cmd[len(self.nice)])
        if ours:
            return run_process(cmd, log, self.ours_env, self.ours_cwd)
        return run_process(cmd, log, self.env)

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
        run = self.spawn(cmd, log)
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
        spec: str,
    ) -> list[str]:
        """tzl-pick with the settings both tools share; ``threshold=None`` keeps every local
        maximum (the full PR curve, like Topaz's ``--threshold=-inf``). No picks.html
        (``browser=false``): Topaz writes only the coordinates."""
        scoring, refine = parse_scoring_spec(spec)
        extra = [f"scoring={scoring}"] + refine_overrides(refine)
        if threshold is None:
            extra += ["threshold=null", "particles_per_micrograph=all"]
        else:
            extra += [f"threshold={threshold}"]
        return self.ours(
            "tzl-pick",
            f"model_path={model_path}",
            f"micrographs={paths}",
            f"output_dir={out}",
            f"nms_radius_px_model={info['nms_radius']}",
            "nms_boundary=suppress",
            "progress=false",
            "overwrite=true",
            "device=cpu",
            f"browser={'true' if self.args.browser else 'false'}",
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

    def evaluate(
        self,
        ds: str,
        info: dict,
        picks: Mapping[str, Path],
        out: Path,
        max_distance: float | None = None,
    ) -> dict[str, float | None]:
        """AUPR of every pick set ``{label: picks file}`` against the test truth, in ONE
        tzl-evaluate (its ``compare``: the same matching for all); ``max_distance`` default the
        match distance r. Returns ``{label: AUPR}``."""
        base = self.work / ds
        distance = info["match_distance"] if max_distance is None else max_distance
        (first, first_path), *others = picks.items()
        compare = ",".join(f"{label}:{path}" for label, path in others)
        cmd = self.ours(
            "tzl-evaluate",
            f"picks={first_path}",
            f"label={first}",
            "picks_format=tsv",  # Topaz's picks.txt is the same tab-separated table
            *([f"compare={{{compare}}}"] if others else []),
            f"truth={base / 'truth_test.txt'}",
            "truth_format=tsv",
            f"micrographs={base / 'test.txt'}",
            f"max_distance={distance:g}",
            f"output_dir={out}",
            "plot=null",
            "overwrite=true",
        )
        self.commands.setdefault(f"evaluate ({ds})", " ".join(cmd[len(self.nice) :]))
        self.run_checked(cmd, out.with_suffix(".log"))
        metrics = json.loads((out / "metrics.json").read_text())
        runs = metrics.get("runs") if isinstance(metrics.get("runs"), Mapping) else {}
        if not runs:  # a single pick set: the metrics are at the top level
            return {first: find_aupr(metrics)}
        return {label: find_aupr(runs.get(label)) for label in picks}

    def evaluate_both(
        self, ds: str, info: dict, picks: Mapping[str, Path], out: Path
    ) -> dict[str, float | None]:
        """AUPR of every pick set at the match distance r (``label``) and at r/2
        (``label + HALF``)."""
        at_r = self.evaluate(ds, info, picks, out)
        half = info["match_distance"] / 2
        at_half = self.evaluate(ds, info, picks, out.with_name(out.name + "_half"), half)
        return {**at_r, **{label + HALF: v for label, v in at_half.items()}}

    def scorings(self, text: str | None = None) -> tuple[str, ...]:
        """Our scoring modes (``text``, default ``--scorings``: ``SCORING[:REFINE]``,
        comma-separated), each with an AUPR run and a picking-speed row; checked against
        tzl-pick's allowed values."""
        from topaz_lightning.picking.scoring import SCORING_METHODS
        from topaz_lightning.picking.strided import REFINE_METHODS

        text = self.args.scorings if text is None else text
        wanted = [s.strip() for s in text.split(",") if s.strip()]
        for spec in wanted:
            try:
                scoring, refine = parse_scoring_spec(spec)
            except ValueError as exc:
                raise SystemExit(f"--scorings: {exc}") from None
            if scoring not in SCORING_METHODS:
                raise SystemExit(
                    f"--scorings: unknown scoring {scoring!r}; tzl-pick has {SCORING_METHODS}"
                )
            if refine is not None and refine not in (*REFINE_METHODS, WINDOW_ALL):
                raise SystemExit(
                    f"--scorings: unknown refine {refine!r}; tzl-pick has {REFINE_METHODS}"
                )
        return tuple(wanted)

    def pick_defaults(self) -> tuple[str, str]:
        """tzl-pick's default ``(scoring, refine)`` (pick.yaml of the package measured)."""
        cfg = _read_yaml(self.ours_cwd / "configs" / "pick.yaml")
        return str(cfg.get("scoring", "dense")), str(cfg.get("refine", ""))

    # ------------------------------------------------------------------ measurements
    def our_pi_unlabeled(self, model_pt: Path) -> float:
        from topaz_lightning.models.io import load_model

        _, extra = load_model(model_pt)  # the model card's view, old and new files alike
        return float(extra["geometry"]["pi_unlabeled"])

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
            row.ours.append(self.spawn(cmd, d / "ours.log"))
            self._print(row.name, "ours", rep, row.ours[-1])
            if pi is None:
                pi = topaz_pi_for(
                    self.our_pi_unlabeled(d / "ours" / "model.pt"),
                    info["num_labels"],
                    info["label_radius"],
                    info["total_train_pixels"],
                )
            tcmd = self.topaz_train(ds, info, topaz_model, steps, pi, d / "topaz")
            row.topaz.append(self.spawn(tcmd, d / "topaz.log"))
            self._print(row.name, "Topaz", rep, row.topaz[-1])
            self.save()
        self.commands[row.name + " (ours)"] = " ".join(cmd[len(self.nice) :])
        self.commands[row.name + " (Topaz)"] = "topaz " + " ".join(
            map(str, tcmd[len(self.nice) + 3 :])
        )
        self.save()

    def aupr_and_pick(
        self, ds: str, info: dict, model: str, steps: int | None = None
    ) -> tuple[Path, Path]:
        """Train both tools for ``steps`` (default --aupr-steps) unless their models exist in the
        work directory, pick the test micrographs with every scoring mode (and Topaz), score
        every pick set with tzl-evaluate at r and r/2. Returns both trained models."""
        steps = self.args.aupr_steps if steps is None else steps
        d = self.work / ds / f"aupr_{model}"
        ours_dir, topaz_dir = d / "ours_train", d / "topaz_train"
        row = Row(
            f"train {model} vs Topaz {model} ({ds}, {steps} steps, the AUPR models)",
            "steps/s",
            steps,
        )
        if not (ours_dir / "model.pt").exists():
            shutil.rmtree(ours_dir, ignore_errors=True)
            cmd = self.ours_train(ds, info, model, steps, ours_dir)
            row.ours.append(self.run_checked(cmd, d / "ours_train.log"))
            self.commands[row.name + " (ours)"] = " ".join(cmd[len(self.nice) :])
        pi = topaz_pi_for(
            self.our_pi_unlabeled(ours_dir / "model.pt"),
            info["num_labels"],
            info["label_radius"],
            info["total_train_pixels"],
        )
        topaz_model = topaz_dir / "model_epoch1.sav"
        if not topaz_model.exists():
            tcmd = self.topaz_train(ds, info, model, steps, pi, topaz_dir)
            row.topaz.append(self.run_checked(tcmd, d / "topaz_train.log"))
            self.commands[row.name + " (Topaz)"] = "topaz " + " ".join(
                map(str, tcmd[len(self.nice) + 3 :])
            )
        if row.ours and row.topaz:  # both trained in this run: a (single-run) timing row
            self.rows.append(row)
            self.save()
        trained = _trained_steps(ours_dir / "model.pt")
        result: dict[str, float | None] = {"steps": trained or steps, "topaz_pi": pi}
        picks: dict[str, Path] = {}
        for spec in self.scorings():
            label = "ours_" + spec.replace(":", "_")
            out = d / label
            self.run_checked(
                self.ours_pick(
                    ds,
                    info,
                    ours_dir / "model.pt",
                    self.work / ds / "test_paths.txt",
                    out,
                    None,
                    spec,
                ),
                d / f"{label}.log",
            )
            picks[label] = out / "picks.tsv"
        test_paths = (self.work / ds / "test_paths.txt").read_text().split()
        self.run_checked(
            self.topaz_pick(info, topaz_model, test_paths, d / "topaz_pick", None),
            d / "topaz_pick.log",
        )
        picks["topaz"] = d / "topaz_pick" / "picks.txt"
        # labels -> result keys: ours_<spec> (the spec with its ':'), topaz; HALF for r/2
        keys = {"ours_" + s.replace(":", "_"): f"ours_{s}" for s in self.scorings()}
        keys["topaz"] = "topaz"
        for label, value in self.evaluate_both(ds, info, picks, d / "eval").items():
            base, half = (label[: -len(HALF)], HALF) if label.endswith(HALF) else (label, "")
            result[keys[base] + half] = value
        self.aupr[f"{ds} {model}"] = result
        print(f"AUPR {ds} {model}: {result}", flush=True)
        self.save()
        return ours_dir / "model.pt", topaz_model

    def pick_set(self, ds: str, info: dict, count: int) -> list[Path]:
        """``count`` micrographs for the picking timing: copies of the preprocessed micrographs
        (train then test, used repeatedly) under distinct names ``m00_<name>.mrc``, so a run is
        long enough to time and every tool reads ``count`` files."""
        names = info["train"] + info["test"]
        folder = self.work / ds / f"pick_set_{count}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for k in range(count):
            name = names[k % len(names)]
            dest = folder / f"m{k:02d}_{name}.mrc"
            if not dest.exists():
                tmp = dest.with_name(dest.name + ".tmp")
                shutil.copyfile(Path(info["pre"]) / f"{name}.mrc", tmp)
                tmp.rename(dest)
            paths.append(dest)
        return paths

    def pick_timing(
        self, ds: str, info: dict, label: str, ours_model: Path, topaz_model: Path
    ) -> None:
        """Time whole tzl-pick processes (one per scoring mode) against whole topaz extract
        processes on the same micrographs, alternating: ours (each mode), Topaz, ours, ..."""
        paths = [str(p) for p in self.pick_set(ds, info, self.args.pick_micrographs)]
        listing = self.work / ds / f"pick_set_{len(paths)}.txt"
        listing.write_text("\n".join(paths) + "\n")
        defaults = self.pick_defaults()
        scorings = list(self.scorings(self.args.pick_scorings or self.args.scorings))
        rows = {
            s: Row(
                f"pick {label} {scoring_label(s, defaults)} ({ds}, {len(paths)} micrographs, "
                f"threshold {self.args.pick_threshold})",
                "micrographs/s",
                len(paths),
                aupr_key=f"{ds} {label}",
                scoring=s,
            )
            for s in scorings
        }
        self.rows.extend(rows.values())
        # per repeat: the cheap modes, Topaz, then dense (the expensive exact reference, run
        # --dense-repeats times), each row saved as soon as it has a run
        dense = [s for s in scorings if parse_scoring_spec(s)[0] == "dense"]
        order = [s for s in scorings if s not in dense] + ["<topaz>"] + dense
        for rep in range(self.args.repeats):
            d = self.work / ds / f"pick_{label}" / f"rep{rep}"
            for s in order:
                if s == "<topaz>":
                    tcmd = self.topaz_pick(
                        info, topaz_model, paths, d / "topaz", self.args.pick_threshold
                    )
                    run = self.spawn(tcmd, d / "topaz.log")
                    for row in rows.values():  # one Topaz run is the reference of every mode
                        row.topaz.append(run)
                    self._print(label, "Topaz", rep, run)
                    self.commands[f"pick {label} (Topaz)"] = "topaz " + " ".join(
                        map(str, tcmd[len(self.nice) + 3 :])
                    )
                elif s in dense and rep >= self.args.dense_repeats:
                    continue
                else:
                    tag = s.replace(":", "_")
                    cmd = self.ours_pick(
                        ds,
                        info,
                        ours_model,
                        listing,
                        d / f"ours_{tag}",
                        self.args.pick_threshold,
                        s,
                    )
                    rows[s].ours.append(self.spawn(cmd, d / f"ours_{tag}.log"))
                    self._print(rows[s].name, "ours", rep, rows[s].ours[-1])
                    self.commands[rows[s].name + " (ours)"] = " ".join(cmd[len(self.nice) :])
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
        for spec in self.scorings():
            tag = spec.replace(":", "_")
            pick = self.ours_pick(
                ds,
                info,
                ours_dir / "model.pt",
                listing,
                d / f"ours_{tag}",
                self.args.pick_threshold,
                spec,
            )
            self.run_checked(
                [*prof, str(d / f"ours_pick_{tag}.prof"), *pick[len(self.nice) :]],
                d / f"ours_pick_{tag}.log",
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
            *(f"ours_pick_{s.replace(':', '_')}" for s in self.scorings()),
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
            "commit": self.commit,
        }
        (self.work / "results.json").write_text(json.dumps(data, indent=1))

    def merge(self, path: Path) -> None:
        """Add the rows, AUPR results and commands of another run's results.json. Rows and AUPR
        of a run at another commit are marked ``[<commit>]`` and keep their own AUPR; this run's
        AUPR wins for its own keys."""
        data = json.loads(Path(path).read_text())
        self.merged = True
        commit = data.get("commit")
        tag = f" [{commit}]" if commit and commit != self.commit else ""
        for r in data["rows"]:
            key = r.get("aupr_key", "")
            self.rows.append(
                Row(
                    r["name"] + tag,
                    r["unit"],
                    r["work"],
                    [Run(**x) for x in r["ours"]],
                    [Run(**x) for x in r["topaz"]],
                    aupr_key=key + tag if key else "",
                    scoring=r.get("scoring", ""),
                )
            )
        for key, value in data["aupr"].items():
            self.aupr.setdefault(key + tag, value)
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
        info["topaz_lightning_commit"] = self.commit + self.commit_note
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
            "### Test AUPR (tzl-evaluate on both tools' picks, same truth; r = match distance)",
            "",
            "| dataset / model | our scoring | training steps (both) | ours at r | Topaz at r | "
            "ours at r/2 | Topaz at r/2 |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += aupr_rows(self.aupr)
        lines += ["", "### Commands", "", "```"]
        # paths relative to the repository, as a user would type them
        lines += [f"# {k}\n{v}".replace(str(ROOT) + "/", "") for k, v in self.commands.items()]
        lines += ["```", ""]
        return "\n".join(lines)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _trained_steps(model_pt: Path) -> int | None:
    """The optimizer steps recorded in our model.pt's card (None when it does not say)."""
    from topaz_lightning.models.io import load_model

    steps = load_model(model_pt)[1].get("global_step")
    return int(steps) if steps is not None else None


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


def writes_report(parts: Sequence[str], merged: Sequence[str]) -> bool:
    """Whether a call has a report to write: something measured or merged (``--only setup``
    alone must not replace the doc's results with an empty table)."""
    return bool(merged) or any(part != "setup" for part in parts)


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


def parse_model_steps(text: str) -> list[tuple[str, int | None]]:
    """``"conv31,resnet8:300"`` -> ``[("conv31", None), ("resnet8", 300)]``."""
    out: list[tuple[str, int | None]] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        model, sep, steps = item.partition(":")
        if not model or (sep and not steps.isdigit()):
            raise SystemExit(f"--aupr-models: expected MODEL or MODEL:STEPS, got {item!r}")
        out.append((model, int(steps) if sep else None))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topaz-venv", default=str(ROOT / ".bench" / "topaz_venv"))
    parser.add_argument("--work", default=str(ROOT / ".bench" / "topaz_work"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--aupr-steps", type=int, default=1000)
    parser.add_argument(
        "--aupr-models",
        default="conv31,resnet8:300",
        help="models the aupr_real part trains (both tools), MODEL[:STEPS] comma-separated "
        "(STEPS default --aupr-steps); their picks give the AUPR of the picking rows, and the "
        "pick_<model> parts time these models",
    )
    parser.add_argument(
        "--scorings",
        default="strided:window,strided:window_all,strided:quadratic,dense",
        help="our scoring modes, SCORING[:REFINE] comma-separated: each gets an AUPR run and "
        "a picking-speed row (REFINE window_all: exact windows on every maximum, refine_exact=all)",
    )
    parser.add_argument(
        "--pick-scorings",
        default=None,
        help="the scoring modes the pick_* parts time (default: --scorings)",
    )
    parser.add_argument(
        "--dense-repeats",
        type=int,
        default=1,
        help="timed runs of the scoring=dense rows (the expensive exact reference), <= --repeats",
    )
    parser.add_argument(
        "--browser",
        action="store_true",
        help="let tzl-pick write picks.html (its default; off here: Topaz writes no such page)",
    )
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="run our tools from a git archive of the committed HEAD (work/snapshot/<commit>) "
        "instead of the working tree, so uncommitted edits do not enter the measurement",
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
        "--pick-micrographs",
        type=int,
        default=16,
        help="micrographs per picking run: the 4 real ones used repeatedly (copies, 16 names)",
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
        default=["aupr_real", "train_conv31", "pick_conv31", "pick_resnet8"],
        help="parts to run, in this order: aupr_real, aupr_sim (the simulated preset, conv31), "
        "train_conv31, train_resnet8, pick_<model>, profile; setup: only the venv and the inputs",
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
            for model, steps in parse_model_steps(args.aupr_models):
                models[model] = bench.aupr_and_pick("real", real, model, steps)
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
    if not args.only and args.merge:  # a report of earlier runs: the first one's commit heads it
        first = json.loads(Path(args.merge[0]).read_text()).get("commit")
        bench.commit = first or bench.commit
        bench.commit_note = " (the first merged run's)"
    for path in args.merge:
        bench.merge(Path(path))
    if not writes_report(args.only, args.merge):
        print(f"set up under {bench.work}; {args.doc} left as it is (nothing measured)")
        return 0
    text = bench.report()
    print(text)
    write_doc(Path(args.doc), text)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
