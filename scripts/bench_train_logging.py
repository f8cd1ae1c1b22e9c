"""Cost of logging in a Lightning training step: PULitModule now vs at an earlier git revision.

Example usage:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_train_logging.py --ref d99131f~1

A tiny classifier (conv31 with widths 2, 2, 2, minibatch 2 + 14) keeps the step's compute near a
millisecond so the framework's share shows; both modules run the same seeded steps, alternating
(ref, now, ref, now, ...), with ``trainer.log_every_n_steps=50`` and one thread. Reports the median
process-CPU ms per step (from one ``on_train_batch_end`` to the next, after 10 warm-up steps) and
the final ``train/loss`` of each run, which must be identical.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]


def _module_at(ref: str):
    """topaz_lightning/module.py as it was at git revision ``ref``, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{ref}:topaz_lightning/module.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "module_at_ref.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("module_at_ref", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Clock(pl.Callback):
    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_batch_end(self, *_: object) -> None:
        self.marks.append(time.process_time())


def run(module_cls, steps: int) -> tuple[float, float]:
    """(median CPU ms per step, final train/loss) of ``steps`` Lightning steps."""
    from topaz_lightning.data.sampler import PUBatchDataset, PUPatchSampler
    from topaz_lightning.models import Conv31
    from topaz_lightning.objectives import GEBinomial

    rng = np.random.default_rng(0)
    images = [rng.normal(size=(256, 256)).astype(np.float32) for _ in range(2)]
    coords = [rng.uniform(20, 236, size=(30, 2)) for _ in range(2)]
    torch.manual_seed(0)
    sampler = PUPatchSampler.from_coordinates(
        images, coords, radius_px_model=3, patch_size=31, n_positive=2, n_unlabeled=14
    )
    module = module_cls(Conv31(widths=(2, 2, 2)), GEBinomial(), None, pi_unlabeled=0.02)
    clock = _Clock()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
        num_sanity_val_steps=0,
        log_every_n_steps=50,
    )
    loader = DataLoader(PUBatchDataset(sampler, steps), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    diffs = [(b - a) * 1e3 for a, b in zip(clock.marks, clock.marks[1:], strict=False)][10:]
    return statistics.median(diffs), float(trainer.callback_metrics["train/loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="git revision of the module to compare with")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from topaz_lightning import module as now

    variants = {f"at {args.ref}": _module_at(args.ref).PULitModule, "now": now.PULitModule}
    times: dict[str, list[float]] = {k: [] for k in variants}
    losses: dict[str, set[float]] = {k: set() for k in variants}
    for _ in range(args.repeats):
        for name, cls in variants.items():
            ms, loss = run(cls, args.steps)
            times[name].append(ms)
            losses[name].add(loss)
            print(f"{name}: {ms:.2f} ms/step, final train/loss {loss!r}", flush=True)
    for name in variants:
        print(f"{name}: median {statistics.median(times[name]):.2f} ms/step over {args.repeats}")
    same = len(set().union(*losses.values())) == 1
    print("final train/loss identical:", same)


if __name__ == "__main__":
    main()
