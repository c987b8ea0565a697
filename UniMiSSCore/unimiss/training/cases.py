"""Training cases: image/labelmap pairs from files, a Decathlon/nnU-Net folder or a CSV, matched by class name."""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..data.inputs import case_name
from ..data.io import InputError, read_image, read_labelmap
from ..data.labels import Label, read_label_table
from ..inference.predictor import connected_parts
from ..inference.preprocessing import normalise, working_grid


@dataclass
class CaseFiles:
    image: Path
    label: Path
    names: dict[int, str] | None = None  # label value -> class name, when the folder's dataset.json gives them


@dataclass(eq=False)  # compared by identity: two cases may share a name, and arrays have no truth value
class TrainingCase:
    """One case on the model's working grid: normalised image, class indices of the target label set."""
    name: str
    image: np.ndarray        # float32 (z, y, x) or (y, x)
    label: np.ndarray        # uint8 class indices
    sha256: str              # of the image and labelmap files, for provenance
    labelled: frozenset = frozenset()  # class indices the labelmap declares (the others are unknown there)

    @property
    def dimension(self) -> int:
        return self.image.ndim


def pairs_from_args(images=(), labels=(), folder=None, csv_path=None) -> list[CaseFiles]:
    files = []
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labelmaps: give one labelmap per image")
    files += [CaseFiles(Path(i), Path(l)) for i, l in zip(images, labels)]
    if folder:
        files += _decathlon_folder(Path(folder))
    if csv_path:
        files += _csv_list(Path(csv_path))
    if not files:
        raise ValueError("no training cases: give --images/--labels, --data FOLDER or --csv FILE")
    return files


def _decathlon_folder(root: Path) -> list[CaseFiles]:
    """imagesTr/ + labelsTr/ (+ dataset.json): Medical Segmentation Decathlon and nnU-Net v1/v2 layouts."""
    images, labels = root / "imagesTr", root / "labelsTr"
    if not images.is_dir() or not labels.is_dir():
        raise InputError(f"{root}: expected imagesTr/ and labelsTr/ folders (Decathlon / nnU-Net layout)")
    names = None
    meta = root / "dataset.json"
    if meta.is_file():  # Decathlon and nnU-Net v1: {"1": "liver"}; nnU-Net v2: {"liver": 1}
        table = read_label_table(meta)
        if table is None:
            raise InputError(f"{meta}: no \"labels\" entry naming the label values")
        names = {label.value: label.name for label in table.labels}
    out = []
    for label in sorted(p for p in labels.iterdir() if p.name.endswith((".nii.gz", ".nii", ".nrrd", ".mha"))):
        stem = label.name.split(".")[0]
        candidates = [images / label.name] + sorted(images.glob(f"{stem}_0000.*"))
        image = next((c for c in candidates if c.is_file()), None)
        if image is None:
            raise InputError(f"{label}: no image for this labelmap in {images}")
        out.append(CaseFiles(image, label, names))
    if not out:
        raise InputError(f"{labels}: no labelmaps found")
    return out


def _csv_list(path: Path) -> list[CaseFiles]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:  # utf-8-sig: spreadsheet programs start their CSV with a byte-order mark
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: not a readable CSV ({error})") from None
    if not {"image", "label"} <= set(reader.fieldnames or ()):
        raise InputError(f"{path}: expected a CSV with 'image' and 'label' columns"
                         + (f" (found: {', '.join(reader.fieldnames)})" if reader.fieldnames else ""))
    for number, row in enumerate(rows, start=2):
        if not row.get("image") or not row.get("label"):
            raise InputError(f"{path}: line {number} has no {'image' if not row.get('image') else 'label'}")
    if not rows:
        raise InputError(f"{path}: no cases listed")
    return [CaseFiles(path.parent / r["image"], path.parent / r["label"]) for r in rows]


