#!/usr/bin/env bash
# make demo-real: the same pipeline on the 4 real EMPIAR-10017 micrographs in data/samples
# (8-bit JPEG, 4096 px, 108 px particles): downsample 4x in memory (particles ~27 px across),
# train on 3 micrographs, pick and evaluate the 4th against its (incomplete) annotation.
# Usage: scripts/demo_real.sh [OUT_DIR] ; DEMO_STEPS=... overrides the number of training steps.
set -euo pipefail
OUT=${1:-demo_out_real}
STEPS=${DEMO_STEPS:-3000}
# held-out picking every 1000 steps (or once, at the end, for shorter runs)
EVERY=$(( STEPS < 1000 ? STEPS : 1000 ))
BIN=${BIN:-.venv/bin}
SRC=${EMPIAR10017_DIR:-data/samples/empiar10017_dev}
RUN="$OUT/run_$(date +%Y%m%d_%H%M%S)"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# Only what a user knows is given: the particle diameter in the micrographs' own pixels and the
# downsampling. The run geometry derives the rest (4x: particle radius 13.5 model px, label
# radius 4, NMS radius 1.25 r = 16.9 (67.5 full-size px), match distance 13.5 = 54 full-size px)
# and model.pt carries it to
# tzl-pick and tzl-evaluate.
DOWNSAMPLE=4
PARTICLE_DIAMETER_PX=108

if [ ! -d "$SRC/images" ]; then
  echo "error: $SRC/images not found (set EMPIAR10017_DIR)" >&2
  exit 2
fi
mkdir -p "$RUN"
printf '%s\n' Falcon_2012_06_12-14_57_34_0 Falcon_2012_06_12-15_14_01_0 Falcon_2012_06_12-15_17_31_0 > "$RUN/train.txt"
printf '%s\n' Falcon_2012_06_12-15_27_22_0 > "$RUN/test.txt"

echo "== 1/3 train conv31 + GE-binomial on 3 micrographs for $STEPS steps (4x downsampled, in memory)"
"$BIN/tzl-train" data=files data.micrographs="$SRC/images" data.coordinates="$SRC/coords" \
  data.train_list="$RUN/train.txt" data.val_list="$RUN/test.txt" \
  data.downsample=$DOWNSAMPLE data.particle_diameter_px=$PARTICLE_DIAMETER_PX \
  data.particles_per_micrograph=700 data.steps_per_epoch=500 trainer.max_steps="$STEPS" \
  callbacks.held_out_picking.every_n_steps="$EVERY" \
  hydra.run.dir="$RUN/train"

# tzl-pick's defaults (docs/accuracy.md): NMS radius 1.25 particle radii from model.pt, and picks
# on the striped bands along these micrographs' edges are dropped (border_bands=true)
echo "== 2/3 pick the held-out micrograph (coordinates written at full size)"
"$BIN/tzl-pick" model_path="$RUN/train/model.pt" micrographs="$SRC/images" subset="$RUN/test.txt" \
  output_dir="$RUN/pick" save_score_maps=true progress=false

# picks.tsv keeps the number of particles the model expects (tzl-pick's default); evaluating the
# pick run's directory uses every local maximum it stored (the full PR curve)
echo "== 3/3 evaluate against the annotation (incomplete: precision is a lower bound)"
"$BIN/tzl-evaluate" picks="$RUN/pick" truth="$SRC/coords" micrographs="$RUN/test.txt" \
  model_path="$RUN/train/model.pt" output_dir="$RUN/evaluate" \
  overlay_micrographs="$SRC/images" score_maps="$RUN/pick/score_maps"

echo
echo "demo-real finished: $RUN (metrics: $RUN/evaluate/metrics.json)"
