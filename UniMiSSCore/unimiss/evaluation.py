"""Dice and mean surface distance between two labelmaps on the same grid."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .data.image import ImageData


def surface_distances(a: np.ndarray, b: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """Distances (mm) from the surface voxels of mask a to the surface of mask b."""
    def image(mask):
        img = sitk.GetImageFromArray(mask.astype(np.uint8))
        img.CopyInformation(reference)
        return img
    surface_a = sitk.GetArrayFromImage(sitk.LabelContour(image(a))) > 0
    distance_b = sitk.Abs(sitk.SignedMaurerDistanceMap(image(b), squaredDistance=False, useImageSpacing=True))
    return sitk.GetArrayFromImage(distance_b)[surface_a]


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
        entry = {"dice": 2 * int((p & r).sum()) / (n_p + n_r) if n_p + n_r else 1.0,
                 "voxels_pred": n_p, "voxels_ref": n_r}
        if n_p and n_r:
            d = np.concatenate([surface_distances(p, r, reference), surface_distances(r, p, reference)])
            entry["mean_surface_distance_mm"] = float(d.mean())
        else:
            entry["mean_surface_distance_mm"] = None
        results[name] = entry
    return results
