"""Liver Dice when the CT is a crop around the liver, against the same box of the whole field's segmentation.

    python docs/benchmarks/builtin-ct-crop/crop_liver.py WORK OUT.json [MARGIN_MM ...]
WORK is scripts/train_builtin_models.sh's folder: its data/ (the kit's CTs in three phases) and home/models/ (the
recipe trained without ts-abdomen, and without LIDC-IDRI-0001, as shipped). Each held-out CT is segmented whole
and cropped to the box of its reference liver grown by each margin; both are scored inside that box."""
import json
import sys

import numpy as np

from unimiss.data import read_image
from unimiss.data.image import ImageData
from unimiss.data.io import read_labelmap
from unimiss.evaluation import dice_score
from unimiss.inference.predictor import Predictor
from unimiss.zoo import resolve_model

work, out = sys.argv[1:3]
margins = [float(m) for m in sys.argv[3:]] or [10.0, 40.0]
models = f"{work}/home/models"
cases = {"ts-abdomen": "ct-organs-nots-abdomen-shipped", "ts-abdomen-arterial": "ct-organs-nots-abdomen-shipped",
         "ts-abdomen-venous": "ct-organs-nots-abdomen-shipped", "lidc": "ct-organs-nolidc-shipped"}


def crop(image: ImageData, box) -> ImageData:
    """The image inside `box` ((start, stop) per array axis, z first), on its own grid: SimpleITK's slicing."""
    return ImageData.from_sitk(image.to_sitk()[tuple(slice(a, b) for a, b in box[::-1])])


def dice(a, b) -> float:
    return dice_score(int(a.sum()), int(b.sum()), int((a & b).sum()))


results = {}
for case, model in cases.items():
    package = resolve_model(f"{models}/{model}-1.0.0")
    liver = next(label.value for label in package.labels if label.name == "liver")
    image = read_image(f"{work}/data/{case}.nrrd")
    ref, labels = read_labelmap(f"{work}/data/{case}.seg.nrrd")
    ref_liver = ref.array == next(label.value for label in labels if label.name == "liver")
    predictor = Predictor(package)
    whole = predictor.predict(image).array == liver
    where = np.nonzero(ref_liver)
    for margin in margins:
        grow = [int(round(margin / s)) for s in image.spacing[::-1]]
        box = [(max(0, int(w.min()) - g), min(n, int(w.max()) + 1 + g))
               for w, g, n in zip(where, grow, ref_liver.shape)]
        inside = tuple(slice(a, b) for a, b in box)
        cropped = predictor.predict(crop(image, box)).array == liver
        results[f"{case}, margin {margin:g} mm"] = {
            "box_voxels": [b - a for a, b in box], "whole_field": round(dice(whole[inside], ref_liver[inside]), 3),
            "crop": round(dice(cropped, ref_liver[inside]), 3)}
        print(case, margin, results[f"{case}, margin {margin:g} mm"], flush=True)
json.dump(results, open(out, "w"), indent=1)
