"""Dice of a saved prediction with every part kept, with each class's largest part alone, and with the parts at
least half the largest one's size as well, as a model from `unimiss finetune` now segments the classes its cases
drew as one piece (`keep_largest_components`, `comparable_parts` 0.5).

    python docs/benchmarks/finetune/parts/rescore.py PREDICTION.seg.nrrd REFERENCE.seg.nrrd [CLASS=MM ...]

CLASS=MM joins a class's parts less than MM apart first (`postprocessing.join_gaps_mm`, as the built-in CT model).
"""
import json
import sys
import tempfile
from pathlib import Path

from unimiss.data import read_labelmap, write_labelmap
from unimiss.evaluation import evaluate_files
from unimiss.inference import keep_largest_components


def dice(prediction, reference):
    report = evaluate_files(prediction, reference)
    return {k: round(v["dice"], 4) for k, v in report["labels"].items() if v["voxels_ref"] or v["voxels_pred"]}


prediction, reference = map(Path, sys.argv[1:3])
labels, names = read_labelmap(prediction)
value = {label.name: label.value for label in names}
joins = {value[c]: float(mm) for c, mm in (a.split("=") for a in sys.argv[3:])}
scores = {"every_part": dice(prediction, reference)}
with tempfile.TemporaryDirectory() as tmp:
    for rule, comparable in (("largest_part", 0.0), ("comparable_parts_0.5", 0.5)):
        kept = Path(tmp) / f"{rule}.seg.nrrd"
        write_labelmap(keep_largest_components(labels, joins, comparable=comparable), kept, names)
        scores[rule] = dice(kept, reference)
print(json.dumps(scores))
