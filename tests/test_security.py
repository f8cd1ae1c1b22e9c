"""Untrusted input cannot escape the output directory or run code: path traversal, model files, permissions."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from topaz_lightning.errors import InputError, OutputExistsError
from topaz_lightning.io.coordinates import read_coordinates, write_coordinates
from topaz_lightning.models import Conv31, load_model, save_model
from topaz_lightning.models.io import FORMAT, VERSION, model_classes
from topaz_lightning.utils.atomic import (
    atomic_output,
    check_output_dir,
    check_writable,
    safe_output_name,
)

BIN = Path(sys.executable).parent


def _tzl(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [str(BIN / command), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


# ------------------------------------------------------------------------------ path traversal

EVIL_NAMES = ["../../ESCAPED", "/tmp/abs_escape", "sub/dir", "..", ".", "a\\b", ""]


@pytest.mark.parametrize("name", EVIL_NAMES)
def test_safe_output_name_refuses(name):
    with pytest.raises(InputError, match="output file name"):
        safe_output_name(name, source="picks.tsv", where="line 2")


@pytest.mark.parametrize("name", ["mic_001", "data_0001", "a.b", "...x", "-rf"])
def test_safe_output_name_accepts_plain_names(name):
    assert safe_output_name(name) == name


def test_safe_output_name_refuses_nul():
    with pytest.raises(InputError, match="NUL"):
        safe_output_name("a\x00b")


def test_issue_reproduction_evil_tsv_through_tzl_convert(tmp_path):
    """The issue's evil.tsv: tzl-convert exits 2 naming the line; nothing is written anywhere."""
    work = tmp_path / "work"
    work.mkdir()
    evil = work / "evil.tsv"
    evil.write_text("image_name\tx_coord\ty_coord\n../../ESCAPED\t10\t20\nok\t1\t2\n")
    for extra in (["overwrite=true"],):  # the stronger case: even when replacing is allowed
        result = _tzl(
            "tzl-convert",
            f"input={evil}",
            "output=boxes/",
            "output_format=box",
            "box_size=10",
            *extra,
            cwd=work,
        )
        assert result.returncode == 2, result.stderr
        assert "line 2" in result.stderr and "ESCAPED" in result.stderr
    assert not list(tmp_path.rglob("ESCAPED*"))
    assert not (work / "boxes").exists()


def test_absolute_name_in_star_is_reduced_to_its_file_name(tmp_path):
    # RELION references are paths by design; only their file name is a micrograph name
    star = tmp_path / "p.star"
    star.write_text(
        "data_\nloop_\n_rlnMicrographName\n_rlnCoordinateX\n_rlnCoordinateY\n"
        "/etc/passwd.mrc 10 20\n"
    )
    df = read_coordinates(star)
    assert df["micrograph"].tolist() == ["passwd"]
    out = write_coordinates(df, tmp_path / "boxes", fmt="box", per_micrograph=True, box_size=4)
    assert sorted(p.name for p in out.iterdir()) == ["passwd.box"]


@pytest.mark.parametrize("name", ["../up", "/abs/x", "a/b", ".."])
def test_per_micrograph_writer_refuses_names_from_a_table(tmp_path, name):
    """A table built in code (not read) is checked by the writer too, before anything is written."""
    df = pd.DataFrame({"micrograph": ["ok", name], "x": [1.0, 2.0], "y": [1.0, 2.0]})
    for fmt in ("box", "tsv", "star", "csv", "cryoppp"):
        with pytest.raises(InputError, match="row 2"):
            write_coordinates(df, tmp_path / "out", fmt=fmt, per_micrograph=True, box_size=4)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_evaluate_overlay_names_are_checked():
    from topaz_lightning.cli.evaluate import _overlay_file

    assert _overlay_file(Path("out"), "overlay_", "mic1", ".png") == Path("out/overlay_mic1.png")
    with pytest.raises(InputError):
        _overlay_file(Path("out"), "overlay_", "../../x", ".png")


# ------------------------------------------------------------------------------ model files


def _payload(config: dict, state: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_config": config,
        "state_dict": state if state is not None else {},
        "extra": {},
    }


def test_allow_list_comes_from_the_models_package():
    classes = model_classes()
    assert classes["topaz_lightning.models.Conv31"] is Conv31
    assert all(c.__module__.startswith("topaz_lightning.models.") for c in classes.values())
    assert not any(k.startswith(("builtins", "os", "subprocess")) for k in classes)


