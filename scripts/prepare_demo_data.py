"""Turn the labelled CTs of ../shared/data into training cases for the built-in CT model.

    python scripts/prepare_demo_data.py OUT_DIR

Writes OUT_DIR/<case>.nrrd (CT) and OUT_DIR/<case>.seg.nrrd (the classes of
scripts/demo_labels.json, with colours and SNOMED CT codes, matched by name through
each case's labels.json; lung lobes merged) for every labelled CT, each also in the two
contrast phases it lacks (native, arterial, portal-venous in scripts/contrast_phases.py), and two lists:
OUT_DIR/heldout.csv trains on LIDC-IDRI-0001 and ts-dicom and validates on the
ts-abdomen patient (native and arterial) for the report; OUT_DIR/all.csv trains on
every case, for the shipped model; OUT_DIR/lidc-heldout.csv scores LIDC-IDRI-0001's heart, aorta and
lungs (lidc-heart-aorta.seg.nrrd) for a model trained without it. The labels are automatic
TotalSegmentator outputs.

For the radiograph model it also writes OUT_DIR/chest/lidc.nrrd and lidc.seg.nrrd:
the whole chest CT without contrast (radiographs see none) with the radiograph classes
(lungs, heart, clavicles, in drawing order), the input of `unimiss drr`; lidc-scr.seg.nrrd adds the structures cut out of the
lung fields (HIDDEN_FROM_LUNG_FIELDS, for `unimiss drr --hide`), and OUT_DIR/chest/ricord.nrrd and ricord.seg.nrrd:
the unlabelled RICORD-1B chest CT with its lungs found by threshold (another patient's
DRRs, to measure the lungs on).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from unimiss.data import ImageData, Label, read_image, read_labelmap, write_labelmap

from contrast_phases import TARGETS, enhance, phase_of

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
TABLE = json.loads((Path(__file__).with_name("demo_labels.json")).read_text())["labels"]


# What chest radiograph references (JSRT/SCR) leave out of the lung fields: radiation through the aorta, the
# mediastinum or structures below the diaphragm (the superior vena cava counts as lung field there).
# `unimiss drr --hide aorta mediastinum below_diaphragm` cuts them out of the projected lungs.
HIDDEN_FROM_LUNG_FIELDS = {
    "aorta": ["aorta", "brachiocephalic_trunk"],
    "mediastinum": ["esophagus", "trachea", "pulmonary_vein", "atrial_appendage_left", "brachiocephalic_vein_left",
                    "brachiocephalic_vein_right", "common_carotid_artery_left", "common_carotid_artery_right",
                    "thyroid_gland"],
    "below_diaphragm": ["liver", "spleen", "stomach", "colon", "small_bowel", "duodenum", "pancreas", "kidney_left",
                        "kidney_right", "adrenal_gland_left", "adrenal_gland_right"],
}


BONES = ("rib_", "vertebrae_", "clavicula", "scapula", "humerus", "sternum", "costal_cartilages", "hip_", "femur",
         "sacrum", "skull")


def heart_aorta_lungs(labels: np.ndarray, table) -> tuple[np.ndarray, list]:
    """A labelmap with only its heart, aorta and lungs (the rest background), and their labels: the reference
    of a chest CT held out of training."""
    kept = [label for label in table if label.name in ("heart", "aorta", "lung_left", "lung_right")]
    return np.where(np.isin(labels, [label.value for label in kept]), labels, 0).astype(np.uint8), kept


def label_values(case: Path) -> dict[str, int]:
    """A case's label value per class name, from its labels.json."""
    return {v: int(k) for k, v in json.loads((case / "labels.json").read_text())["labels"].items()}


def merged_labels(case: Path, labelmap: ImageData, classes) -> np.ndarray:
    names = label_values(case)
    out = np.zeros(labelmap.array.shape, np.uint8)
    for value, entry in enumerate(classes, start=1):
        for source in entry["from"]:
            if source in names:
                out[labelmap.array == names[source]] = value
    return out


def without_contrast(image: ImageData, labelmap: ImageData, names: dict[str, int], rng) -> ImageData:
    """The CT as a radiograph sees the patient, with no iodine in the blood: the native phase of every labelled
    contrast-taking structure, and anything else denser than 150 HU that is not labelled bone (contrast in
    vessels without a label, such as the arm veins the bolus came through) set to soft tissue, 40 HU."""
    spacing_zyx = tuple(image.spacing[::-1])
    hu = enhance(image.array, labelmap.array, names, spacing_zyx, "native", rng)
    bones = [v for n, v in names.items() if n.startswith(BONES)]
    bone = ndimage.binary_dilation(np.isin(labelmap.array, bones))
    hu[(hu > 150) & ~bone] = 40
    return image.with_array(hu)


