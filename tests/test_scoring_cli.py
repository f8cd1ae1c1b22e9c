"""tzl-pick scoring=coarse_to_fine and tta through the command: same picks above the threshold, checked keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import compose_config
from topaz_lightning.errors import ConfigError

NAMES = ["a0", "a1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.io.micrographs import write_micrograph
    from topaz_lightning.models import Conv31, save_model

    root = tmp_path_factory.mktemp("scoring_cli")
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:96, :104]
    for name in NAMES:
        image = rng.gamma(4.0, 1.0, size=(96, 104))
        for x, y in rng.uniform(10, 86, size=(6, 2)):
            image += 6 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 18.0)
        write_micrograph(root / "mics" / f"{name}.mrc", image.astype(np.float32))
    torch.manual_seed(0)
    geometry = RunGeometry(downsample=1.0, nms_radius_px_model=5.0, normalize="gmm")
    extra = {"preprocess": {"downsample": 1.0, "normalize": "gmm"}, "geometry": geometry.to_dict()}
    net = Conv31(widths=(4, 4, 4))
    with torch.no_grad():  # logits spread over several units, like a trained model's
        net.classifier.weight.mul_(200.0)
    save_model(root / "model.pt", net, extra=extra)
    return root


def _pick(data: Path, out: str, *overrides: str) -> pd.DataFrame:
    from topaz_lightning.cli.pick import run

    cfg = compose_config(
        "pick",
        [
            f"model_path={data / 'model.pt'}",
            f"micrographs={data / 'mics'}",
            f"output_dir={data / out}",
            "progress=false",
            "device=cpu",
            "num_workers=0",
            *overrides,
        ],
    )
    return run(cfg).reset_index(drop=True)


def test_coarse_to_fine_and_dense_picks_above_the_threshold(data, monkeypatch):
    import topaz_lightning.picking.scoring as scoring

    dense = _pick(data, "dense")
    threshold = float(dense["score"].quantile(0.995))
    ref = dense[dense["score"] >= threshold].reset_index(drop=True)
    assert len(ref) >= 2
    calls = []
    original = scoring.coarse_to_fine_score_map

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args[2], result.fraction_scored))
        return result

    monkeypatch.setattr(scoring, "coarse_to_fine_score_map", spy)
    # the level follows the threshold; the command's picks are those of score_micrograph +
    # NMS on the same preprocessed micrographs (equality with dense above the level, and its
    # limit, are tested on smooth nets in test_scoring.py)
    got = _pick(data, "c2f", "scoring=coarse_to_fine", f"threshold={threshold!r}")
    assert len(calls) == len(NAMES) and all(level == threshold for level, _ in calls)
    assert min(fraction for _, fraction in calls) < 1  # tiles, not the dense fallback
    monkeypatch.setattr(scoring, "coarse_to_fine_score_map", original)
    from topaz_lightning.io.micrographs import read_micrograph
    from topaz_lightning.models import load_model
    from topaz_lightning.picking import picks_from_score_map, score_micrograph
    from topaz_lightning.preprocess import preprocess_images

    net, _ = load_model(data / "model.pt")
    raw = {n: read_micrograph(data / "mics" / f"{n}.mrc") for n in NAMES}
    images = preprocess_images(raw, downsample=1.0, normalize="gmm", seed=0)
    expected = pd.concat(
        [
            picks_from_score_map(
                n,
                score_micrograph(net, images[n], scoring="coarse_to_fine", threshold=threshold),
                5.0,
                threshold,
            )
            for n in NAMES
        ],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert len(got) >= 1 and (got["score"] >= threshold).all()
    # picks it finds are dense picks (a random net's sub-stride spikes can hide others)
    found = set(zip(got["x"], got["y"], strict=True)) & set(zip(ref["x"], ref["y"], strict=True))
    assert len(found) == len(got)
    # saved maps of a coarse_to_fine run have no -inf (unscored pixels filled)
    from topaz_lightning.io.micrographs import read_micrograph

    _pick(data, "c2f_maps", "scoring=coarse_to_fine", "save_score_maps=true")
    maps = sorted((data / "c2f_maps").rglob("*.mrc"))
    assert len(maps) == len(NAMES)
    assert all(np.isfinite(read_micrograph(p)).all() for p in maps)


def test_tta_changes_scores_and_bad_keys_are_refused(data):
    plain = _pick(data, "t1", "particles_per_micrograph=3")
    tta = _pick(data, "t8", "particles_per_micrograph=3", "tta=8")
    assert len(tta) == len(plain) and not np.allclose(tta["score"], plain["score"])
    for key, value in (("scoring", "sparse"), ("tta", "4"), ("scoring_level", "low")):
        with pytest.raises(ConfigError, match=key):
            _pick(data, f"bad_{key}", f"{key}={value}")


@pytest.mark.parametrize(
    "scoring, module, function",
    [("strided", "strided", "_coarse_map"), ("dense", "scoring", "dense_logits")],
)
def test_scoring_follows_the_memory_format_with_the_same_picks(
    data, monkeypatch, scoring, module, function
):
    import importlib

    target = importlib.import_module(f"topaz_lightning.picking.{module}")
    layouts = []
    original = getattr(target, function)

    def spy(net, *args, **kwargs):
        # the network that scores; a weight with several input channels (with one, both
        # layouts have the same strides)
        weight = next(p for p in net.parameters() if p.dim() == 4 and p.shape[1] > 1)
        layouts.append(not weight.is_contiguous())
        return original(net, *args, **kwargs)

    monkeypatch.setattr(target, function, spy)
    auto = _pick(data, f"{scoring}_auto", f"scoring={scoring}")
    plain = _pick(data, f"{scoring}_nchw", f"scoring={scoring}", "memory_format=contiguous")
    # auto is channels_last on the CPU, contiguous is not; one call per micrograph each
    assert layouts == [True] * len(NAMES) + [False] * len(NAMES)
    assert len(auto) == len(plain) > 0
    pd.testing.assert_frame_equal(auto.drop(columns="score"), plain.drop(columns="score"))
    np.testing.assert_allclose(auto["score"], plain["score"], rtol=1e-5, atol=1e-5)


def test_an_unknown_memory_format_is_refused_before_scoring(data):
    with pytest.raises(ConfigError, match="memory_format"):
        _pick(data, "layout_bad", "memory_format=nhwc")
    assert not (data / "layout_bad" / "picks.tsv").exists()
