"""PickSettings: the one record of what turns a preprocessed micrograph into picks, with its checks.

Its defaults ARE the picking defaults: ``tzl-pick`` (configs/pick.yaml leaves these keys null or
equal) and the held-out picking callback during training both build a ``PickSettings`` and hand it
to :func:`topaz_lightning.picking.predict.pick_micrograph`, so ``val/aupr`` measures the picks
``tzl-pick`` makes. ``__post_init__`` holds every range check (one place for the allowed values).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

from topaz_lightning.errors import ConfigError, check_number
from topaz_lightning.models.base import use_channels_last
from topaz_lightning.picking.border import border_padding_px_model as _padding_rule
from topaz_lightning.picking.coarse import check_tta
from topaz_lightning.picking.scoring import check_scoring
from topaz_lightning.picking.strided import check_refine
from topaz_lightning.picking.threshold import choose_threshold

#: a candidate exactly the NMS radius from a pick: kept (ours) or suppressed (Topaz's)
NMS_BOUNDARIES = ("keep", "suppress")


def _number(key: str, value, low: float, *, strict: bool = False, integer: bool = False):
    # a finite number above ``low`` (-inf: any finite number)
    minimum = None if low == -math.inf else low
    return check_number(key, value, minimum, exclusive_minimum=strict, integer=integer)


@dataclass(frozen=True)
class PickSettings:
    """What turns one preprocessed micrograph into picks (plain values, checked on creation)."""

    #: NMS keeps picks at least this far apart (model frame); > 0
    nms_radius_px_model: float
    #: a candidate exactly the radius from a pick: "keep" (ours) | "suppress" (Topaz's)
    nms_boundary: str = "keep"
    #: logit threshold (picks with a lower score are dropped); -inf keeps every maximum
    threshold: float = -math.inf
    #: keep at most the best k picks per micrograph (after the border mask); None = all
    max_picks: int | None = None
    #: the model frame's downsampling factor: coordinates are multiplied by it on the way out
    downsample: float = 1.0
    #: output pixels per tile side when scoring (bounds memory; identical results); None = whole
    tile_size: int | None = 1024
    #: picking.scoring.SCORING_METHODS: strided (the network at its native stride, picks refined
    #: on exact dense windows; the default, measured within 0.003 AUPR of dense on the real folds,
    #: docs/picking_evaluation.md) | dense (every pixel: the exact reference) | coarse_to_fine
    scoring: str = "strided"
    #: coarse_to_fine level (logit) when there is no threshold; None = scoring.DEFAULT_LEVEL
    scoring_level: float | None = None
    #: 1 | 8: average the logits over the 8 rotations/mirrors of each patch
    tta: int = 1
    #: scoring=strided: how each coarse pick is refined (picking.strided.REFINE_METHODS)
    refine: str = "window"
    #: refine=window: exact windows for only the best ``refine_exact_per_px_model * H * W``
    #: coarse picks of an H x W (model px) micrograph, ranked by their quadratic estimate (the
    #: rest keep it); None = every pick
    refine_exact_per_px_model: float | None = None
    #: keep the score map in the result (to save or plot it)
    keep_score_map: bool = False
    #: drop picks on striped bands detected along the edges (picking.border), widened inwards
    #: by border_padding_px_model (None = half the NMS radius), and within
    #: border_margin_px_model of any edge (model frame)
    border_bands: bool = True
    border_padding_px_model: float | None = None
    border_margin_px_model: float = 0.0
    #: the weights' layout while scoring (models.base.MEMORY_FORMATS): auto = channels_last on
    #: the CPU; scores equal to float rounding, so not in the pick record (like the device)
    memory_format: str = "auto"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalize the values once, here
        set_(
            self,
            "nms_radius_px_model",
            _number("nms_radius_px_model", self.nms_radius_px_model, 0.0, strict=True),
        )
        if self.nms_boundary not in NMS_BOUNDARIES:
            raise ConfigError(
                "nms_boundary", f"must be one of {NMS_BOUNDARIES}, got {self.nms_boundary!r}"
            )
        if isinstance(self.threshold, bool):
            raise ConfigError("threshold", f"must be a logit (number), got {self.threshold!r}")
        try:
            threshold = float(self.threshold)
        except (TypeError, ValueError):
            raise ConfigError("threshold", f"must be a logit, got {self.threshold!r}") from None
        if math.isnan(threshold):
            raise ConfigError("threshold", "must be a logit, got NaN")
        set_(self, "threshold", threshold)
        if self.max_picks is not None:
            set_(
                self,
                "max_picks",
                _number("particles_per_micrograph", self.max_picks, 0, integer=True),
            )
        set_(self, "downsample", _number("downsample", self.downsample, 1.0))
        if self.tile_size is not None:
            set_(self, "tile_size", _number("tile_size", self.tile_size, 1, integer=True))
        check_scoring(self.scoring)
        if self.scoring_level is not None:
            set_(self, "scoring_level", _number("scoring_level", self.scoring_level, -math.inf))
        set_(self, "tta", check_tta(self.tta))
        check_refine(self.refine)
        if self.refine_exact_per_px_model is not None:
            set_(
                self,
                "refine_exact_per_px_model",
                _number("refine_exact", self.refine_exact_per_px_model, 0.0),
            )
        if not isinstance(self.border_bands, bool):
            raise ConfigError("border_bands", f"must be true or false, got {self.border_bands!r}")
        if self.border_padding_px_model is None:
            padding = _padding_rule(None, self.nms_radius_px_model)
        else:
            padding = _number("border_padding_px_model", self.border_padding_px_model, 0.0)
        set_(self, "border_padding_px_model", float(padding))
        set_(
            self,
            "border_margin_px_model",
            _number("border_margin_px_model", self.border_margin_px_model or 0.0, 0.0),
        )
        set_(self, "keep_score_map", bool(self.keep_score_map))
        use_channels_last(self.memory_format, "cpu")  # ConfigError on an unknown layout

    def replace(self, **changes) -> PickSettings:
        """A copy with ``changes`` (checked again). ``border_padding_px_model`` follows a new
        NMS radius unless it is given too."""
        if "nms_radius_px_model" in changes and "border_padding_px_model" not in changes:
            changes["border_padding_px_model"] = None
        return replace(self, **changes)


# ------------------------------------------------------------------------------------------------
# tzl-pick: the settings of one run, resolved once from its config and the model card

#: scoring methods whose picks depend on the threshold (their parts cannot be re-thresholded):
#: coarse_to_fine scores only around regions above it (strided refines every coarse maximum
#: when parts keep every maximum, so it needs no threshold: see threshold_free)
SCORING_USES_THRESHOLD = ("coarse_to_fine",)


def threshold_free(scoring: str, refine: str = "window") -> bool:
    """True when scoring with threshold -inf and thresholding the picks afterwards gives exactly
    the picks of scoring with the threshold (so parts may keep every maximum)."""
    if scoring in SCORING_USES_THRESHOLD:
        return False
    # strided (any refine): without a threshold every coarse maximum is refined; thresholding
    # afterwards keeps a superset of the thresholded run's picks (that run skips candidates
    # more than refine_margin below the threshold, which refinement might have raised above it)
    return True


#: config keys that do not decide a micrograph's stored picks: resolved into the record instead
#: (threshold, radius, preprocessing), applied when the combined output is assembled from the
#: parts (threshold, top k, score, format, layout), or only about speed, logging and paths
NOT_IN_RECORD = frozenset(
    {
        "model_path", "micrographs", "subset", "output_dir", "output", "format", "suffix",
        "star_micrograph_dir",
        "browser", "browser_max_micrographs",
        "per_micrograph", "box_size", "score", "threshold", "threshold_probability",
        "target_recall", "recall_metrics", "particles_per_micrograph", "radius",
        "nms_radius_px", "nms_radius_px_model", "downsample", "normalize", "chunk_size",
        "device", "memory_format", "batch_size", "num_workers", "tile_size", "progress",
        "overwrite", "strict",
        "trainer", "hydra", "task_name", "picks_dir", "callbacks",
    }
)  # fmt: skip
#: removed keys and what replaces them
REMOVED_KEYS = {
    "radius": "nms_radius_px_model (model pixels) or nms_radius_px (micrograph pixels)",
    "chunk_size": "nothing: micrographs stream one at a time and the GMM is fitted once; drop it",
}


@dataclass(frozen=True)
class ResolvedPick:
    """Everything a tzl-pick run decided before scoring.

    ``settings`` turn one micrograph into its stored part: with a threshold-free scoring every
    NMS maximum after the band mask (threshold -inf, no top k), so ``threshold`` and
    ``max_picks`` are applied when the combined output is assembled and a rerun that changes
    only them re-extracts without scoring. ``record`` is what the job record compares.
    """

    settings: PickSettings
    threshold: float
    threshold_source: str
    #: the best k per micrograph: a number, None (every maximum above the threshold), or
    #: "expected" (the count the model's prior implies for each micrograph's size)
    max_picks: int | str | None
    downsample: float
    normalize: str
    model_sha256: str
    record: dict
    stores_all_maxima: bool
    #: particles the model expects per model-frame pixel (pi / label disk area); None without
    #: a prior in model.pt
    expected_per_px_model: float | None = None
    #: the particle diameter of the run geometry (micrograph frame): the default box size
    particle_diameter_px: float | None = None

    def expected_count(self, shape_px: tuple[int, int]) -> float | None:
        """Particles expected on a micrograph of ``shape_px`` (H, W, micrograph frame)."""
        if self.expected_per_px_model is None:
            return None
        h_model, w_model = (float(n) / self.downsample for n in shape_px)
        return self.expected_per_px_model * h_model * w_model


def _exact_per_px_model(refine_exact, expected_per_px_model: float | None) -> float | None:
    """``refine_exact`` (``all``/null, or a multiple of the expected particle count) as exact
    windows per model px; None (every pick) when the model carries no prior."""
    if refine_exact is None or refine_exact == "all":
        return None
    factor = _number("refine_exact", refine_exact, 0.0)
    if expected_per_px_model is None:
        logging.getLogger("topaz_lightning").info(
            "refine_exact=%s: model.pt carries no prior, so every pick is refined", factor
        )
        return None
    return factor * expected_per_px_model


def _preprocessing(cfg, extra: dict, geometry) -> tuple[float, str]:
    """(downsample, normalize): the config's override, else model.pt's training preprocessing."""
    from topaz_lightning.geometry import check_downsample
    from topaz_lightning.preprocess.pipeline import NORMALIZATIONS

    prep = dict(extra.get("preprocess") or {})
    if cfg.get("downsample") is not None:
        downsample = check_downsample(cfg.downsample, "downsample")
    elif geometry is not None:
        downsample = geometry.downsample
    else:
        downsample = check_downsample(
            prep.get("downsample") or 1.0, "model.pt preprocess.downsample"
        )
    if cfg.get("normalize") is not None:
        normalize = str(cfg.normalize)
    elif prep.get("normalize") is not None:
        normalize = str(prep["normalize"])
    elif geometry is not None:
        normalize = geometry.normalize
    else:
        normalize = "none"
    if normalize not in NORMALIZATIONS:
        raise ConfigError(
            "normalize", f"must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}"
        )
    return downsample, normalize


def nms_radius_px_model(cfg, geometry, downsample: float) -> float:
    """The NMS radius in model pixels: ``nms_radius_px_model``, or ``nms_radius_px`` (micrograph
    pixels) divided by the downsampling factor, else model.pt's run geometry."""
    from topaz_lightning.geometry import default_radii, to_model_px

    given = [k for k in ("nms_radius_px_model", "nms_radius_px") if cfg.get(k) is not None]
    if len(given) > 1:
        raise ConfigError(given[1], f"give the NMS radius once (got {given})")
    if given:
        key = given[0]
        value = _number(key, cfg[key], 0.0, strict=True)
        return to_model_px(value, downsample) if key == "nms_radius_px" else value
    if geometry is not None:
        if geometry.nms_radius_px_model is not None:
            return float(geometry.nms_radius_px_model)
        default = default_radii(geometry.particle_radius_px_model)["nms_radius_px_model"]
        if default is not None:
            return float(default)
    raise ConfigError(
        "nms_radius_px_model",
        "model.pt carries no NMS radius (no run geometry, or no particle size): give "
        "nms_radius_px_model=<model pixels> or nms_radius_px=<micrograph pixels>",
    )