def threshold_lungs(image: ImageData) -> np.ndarray:
    """Lung labels of a chest CT by threshold: air (below -400 HU) enclosed by the body, without the airways
    (pieces under 5 cm2 in a slice: trachea, bronchi) and bowel gas (the lungs are the large pieces left in 3D;
    a closing of 5 mm takes in their vessels), left and
    right by which side of the body's midline they lie (x grows to the patient's left in LPS)."""
    oriented = sitk.DICOMOrient(image.to_sitk(), "LPS")
    hu = sitk.GetArrayFromImage(oriented)
    body = np.zeros(hu.shape, bool)
    for z in range(hu.shape[0]):  # per slice: what the air outside the patient does not reach
        outside, _ = ndimage.label(hu[z] < -400)
        edge = np.unique(np.concatenate([outside[0], outside[-1], outside[:, 0], outside[:, -1]]))
        body[z] = ~np.isin(outside, edge[edge > 0])
    air = body & (hu < -400)
    pixel_mm2 = oriented.GetSpacing()[0] * oriented.GetSpacing()[1]
    for z in range(hu.shape[0]):  # the airways: small pieces of air in a slice (trachea, bronchi, 2-4 cm2)
        pieces, count = ndimage.label(air[z])
        sizes = ndimage.sum(air[z], pieces, range(1, count + 1)) * pixel_mm2
        air[z] = np.isin(pieces, 1 + np.flatnonzero(sizes >= 500))
    pieces, count = ndimage.label(air)  # the lungs: the pieces of air left, in 3D, at least a quarter of the largest
    sizes = ndimage.sum(air, pieces, range(1, count + 1))
    lungs = np.isin(pieces, 1 + np.flatnonzero(sizes >= 0.25 * sizes.max())[:2])
    radius = [max(1, round(5.0 / s)) for s in oriented.GetSpacing()[::-1]]
    lungs = ndimage.binary_closing(lungs, structure=np.ones([2 * r + 1 for r in radius], bool))
    midline = np.nonzero(body.any(axis=(0, 1)))[0].mean()
    out = np.zeros(hu.shape, np.uint8)
    x = np.arange(hu.shape[2])[None, None, :]
    out[lungs & (x < midline)] = 2   # lung_right
    out[lungs & (x >= midline)] = 1  # lung_left
    labels = sitk.GetImageFromArray(out)
    labels.CopyInformation(oriented)
    labels = sitk.Resample(labels, image.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor)
    return sitk.GetArrayFromImage(labels)


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
    source = read_image(lidc / "labels.nii.gz")
    radiograph_ct = without_contrast(image, source, label_values(lidc), np.random.default_rng(0))
    sitk.WriteImage(radiograph_ct.to_sitk(), str(out / "chest" / "lidc.nrrd"), True)
    write_labelmap(image.with_array(merged_labels(lidc, source, chest)), out / "chest" / "lidc.seg.nrrd", chest_labels)
    hidden = [{"name": name, "from": parts} for name, parts in HIDDEN_FROM_LUNG_FIELDS.items()]
    hidden_labels = [Label(len(chest) + i, h["name"]) for i, h in enumerate(hidden, start=1)]
    write_labelmap(image.with_array(merged_labels(lidc, source, chest + hidden)), out / "chest" / "lidc-scr.seg.nrrd",
                   chest_labels + hidden_labels)

    ricord = read_image(DATA / "ricord-1b" / "image.nii.gz")  # unlabelled: lungs by threshold, for DRRs of another patient
    sitk.WriteImage(ricord.to_sitk(), str(out / "chest" / "ricord.nrrd"), True)
    write_labelmap(ricord.with_array(threshold_lungs(ricord)), out / "chest" / "ricord.seg.nrrd", chest_labels[:2])

    classes = [c for c in TABLE if not c.get("radiograph_only")]
    labels = [Label(v, c["name"], tuple(c["color"]), c["terminology"]) for v, c in enumerate(classes, start=1)]
    rng = np.random.default_rng(0)
    written = {}
    for name, source in (("lidc", "lidc-idri-0001"), ("ts-dicom", "ts-dicom"), ("ts-abdomen", "ts-abdomen")):
        folder = DATA / source
        image = read_image(folder / "dicom" if (folder / "dicom").is_dir() else folder / "image.nii.gz")
        labelmap = read_image(folder / "labels.nii.gz")
        names = label_values(folder)
        merged = image.with_array(merged_labels(folder, labelmap, classes))
        spacing_zyx = tuple(image.spacing[::-1])
        original = phase_of(image.array, labelmap.array, names)
        for phase in [original] + [p for p in TARGETS if p != original]:
            case = name if phase == original else f"{name}-{phase}"
            hu = image.array if phase == original else enhance(image.array, labelmap.array, names, spacing_zyx,
                                                               phase, rng)
            sitk.WriteImage(image.with_array(hu).to_sitk(), str(out / f"{case}.nrrd"), True)
            write_labelmap(merged, out / f"{case}.seg.nrrd", labels)
            written[case] = f"{case}.nrrd,{case}.seg.nrrd"
        present = [l.name for l in labels if (merged.array == l.value).any()]
        print(f"{name} ({original}): {image.array.shape[::-1]} voxels, {', '.join(present)}")
    held_out = {"native": "ts-abdomen", "arterial": "ts-abdomen-arterial"}  # the last rows validate (--validation 2)
    training = [c for c in written if not c.startswith("ts-abdomen")]
    rows = [written[c] for c in training + list(held_out.values())]
    (out / "heldout.csv").write_text("\n".join(["image,label"] + rows) + "\n")
    for phase, case in held_out.items():  # one list per held-out case, for scripts/evaluate_builtin.py
        (out / f"heldout-{phase}.csv").write_text(f"image,label\n{written[case]}\n")
    (out / "all.csv").write_text("\n".join(["image,label"] + list(written.values())) + "\n")
    # LIDC-IDRI-0001's heart, aorta and lungs: the reference for a model trained without it (the other chest CT,
    # RICORD-1B, holds only those as more than a registered atlas's rough guess).
    lidc_labels, table = read_labelmap(out / "lidc.seg.nrrd")
    chest_only, kept = heart_aorta_lungs(lidc_labels.array, table)
    write_labelmap(lidc_labels.with_array(chest_only), out / "lidc-heart-aorta.seg.nrrd", kept)
    (out / "lidc-heldout.csv").write_text("image,label\nlidc.nrrd,lidc-heart-aorta.seg.nrrd\n")


if __name__ == "__main__":
    main()
