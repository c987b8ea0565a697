"""From an input image to the network's grid and intensities, as a model package's `preprocessing` says."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..data.image import ImageData


# Named intensity normalisations, for commands that build preprocessing without a model package.
# "ct" is a soft-tissue window, -200..400 HU to -1..1: organs differ by tens of HU, which -1000..1000 HU squeezes
# into a hundredth of the range, and contrast-filled vessels (250-450 HU) stay apart from bone. From scratch, a
# held-out patient's liver was found sooner and better through such a window, and the CT model trained through
# this one found another patient's contrast-filled heart and aorta better than through -175..250 HU
# (docs/benchmarks/finetune/intensity/, docs/benchmarks/builtin-ct-1.2.0/). "ct-wide" keeps lung and bone detail.
INTENSITY_PRESETS = {
    "ct": {"method": "ct", "clip": [-200, 400], "scale": [100.0, 300.0]},
    "ct-wide": {"method": "ct", "clip": [-1000, 1000], "scale": [0.0, 1000.0]},
    "zscore": {"method": "zscore"},
    "percentile": {"method": "percentile", "lower": 0.5, "upper": 99.5},
}


@dataclass
class Prepared:
    """The image on the model's working grid, and that grid (a SimpleITK image) to map results back."""
    array: np.ndarray       # float32 (z, y, x) or (y, x), normalised
    grid: sitk.Image        # geometry of `array`


def working_grid(image: sitk.Image, preprocessing: dict) -> sitk.Image:
    """The input reoriented and resampled (linearly) to the model's spacing, or to its fixed size."""
    orientation = preprocessing.get("orientation")
    if orientation and image.GetDimension() == 3:
        image = sitk.DICOMOrient(image, orientation)
    size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    if preprocessing.get("size"):
        new_size = np.array(preprocessing["size"][::-1])  # (z, y, x) -> SimpleITK (x, y, z)
        new_spacing = size * spacing / new_size
    elif preprocessing.get("spacing"):
        new_spacing = np.array(preprocessing["spacing"], dtype=float)
        new_size = np.maximum(1, np.round(size * spacing / new_spacing)).astype(int)
    else:
        return image
    if np.array_equal(new_size, size) and np.allclose(new_spacing, spacing):
        return image
    # Keep the physical extent: the first and last voxel edges stay where they were.
    direction = np.array(image.GetDirection()).reshape(image.GetDimension(), -1)
    origin = np.array(image.GetOrigin()) + direction @ ((new_spacing - spacing) / 2)
    return sitk.Resample(image, [int(s) for s in new_size], sitk.Transform(), sitk.sitkLinear, origin.tolist(),
                         new_spacing.tolist(), image.GetDirection(), 0.0, sitk.sitkFloat32)


def normalise(array: np.ndarray, intensity: dict) -> np.ndarray:
    array = array.astype(np.float32, copy=False)
    method = intensity.get("method", "zscore")
    if method == "ct":
        low, high = intensity.get("clip", (-1000.0, 1000.0))
        offset, scale = intensity.get("scale", (0.0, 1000.0))
        return (np.clip(array, low, high) - offset) / scale
    if method == "percentile":
        low, high = np.percentile(array, (intensity.get("lower", 0.5), intensity.get("upper", 99.5)))
        array = np.clip(array, low, high)
        return (array - low) / max(high - low, 1e-6)
    if method == "zscore":
        return (array - array.mean()) / max(float(array.std()), 1e-6)
    raise ValueError(f"unknown intensity normalisation {method!r}")


def prepare(image: ImageData, preprocessing: dict) -> Prepared:
    grid = working_grid(image.to_sitk(), preprocessing)
    array = normalise(sitk.GetArrayViewFromImage(grid), preprocessing.get("intensity", {}))
    return Prepared(np.ascontiguousarray(array, dtype=np.float32), grid)
