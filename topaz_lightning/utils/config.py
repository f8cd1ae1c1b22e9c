"""Checks on a composed config shared by the entry points and the tasks below them."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from topaz_lightning.errors import ConfigError


def require(cfg: DictConfig, keys: tuple[str, ...], example: str) -> None:
    """Raise ``ConfigError`` for the first of ``keys`` that is missing (``???``), null or empty.

    ``example`` is a command-line example shown in the message (``is required (e.g. ...)``).
    """
    for key in keys:
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise ConfigError(key, f"is required (e.g. {example})")
