"""Every command shown in README.md composes (fast) and runs as written on the sample data (slow)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, compose_config, sample_data

README = REPO / "README.md"

#: the tzl-* commands of README.md's bash blocks, in order (a README edit must edit this list:
#: the fast test compares them, so a new or changed command cannot go untested)
README_COMMANDS = [
    "tzl-simulate simulate=empiar10096_like seed=1 out_dir=data/e10096_like",
    "tzl-preprocess input=data/samples/empiar10017_dev/images output_dir=prep_bin4 downsample=4"
    " coordinates=data/samples/empiar10017_dev/coords",
    "tzl-convert input=data/samples/ucsf_mrc_sample/Ucsf_stack_1142_DW_autopick.star"
    " output=picks.tsv",
    "tzl-train experiment=quick_simulated",
    "tzl-train data=files data.micrographs=data/samples/empiar10017_dev/images"
    " data.coordinates=data/samples/empiar10017_dev/coords data.particle_diameter_px=108"
    " data.downsample=4 data.particles_per_micrograph=700 data.num_labeled=100"
    " data.num_val_micrographs=1 objective=nnpu model=resnet8 decoder=dcgan"
    " hydra.run.dir=outputs/train/empiar10017",
    "tzl-pick model_path=outputs/train/empiar10017/model.pt"
    " micrographs=data/samples/empiar10017_dev/images output_dir=picks output=picks.star",
    "tzl-evaluate picks=picks truth=data/samples/empiar10017_dev/coords"
    " micrographs=outputs/train/empiar10017/val_micrographs.txt"
    " model_path=outputs/train/empiar10017/model.pt output_dir=eval",
    "tzl-train --multirun hparams_search=pi_kfold",
    "tzl-preprocess input=data/samples/empiar10017_dev/images output_dir=prep_bin4 downsample=4",
    "tzl-preprocess input=data/samples/empiar10017_dev/images output_dir=prep_bin4 downsample=4",
    "tzl-preprocess input=data/samples/empiar10017_dev/images output_dir=prep_bin4 downsample=2"
    " overwrite=true",
]

#: the README's other commands and where they are tested instead
OTHER_COMMANDS = {
    "make demo": "the simulated demo: scripts/demo.sh (its tzl-* steps are the ones above)",
    "make test": "this suite",
    "make install": "every make target's first step",
}

#: short settings appended to a README command for the run test (the README command itself is
#: what runs; these only shrink it): by the command's position in README_COMMANDS
SHORT_SETTINGS = {
    0: [
        "simulate.num_micrographs=2",
        "simulate.num_test=1",
        "simulate.shape=[256,256]",
        "simulate.particles_per_micrograph=20",
        "contact_sheet=false",
    ],
    1: ["progress=false"],
    # the tiny preset's training micrographs hold 56 particles (quick_simulated asks for 100)
    3: [
        "data.simulated_preset=tiny",
        "data.num_labeled=40",
        "trainer.max_steps=3",
        "callbacks.progress_bar=null",
    ],
    4: ["trainer.max_steps=3", "callbacks.progress_bar=null", "data.val_batches=1"],
    5: ["progress=false"],
    7: [
        "data.simulated_preset=tiny",
        "trainer.max_steps=2",
        "callbacks.progress_bar=null",
        "data.num_folds=2",
        "data.pi=0.02",
        "data.fold=0,1",
    ],
    8: ["progress=false"],
    9: ["progress=false"],
    10: ["progress=false"],
}


def readme_commands(text: str) -> list[str]:
    """The commands of the README's ```bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(" ".join(tokens))
    return commands


def test_readme_command_list_is_current():
    found = readme_commands(README.read_text())
    tzl = [c for c in found if c.startswith("tzl-")]
    assert tzl == README_COMMANDS
    others = [c for c in found if not c.startswith("tzl-")]
    assert set(others) <= set(OTHER_COMMANDS), others


@pytest.mark.parametrize("index", range(len(README_COMMANDS)))
def test_readme_command_composes(index):
    """Hydra composes each README tzl-* command's config with its overrides, and the command's
    settings pass its checks (those that need no data)."""
    from topaz_lightning.cli.validate import validate

    tokens = shlex.split(README_COMMANDS[index])
    command = tokens[0].removeprefix("tzl-")
    overrides = [t for t in tokens[1:] if t not in ("--multirun", "-m")]
    # hydra.* keys are the launcher's (run directory); compose_config pins those itself
    app = [t for t in overrides if not t.startswith("hydra.")]
    cfg = compose_config(command, app)
    validate(command, cfg)
    assert cfg.task_name in (command, "quick_simulated", "pi_kfold")


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    """Run every README tzl-* command in order, in a fresh directory holding the repository's
    data/samples (as a fresh clone has them), with short settings appended."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "samples").symlink_to(REPO / "data" / "samples")
    sample_data("empiar10017_dev")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for index, line in enumerate(README_COMMANDS):
        tokens = shlex.split(line)
        argv = [str(bin_dir / tokens[0]), *tokens[1:], *SHORT_SETTINGS.get(index, [])]
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        assert "LeafSpec" not in done.stderr
    assert (tmp_path / "data" / "e10096_like" / "dataset.yaml").is_file()
    assert (tmp_path / "picks.tsv").is_file()
    assert (tmp_path / "outputs" / "train" / "empiar10017" / "model.pt").is_file()
    assert (tmp_path / "picks" / "picks.star").is_file()
    assert (tmp_path / "eval" / "metrics.json").is_file()
    assert (tmp_path / "prep_bin4" / "preprocess.yaml").is_file()
    assert any((tmp_path / "multirun").rglob("report.md"))
