"""Liver crops of the labelled CTs, as a liver dataset ships them: the volume cut to the liver's bounding box
plus a margin, image and labels alike (the grid's origin moves, spacing and direction stay).

    python make_crops.py OUT_DIR [--margins 10 30 ...]

Writes OUT_DIR/<case>-<kind>-<margin>mm/{image,labels}.nii.gz, labels.json and case.csv, and prints the
`--set` arguments of scripts/evaluate_builtin.py for them; kind is 'box' (cut along every axis) or 'slab' (only
the slices holding the liver, whole cross-sections).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from unimiss.data.io import read_image

DATA = Path(os.environ.get("UNIMISS_TEST_DATA", "/work/shared")) / "data" / "ct"
CASES = {"ts-abdomen": DATA / "ts-abdomen" / "image.nii.gz", "ts-dicom": DATA / "ts-dicom" / "dicom",
         "lidc-idri-0001": DATA / "lidc-idri-0001" / "image.nii.gz"}


def liver_value(case_dir: Path) -> int:
    names = json.loads((case_dir / "labels.json").read_text())["labels"]
    return next(int(v) for v, n in names.items() if n == "liver")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--margins", type=float, nargs="+", default=[10.0, 30.0])
    args = parser.parse_args()
    rows = []
    for case, image_path in CASES.items():
        image = read_image(image_path).to_sitk()
        labels = sitk.ReadImage(str(DATA / case / "labels.nii.gz"))
        array = sitk.GetArrayFromImage(labels)
        z, y, x = np.nonzero(array == liver_value(DATA / case))
        spacing = labels.GetSpacing()[::-1]
        for margin in args.margins:
            for kind in ("box", "slab"):
                bounds = []  # (first, last + 1) per axis z, y, x
                for axis, idx in enumerate((z, y, x)):
                    pad = int(round(margin / spacing[axis]))
                    whole = kind == "slab" and axis > 0
                    bounds.append((0, array.shape[axis]) if whole else
                                  (max(int(idx.min()) - pad, 0), min(int(idx.max()) + pad + 1, array.shape[axis])))
                index, size = [lo for lo, _ in bounds][::-1], [hi - lo for lo, hi in bounds][::-1]
                folder = args.out / f"{case}-{kind}-{int(margin)}mm"
                folder.mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(sitk.RegionOfInterest(image, size, index), str(folder / "image.nii.gz"))
                sitk.WriteImage(sitk.RegionOfInterest(labels, size, index), str(folder / "labels.nii.gz"))
                shutil.copy(DATA / case / "labels.json", folder / "labels.json")
                with open(folder / "case.csv", "w", newline="", encoding="utf-8") as f:
                    f.write("image,label\nimage.nii.gz,labels.nii.gz\n")
                rows.append(folder.name)
    print(" ".join(f"--set {name} {args.out / name / 'case.csv'}" for name in rows))


if __name__ == "__main__":
    main()
