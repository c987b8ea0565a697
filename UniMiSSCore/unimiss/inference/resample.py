"""Class probabilities from the model's working grid back to the input grid, as labels.

The usual case is a working grid that differs from the input grid only by spacing,
origin, flips and axis order (the model reorients to LPS and resamples to its spacing):
each input axis then maps to one working axis by t -> offset + scale * t, and linear
interpolation is separable. `axis_maps` recognises that case and `labels_on_input_grid`
interpolates all classes at once, one axis at a time (numpy gathers), by slabs of input
slices that keep memory bounded. It reproduces SimpleITK's linear resampling (ITK's rules:
edge values clamped within half a voxel of the grid, the outside value beyond).
Any other grid (oblique to the working one) goes through `labels_by_sitk`, the general path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..data.image import ImageData

SLAB_SLICES = 32       # input slices resampled at a time by the general path
SLAB_BYTES = 32 << 20  # one slab of every class in float32 on the input grid, separable path: with the two
                       # arrays its last interpolation step holds, about what preflight.py counts for this stage
POINTWISE_SHARE = 0.125  # above this share of voxels in cells with a boundary, a slab is interpolated whole


@dataclass(frozen=True)
class AxisMap:
    """Input array axis `axis` (numpy order) lies along working array axis `working_axis`:
    input index t sits at working continuous index offset + scale * t."""
    axis: int
    working_axis: int
    offset: float
    scale: float


def axis_maps(grid: sitk.Image, image: ImageData, tol: float = 1e-6) -> list[AxisMap] | None:
    """How each input axis maps onto the working grid, or None when the grids are oblique to each other."""
    n = image.dimension
    to_physical = np.reshape(image.direction, (n, n)) * np.asarray(image.spacing)
    to_working = np.linalg.inv(np.reshape(grid.GetDirection(), (n, n)) * np.asarray(grid.GetSpacing()))
    matrix = to_working @ to_physical            # input index -> working index (SimpleITK axis order)
    offset = to_working @ (np.asarray(image.origin) - np.asarray(grid.GetOrigin()))
    maps = []
    for working in range(n):
        row = np.abs(matrix[working])
        source = int(row.argmax())
        if np.delete(row, source).max(initial=0.0) > tol * row[source] or np.abs(matrix[:, source]).argmax() != working:
            return None
        # SimpleITK axis i is numpy axis n - 1 - i
        maps.append(AxisMap(n - 1 - source, n - 1 - working, float(offset[working]), float(matrix[working, source])))
    return sorted(maps, key=lambda m: m.axis)


def winning_classes(probs: np.ndarray) -> list[int]:
    """Background and every class that wins somewhere on the working grid (by blocks, to spare memory)."""
    present = {0}
    for start in range(0, probs.shape[1], 16):
        present.update(np.unique(probs[:, start:start + 16].argmax(0)).tolist())
    return sorted(present)


def _slab_depth(shape, num_classes: int) -> int:
    return max(1, min(shape[0], SLAB_BYTES // (num_classes * int(np.prod(shape[1:])) * 4)))


def _linear_weights(index: np.ndarray, size: int):
    """ITK's linear interpolation along one axis: lower neighbour, upper neighbour, weight, inside the grid."""
    inside = (index >= -0.5) & (index < size - 0.5)
    lower = np.clip(np.floor(index), 0, size - 1).astype(np.int64)
    upper = np.minimum(lower + 1, size - 1)
    weight = np.clip(index - lower, 0.0, 1.0)
    return lower, upper, weight, inside


def _slab_axes(maps, shape, working_shape, start, stop) -> dict:
    """Per input axis: lower and upper working neighbours, weight and inside mask of slices start..stop."""
    axes = {}
    for m in maps:
        t = np.arange(start, stop) if m.axis == 0 else np.arange(shape[m.axis])
        axes[m.axis] = _linear_weights(m.offset + m.scale * t, working_shape[m.working_axis])
    return axes


