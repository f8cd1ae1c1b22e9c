#!/usr/bin/env bash
# Pick one set of micrographs with a trained model in every strided refinement (window: tzl-pick's
# default, exact windows for the expected count; window_all: for every maximum) and densely, then
# evaluate all of them in one table at the match distance r and at r/2 (docs/picking_evaluation.md,
# "Scoring"). Used for the simulated presets; the real folds use
# scripts/bench_strided.py.
#
# Usage: scripts/compare_refine.sh MODEL.pt MICROGRAPH_DIR SUBSET.txt TRUTH.tsv OUT_DIR MATCH_PX
#   e.g. scripts/compare_refine.sh demo_out/run/train/model.pt demo_out/data/micrographs \
#          demo_out/data/test.txt demo_out/data/particles.tsv refine_demo 7
set -euo pipefail
if [ "$#" -ne 6 ]; then
  sed -n 2,9p "$0" >&2
  exit 2
fi
MODEL=$1 MICS=$2 SUBSET=$3 TRUTH=$4 OUT=$5 MATCH=$6
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"

pick() {  # name, extra tzl-pick overrides...
  local name=$1
  shift
  if [ -f "$OUT/pick_$name/picks.tsv" ]; then
    echo "   $name: picked earlier, reused"
    return
  fi
  "$BIN/tzl-pick" model_path="$MODEL" micrographs="$MICS" subset="$SUBSET" \
    output_dir="$OUT/pick_$name" progress=false hydra.run.dir="$OUT/log_pick_$name" "$@" \
    >"$OUT/pick_$name.log" 2>&1
  echo "   $name: $(tail -n 1 "$OUT/pick_$name.log")"
}

pick dense scoring=dense
pick window_all scoring=strided refine=window refine_exact=all
for refine in window quadratic centroid none; do
  pick "$refine" scoring=strided refine="$refine"
done

HALF=$(python3 -c "print($MATCH / 2)")
for distance in "$MATCH" "$HALF"; do
  echo "== match distance $distance px"
  "$BIN/tzl-evaluate" picks="$OUT/pick_dense" label=dense \
    "compare={window_all: $OUT/pick_window_all, window: $OUT/pick_window, quadratic: $OUT/pick_quadratic, centroid: $OUT/pick_centroid, none: $OUT/pick_none}" \
    truth="$TRUTH" micrographs="$SUBSET" max_distance="$distance" browser=false \
    output_dir="$OUT/evaluate_$distance" overwrite=true hydra.run.dir="$OUT/log_evaluate_$distance" \
    2>&1 | grep -A 7 "^run "
done
