"""Sliding-window inference with Gaussian blending, the same code for 2D and 3D."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets along one axis: windows of `patch` covering `size`, overlapping by at least `overlap`."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
    n = math.ceil((size - patch) / step) + 1
    return [round(i * (size - patch) / (n - 1)) for i in range(n)]


def gaussian_importance(patch, sigma_scale: float = 0.125, device="cpu") -> torch.Tensor:
    """Weights that favour each window's centre (as nnU-Net and MONAI do), never exactly zero."""
    axes = []
    for p in patch:
        x = torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2
        axes.append(torch.exp(-0.5 * (x / (sigma_scale * p)) ** 2))
    weight = axes[0]
    for a in axes[1:]:
        weight = weight[..., None] * a
    weight = weight / weight.max()
    return weight.clamp_min(1e-3)


def sliding_window(predict, volume: torch.Tensor, patch, num_classes: int, overlap: float = 0.5,
                   batch_size: int = 2, on_window=None, dtype=torch.float32) -> torch.Tensor:
    """Blended class probabilities (num_classes, *spatial) for a (channels, *spatial) volume.

    `dtype` is that of the accumulated probabilities: float16 halves the memory of the
    largest array of a whole-volume inference at a cost of about 1e-3 in probability.

    `predict(batch)` maps (B, channels, *patch) to probabilities (B, num_classes, *patch).
    Volumes smaller than the patch along an axis are padded (with their minimum) and cropped back.
    `on_window(done, total)` is called after each batch of windows.
    """
    spatial = tuple(volume.shape[1:])
    patch = tuple(patch)
    pad = [max(0, p - s) for s, p in zip(spatial, patch)]
    if any(pad):
        flat = [x for p in reversed(pad) for x in (p // 2, p - p // 2)]
        volume = F.pad(volume, flat, value=float(volume.min()))
    padded = tuple(volume.shape[1:])
    starts = list(itertools.product(*(window_starts(s, p, overlap) for s, p in zip(padded, patch))))
    weight = gaussian_importance(patch, device=volume.device)
    probs = torch.zeros((num_classes, *padded), dtype=dtype, device=volume.device)
    norm = torch.zeros(padded, dtype=torch.float32, device=volume.device)
    for i in range(0, len(starts), batch_size):
        group = starts[i:i + batch_size]
        slices = [tuple(slice(s, s + p) for s, p in zip(start, patch)) for start in group]
        batch = torch.stack([volume[(slice(None), *sl)] for sl in slices])
        out = predict(batch)
        for sl, window_probs in zip(slices, out):
            probs[(slice(None), *sl)] += (window_probs.float() * weight).to(dtype)
            norm[sl] += weight
        if on_window:
            on_window(min(i + batch_size, len(starts)), len(starts))
    probs /= norm.to(dtype)
    if any(pad):
        crop = tuple(slice(p // 2, p // 2 + s) for s, p in zip(spatial, pad))
        probs = probs[(slice(None), *crop)]
    return probs
