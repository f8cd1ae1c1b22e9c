"""tzl-pick as real processes: 2-process DDP shards (gloo, CPU), kill -9 then continue, exit status 3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


class ShardRecorder(pl.Callback):
    """Test helper: each rank writes the micrographs its predict steps saw."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.names: list[str] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.names += [item.name for item in batch]

    def on_predict_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "world": trainer.world_size, "names": self.names}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _dataset(root: Path, count: int, shape: tuple[int, int], widths=(2, 3, 4)) -> Path:
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.io.micrographs import write_micrograph
    from topaz_lightning.models import Conv31, save_model

    rng = np.random.default_rng(0)
    for k in range(count):
        image = rng.gamma(4.0, 1.0, size=shape).astype(np.float32)
        write_micrograph(root / "mics" / f"mic{k:03d}.mrc", image)
    torch.manual_seed(0)
    geometry = RunGeometry(downsample=2.0, nms_radius_px_model=4.0, normalize="gmm")
    extra = {"preprocess": {"downsample": 2.0, "normalize": "gmm"}, "geometry": geometry.to_dict()}
    save_model(root / "model.pt", Conv31(widths=widths), extra=extra)
    return root


def _command(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "topaz_lightning.cli.pick",
        f"model_path={root / 'model.pt'}", f"micrographs={root / 'mics'}",
        f"output_dir={out}", "progress=false", "device=cpu", "threshold=-3", *extra,
    ]  # fmt: skip


def _live_group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are still running (zombies waiting to be reaped excluded)."""
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(entry))
    return live


def _run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_two_process_ddp_shards_equal_the_single_process_picks(tmp_path):
    root = _dataset(tmp_path, count=5, shape=(96, 88))
    single = _run(_command(root, tmp_path / "single"))
    assert single.returncode == 0, single.stderr[-3000:]
    record = tmp_path / "record"
    ddp = _run(
        _command(
            root, tmp_path / "ddp", "trainer=ddp_cpu",
            "+callbacks.record._target_=tests.test_pick_processes.ShardRecorder",
            f"+callbacks.record.out_dir={record}",
        )
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    shards = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["world"] for s in shards] == [2, 2]
    names = shards[0]["names"] + shards[1]["names"]
    # every micrograph exactly once, both ranks did some
    assert sorted(names) == [f"mic{k:03d}" for k in range(5)]
    assert all(s["names"] for s in shards)
    a = pd.read_csv(tmp_path / "single" / "picks.tsv", sep="\t")
    b = pd.read_csv(tmp_path / "ddp" / "picks.tsv", sep="\t")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) > 0


def test_kill_then_rerun_continues_to_the_uninterrupted_outputs(tmp_path):
    # big enough that scoring one micrograph takes a noticeable time
    root = _dataset(tmp_path, count=12, shape=(384, 384), widths=(16, 16, 16))
    full = _run(_command(root, tmp_path / "full", "save_score_maps=true"), timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]

    out = tmp_path / "killed"
    cmd = _command(root, out, "save_score_maps=true")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    parts = out / "picks_by_micrograph"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(parts.glob("*.tsv"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the command only: its DataLoader worker must follow
    proc.wait(timeout=60)
    try:  # the worker watches its parent and exits within a few seconds (no orphan)
        deadline = time.monotonic() + 30
        while _live_group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _live_group_members(proc.pid), "a worker of the killed tzl-pick lives on"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done = len(list(parts.glob("*.tsv")))
    assert 3 <= done < 12, f"kill came too late or too early: {done} micrographs done"
    assert not (out / "picks.tsv").exists()

    rerun = _run(cmd, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (tmp_path / "full" / "picks.tsv").read_bytes() == (out / "picks.tsv").read_bytes()
    from topaz_lightning.io.micrographs import read_micrograph

    for k in range(12):  # (MRC headers carry their writing time: compare the maps)
        a = read_micrograph(tmp_path / "full" / "score_maps" / f"mic{k:03d}.mrc")
        b = read_micrograph(out / "score_maps" / f"mic{k:03d}.mrc")
        np.testing.assert_array_equal(a, b)
    # no temporary file is left behind by the killed run
    assert not list(out.rglob("*.tmp*"))


def test_corrupt_micrograph_exit_status_3(tmp_path):
    root = _dataset(tmp_path, count=3, shape=(64, 64))
    (root / "mics" / "broken.mrc").write_bytes(b"\x00" * 100)
    proc = _run(_command(root, tmp_path / "out"))
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "broken" in proc.stderr
    table = pd.read_csv(tmp_path / "out" / "failures.tsv", sep="\t")
    assert table["name"].tolist() == ["broken"]
    picks = pd.read_csv(tmp_path / "out" / "picks.tsv", sep="\t")
    assert sorted(picks["image_name"].unique()) == ["mic000", "mic001", "mic002"]
