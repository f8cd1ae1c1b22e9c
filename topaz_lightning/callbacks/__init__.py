"""Lightning callbacks: held-out picking with AUPR logging (and pictures) during training."""

from topaz_lightning.callbacks.validation import HeldOutPicking

__all__ = ["HeldOutPicking"]
