#!/usr/bin/env bash
# The fine-tuning benchmark as run for the README (docs/benchmarks/finetune/run4/, about 90 minutes on 2 cores):
# each unimiss run beside its MONAI peer, one thread each, so both cores are busy and each arm shares the
# machine as its peer does; then the base arm alone on one thread.
#   bash Testing/benchmarks/run_finetune_benchmark.sh [WORK_DIR] [HELD_OUT_BASE_MODEL]
# HELD_OUT_BASE_MODEL: the built-in recipe trained without ts-abdomen (`ct-organs-nots-abdomen`, step 4 of
# scripts/train_builtin_models.sh), so that the base arm starts from a model that never saw the held-out patient.
# (Run 4 started from `ct-organs-heldout`, the 50-minute run of the recipe of the time that step 4 trained then.)
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/unimiss-bench-finetune}
BASE=${2:-/tmp/unimiss-builtin/home/models/ct-organs-nots-abdomen-1.0.0}  # train_builtin_models.sh's default WORK
OUT=docs/benchmarks/finetune/run4
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
$B --arms base --folds ts-abdomen --base "$BASE" --work "$WORK/b" > "$WORK/base.log" 2>&1
# The same from-scratch fold alone on both cores, for comparison with the runs above.
OMP_NUM_THREADS=2 ${B/--threads 1/--threads 2} --arms scratch --folds ts-abdomen --tag alone-2-threads \
  --work "$WORK/s2" > "$WORK/scratch-2t.log" 2>&1
