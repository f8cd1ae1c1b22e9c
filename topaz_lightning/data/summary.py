"""What a PUDataModule read, said once: the run's data log line and the training-data fingerprint."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from topaz_lightning.geometry import RunGeometry

log = logging.getLogger("topaz_lightning.data.datamodule")

__all__ = ["data_fingerprint", "log_data_summary"]


def log_data_summary(
    geometry: RunGeometry,
    train_names: Sequence[str],
    val_names: Sequence[str],
    num_labeled_regions: int,
    num_regions_labeled: int,
    priors: Mapping[str, float],
    unlabeled_names: Sequence[str] = (),
) -> None:
    """One info line for the data and the geometry; one more for unlabeled-only micrographs."""
    g = geometry
    if unlabeled_names:
        shown = list(unlabeled_names)
        log.info(
            "unlabeled micrographs: %d (%s), %.3g of the unlabeled draws; their prior %.4g, "
            "the labeled micrographs' unlabeled regions %.4g",
            len(shown),
            ", ".join(shown[:5]) + (" ..." if len(shown) > 5 else ""),
            priors["share_unlabeled_micrographs"],
            priors["unlabeled_micrographs"],
            priors["labeled_micrographs"],
        )
    log.info(
        "data: %d training / %d validation micrographs, %d labeled particles "
        "(%d labeled positive regions of %d), pi=%.4g (%s), pi_unlabeled=%.4g; downsample %g, "
        "label radius %g, NMS radius %s, match distance %s (model px)",
        len(train_names),
        len(val_names),
        g.num_labeled_particles,
        num_labeled_regions,
        num_regions_labeled,
        g.pi,
        g.pi_source,
        g.pi_unlabeled,
        g.downsample,
        g.label_radius_px_model,
        _fmt(g.nms_radius_px_model),
        _fmt(g.match_distance_px_model),
    )


def data_fingerprint(
    train: Mapping[str, np.ndarray],
    val: Mapping[str, np.ndarray],
    unlabeled: Mapping[str, np.ndarray],
    coordinates: pd.DataFrame,
) -> str:
    """sha256 of the micrographs as the model saw them (role, name, shape, model-frame pixels)
    and of the labeled particles (model frame). Unlabeled-only micrographs enter only when there
    are some, so a run without them keeps the fingerprint it had before they existed."""
    digest = hashlib.sha256()
    roles = [("train", train), ("val", val)] + ([("unlabeled", unlabeled)] if unlabeled else [])
    for role, images in roles:
        for name in sorted(images):
            image = np.ascontiguousarray(images[name], dtype=np.float32)
            digest.update(f"{role}\0{name}\0{image.shape}\0".encode())
            digest.update(image.tobytes())
    digest.update("\n".join(coordinates["micrograph"].astype(str)).encode())
    digest.update(np.ascontiguousarray(coordinates[["x", "y"]].to_numpy(np.float64)).tobytes())
    return digest.hexdigest()


def _fmt(value: float | None) -> str:
    return "unset" if value is None else f"{value:g}"
