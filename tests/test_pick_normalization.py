"""A pick run's GMM fit: at most FIT_MICROGRAPHS micrographs, read once, the images kept for scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from topaz_lightning.errors import ConfigError, InputError


def _micrograph(seed: int, shape=(64, 70)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.gamma(4.0, 1.0 + 0.25 * seed, size=shape)
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    for x, y in rng.uniform(8, min(shape) - 8, size=(4, 2)):
        image += 5 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 16.0)
    return image.astype(np.float32)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    from topaz_lightning.io.micrographs import write_micrograph

    root = tmp_path_factory.mktemp("pick_norm")
    out = {}
    for k in range(6):
        out[f"m{k}"] = root / f"m{k}.mrc"
        write_micrograph(out[f"m{k}"], _micrograph(k))
    return out


def test_fit_micrographs_all_or_evenly_spaced():
    from topaz_lightning.picking.normalization import fit_micrographs

    names = [f"m{k:03d}" for k in range(200)]
    assert fit_micrographs(names[:16], 16) == names[:16]
    assert fit_micrographs(names, None) == names
    chosen = fit_micrographs(names, 16)
    assert len(chosen) == 16 and chosen[0] == names[0] and chosen[-1] == names[-1]
    positions = [names.index(n) for n in chosen]
    assert positions == sorted(positions)
    assert max(np.diff(positions)) - min(np.diff(positions)) <= 1  # evenly spaced
    assert fit_micrographs(names[:3], 1) == ["m000"]
    with pytest.raises(ConfigError, match="max_micrographs"):
        fit_micrographs(names, 0)


def test_run_fit_is_the_in_memory_fit_of_its_micrographs_and_keeps_their_images(sources):
    from topaz_lightning.io.micrographs import read_micrograph
    from topaz_lightning.picking.normalization import run_fit
    from topaz_lightning.preprocess import downsample, fit_gmm

    fit, prepared = run_fit(sources, 2.0, seed=3, max_micrographs=3)
    chosen = ["m0", "m2", "m5"]  # evenly spaced over 6, first and last included
    assert fit.names == chosen
    images = {n: downsample(read_micrograph(sources[n]), 2.0) for n in chosen}
    reference = fit_gmm(images, seed=3)
    assert fit.pi == pytest.approx(reference.pi, rel=1e-12)
    np.testing.assert_allclose(fit.mu, reference.mu, rtol=1e-12)
    np.testing.assert_allclose(fit.sigma, reference.sigma, rtol=1e-12)
    np.testing.assert_allclose(fit.alpha, reference.alpha, rtol=1e-12)
    assert list(prepared) == chosen
    for name in chosen:
        np.testing.assert_array_equal(prepared[name], images[name])
    # all micrographs when there are no more than the limit: today's fit over every one
    fit_all, prepared_all = run_fit(sources, 2.0, seed=3, max_micrographs=None)
    assert fit_all.names == list(sources) and list(prepared_all) == list(sources)
    # the kept images are bounded in bytes (the fit is not)
    one = images["m0"].nbytes
    fit_capped, capped = run_fit(sources, 2.0, seed=3, max_micrographs=3, keep_bytes=2 * one)
    assert list(capped) == ["m0", "m2"] and fit_capped.names == chosen
    assert fit_capped.pi == fit.pi


def test_unreadable_fit_micrograph_is_left_out_exactly(sources, tmp_path):
    from topaz_lightning.picking.normalization import run_fit

    broken = dict(sources)
    broken["m2"] = tmp_path / "m2.mrc"
    broken["m2"].write_bytes(b"not an mrc file")
    reported = []
    fit, prepared = run_fit(
        broken, 2.0, max_micrographs=3, on_error=lambda n, e: reported.append(n)
    )
    assert reported == ["m2"] and fit.names == ["m0", "m5"] and list(prepared) == ["m0", "m5"]
    alone, _ = run_fit({n: sources[n] for n in ("m0", "m5")}, 2.0, max_micrographs=None)
    assert fit.pi == alone.pi and np.array_equal(fit.alpha, alone.alpha)
    with pytest.raises(InputError):
        run_fit(broken, 2.0, max_micrographs=3)


def test_micrographs_outside_the_fit_get_their_own_scale(sources):
    from topaz_lightning.io.micrographs import read_micrograph
    from topaz_lightning.picking.normalization import PickNormalization, run_fit
    from topaz_lightning.preprocess import downsample

    fit, _ = run_fit(sources, 2.0, max_micrographs=2)
    norm = PickNormalization("gmm", fit, "run", 0)
    assert "m3" not in fit.names
    image = downsample(read_micrograph(sources["m3"]), 2.0)
    out = norm("m3", image)
    # a scaled copy of the micrograph gets the same normalized image: its scale is its own
    np.testing.assert_allclose(norm("m3", 3.0 * image), out, rtol=1e-4, atol=1e-4)
    assert norm.record()["fit"]["names"] == fit.names  # the prepared images are not recorded


def test_preprocess_uses_a_prepared_image_once(sources):
    from topaz_lightning.io.micrographs import read_micrograph
    from topaz_lightning.picking.predict import Preprocess
    from topaz_lightning.preprocess import downsample

    marker = np.full((4, 4), 7.0, dtype=np.float32)
    step = Preprocess(2.0, lambda name, image: image, prepared={"m1": marker})
    np.testing.assert_array_equal(step("m1", Path("/nonexistent/m1.mrc")), marker)
    # used once: the next call reads the file
    expected = downsample(read_micrograph(sources["m1"]), 2.0)
    np.testing.assert_array_equal(step("m1", sources["m1"]), expected)


def test_tzl_pick_reads_each_micrograph_once(sources, tmp_path, monkeypatch):
    import torch

    import topaz_lightning.io.micrographs as micrographs
    from tests.conftest import compose_config
    from topaz_lightning.cli.pick import run
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.models import Conv31, save_model

    torch.manual_seed(0)
    geometry = RunGeometry(downsample=2.0, nms_radius_px_model=4.0, normalize="gmm")
    extra = {"preprocess": {"downsample": 2.0, "normalize": "gmm"}, "geometry": geometry.to_dict()}
    save_model(tmp_path / "model.pt", Conv31(widths=(2, 3, 4)), extra=extra)
    reads: list[str] = []
    real_read = micrographs.read_micrograph

    def counting_read(path, *args, **kwargs):
        reads.append(Path(path).stem)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(micrographs, "read_micrograph", counting_read)
    mics = next(iter(sources.values())).parent
    cfg = compose_config(
        "pick",
        [
            f"model_path={tmp_path / 'model.pt'}",
            f"micrographs={mics}",
            f"output_dir={tmp_path / 'out'}",
            "progress=false",
            "device=cpu",
            "num_workers=0",
            "browser=false",  # the page reads each micrograph for its thumbnail
        ],
    )
    picks = run(cfg)
    assert sorted(reads) == sorted(sources)  # the GMM's first pass and the scoring: one read
    assert sorted(picks["micrograph"].unique()) == sorted(sources)