def interpolated_slabs(probs: np.ndarray, maps: list[AxisMap], shape, classes: list[int], first=0, last=None):
    """Yields (start, stop, values): `probs[classes]` (on the working grid) linearly interpolated onto input
    slices start..stop (by slabs, from `first` to `last`) of an input grid of `shape`, float32 (len(classes), stop - start, *shape[1:]).
    Outside the working grid background (class 0) has probability 1, every other class 0."""
    depth = _slab_depth(shape, len(classes))
    outside = np.array([1.0 if c == 0 else 0.0 for c in classes], dtype=np.float32)
    order = [next(m for m in maps if m.working_axis == a) for a in range(len(shape))]
    last = shape[0] if last is None else last
    for start in range(first, last, depth):
        stop = min(start + depth, last)
        axes = _slab_axes(maps, shape, probs.shape[1:], start, stop)
        # Only the block of the working grid that these input voxels touch, in float32.
        block = (slice(None), *(slice(int(axes[m.axis][0].min()), int(axes[m.axis][1].max()) + 1) for m in order))
        x = np.ascontiguousarray(probs[block][classes], dtype=np.float32)
        # One axis at a time (numpy's take gathers several times faster than torch's index_select here),
        # those that shrink the array first so that the intermediate arrays stay small.
        for m in sorted(maps, key=lambda m: len(axes[m.axis][0]) / x.shape[1 + m.working_axis]):
            lower, upper, weight, _ = axes[m.axis]
            dim, first = 1 + m.working_axis, block[1 + m.working_axis].start
            low = np.take(x, lower - first, axis=dim)
            high = np.take(x, upper - first, axis=dim)
            high -= low
            high *= weight.astype(np.float32).reshape([-1 if d == dim else 1 for d in range(x.ndim)])
            low += high
            x = low
            del high
        # Working axes -> input axes (flips were taken care of by the order of the indices).
        x = x.transpose(0, *(1 + next(m.working_axis for m in maps if m.axis == k) for k in range(len(shape))))
        for k, (_, _, _, inside) in axes.items():
            if not inside.all():
                index = [slice(None)] * x.ndim
                index[1 + k] = ~inside
                x[tuple(index)] = outside.reshape(-1, *[1] * len(shape))
        yield start, stop, x


def _argmax_first(x: np.ndarray) -> np.ndarray:
    """Index of the largest value along axis 0, the first one on ties (as np.argmax), by a running maximum:
    a few times faster than np.argmax over a short, strided first axis."""
    best = x[0].copy()
    index = np.zeros(best.shape, dtype=np.uint8 if len(x) <= 256 else np.uint16)
    for c in range(1, len(x)):
        greater = x[c] > best
        index[greater] = c
        np.maximum(best, x[c], out=best)
    return index


