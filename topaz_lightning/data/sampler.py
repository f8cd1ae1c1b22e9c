"""Vectorized positive-unlabeled patch sampler: 16 labeled-positive + 240 unlabeled patches per minibatch.

How a minibatch is made (``PUPatchSampler.batch(step)``):

1. All training micrographs live in one zero-padded tensor stack on ``device`` (the GPU when
   training on one). Labeled positive regions (pixels within ``radius_px_model`` of a labeled particle,
   see :func:`topaz_lightning.data.labels.positive_mask`) are kept as a flat index table.
2. ``n_positive`` centres are drawn uniformly (with replacement) from all labeled positive regions;
   ``n_unlabeled`` centres uniformly from every region EXCEPT the labeled positive ones (uniform
   over all pixels of all micrographs, area-weighted across micrographs, by rejection of the
   labeled positives, which are a small fraction).
3. Each patch's window is read by one advanced-indexing gather from a strided window view of the
   stack (``as_strided`` to (micrograph, row, col, G, G); no per-patch loop). Regions near the border see zero padding, as in dense scoring.
4. With ``rotate``, a window slightly larger than ``w*sqrt(2)`` is gathered and rotated by a uniform
   random angle (and mirrored with probability 1/2 when ``mirror``) about its centre pixel with one
   batched ``affine_grid`` + bilinear ``grid_sample``, producing ``w x w`` patches; the centre pixel
   stays the centre, so labels are preserved. With ``mirror`` only, columns are flipped in the gather.

Randomness: the draws for a step come from a fresh ``torch.Generator`` seeded by
``numpy.random.SeedSequence([seed, rank, step])``. A batch is therefore a pure function of
(seed, rank, step): ranks under DDP draw different patches, and resuming at step k reproduces
exactly the batches of an uninterrupted run, without saving any sampler state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from topaz_lightning.data.labels import positive_mask


def rotation_window(patch_size: int) -> int:
    """Side of the window gathered before rotating so that a ``patch_size`` patch fits at any angle.

    The corners of a ``w x w`` patch lie ``(w-1)/2 * sqrt(2)`` pixels from its centre; bilinear
    interpolation needs one more pixel. The result is odd, like ``patch_size``.
    """
    half = math.ceil((patch_size - 1) / 2 * math.sqrt(2) + 1)
    return 2 * half + 1


def step_seed(seed: int, rank: int, step: int) -> int:
    """The generator seed for minibatch ``step`` on ``rank``: well mixed, independent of history."""
    state = np.random.SeedSequence([int(seed), int(rank), int(step)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class PUPatchSampler:
    """Draws PU minibatches ``(patches (B,1,w,w) float32, labels (B,) float32)``, positives first.

    ``micrographs``: 2-D arrays (any sizes). ``positive_masks``: matching boolean arrays marking
    the labeled positive regions. Labels are 1 for the ``n_positive`` labeled positives and 0 for
    the ``n_unlabeled`` unlabeled draws. See the module docstring for the sampling rules.
    """

    def __init__(
        self,
        micrographs: Sequence[np.ndarray | torch.Tensor],
        positive_masks: Sequence[np.ndarray | torch.Tensor],
        patch_size: int,
        n_positive: int = 16,
        n_unlabeled: int = 240,
        rotate: bool = True,
        mirror: bool = True,
        seed: int = 0,
        rank: int = 0,
        device: str | torch.device = "cpu",
    ):
        if len(micrographs) == 0:
            raise ValueError("PUPatchSampler needs at least one micrograph")
        if len(positive_masks) != len(micrographs):
            raise ValueError(
                f"got {len(micrographs)} micrographs but {len(positive_masks)} positive masks"
            )
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size must be a positive odd number, got {patch_size}")
        if n_positive < 0 or n_unlabeled < 0 or n_positive + n_unlabeled == 0:
            raise ValueError(
                f"need n_positive >= 0, n_unlabeled >= 0 and a non-empty batch, "
                f"got {n_positive} and {n_unlabeled}"
            )
        self.patch_size = int(patch_size)
        self.n_positive = int(n_positive)
        self.n_unlabeled = int(n_unlabeled)
        self.rotate = bool(rotate)
        self.mirror = bool(mirror)
        self.seed = int(seed)
        self.rank = int(rank)
        self.device = torch.device(device)

        shapes = []
        for i, (image, mask) in enumerate(zip(micrographs, positive_masks, strict=True)):
            if image.ndim != 2:
                raise ValueError(f"micrograph {i} must be 2-D, got shape {tuple(image.shape)}")
            if tuple(mask.shape) != tuple(image.shape):
                raise ValueError(
                    f"positive mask {i} has shape {tuple(mask.shape)}, "
                    f"micrograph has {tuple(image.shape)}"
                )
            shapes.append(tuple(int(s) for s in image.shape))
        self.shapes = shapes
        self.window = rotation_window(self.patch_size) if self.rotate else self.patch_size
        pad = self.window // 2
        height = max(s[0] for s in shapes)
        width = max(s[1] for s in shapes)
        stack = torch.zeros((len(shapes), height + 2 * pad, width + 2 * pad), dtype=torch.float32)
        masks = torch.zeros((len(shapes), height, width), dtype=torch.bool)
        for i, (image, mask) in enumerate(zip(micrographs, positive_masks, strict=True)):
            h, w = shapes[i]
            stack[i, pad : pad + h, pad : pad + w] = torch.as_tensor(np.asarray(image, np.float32))
            masks[i, :h, :w] = torch.as_tensor(np.asarray(mask, dtype=bool))
        stack = stack.to(self.device)
        # every window as a view (micrograph, row, col, G, G): one advanced index gathers a batch
        g = self.window
        self._windows = stack.as_strided(
            (len(shapes), height, width, g, g),
            (stack.stride(0), stack.stride(1), stack.stride(2), stack.stride(1), stack.stride(2)),
        )
        self._masks = masks.to(self.device)

        # labeled positive regions as (micrograph, row, col)
        m, y, x = torch.nonzero(masks, as_tuple=True)
        self._positives = torch.stack([m, y, x]).to(self.device)
        self.num_positive_regions = int(m.numel())
        areas = torch.tensor([h * w for h, w in shapes], dtype=torch.int64)
        self.num_regions = int(areas.sum())
        self.num_unlabeled_regions = self.num_regions - self.num_positive_regions
        self._region_start = torch.cat([torch.zeros(1, dtype=torch.int64), areas.cumsum(0)]).to(
            self.device
        )
        self._widths = torch.tensor([w for _, w in shapes], dtype=torch.int64, device=self.device)
        if self.n_positive > 0 and self.num_positive_regions == 0:
            raise ValueError("n_positive > 0 but there are no labeled positive regions")
        if self.n_unlabeled > 0 and self.num_unlabeled_regions == 0:
            raise ValueError("n_unlabeled > 0 but every region is a labeled positive")

        labels = torch.zeros(self.batch_size, dtype=torch.float32)
        labels[: self.n_positive] = 1.0
        self._labels = labels.to(self.device)

    @classmethod
    def from_coordinates(
        cls,
        micrographs: Sequence[np.ndarray | torch.Tensor],
        coordinates: Sequence[np.ndarray],
        radius_px_model: float,
        patch_size: int,
        **kwargs,
    ) -> PUPatchSampler:
        """Build from per-micrograph labeled particle coordinates ``(n_i, 2)`` as ``(x, y)`` and
        the label radius, all in model pixels."""
        masks = [
            positive_mask(tuple(image.shape), xy, radius_px_model)
            for image, xy in zip(micrographs, coordinates, strict=True)
        ]
        return cls(micrographs, masks, patch_size, **kwargs)

    @property
    def batch_size(self) -> int:
        """``n_positive + n_unlabeled`` (256 by default)."""
        return self.n_positive + self.n_unlabeled

    def generator(self, step: int) -> torch.Generator:
        """The generator for minibatch ``step`` (seeded from ``(seed, rank, step)``)."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(step_seed(self.seed, self.rank, step))
        return gen

    def draw_positive(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` labeled positive centres, uniform over all labeled positive regions: (3, n) m,y,x."""
        if n == 0:
            return torch.zeros((3, 0), dtype=torch.int64, device=self.device)
        pick = torch.randint(self.num_positive_regions, (n,), generator=gen, device=self.device)
        return self._positives[:, pick]

    def draw_unlabeled(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` unlabeled centres, uniform over all regions except labeled positives: (3, n) m,y,x."""
        if n == 0:
            return torch.zeros((3, 0), dtype=torch.int64, device=self.device)
        chosen = []
        have = 0
        keep_rate = self.num_unlabeled_regions / self.num_regions
        while have < n:
            # oversample so that one round almost always suffices; rejection keeps it exactly uniform
            need = n - have
            k = int(math.ceil(need / keep_rate * 1.1)) + 16
            flat = torch.randint(self.num_regions, (k,), generator=gen, device=self.device)
            m = torch.searchsorted(self._region_start, flat, right=True) - 1
            local = flat - self._region_start[m]
            width = self._widths[m]
            y = torch.div(local, width, rounding_mode="floor")
            x = local - y * width
            ok = ~self._masks[m, y, x]
            drawn = torch.stack([m, y, x])[:, ok][:, :need]
            chosen.append(drawn)
            have += drawn.shape[1]
        return torch.cat(chosen, dim=1)

    def gather(self, centres: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
        """Windows ``(B, window, window)`` centred on ``centres`` (3, B) in one indexed read.

        ``flip`` (bool, (B,)) mirrors the columns of the selected windows.
        """
        m, y, x = centres
        windows = self._windows[m, y, x]  # the window of centre (y, x) starts at padded (y, x)
        if flip is not None:
            windows = torch.where(flip[:, None, None], windows.flip(-1), windows)
        return windows

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Minibatch number ``step``: ``(patches (B,1,w,w) float32, labels (B,) float32)``."""
        gen = self.generator(step)
        centres = torch.cat(
            [self.draw_positive(self.n_positive, gen), self.draw_unlabeled(self.n_unlabeled, gen)],
            dim=1,
        )
        batch = centres.shape[1]
        if self.mirror:
            flip = torch.rand(batch, generator=gen, device=self.device) < 0.5
        else:
            flip = torch.zeros(batch, dtype=torch.bool, device=self.device)
        if not self.rotate:
            patches = self.gather(centres, flip if self.mirror else None)
            return patches[:, None], self._labels.clone()
        angle = torch.rand(batch, generator=gen, device=self.device) * (2 * math.pi)
        windows = self.gather(centres)[:, None]
        patches = rotate_patches(windows, angle, flip, self.patch_size)
        return patches, self._labels.clone()


def rotate_patches(
    windows: torch.Tensor, angle: torch.Tensor, flip: torch.Tensor, patch_size: int
) -> torch.Tensor:
    """Rotate (and mirror) windows ``(B,1,G,G)`` about their centre pixel, cropping to ``(B,1,w,w)``.

    Output pixel at offset ``d`` from the centre reads the input at ``R(angle) @ M(flip) @ d`` from
    the input's centre (bilinear). ``G`` and ``w`` must both be odd so both centres are pixels.
    """
    b, _, g, g2 = windows.shape
    if g != g2 or g % 2 == 0 or patch_size % 2 == 0 or patch_size > g:
        raise ValueError(f"windows must be odd squares >= patch_size, got {tuple(windows.shape)}")
    cos, sin = torch.cos(angle), torch.sin(angle)
    sign = 1.0 - 2.0 * flip.to(windows.dtype)
    scale = patch_size / g  # normalized output coords span w pixels; input coords span g
    linear = torch.stack(
        [
            torch.stack([scale * cos * sign, -scale * sin], dim=-1),
            torch.stack([scale * sin * sign, scale * cos], dim=-1),
        ],
        dim=-2,
    )  # (B, 2, 2)
    # the sampling grid of F.affine_grid (align_corners=False) without its slow CPU path:
    # output pixel centres in normalized coordinates, mapped by each sample's 2x2 matrix
    axis = (
        2 * torch.arange(patch_size, device=windows.device, dtype=windows.dtype) + 1
    ) / patch_size - 1
    base = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(-1, 2)
    grid = torch.einsum("pk,bjk->bpj", base, linear).contiguous()
    grid = grid.reshape(b, patch_size, patch_size, 2)  # contiguous: grid_sample is 2x faster
    return F.grid_sample(windows, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class PUBatchDataset(IterableDataset):
    """Iterable over ``steps_per_epoch`` minibatches of a :class:`PUPatchSampler` (use ``batch_size=None``).

    The global step of the first batch of each pass is ``step_provider()`` when given (the
    DataModule passes the trainer's count of batches already trained, which Lightning restores on
    resume); otherwise it continues from the previous pass (0, steps_per_epoch, 2*steps_per_epoch,
    ...) or from :meth:`set_start_step`.
    """

    def __init__(
        self,
        sampler: PUPatchSampler,
        steps_per_epoch: int,
        step_provider: Callable[[], int] | None = None,
    ):
        super().__init__()
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.sampler = sampler
        self.steps_per_epoch = int(steps_per_epoch)
        self.step_provider = step_provider
        self._next_step = 0

    def set_start_step(self, step: int) -> None:
        """Make the next pass start at global step ``step``."""
        self._next_step = int(step)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start = self._next_step if self.step_provider is None else int(self.step_provider())
        self._next_step = start + self.steps_per_epoch
        for step in range(start, start + self.steps_per_epoch):
            yield self.sampler.batch(step)


class StepDataLoader(DataLoader):
    """DataLoader over a :class:`PUBatchDataset` whose batches depend only on (seed, rank, step).

    It has nothing to save: on resume the dataset restarts at the trainer's restored step. The
    empty ``state_dict``/``load_state_dict`` tell Lightning that mid-epoch resume is exact.
    """

    def state_dict(self) -> dict[str, Any]:
        """Nothing to save (the stream position is the trainer's global step)."""
        return {"stateless_step_stream": True}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore (see :meth:`state_dict`)."""
