"""Random training patches with foreground oversampling, and augmentation generic in 2D/3D."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class PatchSampler:
    """Draws (image, label) patches; a share of them is centred on a foreground voxel of a random class."""

    def __init__(self, cases, patch_size, foreground_fraction: float = 0.5):
        self.cases = cases
        self.patch = tuple(patch_size)
        self.foreground_fraction = foreground_fraction
        # Voxel indices of each class, per case, for foreground-centred patches.
        self.foreground = [{int(c): np.flatnonzero(case.label == c) for c in np.unique(case.label) if c != 0}
                           for case in cases]

    def sample(self, batch_size: int, rng: np.random.Generator):
        images, labels = [], []
        for _ in range(batch_size):
            i = int(rng.integers(len(self.cases)))
            case, fg = self.cases[i], self.foreground[i]
            shape = case.label.shape
            if fg and rng.random() < self.foreground_fraction:
                voxels = fg[list(fg)[int(rng.integers(len(fg)))]]
                centre = np.unravel_index(int(voxels[rng.integers(len(voxels))]), shape)
            else:
                centre = [int(rng.integers(s)) for s in shape]
            images.append(crop(case.image, centre, self.patch, float(case.image.min())))
            labels.append(crop(case.label, centre, self.patch, 0))
        return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels)).long()


def crop(array: np.ndarray, centre, patch, fill) -> np.ndarray:
    """The patch of `array` around `centre`, padded with `fill` where it leaves the array."""
    out = np.full(patch, fill, dtype=array.dtype)
    src, dst = [], []
    for c, p, s in zip(centre, patch, array.shape):
        start = int(c) - p // 2
        lo, hi = max(start, 0), min(start + p, s)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = array[tuple(src)]
    return out


def augment(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, p_spatial: float = 0.3):
    """Random rotation (in-plane, +-15 degrees) and scaling (0.85-1.15), intensity scale, shift and noise.

    No mirroring: left and right structures carry different labels.
    """
    b, nd = images.shape[0], images.ndim - 2
    rand = lambda *shape: torch.rand(*shape, generator=generator)
    if float(rand(1)) < p_spatial:
        angle = (rand(b) * 2 - 1) * math.radians(15)
        scale = 0.85 + rand(b) * 0.3
        # affine_grid's coordinates are (x, y[, z]): rotate in the (x, y) plane, the plane of a CT slice.
        theta = torch.zeros(b, nd, nd + 1)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        if nd == 3:
            theta[:, 2, 2] = 1 / scale
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        labels = F.grid_sample(labels[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0].long()
    shape = (b,) + (1,) * (images.ndim - 1)
    images = images * (0.9 + 0.2 * rand(shape)) + (rand(shape) - 0.5) * 0.2
    images = images + torch.randn(images.shape, generator=generator) * 0.05 * rand(shape)
    return images, labels

