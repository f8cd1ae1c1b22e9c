"""One validation pass per command over the composed config, before any data is read (ConfigError -> exit 2)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from topaz_lightning.errors import ConfigError, check_number
from topaz_lightning.utils.atomic import unwritable_ancestor

log = logging.getLogger("topaz_lightning")

_MISSING = object()
#: data.batch_positive above this is almost surely a typo (the paper uses 16 of 256)
BATCH_POSITIVE_WARN = 1000


# ------------------------------------------------------------------------------------------------
# typed getters: each names the key in its error


def _get(cfg: DictConfig, key: str) -> Any:
    if OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is _MISSING:
        return _MISSING
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception:  # noqa: BLE001 - a ??? value: the command reports it as required
        return _MISSING


def _checked_value(cfg: DictConfig, key: str, allow_none: bool) -> Any:
    """``cfg[key]``, or ``_MISSING`` when there is nothing to check (absent, or an allowed null)."""
    value = _get(cfg, key)
    if value is None and not allow_none:
        raise ConfigError(key, "must be set (got null)")
    return _MISSING if value is None else value


def integer(
    cfg: DictConfig,
    key: str,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """``cfg[key]`` as an int within bounds; ConfigError naming ``key`` otherwise (absent: None)."""
    value = _checked_value(cfg, key, allow_none)
    if value is _MISSING:
        return None
    bounds = _bounds(minimum, maximum)
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    ):
        raise ConfigError(key, f"must be a whole number{bounds}, got {value!r}")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ConfigError(key, f"must be a whole number{bounds}, got {number}")
    return number


def number(
    cfg: DictConfig,
    key: str,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    allow_none: bool = False,
    allow_inf: bool = False,
) -> float | None:
    """``cfg[key]`` as a float within bounds (finite unless ``allow_inf``); ConfigError otherwise."""
    value = _checked_value(cfg, key, allow_none)
    if value is _MISSING:
        return None
    return float(
        check_number(
            key,
            value,
            minimum,
            maximum,
            exclusive_minimum=exclusive_minimum,
            allow_inf=allow_inf,
        )
    )


def choice(cfg: DictConfig, key: str, options: tuple, allow_none: bool = False) -> Any:
    """``cfg[key]`` if it is one of ``options``; ConfigError listing them otherwise."""
    value = _get(cfg, key)
    if value is _MISSING or (value is None and allow_none):
        return None
    if value not in options:
        shown = ", ".join(str(o) for o in options) + (" or null" if allow_none else "")
        raise ConfigError(key, f"must be one of {shown}; got {value!r}")
    return value


def boolean(cfg: DictConfig, key: str) -> bool | None:
    """``cfg[key]`` if it is true/false (a string 'yes' or a number is refused)."""
    value = _get(cfg, key)
    if value is _MISSING:
        return None
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return value


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in {minimum}..{maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def _coordinate_format(cfg: DictConfig, key: str) -> str | None:
    from topaz_lightning.errors import InputError
    from topaz_lightning.io.coordinates import canonical_format

    value = _get(cfg, key)
    if value is _MISSING or value is None:
        return None
    try:
        return canonical_format(str(value))
    except InputError as err:
        raise ConfigError(key, err.problem) from None


def _writable_parent(key: str, path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a directory we may write into."""
    parent, problem = unwritable_ancestor(path.parent)
    if problem:
        raise ConfigError(key, f"{parent} {problem}, so {path} cannot be written")


# ------------------------------------------------------------------------------------------------
# per command


