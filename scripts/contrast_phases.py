"""Copies of a CT in other contrast phases, from its TotalSegmentator labels.

Clinical CTs come native, arterial or portal-venous. The labelled CTs of ../shared/data happen to be one of
each (LIDC-IDRI-0001 arterial: aorta 399 HU; ts-dicom venous: 151 HU; ts-abdomen native: 41 HU), so each is
also written in the two phases it lacks: every structure that takes up contrast (blood pool, kidneys,
parenchyma) is shifted so that its median HU lands on a random value in the range routine protocols give
for that phase, keeping its texture. The heart's wall (its mask's outer 4 mm) moves half as far as its chambers;
in the arterial phase the kidneys' medulla moves a third as far as their cortex. The shift field is smoothed
by one voxel so that the new edges are not sharper than a real scan's. The phase table is `unimiss finetune`'s
(unimiss.training.contrast), which simulates the phases on each training patch too.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from unimiss.training.contrast import CORTEX_MM, HEART_WALL_MM, TARGETS


def phase_of(hu: np.ndarray, labels: np.ndarray, names: dict[str, int]) -> str:
    """native, arterial or venous, from the aorta's median HU."""
    aorta = float(np.median(hu[labels == names["aorta"]]))
    return "arterial" if aorta > 250 else "venous" if aorta > 100 else "native"


def enhance(hu: np.ndarray, labels: np.ndarray, names: dict[str, int], spacing_zyx, phase: str,
            rng: np.random.Generator) -> np.ndarray:
    """A copy of `hu` (int16, z y x) in `phase`; `names` maps class names to label values in `labels`."""
    shift = np.zeros(hu.shape, np.float32)
    for name, (low, high) in TARGETS[phase].items():
        mask = labels == names[name] if name in names else None
        if mask is None or not mask.any():
            continue
        delta = float(rng.uniform(low, high)) - float(np.median(hu[mask]))
        weight = mask.astype(np.float32)
        if name == "heart" or (phase == "arterial" and name.startswith("kidney")):
            depth = ndimage.distance_transform_edt(mask, sampling=spacing_zyx)
            if name == "heart":
                weight[mask & (depth < HEART_WALL_MM)] = 0.5
            else:
                weight[mask & (depth >= CORTEX_MM)] = 0.35
        shift += delta * weight
    shift = ndimage.gaussian_filter(shift, sigma=1.0)
    noise = rng.normal(0.0, rng.uniform(0, 12), hu.shape).astype(np.float32) * (np.abs(shift) > 5)
    return np.clip(hu + shift + noise, -2048, 3071).astype(np.int16)
