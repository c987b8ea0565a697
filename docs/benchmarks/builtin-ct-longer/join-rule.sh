#!/usr/bin/env bash
# The aorta's joining rule (postprocessing.join_gaps_mm) on the two held-out runs of the 105-minute recipe, each scored
# on the patient it never saw: ct-nolidc-105 (run.sh) on LIDC-IDRI-0001, ct-nots-abdomen-105 (heldout.sh WORK 105
# ts-abdomen) on ts-abdomen in its native phase and with simulated arterial and venous contrast. Each rule is a copy
# of the model that segments under it (scripts/as_shipped.py); "all" keeps every part.
#   bash docs/benchmarks/builtin-ct-longer/join-rule.sh WORK MINUTES
set -euo pipefail
cd "$(dirname "$0")/../../.."
WORK=$1; MINUTES=$2; OUT=docs/benchmarks/builtin-ct-longer
export UNIMISS_HOME="$WORK/home"
printf 'image,label\nts-abdomen-venous.nrrd,ts-abdomen-venous.seg.nrrd\n' > "$WORK/data/heldout-venous.csv"
for rule in all 20 30 40 60; do
  if [ "$rule" = all ]; then post='{"largest_component": false}'
  else post="{\"largest_component\": true, \"join_gaps_mm\": {\"aorta\": $rule}}"; fi
  for run in nolidc nots-abdomen; do
    python scripts/as_shipped.py "$UNIMISS_HOME/models" "ct-$run-$MINUTES" "ct-$run-$MINUTES-join-$rule" "$post"
  done
  python scripts/evaluate_builtin.py "ct-nolidc-$MINUTES-join-$rule" "$WORK/join-$rule-lidc.json" \
    --set "LIDC-IDRI-0001" "$WORK/data/lidc-all.csv"
  python scripts/evaluate_builtin.py "ct-nots-abdomen-$MINUTES-join-$rule" "$WORK/join-$rule-ts-abdomen.json" \
    --set "ts-abdomen native" "$WORK/data/heldout-native.csv" \
    --set "ts-abdomen arterial" "$WORK/data/heldout-arterial.csv" \
    --set "ts-abdomen venous" "$WORK/data/heldout-venous.csv"
done
python - "$WORK" "$OUT/join-rule-heldout.json" <<'PY'
import json, sys
work, out = sys.argv[1:]
rules = ["all", "20", "30", "40", "60"]
table = {rule: {**json.load(open(f"{work}/join-{rule}-lidc.json")), **json.load(open(f"{work}/join-{rule}-ts-abdomen.json"))}
         for rule in rules}
json.dump(table, open(out, "w"), indent=1)
for case in table["all"]:
    print(case, " ".join(f"{rule}: {table[rule][case]['aorta']:.3f}" for rule in rules))
PY