def validate_train(cfg: DictConfig) -> None:
    """tzl-train: trainer schedule, optimizer, batch composition, patch and label settings."""
    max_steps = _get(cfg, "trainer.max_steps")
    if max_steps is not _MISSING:
        # the patch sampler is an endless stream: training is bounded by steps, not epochs
        integer(cfg, "trainer.max_steps", minimum=1)
    integer(cfg, "seed", allow_none=True)
    number(cfg, "module.optimizer.lr", minimum=0, exclusive_minimum=True)
    number(cfg, "module.optimizer.weight_decay", minimum=0, allow_none=True)
    number(cfg, "module.pi_unlabeled", minimum=0, maximum=1, allow_none=True)
    number(cfg, "module.min_unlabeled_per_labeled", minimum=0, allow_none=True)
    recon = _get(cfg, "module.recon_weight")
    if recon is not _MISSING and recon != "auto":
        number(cfg, "module.recon_weight", minimum=0, allow_none=True)
    for flag in ("trainer.enable_progress_bar", "trainer.enable_model_summary"):
        boolean(cfg, flag)

    positive = integer(cfg, "data.batch_positive", minimum=1, allow_none=True)
    unlabeled = integer(cfg, "data.batch_unlabeled", minimum=0, allow_none=True)
    if positive is not None and positive > BATCH_POSITIVE_WARN:
        log.warning(
            "data.batch_positive=%d: %d labeled patches per minibatch is far above the paper's "
            "16 (of 256); is it a typo?",
            positive,
            positive,
        )
    if unlabeled is not None and positive is not None and unlabeled > 100 * BATCH_POSITIVE_WARN:
        log.warning("data.batch_unlabeled=%d is very large (the paper: 240)", unlabeled)
    integer(cfg, "data.steps_per_epoch", minimum=1, allow_none=True)
    integer(cfg, "data.val_batches", minimum=0, allow_none=True)
    patch = integer(cfg, "data.patch_size", minimum=1, allow_none=True)
    if patch is not None and patch % 2 == 0:
        raise ConfigError(
            "data.patch_size", f"must be odd (a patch has a centre pixel), got {patch}"
        )
    integer(cfg, "data.num_labeled", minimum=1, allow_none=True)
    integer(cfg, "data.num_val_micrographs", minimum=0, allow_none=True)
    number(cfg, "data.val_fraction", minimum=0, maximum=1, allow_none=True)
    folds = integer(cfg, "data.num_folds", minimum=2, allow_none=True)
    fold = integer(cfg, "data.fold", minimum=0, allow_none=True)
    if folds is not None and fold is not None and fold >= folds:
        raise ConfigError("data.fold", f"must be < data.num_folds={folds}, got {fold}")
    data = cfg.get("data")
    if isinstance(data, DictConfig):
        # the prior and the geometry have one check each, shared with the DataModule
        from topaz_lightning.data.prior import check_prior_settings
        from topaz_lightning.geometry import check_geometry_settings

        # data.pi=auto: estimated from the data before training (data.pi_estimate)
        pi_setting = None if data.get("pi") == "auto" else data.get("pi")
        check_prior_settings(pi_setting, data.get("particles_per_micrograph"))
        check_geometry_settings(data, data.get("downsample", 1.0))
    from topaz_lightning.data.preprocessing import VAL_NORMALIZE_FITS
    from topaz_lightning.preprocess.pipeline import NORMALIZATIONS

    choice(cfg, "data.normalize", NORMALIZATIONS, allow_none=True)
    choice(cfg, "data.val_normalize_fit", VAL_NORMALIZE_FITS)
    integer(cfg, "callbacks.held_out_picking.every_n_steps", minimum=1, allow_none=True)
    held_out = _get(cfg, "callbacks.held_out_picking")
    if isinstance(held_out, DictConfig):  # its pick settings: PickSettings' own checks
        from topaz_lightning.callbacks.validation import check_settings

        check_settings(OmegaConf.to_container(held_out, resolve=True))


def prepare_train(cfg: DictConfig) -> None:
    """Make settings that Lightning treats as contradictions simply work.

    ``trainer.enable_progress_bar=false`` with a progress-bar callback configured is a
    MisconfigurationException in Lightning; the flag wins and the callback is dropped.
    """
    if _get(cfg, "trainer.enable_progress_bar") is False:
        callbacks = cfg.get("callbacks")
        if isinstance(callbacks, DictConfig):
            with open_dict(callbacks):
                for name in list(callbacks.keys()):
                    node = callbacks[name]
                    target = node.get("_target_", "") if isinstance(node, DictConfig) else ""
                    if "ProgressBar" in str(target):
                        callbacks[name] = None


