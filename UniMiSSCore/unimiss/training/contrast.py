"""Contrast phases simulated while training on CT: the same anatomy native, arterial or portal-venous.

Clinical CTs come in any of the three phases, and a user's few labelled cases are often all one of them (a
model that learnt a bright aorta misses a native one). Every structure that takes up contrast (blood pool,
kidneys, parenchyma) is shifted so that its median HU lands on a random value in the range routine protocols
give for a random phase, keeping its texture. The heart's wall (its mask's outer 4 mm) moves half as far as its
chambers; in the arterial phase a kidney's medulla moves a third as far as its cortex. The shift spreads one
voxel beyond each structure, as partial volume does, so that the new edges are not sharper than a real scan's.
Classes are matched by their TotalSegmentator names; a label set without any of them is left as it is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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
MIN_VOXELS = 20       # fewer voxels of a structure in a patch give no stable median


class ContrastPhases:
    """Applied to a batch of normalised CT patches and their labels (class indices of `class_names`, 1-based)."""

    def __init__(self, class_names, intensity: dict, spacing_zyx, probability: float = 0.5):
        offset, self.scale = intensity.get("scale", (0.0, 1000.0))
        self.offset = float(offset)
        self.clip = [(v - self.offset) / self.scale for v in intensity.get("clip", (-1000.0, 1000.0))]
        self.probability = probability
        self.spacing = [float(s) for s in spacing_zyx]
        index = {name: i + 1 for i, name in enumerate(class_names)}
        self.targets = {phase: [(index[n], name_range, n) for n, name_range in table.items() if n in index]
                        for phase, table in TARGETS.items()}
        self.structures = sorted({n for entries in self.targets.values() for _, _, n in entries})

    @classmethod
    def for_training(cls, class_names, preprocessing: dict, dimension: int) -> "ContrastPhases | None":
        """The augmentation for CT cases whose labels name contrast-taking structures, else None."""
        intensity = preprocessing.get("intensity", {})
        if dimension != 3 or intensity.get("method") != "ct" or not preprocessing.get("spacing"):
            return None
        phases = cls(class_names, intensity, preprocessing["spacing"][::-1])
        return phases if phases.structures else None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
        rand = lambda: float(torch.rand((), generator=generator))  # noqa: E731
        for i in range(images.shape[0]):
            if rand() >= self.probability:
                continue
            phase = list(TARGETS)[int(rand() * len(TARGETS))]
            label = labels[i]
            # Each structure's median HU from every second voxel along each axis: an eighth of the work.
            sparse_label, sparse_image = label[::2, ::2, ::2], images[i, 0, ::2, ::2, ::2]
            counts = torch.bincount(sparse_label.flatten(), minlength=int(label.max()) + 1)
            delta = torch.zeros(len(counts))
            for value, (low, high), _ in self.targets[phase]:
                if value >= len(counts) or counts[value] * 8 < MIN_VOXELS:
                    continue
                hu = sparse_image[sparse_label == value] * self.scale + self.offset
                delta[value] = (low + (high - low) * rand() - float(hu.median())) / self.scale
            if not delta.any():
                continue
            shift = delta[label]
            for value, _, name in self.targets[phase]:
                if value >= len(delta) or not delta[value]:
                    continue
                if name == "heart":
                    mask = label == value
                    shift[mask & ~self._eroded(mask, HEART_WALL_MM)] *= 0.5
                elif phase == "arterial" and name.startswith("kidney"):
                    shift[self._eroded(label == value, CORTEX_MM)] *= 0.35
            blurred = F.avg_pool3d(shift[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
            shift = torch.where(shift != 0, shift, blurred)
            noise = torch.randn(shift.shape, generator=generator) * (12 / self.scale * rand())
            images[i, 0] = (images[i, 0] + shift + noise * (shift.abs() > 5 / self.scale)).clamp(*self.clip)
        return images, labels

    def _eroded(self, mask: torch.Tensor, mm: float) -> torch.Tensor:
        """The voxels of `mask` at least `mm` inside it: a box erosion, one axis at a time."""
        near_outside = (~mask).float()[None, None]
        for axis, spacing in enumerate(self.spacing):
            radius = max(1, round(mm / spacing))
            kernel, padding = [1, 1, 1], [0, 0, 0]
            kernel[axis], padding[axis] = 2 * radius + 1, radius
            near_outside = F.max_pool3d(near_outside, kernel, stride=1, padding=padding)
        return mask & ~(near_outside[0, 0] > 0)
