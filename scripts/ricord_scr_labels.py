"""Labels of RICORD-1B (another patient's chest CT) for DRRs drawn as JSRT/SCR draw radiographs.

    python scripts/ricord_scr_labels.py LUNGS.seg.nrrd CT_LABELS.seg.nrrd CLAVICLES.seg.nrrd OUT.seg.nrrd

LUNGS: its lungs by threshold (scripts/prepare_demo_data.py); CT_LABELS: heart, aorta, liver, spleen and
kidneys of the same scan, from the LIDC-IDRI-0001 atlas registered onto it (scripts/ricord_atlas_labels.py,
looked at slice by slice: docs/previews/ricord-atlas-labels.png); CLAVICLES: its clavicles, the atlas's fitted to
its bone (the same script). OUT: the lungs, the heart, the clavicles, and the aorta
and the organs below the diaphragm as `aorta` and `below_diaphragm`, for `unimiss drr --hide aorta
below_diaphragm`. The heart is a registered atlas's, not a reference drawn by hand.
"""
from __future__ import annotations

import sys

import numpy as np

from unimiss.data import Label, read_labelmap, write_labelmap


def main():
    lungs_path, labels_path, clavicles_path, out_path = sys.argv[1:5]
    lungs, lung_labels = read_labelmap(lungs_path)
    organs, organ_labels = read_labelmap(labels_path)
    bones, clavicle_labels = read_labelmap(clavicles_path)
    for path, labelmap in ((labels_path, organs), (clavicles_path, bones)):
        if not lungs.same_grid(labelmap):
            raise SystemExit(f"{path}: not on the grid of {lungs_path}")
    value = {label.name: label.value for label in organ_labels}
    out = lungs.array.copy()
    out[organs.array == value["heart"]] = 3
    for label in clavicle_labels:  # 4 and 5, as in the LIDC-IDRI-0001 labels they come from
        out[bones.array == label.value] = label.value
    out[(organs.array == value["aorta"]) & (out == 0)] = 6
    below = [value[n] for n in ("liver", "spleen", "kidney_left", "kidney_right")]
    out[np.isin(organs.array, below) & (out == 0)] = 8
    heart = next(label for label in organ_labels if label.name == "heart")
    labels = lung_labels + [Label(3, "heart", heart.color, heart.terminology)] + clavicle_labels
    labels += [Label(6, "aorta"), Label(8, "below_diaphragm")]
    write_labelmap(lungs.with_array(out.astype(np.uint8)), out_path, labels)


if __name__ == "__main__":
    main()