#: tzl-pick's config keys that are PickSettings fields: {field: config key}
_PICK_SETTINGS_KEYS = {
    "nms_boundary": "nms_boundary",
    "threshold": "threshold",
    "max_picks": "particles_per_micrograph",
    "tile_size": "tile_size",
    "scoring": "scoring",
    "scoring_level": "scoring_level",
    "tta": "tta",
    "border_bands": "border_bands",
    "border_padding_px_model": "border_padding_px_model",
    "border_margin_px_model": "border_margin_px_model",
}
#: keys that give the NMS radius (at most one is used): PickSettings checks it as > 0
_NMS_RADIUS_KEYS = ("nms_radius_px_model", "nms_radius_px", "radius")


def _check_pick_settings(cfg: DictConfig) -> None:
    """The picking settings' ranges are PickSettings' own: build one from the keys that are set.

    The NMS radius may come from model.pt (all radius keys null): a stand-in of 1 px lets the other
    fields be checked now. A radius given in micrograph pixels (``nms_radius_px``) or under its
    old name (``radius``) has the same range as the model-frame one; its error names its key.
    """
    from topaz_lightning.picking.settings import PickSettings

    values = {}
    for field, key in _PICK_SETTINGS_KEYS.items():
        value = _get(cfg, key)
        if field == "max_picks" and isinstance(value, str):
            continue  # resolved against model.pt (picking.settings._top_k)
        if value is not _MISSING and value is not None:
            values[field] = value
    radii = [(k, _get(cfg, k)) for k in _NMS_RADIUS_KEYS if _get(cfg, k) not in (_MISSING, None)]
    for key, radius in radii or [(None, 1.0)]:
        try:
            PickSettings(nms_radius_px_model=radius, **values)
        except ConfigError as err:
            if key is None or err.key != "nms_radius_px_model":
                raise
            raise ConfigError(key, str(err).split(": ", 1)[1]) from None


def _output_format(key: str, output: str) -> str:
    """The format ``output``'s extension implies (io.coordinates.format_for_output)."""
    from topaz_lightning.errors import InputError
    from topaz_lightning.io.coordinates import format_for_output
    from topaz_lightning.io.formats import output_extensions

    try:
        return format_for_output(output)
    except InputError:
        suffix = Path(output).suffix.lower()
        known = "/".join(sorted(output_extensions()))
        raise ConfigError(
            key, f"cannot tell the format from the extension {suffix!r}; use {known} or set format="
        ) from None


def _check_picker(cfg: DictConfig) -> None:
    """The picker's own settings (its constructor's ConfigError naming ``picker.<key>``), and a
    model file for ``picker=model``: refused before the run directory is made."""
    from topaz_lightning.picking.pickers import PICK_EXAMPLE, ModelPicker, build_picker

    node = _get(cfg, "picker")
    picker = ModelPicker() if node in (_MISSING, None) else build_picker(node)
    if isinstance(picker, ModelPicker) and _get(cfg, "model_path") in (_MISSING, None, ""):
        raise ConfigError("model_path", f"is required (e.g. {PICK_EXAMPLE})")


def validate_pick(cfg: DictConfig) -> None:
    """tzl-pick: the picking settings (PickSettings' checks), threshold sources, workers, and the
    output (format, box_size, a writable parent)."""
    from topaz_lightning.preprocess.pipeline import NORMALIZATIONS

    _check_pick_settings(cfg)
    _check_picker(cfg)
    integer(cfg, "num_workers", minimum=0, allow_none=True)
    boolean(cfg, "strict")
    number(cfg, "threshold_probability", minimum=0, maximum=1, allow_none=True)
    number(cfg, "target_recall", minimum=0, maximum=1, exclusive_minimum=True, allow_none=True)
    choice(cfg, "score", ("logit", "probability"))
    integer(cfg, "chunk_size", minimum=1, allow_none=True)
    integer(cfg, "batch_size", minimum=1, allow_none=True)
    integer(cfg, "seed", allow_none=True)
    downsample = _get(cfg, "downsample")
    if downsample is not _MISSING and downsample is not None:
        from topaz_lightning.geometry import check_downsample

        check_downsample(downsample, "downsample")
    choice(cfg, "normalize", NORMALIZATIONS, allow_none=True)
    box_size = number(cfg, "box_size", minimum=0, exclusive_minimum=True, allow_none=True)
    fmt = _coordinate_format(cfg, "format")
    per_micrograph = boolean(cfg, "per_micrograph")
    output = _get(cfg, "output")
    if output in (_MISSING, None, ""):
        return
    if per_micrograph and fmt is None:
        raise ConfigError("format", "required when per_micrograph=true (e.g. format=star)")
    if fmt is None:
        fmt = _output_format("output", str(output))
    from topaz_lightning.io.formats import get_format

    if get_format(fmt).needs_box_size and box_size is None:
        raise ConfigError("box_size", f"required for {fmt} output (box edge in original px)")
    out_dir = _get(cfg, "output_dir")
    if out_dir not in (_MISSING, None, ""):
        target = Path(str(output))
        target = target if target.is_absolute() else Path(str(out_dir)) / target
        _writable_parent("output", target)


