"""Classical baselines on simulated presets: AUPR of a DoG picker and of template matching.

The simulator's default presets must not be solvable by these simple pickers (AUPR well below
0.9) while the particles stay visible by eye after a lowpass (see the contact sheets in
docs/img/). For each preset this simulates the dataset (seeded), then on its test micrographs:

- DoG: difference of Gaussians at the particle radius (sigma r/sqrt(2), ratio 1.6), NMS;
- template: the rotationally averaged mean of all labeled training particles (like a
  reference-based picker given every training particle), cross-correlation, NMS.

Picks are matched to the complete truth within the preset's match distance.

The same baselines run through ``tzl-pick`` (``picker=dog|template``, configs/picker/) with the
picking pipeline's own border handling (striped-band mask, ``border_margin_px_model``, after NMS)
instead of this script's mask of the border before NMS; evaluated with ``tzl-evaluate`` they give
on the demo preset (seed 0, the 158 test particles) AUPR 0.226 (DoG) and 0.478 (template)
against this script's 0.243 and 0.491, measured with (CPU: AMD EPYC, 2 cores, shared)::

    tzl-simulate simulate=demo out_dir=demo seed=0
    tzl-pick picker=dog picker.particle_diameter_px=14.286 picker.downsample=1 \
        nms_radius_px_model=10 micrographs=demo/micrographs subset=demo/test.txt \
        particles_per_micrograph=all output_dir=dog
    tzl-pick picker=template picker.particle_diameter_px=14.286 picker.downsample=1 \
        picker.particles=demo/labeled/particles_all.tsv nms_radius_px_model=10 \
        micrographs=demo/micrographs subset=demo/test.txt particles_per_micrograph=all \
        output_dir=template
    tzl-evaluate picks=dog truth=test_truth.tsv max_distance=7 output_dir=eval_dog

(``test_truth.tsv``: the rows of ``demo/particles.tsv`` on the test micrographs; 32 s and 42 s
per ``tzl-pick`` run, most of it start-up).

Example usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/baseline_report.py
    .venv/bin/python scripts/baseline_report.py --presets demo empiar10096_like --seed 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def report(
    preset: str, seed: int, workdir: Path, num_workers: int
) -> list[tuple[str, str, float, int, int]]:
    """Simulate ``preset`` and return rows (preset, method, aupr, n_true, n_micrographs)."""
    from topaz_lightning.baselines import (
        average_precision,
        average_template,
        dog_picks,
        template_picks,
    )
    from topaz_lightning.io.coordinates import read_coordinates
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph
    from topaz_lightning.simulate import load_dataset_info, simulate_dataset

    out = simulate_dataset(workdir / preset, preset=preset, seed=seed, num_workers=num_workers)
    info = load_dataset_info(out)
    files = list_micrographs(out / "micrographs")
    images = {name: read_micrograph(path) for name, path in files.items()}
    test = (out / "test.txt").read_text().split()
    truth = read_coordinates(out / "particles.tsv")
    labeled = read_coordinates(out / info["labeled"]["all"])
    radius = float(info["particle_radius_px"])
    nms = float(info["nms_radius_px"])
    match = float(info["match_distance_px"])
    test_images = {n: images[n] for n in test}
    test_truth = truth[truth["micrograph"].isin(test)]
    rows = []
    picks = dog_picks(test_images, radius, nms)
    rows.append(
        (preset, "DoG", average_precision(picks, test_truth, match), len(test_truth), len(test))
    )
    box = int(2 * round(1.5 * radius) + 1)
    template = average_template(
        {n: images[n] for n in labeled["micrograph"].unique()}, labeled, box
    )
    picks = template_picks(test_images, template, nms)
    rows.append(
        (
            preset,
            "template",
            average_precision(picks, test_truth, match),
            len(test_truth),
            len(test),
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["demo", "shapiro_like"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=1)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tzl_baseline_") as tmp:
        for preset in args.presets:
            rows.extend(report(preset, args.seed, Path(tmp), args.num_workers))
    print(f"{'preset':<18} {'method':<9} {'AUPR':>6} {'particles':>9} {'micrographs':>11}")
    for preset, method, aupr, n_true, n_mic in rows:
        print(f"{preset:<18} {method:<9} {aupr:6.3f} {n_true:9d} {n_mic:11d}")
    print(f"(seed {args.seed}, test micrographs only, {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
