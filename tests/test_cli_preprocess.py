"""Tests for tzl-preprocess: outputs, pixel size, scaled coordinates, refusal to overwrite."""

from __future__ import annotations

import subprocess
import sys

import mrcfile
import numpy as np
import pytest
from PIL import Image

from tests.conftest import compose_config
from topaz_lightning.cli.preprocess import run
from topaz_lightning.errors import InputError, PartialFailureError
from topaz_lightning.io.micrographs import read_micrograph, read_pixel_size
from topaz_lightning.preprocess import preprocess_images
from topaz_lightning.preprocess.files import preprocess_files


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    a = (rng.normal(0, 1, (48, 64)) + 10 * (rng.random((48, 64)) < 0.2)).astype(np.float32) * 3
    yy, xx = np.mgrid[0:48, 0:64]
    a += 200 * np.exp(-((xx - 30) ** 2 + (yy - 20) ** 2) / 8.0)  # a bright dot at (x=30, y=20)
    with mrcfile.new(folder / "mic_a.mrc") as mrc:
        mrc.set_data(a)
        mrc.voxel_size = 1.5
    b = np.clip(rng.normal(120, 20, (40, 50)), 0, 255).astype(np.uint8)
    Image.fromarray(b).save(folder / "mic_b.png")
    coords = tmp_path / "coords.tsv"
    coords.write_text("image_name\tx_coord\ty_coord\nmic_a\t30\t20\nmic_b\t10.5\t7\n")
    return folder, coords


def test_preprocess_command_writes_mrcs_and_scaled_coordinates(inputs, tmp_path):
    folder, coords = inputs
    out = tmp_path / "out"
    overrides = [
        f"input={folder}",
        f"output_dir={out}",
        "downsample=2",
        f"coordinates={coords}",
        "num_workers=1",
        "progress=false",
    ]
    summary = run(compose_config("preprocess", overrides))
    assert sorted(p.name for p in out.glob("*.mrc")) == ["mic_a.mrc", "mic_b.mrc"]
    small_a = read_micrograph(out / "mic_a.mrc")
    assert small_a.shape == (24, 32)
    assert read_micrograph(out / "mic_b.mrc").shape == (20, 25)
    assert read_pixel_size(out / "mic_a.mrc") == pytest.approx(3.0)
    assert read_pixel_size(out / "mic_b.mrc") is None
    with mrcfile.open(out / "mic_a.mrc") as mrc:
        assert mrc.data.dtype == np.float32
    # identical to the in-memory path used by the DataModule and the picker
    originals = {
        "mic_a": read_micrograph(folder / "mic_a.mrc"),
        "mic_b": read_micrograph(folder / "mic_b.png"),
    }
    expected = preprocess_images(
        originals, downsample=2, normalize="gmm", seed=0, sample_size=200_000
    )
    np.testing.assert_allclose(small_a, expected["mic_a"], rtol=1e-6, atol=1e-6)
    # the bright dot moved to (x/2, y/2)
    assert np.unravel_index(np.argmax(small_a), small_a.shape) == (10, 15)
    from topaz_lightning.io.coordinates import read_coordinates

    scaled = read_coordinates(out / "particles.tsv").sort_values("micrograph")
    np.testing.assert_allclose(scaled.x, [15.0, 5.25])
    np.testing.assert_allclose(scaled.y, [10.0, 3.5])
    assert summary["gmm"]["converged"]
    assert (out / "preprocess.yaml").exists()

    # the same command again continues the (finished) job: nothing changes
    before = (out / "mic_a.mrc").read_bytes()
    summary_text = (out / "preprocess.yaml").read_text()
    run(compose_config("preprocess", overrides))
    assert (out / "mic_a.mrc").read_bytes() == before
    assert (out / "preprocess.yaml").read_text() == summary_text
    # other settings into the same directory are refused, naming what changed
    with pytest.raises(InputError, match='changed: normalize "gmm" -> "none"'):
        run(compose_config("preprocess", overrides + ["normalize=none"]))
    assert (out / "mic_a.mrc").read_bytes() == before
    run(compose_config("preprocess", overrides + ["normalize=none", "overwrite=true"]))
    assert (out / "mic_a.mrc").read_bytes() != before


