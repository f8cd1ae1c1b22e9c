"""Picking as a Lightning predict loop: a micrograph dataset, score + NMS per step, an atomic per-micrograph writer.

- :class:`MicrographDataset` reads and preprocesses one micrograph per item inside the
  DataLoader, so the next one is prefetched while the current one is scored and memory stays
  flat in the number of micrographs. A file that cannot be read becomes an item with ``error``.
- :func:`pick_micrograph` is THE place where a preprocessed micrograph becomes picks: score
  map and non-maximum suppression (or, with ``scoring=strided``, picks at the network's stride
  refined on real pixels), band mask, threshold/top-k, coordinates to the micrograph frame.
- :class:`PickModule` is the LightningModule whose ``predict_step`` calls it for each item.
- :class:`PickWriter` (a ``BasePredictionWriter``) writes each micrograph's picks atomically as
  soon as it is done (``<picks_dir>/<name>.tsv``, full precision; score maps first, so an
  existing part means the micrograph is complete) or ``<name>.failed`` with the reason.
  The combined output is assembled from the parts at the end (:func:`read_parts`).

Under ``trainer=ddp`` Lightning's distributed sampler shards the dataset over the ranks
(unrepeated: no micrograph twice); each rank writes its own parts.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import nn
from torch.utils.data import DataLoader, Dataset

from topaz_lightning.errors import InputError
from topaz_lightning.geometry import coordinates_to_micrograph_frame
from topaz_lightning.picking.border import drop_masked_picks
from topaz_lightning.picking.pick import PICK_COLUMNS, picks_from_score_map
from topaz_lightning.picking.scoring import fill_unscored, resolve_device, score_micrograph
from topaz_lightning.picking.settings import PickSettings
from topaz_lightning.picking.strided import strided_picks
from topaz_lightning.utils.atomic import atomic_output

PART_SUFFIX = ".tsv"
FAILED_SUFFIX = ".failed"
_PART_HEADER = ["image_name", "x_coord", "y_coord", "score"]


# ------------------------------------------------------------------------------------------------
# one micrograph -> picks


@dataclass
class PickResult:
    """Picks of one micrograph (micrograph frame, logit scores) and, if kept, its score map."""

    name: str
    picks: pd.DataFrame | None = None
    score_map: np.ndarray | None = None
    error: str | None = None


def pick_micrograph(
    net: nn.Module,
    image: np.ndarray,
    settings: PickSettings,
    name: str = "",
    device: str | torch.device = "cpu",
) -> PickResult:
    """Score one preprocessed micrograph (model frame) with ``net`` and extract its picks.

    Returns DataFrame[micrograph, x, y, score] with x, y in the micrograph frame
    (:func:`topaz_lightning.geometry.coordinates_to_micrograph_frame`) and ``score`` the logit,
    best first.
    """
    scoring = settings.scoring
    if scoring == "strided" and not has_native_stride(net):
        scoring = "dense"  # a network that declares no stride is its own stride-1 (exact) case
    if scoring == "strided":
        picks, score_map = _strided(net, image, settings, name, device)
        if settings.keep_score_map:  # a score map asked for (to save, plot) is the dense map
            score_map = score_micrograph(
                net,
                image,
                device=device,
                tile_size=settings.tile_size,
                tta=settings.tta,
                memory_format=settings.memory_format,
            )
    else:
        score_map = score_micrograph(
            net,
            image,
            device=device,
            tile_size=settings.tile_size,
            scoring=scoring,
            tta=settings.tta,
            level=settings.scoring_level,
            threshold=settings.threshold,
            memory_format=settings.memory_format,
        )
        picks = picks_from_score_map(
            name,
            score_map,
            settings.nms_radius_px_model,
            threshold=settings.threshold,
            nms_boundary=settings.nms_boundary,
        )
    picks = drop_masked_picks(
        picks,
        image,
        bands=settings.border_bands,
        margin=settings.border_margin_px_model,
        band_padding=settings.border_padding_px_model,
    )
    if settings.max_picks is not None:
        # the top k AFTER the mask, so a micrograph with masked bands still gets k picks
        picks = picks.head(int(settings.max_picks)).reset_index(drop=True)
    picks = coordinates_to_micrograph_frame(picks, settings.downsample)
    if settings.keep_score_map and settings.scoring == "coarse_to_fine":
        score_map = fill_unscored(score_map)  # no -inf in saved maps and pictures
    return PickResult(name, picks, score_map if settings.keep_score_map else None)


def has_native_stride(net: nn.Module) -> bool:
    """True for networks that can be run at their native stride (``PatchClassifier``: ``trunk``
    and ``phase_strides``); ``scoring=strided`` scores any other network densely."""
    return getattr(net, "phase_strides", None) is not None and hasattr(net, "trunk")


def exact_top(settings: PickSettings, shape: tuple[int, int]) -> int | None:
    """How many picks of a micrograph of ``shape`` (model px) get exact windows (None: all)."""
    density = settings.refine_exact_per_px_model
    return None if density is None else math.ceil(density * shape[0] * shape[1] - 1e-9)


def _strided(
    net: nn.Module, image: np.ndarray, settings: PickSettings, name: str, device
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """scoring=strided (:mod:`topaz_lightning.picking.strided`): picks (model frame) and, when
    kept, a picture of the scores."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(
            f"expected a 2-D micrograph (H, W), got shape {image.shape}", where=name or "image"
        )
    device = resolve_device(device)
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
            result = strided_picks(
                net,
                tensor,
                settings.nms_radius_px_model,
                settings.threshold,
                boundary=settings.nms_boundary,
                refine=settings.refine,
                tta=settings.tta,
                keep_score_map=settings.keep_score_map,
                exact_top=exact_top(settings, tensor.shape),
                memory_format=settings.memory_format,
            )
    finally:
        net.train(was_training)
    picks = pd.DataFrame(
        {
            "micrograph": np.full(len(result.scores), name, dtype=object),
            "x": result.xy[:, 0],
            "y": result.xy[:, 1],
            "score": result.scores,
        },
        columns=PICK_COLUMNS,
    )
    return picks, result.score_map


