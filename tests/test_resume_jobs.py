"""Interrupted and partly failed jobs: continue after kill -9, skip and report bad files, no orphans, one last.ckpt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from tests.conftest import compose_config
from topaz_lightning.cli.preprocess import run
from topaz_lightning.errors import ConfigError, InputError, OutputExistsError, PartialFailureError
from topaz_lightning.io.micrographs import write_micrograph

STAMPS = {"config.yaml", "run_info.yaml", ".hydra", "preprocess.log"}


def _micrographs(folder: Path, n: int, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for k in range(n):
        image = rng.normal(0, 1, (size, size)) + 4 * (rng.random((size, size)) < 0.2)
        write_micrograph(folder / f"mic{k:03d}.mrc", (3 * image + 7).astype(np.float32), 1.25)
    return folder


def _corrupt(path: Path) -> None:
    """Cut an MRC file in half: mrcfile sees fewer data bytes than the header promises."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _overrides(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"input={folder}",
        f"output_dir={out}",
        "downsample=1.5",
        "sample_size=4000",
        "progress=false",
        *extra,
    ]


def _snapshot(out: Path) -> dict[str, object]:
    """Every output of a preprocess run: MRC pixels + voxel size, other files byte for byte.

    The MRC header's "Created by mrcfile.py <time>" label and the run stamps differ between runs.
    """
    files: dict[str, object] = {}
    for path in sorted(out.iterdir()):
        if path.name in STAMPS or path.name.startswith(("config.", "run_info.")):
            continue
        if path.suffix == ".mrc":
            with mrcfile.open(path) as mrc:
                files[path.name] = (mrc.data.tobytes(), float(mrc.voxel_size.x), mrc.data.shape)
        else:
            files[path.name] = path.read_bytes()
    return files


def _assert_same_outputs(a: Path, b: Path) -> None:
    first, second = _snapshot(a), _snapshot(b)
    assert sorted(first) == sorted(second)
    for name in first:
        assert first[name] == second[name], name


# ------------------------------------------------------------------ continue, in process


