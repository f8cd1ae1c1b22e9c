"""tzl-pick and tzl-evaluate end to end on small synthetic micrographs with a known scorer."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import REPO, compose_config
from tests.helpers import (
    PixelLogitNet,
    admit_pixel_logit_net,
    blob_micrograph,
    evaluate_config,
    pick_config,
)
from topaz_lightning.errors import ConfigError, InputError, OutputExistsError

BLOBS = {
    "mic_a": [(20, 30, 3.0), (60, 25, 2.0), (45, 70, 1.5)],
    "mic_b": [(30, 40, 2.5), (75, 75, 1.0)],
}


@pytest.fixture(autouse=True)
def _allow_test_scorer(monkeypatch):
    """load_model builds only the package's own classes; admit the stand-in scorer in-process."""
    admit_pixel_logit_net(monkeypatch)


@pytest.fixture
def dataset(tmp_path) -> Path:
    from topaz_lightning.io.micrographs import write_micrograph

    mics = tmp_path / "micrographs"
    rows = []
    for k, (name, blobs) in enumerate(BLOBS.items()):
        write_micrograph(mics / f"{name}.mrc", blob_micrograph(blobs, seed=k))
        rows += [(name, x, y) for x, y, _ in blobs]
    truth = pd.DataFrame(rows, columns=["micrograph", "x", "y"])
    lines = ["image_name\tx_coord\ty_coord"] + [f"{n}\t{x}\t{y}" for n, x, y in rows]
    (tmp_path / "truth.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.txt").write_text("mic_a\n")
    truth.to_csv(tmp_path / "truth_frame.csv", index=False)
    return tmp_path


def _save_model(path: Path, downsample: float = 1.0) -> Path:
    from topaz_lightning.models import save_model

    extra = {"preprocess": {"downsample": downsample, "normalize": "none"}, "radius_px": 3}
    return save_model(path, PixelLogitNet(), extra=extra, overwrite=True)


def _pick(data: Path, *extra: str, model: Path | None = None, out: str = "picks"):
    from topaz_lightning.cli.pick import run

    model = model or _save_model(data / "model.pt")
    cfg = pick_config(model, data / "micrographs", data / out, "nms_radius_px_model=8", *extra)
    return run(cfg)


def _evaluate(data: Path, picks: Path, *extra: str, out: str = "eval"):
    from topaz_lightning.cli.evaluate import run

    return run(evaluate_config(picks, data / "truth.tsv", data / out, "max_distance=3", *extra))


def test_pick_then_evaluate_round_trip(dataset, capsys):
    picks = _pick(dataset, "threshold=0.5")
    assert sorted(picks["micrograph"].unique()) == ["mic_a", "mic_b"]
    assert len(picks) == 5  # one pick per blob above the threshold
    written = pd.read_csv(dataset / "picks" / "picks.tsv", sep="\t")
    assert len(written) == 5 and "score" in written.columns
    got = sorted(zip(picks["micrograph"], picks["x"], picks["y"], strict=True))
    want = sorted((n, float(x), float(y)) for n, b in BLOBS.items() for x, y, _ in b)
    assert got == want

    metrics = _evaluate(dataset, dataset / "picks" / "picks.tsv")
    assert metrics["aupr"] == 1.0 and metrics["n_matched"] == 5
    assert metrics["precision_at_recall"]["0.9"] == 1.0
    saved = json.loads((dataset / "eval" / "metrics.json").read_text())
    assert saved["aupr"] == 1.0 and len(saved["curve"]["recall"]) == 5
    assert "AUPR" in capsys.readouterr().out
    try:
        import topaz_lightning.plots  # noqa: F401
    except ImportError:
        return
    assert (dataset / "eval" / "pr_curve.png").stat().st_size > 0


def test_evaluate_restricts_to_listed_micrographs_and_compares_runs(dataset):
    _pick(dataset, "threshold=0.5")
    _pick(dataset, "particles_per_micrograph=1", out="picks_top1")
    metrics = _evaluate(
        dataset,
        dataset / "picks" / "picks.tsv",
        f"micrographs={dataset / 'test.txt'}",
        # the documented form (refused as an unknown key while the default was {})
        f"compare={{top1: {dataset / 'picks_top1' / 'picks.tsv'}}}",
    )
    assert metrics["n_true"] == 3 and metrics["n_micrographs"] == 1
    assert metrics["runs"]["top1"]["n_pred"] == 1


