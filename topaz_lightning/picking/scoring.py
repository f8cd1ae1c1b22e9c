"""Dense scoring of whole micrographs with a trained region classifier (eval mode, batched, GPU if asked)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from topaz_lightning.errors import ConfigError, InputError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available else CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA was requested but no GPU is available")
    return device


def _score_map_call(net: nn.Module, batch: torch.Tensor, tile_size: int | None) -> torch.Tensor:
    fn = net.score_map
    if tile_size is not None and "tile_size" in inspect.signature(fn).parameters:
        return fn(batch, tile_size=tile_size)
    return fn(batch)


def score_micrographs(
    net: nn.Module,
    images: Mapping[str, np.ndarray],
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    tile_size: int | None = 1024,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, score_map)`` (float32 logits, same shape as the image) for every micrograph.

    Micrographs of equal shape are scored ``batch_size`` at a time with ``net.score_map`` in eval
    mode without gradients; ``tile_size`` bounds memory on large micrographs when the model
    supports tiling (results are identical). The model's train/eval state is restored after.
    """
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
    device = resolve_device(device)
    was_training = net.training
    net.eval()
    try:
        names = list(images)
        i = 0
        while i < len(names):
            shape = np.shape(images[names[i]])
            group = [names[i]]
            while (
                len(group) < batch_size
                and i + len(group) < len(names)
                and np.shape(images[names[i + len(group)]]) == shape
            ):
                group.append(names[i + len(group)])
            i += len(group)
            batch = np.stack([np.asarray(images[n], dtype=np.float32) for n in group])[:, None]
            with torch.inference_mode():
                tensor = torch.from_numpy(batch).to(device)
                logits = _score_map_call(net, tensor, tile_size).float().cpu().numpy()
            yield from zip(group, logits, strict=True)
    finally:
        net.train(was_training)


def score_micrograph(
    net: nn.Module,
    image: np.ndarray,
    device: str | torch.device = "cpu",
    tile_size: int | None = 1024,
) -> np.ndarray:
    """Dense logits (H, W) float32 for one micrograph (H, W); see :func:`score_micrographs`."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(
            f"expected a 2-D micrograph (H, W), got shape {image.shape}", where="image"
        )
    ((_, score_map),) = list(score_micrographs(net, {"_": image}, device, 1, tile_size))
    return score_map
