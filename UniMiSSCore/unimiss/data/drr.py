"""Digitally reconstructed radiographs: a CT and its labels projected to a frontal radiograph and 2D masks.

The bridge UniMiSS+ uses between 3D and 2D: labelled CTs become labelled
radiographs. Parallel projection along the anterior-posterior axis (not a cone
beam), with randomised geometry and intensity so that one CT gives many varied
training images.
"""
from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from .image import ImageData

MU_WATER_PER_MM = 0.02  # linear attenuation of water near 70 keV, 1/mm


class Projector:
    """Projects one CT (and its labels) into any number of randomised radiographs.

    The line integrals are computed once; each radiograph then only costs 2D work.
    Rows run from head to feet, columns from the patient's right to left (the usual
    display of a frontal chest radiograph). A pixel gets a label where the ray crosses
    at least `min_depth_fraction` of the structure's largest depth, which keeps thin
    margins out (e.g. the lung recesses behind the liver, invisible on a radiograph);
    labels later in `labels` are drawn over earlier ones (the heart over the lungs,
    clavicles over both).
    """

    def __init__(self, ct: ImageData, labelmap: ImageData | None = None, labels=(), min_depth_fraction: float = 0.25):
        volume = sitk.DICOMOrient(ct.to_sitk(), "LPS")  # axes: z inferior->superior, y anterior->posterior, x right->left
        hu = sitk.GetArrayFromImage(volume).astype(np.float32)
        sx, sy, sz = volume.GetSpacing()
        mu = np.clip(1.0 + hu / 1000.0, 0.0, None)
        # Bone contrast varies with the tube voltage: the path integral is linear in that factor,
        # so keep its two parts apart and mix them per radiograph.
        self.soft = (mu.sum(axis=1) * sy * MU_WATER_PER_MM)[::-1]
        self.bone = ((mu * np.clip(hu - 200.0, 0.0, None) / 1000.0).sum(axis=1) * sy * MU_WATER_PER_MM)[::-1]
        self.spacing = (sx, sz)
        self.masks = np.zeros(self.soft.shape, np.uint8)
        if labelmap is not None:
            lab = sitk.GetArrayFromImage(sitk.DICOMOrient(labelmap.to_sitk(), "LPS"))
            for label in labels:
                depth = (lab == label.value).sum(axis=1)[::-1]
                if depth.max() > 0:
                    self.masks[depth >= min_depth_fraction * depth.max()] = label.value

    def radiograph(self, rng: np.random.Generator, size: int = 512, randomise: bool = True):
        """(radiograph, 2D labelmap): uint8 image on a size x size grid, labels on the same grid."""
        bone = rng.uniform(0.0, 0.6) if randomise else 0.3
        gain = rng.uniform(0.7, 1.3) if randomise else 1.0
        path = self.soft + bone * self.bone
        image = 1.0 - np.exp(-gain * path / max(float(np.percentile(path, 99)), 1e-6) * 2.0)
        projection = sitk.GetImageFromArray(image.astype(np.float32))
        projection.SetSpacing(self.spacing)
        label_image = sitk.GetImageFromArray(self.masks)
        label_image.CopyInformation(projection)
        return _square(projection, label_image, rng, size, randomise)


def _square(image: sitk.Image, labels: sitk.Image, rng, size: int, randomise: bool):
    """Resample onto a square grid with a random rotation, zoom and shift; random contrast and noise."""
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    centre = extent / 2 - np.array(image.GetSpacing()) / 2
    spacing = float(extent.max()) / size
    transform = sitk.Euler2DTransform()
    transform.SetCenter(centre.tolist())
    if randomise:
        transform.SetAngle(math.radians(rng.uniform(-6, 6)))
        transform.SetTranslation((rng.uniform(-0.04, 0.04, 2) * extent).tolist())
        spacing *= rng.uniform(0.85, 1.1)
    origin = (centre - spacing * (size - 1) / 2).tolist()
    grid = dict(size=[size, size], outputOrigin=origin, outputSpacing=[spacing, spacing], outputDirection=[1, 0, 0, 1])
    out = sitk.GetArrayFromImage(sitk.Resample(image, transform=transform, interpolator=sitk.sitkLinear,
                                               defaultPixelValue=0.0, **grid))
    lab = sitk.GetArrayFromImage(sitk.Resample(labels, transform=transform, interpolator=sitk.sitkNearestNeighbor,
                                               defaultPixelValue=0, **grid))
    if randomise:
        out = np.clip(out, 0, 1) ** rng.uniform(0.7, 1.5)
        out = out + rng.normal(0, rng.uniform(0, 0.02), out.shape)
    out = np.clip(out * 255.0, 0, 255).astype(np.uint8)
    geometry = ((spacing, spacing), tuple(origin), (1.0, 0.0, 0.0, 1.0))
    return ImageData(out, *geometry), ImageData(lab.astype(np.uint8), *geometry)