def labels_on_input_grid(probs: np.ndarray, maps: list[AxisMap], shape, classes: list[int], dtype,
                         on_slab=None) -> np.ndarray:
    """Argmax over `classes` of `probs` (classes, *working grid) interpolated onto an input grid of `shape`
    (the first of equal values wins, as in the general path).

    Where one class wins at every corner of the working-grid cell around an input voxel, it wins at
    any weighted mean of those corners, so the label is known without interpolating: only voxels in
    cells with a boundary are interpolated, pointwise, or whole slabs at once where they are many."""
    labels = np.zeros(shape, dtype=dtype)
    values = np.asarray(classes, dtype=np.int64)
    winner, uniform = _cell_winners(probs, classes)
    depth = _slab_depth(shape, len(classes))
    slabs = -(-shape[0] // depth)
    for i, start in enumerate(range(0, shape[0], depth)):
        stop = min(start + depth, shape[0])
        axes = _slab_axes(maps, shape, probs.shape[1:], start, stop)
        win, settled = winner, uniform
        for m in maps:
            win = np.take(win, axes[m.axis][0], axis=m.working_axis)
            settled = np.take(settled, axes[m.axis][0], axis=m.working_axis)
        to_input = [next(m.working_axis for m in maps if m.axis == k) for k in range(len(shape))]
        win, settled = win.transpose(to_input), settled.transpose(to_input)
        inside = np.ones(settled.shape, dtype=bool)
        for k, (_, _, _, ins) in axes.items():
            inside &= ins.reshape([-1 if d == k else 1 for d in range(len(shape))])
        todo = inside & ~settled
        out = np.where(inside, win, 0)  # outside the working grid background has probability 1
        if todo.mean() > POINTWISE_SHARE:
            x = next(interpolated_slabs(probs, maps, shape, classes, start, stop))[2]
            out = _argmax_first(x)
        elif todo.any():
            out[todo] = _argmax_first(_interpolate_points(probs, classes, maps, axes, np.nonzero(todo)))
        labels[start:stop] = values[out]
        if on_slab:
            on_slab(i + 1, slabs)
    return labels


def _cell_winners(probs: np.ndarray, classes: list[int]):
    """On the working grid: the winning class (index into `classes`) at each voxel, and whether the same
    class wins at all corners of the cell spanned by the voxel and its upper neighbours (edges clamped)."""
    winner = np.empty(probs.shape[1:], dtype=np.uint8 if len(classes) <= 256 else np.uint16)
    for z in range(0, probs.shape[1], 16):
        winner[z:z + 16] = _argmax_first(probs[classes, z:z + 16])
    low, high = winner, winner
    for axis in range(winner.ndim):
        upper = np.r_[1:winner.shape[axis], winner.shape[axis] - 1]
        low = np.minimum(low, np.take(low, upper, axis=axis))
        high = np.maximum(high, np.take(high, upper, axis=axis))
    return winner, low == high


def _interpolate_points(probs, classes, maps, axes, points) -> np.ndarray:
    """Linear interpolation of `probs[classes]` at input voxels `points` (np.nonzero of a slab), float32."""
    corners = [[]]
    strides = [int(np.prod(probs.shape[2 + a:])) for a in range(probs.ndim - 1)]  # working grid, in elements
    for m in maps:
        lower, upper, weight, _ = axes[m.axis]
        t = points[m.axis]
        lo, hi, w = lower[t], upper[t], weight[t].astype(np.float32)
        stride = strides[m.working_axis]
        corners = [c + [(lo * stride, 1 - w)] for c in corners] + [c + [(hi * stride, w)] for c in corners]
    flat = [sum(i for i, _ in c) for c in corners]
    weights = [np.prod([w for _, w in c], axis=0) for c in corners]
    out = np.zeros((len(classes), len(points[0])), dtype=np.float32)
    for row, c in zip(out, classes):
        values = probs[c].ravel()
        for index, weight in zip(flat, weights):
            row += weight * values.take(index)  # fp16 values times fp32 weights: fp32, exactly as converted first
    return out


def labels_by_sitk(probs: np.ndarray, grid: sitk.Image, image: ImageData, classes: list[int], dtype,
                   on_slab=None) -> np.ndarray:
    """The general path, for any pair of grids: per slab of input slices, each class resampled
    (linearly, by SimpleITK) from the matching block of the working grid into a running maximum."""
    labels = np.zeros(image.array.shape, dtype=dtype)
    depth = image.array.shape[0] if image.dimension == 2 else SLAB_SLICES
    starts = range(0, image.array.shape[0], depth)
    for i, start in enumerate(starts):
        if on_slab:
            on_slab(i, len(starts))
        reference = _slab_grid(image, start, min(depth, image.array.shape[0] - start))
        block, block_grid = _matching_block(probs, grid, reference)
        best = None
        for c in classes:
            prob = sitk.GetImageFromArray(block[c].astype(np.float32))
            prob.CopyInformation(block_grid)
            outside = 1.0 if c == 0 else 0.0
            on_input = sitk.GetArrayFromImage(
                sitk.Resample(prob, reference, sitk.Transform(), sitk.sitkLinear, outside, sitk.sitkFloat32))
            if best is None:
                best = on_input
                continue
            labels[start:start + depth][on_input > best] = c
            np.maximum(best, on_input, out=best)
    if on_slab:
        on_slab(len(starts), len(starts))
    return labels


def _slab_grid(image: ImageData, start: int, depth: int) -> sitk.Image:
    """An empty image on slices start..start+depth of the input grid (or on the whole 2D grid)."""
    size = list(image.array.shape[::-1])
    origin = np.array(image.origin, dtype=float)
    if image.dimension == 3:
        size[2] = depth
        origin += np.reshape(image.direction, (3, 3)) @ np.array([0.0, 0.0, start * image.spacing[2]])
    reference = sitk.Image(size, sitk.sitkUInt8)
    reference.SetSpacing(image.spacing)
    reference.SetOrigin(origin.tolist())
    reference.SetDirection(image.direction)
    return reference


def _matching_block(probs: np.ndarray, grid: sitk.Image, reference: sitk.Image):
    """The block of `probs` (on `grid`) that covers `reference`, with a margin for interpolation, and its grid."""
    corners = [[0, n - 1] for n in reference.GetSize()]
    indices = np.array(np.meshgrid(*corners)).reshape(len(corners), -1).T
    points = [reference.TransformIndexToPhysicalPoint([int(i) for i in idx]) for idx in indices]
    index = np.array([grid.TransformPhysicalPointToContinuousIndex(p) for p in points])
    lo = np.clip(np.floor(index.min(0)).astype(int) - 1, 0, np.array(grid.GetSize()) - 1)
    hi = np.clip(np.ceil(index.max(0)).astype(int) + 2, lo + 1, np.array(grid.GetSize()))
    block = probs[(slice(None), *(slice(a, b) for a, b in zip(lo[::-1], hi[::-1])))]
    block_grid = sitk.Image([int(n) for n in hi - lo], sitk.sitkUInt8)
    block_grid.SetSpacing(grid.GetSpacing())
    block_grid.SetOrigin(grid.TransformIndexToPhysicalPoint([int(i) for i in lo]))
    block_grid.SetDirection(grid.GetDirection())
    return block, block_grid
