"""Pick particles: score micrographs with a trained model and extract coordinates by NMS (a Lightning predict loop).

Reads the micrographs (directory, glob or list file) one at a time in a DataLoader (the next is
prefetched while the current one is scored; memory stays flat in their number), preprocesses
them as the model's training data (Fourier-crop factor and normalization from model.pt), scores
every pixel with the classifier, keeps picks at least the NMS radius apart, and writes each
micrograph's picks atomically as soon as it is done (``<output_dir>/picks_by_micrograph/``);
the combined output (any coordinate format, one file or one per micrograph, in the micrographs'
own pixels) is assembled from those at the end.

Defaults come from model.pt: the NMS radius from the run's geometry (``nms_radius_px_model``,
model = downsampled pixels; or give ``nms_radius_px`` in micrograph pixels), the downsampling
factor and the normalization. ``normalize=gmm`` is fitted ONCE over a pixel sample of all the
micrographs being picked (``normalize_fit=run``) or taken from training
(``normalize_fit=training``); ``normalization.json`` in the run directory says which.

A threshold comes from a logit, a probability, the expected number of particles per micrograph
(top k) or a target recall on validation data (``target_recall`` + the metrics JSON of
``tzl-evaluate``). The score column holds logits or probabilities (``score=``).

Interrupted runs continue: rerun the same command and it skips the micrographs already done
(and picks the rest), ending with the outputs of an uninterrupted run. The parts keep every NMS
maximum (dense scoring), so a rerun that changes only the threshold, top k, score column,
output, format or layout re-extracts from them in seconds, without scoring. A rerun with other
pick-deciding settings is refused, naming the changed keys; ``overwrite=true`` starts over
(removing only this job's old outputs). A micrograph that cannot be read is skipped and listed in
``failures.tsv`` (exit status 3); ``strict=true`` stops at the first. ``trainer=ddp`` (GPUs) or
``trainer=ddp_cpu`` shards the micrographs over processes.

What scores the micrographs is the ``picker`` config group (configs/picker/): ``model`` (the
default: the classifier in ``model_path``, this package's or an installed package's through the
``topaz_lightning.models`` entry points) or a classical baseline, ``dog`` (difference of
Gaussians) or ``template`` (template matching), which need ``picker.particle_diameter_px``
(micrograph pixels) and ``picker.downsample``. Every picker gives a score map; NMS, thresholds,
outputs, continuing and ``picks.html`` are the same, and ``tzl-evaluate`` reads any of them.

Example usage::

    # the simulator's test micrographs, with a model from tzl-train (radius from model.pt)
    tzl-pick model_path=outputs/train/<run>/model.pt micrographs=data/simulated/demo_seed0/micrographs \
        subset=data/simulated/demo_seed0/test.txt output_dir=picks_demo

    # EMPIAR-10017 JPEGs: STAR output at full size, top 150 per micrograph, score maps as MRC
    tzl-pick model_path=model.pt micrographs=data/samples/empiar10017_dev/images \
        particles_per_micrograph=150 output=picks.star save_score_maps=true output_dir=picks_10017

    # all GPUs of the machine
    tzl-pick model_path=model.pt micrographs='/data/mics/*.mrc' trainer=ddp output_dir=picks_all

    # the difference-of-Gaussians baseline (40 px particles, scored at 1/4 size), then its AUPR
    tzl-pick picker=dog picker.particle_diameter_px=40 picker.downsample=4 \
        micrographs=mics/ output_dir=picks_dog
    tzl-evaluate picks=picks_dog truth=truth.star max_distance=20 output_dir=eval_dog
"""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from topaz_lightning.cli._hydra import entry_point
from topaz_lightning.io.micrographs import read_micrograph_names as read_name_list  # noqa: F401
from topaz_lightning.picking.threshold import (  # noqa: F401 - the public names of before
    choose_threshold,
    threshold_from_metrics,
)


def run(cfg: DictConfig) -> pd.DataFrame | None:
    """Run the picking described by a composed ``pick`` config (:func:`topaz_lightning.pick.pick`);
    returns the picks DataFrame (None on the extra DDP ranks)."""
    from topaz_lightning.pick import pick

    _, objects = pick(cfg)
    return objects.get("picks")


@entry_point("pick")
def main(cfg: DictConfig) -> None:
    """tzl-pick entry point: see the module docstring and configs/pick.yaml."""
    run(cfg)


if __name__ == "__main__":
    main()