@pytest.mark.parametrize("normalize", ["gmm", "standardize"])
def test_interrupted_preprocess_continues_to_the_same_outputs(tmp_path, monkeypatch, normalize):
    import topaz_lightning.preprocess.files as files

    folder = _micrographs(tmp_path / "in", 6)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(
        compose_config(
            "preprocess", _overrides(folder, straight, f"normalize={normalize}", "num_workers=1")
        )
    )

    real_write = files._write_job
    calls = []

    def interrupted_write(job):
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the job were stopped after 3 micrographs
        calls.append(job)
        return real_write(job)

    monkeypatch.setattr(files, "_write_job", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        run(
            compose_config(
                "preprocess", _overrides(folder, resumed, f"normalize={normalize}", "num_workers=2")
            )
        )
    assert len(list(resumed.glob("*.mrc"))) == 3
    monkeypatch.setattr(files, "_write_job", real_write)

    written = []
    monkeypatch.setattr(files, "_write_job", lambda job: written.append(job[2]) or real_write(job))
    summary = run(
        compose_config(
            "preprocess", _overrides(folder, resumed, f"normalize={normalize}", "num_workers=2")
        )
    )
    assert sorted(written) == ["mic003", "mic004", "mic005"]  # only the rest was done
    assert len(summary["micrographs"]) == 6
    _assert_same_outputs(straight, resumed)


def test_changed_settings_are_refused_and_overwrite_removes_the_earlier_jobs_outputs(tmp_path):
    folder = _micrographs(tmp_path / "in", 4)
    out = tmp_path / "out"
    run(compose_config("preprocess", _overrides(folder, out, "num_workers=1")))
    with pytest.raises(InputError, match=r"changed: downsample 1.5 -> 2.0"):
        run(compose_config("preprocess", _overrides(folder, out, "num_workers=1", "downsample=2")))
    # continuing may rewrite the job's own files, never one it did not write
    coords = tmp_path / "coords.tsv"
    coords.write_text("image_name\tx_coord\ty_coord\nmic000\t3\t4\n")
    (tmp_path / "user.tsv").write_text("keep me")
    with pytest.raises(OutputExistsError, match="user.tsv"):
        run(
            compose_config(
                "preprocess",
                _overrides(folder, out, "num_workers=1")
                + [f"coordinates={coords}", f"coordinates_output={tmp_path / 'user.tsv'}"],
            )
        )
    assert (tmp_path / "user.tsv").read_text() == "keep me"
    # gmm is fit over all micrographs: another input set cannot continue the job
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    (fewer / "mic000.mrc").write_bytes((folder / "mic000.mrc").read_bytes())
    with pytest.raises(ConfigError, match="3 missing"):
        run(compose_config("preprocess", _overrides(fewer, out, "num_workers=1")))
    # overwrite: the three micrographs that are no longer inputs do not survive to be read back
    run(compose_config("preprocess", _overrides(fewer, out, "num_workers=1", "overwrite=true")))
    assert sorted(p.name for p in out.glob("*.mrc")) == ["mic000.mrc"]
    # an output directory that holds the inputs: refused before anything is removed
    inplace = _micrographs(tmp_path / "inplace", 2)
    before = sorted((p.name, p.read_bytes()) for p in inplace.iterdir())
    with pytest.raises(ConfigError, match="would replace an input"):
        run(
            compose_config(
                "preprocess", _overrides(inplace, inplace, "num_workers=1", "overwrite=true")
            )
        )
    assert sorted((p.name, p.read_bytes()) for p in inplace.iterdir()) == before
    # outputs with no job record (not ours to judge) are refused, as before
    other = tmp_path / "other"
    other.mkdir()
    (other / "mic000.mrc").write_bytes(b"someone else's file")
    with pytest.raises(OutputExistsError, match="mic000.mrc"):
        run(compose_config("preprocess", _overrides(fewer, other, "num_workers=1")))


def test_gmm_continue_reports_a_micrograph_missing_from_the_stored_fit(tmp_path):
    folder = _micrographs(tmp_path / "in", 3)
    good = (folder / "mic001.mrc").read_bytes()
    _corrupt(folder / "mic001.mrc")
    out = tmp_path / "out"
    with pytest.raises(PartialFailureError, match="mic001"):
        run(compose_config("preprocess", _overrides(folder, out, "num_workers=1")))
    # the file is repaired, but the stored fit (used by the finished micrographs) lacks it
    (folder / "mic001.mrc").write_bytes(good)
    with pytest.raises(PartialFailureError, match="not part of the GMM fit"):
        run(compose_config("preprocess", _overrides(folder, out, "num_workers=1")))
    run(compose_config("preprocess", _overrides(folder, out, "num_workers=1", "overwrite=true")))
    assert not (out / "failures.tsv").exists()
    assert len(list(out.glob("*.mrc"))) == 3


# ------------------------------------------------------------------ real subprocesses


def _command(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "topaz_lightning.cli.preprocess",
        *_overrides(folder, out, *extra),
    ]


def test_corrupt_micrograph_gives_every_good_output_failures_tsv_and_exit_3(tmp_path):
    folder = _micrographs(tmp_path / "in", 4)
    _corrupt(folder / "mic002.mrc")
    (folder / "mic004.png").write_bytes(b"not a picture")
    out = tmp_path / "out"
    done = subprocess.run(
        _command(folder, out, "num_workers=2"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 3, done.stderr
    assert sorted(p.name for p in out.glob("*.mrc")) == ["mic000.mrc", "mic001.mrc", "mic003.mrc"]
    rows = [line.split("\t") for line in (out / "failures.tsv").read_text().splitlines()]
    assert rows[0] == ["name", "reason"]
    assert [r[0] for r in rows[1:]] == ["mic002", "mic004"]
    assert "mic002.mrc" in rows[1][1] and "mic004.png" in rows[2][1]
    assert "2 input(s) failed" in done.stderr and "failures.tsv" in done.stderr
    # strict: the first bad file is fatal (exit 2)
    strict = subprocess.run(
        _command(folder, tmp_path / "strict", "num_workers=1", "strict=true"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert strict.returncode == 2 and "mic002.mrc" in strict.stderr
    assert not (tmp_path / "strict" / "mic003.mrc").exists()


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker`` (any descendant inherits it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_kill_9_mid_directory_then_rerun_gives_the_uninterrupted_outputs_and_no_orphans(tmp_path):
    folder = _micrographs(tmp_path / "in", 40, size=512)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    first = subprocess.run(
        _command(folder, straight, "num_workers=2"), capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0, first.stderr

    marker = f"TZL_TEST_{uuid.uuid4().hex}"
    env = {**os.environ, marker: "1"}
    proc = subprocess.Popen(
        _command(folder, killed, "num_workers=2"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while len(list(killed.glob("mic*.mrc"))) < 3:
        assert proc.poll() is None, "finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    partial = sorted(killed.iterdir())
    assert len(list(killed.glob("mic*.mrc"))) < 40, "the kill came too late to test anything"
    # nothing of the killed run lives on, and nothing is written after it died
    time.sleep(1.0)
    assert _processes_with(marker) == []
    assert sorted(killed.iterdir()) == partial

    rerun = subprocess.run(
        _command(folder, killed, "num_workers=2"), capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "done by an earlier run" in rerun.stdout
    _assert_same_outputs(straight, killed)  # no stray temporaries either


# ------------------------------------------------------------------ training checkpoints


def _small_training(tmp_path: Path):
    """``cfg(steps, *overrides)`` composing a small training run into ``run_dir``, and run_dir."""
    from tests.test_train import compose_train, make_dataset, small_overrides

    mics, coords = make_dataset(tmp_path / "data", n=3, size=96, particles=8)
    extra = [
        "logger=none",
        "callbacks.best_checkpoint=null",
        "callbacks.held_out_picking=null",
        "data.steps_per_epoch=100",
    ]
    run_dir = tmp_path / "run"

    def cfg(steps: int, *more: str):
        return compose_train(small_overrides(mics, coords, steps, [*extra, *more]), run_dir)

    return cfg, run_dir


def test_train_rerun_continues_from_its_last_checkpoint_never_two_last(tmp_path, caplog):
    from topaz_lightning.train import train

    cfg, run_dir = _small_training(tmp_path)
    train(cfg(2))
    # as if killed after the step-2 checkpoint: no model.pt / model_last.pt / metrics.json yet
    for name in ("model.pt", "model_last.pt", "metrics.json"):
        (run_dir / name).unlink()
    with caplog.at_level("INFO", logger="topaz_lightning"):
        metrics = train(cfg(3))  # the same command (training longer is allowed)
    assert "continuing the interrupted run" in caplog.text
    assert metrics["global_step"] == 3
    # Lightning would have saved last-v1.ckpt beside the stale last.ckpt of a fresh start
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]


def test_train_rerun_refuses_other_settings_and_overwrite_removes_old_checkpoints(tmp_path, caplog):
    from topaz_lightning.train import train

    cfg, run_dir = _small_training(tmp_path)
    train(cfg(3))
    # finished: refused; interrupted with other settings: refused, naming the key
    with pytest.raises(OutputExistsError, match="model.pt"):
        train(cfg(3))
    for name in ("model.pt", "model_last.pt", "metrics.json"):
        (run_dir / name).unlink()
    with pytest.raises(ConfigError, match="module.optimizer.lr"):
        train(cfg(3, "module.optimizer.lr=0.01"))
    # overwrite: the stale checkpoint goes, a fresh run writes its own last.ckpt
    caplog.clear()
    with caplog.at_level("INFO", logger="topaz_lightning"):
        metrics = train(cfg(2, "overwrite=true"))
    assert "removed 1 checkpoint" in caplog.text
    assert metrics["global_step"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
