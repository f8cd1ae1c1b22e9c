"""Lightning loggers as tzl-train builds them: Weights & Biases without the two warnings every run
printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger as _LightningWandbLogger

__all__ = ["WandbLogger"]


class WandbLogger(_LightningWandbLogger):
    """Lightning's :class:`~pytorch_lightning.loggers.WandbLogger`, minus two warnings that every
    run printed and no user could act on:

    - ``The anonymous setting has no effect and will be removed``: Lightning always hands
      ``anonymous=None`` to ``wandb.init``, and wandb (>= 0.19) warns whenever the key is
      passed; it is passed only when the caller asked for anonymous logging.
    - ``git root <save_dir> does not exist``: wandb looks for the git repository from its
      directory before creating it; the directory is created first, so wandb records the commit
      of the repository the run lives in, as intended.

    Every other argument and behaviour is Lightning's.
    """

    def __init__(self, *args: Any, anonymous: bool | None = None, **kwargs: Any):
        super().__init__(*args, anonymous=anonymous, **kwargs)
        if not anonymous:
            self._wandb_init.pop("anonymous", None)
        save_dir = self._wandb_init.get("dir")
        if save_dir:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
