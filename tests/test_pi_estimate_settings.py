"""data.pi=auto's settings and record: the training length key, the spread over the fits, the
metrics.json entries (topaz_lightning.pi_estimate)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from topaz_lightning.errors import ConfigError
from topaz_lightning.pi_estimate import AUTO_STEPS, PiEstimate, auto_steps

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_config_keeps_the_default_length(cfg_train):
    cfg = cfg_train()
    assert cfg.data.pi_auto_steps == AUTO_STEPS == 500
    assert auto_steps(cfg) == 500


@pytest.mark.parametrize("value, expected", [(None, AUTO_STEPS), (7, 7), (120.0, 120)])
def test_auto_steps_reads_data_pi_auto_steps(value, expected):
    assert auto_steps(OmegaConf.create({"data": {"pi_auto_steps": value}})) == expected
    assert auto_steps(OmegaConf.create({"data": {}})) == AUTO_STEPS


@pytest.mark.parametrize("value", [0, -5, 2.5, "many", True])
def test_auto_steps_refuses_a_bad_length_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"data\.pi_auto_steps"):
        auto_steps(OmegaConf.create({"data": {"pi_auto_steps": value}}))


def test_the_record_reports_every_fit_and_their_spread():
    est = PiEstimate(
        pi=0.02,
        pi_unlabeled=0.015,
        method="bbe",
        fold_pi=[0.018, 0.022],
        other={"elkan_noto": 0.09},
        steps=300,
        folds=2,
        seconds=12.5,
    )
    assert est.spread == pytest.approx(0.004)
    text = est.text()
    assert "0.018, 0.022" in text and "spread 0.004" in text and "20% of the estimate" in text
    assert "2 cross-fitted fits of 300 steps" in text
    metrics = est.metrics()
    assert metrics == pytest.approx(
        {
            "pi_auto/pi": 0.02,
            "pi_auto/pi_unlabeled": 0.015,
            "pi_auto/fit0_pi": 0.018,
            "pi_auto/fit1_pi": 0.022,
            "pi_auto/spread": 0.004,
            "pi_auto/elkan_noto_pi": 0.09,
            "pi_auto/steps": 300.0,
            "pi_auto/seconds": 12.5,
        }
    )
    # one fit: no spread, no seconds when not timed
    single = PiEstimate(pi=0.01, pi_unlabeled=0.01, method="bbe", fold_pi=[0.01])
    assert single.spread == 0.0 and "pi_auto/seconds" not in single.metrics()


@pytest.mark.slow
def test_data_pi_auto_steps_sets_the_fits_length_and_reaches_metrics_json(
    cfg_train, tmp_path, caplog
):
    """tzl-train data.pi=auto data.pi_auto_steps=2: two fits of 2 steps, logged with their
    values and spread, and the estimate in the run's metrics.json."""
    import json
    import logging

    from topaz_lightning.train import train

    cfg = cfg_train(
        [
            "data.simulated_preset=tiny",
            f"data.simulated_dir={tmp_path / 'tiny'}",
            "data.num_labeled=10",
            "data.pi=auto",
            "data.pi_auto_steps=2",
            "trainer.max_steps=2",
            "callbacks.best_checkpoint=null",
            "callbacks.held_out_picking=null",
        ],
    )
    with caplog.at_level(logging.INFO, logger="topaz_lightning"):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if "data.pi=auto" in r.getMessage()]
    assert lines and "2 cross-fitted fits of 2 steps" in lines[0] and "spread" in lines[0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["pi_auto/steps"] == 2
    fits = [metrics["pi_auto/fit0_pi"], metrics["pi_auto/fit1_pi"]]
    assert metrics["pi_auto/pi"] == pytest.approx(sum(fits) / 2)
    assert metrics["pi_auto/spread"] == pytest.approx(max(fits) - min(fits))
