"""Pick particles: score micrographs with a trained model and extract coordinates by NMS.

Reads the micrographs (directory, glob or list file), preprocesses them exactly as the model's
training data (``extra["preprocess"]`` in model.pt: Fourier-crop factor and normalization),
scores every pixel with the classifier, keeps picks at least ``radius`` (model pixels) apart,
and writes the coordinates scaled back to the original pixel size in any coordinate format
(one combined file or one per micrograph). The score column holds logits (``score=logit``) or
probabilities (``score=probability``). A threshold comes from a logit, a probability, the
expected number of particles per micrograph (top k), or a target recall measured on validation
data (``target_recall`` with the metrics JSON of ``tzl-evaluate``). Existing outputs are refused
unless ``overwrite=true``.

Example usage::

    # the simulator's test micrographs, with a model from tzl-train
    tzl-pick model_path=outputs/train/<run>/model.pt micrographs=data/simulated/demo_seed0/micrographs \
        subset=data/simulated/demo_seed0/test.txt radius=8 output_dir=picks_demo

    # EMPIAR-10017 JPEGs (model trained on 4x downsampled images: radius in downsampled px),
    # STAR output at full size, top 150 per micrograph, score maps saved as MRC
    tzl-pick model_path=model.pt micrographs=data/samples/empiar10017_dev/images radius=12 \
        particles_per_micrograph=150 output=picks.star save_score_maps=true output_dir=picks_10017
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from topaz_lightning.cli._hydra import entry_point, require, resolve_output
from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.io.micrographs import read_micrograph_names as read_name_list

log = logging.getLogger("topaz_lightning")


def choose_threshold(cfg: DictConfig) -> float:
    """The logit threshold from ``threshold``, ``threshold_probability`` or ``target_recall``."""
    from topaz_lightning.picking import logit

    given = [
        k for k in ("threshold", "threshold_probability", "target_recall") if cfg.get(k) is not None
    ]
    if len(given) > 1:
        raise ConfigError(
            given[1],
            f"set only one of threshold, threshold_probability, target_recall (got {given})",
        )
    if not given:
        return -math.inf
    if given[0] == "threshold":
        return float(cfg.threshold)
    if given[0] == "threshold_probability":
        return logit(float(cfg.threshold_probability))
    if not cfg.get("recall_metrics"):
        raise ConfigError(
            "recall_metrics",
            "target_recall needs the metrics JSON of tzl-evaluate (with its curve)",
        )
    return threshold_from_metrics(cfg.recall_metrics, float(cfg.target_recall))


def threshold_from_metrics(path, target_recall: float) -> float:
    """Threshold reaching ``target_recall`` on the PR curve stored in a tzl-evaluate metrics JSON."""
    from types import SimpleNamespace

    from topaz_lightning.picking import threshold_for_recall

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
        raise InputError(f"cannot read metrics JSON ({err})", path=path) from err
    curve = data.get("curve") if isinstance(data, dict) else None
    if not isinstance(curve, dict) or not {"threshold", "recall"} <= set(curve):
        raise InputError(
            "no PR curve in the metrics file (run tzl-evaluate with include_curve=true)",
            path=path,
            where="curve",
        )
    ev = SimpleNamespace(recall=curve["recall"], thresholds=curve["threshold"])
    threshold = threshold_for_recall(ev, target_recall)
    log.info("threshold %.4f reaches recall %.3f on %s", threshold, target_recall, path)
    return threshold


def run(cfg: DictConfig):
    """Run the picking described by a composed ``pick`` config; returns the picks DataFrame."""
    from topaz_lightning.io.coordinates import check_coordinate_output, write_coordinates
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph, write_micrograph
    from topaz_lightning.models import load_model
    from topaz_lightning.picking import pick_micrographs, sigmoid
    from topaz_lightning.preprocess import preprocess_images
    from topaz_lightning.utils.atomic import check_writable

    require(
        cfg,
        ("model_path", "micrographs", "output_dir"),
        "model_path=model.pt micrographs=dir/ radius=8 output_dir=picks",
    )
    if OmegaConf.is_missing(cfg, "radius") or cfg.get("radius") is None:
        raise ConfigError(
            "radius", "NMS radius in model (downsampled) pixels is required, e.g. radius=8"
        )
    radius = float(cfg.radius)
    if not radius >= 0:
        raise ConfigError("radius", f"must be >= 0, got {cfg.radius}")
    if cfg.score not in ("logit", "probability"):
        raise ConfigError("score", f"must be logit or probability, got {cfg.score!r}")
    k = cfg.get("particles_per_micrograph")
    if k is not None and int(k) < 0:
        raise ConfigError("particles_per_micrograph", f"must be >= 0, got {k}")
    threshold = choose_threshold(cfg)
    overwrite = bool(cfg.overwrite)
    output = check_coordinate_output(
        resolve_output(cfg, "output"), overwrite, per_micrograph=bool(cfg.per_micrograph)
    )
    # score-map outputs: the MRC maps and/or their PNG pictures
    score_exts = [
        ext
        for ext, wanted in ((".mrc", cfg.save_score_maps), (".png", cfg.get("plot_score_maps")))
        if wanted
    ]
    score_dir = resolve_output(cfg, "score_map_dir") if score_exts else None

    net, extra = load_model(cfg.model_path)
    prep = dict(extra.get("preprocess") or {})
    downsample = float(
        cfg.downsample if cfg.get("downsample") is not None else prep.get("downsample", 1.0) or 1.0
    )
    normalize = str(
        cfg.normalize
        if cfg.get("normalize") is not None
        else prep.get("normalize", "none") or "none"
    )

    sources = list_micrographs(cfg.micrographs)
    if cfg.get("subset") is not None:
        wanted = read_name_list(cfg.subset)
        missing = [n for n in wanted if n not in sources]
        if missing:
            raise InputError(
                f"{len(missing)} listed micrograph(s) not found among the inputs, e.g. {missing[0]!r}",
                path=str(cfg.subset),
            )
        sources = {n: sources[n] for n in wanted}
    if score_dir is not None:
        for name in sources:
            for ext in score_exts:
                check_writable(score_dir / f"{name}{ext}", overwrite)
    log.info(
        "picking %d micrograph(s): downsample %g, normalize %s, radius %g px",
        len(sources),
        downsample,
        normalize,
        radius,
    )
    plot_score_map = None
    if cfg.get("plot_score_maps"):
        try:
            from topaz_lightning.plots import plot_score_map
        except ImportError as err:
            log.warning("skipping score-map pictures (%s)", err)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sources), desc="picking", unit="micrograph")

    names = list(sources)
    chunk = int(cfg.get("chunk_size") or 0) or max(len(names), 1)
    frames = []
    for start in range(0, len(names), chunk):
        part = names[start : start + chunk]
        # the GMM normalization is fitted over the micrographs read together (one chunk)
        raw = {name: read_micrograph(sources[name]) for name in part}
        images = preprocess_images(
            raw, downsample=downsample, normalize=normalize, seed=int(cfg.seed)
        )
        del raw

        def after_scoring(name, score_map, images=images):
            if cfg.save_score_maps:
                write_micrograph(score_dir / f"{name}.mrc", score_map, overwrite=overwrite)
            if plot_score_map is not None:
                plot_score_map(
                    images[name], score_map, score_dir / f"{name}.png", overwrite=overwrite
                )
            if bar is not None:
                bar.update(1)

        frames.append(
            pick_micrographs(
                net,
                images,
                radius=radius,
                threshold=threshold,
                device=str(cfg.device),
                max_picks=None if k is None else int(k),
                scale=downsample,
                batch_size=int(cfg.batch_size),
                tile_size=None if cfg.get("tile_size") is None else int(cfg.tile_size),
                on_score_map=after_scoring,
            )
        )
        del images
    if bar is not None:
        bar.close()
    picks = pd.concat(frames, ignore_index=True) if frames else pick_micrographs(net, {}, radius)
    if cfg.score == "probability":
        picks["score"] = sigmoid(picks["score"].to_numpy())
    if picks.empty:
        log.warning("no picks above the threshold; writing an empty table")
    write_coordinates(
        picks,
        output,
        fmt=cfg.get("format"),
        overwrite=overwrite,
        per_micrograph=bool(cfg.per_micrograph),
        box_size=cfg.get("box_size"),
    )
    print(f"wrote {len(picks)} picks from {len(names)} micrograph(s) to {output}")
    return picks


@entry_point("pick")
def main(cfg: DictConfig) -> None:
    """tzl-pick entry point: see the module docstring and configs/pick.yaml."""
    run(cfg)


if __name__ == "__main__":
    main()
