"""Atomic outputs, run stamping and the entry point's handling of bad input."""

from __future__ import annotations

import os
import stat

import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from topaz_lightning.cli._hydra import _user_error
from topaz_lightning.errors import ConfigError, InputError, OutputExistsError
from topaz_lightning.utils import atomic_output, check_writable
from topaz_lightning.utils.runinfo import save_run_config


def test_atomic_output_writes_and_refuses_overwrite(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_output(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(OutputExistsError, match="out.txt.*overwrite=true"):
        with atomic_output(target) as tmp:
            tmp.write_text("second")
    assert target.read_text() == "first"
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_text("second")
    assert target.read_text() == "second"


def test_failed_write_keeps_existing_output_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("precious")
    with pytest.raises(RuntimeError):
        with atomic_output(target, overwrite=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_output_uses_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "x.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o644


def test_check_writable(tmp_path):
    path = tmp_path / "a"
    assert check_writable(path) == path
    path.write_text("")
    with pytest.raises(OutputExistsError):
        check_writable(path)
    assert check_writable(path, overwrite=True) == path


def test_save_run_config_stamps_provenance(tmp_path):
    cfg = OmegaConf.create({"seed": 3, "a": {"b": "${seed}"}})
    path = save_run_config(cfg, tmp_path)
    text = path.read_text()
    assert "# topaz_lightning_version:" in text and "# command:" in text
    loaded = OmegaConf.load(path)
    assert loaded.a.b == 3  # resolved
    assert (tmp_path / "run_info.yaml").exists()


def test_save_run_config_keeps_earlier_stamps(tmp_path):
    save_run_config(OmegaConf.create({"seed": 1}), tmp_path)
    save_run_config(OmegaConf.create({"seed": 2}), tmp_path)
    save_run_config(OmegaConf.create({"seed": 3}), tmp_path)
    assert OmegaConf.load(tmp_path / "config.yaml").seed == 3
    older = sorted(p for p in tmp_path.glob("config.*.yaml"))
    assert sorted(OmegaConf.load(p).seed for p in older) == [1, 2]
    assert len(list(tmp_path.glob("run_info.*.yaml"))) == 2


def test_user_error_unwraps_hydra_instantiation_errors():
    inner = InputError("no such file", path="/x/mics.mrc")
    try:
        try:
            raise inner
        except InputError as err:
            raise InstantiationException("Error in call to target") from err
    except InstantiationException as wrapped:
        assert _user_error(wrapped) is inner
    assert _user_error(ConfigError("data.pi", "must be in (0, 1)")) is not None
    assert _user_error(RuntimeError("bug")) is None


def test_error_messages_name_file_and_key():
    assert (
        str(InputError("NaN pixels", path="m.mrc", where="line 3")) == "m.mrc: line 3: NaN pixels"
    )
    assert str(ConfigError("data.pi", "too large")) == "config key 'data.pi': too large"
