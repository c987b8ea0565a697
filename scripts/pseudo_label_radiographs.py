"""Self-training on real radiographs: a 2D model's cleaned predictions on unlabelled chest radiographs,
and a sheet to check every one by eye before any is trained on.

    python scripts/pseudo_label_radiographs.py MODEL OUT_DIR RADIOGRAPH_OR_FOLDER ...
        [--accept scripts/radiograph_pseudo_labels.json]

For each radiograph: OUT_DIR/<name>.nrrd (the image) and <name>.seg.nrrd (the model's labels, each class
reduced to its largest connected piece with its holes filled, the heart no lower than the lungs reach,
which removes the scattered blobs a model trained on DRRs leaves on real images), and OUT_DIR/review.png, all of them side by side. With --accept
(a JSON {"accepted": {"<name>": "why"}, "rejected": {"<name>": "why"}} written after looking at the
sheet), OUT_DIR/accepted.csv lists the accepted pairs for `unimiss finetune --csv`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from preview_builtin_models import contact_sheet
from unimiss.data import ImageData, read_image, read_labelmap, write_labelmap
from unimiss.data.inputs import case_name, expand_inputs
from unimiss.inference import keep_largest_components
from unimiss.preview import render


def clean(labels: ImageData, names: dict[int, str]) -> ImageData:
    """Each class's largest piece, holes filled; the heart no lower than the lungs reach (the diaphragm)."""
    lungs = np.isin(labels.array, [v for v, n in names.items() if n.startswith("lung")])
    rows = np.flatnonzero(lungs.any(axis=1))
    clipped = labels.array.copy()
    heart = [v for v, n in names.items() if n == "heart"]
    if heart and rows.size:
        clipped[rows.max() + 1:][clipped[rows.max() + 1:] == heart[0]] = 0
    largest = keep_largest_components(labels.with_array(clipped)).array
    out = np.zeros_like(largest)
    for value in np.unique(largest[largest > 0]):
        out[ndimage.binary_fill_holes(largest == value) & (out == 0)] = value
    return labels.with_array(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out", type=Path)
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--accept", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tiles, rows = [], ["image,label"]
    verdicts = json.loads(args.accept.read_text()) if args.accept else None
    for path in expand_inputs(args.inputs):
        name = case_name(path)
        seg = args.out / f"{name}.seg.nrrd"
        subprocess.run([sys.executable, "-m", "unimiss", "segment", str(path), "-o", str(seg), "--model", args.model,
                        "--progress", "none"], check=True)
        image = read_image(path)
        sitk.WriteImage(image.to_sitk(), str(args.out / f"{name}.nrrd"), True)
        predicted, labels = read_labelmap(seg)
        cleaned = clean(predicted, {label.value: label.name for label in labels})
        write_labelmap(cleaned, seg, labels)
        picture = Image.fromarray(render(image, cleaned, labels, modality_ct=False)).convert("RGB")
        tiles.append(picture)
        if verdicts is not None and name in verdicts["accepted"]:
            rows.append(f"{name}.nrrd,{name}.seg.nrrd")
    contact_sheet(tiles).save(args.out / "review.png")
    if verdicts is not None:
        (args.out / "accepted.csv").write_text("\n".join(rows) + "\n")
        print(f"{len(rows) - 1} accepted of {len(tiles)}", file=sys.stderr)


if __name__ == "__main__":
    main()
