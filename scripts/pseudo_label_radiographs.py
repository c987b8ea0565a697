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

from unimiss.data import read_image, read_labelmap, write_labelmap
from unimiss.data.inputs import case_name, expand_inputs
from unimiss.preview import render


def clean(labels: np.ndarray, names: dict[int, str]) -> np.ndarray:
    """Each class's largest piece, holes filled; the heart no lower than the lungs reach (the diaphragm)."""
    lungs = np.isin(labels, [v for v, n in names.items() if n.startswith("lung")])
    rows = np.flatnonzero(lungs.any(axis=1))
    out = np.zeros_like(labels)
    for value in np.unique(labels[labels > 0]):
        mask = labels == value
        if names.get(int(value)) == "heart" and rows.size:
            mask[rows.max() + 1:] = False
        pieces, count = ndimage.label(mask)
        if count:
            largest = 1 + int(np.argmax(ndimage.sum(np.ones_like(pieces), pieces, range(1, count + 1))))
            out[ndimage.binary_fill_holes(pieces == largest) & (out == 0)] = value
    return out


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
        cleaned = predicted.with_array(clean(predicted.array, {label.value: label.name for label in labels}))
        write_labelmap(cleaned, seg, labels)
        picture = Image.fromarray(render(image, cleaned, labels, modality_ct=False)).convert("RGB")
        tiles.append(picture.resize((round(picture.width * 360 / picture.height), 360)))
        if verdicts is not None and name in verdicts["accepted"]:
            rows.append(f"{name}.nrrd,{name}.seg.nrrd")
    sheet = Image.new("RGB", (sum(t.width for t in tiles[:5]), 360 * ((len(tiles) + 4) // 5)), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (sum(t.width for t in tiles[i - i % 5:i]), 360 * (i // 5)))
    sheet.save(args.out / "review.png")
    if verdicts is not None:
        (args.out / "accepted.csv").write_text("\n".join(rows) + "\n")
        print(f"{len(rows) - 1} accepted of {len(tiles)}", file=sys.stderr)


if __name__ == "__main__":
    main()
