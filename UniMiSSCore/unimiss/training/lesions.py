"""Lesions simulated inside organs while training on CT: metastases, cysts and enhancing nodules.

Livers in clinical CTs often hold tumours or cysts, and the organ's label includes them; the few labelled
cases a model learns from may hold none, and it then leaves a dark lesion out of the liver. Ellipsoids of
3-25 mm radius, darker than the organ (metastases, 20-100 HU below it), of water density (cysts, 0-20 HU) or
brighter (enhancing nodules, 20-80 HU above), with soft edges and their own texture, are painted inside the
organ's mask; the label does not change. Classes are matched by their TotalSegmentator names.
"""
from __future__ import annotations

import math

import torch

HOSTS = ("liver", "spleen", "kidney_left", "kidney_right")
MIN_VOXELS = 200      # fewer voxels of an organ in a patch leave no room for a lesion
EDGE_MM = 2.0         # the width of a lesion's soft edge


class SimulatedLesions:
    """Applied to a batch of normalised CT patches and their labels (class indices of `class_names`, 1-based)."""

    def __init__(self, class_names, intensity: dict, spacing_zyx, probability: float = 0.3):
        offset, self.scale = intensity.get("scale", (0.0, 1000.0))
        self.offset = float(offset)
        self.clip = [(v - self.offset) / self.scale for v in intensity.get("clip", (-1000.0, 1000.0))]
        self.spacing = torch.tensor([float(s) for s in spacing_zyx])
        self.probability = probability
        self.hosts = [(i + 1, name) for i, name in enumerate(class_names) if name in HOSTS]
        self.structures = [name for _, name in self.hosts]

    @classmethod
    def for_training(cls, class_names, preprocessing: dict, dimension: int) -> "SimulatedLesions | None":
        """The augmentation for CT cases whose labels name an organ that lesions grow in, else None."""
        intensity = preprocessing.get("intensity", {})
        if dimension != 3 or intensity.get("method") != "ct" or not preprocessing.get("spacing"):
            return None
        lesions = cls(class_names, intensity, preprocessing["spacing"][::-1])
        return lesions if lesions.hosts else None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
        rand = lambda: float(torch.rand((), generator=generator))  # noqa: E731
        for i in range(images.shape[0]):
            if rand() >= self.probability:
                continue
            for value, _ in self.hosts:
                host = labels[i] == value
                count = int(host.sum())
                if count < MIN_VOXELS:
                    continue
                inside = torch.nonzero(host)
                organ_hu = float((images[i, 0][host] * self.scale + self.offset).median())
                for _ in range(1 + int(rand() * 3)):
                    centre = inside[int(rand() * len(inside))]
                    self._paint(images[i, 0], host, centre, organ_hu, rand, generator)
        return images, labels

    def _paint(self, image, host, centre, organ_hu, rand, generator):
        radius = 3 + 22 * rand() ** 1.5                                  # mm; small lesions are commoner
        radii = radius * torch.exp((torch.rand(3, generator=generator) * 2 - 1) * math.log(1.3))
        reach = ((radii + EDGE_MM) / self.spacing).ceil().long()
        low = (centre - reach).clamp_min(0)
        high = torch.minimum(centre + reach + 1, torch.tensor(image.shape))
        box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
        axes = [(torch.arange(int(a), int(b)) - int(c)) * s / r
                for a, b, c, s, r in zip(low, high, centre, self.spacing, radii)]
        z, y, x = torch.meshgrid(*axes, indexing="ij")
        distance = (z ** 2 + y ** 2 + x ** 2).sqrt()                      # 1 on the ellipsoid's surface
        weight = ((1 - distance) * radius / EDGE_MM + 0.5).clamp(0, 1) * host[box]
        kind = rand()
        if kind < 0.6:
            target = organ_hu - 20 - 80 * rand()                          # a metastasis
        elif kind < 0.8:
            target = 20 * rand()                                          # a cyst
        else:
            target = organ_hu + 20 + 60 * rand()                          # an enhancing nodule
        texture = torch.randn(weight.shape, generator=generator) * (4 + 10 * rand())
        lesion = (target + texture - self.offset) / self.scale
        image[box] = (image[box] * (1 - weight) + lesion * weight).clamp(*self.clip)
