"""PickSettings: the one record of what turns a preprocessed micrograph into picks, with its checks.

Its defaults ARE the picking defaults: ``tzl-pick`` (configs/pick.yaml leaves these keys null or
equal) and the held-out picking callback during training both build a ``PickSettings`` and hand it
to :func:`topaz_lightning.picking.predict.pick_micrograph`, so ``val/aupr`` measures the picks
``tzl-pick`` makes. ``__post_init__`` holds every range check (one place for the allowed values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from topaz_lightning.errors import ConfigError
from topaz_lightning.picking.border import border_padding_px_model as _padding_rule
from topaz_lightning.picking.coarse import check_tta
from topaz_lightning.picking.scoring import check_scoring

#: a candidate exactly the NMS radius from a pick: kept (ours) or suppressed (Topaz's)
NMS_BOUNDARIES = ("keep", "suppress")


def _number(key: str, value, low: float, *, strict: bool = False, integer: bool = False):
    if isinstance(value, bool):
        raise ConfigError(key, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a number, got {value!r}") from None
    ok = math.isfinite(number) and (number > low if strict else number >= low)
    if integer:
        ok = ok and number == int(number)
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ConfigError(key, f"must be {kind} {'>' if strict else '>='} {low:g}, got {value!r}")
    return int(number) if integer else number


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
    #: picking.scoring.SCORING_METHODS
    scoring: str = "dense"
    #: coarse_to_fine level (logit) when there is no threshold; None = scoring.DEFAULT_LEVEL
    scoring_level: float | None = None
    #: 1 | 8: average the logits over the 8 rotations/mirrors of each patch
    tta: int = 1
    #: keep the score map in the result (to save or plot it)
    keep_score_map: bool = False
    #: drop picks on striped bands detected along the edges (picking.border), widened inwards
    #: by border_padding_px_model (None = half the NMS radius), and within
    #: border_margin_px_model of any edge (model frame)
    border_bands: bool = True
    border_padding_px_model: float | None = None
    border_margin_px_model: float = 0.0

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

    def replace(self, **changes) -> PickSettings:
        """A copy with ``changes`` (checked again). ``border_padding_px_model`` follows a new
        NMS radius unless it is given too."""
        if "nms_radius_px_model" in changes and "border_padding_px_model" not in changes:
            changes["border_padding_px_model"] = None
        return replace(self, **changes)
