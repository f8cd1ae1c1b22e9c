"""The likeliest command-line mistakes end in exit status 2 and one line naming the key meant."""

from __future__ import annotations

import subprocess
import sys

import pytest

from topaz_lightning.cli import convert, evaluate, pick, preprocess, train


def _run(main, argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tzl", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    return exit_info.value.code, err


@pytest.mark.parametrize(
    ("main", "argv", "expected"),
    [
        (pick.main, ["thresold=0"], "did you mean threshold=?"),
        (pick.main, ["model=outputs/model.pt"], "did you mean model_path=?"),
        (train.main, ["data.micrographs=mics/"], "data.micrographs needs data=files"),
        (train.main, ["data=files", "data.micrographz=mics/"], "did you mean data.micrographs=?"),
        (evaluate.main, ["max_distanse=3"], "did you mean max_distance"),
        (preprocess.main, ["downsampel=4"], "did you mean downsample=?"),
        (convert.main, ["+foo=1"], "not a setting of tzl-convert"),
        (train.main, ["+foo=1"], "not a setting of tzl-train"),
    ],
)
def test_misspelled_keys_give_one_line_and_exit_2(main, argv, expected, monkeypatch, capsys):
    code, err = _run(main, argv, monkeypatch, capsys)
    assert code == 2
    assert err.startswith("error: config key")
    assert expected in err
    assert len(err.splitlines()) == 1


def test_adding_below_a_known_key_stays_allowed(monkeypatch, capsys):
    # +callbacks.<name>._target_ and ++trainer.* are documented: no refusal, the config prints
    monkeypatch.setattr(
        sys,
        "argv",
        ["tzl-train", "+callbacks.extra._target_=x.Y", "++trainer.foo=1", "--cfg", "job"],
    )
    train.main()
    assert "extra" in capsys.readouterr().out


@pytest.mark.parametrize("main", [pick.main, preprocess.main, train.main])
def test_output_directory_that_is_a_file_is_refused_before_hydra(
    main, tmp_path, monkeypatch, capsys
):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    key = "hydra.run.dir" if main is train.main else "output_dir"
    for target in (blocker, blocker / "below"):
        code, err = _run(main, [f"{key}={target}"], monkeypatch, capsys)
        assert code == 2, err
        assert str(blocker) in err and len(err.splitlines()) == 1
    assert blocker.read_text() == "not a directory"


def test_real_process_exit_status_and_single_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "topaz_lightning.cli.pick", "thresold=0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: config key 'thresold': not a setting of tzl-pick (did you mean threshold=?); "
        "tzl-pick --help lists the main keys"
    ]


def test_nothing_done_is_exit_2_some_done_is_exit_3(tmp_path, monkeypatch, capsys):
    from topaz_lightning.errors import PartialFailureError

    assert PartialFailureError([("a", "bad")], num_done=0).exit_status == 2
    assert PartialFailureError([("a", "bad")], num_done=1).exit_status == 3
    # a directory of 0-byte micrographs: every one fails, so the command did nothing
    mics = tmp_path / "mics"
    mics.mkdir()
    for name in ("a.mrc", "b.mrc"):
        (mics / name).write_bytes(b"")
    out = tmp_path / "out"
    code, err = _run(
        preprocess.main, [f"input={mics}", f"output_dir={out}", "downsample=1"], monkeypatch, capsys
    )
    assert code == 2
    assert err.splitlines()[-1].startswith("error: nothing was done: 2 input(s) failed")
    assert (out / "failures.tsv").is_file()


def test_a_dangling_symlink_among_the_inputs_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    from topaz_lightning.io.micrographs import write_micrograph

    mics = tmp_path / "mics"
    write_micrograph(mics / "good.mrc", __import__("numpy").ones((32, 32), dtype="float32"))
    (mics / "gone.mrc").symlink_to(tmp_path / "nowhere.mrc")
    code, err = _run(
        preprocess.main, [f"input={mics}", f"output_dir={tmp_path / 'out'}"], monkeypatch, capsys
    )
    assert code == 2
    assert err.splitlines()[-1] == f"error: {mics / 'gone.mrc'}: micrograph file not found"


def test_absurd_minibatch_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    code, err = _run(
        train.main,
        ["data.batch_positive=100000", f"hydra.run.dir={tmp_path / 'run'}"],
        monkeypatch,
        capsys,
    )
    assert code == 2 and "config key 'data.batch_positive'" in err.splitlines()[-1]