def read_pair(files: CaseFiles):
    """(image, labelmap, labels, names of the labels present) with image and labelmap on the same grid.

    `labels` are all the labelmap declares (a .seg.nrrd keeps empty segments), in its order.
    """
    image = read_image(files.image)
    labelmap, labels = read_labelmap(files.label)
    if files.names:
        labels = [Label(int(v), files.names.get(v, f"label_{v}")) for v in np.unique(labelmap.array) if v != 0]
    if labelmap.dimension != image.dimension or not labelmap.same_grid(image):
        raise InputError(f"{files.label}: the labelmap is not on the grid of its image {files.image} "
                         "(size, spacing, origin and direction must match)")
    present = set(np.unique(labelmap.array).tolist()) - {0}
    if not present:
        raise InputError(f"{files.label}: the labelmap is empty (no labelled voxel)")
    return image, labelmap, labels, {l.name for l in labels if l.value in present}


def class_names_of(pairs) -> list[str]:
    """All class names the cases declare, in order of first appearance."""
    names = []
    for _, _, labels, _ in pairs:
        names += [l.name for l in labels if l.name not in names]
    return names


def prepare_case(files: CaseFiles, image, labelmap, labels, present, class_names: list[str],
                 preprocessing: dict) -> TrainingCase:
    """Resample image (linear) and labels (nearest) to the working grid; labels become class indices."""
    index = {name: i + 1 for i, name in enumerate(class_names)}
    all_labels, labels = labels, [l for l in labels if l.name in present]
    unknown = [l.name for l in labels if l.name not in index]
    if unknown:
        raise InputError(f"{files.label}: label {unknown[0]!r} is not one of the model's classes "
                         f"({', '.join(class_names)})")
    lut = np.zeros(int(labelmap.array.max()) + 1, dtype=np.uint8)
    for label in labels:
        lut[label.value] = index[label.name]
    classes = labelmap.with_array(lut[labelmap.array])
    grid = working_grid(image.to_sitk(), preprocessing)
    label_grid = sitk.Resample(classes.to_sitk(), grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    array = normalise(sitk.GetArrayViewFromImage(grid), preprocessing.get("intensity", {}))
    digest = hashlib.sha256()
    for path in (files.image, files.label):
        for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if p.is_file():
                digest.update(p.read_bytes())
    declared = frozenset(index[l.name] for l in all_labels if l.name in index)
    return TrainingCase(display_name(files.image), np.ascontiguousarray(array, dtype=np.float32),
                        sitk.GetArrayFromImage(label_grid), digest.hexdigest(), declared)


ONE_PIECE_SHARE = 0.9  # a class is drawn as one piece where its largest connected part holds this share of it


def drawn_as_one_piece(cases) -> dict[int, bool]:
    """{class index: whether every case that draws the class draws it as one piece}, for the classes the cases
    draw: an organ rather than a scatter of lesions.

    The model trained on them keeps the largest part of a one-piece class when it segments (and parts of a size
    comparable to it), which removes what it draws elsewhere on a patient it never saw
    (docs/benchmarks/finetune/parts/). nnU-Net makes a similar choice per class by cross-validation; with a few
    cases the labels decide. Call it on the user's own labels, before any class is filled with a base model's
    predictions."""
    verdict: dict[int, bool] = {}
    for case in cases:
        for value in (v for v in np.unique(case.label) if v):
            _, _, sizes = connected_parts(case.label == value, fully_connected=True)
            one = bool(sizes.max() >= ONE_PIECE_SHARE * sizes.sum())
            verdict[int(value)] = verdict.get(int(value), True) and one
    return verdict


GENERIC_NAMES = {"image", "img", "ct", "volume", "scan", "data", "dicom", "series", "imaging"}


def display_name(image: Path) -> str:
    """The case's name for people: the file or folder name, or its parent folder's for generic names
    (`case7/image.nii.gz`, `case7/dicom/` -> case7)."""
    name = case_name(image)
    stem = name.lower().removesuffix("_0000")
    parent = Path(os.path.abspath(image)).parent.name  # not resolved: a link is named where the user put it
    if stem in GENERIC_NAMES and parent:
        return parent
    return name
