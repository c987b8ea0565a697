#!/usr/bin/env bash
# The recipe of run.sh trained without one patient (all three phases of it), to score that patient as one it never
# saw (run.sh's nolidc arm is this script with PATIENT=lidc; join-rule.sh scores the runs). Data as in run.sh.
#   bash docs/benchmarks/builtin-ct-longer/heldout.sh WORK MINUTES PATIENT   (PATIENT: lidc, ts-abdomen, ts-dicom)
set -euo pipefail
cd "$(dirname "$0")/../../.."
WORK=$1; MINUTES=$2; PATIENT=$3
export UNIMISS_HOME="$WORK/home"
NAME=ct-no$PATIENT-$MINUTES
CT_ARGS="--config compact --spacing 2.5 2.5 2.5 --patch-size 32 128 128 --seed 0 --patience 1000 --progress jsonl"
( grep -v "^$PATIENT[.-]" "$WORK/data/all.csv"; tail -n +2 "$WORK/data/ricord-phases.csv" ) > "$WORK/data/no$PATIENT.csv"
OMP_NUM_THREADS=1 unimiss finetune --csv "$WORK/data/no$PATIENT.csv" --validation 0 --name "$NAME" \
  --minutes "$MINUTES" $CT_ARGS --workdir "$WORK/no$PATIENT-work" > "$WORK/no$PATIENT.jsonl" 2> "$WORK/no$PATIENT.err"
