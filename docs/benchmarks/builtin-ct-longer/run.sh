#!/usr/bin/env bash
# Does more time pay for the CT recipe on a chest CT it never saw? Two runs side by side, one thread each, on the
# data of scripts/train_builtin_models.sh (prepare_demo_data.py, ricord_atlas_labels.py written to $WORK/data):
#   nolidc: the 1.3.x recipe from scratch on ts-dicom, ts-abdomen and RICORD-1B (three phases each), scored on
#           LIDC-IDRI-0001 as the 50-minute report run was (docs/benchmarks/builtin-ct-1.3.0/);
#   all:    the same minutes from scratch on every case (a candidate for the shipped model).
#   bash docs/benchmarks/builtin-ct-longer/run.sh WORK MINUTES
set -euo pipefail
cd "$(dirname "$0")/../../.."
WORK=$1; MINUTES=$2
export UNIMISS_HOME="$WORK/home"
CT_ARGS="--config compact --spacing 2.5 2.5 2.5 --patch-size 32 128 128 --seed 0 --patience 1000 --progress jsonl"
( cat "$WORK/data/all.csv"; tail -n +2 "$WORK/data/ricord-phases.csv" ) > "$WORK/data/all-ricord.csv"
bash docs/benchmarks/builtin-ct-longer/heldout.sh "$WORK" "$MINUTES" lidc &
OMP_NUM_THREADS=1 unimiss finetune --csv "$WORK/data/all-ricord.csv" --validation 0 --name ct-all-$MINUTES \
  --minutes "$MINUTES" $CT_ARGS --workdir "$WORK/all-work" > "$WORK/all.jsonl" 2> "$WORK/all.err"
wait
CT_POST='{"largest_component": true, "join_gaps_mm": {"aorta": 20}}'
python scripts/as_shipped.py "$UNIMISS_HOME/models" ct-nolidc-$MINUTES ct-nolidc-$MINUTES-shipped "$CT_POST"
python scripts/as_shipped.py "$UNIMISS_HOME/models" ct-all-$MINUTES ct-all-$MINUTES-shipped "$CT_POST"