def test_thresholds_top_k_probability_and_target_recall(dataset):
    top2 = _pick(dataset, "particles_per_micrograph=2", out="top2")
    assert top2.groupby("micrograph").size().tolist() == [2, 2]
    prob = _pick(dataset, "score=probability", "threshold_probability=0.7", out="prob")
    assert ((prob["score"] > 0.7) & (prob["score"] < 1)).all()
    assert len(prob) == sum(amp > math.log(0.7 / 0.3) for b in BLOBS.values() for *_, amp in b)

    everything = _pick(dataset, out="all")  # no threshold: background maxima too
    assert len(everything) > 5
    _evaluate(dataset, dataset / "all" / "picks.tsv", out="eval_all")
    metrics = dataset / "eval_all" / "metrics.json"
    at_recall = _pick(dataset, "target_recall=0.6", f"recall_metrics={metrics}", out="recall")
    # recall 0.6 of 5 particles needs the 3 best-scoring picks
    assert len(at_recall) == 3
    with pytest.raises(ConfigError, match="only one"):
        _pick(dataset, "threshold=1", "threshold_probability=0.5", out="bad")


def test_downsampled_model_reports_original_pixels(dataset):
    model = _save_model(dataset / "model_bin2.pt", downsample=2.0)
    picks = _pick(dataset, "threshold=0.3", model=model)
    assert len(picks) == 5
    truth = pd.read_csv(dataset / "truth_frame.csv")
    for name, group in picks.groupby("micrograph"):
        t = truth[truth["micrograph"] == name][["x", "y"]].to_numpy()
        d = np.hypot(*(group[["x", "y"]].to_numpy()[:, None] - t[None]).transpose(2, 0, 1)).min(1)
        assert (d <= 2.0).all()  # one downsampled pixel is 2 original pixels


def test_score_maps_per_micrograph_outputs_and_overwrite(dataset):
    import mrcfile

    from topaz_lightning.io.coordinates import read_coordinates

    _pick(
        dataset,
        "threshold=0.5",
        "save_score_maps=true",
        "per_micrograph=true",
        "format=star",
        "output=picks_star",
    )
    files = sorted(p.name for p in (dataset / "picks" / "picks_star").iterdir())
    assert files == ["mic_a.star", "mic_b.star"]
    assert len(read_coordinates(dataset / "picks" / "picks_star")) == 5
    with mrcfile.open(dataset / "picks" / "score_maps" / "mic_a.mrc") as mrc:
        np.testing.assert_allclose(mrc.data, blob_micrograph(BLOBS["mic_a"], seed=0), rtol=1e-6)

    # a command with other pick-deciding settings is refused, naming the key that changed
    with pytest.raises(InputError, match="changed: save_score_maps"):
        _pick(dataset, "threshold=0.5")
    _pick(dataset, "threshold=0.5", "overwrite=true")
    assert (dataset / "picks" / "picks.tsv").is_file()
    # ... removing the old command's per-micrograph outputs (and only those)
    assert not (dataset / "picks" / "score_maps" / "mic_a.mrc").exists()
    assert not list((dataset / "picks" / "picks_star").glob("*.star"))
    # the same command again continues: nothing left to do, the same output
    before = (dataset / "picks" / "picks.tsv").read_bytes()
    _pick(dataset, "threshold=0.5")
    assert (dataset / "picks" / "picks.tsv").read_bytes() == before