def test_saved_model_round_trips(tmp_path):
    net = Conv31(widths=(4, 4, 8))
    path = save_model(tmp_path / "model.pt", net, extra={"radius_px": 3})
    loaded, extra = load_model(path)
    assert type(loaded) is Conv31 and extra == {"radius_px": 3}
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize(
    "config",
    [
        {"_target_": "builtins.print", "args": "PWNED"},
        {"_target_": "os.system", "command": "touch PWNED"},
        {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1},
        {"_target_": "topaz_lightning.models.io.save_model"},
        {"_target_": "topaz_lightning.models.Conv31", "widths": {"_target_": "builtins.print"}},
        {"_target_": "topaz_lightning.models.Conv31", "_args_": ["x"]},
        {"_target_": "topaz_lightning.models.Conv31", "widths": [10**9, 4, 4]},
        {"_target_": "topaz_lightning.models.Conv31", "no_such_argument": 1},
        {"widths": [4, 4, 8]},
        # package classes that are not classifiers
        {"_target_": "topaz_lightning.models.Decoder", "num_features": 8, "patch_size": 31},
        {"_target_": "topaz_lightning.models.io.FORMAT"},
    ],
)
def test_malicious_model_config_is_refused_and_runs_nothing(tmp_path, capsys, monkeypatch, config):
    path = tmp_path / "model.pt"
    torch.save(_payload(config), path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="model_config"):
        load_model(path)
    assert "PWNED" not in capsys.readouterr().out
    assert not (tmp_path / "PWNED").exists()


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {_RunsCode.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    _RunsCode.marker = str(marker)
    path = tmp_path / "model.pt"
    with open(path, "wb") as fh:
        pickle.dump(
            _payload({"_target_": "topaz_lightning.models.Conv31"}) | {"x": _RunsCode()}, fh
        )
    with pytest.raises(InputError, match="not a readable model file"):
        load_model(path)
    assert not marker.exists()
    # the same through torch.save's zip container
    torch.save({"format": FORMAT, "evil": _RunsCode()}, path)
    with pytest.raises(InputError, match="not a readable model file"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.slow  # a tzl-pick subprocess; load_model itself is tested above
def test_malicious_model_through_tzl_pick(tmp_path):
    """The real command exits 2 and builtins.print never runs."""
    from topaz_lightning.io.micrographs import write_micrograph

    path = tmp_path / "model.pt"
    torch.save(_payload({"_target_": "builtins.print", "_args_": ["PWNED"]}), path)
    mics = tmp_path / "mics"
    write_micrograph(mics / "m.mrc", np.zeros((32, 32), np.float32))
    result = _tzl(
        "tzl-pick",
        f"model_path={path}",
        f"micrographs={mics}",
        "nms_radius_px_model=3",
        f"output_dir={tmp_path / 'picks'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "builtins.print" in result.stderr
    assert "PWNED" not in result.stdout


@pytest.mark.parametrize(
    "config, problem",
    [
        ({"_target_": "topaz_lightning.models.Conv31", "widths": [10**6] * 3}, "out of range"),
        ({"_target_": "topaz_lightning.models.Conv31", "widths": [4096] * 3}, "weights"),
        ({"_target_": "topaz_lightning.models.ResNet8", "units": 10**6}, "out of range"),
        ({"_target_": "topaz_lightning.models.ResNet16", "units": 4000}, "weights"),
        ({"_target_": "topaz_lightning.models.PReLUResNet8", "width": 2000}, "weights"),
        ({"_target_": "topaz_lightning.models.ResNet", "blocks": [[8, 1]] * 10**6}, "too long"),
        (
            {"_target_": "topaz_lightning.models.ResNet", "blocks": [[8, 1]], "stem_kernel": 10**7},
            "range",
        ),
    ],
)
def test_absurd_architecture_arguments_are_refused_before_any_allocation(tmp_path, config, problem):
    """Issue 18: widths of 10**6 would ask for ~100 TB; every kwarg is bounded in one place."""
    path = tmp_path / "model.pt"
    torch.save(_payload(config), path)
    with pytest.raises(InputError, match=problem) as err:
        load_model(path)
    assert "model.pt" in str(err.value) and "model_config" in str(err.value)


def test_default_architectures_are_within_the_bounds():
    from topaz_lightning.models import MODELS
    from topaz_lightning.models.io import _MAX_PARAMETERS, build_model

    for cls in MODELS.values():
        net = build_model({"_target_": f"{cls.__module__}.{cls.__qualname__}"})
        assert sum(p.numel() for p in net.parameters()) < _MAX_PARAMETERS / 10


# ------------------------------------------------------------------------------ checkpoints


def _checkpoint(**changes) -> dict:
    return {
        "epoch": 0,
        "global_step": 2,
        "state_dict": {"net.w": torch.zeros(2)},
        "hyper_parameters": {},
        "callbacks": {},
    } | changes


def test_pickled_checkpoint_is_refused_without_running_code(tmp_path):
    from topaz_lightning.train import check_checkpoint

    marker = tmp_path / "PWNED"
    _RunsCode.marker = str(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(_checkpoint(evil=_RunsCode()), path)
    with pytest.raises(InputError, match="not a readable checkpoint"):
        check_checkpoint(path, tmp_path / "checkpoints")
    assert not marker.exists()


@pytest.mark.parametrize(
    "key, value",
    [
        ("best_model_path", "/etc/passwd"),
        ("best_model_path", "../elsewhere/x.ckpt"),
        ("kth_best_model_path", "/tmp/victim.ckpt"),
        ("last_model_path", "victim.txt"),
        ("best_k_models", {"/home/user/thesis.ckpt": 1.0}),
    ],
)
def test_checkpoint_paths_outside_the_run_are_refused(tmp_path, key, value):
    """Lightning restores ModelCheckpoint's paths when the state's dirpath is the run's, and later
    deletes old top-k/last files by them."""
    from topaz_lightning.train import check_checkpoint

    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    path = run / "last.ckpt"
    if isinstance(value, str) and not value.startswith("/"):
        value = str(run / value)
    state = {"best_model_path": str(run / "best.ckpt"), "dirpath": str(run), key: value}
    name = "ModelCheckpoint{'monitor': 'val/aupr'}"
    torch.save(_checkpoint(callbacks={name: state}), path)
    with pytest.raises(InputError, match=key):
        check_checkpoint(path, run)
    # the same state written for another directory is not restored by Lightning: accepted
    state["dirpath"] = str(tmp_path / "other")
    torch.save(_checkpoint(callbacks={name: state}), path)
    assert check_checkpoint(path, run) == path.resolve()


def test_checkpoint_with_hostile_hyperparameters_passes_the_check_but_builds_nothing(tmp_path):
    """Hyperparameters and the stored run config are never instantiated: the run is built from
    the command's config (a full resume with them: tests/test_train.py)."""
    from topaz_lightning.train import check_checkpoint

    run = tmp_path / "checkpoints"
    run.mkdir()
    hostile = {"run_config": {"model": {"_target_": "os.system", "command": "touch PWNED"}}}
    path = run / "last.ckpt"
    torch.save(_checkpoint(hyper_parameters=hostile), path)
    assert check_checkpoint(path, run) == path.resolve()
    torch.save(_checkpoint(state_dict={"net.w": "rm -rf"}), path)
    with pytest.raises(InputError, match="state_dict"):
        check_checkpoint(path, run)
    torch.save(_checkpoint(global_step=-1), path)
    with pytest.raises(InputError, match="global_step"):
        check_checkpoint(path, run)


@pytest.mark.slow  # a tzl-train subprocess
def test_evil_checkpoint_through_tzl_train_is_one_line_and_exit_2(tmp_path):
    marker = tmp_path / "PWNED"
    _RunsCode.marker = str(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(_checkpoint(evil=_RunsCode()), evil)
    result = _tzl(
        "tzl-train",
        f"ckpt_path={evil}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "evil.ckpt" in line]
    assert len(errors) == 1 and "not a readable checkpoint" in errors[0]
    assert not marker.exists()


# ------------------------------------------------------------------------------ permissions


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        assert _mode(tmp_path / "f.txt") == 0o644
        df = pd.DataFrame({"micrograph": ["a", "b"], "x": [1.0, 2.0], "y": [1.0, 2.0]})
        out = write_coordinates(df, tmp_path / "per", fmt="tsv", per_micrograph=True)
        assert _mode(out) == 0o755  # was 0700 from tempfile.mkdtemp
        assert all(_mode(p) == 0o644 for p in out.iterdir())
        os.umask(0o027)
        out = write_coordinates(df, tmp_path / "per2", fmt="tsv", per_micrograph=True)
        assert _mode(out) == 0o750
    finally:
        os.umask(old)


def test_read_only_output_file_is_not_replaced_even_with_overwrite(tmp_path):
    target = tmp_path / "picks.tsv"
    target.write_text("keep")
    target.chmod(0o444)
    with pytest.raises(InputError, match="read-only"):
        check_writable(target, overwrite=True)
    with pytest.raises(InputError, match="read-only"):
        with atomic_output(target, overwrite=True) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "keep"


def test_output_directory_rules(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.box").write_text("1 2 3 4\n")
    with pytest.raises(OutputExistsError):
        check_output_dir(full)
    assert check_output_dir(full, overwrite=True) == full
    full.chmod(0o555)
    try:
        with pytest.raises(InputError, match="read-only"):
            check_output_dir(full, overwrite=True)
        df = pd.DataFrame({"micrograph": ["a"], "x": [1.0], "y": [1.0]})
        with pytest.raises(InputError, match="read-only"):
            write_coordinates(df, full, fmt="box", per_micrograph=True, box_size=4, overwrite=True)
    finally:
        full.chmod(0o755)
    assert sorted(p.name for p in full.iterdir()) == ["old.box"]
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(InputError, match="directory"):
        check_output_dir(afile, overwrite=True)


def test_simulated_dataset_directory_gets_umask_permissions(tmp_path):
    from topaz_lightning.simulate.dataset import simulate_dataset

    old = os.umask(0o022)
    try:
        out = simulate_dataset(tmp_path / "tiny", preset="tiny", seed=0, num_micrographs=2)
    finally:
        os.umask(old)
    assert _mode(out) == 0o755
    assert _mode(out / "micrographs") == 0o755
