"""Dice and mean surface distance between two labelmaps on the same grid, classes matched by name.

Names come from each labelmap (`.seg.nrrd` segments, or a `.ctbl` / JSON / `dataset.json` table beside a
NIfTI/NRRD; see unimiss.data.labels) and are compared with letter case, spaces, '_' and '-' ignored.
A labelmap with unnamed values is refused: its value 1 may be another class than the other's value 1.
Matching by value is done only when asked (`match_by_value`), and then said.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from .data.errors import InputError
from .data.image import ImageData
from .data.io import label_values, read_labelmap
from .data.labels import Label, name_key


def surface_distances(a: np.ndarray, b: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """Distances (mm) from the surface voxels of mask a to the surface of mask b."""
    def image(mask):
        img = sitk.GetImageFromArray(mask.astype(np.uint8))
        img.CopyInformation(reference)
        return img
    surface_a = sitk.GetArrayFromImage(sitk.LabelContour(image(a))) > 0
    distance_b = sitk.Abs(sitk.SignedMaurerDistanceMap(image(b), squaredDistance=False, useImageSpacing=True))
    return sitk.GetArrayFromImage(distance_b)[surface_a]


def dice_score(in_pred: int, in_ref: int, in_both: int) -> float | None:
    """Dice from voxel counts; None (not scored) where neither side holds the class. The one rule for
    `unimiss evaluate` and fine-tuning's validation, so that their figures agree."""
    return 2 * in_both / (in_pred + in_ref) if in_pred + in_ref else None


def compare(pred: ImageData, ref: ImageData, pairs: dict[str, tuple[int, int]]) -> dict:
    """Per label name: Dice and symmetric mean surface distance for (pred value, ref value) pairs."""
    if not pred.same_grid(ref):
        raise ValueError("the two labelmaps are not on the same grid (size, spacing, origin and direction must match)")
    reference = sitk.GetImageFromArray(np.zeros(pred.array.shape, np.uint8))
    reference.SetSpacing(pred.spacing)
    reference.SetOrigin(pred.origin)
    reference.SetDirection(pred.direction)
    results = {}
    for name, (pv, rv) in pairs.items():
        p, r = pred.array == pv, ref.array == rv
        n_p, n_r = int(p.sum()), int(r.sum())
        entry = {"dice": dice_score(n_p, n_r, int((p & r).sum())),
                 "voxels_pred": n_p, "voxels_ref": n_r}
        if n_p and n_r:
            d = np.concatenate([surface_distances(p, r, reference), surface_distances(r, p, reference)])
            entry["mean_surface_distance_mm"] = float(d.mean())
        else:
            entry["mean_surface_distance_mm"] = None
        results[name] = entry
    return results


def evaluate_files(prediction, reference, match_by_value: bool = False,
                   say: Callable[[str], None] = lambda message: None) -> dict:
    """Per class: Dice and mean surface distance; also which names only one side has, and how classes were matched."""
    prediction, reference = Path(prediction), Path(reference)
    pred, pred_labels = read_labelmap(prediction, on_message=say, name_all=False)
    ref, ref_labels = read_labelmap(reference, on_message=say, name_all=False)
    if not pred.same_grid(ref):
        raise InputError(f"{prediction}: not on the grid of {reference} (size, spacing, origin and direction "
                         "must match)")
    if match_by_value:
        pairs = _pairs_by_value(pred, pred_labels, ref, ref_labels, say)
        only_pred, only_ref = [], []
    else:
        for path, data, labels in ((prediction, pred, pred_labels), (reference, ref, ref_labels)):
            _refuse_unnamed(path, data, labels)
        pairs, only_pred, only_ref = _pairs_by_name(prediction, pred_labels, reference, ref_labels)
        if only_pred or only_ref:
            say("not compared: " + "; ".join(
                f"{', '.join(names)} only in the {side}" for side, names in
                (("prediction", only_pred), ("reference", only_ref)) if names))
    results = compare(pred, ref, pairs)
    dice = [r["dice"] for r in results.values() if r["dice"] is not None]  # a class neither side holds: not scored
    return {"labels": results, "mean_dice": sum(dice) / len(dice) if dice else None,
            "matched_by": "value" if match_by_value else "name",
            "only_in_prediction": only_pred, "only_in_reference": only_ref}


def _refuse_unnamed(path: Path, data: ImageData, labels: list[Label]) -> None:
    named = {label.value for label in labels}
    unnamed = [v for v in label_values(data.array) if v not in named]
    if unnamed:
        values = ", ".join(map(str, unnamed[:8])) + (", ..." if len(unnamed) > 8 else "")
        raise InputError(f"{path}: label value{'s' if len(unnamed) > 1 else ''} {values} "
                         f"{'have' if len(unnamed) > 1 else 'has'} no name (no .seg.nrrd segment, .ctbl, .json or "
                         "dataset.json table names it), so the classes cannot be matched by name; add a table, or "
                         "give --match-by-value to compare equal values")


def _pairs_by_name(prediction: Path, pred_labels, reference: Path, ref_labels):
    tables = []
    for path, labels in ((prediction, pred_labels), (reference, ref_labels)):
        table: dict[str, Label] = {}
        for label in labels:
            other = table.setdefault(name_key(label.name), label)
            if other is not label:
                raise InputError(f"{path}: labels {other.value} '{other.name}' and {label.value} '{label.name}' "
                                 "have the same name")
        tables.append(table)
    pred_table, ref_table = tables
    shared = [key for key in pred_table if key in ref_table]
    only_pred = [pred_table[k].name for k in pred_table if k not in ref_table]
    only_ref = [ref_table[k].name for k in ref_table if k not in pred_table]
    if not shared:
        raise InputError(f"{prediction} and {reference} share no label name (prediction: "
                         f"{', '.join(only_pred[:6]) or 'none'}; reference: {', '.join(only_ref[:6]) or 'none'})")
    return {pred_table[k].name: (pred_table[k].value, ref_table[k].value) for k in shared}, only_pred, only_ref


def _pairs_by_value(pred, pred_labels, ref, ref_labels, say) -> dict[str, tuple[int, int]]:
    pred_names = {label.value: label.name for label in pred_labels}
    ref_names = {label.value: label.name for label in ref_labels}
    values = sorted(set(label_values(pred.array)) | set(label_values(ref.array)) | set(pred_names) | set(ref_names))
    if not values:
        raise InputError("both labelmaps are empty: nothing to compare")
    differ = [f"{v} is '{pred_names[v]}' / '{ref_names[v]}'" for v in values
              if v in pred_names and v in ref_names and name_key(pred_names[v]) != name_key(ref_names[v])]
    say("labels matched by value, not by name (--match-by-value)"
        + (f"; their names differ: {', '.join(differ[:4])}" if differ else ""))
    pairs = {}
    for v in values:
        name = pred_names.get(v) or ref_names.get(v) or f"value {v}"
        pairs[name if name not in pairs else f"{name} (value {v})"] = (v, v)
    return pairs
