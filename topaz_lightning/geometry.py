"""Pixel frames of a run: the micrograph frame, the model frame, the disk footprint and the resolved RunGeometry.

Two frames, defined once here and nowhere else:

- the **micrograph frame**: pixels of the micrographs as the user gives them (full size, what
  other programs and coordinate files use). Names: ``*_px``, and ``*_a`` for Angstrom.
- the **model frame**: pixels after Fourier-crop downsampling by the run's factor ``downsample``
  (what the classifier, the sampler, NMS and the held-out callback see). Names: ``*_px_model``.

``value_px_model = value_px / downsample``. Coordinates enter the package in the micrograph frame,
are converted to the model frame once (:func:`coordinates_to_model_frame`) and leave it in the
micrograph frame (:func:`coordinates_to_micrograph_frame`). Every other module calls these.

The disk footprint (:func:`disk_offsets`) is the one definition of "pixels within a radius": the
pixels ``(dy, dx)`` with ``dy**2 + dx**2 <= r**2`` (boundary included). A strict disk
(``< r``, e.g. NMS's suppression zone, so picks exactly ``r`` apart are both kept) is the same
function with ``include_boundary=False``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from topaz_lightning.errors import ConfigError, InputError, check_number

# Defaults in units of the particle radius r (model frame). The paper suppresses and matches
# within about a particle radius (EMPIAR-10096: radius ~7 px, match 7 px, NMS 10 px) and labels
# regions within 4 px of a labeled centre (~0.3 of a 13.5 px EMPIAR-10017 radius at 4x). NMS at
# 1.25 r (16.9 px at r = 13.5 px) measured best on the real EMPIAR-10017 folds (docs/accuracy.md:
# above 1.0 r at 10/100/all labels, 1.5 r worse again); non-overlapping particles are >= 2 r
# apart, so 1.25 r never suppresses a true neighbour that does not overlap. Matching stays at r.
LABEL_RADIUS_PER_PARTICLE_RADIUS = 0.3
NMS_RADIUS_PER_PARTICLE_RADIUS = 1.25
MATCH_DISTANCE_PER_PARTICLE_RADIUS = 1.0
#: label radius (model px) when neither it nor a particle size is known (the paper's 3-4 px)
DEFAULT_LABEL_RADIUS_PX_MODEL = 3.0
#: coordinates larger than this are refused as absurd (no detector is 10^6 pixels wide)
MAX_COORDINATE_PX = 1.0e6


# ------------------------------------------------------------------------------------------------
# the disk footprint


def disk_offsets(radius_px: float, include_boundary: bool = True) -> np.ndarray:
    """Integer offsets ``(dy, dx)`` of the pixels within ``radius_px`` of a pixel, shape ``(k, 2)``.

    ``include_boundary=True``: ``dy**2 + dx**2 <= r**2`` (1 pixel at r=0, 5 at r=1, 13 at r=2,
    29 at r=3, 49 at r=4). ``include_boundary=False``: ``< r`` (empty at r=0, 1 at r=1, 29 at
    r=3.5). Rows are ordered by ``dy`` then ``dx``.
    """
    radius_px = float(radius_px)
    if not (radius_px >= 0 and math.isfinite(radius_px)):
        raise ValueError(f"radius_px must be a finite number >= 0, got {radius_px}")
    r = int(math.floor(radius_px))
    d = np.arange(-r, r + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    dist2 = dy**2 + dx**2
    inside = dist2 <= radius_px**2 if include_boundary else dist2 < radius_px**2
    return np.stack([dy[inside], dx[inside]], axis=1).astype(np.int64)


def disk_area(radius_px: float, include_boundary: bool = True) -> int:
    """Number of pixels of :func:`disk_offsets` (29 at r=3 with the boundary)."""
    return int(len(disk_offsets(radius_px, include_boundary)))


# ------------------------------------------------------------------------------------------------
# frames


def check_downsample(value: Any, key: str = "data.downsample") -> float:
    """The one check of a downsampling factor: a finite number >= 1 (ConfigError naming ``key``)."""
    return float(check_number(key, value, 1))


def to_model_px(value_px: float, downsample: float) -> float:
    """A length in micrograph-frame pixels -> model-frame pixels."""
    return float(value_px) / check_downsample(downsample, "downsample")


def to_micrograph_px(value_px_model: float, downsample: float) -> float:
    """A length in model-frame pixels -> micrograph-frame pixels."""
    return float(value_px_model) * check_downsample(downsample, "downsample")


def _rescale_xy(table: pd.DataFrame, factor: float) -> pd.DataFrame:
    out = table.copy()
    if factor != 1.0:
        out["x"] = out["x"].astype(np.float64) * factor
        out["y"] = out["y"].astype(np.float64) * factor
    return out


def coordinates_to_model_frame(table: pd.DataFrame, downsample: float) -> pd.DataFrame:
    """A copy of a coordinate table (columns micrograph, x, y, ...) with x, y in model pixels."""
    return _rescale_xy(table, 1.0 / check_downsample(downsample, "downsample"))


def coordinates_to_micrograph_frame(table: pd.DataFrame, downsample: float) -> pd.DataFrame:
    """A copy of a coordinate table with x, y (model pixels) in micrograph pixels."""
    return _rescale_xy(table, check_downsample(downsample, "downsample"))


def rescale_coordinates(table: pd.DataFrame, factor: float) -> pd.DataFrame:
    """A copy with x, y multiplied by ``factor`` (> 0), for conversions between two users' frames
    (e.g. ``tzl-convert scale=``); frame changes inside a run use the two functions above."""
    factor = float(factor)
    if not (factor > 0 and math.isfinite(factor)):
        raise ConfigError("scale", f"must be a finite number > 0, got {factor}")
    return _rescale_xy(table, factor)


def check_coordinate_scale(
    coordinates: pd.DataFrame,
    shapes_px: Mapping[str, tuple[int, int]],
    downsample: float,
    source: str | None = None,
) -> None:
    """Stop on the silent scale trap: every coordinate within 1/``downsample`` of its micrograph.

    ``coordinates`` and ``shapes_px`` are in the micrograph frame. When ``downsample`` > 1.5 and
    at least 20 particles all lie in the top-left ``1/downsample`` of their micrographs, the
    coordinates were almost surely given in the model frame (already divided): an InputError
    names the likely factor. (The opposite mistake puts coordinates outside the image, which
    the coordinate validation already refuses.)
    """
    factor = check_downsample(downsample, "downsample")
    if factor <= 1.5 or len(coordinates) < 20:
        return
    names = coordinates["micrograph"].astype(str).to_numpy()
    shapes = np.array([shapes_px.get(n, (np.inf, np.inf)) for n in names], dtype=np.float64)
    x = coordinates["x"].to_numpy(np.float64)
    y = coordinates["y"].to_numpy(np.float64)
    ok = np.isfinite(shapes).all(axis=1)
    if not ok.any():
        return
    fx = x[ok] / shapes[ok, 1]
    fy = y[ok] / shapes[ok, 0]
    extent = float(max(fx.max(), fy.max()))
    if extent <= 1.05 / factor:
        raise InputError(
            f"every particle lies within the top-left {extent:.2f} of its micrograph, i.e. "
            f"within 1/{factor:g}: the coordinates look already downsampled (model frame). Give "
            f"coordinates at the micrographs' full pixel size (e.g. tzl-convert scale={factor:g}) "
            f"or drop data.downsample",
            path=source,
        )


def particle_radius_px(
    particle_diameter_a: float | None = None,
    particle_diameter_px: float | None = None,
    pixel_size_a: float | None = None,
    key: str = "data.particle_diameter_a",
) -> float | None:
    """Particle radius in micrograph pixels from a diameter in Angstrom (needs the pixel size) or
    in micrograph pixels; None when neither is given."""
    if particle_diameter_a is not None and particle_diameter_px is not None:
        raise ConfigError(key, "give the particle diameter in Angstrom or in pixels, not both")
    if particle_diameter_px is not None:
        d = float(particle_diameter_px)
        if not (d > 0 and math.isfinite(d)):
            raise ConfigError(key.replace("_a", "_px"), f"must be a number > 0, got {d}")
        return d / 2.0
    if particle_diameter_a is None:
        return None
    d = float(particle_diameter_a)
    if not (d > 0 and math.isfinite(d)):
        raise ConfigError(key, f"must be a number > 0, got {d}")
    if pixel_size_a is None or not float(pixel_size_a) > 0:
        raise ConfigError(
            key,
            "a diameter in Angstrom needs the pixel size: set data.pixel_size_a (A/px of the "
            "micrographs as given) or give data.particle_diameter_px instead",
        )
    return d / float(pixel_size_a) / 2.0


def default_radii(particle_radius_px_model: float | None) -> dict[str, float | None]:
    """The default radii (model frame) from the particle radius: label (0.3 r), NMS (1.25 r),
    match distance (1.0 r); see the ``*_PER_PARTICLE_RADIUS`` constants.

    Without a particle size only the label radius has a default (3 px, the paper's 3-4).
    """
    if particle_radius_px_model is None:
        return {
            "label_radius_px_model": DEFAULT_LABEL_RADIUS_PX_MODEL,
            "nms_radius_px_model": None,
            "match_distance_px_model": None,
        }
    r = float(particle_radius_px_model)
    return {
        "label_radius_px_model": float(max(1, round(LABEL_RADIUS_PER_PARTICLE_RADIUS * r))),
        "nms_radius_px_model": NMS_RADIUS_PER_PARTICLE_RADIUS * r,
        "match_distance_px_model": MATCH_DISTANCE_PER_PARTICLE_RADIUS * r,
    }


# ------------------------------------------------------------------------------------------------
# the resolved record of a run


@dataclass(frozen=True)
class RunGeometry:
    """Frames, radii and prior of one training run, resolved once before training starts.

    Lengths carry their frame in their name: ``*_px`` micrograph frame, ``*_px_model`` model
    frame, ``*_a`` Angstrom. Stored in ``model.pt`` (``extra["geometry"]``), logged as
    hyperparameters and read by the LightningModule, the held-out callback, ``tzl-pick`` and
    ``tzl-evaluate``.
    """

    downsample: float = 1.0
    #: Angstrom per micrograph-frame pixel, when known
    pixel_size_a: float | None = None
    #: particle radius in micrograph pixels, when known (from a diameter in A or px, or dataset.yaml)
    particle_radius_px: float | None = None
    #: a region is labeled positive within this radius of a labeled particle
    label_radius_px_model: float = DEFAULT_LABEL_RADIUS_PX_MODEL
    #: NMS keeps picks at least this far apart
    nms_radius_px_model: float | None = None
    #: a pick matches a particle within this distance (inclusive)
    match_distance_px_model: float | None = None
    #: class prior: fraction of all regions (model-frame pixels) that are positive
    pi: float | None = None
    #: prior of a positive among unlabeled draws
    pi_unlabeled: float | None = None
    pi_source: str | None = None
    num_labeled_particles: int | None = None
    num_regions: int | None = None
    num_labeled_positive_regions: int | None = None
    #: normalization of the micrographs (gmm, standardize, none)
    normalize: str = "gmm"

    # derived micrograph-frame views -----------------------------------------------------------
    @property
    def particle_radius_px_model(self) -> float | None:
        """Particle radius in model pixels."""
        if self.particle_radius_px is None:
            return None
        return to_model_px(self.particle_radius_px, self.downsample)

    @property
    def nms_radius_px(self) -> float | None:
        """NMS radius in micrograph pixels."""
        if self.nms_radius_px_model is None:
            return None
        return to_micrograph_px(self.nms_radius_px_model, self.downsample)

    @property
    def match_distance_px(self) -> float | None:
        """Match distance in micrograph pixels (what tzl-evaluate uses on written picks)."""
        if self.match_distance_px_model is None:
            return None
        return to_micrograph_px(self.match_distance_px_model, self.downsample)

    @property
    def labeled_fraction(self) -> float | None:
        """Observed fraction of regions that are labeled positive."""
        if not self.num_regions or self.num_labeled_positive_regions is None:
            return None
        return self.num_labeled_positive_regions / self.num_regions

    def replace(self, **changes: Any) -> RunGeometry:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (numbers, strings, None) for model.pt, logs and YAML."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> RunGeometry:
        """Rebuild from :meth:`to_dict` output read from an untrusted file: only known fields,
        only plain numbers/strings/None; anything else is an InputError naming ``source``."""
        if not isinstance(data, Mapping):
            raise InputError("geometry record is not a mapping", path=source, where="geometry")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in fields:
                continue  # written by a newer version: ignored
            if value is None:
                values[key] = None
                continue
            if key in ("pi_source", "normalize"):
                if not isinstance(value, str):
                    raise InputError(f"{key} must be a string", path=source, where="geometry")
                values[key] = value
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(
                    f"{key} must be a number, got {type(value).__name__}",
                    path=source,
                    where="geometry",
                )
            if not math.isfinite(float(value)):
                raise InputError(f"{key} is not finite", path=source, where="geometry")
            if key.startswith("num_"):
                values[key] = int(value)
            else:
                values[key] = float(value)
        if "downsample" in values:
            values["downsample"] = check_downsample(values["downsample"], "geometry.downsample")
        return cls(**values)


# ------------------------------------------------------------------------------------------------
# resolution from settings and data


def _positive_or_none(value: Any, key: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a number > 0 or null, got {value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise ConfigError(key, f"must be a number > 0 or null, got {value!r}")
    return number


def resolve_geometry(
    downsample: float = 1.0,
    normalize: str = "gmm",
    pixel_size_a: float | None = None,
    particle_diameter_a: float | None = None,
    particle_diameter_px: float | None = None,
    label_radius_px_model: float | None = None,
    nms_radius_px_model: float | None = None,
    match_distance_px_model: float | None = None,
    dataset: Mapping[str, Any] | None = None,
    key_prefix: str = "data.",
) -> RunGeometry:
    """The frames and radii of a run (no prior yet), each value taken once, first that applies:

    1. the explicit setting (``*_px_model`` keys, in model pixels);
    2. the dataset's suggestion (``dataset``: a simulated dataset.yaml's ``label_radius_px``,
       ``nms_radius_px``, ``match_distance_px``, ``particle_radius_px``, ``pixel_size_a``; all in
       micrograph pixels, so all divided by ``downsample``);
    3. the defaults from the particle radius r (:func:`default_radii`: label 0.3 r, NMS 1.25 r,
       match r), the particle size given as ``particle_diameter_a`` (needs ``pixel_size_a``) or
       ``particle_diameter_px``;
    4. the label radius alone has a default without a particle size (3 model px).
    """
    factor = check_downsample(downsample, f"{key_prefix}downsample")
    info = dict(dataset or {})
    pixel_size = _positive_or_none(pixel_size_a, f"{key_prefix}pixel_size_a")
    if pixel_size is None:
        pixel_size = _positive_or_none(info.get("pixel_size_a"), "dataset.yaml pixel_size_a")
    radius_px = particle_radius_px(
        particle_diameter_a,
        particle_diameter_px,
        pixel_size,
        key=f"{key_prefix}particle_diameter_a",
    )
    if radius_px is None:
        radius_px = _positive_or_none(
            info.get("particle_radius_px"), "dataset.yaml particle_radius_px"
        )
    derived = default_radii(None if radius_px is None else radius_px / factor)
    values: dict[str, float | None] = {}
    for name, setting, dataset_key in (
        ("label_radius_px_model", label_radius_px_model, "label_radius_px"),
        ("nms_radius_px_model", nms_radius_px_model, "nms_radius_px"),
        ("match_distance_px_model", match_distance_px_model, "match_distance_px"),
    ):
        if name == "label_radius_px_model" and setting is not None:
            # 0 is a valid label radius (only the centre pixel)
            value = float(setting)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{key_prefix}{name}", f"must be a number >= 0, got {setting!r}")
        else:
            value = _positive_or_none(setting, f"{key_prefix}{name}")
        if value is None and info.get(dataset_key) is not None:
            value = to_model_px(float(info[dataset_key]), factor)
        if value is None:
            value = derived[name]
        values[name] = value
    return RunGeometry(
        downsample=factor,
        pixel_size_a=pixel_size,
        particle_radius_px=radius_px,
        normalize=str(normalize),
        **values,
    )


#: the geometry settings of a data config (configs/data/_base.yaml), besides ``downsample``
GEOMETRY_SETTINGS = (
    "pixel_size_a",
    "particle_diameter_a",
    "particle_diameter_px",
    "label_radius_px_model",
    "nms_radius_px_model",
    "match_distance_px_model",
)


def check_geometry_settings(
    settings: Mapping[str, Any], downsample: Any = 1.0, key_prefix: str = "data."
) -> None:
    """The one check of a run's geometry settings before any data is read (ConfigError naming
    the key): ``downsample`` and the :data:`GEOMETRY_SETTINGS` in ``settings``. A diameter in
    Angstrom without ``pixel_size_a`` is left for :func:`resolve_geometry`, since the pixel size
    may come from the data (MRC header, dataset.yaml)."""
    values = {name: settings.get(name) for name in GEOMETRY_SETTINGS}
    if values["particle_diameter_a"] is not None and values["pixel_size_a"] is None:
        values["particle_diameter_a"] = None
    resolve_geometry(downsample=downsample, key_prefix=key_prefix, **values)
