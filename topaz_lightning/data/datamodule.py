"""PUDataModule: a data source -> resolved run geometry, positive-unlabeled labels and patch minibatches."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from topaz_lightning.data.labels import positive_masks
from topaz_lightning.data.preprocessing import check_val_normalize_fit, preprocess_for_training
from topaz_lightning.data.prior import resolve_pi
from topaz_lightning.data.sampler import PUBatchDataset, PUPatchSampler, StepDataLoader
from topaz_lightning.data.settings import (
    NORMALIZATIONS,
    check_data_settings,
    check_settings_against_data,
    choose_split,
    sample_labeled,
)
from topaz_lightning.data.summary import data_fingerprint, log_data_summary
from topaz_lightning.data.unlabeled import (
    check_unlabeled_setting,
    load_unlabeled_micrographs,
    mixture_unlabeled_prior,
)
from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.geometry import (
    RunGeometry,
    check_coordinate_scale,
    check_downsample,
    coordinates_to_model_frame,
    resolve_geometry,
)

if TYPE_CHECKING:
    from topaz_lightning.data.sources import DataSource

log = logging.getLogger(__name__)

# Lightning warns that __len__ of an IterableDataset may be wrong with several loader workers; the
# PU stream always runs in the main process (num_workers=0), where the length is exact.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")

__all__ = ["NORMALIZATIONS", "PUDataModule", "StepDataLoader"]

#: added to the seed of the validation sampler so its draws differ from training's
_VAL_SEED_OFFSET = 1_000_003


class PUDataModule(pl.LightningDataModule):
    """Training data for PU particle picking: a source, a split, labels, a sampler, a geometry.

    ``source`` (:mod:`topaz_lightning.data.sources`) reads micrographs and coordinates in the
    micrograph frame; ``FilesDataModule`` / ``SimulatedDataModule`` build it from plain keywords
    (``data=files`` / ``data=simulated``). Everything below is shared.

    Geometry, resolved once in :meth:`setup` into ``self.geometry`` (a frozen
    :class:`~topaz_lightning.geometry.RunGeometry` that the LightningModule, the held-out
    callback, ``model.pt`` and the logged hyperparameters read): ``downsample`` (Fourier crop
    factor; model frame = micrograph frame / downsample), ``pixel_size_a`` (null = the data's:
    MRC header or dataset.yaml), the particle size as ``particle_diameter_a`` (needs the pixel
    size) or ``particle_diameter_px`` (micrograph pixels), and the model-frame radii
    ``label_radius_px_model``, ``nms_radius_px_model``, ``match_distance_px_model`` (null = the
    dataset's suggestion, else the defaults from the particle radius r: 0.3 r, 1.25 r, r; see
    :func:`topaz_lightning.geometry.resolve_geometry`). Coordinates are checked for the scale trap
    (already divided by ``downsample``) and converted to the model frame once.

    Split by micrograph (first that applies): ``num_folds`` + ``fold`` (k-fold over the training
    pool, for cross-validating pi); ``val_list``; ``num_val_micrographs`` or ``val_fraction``
    (random, ``split_seed``); the source's default validation list; otherwise none
    (:func:`topaz_lightning.data.settings.choose_split`, where the settings' checks live too).

    Labels: ``num_labeled`` particles (None = all) are sampled with ``labeled_seed`` from the
    training micrographs' coordinates; pixels within the label radius of them are the labeled
    positive regions. The dataset prior is ``pi`` or is derived from ``particles_per_micrograph``
    (at most one; neither = the dataset's suggestion), see :mod:`topaz_lightning.data.prior`;
    ``geometry.pi_unlabeled`` is what the objective receives. ``unlabeled_micrographs``
    (:mod:`topaz_lightning.data.unlabeled`) adds micrographs that give only unlabeled patches;
    their regions count in ``num_regions`` and ``pi_unlabeled`` is the mixture prior.

    Preprocessing (in memory): downsampling and ``normalize`` (gmm/standardize/none); with gmm the
    one fit over training and validation micrographs is kept as ``normalize_fit`` for the model
    card, and ``val_normalize_fit=held_out`` gives the validation set its own fit, as tzl-pick.

    Batches: ``steps_per_epoch`` minibatches of ``batch_positive`` labeled positives then
    ``batch_unlabeled`` unlabeled patches of ``patch_size`` (None = the model's receptive field,
    which ``train()`` passes with :meth:`set_patch_size` after :meth:`setup`), rotated/mirrored, drawn on
    ``device`` ("cpu", "cuda", or "auto" = the trainer's device) with streams seeded by
    ``(seed, global rank, step)``.
    """

    def __init__(
        self,
        source: DataSource,
        train_list: str | os.PathLike | Sequence[str] | None = None,
        val_list: str | os.PathLike | Sequence[str] | None = None,
        num_val_micrographs: int | None = None,
        val_fraction: float | None = None,
        split_seed: int = 0,
        num_folds: int | None = None,
        fold: int = 0,
        num_labeled: int | None = None,
        labeled_seed: int = 0,
        pixel_size_a: float | None = None,
        particle_diameter_a: float | None = None,
        particle_diameter_px: float | None = None,
        label_radius_px_model: float | None = None,
        nms_radius_px_model: float | None = None,
        match_distance_px_model: float | None = None,
        pi: float | None = None,
        particles_per_micrograph: float | None = None,
        pi_auto_steps: int | None = None,
        batch_positive: int = 16,
        batch_unlabeled: int = 240,
        rotate: bool = True,
        mirror: bool = True,
        steps_per_epoch: int = 1000,
        patch_size: int | None = None,
        downsample: float = 1.0,
        normalize: str = "gmm",
        seed: int = 0,
        device: str = "cpu",
        val_batches: int = 4,
        unlabeled_micrographs: Any = None,
        val_normalize_fit: str = "held_out",
    ):
        super().__init__()
        self.source = source
        self.train_list = train_list
        self.val_list = val_list
        self.num_val_micrographs = num_val_micrographs
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.num_folds = num_folds
        self.fold = fold
        self.num_labeled = num_labeled
        self.labeled_seed = labeled_seed
        self.geometry_settings = dict(
            pixel_size_a=pixel_size_a,
            particle_diameter_a=particle_diameter_a,
            particle_diameter_px=particle_diameter_px,
            label_radius_px_model=label_radius_px_model,
            nms_radius_px_model=nms_radius_px_model,
            match_distance_px_model=match_distance_px_model,
        )
        self.pi_setting = pi
        self.particles_per_micrograph = particles_per_micrograph
        # data.pi=auto's minibatches per fit: read by pi_estimate.auto_steps, carried here only
        self.pi_auto_steps = pi_auto_steps
        self.batch_positive = batch_positive
        self.batch_unlabeled = batch_unlabeled
        self.rotate = rotate
        self.mirror = mirror
        self.steps_per_epoch = steps_per_epoch
        self.patch_size = patch_size
        self.downsample = check_downsample(downsample, "data.downsample")
        self.normalize = normalize
        self.val_normalize_fit = check_val_normalize_fit(val_normalize_fit)
        self.seed = seed
        self.device = device
        self.val_batches = val_batches
        check_unlabeled_setting(unlabeled_micrographs)
        self.unlabeled_setting = unlabeled_micrographs
        check_data_settings(
            pi=pi,
            particles_per_micrograph=particles_per_micrograph,
            val_list=val_list,
            num_val_micrographs=num_val_micrographs,
            val_fraction=val_fraction,
            num_folds=num_folds,
            num_labeled=num_labeled,
            batch_positive=batch_positive,
            batch_unlabeled=batch_unlabeled,
            steps_per_epoch=steps_per_epoch,
            patch_size=patch_size,
            normalize=normalize,
            geometry_settings=self.geometry_settings,
            downsample=self.downsample,
        )

        # filled by setup()
        self.geometry: RunGeometry | None = None
        self.train_micrographs: dict[str, np.ndarray] = {}
        self.val_micrographs: dict[str, np.ndarray] = {}
        #: label-free micrographs whose regions join the unlabeled draws (model frame)
        self.unlabeled_micrographs: dict[str, np.ndarray] = {}
        self.train_coordinates: pd.DataFrame | None = None
        self.val_coordinates: pd.DataFrame | None = None
        #: the GMM fitted on the training and validation micrographs (a GMMFit; normalize=gmm)
        self.normalize_fit: Any = None
        self._is_setup = False
        self._train_sampler: PUPatchSampler | None = None

    # read-only views of the resolved record (for code that asks the datamodule directly)
    @property
    def pi(self) -> float | None:
        """The dataset prior (``geometry.pi``)."""
        return None if self.geometry is None else self.geometry.pi

    @property
    def pi_unlabeled(self) -> float | None:
        """The prior of a positive among unlabeled draws (``geometry.pi_unlabeled``)."""
        return None if self.geometry is None else self.geometry.pi_unlabeled

    @property
    def num_labeled_particles(self) -> int | None:
        """Number of labeled particles used (``geometry.num_labeled_particles``)."""
        return None if self.geometry is None else self.geometry.num_labeled_particles

    # ------------------------------------------------------------------------------------------
    # Lightning hooks

    def prepare_data(self) -> None:
        """Let the source create its data if it is generated (one process)."""
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        """Read, check, split, preprocess and label the data; resolve the run's geometry and prior."""
        if self._is_setup:
            return
        loaded = self.source.load()
        shapes_px = {name: image.shape for name, image in loaded.micrographs.items()}
        check_coordinate_scale(loaded.coordinates, shapes_px, self.downsample, loaded.source)
        train_names, val_names = choose_split(
            sorted(loaded.micrographs),
            train_list=self.train_list,
            val_list=self.val_list,
            source_train_list=loaded.train_list,
            source_val_list=loaded.val_list,
            num_folds=self.num_folds,
            fold=self.fold,
            num_val_micrographs=self.num_val_micrographs,
            val_fraction=self.val_fraction,
            split_seed=self.split_seed,
        )
        # settings the data can contradict fail before the (slow) preprocessing of every micrograph
        check_settings_against_data(
            coordinates=loaded.coordinates,
            shapes_px=shapes_px,
            train_names=train_names,
            val_names=val_names,
            num_labeled=self.num_labeled,
            patch_size=self.patch_size,
            downsample=self.downsample,
        )
        extra = load_unlabeled_micrographs(
            self.unlabeled_setting,
            loaded.micrographs,
            train_names,
            val_names,
            self.geometry_settings["pixel_size_a"] or loaded.dataset.get("pixel_size_a"),
            self.patch_size,
            self.downsample,
        )
        used = {name: loaded.micrographs[name] for name in train_names + val_names}
        used.update({name: image for name, image in extra.items() if name not in used})
        used, fit = preprocess_for_training(
            used, self.downsample, self.normalize, self.seed, val_names, self.val_normalize_fit
        )
        if fit is not None:  # kept for the model card, so tzl-pick can reuse the training fit
            self.normalize_fit = fit
        geometry = resolve_geometry(
            downsample=self.downsample,
            normalize=self.normalize,
            dataset=loaded.dataset,
            **self.geometry_settings,
        )
        truth = coordinates_to_model_frame(loaded.coordinates, geometry.downsample)
        train_truth = truth[truth["micrograph"].isin(train_names)].reset_index(drop=True)
        self.val_coordinates = truth[truth["micrograph"].isin(val_names)].reset_index(drop=True)
        if len(train_truth) == 0:
            raise InputError(
                f"no particles on the {len(train_names)} training micrographs", loaded.source
            )
        self.train_coordinates = sample_labeled(train_truth, self.num_labeled, self.labeled_seed)
        self.train_micrographs = {n: used[n] for n in train_names}
        self.val_micrographs = {n: used[n] for n in val_names}
        self.unlabeled_micrographs = {n: used[n] for n in extra}
        shapes = {name: image.shape for name, image in self.train_micrographs.items()}
        masks = positive_masks(shapes, self.train_coordinates, geometry.label_radius_px_model)
        self._train_masks = masks
        num_regions = int(sum(img.size for img in self.train_micrographs.values()))
        num_extra = int(sum(img.size for img in self.unlabeled_micrographs.values()))
        num_labeled_regions = int(sum(int(m.sum()) for m in masks.values()))
        sampled = len(self.train_micrographs) + len(self.unlabeled_micrographs)
        pi, pi_source = resolve_pi(
            self.pi_setting,
            self.particles_per_micrograph,
            loaded.dataset,
            geometry.label_radius_px_model,
            geometry.downsample,
            (num_regions + num_extra) / sampled,
            loaded.dataset_source,
        )
        priors = mixture_unlabeled_prior(pi, num_labeled_regions, num_regions, num_extra)
        self.geometry = geometry.replace(
            pi=pi,
            pi_unlabeled=priors["mixture"],
            pi_source=pi_source,
            num_labeled_particles=len(self.train_coordinates),
            num_regions=num_regions + num_extra,
            num_labeled_positive_regions=num_labeled_regions,
        )
        log_data_summary(
            self.geometry, train_names, val_names, num_labeled_regions, num_regions, priors, extra
        )
        self._is_setup = True

    def train_dataloader(self) -> DataLoader:
        """An endless-style stream of ``steps_per_epoch`` PU minibatches per epoch (batch_size=None)."""
        self._require_setup()
        trainer = self._trainer_or_none()
        step_provider = None
        if trainer is not None:
            # the batch index a fresh iterator starts at; Lightning restores global_step on resume
            def step_provider() -> int:
                return int(trainer.global_step) * int(trainer.accumulate_grad_batches)

        dataset = PUBatchDataset(self.train_sampler(), self.steps_per_epoch, step_provider)
        return StepDataLoader(dataset, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader | list:
        """A few fixed region batches from the validation micrographs (labels = full truth).

        Labels: 1 for patches centred within the label radius of any true particle, 0 otherwise
        (drawn uniformly from the rest). Held-out picking AUPR is computed by a callback from
        ``val_micrographs`` / ``val_coordinates`` instead.
        """
        self._require_setup()
        if not self.val_micrographs or self.val_batches < 1 or len(self.val_coordinates) == 0:
            return []
        sampler = PUPatchSampler(
            list(self.val_micrographs.values()),
            list(self.positive_masks(self.val_micrographs, self.val_coordinates).values()),
            patch_size=self._patch_size(),
            n_positive=self.batch_positive,
            n_unlabeled=self.batch_unlabeled,
            rotate=False,
            mirror=False,
            seed=self.seed + _VAL_SEED_OFFSET,
            rank=0,
            device="cpu",
        )
        return DataLoader([sampler.batch(i) for i in range(self.val_batches)], batch_size=None)

    # ------------------------------------------------------------------------------------------
    # public helpers

    def set_patch_size(self, patch_size_px_model: int) -> None:
        """Fix the patch side (model pixels) when ``patch_size`` was left null (= the model's
        receptive field): ``train()`` calls it after :meth:`setup` with the classifier's
        ``receptive_field``. An explicit ``patch_size`` must agree."""
        size = int(patch_size_px_model)
        if size < 1 or size % 2 == 0:
            raise ConfigError("data.patch_size", f"must be a positive odd number, got {size}")
        if self.patch_size is not None and int(self.patch_size) != size:
            raise ConfigError(
                "data.patch_size",
                f"is {int(self.patch_size)} but the run uses {size}; leave it null for the "
                "model's receptive field",
            )
        if self._train_sampler is not None and self._train_sampler.patch_size != size:
            raise RuntimeError("set_patch_size() after the training sampler was built")
        self.patch_size = size

    def positive_masks(
        self, images: Mapping[str, np.ndarray], coordinates: pd.DataFrame
    ) -> dict[str, np.ndarray]:
        """Boolean positive-region mask per micrograph for the given particles (model frame, label radius)."""
        shapes = {name: image.shape for name, image in images.items()}
        return positive_masks(shapes, coordinates, self._label_radius())

    def data_fingerprint(self) -> str:
        """sha256 of what the model trained on: the training and validation micrographs as it saw
        them (names, shapes, model-frame pixels after preprocessing) and the labeled particles
        (model frame). Same data and settings, same fingerprint (the model card records it)."""
        self._require_setup()
        return data_fingerprint(
            self.train_micrographs,
            self.val_micrographs,
            self.unlabeled_micrographs,
            self.train_coordinates,
        )

    def train_sampler(self) -> PUPatchSampler:
        """The training patch sampler (built once, on the sampler device, for this process's rank)."""
        self._require_setup()
        if self._train_sampler is None:
            trainer = self._trainer_or_none()
            rank = int(trainer.global_rank) if trainer is not None else 0
            images = [*self.train_micrographs.values(), *self.unlabeled_micrographs.values()]
            masks = [self._train_masks[n] for n in self.train_micrographs] + [
                np.zeros(image.shape, dtype=bool) for image in self.unlabeled_micrographs.values()
            ]
            self._train_sampler = PUPatchSampler(
                images,
                masks,
                patch_size=self._patch_size(),
                n_positive=self.batch_positive,
                n_unlabeled=self.batch_unlabeled,
                rotate=self.rotate,
                mirror=self.mirror,
                seed=self.seed,
                rank=rank,
                device=self._sampler_device(),
            )
        return self._train_sampler

    # ------------------------------------------------------------------------------------------
    # internals

    def _require_setup(self) -> None:
        if not self._is_setup:
            self.setup("fit")

    def _trainer_or_none(self):
        try:
            return self.trainer
        except (AttributeError, RuntimeError):
            return None

    def _patch_size(self) -> int:
        if self.patch_size is None:
            raise ConfigError(
                "data.patch_size",
                "null means the model's receptive field, which train() passes with "
                "set_patch_size() after setup(); set data.patch_size (e.g. 31 for conv31) when "
                "using the DataModule on its own",
            )
        return int(self.patch_size)

    def _sampler_device(self) -> torch.device:
        if self.device != "auto":
            return torch.device(self.device)
        trainer = self._trainer_or_none()
        if trainer is not None:
            return torch.device(trainer.strategy.root_device)
        return torch.device("cpu")

    def _label_radius(self) -> float:
        self._require_setup()
        return self.geometry.label_radius_px_model
