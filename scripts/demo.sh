#!/usr/bin/env bash
# make demo: the whole pipeline on the built-in simulated dataset (no downloads):
#   simulate -> train (GE-binomial, conv31) -> pick the held-out micrographs -> evaluate + pictures.
# Usage: scripts/demo.sh [OUT_DIR] ; DEMO_STEPS=... overrides the number of training steps.
# Interrupted? Run it again: every step continues (training from its last checkpoint, picking from
# the finished micrographs); a finished step is reused. Remove OUT_DIR/run to start over.
set -euo pipefail
OUT=${1:-demo_out}
STEPS=${DEMO_STEPS:-3000}
BIN=${BIN:-.venv/bin}
DATA="$OUT/data"
RUN="$OUT/run"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

echo "== 1/4 simulate the demo dataset into $DATA"
if [ -f "$DATA/dataset.yaml" ]; then
  echo "   (exists, reused)"
else
  "$BIN/tzl-simulate" simulate=demo seed=0 out_dir="$DATA" num_workers=2 hydra.run.dir="$OUT/simulate_log"
fi

echo "== 2/4 train conv31 + GE-binomial for $STEPS steps (16 positive + 240 unlabeled patches per step)"
if [ -f "$RUN/train/model.pt" ]; then
  echo "   (finished earlier, reused: remove $RUN to train again)"
else
  # a rerun of the same command continues from $RUN/train/checkpoints/last.ckpt
  "$BIN/tzl-train" data.simulated_dir="$DATA" trainer.max_steps="$STEPS" \
    callbacks.held_out_picking.every_n_steps=500 callbacks.held_out_picking.log_images=true \
    hydra.run.dir="$RUN/train"
fi

# NMS radius and match distance: the dataset's, carried by model.pt (extra["geometry"])
echo "== 3/4 pick the held-out micrographs"
"$BIN/tzl-pick" model_path="$RUN/train/model.pt" micrographs="$DATA/micrographs" \
  subset="$DATA/test.txt" output_dir="$RUN/pick" save_score_maps=true progress=false

# picks.tsv keeps the number of particles the model expects per micrograph (tzl-pick's default);
# evaluating the pick run's directory uses every local maximum it stored (the full PR curve)
echo "== 4/4 evaluate against the complete simulated truth"
"$BIN/tzl-evaluate" picks="$RUN/pick" truth="$DATA/particles.tsv" micrographs="$DATA/test.txt" \
  model_path="$RUN/train/model.pt" output_dir="$RUN/evaluate" \
  overlay_micrographs="$DATA/micrographs" score_maps="$RUN/pick/score_maps" overwrite=true

echo
echo "demo finished: $RUN"
echo "  metrics:  $RUN/evaluate/metrics.json"
echo "  pictures: $RUN/evaluate/*.png"