def check_max_distance(value, key: str = "max_distance") -> float:
    """The match distance setting as a float: a finite number >= 0 (ConfigError naming ``key``);
    the one check, used before any work and by ``cli.evaluate.resolve_max_distance``."""
    return float(check_number(key, value, 0))


def validate_evaluate(cfg: DictConfig) -> None:
    """tzl-evaluate: match distance, matching rule, formats, overlay settings."""
    from topaz_lightning.metrics.matching import MATCH_BOUNDARIES, MATCHING_METHODS

    max_distance = _get(cfg, "max_distance")
    if max_distance not in (_MISSING, None):
        check_max_distance(max_distance)
    choice(cfg, "matching", MATCHING_METHODS)
    choice(cfg, "match_boundary", MATCH_BOUNDARIES)
    _coordinate_format(cfg, "picks_format")
    _coordinate_format(cfg, "truth_format")
    integer(cfg, "overlay_max", minimum=0, allow_none=True)
    number(cfg, "overlay_radius", minimum=0, exclusive_minimum=True, allow_none=True)
    threshold = _get(cfg, "overlay_threshold")
    if threshold not in (_MISSING, None, "best_f1"):
        number(cfg, "overlay_threshold")


def validate_preprocess(cfg: DictConfig) -> None:
    """tzl-preprocess: downsampling factor, normalization, GMM sample, workers."""
    from topaz_lightning.geometry import check_downsample

    if _get(cfg, "downsample") is not _MISSING:
        check_downsample(_get(cfg, "downsample"), "downsample")
    from topaz_lightning.preprocess.pipeline import NORMALIZATIONS

    choice(cfg, "normalize", NORMALIZATIONS)
    integer(cfg, "sample_size", minimum=1)
    integer(cfg, "num_workers", minimum=1, allow_none=True)
    integer(cfg, "seed", allow_none=True)


def validate_convert(cfg: DictConfig) -> None:
    """tzl-convert: formats, scale/downsample, y-flip height, box size."""
    _coordinate_format(cfg, "input_format")
    _coordinate_format(cfg, "output_format")
    number(cfg, "scale", minimum=0, exclusive_minimum=True, allow_none=True)
    downsample = _get(cfg, "downsample")
    if downsample is not _MISSING and downsample is not None:
        from topaz_lightning.geometry import check_downsample

        check_downsample(downsample, "downsample")
    number(cfg, "image_height", minimum=0, exclusive_minimum=True, allow_none=True)
    number(cfg, "box_size", minimum=0, exclusive_minimum=True, allow_none=True)
    boolean(cfg, "flip_y")


VALIDATORS: dict[str, Callable[[DictConfig], None]] = {
    "train": validate_train,
    "pick": validate_pick,
    "evaluate": validate_evaluate,
    "preprocess": validate_preprocess,
    "convert": validate_convert,
}
PREPARERS: dict[str, Callable[[DictConfig], None]] = {"train": prepare_train}


def validate(command: str, cfg: DictConfig) -> None:
    """Check the composed config of ``command`` (train, pick, ...) before any data is read; adjust
    the settings that only need reconciling (see :func:`prepare_train`). Unknown commands pass."""
    checker = VALIDATORS.get(command)
    if checker is not None:
        checker(cfg)
    preparer = PREPARERS.get(command)
    if preparer is not None:
        preparer(cfg)
