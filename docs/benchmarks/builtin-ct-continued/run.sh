#!/usr/bin/env bash
# Does the 105-minute CT recipe gain from more of the same? Each 105-minute run continued MINUTES more on its own
# cases at a third of the from-scratch rate (a second decay), the three side by side, one thread each:
#   nolidc:       ct-nolidc-105 (trained without LIDC-IDRI-0001, ../builtin-ct-longer/heldout.sh WORK 105 lidc),
#                 scored on LIDC-IDRI-0001;
#   nots-abdomen: ct-nots-abdomen-105 (heldout.sh WORK 105 ts-abdomen), scored on ts-abdomen in its three phases;
#   all:          ct-all-105 (1.4.x's weights, ../builtin-ct-longer/run.sh) on every case: the candidate to ship,
#                 scored on its training patients.
# Each is scored as 1.4.1 segments (largest part, the aorta's parts up to 30 mm apart joined).
#   bash docs/benchmarks/builtin-ct-continued/run.sh WORK MINUTES
set -euo pipefail
cd "$(dirname "$0")/../../.."
WORK=$1; MINUTES=$2; OUT=docs/benchmarks/builtin-ct-continued
export UNIMISS_HOME="$WORK/home"
ARGS="--validation 0 --minutes $MINUTES --lr 1e-3 --seed 1 --patience 1000 --progress jsonl"
for run in nolidc nots-abdomen all; do
  csv=$run; [ "$run" = all ] && csv=all-ricord
  OMP_NUM_THREADS=1 unimiss finetune --base "ct-$run-105" --csv "$WORK/data/$csv.csv" --name "ct-$run-105-more$MINUTES" \
    $ARGS --workdir "$WORK/$run-more-work" > "$WORK/$run-more.jsonl" 2> "$WORK/$run-more.err" &
done
wait
bash "$OUT/evaluate.sh" "$WORK" "$MINUTES"