# ------------------------------------------------------------------------------------------------
# the dataset


@dataclass
class MicrographItem:
    """One dataset item: the micrograph's name and its transformed value, or the read error."""

    name: str
    value: Any = None
    error: str | None = None


class MicrographDataset(Dataset):
    """``(name, path)`` pairs -> ``MicrographItem(name, transform(name, path))``.

    A bad file (InputError, OSError) gives an item with ``error`` set instead of raising, so the
    other micrographs go on (the writer reports it); anything else is a bug and raises.
    """

    def __init__(self, sources: Mapping[str, Path], transform: Callable[[str, Path], Any]):
        self.items = [(str(n), Path(p)) for n, p in sources.items()]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> MicrographItem:
        name, path = self.items[index]
        try:
            return MicrographItem(name, self.transform(name, path))
        except (InputError, OSError) as err:
            return MicrographItem(name, error=str(err))


class Preprocess:
    """Dataset transform for picking: read, Fourier-crop downsample, normalize (picklable).

    ``prepared``: micrographs already read and downsampled (the GMM fit's first pass,
    :attr:`topaz_lightning.picking.normalization.PickNormalization.prepared`), by name; each is
    used once instead of reading the file again, then dropped.
    """

    def __init__(
        self,
        downsample: float,
        normalization: Callable[[str, np.ndarray], np.ndarray],
        prepared: Mapping[str, np.ndarray] | None = None,
    ):
        self.downsample = float(downsample)
        self.normalization = normalization
        self.prepared = dict(prepared or {})

    def __call__(self, name: str, path: Path) -> np.ndarray:
        image = self.prepared.pop(name, None)
        if image is None:
            from topaz_lightning.io.micrographs import read_micrograph
            from topaz_lightning.preprocess import downsample

            image = downsample(read_micrograph(path), self.downsample)
        return self.normalization(name, image)


def _as_list(items: list) -> list:
    return list(items)


def _die_with_parent(parent_pid: int, worker_id: int = 0) -> None:
    """DataLoader worker init: get SIGKILL when the picking process dies (Linux), so a killed
    run leaves no orphan; a worker blocked on a full result pipe would otherwise live on."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl: the watchdog of torch's workers remains
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)


def micrograph_loader(dataset: Dataset, batch_size: int = 1, num_workers: int = 0) -> DataLoader:
    """In order, ``batch_size`` items per batch as a list (micrographs may differ in shape)."""
    return DataLoader(
        dataset,
        batch_size=int(batch_size),
        shuffle=False,
        num_workers=int(num_workers),
        collate_fn=_as_list,
        # workers of a killed run must not linger (nor write: they only read)
        worker_init_fn=functools.partial(_die_with_parent, os.getpid()) if num_workers else None,
        persistent_workers=False,
    )


# ------------------------------------------------------------------------------------------------
# the LightningModule


class PickModule(pl.LightningModule):
    """``predict_step`` = :func:`pick_micrograph` for every item of the batch (a list)."""

    def __init__(self, net: nn.Module, settings: PickSettings, strict: bool = False):
        super().__init__()
        self.net = net
        self.settings = settings
        #: a bad micrograph stops the run (instead of being reported by the writer)
        self.strict = bool(strict)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # numpy images: scoring moves them (tile by tile) to the module's device itself
        return batch

    def predict_step(self, batch: Sequence[MicrographItem], batch_idx: int = 0) -> list:
        results = []
        for item in batch:
            if item.error is not None:
                if self.strict:
                    raise InputError(item.error)
                results.append(PickResult(item.name, error=item.error))
                continue
            result = pick_micrograph(self.net, item.value, self.settings, item.name, self.device)
            results.append(result)
        return results


# ------------------------------------------------------------------------------------------------
# per-micrograph parts and the writer


def part_path(picks_dir: Path, name: str) -> Path:
    """``<picks_dir>/<name>.tsv``: one micrograph's finished picks."""
    return Path(picks_dir) / f"{name}{PART_SUFFIX}"