def test_score_map_outputs_checked_only_for_what_is_written(dataset):
    score_dir = dataset / "picks" / "score_maps"
    score_dir.mkdir(parents=True)
    (score_dir / "mic_a.png").write_bytes(b"an earlier picture")
    _pick(dataset, "threshold=0.5", "save_score_maps=true")  # writes MRCs only
    assert (score_dir / "mic_a.png").read_bytes() == b"an earlier picture"
    # a fresh run whose score map exists is refused before any scoring
    other = dataset / "other" / "score_maps"
    other.mkdir(parents=True)
    (other / "mic_a.mrc").write_bytes(b"an earlier map")
    with pytest.raises(OutputExistsError, match="mic_a.mrc"):
        _pick(dataset, "threshold=0.5", "save_score_maps=true", out="other")
    assert not (dataset / "other" / "picks.tsv").exists()
    assert not (dataset / "other" / "picks_by_micrograph").exists()


def test_bad_inputs_are_reported(dataset):
    with pytest.raises(InputError, match="model file not found"):
        _pick(dataset, model=dataset / "missing.pt")
    with pytest.raises(ConfigError, match="radius"):
        from topaz_lightning.cli.pick import run

        run(
            compose_config(
                "pick",
                [f"model_path={_save_model(dataset / 'm.pt')}", "micrographs=x", "output_dir=y"],
            )
        )
    (dataset / "names.txt").write_text("mic_a\nnot_there\n")
    with pytest.raises(InputError, match="not_there"):
        _pick(dataset, f"subset={dataset / 'names.txt'}")
    # picks without scores cannot make a PR curve
    with pytest.raises(InputError, match="score"):
        _evaluate(dataset, dataset / "truth.tsv")


def test_command_line_exit_status_and_message(dataset):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "topaz_lightning.cli.pick",
            f"model_path={dataset / 'missing.pt'}",
            f"micrographs={dataset / 'micrographs'}",
            "nms_radius_px_model=5",
            f"output_dir={dataset / 'cli'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "missing.pt" in proc.stderr and "model file not found" in proc.stderr


