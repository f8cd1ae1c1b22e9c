"""A 2-process DDP run on CPU (gloo) through tzl-train: ranks train in sync on different patches."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from tests.test_train import make_dataset

REPO = Path(__file__).resolve().parents[1]


class BatchRecorder(pl.Callback):
    """Test helper: each rank writes a hash of every training batch and of its final weights."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.hashes: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        patches, labels = batch
        self.hashes.append(hashlib.sha1(patches.detach().cpu().numpy().tobytes()).hexdigest())

    def on_train_end(self, trainer, pl_module):
        weights = torch.cat([p.detach().flatten() for p in pl_module.net.parameters()])
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "batches": self.hashes,
            "weights": hashlib.sha1(weights.numpy().tobytes()).hexdigest(),
            "global_step": trainer.global_step,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def test_two_process_ddp_cpu_run(tmp_path):
    mics, coords = make_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    record_dir = tmp_path / "record"
    cmd = [
        sys.executable, "-m", "topaz_lightning.cli.train",
        "trainer=ddp_cpu", "logger=none", "data=files",
        f"data.micrographs={mics}", f"data.coordinates={coords}",
        "data.pi=0.05", "data.normalize=standardize", "data.num_val_micrographs=1",
        "data.batch_positive=4", "data.batch_unlabeled=60", "data.device=cpu",
        "data.val_batches=1", "data.steps_per_epoch=100",
        "trainer.max_steps=3", "trainer.enable_model_summary=false",
        # held-out picking at the end only: both ranks pick their share with model.pt's
        # checkpoint ensemble (steps 2 and 3) as well, through the same collectives
        "callbacks.held_out_picking.every_n_steps=3",
        "callbacks.held_out_picking.nms_radius_px_model=6",
        "callbacks.held_out_picking.match_distance_px_model=4",
        "callbacks.best_checkpoint=null",
        "callbacks.progress_bar=null",
        "+callbacks.record._target_=tests.test_ddp.BatchRecorder",
        f"+callbacks.record.out_dir={record_dir}",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads((record_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in records] == [2, 2]
    assert [r["global_step"] for r in records] == [3, 3]
    # the ranks drew different patches at every step ...
    assert len(records[0]["batches"]) == 3
    assert all(a != b for a, b in zip(records[0]["batches"], records[1]["batches"], strict=True))
    # ... and DDP kept their weights identical (gradients all-reduced)
    assert records[0]["weights"] == records[1]["weights"]
    assert (run_dir / "model.pt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    from topaz_lightning.models import HomogeneousEnsembleNet, load_model

    net, extra = load_model(run_dir / "model.pt")
    assert isinstance(net, HomogeneousEnsembleNet)
    assert extra["card"]["training"]["ensemble_steps"] == [2, 3]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["val_model/aupr"] <= 1.0 and 0.0 <= metrics["val/aupr"] <= 1.0
