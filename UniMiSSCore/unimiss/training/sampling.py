"""Random training patches, foreground- and class-balanced, and augmentation generic in 2D/3D."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class PatchSampler:
    """Draws (image, label) patches. A share of them contains a voxel of a class drawn uniformly among the
    classes the cases hold, from a case that holds it, so rare classes (kidneys, aorta) are seen as often as
    the liver; that voxel lies anywhere in the central half of the patch, not always at its centre."""

    def __init__(self, cases, patch_size, foreground_fraction: float = 0.67):
        self.cases = cases
        self.patch = tuple(patch_size)
        self.foreground_fraction = foreground_fraction
        self.voxels = [{int(c): np.flatnonzero(case.label == c) for c in np.unique(case.label) if c != 0}
                       for case in cases]
        self.classes = sorted(set().union(*self.voxels)) if self.voxels else []

    def sample(self, batch_size: int, rng: np.random.Generator):
        images, labels = [], []
        for _ in range(batch_size):
            if self.classes and rng.random() < self.foreground_fraction:
                cls = self.classes[int(rng.integers(len(self.classes)))]
                holders = [i for i, v in enumerate(self.voxels) if cls in v]
                i = holders[int(rng.integers(len(holders)))]
                voxels = self.voxels[i][cls]
                voxel = np.unravel_index(int(voxels[rng.integers(len(voxels))]), self.cases[i].label.shape)
                centre = [int(v) + int(rng.integers(-(p // 4), p // 4 + 1)) for v, p in zip(voxel, self.patch)]
            else:
                i = int(rng.integers(len(self.cases)))
                centre = [int(rng.integers(s)) for s in self.cases[i].label.shape]
            case = self.cases[i]
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
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = array[tuple(src)]
    return out


def augment(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, p_spatial: float = 0.5,
            p_cropped: float = 0.15, deformation: float = 0.0):
    """Per patch: rotation (+-20 degrees in the slice plane, +-8 out of it in 3D) and scaling (0.7-1.4, as
    nnU-Net) with probability `p_spatial`, with a smooth random deformation of up to `deformation` (a share
    of the patch's half-width, along each axis) for shape variety: organs larger or smaller, outlines bent; then brightness, contrast, gamma and noise, as nnU-Net does, at
    the cost of one resampling of the batch. With probability `p_cropped` the patch looks like a scan cropped
    around an organ: beyond a random box (up to a quarter off each side) there is nothing, as beyond the edge
    of an image that inference pads with its minimum.

    No mirroring: left and right structures carry different labels.
    """
    b, nd = images.shape[0], images.ndim - 2
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    spatial = rand(b) < p_spatial
    if spatial.any():
        # affine_grid's coordinates are (x, y[, z]): the main rotation is in the (x, y) plane, a CT slice.
        theta = torch.eye(nd, nd + 1).repeat(b, 1, 1)
        rotation = _rotation(nd, (rand(b, 3) * 2 - 1) * torch.tensor([math.radians(20), math.radians(8),
                                                                     math.radians(8)]))
        scale = torch.exp((rand(b) * 2 - 1) * math.log(1.4))
        theta[:, :, :nd] = rotation / scale[:, None, None]
        theta[~spatial] = torch.eye(nd, nd + 1)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        if deformation > 0:
            grid = grid + _smooth_field(images.shape, deformation, rand) * spatial.view(-1, *[1] * (nd + 1))
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        labels = F.grid_sample(labels[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0].long()
    for i in torch.nonzero(rand(b) < p_cropped).flatten().tolist():
        size = torch.tensor(images.shape[2:])
        low = (rand(nd) * 0.25 * size).long()
        high = size - (rand(nd) * 0.25 * size).long()
        inside = torch.zeros(images.shape[2:], dtype=torch.bool)
        inside[tuple(slice(int(a), int(z)) for a, z in zip(low, high))] = True
        images[i, :, ~inside] = images[i].min()
        labels[i, ~inside] = 0
    shape = (b,) + (1,) * (images.ndim - 1)
    mean = images.mean(dim=tuple(range(1, images.ndim)), keepdim=True)
    images = (images - mean) * (0.75 + 0.5 * rand(shape)) + mean            # contrast
    images = images * (0.9 + 0.2 * rand(shape)) + (rand(shape) - 0.5) * 0.2  # brightness
    low = images.amin(dim=tuple(range(1, images.ndim)), keepdim=True)
    high = images.amax(dim=tuple(range(1, images.ndim)), keepdim=True)
    span = (high - low).clamp_min(1e-6)
    gamma = torch.exp((rand(shape) * 2 - 1) * math.log(1.5)) ** (rand(shape) < 0.3).float()
    images = ((images - low) / span) ** gamma * span + low
    images = images + torch.randn(images.shape, generator=generator) * 0.05 * rand(shape) * (rand(shape) < 0.3)
    return images.contiguous(), labels


def _smooth_field(shape, deformation: float, rand) -> torch.Tensor:
    """(b, *spatial, nd) displacements in grid_sample's units, random on a 4-point-per-axis lattice, each patch's
    largest amount drawn up to `deformation`, interpolated smoothly over the patch."""
    b, nd = shape[0], len(shape) - 2
    coarse = (rand(b, nd, *[4] * nd) * 2 - 1) * (rand(b) * deformation).view(-1, *[1] * (nd + 1))
    field = F.interpolate(coarse, size=tuple(shape[2:]), mode="bilinear" if nd == 2 else "trilinear",
                          align_corners=True)
    return field.movedim(1, -1)


def _rotation(nd: int, angles: torch.Tensor) -> torch.Tensor:
    """(b, nd, nd) rotation matrices: in-plane angle angles[:, 0]; in 3D also about the two in-plane axes."""
    b = angles.shape[0]
    c, s = torch.cos(angles), torch.sin(angles)
    z = torch.zeros(b)
    o = torch.ones(b)
    in_plane = torch.stack([c[:, 0], -s[:, 0], s[:, 0], c[:, 0]], 1).view(b, 2, 2)
    if nd == 2:
        return in_plane
    rz = torch.stack([c[:, 0], -s[:, 0], z, s[:, 0], c[:, 0], z, z, z, o], 1).view(b, 3, 3)
    rx = torch.stack([o, z, z, z, c[:, 1], -s[:, 1], z, s[:, 1], c[:, 1]], 1).view(b, 3, 3)
    ry = torch.stack([c[:, 2], z, s[:, 2], z, o, z, -s[:, 2], z, c[:, 2]], 1).view(b, 3, 3)
    return rz @ rx @ ry
