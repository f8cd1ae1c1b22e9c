"""Tests for the micrograph simulator: determinism, layout, geometry, CTF rings, presets, bad settings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.optimize import brentq

from topaz_lightning.errors import ConfigError, OutputExistsError
from topaz_lightning.simulate import (
    CTFParams,
    SimulationSettings,
    get_preset,
    preset_names,
    simulate_dataset,
    simulate_micrographs,
)
from topaz_lightning.simulate.contact_sheet import power_spectrum, radial_profile
from topaz_lightning.simulate.physics import (
    ctf_1d,
    ctf_zero_frequencies,
    random_orientations,
    smooth_field,
    splat_gaussians,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    return simulate_dataset(tmp_path_factory.mktemp("sim") / "tiny", preset="tiny", seed=0)


# ---------------------------------------------------------------- determinism
def test_same_seed_same_arrays_different_seed_different():
    settings = get_preset("tiny", num_micrographs=2)
    a = simulate_micrographs(settings, seed=3)
    b = simulate_micrographs(settings, seed=3)
    c = simulate_micrographs(settings, seed=4)
    for ma, mb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ma.image, mb.image)
        np.testing.assert_array_equal(ma.particles_xy, mb.particles_xy)
    assert not np.array_equal(a[0].image, c[0].image)
    assert not np.array_equal(a[0].image, a[1].image)  # micrographs get their own seeds


def test_result_does_not_depend_on_num_workers():
    settings = get_preset("tiny", num_micrographs=2)
    serial = simulate_micrographs(settings, seed=5, num_workers=1)
    parallel = simulate_micrographs(settings, seed=5, num_workers=2)
    for ms, mp in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(ms.image, mp.image)
        np.testing.assert_array_equal(ms.particles_xy, mp.particles_xy)


def test_one_micrograph_is_the_same_alone_or_with_others():
    settings = get_preset("tiny")
    all_four = simulate_micrographs(settings, seed=1)
    only_third = simulate_micrographs(settings, seed=1, indices=[2])
    np.testing.assert_array_equal(all_four[2].image, only_third[0].image)


# ---------------------------------------------------------------- layout and geometry
def test_dataset_layout_shapes_and_dtypes(tiny_dataset: Path):
    from topaz_lightning.io.coordinates import read_coordinates
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph, read_pixel_size

    info = yaml.safe_load((tiny_dataset / "dataset.yaml").read_text())
    files = list_micrographs(tiny_dataset / "micrographs")
    assert len(files) == 4
    for path in files.values():
        image = read_micrograph(path)
        assert image.dtype == np.float32 and image.shape == (256, 256)
        assert np.isfinite(image).all() and image.min() >= 0 and image.std() > 0
        assert read_pixel_size(path) == pytest.approx(7.0)
    train = (tiny_dataset / "train.txt").read_text().split()
    test = (tiny_dataset / "test.txt").read_text().split()
    assert len(train) == 3 and len(test) == 1 and not set(train) & set(test)
    assert set(train) | set(test) == set(files)
    truth = read_coordinates(tiny_dataset / "particles.tsv")
    assert set(truth["micrograph"]) <= set(files)
    assert info["num_particles"] == len(truth)
    for key in (
        "preset",
        "seed",
        "shape",
        "pixel_size_a",
        "particle_radius_px",
        "particles_per_micrograph",
        "suggested_pi",
        "nms_radius_px",
        "match_distance_px",
        "label_radius_px",
    ):
        assert key in info, key
    assert info["shape"] == [256, 256]
    assert 6 < info["particle_radius_px"] < 8
    # the suggested pi is the label disks' share of the micrograph area
    disk = 49  # radius 4 px
    assert info["suggested_pi"] == pytest.approx(len(truth) / 4 * disk / 256**2, rel=1e-3)


def test_labeled_subsets_are_nested_seeded_training_particles(tiny_dataset: Path, tmp_path: Path):
    from topaz_lightning.io.coordinates import read_coordinates

    info = yaml.safe_load((tiny_dataset / "dataset.yaml").read_text())
    train = set((tiny_dataset / "train.txt").read_text().split())
    truth = read_coordinates(tiny_dataset / "particles.tsv")
    train_truth = truth[truth["micrograph"].isin(train)]
    assert set(info["labeled"]) == {"10", "all"}  # 100 and 1000 exceed the 3 micrographs' particles
    ten = read_coordinates(tiny_dataset / info["labeled"]["10"])
    everything = read_coordinates(tiny_dataset / info["labeled"]["all"])
    assert len(ten) == 10 and len(everything) == len(train_truth)
    key = ["micrograph", "x", "y"]
    assert len(ten.merge(train_truth, on=key)) == 10
    # a bigger dataset: 10 within 100 within all, and the same subsets for the same seed
    big = simulate_dataset(tmp_path / "big", "tiny", seed=2, particles_per_micrograph=45)
    again = simulate_dataset(tmp_path / "again", "tiny", seed=2, particles_per_micrograph=45)
    s10 = read_coordinates(big / "labeled" / "particles_10.tsv")
    s100 = read_coordinates(big / "labeled" / "particles_100.tsv")
    assert len(s100) == 100 and len(s10.merge(s100, on=key)) == 10
    pd.testing.assert_frame_equal(s100, read_coordinates(again / "labeled" / "particles_100.tsv"))


def test_particles_in_bounds_apart_and_off_contaminants():
    settings = get_preset(
        "tiny", particles_per_micrograph=60, clustering=1.0, carbon_probability=1.0
    )
    height, width = settings.shape
    margin = settings.edge_margin
    for m in simulate_micrographs(settings, seed=7):
        xy = m.particles_xy
        assert len(xy) > 20
        assert (xy[:, 0] >= margin).all() and (xy[:, 0] <= width - 1 - margin).all()
        assert (xy[:, 1] >= margin).all() and (xy[:, 1] <= height - 1 - margin).all()
        diff = xy[:, None, :] - xy[None, :, :]
        dist = np.sqrt((diff**2).sum(-1)) + np.eye(len(xy)) * 1e9
        assert dist.min() >= settings.min_distance_px
        for c in m.contaminants:
            d = np.hypot(xy[:, 0] - c["x"], xy[:, 1] - c["y"])
            assert (d > c["radius_px"]).all(), c
        assert m.meta["carbon"]


def test_refuses_to_overwrite_and_replaces_atomically(tmp_path: Path):
    out = simulate_dataset(tmp_path / "ds", "tiny", seed=0, num_micrographs=2)
    before = (out / "particles.tsv").read_text()
    with pytest.raises(OutputExistsError):
        simulate_dataset(out, "tiny", seed=1, num_micrographs=2)
    assert (out / "particles.tsv").read_text() == before
    simulate_dataset(out, "tiny", seed=1, num_micrographs=2, overwrite=True)
    assert (out / "particles.tsv").read_text() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary directories left


def test_failed_simulation_leaves_nothing(tmp_path: Path):
    with pytest.raises(ConfigError):
        simulate_dataset(tmp_path / "bad", "tiny", coordinate_format="nope")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- physics
def test_ctf_zero_formula_matches_sign_changes_of_the_ctf():
    params = CTFParams(1.7, 1.7, 0.0, pixel_size_a=2.0, amplitude_contrast=0.1, cs_mm=2.7)
    zeros = ctf_zero_frequencies(1.7, params, 0.25)
    assert len(zeros) > 5
    grid = np.linspace(1e-4, 0.25, 20001)
    values = ctf_1d(grid, 1.7, params)
    crossings = np.nonzero(np.sign(values[1:]) != np.sign(values[:-1]))[0]
    refined = [
        brentq(lambda k: ctf_1d(np.array([k]), 1.7, params)[0], grid[i], grid[i + 1])
        for i in crossings
    ]
    np.testing.assert_allclose(zeros, refined, rtol=1e-6)


def test_power_spectrum_shows_ctf_zeros_where_the_formula_predicts():
    settings = get_preset(
        "tiny",
        num_micrographs=2,
        pixel_size_a=4.0,
        defocus_um=(1.0, 1.0),
        astigmatism_um=(0.0, 0.0),
        b_factor_a2=50.0,
        structural_noise_fraction=0.95,
        snr=2.0,
        carbon_probability=0.0,
        ice_crystals_per_micrograph=0.0,
        aggregates_per_micrograph=0.0,
        dark_blobs_per_micrograph=0.0,
    )
    micrographs = simulate_micrographs(settings, seed=11)
    tile = 256
    profile = np.mean([radial_profile(power_spectrum(m.image, tile)) for m in micrographs], axis=0)
    zeros = ctf_zero_frequencies(1.0, micrographs[0].ctf, 0.5 / settings.pixel_size_a)
    bins = zeros * settings.pixel_size_a * tile  # spatial frequency -> spectrum bin
    checked = 0
    for b in bins:
        if not 20 < b < tile // 2 - 10:
            continue
        lo, hi = int(b) - 8, int(b) + 9
        found = lo + int(np.argmin(profile[lo:hi]))
        assert abs(found - b) <= 2, (found, b)
        # a real dip: well below the Thon-ring maxima around it
        assert profile[found] < 0.5 * profile[lo:hi].max()
        checked += 1
    assert checked >= 2


def test_ctf_rings_move_with_defocus():
    params = CTFParams(1.0, 1.0, 0.0, pixel_size_a=4.0)
    near = ctf_zero_frequencies(1.0, params, 0.125)
    far = ctf_zero_frequencies(2.0, params, 0.125)
    assert far[0] < near[0] and len(far) > len(near)


def test_splat_matches_slow_reference():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-4, 4, (2, 5, 2))
    weights = rng.uniform(0.5, 2, 5)
    sigma = rng.uniform(0.7, 2.0, 5)
    box = 15
    fast = splat_gaussians(xy, weights, sigma, box)
    grid = np.arange(box) - box // 2
    slow = np.zeros((2, box, box))
    for p in range(2):
        for a in range(5):
            for iy, gy in enumerate(grid):
                for ix, gx in enumerate(grid):
                    r2 = (gx - xy[p, a, 0]) ** 2 + (gy - xy[p, a, 1]) ** 2
                    slow[p, iy, ix] += (
                        weights[a]
                        / (2 * np.pi * sigma[a] ** 2)
                        * math.exp(-r2 / (2 * sigma[a] ** 2))
                    )
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-6)


def test_rotations_are_proper_and_flat_ones_stay_near_the_plane():
    rng = np.random.default_rng(0)
    for orientation in ("uniform", "flat"):
        rot = random_orientations(rng, 200, orientation, max_tilt_deg=20)
        np.testing.assert_allclose(
            rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-10
        )
        np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-10)
    flat = random_orientations(rng, 500, "flat", max_tilt_deg=20)
    long_axis_z = flat[:, 2, 0]  # z component of the rotated x axis
    assert np.abs(long_axis_z).max() <= math.sin(math.radians(20)) + 1e-9
    uniform = random_orientations(rng, 2000, "uniform")
    assert abs(np.mean(uniform[:, 2, 0] ** 2) - 1 / 3) < 0.03


def test_smooth_field_is_standardized_and_smooth():
    field = smooth_field(np.random.default_rng(0), (200, 300), 64)
    assert field.shape == (200, 300)
    assert abs(field.mean()) < 1e-5 and field.std() == pytest.approx(1, abs=1e-4)
    assert np.abs(np.diff(field, axis=1)).max() < 0.2


def test_particles_are_dark_in_underfocus_and_filaments_are_elongated():
    from scipy.ndimage import gaussian_filter

    from topaz_lightning.simulate.micrograph import make_molecule

    settings = get_preset("tiny", num_micrographs=2, snr=1.0, carbon_probability=0.0)
    m = simulate_micrographs(settings, seed=0, indices=[0])[0]
    smooth = gaussian_filter(m.image, 1.5)
    xs, ys = m.particles_xy[:, 0].astype(int), m.particles_xy[:, 1].astype(int)
    assert np.median(smooth[ys, xs]) < np.percentile(smooth, 25)
    shapiro = get_preset("shapiro_like")
    molecule = make_molecule(shapiro, np.random.default_rng(0))
    extent = np.sort(molecule.coords_a.max(axis=0) - molecule.coords_a.min(axis=0))
    assert extent[2] >= 3.5 * extent[1]  # long axis vs the next one (a bent rod, aspect >= 4)


# ---------------------------------------------------------------- presets and settings
@pytest.mark.parametrize("name", preset_names())
def test_preset_yaml_instantiates_to_the_preset(name: str, configs_dir: Path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    # composed as tzl-simulate composes it (a preset may extend another through its defaults)
    with initialize_config_dir(str(configs_dir), version_base=None):
        node = compose(config_name="simulate", overrides=[f"simulate={name}"]).simulate
    settings = instantiate(OmegaConf.to_container(node, resolve=True), _convert_="all")
    assert isinstance(settings, SimulationSettings)
    assert settings == get_preset(name)


def test_presets_are_the_packaged_yaml_files(configs_dir: Path):
    # one source: the Python side lists and reads configs/simulate/*.yaml, no dict of its own
    names = sorted(p.stem for p in (configs_dir / "simulate").glob("*.yaml"))
    assert preset_names() == names
    assert {"tiny", "demo", "empiar10096_like", "shapiro_like"} <= set(names)
    import topaz_lightning.simulate.settings as settings_module

    assert not hasattr(settings_module, "PRESETS")


def test_preset_properties():
    empiar = get_preset("empiar10096_like")
    assert 900 <= min(empiar.shape) and max(empiar.shape) <= 1100
    assert empiar.particles_per_micrograph == 290 and 6 <= empiar.particle_radius_px <= 8
    pi = empiar.particles_per_micrograph * 49 / (empiar.shape[0] * empiar.shape[1])
    assert 0.013 < pi < 0.018
    shapiro = get_preset("shapiro_like")
    assert shapiro.particle_kind == "filament" and shapiro.particles_per_micrograph == 17
    assert shapiro.binned_snr < 2 * empiar.binned_snr
    assert (shapiro.nms_radius_px, shapiro.match_distance_px) == (15, 15)
    demo = get_preset("demo")
    assert demo.num_micrographs - demo.num_test == 8 and demo.num_test == 2
    assert demo.shape == (512, 512) and 70 <= demo.particles_per_micrograph <= 80


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"snr": None, "dose_e_per_a2": -5.0}, "dose_e_per_a2"),
        ({"dose_e_per_a2": -1.0}, "dose_e_per_a2"),
        ({"min_distance_px": 60.0, "particles_per_micrograph": 40}, "min_distance_px"),
        ({"defocus_um": (3.0, 1.0)}, "defocus_um"),
        ({"amplitude_contrast": 1.5}, "amplitude_contrast"),
        ({"num_test": 4}, "num_test"),
        ({"particle_kind": "cube"}, "particle_kind"),
        ({"snr": 0.0}, "snr"),
        ({"particle_kind": "filament", "filament_diameter_a": 50.0}, "filament_diameter_a"),
        ({"shape": (10, 10)}, "shape"),
        ({"no_such_knob": 1}, "no_such_knob"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_key(overrides: dict, key: str):
    with pytest.raises(ConfigError) as err:
        get_preset("tiny", **overrides)
    assert err.value.key == key
    assert key in str(err.value)


def test_unknown_preset_and_bad_workers(tmp_path: Path):
    with pytest.raises(ConfigError, match="preset") as err:
        simulate_dataset(tmp_path / "x", preset="empiar99999")
    assert "tiny" in str(err.value)  # lists the choices
    with pytest.raises(ConfigError, match="num_workers"):
        simulate_dataset(tmp_path / "y", preset="tiny", num_workers=0)
    with pytest.raises(ConfigError, match="unknown simulation setting") as err:
        get_preset("tiny", num_micrograph=3)
    assert err.value.key == "num_micrograph"


# ---------------------------------------------------------------- command line
def _simulate_cfg(configs_dir: Path, *overrides: str):
    from tests.conftest import compose_config

    return compose_config("simulate", overrides)


def test_cli_refuses_an_existing_contact_sheet_elsewhere(tmp_path: Path, configs_dir: Path):
    from topaz_lightning.cli.simulate import run

    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(b"an earlier sheet")
    cfg = _simulate_cfg(
        configs_dir,
        "simulate=tiny",
        f"out_dir={tmp_path / 'cli'}",
        "simulate.num_micrographs=2",
        f"contact_sheet_path={sheet}",
    )
    with pytest.raises(OutputExistsError, match="sheet.png"):
        run(cfg)
    assert sheet.read_bytes() == b"an earlier sheet"
    assert not (tmp_path / "cli").exists()  # refused before simulating


def test_cli_writes_dataset_and_contact_sheet(tmp_path: Path, configs_dir: Path):
    from topaz_lightning.cli.simulate import run

    cfg = _simulate_cfg(
        configs_dir,
        "simulate=tiny",
        f"out_dir={tmp_path / 'cli'}",
        "seed=3",
        "simulate.num_micrographs=2",
    )
    out = run(cfg)
    assert (out / "dataset.yaml").exists() and (out / "contact_sheet.png").stat().st_size > 10_000
    info = yaml.safe_load((out / "dataset.yaml").read_text())
    assert info["seed"] == 3 and info["num_micrographs"] == 2
    expected = simulate_micrographs(get_preset("tiny", num_micrographs=2), seed=3)
    from topaz_lightning.io.micrographs import read_micrograph

    np.testing.assert_array_equal(
        read_micrograph(out / "micrographs" / "tiny_000.mrc"), expected[0].image
    )


def test_default_simulate_config_composes_demo(configs_dir: Path):
    cfg = _simulate_cfg(configs_dir)
    assert cfg.simulate.name == "demo" and cfg.contact_sheet is True and cfg.overwrite is False


@pytest.mark.parametrize("fmt", ["star", "box", "csv"])
def test_labeled_subsets_in_other_coordinate_formats(tmp_path: Path, fmt: str):
    from topaz_lightning.io.coordinates import read_coordinates

    out = simulate_dataset(
        tmp_path / fmt, "tiny", seed=0, coordinate_format=fmt, num_micrographs=2, num_test=0
    )
    info = yaml.safe_load((out / "dataset.yaml").read_text())
    labeled = read_coordinates(out / info["labeled"]["all"])
    truth = read_coordinates(out / "particles.tsv")
    key = ["micrograph", "x", "y"]
    got = labeled[key].sort_values(key).reset_index(drop=True)
    want = truth[key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert len(read_coordinates(out / info["labeled"]["10"])) == 10


def test_bad_preset_name_is_refused():
    with pytest.raises(ConfigError, match="name"):
        get_preset("tiny", name="../escape")


def test_cli_reports_impossible_settings_as_config_error(tmp_path: Path, configs_dir: Path):
    from topaz_lightning.cli.simulate import run

    cfg = _simulate_cfg(
        configs_dir, "simulate=tiny", f"out_dir={tmp_path / 'x'}", "simulate.min_distance_px=80"
    )
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert err.value.key == "min_distance_px"
    assert not (tmp_path / "x").exists()


def test_failed_replacement_keeps_the_earlier_dataset(tmp_path: Path, monkeypatch):
    import os

    from topaz_lightning.simulate import dataset as ds

    out, new = tmp_path / "data", tmp_path / "new"
    out.mkdir()
    (out / "old.txt").write_text("old")
    new.mkdir()
    real_replace = os.replace

    def replace(src, dst):
        if Path(src) == new:
            raise OSError("disk trouble")
        real_replace(src, dst)

    monkeypatch.setattr(ds.os, "replace", replace)
    with pytest.raises(OSError, match="disk trouble"):
        ds._move_into_place(new, out, overwrite=True)
    assert (out / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "new"]


def test_load_dataset_info_names_a_bad_file(tmp_path: Path):
    from topaz_lightning.errors import InputError
    from topaz_lightning.simulate.dataset import load_dataset_info

    (tmp_path / "dataset.yaml").write_bytes(b"shape: \xff")
    with pytest.raises(InputError, match="dataset.yaml: not valid YAML"):
        load_dataset_info(tmp_path)