@pytest.mark.parametrize("normalize", ["gmm", "standardize"])
def test_preprocess_constant_micrograph_is_skipped_and_reported(tmp_path, normalize):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((16, 16), 9, np.uint8)).save(folder / "flat.png")
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(folder / "a_ok.png")
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16).T).save(folder / "z_ok.png")
    out = tmp_path / "out"
    overrides = [f"input={folder}", f"output_dir={out}", "num_workers=1", "progress=false"]
    with pytest.raises(PartialFailureError, match=r"flat\.png.*constant"):
        run(compose_config("preprocess", overrides + [f"normalize={normalize}"]))
    assert sorted(p.name for p in out.glob("*.mrc")) == ["a_ok.mrc", "z_ok.mrc"]
    lines = (out / "failures.tsv").read_text().splitlines()
    assert lines[0] == "name\treason" and len(lines) == 2
    assert lines[1].startswith("flat\t") and "constant" in lines[1]
    # strict: the first bad micrograph stops the job with its own error
    with pytest.raises(InputError, match=r"flat\.png.*constant"):
        run(
            compose_config(
                "preprocess",
                overrides + [f"normalize={normalize}", "strict=true", "overwrite=true"],
            )
        )
    assert not (out / "z_ok.mrc").exists()


def test_preprocess_files_in_parallel_equals_serial(inputs, tmp_path):
    folder, _ = inputs
    sources = {"mic_a": folder / "mic_a.mrc", "mic_b": folder / "mic_b.png"}
    serial = preprocess_files(
        sources, tmp_path / "s", downsample=1.5, num_workers=1, progress=False
    )
    parallel = preprocess_files(
        sources, tmp_path / "p", downsample=1.5, num_workers=2, progress=False
    )
    for name in sources:
        np.testing.assert_array_equal(
            read_micrograph(serial.outputs[name]), read_micrograph(parallel.outputs[name])
        )
    assert serial.shapes == parallel.shapes == {"mic_a": (32, 43), "mic_b": (27, 33)}


def test_tzl_preprocess_subprocess_saves_config_and_continues(inputs, tmp_path):
    folder, _ = inputs
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "topaz_lightning.cli.preprocess",
        f"input={folder}",
        f"output_dir={out}",
        "normalize=standardize",
        "num_workers=1",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "normalize: standardize" in (out / "config.yaml").read_text()
    image = read_micrograph(out / "mic_b.mrc")
    assert image.mean() == pytest.approx(0, abs=1e-5) and image.std() == pytest.approx(1, abs=1e-4)
    before = (out / "mic_b.mrc").read_bytes()
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "2 done by an earlier run" in second.stdout
    assert (out / "mic_b.mrc").read_bytes() == before
    # other settings: refused with exit status 2, naming the key
    third = subprocess.run(
        [*cmd, "downsample=2"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert third.returncode == 2
    assert "changed: downsample 1.0 -> 2.0" in third.stderr and "overwrite=true" in third.stderr


def test_a_corrupt_micrograph_does_not_change_the_others_gmm_outputs(inputs, tmp_path):
    folder, _ = inputs
    (folder / "mic_c.mrc").write_bytes((folder / "mic_a.mrc").read_bytes()[:700])  # truncated
    with pytest.raises(PartialFailureError, match="mic_c"):
        run(
            compose_config(
                "preprocess",
                [f"input={folder}", f"output_dir={tmp_path / 'with_bad'}", "num_workers=1"],
            )
        )
    (folder / "mic_c.mrc").unlink()
    run(
        compose_config(
            "preprocess", [f"input={folder}", f"output_dir={tmp_path / 'clean'}", "num_workers=1"]
        )
    )
    for name in ("mic_a.mrc", "mic_b.mrc"):  # the pixels (the header holds the time)
        bad, clean = (read_micrograph(tmp_path / d / name) for d in ("with_bad", "clean"))
        np.testing.assert_array_equal(bad, clean)
    assert not (tmp_path / "with_bad" / "mic_c.mrc").exists()


def test_names_that_cannot_be_file_names_are_skipped_and_reported(inputs, tmp_path):
    folder, _ = inputs
    long_name = "n" * 250
    (folder / f"{long_name}.mrc").write_bytes((folder / "mic_a.mrc").read_bytes())
    (folder / "new\nline.mrc").write_bytes((folder / "mic_a.mrc").read_bytes())
    out = tmp_path / "out"
    overrides = [f"input={folder}", f"output_dir={out}", "num_workers=1", "normalize=standardize"]
    with pytest.raises(PartialFailureError, match="2 input"):
        run(compose_config("preprocess", overrides))
    assert sorted(p.name for p in out.glob("*.mrc")) == ["mic_a.mrc", "mic_b.mrc"]
    report = (out / "failures.tsv").read_text()
    assert "too long" in report and "control characters" in report
    assert len(report.splitlines()) == 3  # the newline is escaped, not splitting a row
