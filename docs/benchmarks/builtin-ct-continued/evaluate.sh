#!/usr/bin/env bash
# Scores the three runs of run.sh as 1.4.1 segments (see run.sh).
#   bash docs/benchmarks/builtin-ct-continued/evaluate.sh WORK MINUTES
set -euo pipefail
cd "$(dirname "$0")/../../.."
WORK=$1; MINUTES=$2; OUT=docs/benchmarks/builtin-ct-continued
export UNIMISS_HOME="$WORK/home"
POST='{"largest_component": true, "join_gaps_mm": {"aorta": 30}}'
for run in nolidc nots-abdomen all; do
  grep -v '"progress"' "$WORK/$run-more.jsonl" > "$OUT/$run-105-more$MINUTES.jsonl"
  python scripts/as_shipped.py "$UNIMISS_HOME/models" "ct-$run-105-more$MINUTES" "ct-$run-105-more$MINUTES-shipped" "$POST"
done
python scripts/evaluate_builtin.py "ct-nolidc-105-more$MINUTES-shipped" "$WORK/more-lidc.json" \
  --set "LIDC-IDRI-0001" "$WORK/data/lidc-all.csv"
python scripts/evaluate_builtin.py "ct-nots-abdomen-105-more$MINUTES-shipped" "$WORK/more-ts-abdomen.json" \
  --set "ts-abdomen native" "$WORK/data/heldout-native.csv" \
  --set "ts-abdomen arterial" "$WORK/data/heldout-arterial.csv" \
  --set "ts-abdomen venous" "$WORK/data/heldout-venous.csv"
python - "$WORK/more-lidc.json" "$WORK/more-ts-abdomen.json" > "$OUT/heldout-105-more$MINUTES.json" <<'PY'
import json, sys
print(json.dumps({k: v for f in sys.argv[1:] for k, v in json.load(open(f)).items()}, indent=1))
PY
python scripts/evaluate_builtin.py "ct-all-105-more$MINUTES-shipped" "$OUT/all-105-more$MINUTES-training-patients.json" \
  --set "LIDC heart aorta lungs" "$WORK/data/lidc-heldout.csv" \
  --set "RICORD" "$WORK/data/ricord-heldout.csv" \
  --set "ts-abdomen native" "$WORK/data/heldout-native.csv" \
  --set "ts-abdomen arterial" "$WORK/data/heldout-arterial.csv"
