"""Turn the labelled CTs of ../shared/data into training cases for the built-in CT model.

    python scripts/prepare_demo_data.py OUT_DIR

Writes OUT_DIR/<case>.nrrd (CT) and OUT_DIR/<case>.seg.nrrd (the classes of
scripts/demo_labels.json, with colours and SNOMED CT codes, matched by name through
each case's labels.json; lung lobes merged) and OUT_DIR/cases.csv: training cases
first, then the held-out validation cases. LIDC-IDRI-0001 is split along z: a slab
through the heart and lungs is held out for validation, beside the whole ts-abdomen
case (another patient). The labels are automatic TotalSegmentator outputs.

For the radiograph model it also writes OUT_DIR/chest/lidc.nrrd and lidc.seg.nrrd:
the whole chest CT with the radiograph classes (lungs, heart, clavicles, in drawing
order), the input of `unimiss drr`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from unimiss.data import ImageData, Label, read_image, write_labelmap

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
TABLE = json.loads((Path(__file__).with_name("demo_labels.json")).read_text())["labels"]
VALIDATION_SLAB = (70, 100)  # LIDC-IDRI-0001 slices (inferior to superior): heart, both lungs, aorta


def merged_labels(case: Path, labelmap: ImageData, classes) -> np.ndarray:
    names = {v: int(k) for k, v in json.loads((case / "labels.json").read_text())["labels"].items()}
    out = np.zeros(labelmap.array.shape, np.uint8)
    for value, entry in enumerate(classes, start=1):
        for source in entry["from"]:
            if source in names:
                out[labelmap.array == names[source]] = value
    return out


def slab(image: ImageData, z0: int, z1: int) -> ImageData:
    direction = np.reshape(image.direction, (3, 3))
    origin = np.array(image.origin) + direction @ np.array([0.0, 0.0, z0 * image.spacing[2]])
    return ImageData(image.array[z0:z1], image.spacing, tuple(origin), image.direction)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    chest_names = ["lung_left", "lung_right", "heart", "clavicula_left", "clavicula_right"]
    chest = [next(c for c in TABLE if c["name"] == n) for n in chest_names]
    chest_labels = [Label(v, c["name"], tuple(c["color"]), c["terminology"]) for v, c in enumerate(chest, start=1)]
    lidc = DATA / "lidc-idri-0001"
    image = read_image(lidc / "image.nii.gz")
    (out / "chest").mkdir(exist_ok=True)
    sitk.WriteImage(image.to_sitk(), str(out / "chest" / "lidc.nrrd"), True)
    write_labelmap(image.with_array(merged_labels(lidc, read_image(lidc / "labels.nii.gz"), chest)),
                   out / "chest" / "lidc.seg.nrrd", chest_labels)

    classes = [c for c in TABLE if not c.get("radiograph_only")]
    labels = [Label(v, c["name"], tuple(c["color"]), c["terminology"]) for v, c in enumerate(classes, start=1)]
    cases = {}
    for name, source in (("lidc", "lidc-idri-0001"), ("ts-dicom", "ts-dicom"), ("ts-abdomen", "ts-abdomen")):
        folder = DATA / source
        image = read_image(folder / "dicom" if (folder / "dicom").is_dir() else folder / "image.nii.gz")
        labelmap = read_image(folder / "labels.nii.gz")
        cases[name] = (image, image.with_array(merged_labels(folder, labelmap, classes)))
    image, labelmap = cases.pop("lidc")
    z0, z1 = VALIDATION_SLAB
    cases["lidc-inferior"] = (slab(image, 0, z0), slab(labelmap, 0, z0))
    cases["lidc-superior"] = (slab(image, z1, image.array.shape[0]), slab(labelmap, z1, image.array.shape[0]))
    cases["lidc-slab"] = (slab(image, z0, z1), slab(labelmap, z0, z1))
    order = ["lidc-inferior", "lidc-superior", "ts-dicom", "ts-abdomen", "lidc-slab"]  # the last two: validation
    rows = ["image,label"]
    for name in order:
        image, labelmap = cases[name]
        sitk.WriteImage(image.to_sitk(), str(out / f"{name}.nrrd"), True)
        write_labelmap(labelmap, out / f"{name}.seg.nrrd", labels)
        rows.append(f"{name}.nrrd,{name}.seg.nrrd")
        present = [l.name for l in labels if (labelmap.array == l.value).any()]
        print(f"{name}: {image.array.shape[::-1]} voxels, {', '.join(present)}")
    (out / "cases.csv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
