"""Before any work: the model's working grid for an image, its sliding windows and the memory they need.

A header that claims a tiny spacing, or a model that asks for one, can turn a small file into a
working grid of billions of voxels. `check` estimates the grid (input size x spacing / target
spacing, after reorientation), the number of windows and the peak memory of a segmentation, and
refuses above a limit (by default most of the machine's memory) with the numbers and the option
that lifts the limit. Nothing here allocates more than a few numbers.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..models.config import get_config
from .sliding_window import window_starts

DEFAULT_SHARE = 0.8       # of the physical memory, when no limit is given
OVERRIDE = "--max-memory-gb"
_AXIS_OF = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


class ResourceError(ValueError):
    """The work would need more memory than allowed; str() is one line with the numbers."""


@dataclass(frozen=True)
class Estimate:
    grid: tuple[int, ...]        # working grid, (z, y, x) or (y, x)
    spacing: tuple[float, ...]   # its spacing, (x, y[, z]) mm
    windows: int
    peak_bytes: int

    def describe(self, patch) -> str:
        grid = " x ".join(map(str, self.grid))
        spacing = " x ".join(f"{s:.3g}" for s in self.spacing)
        return (f"about {gib(self.peak_bytes)} of memory (working grid {grid} voxels at {spacing} mm, "
                f"{self.windows:,} windows of {' x '.join(map(str, patch))})")


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows
        try:
            import ctypes

            class Status(ctypes.Structure):
                _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total", ctypes.c_ulonglong),
                            ("avail", ctypes.c_ulonglong), ("pagefile", ctypes.c_ulonglong),
                            ("availpagefile", ctypes.c_ulonglong), ("virtual", ctypes.c_ulonglong),
                            ("availvirtual", ctypes.c_ulonglong), ("extended", ctypes.c_ulonglong)]

            status = Status(ctypes.sizeof(Status))
            ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status))
            return int(status.total)
        except Exception:
            return None


def memory_limit(max_memory_gb: float | None = None) -> int:
    """Bytes allowed: `max_memory_gb` when given, else DEFAULT_SHARE of the physical memory (16 GB if unknown)."""
    if max_memory_gb is not None:
        if not max_memory_gb > 0:
            raise ValueError(f"{OVERRIDE} must be above 0, not {max_memory_gb}")
        return int(max_memory_gb * 2**30)
    total = physical_memory()
    return int(DEFAULT_SHARE * total) if total else 16 * 2**30


def _oriented(size, spacing, direction, orientation):
    """Size and spacing (x, y, z) after reorienting to `orientation`, as DICOMOrient does (axes permuted)."""
    if not orientation or len(size) != 3:
        return list(size), list(spacing)
    matrix = np.abs(np.reshape(direction, (3, 3)))
    order = [int(np.argmax(matrix[_AXIS_OF[letter]])) for letter in orientation.upper()]
    if sorted(order) != [0, 1, 2]:  # oblique beyond telling: the voxel count is what matters
        return list(size), list(spacing)
    return [size[i] for i in order], [spacing[i] for i in order]


def estimate(size, spacing, direction, itemsize: int, package, batch_size: int = 2,
             overlap: float = 0.5) -> Estimate:
    """The working grid, windows and peak memory of segmenting an image of `size` (x, y[, z]) voxels."""
    pre = package.preprocessing
    dim = len(size)
    size, spacing = _oriented(size, spacing, direction, pre.get("orientation"))
    if pre.get("size"):
        grid = list(pre["size"])                                        # (z, y, x)
        work_spacing = [n * s / g for n, s, g in zip(size, spacing, grid[::-1])]
    elif pre.get("spacing"):
        work_spacing = [float(s) for s in pre["spacing"]]
        grid = [max(1, round(n * s / t)) for n, s, t in zip(size, spacing, work_spacing)][::-1]
    else:
        grid, work_spacing = list(size)[::-1], list(spacing)
    patch = package.patch_size
    padded = [max(g, p) for g, p in zip(grid, patch)]
    windows = math.prod(len(window_starts(n, p, overlap)) for n, p in zip(padded, patch))

    classes, channels = package.num_classes, package.in_channels
    n_input, n_work, n_padded = math.prod(size), math.prod(grid), math.prod(padded)
    config = package.meta["network"]["config"]
    if package.meta["network"]["architecture"] == "MiT+":  # its first stem level runs at full resolution
        from ..models.mitplus import get_plus_config

        stem = get_plus_config(config).stem_channels[0]
    else:
        stem = get_config(config).stem_channels if isinstance(config, (str, dict)) else 32
    # Resident throughout: the input image. Then the largest of the three stages:
    prepare = n_input * itemsize + 2 * 4 * n_work                       # SimpleITK copy, resampled, normalised
    per_window = math.prod(patch) * 4 * (4 * stem + 3 * classes + 8)    # the network's largest activations
    windows_stage = (4 * channels * n_work + (4 * n_padded if padded != grid else 0)
                     + n_padded * (2 * classes + 4 + 2) + batch_size * per_window)
    slab = 32 * math.prod(size[:2]) if dim == 3 else n_input
    back = 2 * classes * n_padded + 2 * n_input + 3 * 4 * slab          # probabilities, labels, resampled slab
    peak = n_input * itemsize + max(prepare, windows_stage, back)
    return Estimate(tuple(grid), tuple(work_spacing), windows, int(peak))


def check(image, package, batch_size: int = 2, overlap: float = 0.5, max_memory_gb: float | None = None,
          source="the image") -> Estimate:
    """Refuse (ResourceError) when segmenting `image` (an ImageData) with `package` would exceed the memory limit."""
    found = estimate(image.size, image.spacing, image.direction, image.array.dtype.itemsize, package, batch_size,
                     overlap)
    limit = memory_limit(max_memory_gb)
    if found.peak_bytes > limit:
        need = math.ceil(found.peak_bytes / 2**30 * 1.1)
        raise ResourceError(
            f"{source}: segmenting it with {package.reference} would need {found.describe(package.patch_size)}, "
            f"above the limit of {gib(limit)}; check the image's spacing in its header, or pass {OVERRIDE} {need} "
            "to run it anyway")
    return found


def check_file(path, package=None, batch_size: int = 2, overlap: float = 0.5,
               max_memory_gb: float | None = None) -> None:
    """The same check from an image file's header, before its voxels are read (folders and unreadable
    headers are left to the reader). Without a package only the reading itself is counted."""
    import SimpleITK as sitk

    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return
    size, components = list(reader.GetSize()), reader.GetNumberOfComponents()
    itemsize = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    itemsize = next((int(bits) // 8 for bits in ("64", "32", "16", "8") if bits in itemsize), 8) * components
    limit = memory_limit(max_memory_gb)
    reading = 2 * math.prod(size) * itemsize  # SimpleITK's image and the array copied from it
    if len(size) == 3 and size[2] == 1:
        size = size[:2]
    found = None
    if package is not None and package.dimension == len(size) and components == 1 and len(size) in (2, 3):
        dim = len(size)
        direction = np.reshape(reader.GetDirection(), (len(reader.GetSize()),) * 2)[:dim, :dim].ravel()
        found = estimate(size, reader.GetSpacing()[:dim], direction, itemsize, package, batch_size, overlap)
    need = max(reading, found.peak_bytes if found else 0)
    if need > limit:
        what = (f"segmenting it with {package.reference} would need {found.describe(package.patch_size)}" if found
                and found.peak_bytes >= reading else
                f"reading its {' x '.join(map(str, reader.GetSize()))} voxels would need about {gib(reading)}")
        raise ResourceError(f"{path}: {what}, above the limit of {gib(limit)}; check the image's header, or pass "
                            f"{OVERRIDE} {math.ceil(need / 2**30 * 1.1)} to run it anyway")
