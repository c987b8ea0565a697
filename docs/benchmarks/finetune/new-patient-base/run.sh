#!/usr/bin/env bash
# Fine-tuning from a base that never saw the patients the user labels (issue 12), about 70 minutes on 2 cores:
# the built-in CT recipe trained 50 minutes on the two chest CTs only (LIDC-IDRI-0001 with its labels, RICORD-1B
# with its atlas labels, each in three contrast phases), segmenting as ct-organs-compact 1.3.1 does; then the
# benchmark's base arm on the two abdomen folds side by side, one thread each.
#   bash docs/benchmarks/finetune/new-patient-base/run.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/../../../.."
WORK=${1:-/tmp/unimiss-new-patient-base}
OUT=docs/benchmarks/finetune/new-patient-base
export UNIMISS_HOME="$WORK/home"
python scripts/prepare_demo_data.py "$WORK/data"
python scripts/ricord_atlas_labels.py "$WORK/data"
( head -4 "$WORK/data/all.csv"; tail -n +2 "$WORK/data/ricord-phases.csv" ) > "$WORK/data/chest.csv"  # LIDC's phases, RICORD's
OMP_NUM_THREADS=1 unimiss finetune --csv "$WORK/data/chest.csv" --validation 0 --name ct-organs-chest --minutes 50 \
  --config compact --spacing 2.5 2.5 2.5 --patch-size 32 128 128 --seed 0 --patience 1000 --progress jsonl \
  --workdir "$WORK/chest-work" > "$WORK/chest.jsonl"
python scripts/as_shipped.py "$UNIMISS_HOME/models" ct-organs-chest ct-organs-chest-shipped \
  '{"largest_component": true, "join_gaps_mm": {"aorta": 20}}'
for fold in ts-dicom ts-abdomen; do
  OMP_NUM_THREADS=1 python Testing/benchmarks/bench_finetune.py run --arms base --folds $fold --minutes 15 --threads 1 \
    --base "$UNIMISS_HOME/models/ct-organs-chest-shipped-1.0.0" --tag chest-base --out $OUT --work "$WORK/b-$fold" \
    > "$WORK/b-$fold.log" 2>&1 &
done
wait
python Testing/benchmarks/bench_finetune.py report --out $OUT  # once both folds are in