def test_score_micrograph_with_conv31_matches_patches_tiles_and_batches():
    from topaz_lightning.models import Conv31
    from topaz_lightning.picking import pick_micrographs, score_micrograph, score_micrographs

    torch.manual_seed(0)
    net = Conv31(widths=(2, 3, 4))
    net.train()
    rng = np.random.default_rng(0)
    image = rng.normal(size=(40, 36)).astype(np.float32)
    whole = score_micrograph(net, image, tile_size=None)
    assert net.training  # the caller's mode is restored
    assert whole.shape == image.shape and whole.dtype == np.float32
    np.testing.assert_allclose(score_micrograph(net, image, tile_size=16), whole, atol=1e-5)
    # each pixel equals forward() on the zero-padded patch centred on it
    w = net.receptive_field
    padded = np.pad(image, w // 2)
    net.eval()
    with torch.no_grad():
        for y, x in [(0, 0), (39, 35), (20, 7), (5, 30)]:
            patch = torch.from_numpy(padded[y : y + w, x : x + w].copy())[None, None]
            assert float(net(patch)) == pytest.approx(float(whole[y, x]), abs=1e-5)
    images = {"a": image, "b": image[::-1].copy(), "c": image[:20]}
    batched = dict(score_micrographs(net, images, "cpu", batch_size=2))
    for name, img in images.items():
        np.testing.assert_allclose(batched[name], score_micrograph(net, img), atol=1e-5)

    picks = pick_micrographs(net, images, radius=6, max_picks=4, downsample=2.0)
    assert list(picks.columns) == ["micrograph", "x", "y", "score"]
    assert picks.groupby("micrograph").size().tolist() == [4, 4, 4]
    assert (picks["x"] % 2 == 0).all()  # model pixels scaled back by the factor 2
    assert pick_micrographs(net, {}, radius=6).empty


def test_score_map_pictures_and_overlays(dataset):
    pytest.importorskip("topaz_lightning.plots")
    _pick(dataset, "threshold=0.5", "plot_score_maps=true", "save_score_maps=true")
    assert (dataset / "picks" / "score_maps" / "mic_b.png").stat().st_size > 0
    _evaluate(
        dataset,
        dataset / "picks" / "picks.tsv",
        f"micrographs={dataset / 'test.txt'}",
        f"overlay_micrographs={dataset / 'micrographs'}",
        f"score_maps={dataset / 'picks' / 'score_maps'}",
    )
    pictures = sorted(p.name for p in (dataset / "eval").glob("*.png"))
    # only the evaluated micrograph
    assert pictures == ["overlay_mic_a.png", "pr_curve.png", "score_map_mic_a.png"]
    # the pick browser with the truth, for the evaluated micrograph only
    page = (dataset / "eval" / "picks.html").read_text(encoding="utf-8")
    assert "mic_a" in page and "mic_b" not in page
    # a model on 2x downsampled images: its score maps are half size; the picture still works
    model = _save_model(dataset / "model_bin2.pt", downsample=2.0)
    _pick(dataset, "save_score_maps=true", model=model, out="bin2")
    _evaluate(
        dataset,
        dataset / "bin2" / "picks.tsv",
        f"overlay_micrographs={dataset / 'micrographs'}",
        f"score_maps={dataset / 'bin2' / 'score_maps'}",
        out="eval_bin2",
    )
    assert (dataset / "eval_bin2" / "score_map_mic_b.png").stat().st_size > 0


def test_existing_overlay_or_bad_score_maps_setting_is_refused_before_metrics(dataset):
    _pick(dataset, "threshold=0.5", "save_score_maps=true")
    picks = dataset / "picks" / "picks.tsv"
    with pytest.raises(ConfigError, match="score_maps"):
        _evaluate(dataset, picks, f"score_maps={dataset / 'picks' / 'score_maps'}")
    assert not (dataset / "eval").exists()
    (dataset / "eval").mkdir()
    (dataset / "eval" / "score_map_mic_a.png").write_bytes(b"an earlier picture")
    with pytest.raises(OutputExistsError, match="score_map_mic_a.png"):
        _evaluate(
            dataset,
            picks,
            f"micrographs={dataset / 'test.txt'}",
            f"overlay_micrographs={dataset / 'micrographs'}",
            f"score_maps={dataset / 'picks' / 'score_maps'}",
        )
    assert sorted(p.name for p in (dataset / "eval").iterdir()) == ["score_map_mic_a.png"]


@pytest.mark.parametrize(
    ("key", "replacement"), [("radius=4", "nms_radius_px_model"), ("chunk_size=1", "stream")]
)
def test_removed_keys_are_refused_naming_the_replacement(dataset, key, replacement):
    with pytest.raises(ConfigError, match=replacement) as err:
        _pick(dataset, key, out="removed")
    assert key.split("=")[0] in str(err.value)
    assert not (dataset / "removed" / "picks_by_micrograph").exists()


def test_name_lists(dataset):
    from topaz_lightning.cli.pick import read_name_list

    assert read_name_list(dataset / "test.txt") == ["mic_a"]
    assert read_name_list(dataset / "micrographs") == ["mic_a", "mic_b"]
    assert read_name_list(str(dataset / "micrographs" / "*_b.mrc")) == ["mic_b"]
    assert read_name_list(["x/mic_a.mrc", "mic_b"]) == ["mic_a", "mic_b"]
    (dataset / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="empty"):
        read_name_list(dataset / "empty.txt")
    with pytest.raises(InputError, match="not found"):
        read_name_list(dataset / "nope.txt")


def test_per_micrograph_output_that_is_a_file_is_refused_before_scoring(dataset):
    (dataset / "picks").mkdir()
    (dataset / "picks" / "stars").write_text("not a directory")
    for overwrite in ("overwrite=false", "overwrite=true"):
        with pytest.raises(InputError, match="must be a directory"):
            _pick(
                dataset,
                "per_micrograph=true",
                "format=star",
                "output=stars",
                "save_score_maps=true",
                overwrite,
            )
    assert not (dataset / "picks" / "score_maps").exists()


def test_unreadable_recall_metrics_name_the_file(tmp_path):
    from topaz_lightning.cli.pick import threshold_from_metrics

    bad = tmp_path / "metrics.json"
    for content in (b"\xff\xfe{}", b"{not json"):
        bad.write_bytes(content)
        with pytest.raises(InputError, match="metrics.json: cannot read metrics JSON"):
            threshold_from_metrics(bad, 0.5)
