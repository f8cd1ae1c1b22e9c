"""Stamp every run's output directory with its resolved config, version, time and command line."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import topaz_lightning


def save_run_config(
    cfg: DictConfig, output_dir: str | os.PathLike, name: str = "config.yaml"
) -> Path:
    """Write ``cfg`` (resolved) plus provenance to ``output_dir/name`` atomically; return the path.

    The file can be fed back to the same command (``--config-path``/``--config-name``) to
    reproduce the run: it holds every setting, including the seed. When the directory already
    holds stamps of an earlier invocation (a resumed run, a rerun that may yet be refused), they
    are kept, renamed ``<stem>.<their time>.yaml``, so no run's provenance is ever lost.
    """
    from topaz_lightning.utils.atomic import atomic_output

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    header = {
        "topaz_lightning_version": topaz_lightning.__version__,
        "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "python": platform.python_version(),
        "host": platform.node(),
    }
    text = "# " + "\n# ".join(f"{k}: {v}" for k, v in header.items()) + "\n"
    text += OmegaConf.to_yaml(OmegaConf.create(resolved))
    target = out / name
    meta = out / "run_info.yaml"
    for old in (target, meta):
        _keep_previous(old)
    with atomic_output(target) as tmp:
        tmp.write_text(text)
    with atomic_output(meta) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(header)))
    return target


def _keep_previous(path: Path) -> None:
    """Rename an existing ``path`` to ``<stem>.<its mtime>[.<n>]<suffix>`` beside it."""
    if not path.exists():
        return
    stamp = _dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}.{stamp}.{n}{path.suffix}")
        n += 1
    os.replace(path, candidate)