def model_fingerprint(net, extra: dict) -> str:
    """sha256 of the weights and extras (the content: re-saving the same model keeps it)."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        digest.update(key.encode("utf-8"))
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode("utf-8"))
    return digest.hexdigest()


def resolve_pick_settings(cfg, net, extra: dict, model_path: str | None = None) -> ResolvedPick:
    """Resolve a tzl-pick config against the model card (``load_model``'s ``extra``) once.

    Removed keys (``radius``, ``chunk_size``) are refused naming their replacement; the
    threshold, NMS radius and preprocessing are chosen here; ``record`` holds every config key
    that decides the stored parts (any key not in NOT_IN_RECORD counts, so a key added later
    counts by default) plus the resolved values and the model's hash (the caller adds the
    micrographs: :func:`micrographs_record`).
    """
    from omegaconf import OmegaConf

    from topaz_lightning.geometry import RunGeometry

    for key, instead in REMOVED_KEYS.items():
        if cfg.get(key) is not None:
            raise ConfigError(key, f"was removed; use {instead}")
    model_path = str(model_path or cfg.get("model_path") or "model.pt")
    geometry_data = extra.get("geometry")
    geometry = (
        None if geometry_data is None else RunGeometry.from_dict(geometry_data, source=model_path)
    )
    downsample, normalize = _preprocessing(cfg, extra, geometry)
    radius = nms_radius_px_model(cfg, geometry, downsample)
    threshold, threshold_source = choose_threshold(cfg)
    expected = _expected_per_px_model(geometry)
    max_picks = _top_k(cfg.get("particles_per_micrograph"), threshold_source, expected)
    scoring = check_scoring(str(cfg.get("scoring", "dense")))
    refine = str(cfg.get("refine", PickSettings.refine))
    all_maxima = threshold_free(scoring, refine)
    settings = PickSettings(
        nms_radius_px_model=radius,
        nms_boundary=str(cfg.get("nms_boundary", "keep")),
        threshold=-math.inf if all_maxima else threshold,
        max_picks=None,  # the top k is taken when assembling (after the mask, as before)
        downsample=downsample,
        tile_size=cfg.get("tile_size"),
        scoring=scoring,
        scoring_level=cfg.get("scoring_level"),
        tta=cfg.get("tta", 1),
        refine=refine,
        refine_exact_per_px_model=_exact_per_px_model(cfg.get("refine_exact", "all"), expected),
        border_bands=bool(cfg.get("border_bands", True)),
        border_padding_px_model=cfg.get("border_padding_px_model"),
        border_margin_px_model=cfg.get("border_margin_px_model") or 0.0,
        memory_format=str(cfg.get("memory_format", "auto")),
    )
    fingerprint = model_fingerprint(net, extra)
    keys = [k for k in cfg if k not in NOT_IN_RECORD]
    plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    resolved = {
        "parts": "all_maxima" if all_maxima else "above_threshold",
        "nms_radius_px_model": radius,
        "downsample": downsample,
        "normalize": normalize,
        "model_sha256": fingerprint,
    }
    if not all_maxima:  # the score map itself depends on it
        resolved["threshold"] = threshold if math.isfinite(threshold) else None
    record = {**plain, **resolved}
    return ResolvedPick(
        settings=settings,
        threshold=threshold,
        threshold_source=threshold_source,
        max_picks=max_picks,
        downsample=downsample,
        normalize=normalize,
        model_sha256=fingerprint,
        record=record,
        stores_all_maxima=all_maxima,
        expected_per_px_model=expected,
        particle_diameter_px=(
            None
            if geometry is None or geometry.particle_radius_px is None
            else 2.0 * float(geometry.particle_radius_px)
        ),
    )


def _expected_per_px_model(geometry) -> float | None:
    """pi / label disk area of the run geometry (None without a prior or label radius)."""
    from topaz_lightning.data.prior import expected_particles_per_micrograph

    if geometry is None or geometry.pi is None or not geometry.label_radius_px_model:
        return None
    return expected_particles_per_micrograph(
        geometry.pi, (1.0, 1.0), geometry.label_radius_px_model
    )


def _top_k(value, threshold_source: str, expected: float | None) -> int | str | None:
    """``particles_per_micrograph``: null = the expected count (from the model's pi) when no
    threshold is given, else every pick above the threshold; ``expected``; ``all``; or k."""
    key = "particles_per_micrograph"
    if value is None:
        if threshold_source != "none":
            return None
        if expected is None:
            logging.getLogger("topaz_lightning").warning(
                "no prior (pi) from the picker (a model.pt without one, or a classical baseline): "
                "writing every local maximum; give "
                "particles_per_micrograph=<k> or a threshold to keep fewer"
            )
            return None
        return "expected"
    if value == "all":
        return None
    if value == "expected":
        if expected is None:
            raise ConfigError(key, "expected needs a model.pt with a prior (pi); give a number")
        return "expected"
    if isinstance(value, str):
        raise ConfigError(key, f"must be a number, expected, all or null, got {value!r}")
    return _number(key, value, 0, integer=True)


def micrographs_record(names: list[str]) -> dict:
    """The micrographs of a run as the job record compares them (their number and names)."""
    import hashlib

    names_hash = hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()
    return {"count": len(names), "names_sha256": names_hash}
