"""The one image type of the core: voxels in SimpleITK order with their LPS geometry."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

GRID_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class ImageData:
    """A scalar 2D or 3D image.

    `array` is indexed (z, y, x) for 3D and (y, x) for 2D, as `sitk.GetArrayFromImage` gives it;
    `spacing` and `origin` are in SimpleITK order (x, y[, z]), in mm and LPS;
    `direction` is the row-major flattened LPS direction matrix (4 or 9 numbers).
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def __post_init__(self):
        array = np.asarray(self.array)
        if array.ndim not in (2, 3):
            raise ValueError(f"ImageData holds 2D or 3D scalar voxels, got an array of shape {array.shape}")
        n = array.ndim
        for name, expected in (("spacing", n), ("origin", n), ("direction", n * n)):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != expected:
                raise ValueError(f"a {n}D image needs {expected} numbers in {name}, got {len(value)}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "array", array)

    @property
    def dimension(self) -> int:
        return self.array.ndim

    @property
    def size(self) -> tuple[int, ...]:
        """Number of voxels in SimpleITK order (x, y[, z])."""
        return tuple(reversed(self.array.shape))

    def to_sitk(self) -> sitk.Image:
        array = self.array.astype(np.uint8) if self.array.dtype == bool else self.array
        image = sitk.GetImageFromArray(array, isVector=False)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "ImageData":
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("ImageData holds scalar images; convert vector images first")
        return cls(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def with_array(self, array) -> "ImageData":
        """Same geometry, new voxels."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"new voxels of shape {array.shape} do not fit the grid of shape {self.array.shape}")
        return dataclasses.replace(self, array=array)

    def same_grid(self, other: "ImageData") -> bool:
        """Same size, spacing, origin and direction (relative tolerance 1e-6, absolute 1e-6 near zero)."""
        if self.array.shape != other.array.shape:
            return False
        return all(np.allclose(getattr(self, name), getattr(other, name), rtol=GRID_TOLERANCE, atol=GRID_TOLERANCE)
                   for name in ("spacing", "origin", "direction"))

    def squeeze_slice(self) -> "ImageData":
        """A 3D image of a single slice (z size 1) as a 2D image; any other image unchanged."""
        if self.dimension != 3 or self.array.shape[0] != 1:
            return self
        direction = np.reshape(self.direction, (3, 3))[:2, :2]
        return ImageData(self.array[0], self.spacing[:2], self.origin[:2], tuple(direction.ravel()))

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix from voxel index (i, j, k) = (x, y, z) to LPS mm; a 2D image as one slice at z = 0."""
        n = self.dimension
        matrix = np.eye(4)
        matrix[:n, :n] = np.reshape(self.direction, (n, n)) * np.asarray(self.spacing)
        matrix[:n, 3] = self.origin
        return matrix

    @classmethod
    def from_ijk_to_lps(cls, array: np.ndarray, matrix) -> "ImageData":
        """The inverse of `ijk_to_lps` for a 3D (z, y, x) array."""
        matrix = np.asarray(matrix, dtype=float)
        spacing = np.linalg.norm(matrix[:3, :3], axis=0)
        direction = matrix[:3, :3] / spacing
        return cls(array, tuple(spacing), tuple(matrix[:3, 3]), tuple(direction.ravel()))
