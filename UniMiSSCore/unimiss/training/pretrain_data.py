"""Unlabelled images for UniMiSS pretraining and the two augmented global views of each.

Radiographs are percentile-normalised and replicated to 3 channels (the published 2D
stem takes 3); CT volumes are clipped and scaled to [-1, 1], resampled to a working
spacing. Each sample is two views of one image: random scaled crops resized to the
view size, random flips and intensity changes, in the spirit of the published
`data_loader2D.py` / `data_loader3D.py`.
"""
from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ..data import read_image
from ..inference.preprocessing import INTENSITY_PRESETS, normalise, working_grid



def expand(paths) -> list:
    from ..data.inputs import expand_inputs

    return expand_inputs([str(p) for p in paths]) if paths else []


def load_radiographs(paths, view_size) -> list[torch.Tensor]:
    """Each radiograph as a (1, H, W) float tensor in [0, 1], stored at about twice the view size."""
    out = []
    for path in expand(paths):
        image = read_image(path).squeeze_slice()
        if image.dimension != 2:
            raise ValueError(f"{path}: a 3D image given as a radiograph (--images2d); use --images3d")
        array = torch.from_numpy(normalise(image.array, INTENSITY_PRESETS['percentile']).astype(np.float32))[None, None]
        scale = min(1.0, 2 * max(view_size) / min(array.shape[-2:]))
        if scale < 1:
            array = F.interpolate(array, scale_factor=scale, mode="area")
        out.append(array[0].contiguous())
    return out


def load_volumes(paths, spacing_mm: float) -> list[torch.Tensor]:
    """Each CT as a (1, D, H, W) float tensor, LPS-oriented, at `spacing_mm` isotropic, intensities in [-1, 1]."""
    out = []
    for path in expand(paths):
        image = read_image(path)
        if image.dimension != 3:
            raise ValueError(f"{path}: a 2D image given as a CT volume (--images3d); use --images2d")
        grid = working_grid(image.to_sitk(), {"orientation": "LPS", "spacing": [spacing_mm] * 3})
        array = normalise(sitk.GetArrayViewFromImage(grid), INTENSITY_PRESETS['ct-wide'])
        out.append(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None])
    return out


def _crop_box(shape, view, rng, scale):
    """A random box (start, size) per axis whose volume fraction is in `scale`, aspect near the view's."""
    shape, view = np.array(shape), np.array(view, dtype=float)
    # The largest box of the view's aspect ratio that fits, then a random fraction of it.
    full = view * float(np.min(shape / view))
    fraction = rng.uniform(*scale) ** (1 / len(shape))
    aspect = np.exp(rng.uniform(-0.25, 0.25, size=len(shape)))  # up to about 4:3 per axis
    size = np.clip(np.round(full * fraction * aspect), 1, shape).astype(int)
    start = [int(rng.integers(0, s - c + 1)) for s, c in zip(shape, size)]
    return start, size


def make_view(image: torch.Tensor, view_size, rng, scale=(0.4, 1.0)) -> torch.Tensor:
    """One augmented view (C, *view_size) of a (1, *spatial) image: scaled crop, resize, flips, intensity."""
    spatial = image.shape[1:]
    start, size = _crop_box(spatial, view_size, rng, scale)
    crop = image[(slice(None), *(slice(a, a + s) for a, s in zip(start, size)))]
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    view = F.interpolate(crop[None], size=tuple(view_size), mode=mode, align_corners=False)[0]
    for axis in range(1, view.ndim):  # flips along every in-plane axis (and z for volumes)
        if rng.random() < 0.5:
            view = view.flip(axis)
    # Brightness/contrast and gamma-like changes, then a little noise.
    if rng.random() < 0.8:
        view = view * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)
    if len(spatial) == 2 and rng.random() < 0.3:
        view = view.clamp(0, 1) ** float(rng.uniform(0.7, 1.5))
    if rng.random() < 0.3:
        view = view + torch.from_numpy(rng.normal(0, 0.03, size=tuple(view.shape)).astype(np.float32))
    if len(spatial) == 2:
        view = view.expand(3, *view.shape[1:])  # the 2D stem takes 3 channels
    return view.contiguous()


def make_batch(images, indices, view_size, rng) -> list[torch.Tensor]:
    """Two views of each image: a list of two (B, C, *view_size) tensors."""
    views = [[make_view(images[i], view_size, rng) for i in indices] for _ in range(2)]
    return [torch.stack(v) for v in views]


def check_view_size(size, spatial_dims: int) -> tuple[int, ...]:
    from ..models.mit import size_multiple

    size = tuple(int(s) for s in size)
    mult = size_multiple(spatial_dims)
    if len(size) != spatial_dims or any(s <= 0 or s % m for s, m in zip(size, mult)):
        raise ValueError(f"the {spatial_dims}D view size {size} must have {spatial_dims} positive sizes, "
                         f"each a multiple of {mult}")
    return size


def iterations(n_samples: int, batch: int, world: int) -> int:
    return max(1, math.ceil(n_samples / world) // batch)
