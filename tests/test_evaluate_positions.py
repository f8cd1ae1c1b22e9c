"""tzl-evaluate warns about picks that cannot be on their micrograph (issue 18: a pick at x=300 on a
256 px image passed silently)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from tests.helpers import evaluate_config
from topaz_lightning.io.micrographs import write_micrograph

TRUTH = "image_name\tx_coord\ty_coord\n" + "".join(
    f"mic_{m}\t{x}\t{y}\n" for m in (1, 2) for x, y in ((20, 30), (100, 200), (240, 60))
)


def _run(tmp_path: Path, picks: list[tuple[str, float, float, float]], *extra: str) -> dict:
    from topaz_lightning.cli.evaluate import run

    rows = "".join(f"{m}\t{x}\t{y}\t{s}\n" for m, x, y, s in picks)
    (tmp_path / "p.tsv").write_text("image_name\tx_coord\ty_coord\tscore\n" + rows)
    (tmp_path / "t.tsv").write_text(TRUTH)
    cfg = evaluate_config(
        tmp_path / "p.tsv",
        tmp_path / "t.tsv",
        tmp_path / "e",
        "plot=null",
        "max_distance=5",
        "overwrite=true",
        *extra,
    )
    return run(cfg)


def _micrographs(tmp_path: Path) -> Path:
    for name in ("mic_1", "mic_2"):
        write_micrograph(tmp_path / "mics" / f"{name}.mrc", np.zeros((256, 256), np.float32))
    return tmp_path / "mics"


GOOD = [("mic_1", 20, 30, 3.0), ("mic_2", 100, 201, 2.0)]


def test_picks_outside_a_known_image_are_counted_and_warned(tmp_path, caplog):
    mics = _micrographs(tmp_path)
    picks = [*GOOD, ("mic_1", 300, 10, 1.0), ("mic_2", 10, 256, 0.5)]
    with caplog.at_level(logging.WARNING, logger="topaz_lightning"):
        result = _run(tmp_path, picks, f"micrographs={mics}")
    assert "2 of 4 picks lie outside their micrograph" in caplog.text
    assert "x=300 y=10 on a 256 x 256" in caplog.text
    assert result["n_picks_outside_image"] == 2
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["n_picks_outside_image"] == 2 and saved["n_matched"] == 2  # still evaluated


def test_sizes_also_come_from_overlay_micrographs(tmp_path, caplog):
    mics = _micrographs(tmp_path)
    with caplog.at_level(logging.WARNING, logger="topaz_lightning"):
        result = _run(
            tmp_path,
            [*GOOD, ("mic_2", 10, 400, 1.0)],
            f"overlay_micrographs={mics}",
            "overlay_max=0",
        )
    assert result["n_picks_outside_image"] == 1 and "1 of 3 picks" in caplog.text


def test_picks_inside_known_images_say_nothing(tmp_path, caplog):
    mics = _micrographs(tmp_path)
    with caplog.at_level(logging.WARNING, logger="topaz_lightning"):
        result = _run(tmp_path, [*GOOD, ("mic_1", 255.5, 255.5, 1.0)], f"micrographs={mics}")
    assert result["n_picks_outside_image"] == 0
    assert "outside" not in caplog.text and "beyond" not in caplog.text


def test_without_sizes_picks_far_beyond_the_truth_are_warned(tmp_path, caplog):
    """No micrograph files: the true particles' extent (x <= 240, y <= 200) is the yardstick."""
    with caplog.at_level(logging.WARNING, logger="topaz_lightning"):
        result = _run(tmp_path, [*GOOD, ("mic_1", 300, 10, 1.0), ("mic_2", 20, 900, 1.0)])
    assert "n_picks_outside_image" not in result
    assert "1 picks lie far beyond every true particle" in caplog.text
    assert "x=20 y=900" in caplog.text and "reach x=240, y=200" in caplog.text  # 300 < 2 * 240 + 5


def test_without_sizes_picks_in_downsampled_pixels_are_warned(tmp_path, caplog):
    picks = [("mic_1", x / 4, y / 4, float(i)) for i, (x, y) in enumerate(np.random.default_rng(0).uniform(0, 240, (12, 2)))]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="topaz_lightning"):
        _run(tmp_path, picks)
    assert "are the picks in downsampled pixels?" in caplog.text


def test_picks_in_a_format_without_scores_say_which_formats_have_them(tmp_path):
    import pytest

    from topaz_lightning.cli.evaluate import run
    from topaz_lightning.errors import InputError

    (tmp_path / "mic_1.box").write_text("10\t20\t20\t20\n")
    (tmp_path / "t.tsv").write_text(TRUTH)
    cfg = evaluate_config(
        tmp_path / "mic_1.box", tmp_path / "t.tsv", tmp_path / "e", "max_distance=5"
    )
    with pytest.raises(InputError, match=r"no score column \(box files store none; use tsv, star3.0, star3.1, csv\)"):  # fmt: skip
        run(cfg)


def test_sizes_also_come_from_a_simulated_dataset(tmp_path, caplog):
    mics = _micrographs(tmp_path)
    mics.rename(tmp_path / "micrographs")  # the simulator's layout: <dataset>/micrographs
    with caplog.at_level(logging.WARNING, logger="topaz_lightning"):
        result = _run(tmp_path, [*GOOD, ("mic_1", 300, 10, 1.0)], f"dataset={tmp_path}")
    assert result["n_picks_outside_image"] == 1 and "1 of 3 picks" in caplog.text
