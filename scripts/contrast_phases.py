"""Copies of a CT in other contrast phases, from its TotalSegmentator labels.

Clinical CTs come native, arterial or portal-venous. The labelled CTs of ../shared/data happen to be one of
each (LIDC-IDRI-0001 arterial: aorta 399 HU; ts-dicom venous: 151 HU; ts-abdomen native: 41 HU), so each is
also written in the two phases it lacks: every structure that takes up contrast (blood pool, kidneys,
parenchyma) is shifted so that its median HU lands on a random value in the range routine protocols give
for that phase, keeping its texture. The heart's wall (its mask's outer 4 mm) moves half as far as its chambers;
in the arterial phase the kidneys' medulla moves a third as far as their cortex. The shift field is smoothed
by one voxel so that the new edges are not sharper than a real scan's.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

ARTERIES = ("aorta", "brachiocephalic_trunk", "common_carotid_artery_left", "common_carotid_artery_right",
            "subclavian_artery_left", "subclavian_artery_right", "iliac_artery_left", "iliac_artery_right")
VEINS = ("superior_vena_cava", "brachiocephalic_vein_left", "brachiocephalic_vein_right", "iliac_vena_left",
         "iliac_vena_right")
# Median HU per phase. Arm veins fill first in the arterial phase (the injected bolus), so their range is wide.
TARGETS = {
    "native": {**{a: (35, 50) for a in ARTERIES + VEINS}, "heart": (35, 50), "pulmonary_vein": (35, 50),
               "atrial_appendage_left": (35, 50), "inferior_vena_cava": (35, 50),
               "portal_vein_and_splenic_vein": (35, 50), "kidney_left": (25, 40), "kidney_right": (25, 40),
               "spleen": (40, 55), "liver": (50, 65), "pancreas": (35, 50)},
    "arterial": {**{a: (250, 450) for a in ARTERIES}, **{v: (50, 700) for v in VEINS}, "heart": (200, 400),
                 "pulmonary_vein": (200, 400), "atrial_appendage_left": (200, 400), "inferior_vena_cava": (40, 100),
                 "portal_vein_and_splenic_vein": (80, 150), "kidney_left": (150, 250), "kidney_right": (150, 250),
                 "spleen": (100, 160), "liver": (60, 80), "pancreas": (90, 140)},
    "venous": {**{a: (130, 200) for a in ARTERIES + VEINS}, "heart": (120, 190), "pulmonary_vein": (120, 190),
               "atrial_appendage_left": (120, 190), "inferior_vena_cava": (110, 180),
               "portal_vein_and_splenic_vein": (150, 220), "kidney_left": (150, 230), "kidney_right": (150, 230),
               "spleen": (110, 140), "liver": (100, 130), "pancreas": (90, 120)},
}
HEART_WALL_MM = 4.0   # the heart mask includes the myocardium, which moves about half as far as the chambers
CORTEX_MM = 6.0       # an arterial kidney's cortex; the medulla inside moves about a third as far


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