def failed_path(picks_dir: Path, name: str) -> Path:
    """``<picks_dir>/<name>.failed``: why the micrograph failed (retried by the next run)."""
    return Path(picks_dir) / f"{name}{FAILED_SUFFIX}"


def write_part(picks_dir: Path, name: str, picks: pd.DataFrame) -> Path:
    """One micrograph's picks as TSV at full float precision, atomically (replacing)."""
    path = part_path(picks_dir, name)
    lines = ["\t".join(_PART_HEADER)]
    # repr floats: reading the part back gives the very numbers written
    for x, y, score in zip(
        picks["x"].to_numpy(np.float64).tolist(),
        picks["y"].to_numpy(np.float64).tolist(),
        picks["score"].to_numpy(np.float64).tolist(),
        strict=True,
    ):
        lines.append(f"{name}\t{x!r}\t{y!r}\t{score!r}")
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    failed = failed_path(picks_dir, name)
    if failed.exists():
        failed.unlink()
    return path


def write_failure(picks_dir: Path, name: str, reason: str) -> Path:
    path = failed_path(picks_dir, name)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(" ".join(reason.split()) + "\n", encoding="utf-8")
    return path


def read_part(picks_dir: Path, name: str) -> pd.DataFrame:
    """A part written by :func:`write_part` as DataFrame[micrograph, x, y, score]."""
    path = part_path(picks_dir, name)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or lines[0].split("\t") != _PART_HEADER:
            raise ValueError(f"header {lines[:1]}")
        rows = [line.split("\t") for line in lines[1:] if line]
        values = np.array([[float(v) for v in row[1:4]] for row in rows], dtype=np.float64)
        if any(row[0] != name for row in rows) or values.size and values.shape[1] != 3:
            raise ValueError("rows of another micrograph or missing columns")
    except (OSError, UnicodeDecodeError, ValueError, IndexError) as err:
        raise InputError(
            f"damaged per-micrograph picks file ({err}); rerun with overwrite=true", path
        ) from err
    values = values.reshape(-1, 3)
    return pd.DataFrame(
        {
            "micrograph": np.full(len(values), name, dtype=object),
            "x": values[:, 0],
            "y": values[:, 1],
            "score": values[:, 2],
        },
        columns=PICK_COLUMNS,
    )


def read_parts(picks_dir: Path, names: Sequence[str]) -> pd.DataFrame:
    """The combined picks of ``names`` (in that order) from their parts."""
    frames = [read_part(picks_dir, n) for n in names]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return empty_picks()
    return pd.concat(frames, ignore_index=True)


def empty_picks() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in PICK_COLUMNS}).astype(
        {"micrograph": object, "x": float, "y": float, "score": float}
    )


class PickWriter(BasePredictionWriter):
    """Writes every micrograph's outputs as soon as its predict step is done.

    Order per micrograph: score map MRC and/or PNG (if asked), then the part (atomic rename):
    a part on disk means everything of that micrograph is complete. Failures go to
    ``<name>.failed`` (removed when a later run succeeds).
    """

    def __init__(
        self,
        picks_dir: str | os.PathLike,
        score_map_dir: str | os.PathLike | None = None,
        save_score_maps: bool = False,
        plot_score_maps: bool = False,
    ):
        super().__init__(write_interval="batch")
        self.picks_dir = Path(picks_dir)
        self.score_map_dir = None if score_map_dir is None else Path(score_map_dir)
        self.save_score_maps = bool(save_score_maps)
        self.plot_score_map = None
        if plot_score_maps:
            from topaz_lightning.plots import plot_score_map

            self.plot_score_map = plot_score_map

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        images = {item.name: item.value for item in batch}
        for result in prediction:
            if result.error is not None:
                write_failure(self.picks_dir, result.name, result.error)
                continue
            self.write_result(result, images.get(result.name))

    def write_result(self, result: PickResult, image: np.ndarray | None = None) -> None:
        """Write one micrograph's score map (if kept and asked) and then its part."""
        from topaz_lightning.io.micrographs import write_micrograph

        if result.score_map is not None and self.score_map_dir is not None:
            if self.save_score_maps:
                path = self.score_map_dir / f"{result.name}.mrc"
                write_micrograph(path, result.score_map, overwrite=True)
            if self.plot_score_map is not None and image is not None:
                path = self.score_map_dir / f"{result.name}.png"
                self.plot_score_map(image, result.score_map, path, overwrite=True)
        write_part(self.picks_dir, result.name, result.picks)
