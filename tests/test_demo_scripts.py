"""The demo scripts: no hand-converted distances, and demo-real runs end to end on the sample data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, sample_data

SCRIPTS = ("demo.sh", "demo_real.sh")


@pytest.mark.parametrize("script", SCRIPTS)
def test_demo_scripts_give_no_radius_or_distance(script):
    # the particle size (or the dataset) is the only length given; the run geometry derives the
    # label/NMS radii and the match distance, and model.pt carries them to pick and evaluate
    text = (REPO / "scripts" / script).read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for key in ("radius", "max_distance", "match_distance", "radius_px"):
        assert not re.search(rf"\b[\w.]*{key}[\w.]*=", code), (script, key)


@pytest.mark.slow
def test_demo_real_runs_on_the_sample_data(tmp_path):
    """make demo-real, shrunk to 2 training steps (about 3 minutes on 2 shared cores)."""
    env = dict(os.environ, DEMO_STEPS="2", BIN=str(Path(sys.executable).parent))
    sample_data("empiar10017_dev")  # the default EMPIAR10017_DIR of the script
    done = subprocess.run(
        ["bash", "scripts/demo_real.sh", str(tmp_path / "out")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = (tmp_path / "out").glob("run_*")
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert metrics  # evaluated against the annotation with model.pt's match distance
    assert "max_distance 54 px" in done.stdout + done.stderr
