#!/usr/bin/env bash
# Scores the runs of run.sh, segmented as the shipped model segments (largest part, the aorta's parts less than
# 20 mm apart kept together):
#   the nolidc run on LIDC-IDRI-0001, which it never saw (heart, aorta, lungs; and liver, spleen, kidneys);
#   the all run on its training patients (does it fit what it learnt?); ct-organs-compact-1.3.1-training-patients.json
#   holds 1.3.1's figures from the same command, run with the built-in model (1.3.1 then).
#   bash docs/benchmarks/builtin-ct-longer/evaluate.sh WORK MINUTES
set -euo pipefail
cd "$(dirname "$0")/../../.."
WORK=$1; MINUTES=$2; OUT=docs/benchmarks/builtin-ct-longer
export UNIMISS_HOME="$WORK/home"
printf 'image,label\nlidc.nrrd,lidc.seg.nrrd\n' > "$WORK/data/lidc-all.csv"
python scripts/evaluate_builtin.py ct-nolidc-$MINUTES-shipped "$OUT/nolidc-$MINUTES-heldout.json" --largest-component \
  --set "LIDC-IDRI-0001 (heart aorta lungs)" "$WORK/data/lidc-heldout.csv" \
  --set "LIDC-IDRI-0001 (all classes)" "$WORK/data/lidc-all.csv"
python scripts/evaluate_builtin.py ct-all-$MINUTES-shipped "$OUT/ct-all-$MINUTES-shipped-training-patients.json" \
  --largest-component \
  --set "LIDC heart aorta lungs" "$WORK/data/lidc-heldout.csv" \
  --set "RICORD" "$WORK/data/ricord-heldout.csv" \
  --set "ts-abdomen native" "$WORK/data/heldout-native.csv" \
  --set "ts-abdomen arterial" "$WORK/data/heldout-arterial.csv"
