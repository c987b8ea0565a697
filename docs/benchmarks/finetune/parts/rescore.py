"""Dice of a saved prediction with every part kept and with each class's largest part kept, as a model from
`unimiss finetune` now segments the classes its cases drew as one piece (`keep_largest_components`).

    python docs/benchmarks/finetune/parts/rescore.py PREDICTION.seg.nrrd REFERENCE.seg.nrrd
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
with tempfile.TemporaryDirectory() as tmp:
    largest = Path(tmp) / "largest.seg.nrrd"
    write_labelmap(keep_largest_components(labels), largest, names)
    print(json.dumps({"every_part": dice(prediction, reference), "largest_part": dice(largest, reference)}))
