#!/usr/bin/env bash
# The fine-tuning benchmark as run for the README (docs/benchmarks/finetune/run5/, about 2 hours 20 minutes on 2 cores):
# each unimiss run beside its MONAI peer, one thread each, so both cores are busy and each arm shares the
# machine as its peer does; then the base arm on two folds side by side, one thread each; then the 2D arm and one
# fold alone on both cores, and a second seed of two folds.
#   bash Testing/benchmarks/run_finetune_benchmark.sh [WORK_DIR] [BASE_WITHOUT_TS_ABDOMEN] [BASE_WITHOUT_LIDC]
# The bases: the built-in recipe trained without the held-out patient (`ct-organs-nots-abdomen-shipped` and
# `ct-organs-nolidc-shipped`, steps 4 and 5 of scripts/train_builtin_models.sh), so that the base arm starts
# from a model that never saw the patient it is scored on. (Run 4, docs/benchmarks/finetune/run4/, started the
# ts-abdomen fold from `ct-organs-heldout`, the 50-minute run of the recipe of the time.)
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/unimiss-bench-finetune}
MODELS=/tmp/unimiss-builtin/home/models  # train_builtin_models.sh's default WORK
BASE_TS=${2:-$MODELS/ct-organs-nots-abdomen-shipped-1.0.0}
BASE_LIDC=${3:-$MODELS/ct-organs-nolidc-shipped-1.0.0}
OUT=${OUT:-docs/benchmarks/finetune/run5}
B="python Testing/benchmarks/bench_finetune.py run --threads 1 --out $OUT --plot docs/finetune-benchmark.png"
export OMP_NUM_THREADS=1
mkdir -p "$WORK"
for fold in lidc-idri-0001 ts-abdomen ts-dicom; do
  $B --arms scratch --folds $fold --work "$WORK/s-$fold" > "$WORK/scratch-$fold.log" 2>&1 &
  $B --arms monai --folds $fold --work "$WORK/m-$fold" > "$WORK/monai-$fold.log" 2>&1
  wait
done
$B --arms drr --work "$WORK/drr" > "$WORK/drr.log" 2>&1 &
sleep 20
$B --arms monai-drr --work "$WORK/mdrr" > "$WORK/monai-drr.log" 2>&1
wait
$B --arms base --folds ts-abdomen --base "$BASE_TS" --work "$WORK/b-ts" > "$WORK/base-ts-abdomen.log" 2>&1 &
$B --arms base --folds lidc-idri-0001 --base "$BASE_LIDC" --work "$WORK/b-lidc" > "$WORK/base-lidc.log" 2>&1
wait
# The 2D arm and the chest CT's fold alone on both cores, as a user's laptop runs them; then a second seed
# of two 3D folds side by side.
OMP_NUM_THREADS=2 ${B/--threads 1/--threads 2} --arms drr --tag alone-2-threads --work "$WORK/drr" > "$WORK/drr-2t.log" 2>&1
OMP_NUM_THREADS=2 ${B/--threads 1/--threads 2} --arms scratch --folds lidc-idri-0001 --tag alone-2-threads \
  --work "$WORK/s2-lidc" > "$WORK/scratch-2t-lidc.log" 2>&1
for fold in ts-abdomen ts-dicom; do
  $B --arms scratch --folds $fold --seed 1 --tag seed1 --work "$WORK/s1-$fold" > "$WORK/seed1-$fold.log" 2>&1 &
done
wait
