"""Third-party notices are silenced by targeted filters only (utils.quiet), for every command."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from topaz_lightning.utils.quiet import TIP_PREFIX, quiet_third_party

REPO = Path(__file__).resolve().parents[1]


def test_leafspec_warning_filtered_other_warnings_kept():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)"
            " and treespec.is_leaf()` instead.",
            FutureWarning,
            stacklevel=1,
        )
        # the same words under another category, and any other FutureWarning, still show
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", UserWarning, stacklevel=1)
        warnings.warn("`foo` is deprecated, use `bar`", FutureWarning, stacklevel=1)
        warnings.warn("a real problem with the data", UserWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not any("LeafSpec" in str(w.message) and w.category is FutureWarning for w in caught)
    assert len(caught) == 3, messages


def test_lightning_tips_dropped_other_messages_kept(caplog):
    quiet_third_party()
    quiet_third_party()  # idempotent: one filter per logger
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    assert len(logger.filters) == len(set(map(id, logger.filters)))
    with caplog.at_level(logging.INFO, logger="pytorch_lightning.utilities.rank_zero"):
        logger.info(f"{TIP_PREFIX} For seamless cloud logging, try installing [litlogger]")
        logger.info("GPU available: False, used: False")
        logger.info("GPU available: True (cuda), used: False")
        logger.warning("a real Lightning warning")
    texts = [r.getMessage() for r in caplog.records]
    # absent hardware says nothing; a GPU present but unused is worth a line
    assert texts == ["GPU available: True (cuda), used: False", "a real Lightning warning"]


def test_pick_has_no_leafspec_filter_of_its_own():
    # the one place is utils/quiet.py (applied by cli._hydra.entry_point to every command)
    for path in (REPO / "topaz_lightning").rglob("*.py"):
        if path.name == "quiet.py":
            continue
        for line in path.read_text().splitlines():
            if "filterwarnings" in line or "addFilter" in line:
                assert "LeafSpec" not in line and "Tip" not in line, f"{path}: {line.strip()}"
    assert "quiet_third_party()" in (REPO / "topaz_lightning/cli/_hydra.py").read_text()


@pytest.mark.slow
def test_short_train_run_prints_no_third_party_notices(tmp_path):
    exe = Path(sys.executable).with_name("tzl-train")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    proc = subprocess.run(
        [
            str(exe),
            "data.simulated_preset=tiny",
            f"data.simulated_dir={tmp_path / 'tiny'}",
            "trainer.max_steps=2",
            "callbacks.progress_bar=null",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "LeafSpec" not in out
    assert "litlogger" not in out and "💡" not in out
    # Lightning's own informative lines are still there (only the tips are filtered)
    assert "max_steps=2" in out
