"""The training plan sized for the data and a CPU budget: working spacing, patch, batch, learning rates over time.

nnU-Net plans spacing, patch and batch from the dataset's median case and a GPU memory budget; here the budget
is compute: a patch of about PATCH_VOXELS voxels (one training step of MiT-compact takes about a second
on two CPU cores, Testing/benchmarks/bench_training.py), a batch that keeps a step near 2**20 voxels, and a
working spacing no finer than lets the median case fit in a few patches, so that a patch sees whole organs.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..models.config import size_multiple

PATCH_VOXELS = {3: 64 * 96 * 96, 2: 256 * 256}
BATCH_VOXELS = 2**20
PATCHES_PER_CASE = 6        # the median case spans about this many patches at the planned spacing
WARMUP = 0.05               # share of the run (time or steps) over which the learning rate rises
HEAD_WARMUP = 0.1           # share of the run in which only new layers train when the rest is pretrained


def plan_spacing(spacings, shapes) -> list[float]:
    """(x, y, z) mm: the median spacing, coarsened (in-plane first, as far as the slice distance, then all axes)
    until the median case holds at most PATCHES_PER_CASE patches."""
    spacing = np.median(np.asarray(spacings, float), axis=0)
    extent = np.median([np.asarray(sh[::-1], float) * np.asarray(sp, float) for sh, sp in zip(shapes, spacings)],
                       axis=0)  # mm along (x, y, z)
    budget = PATCHES_PER_CASE * PATCH_VOXELS[3]
    voxels = lambda s: float(np.prod(extent / s))  # noqa: E731
    if voxels(spacing) > budget:
        inplane = min(spacing[2], spacing[0] * math.sqrt(voxels(spacing) / budget))
        spacing[:2] = np.maximum(spacing[:2], inplane)
    if voxels(spacing) > budget:
        spacing *= (voxels(spacing) / budget) ** (1 / 3)
    return [round(float(s), 3) for s in spacing]


def plan_patch(shapes, dimension: int) -> tuple[int, ...]:
    """Patch (z, y, x) / (y, x): the median working shape scaled down evenly to PATCH_VOXELS voxels, in
    multiples of the network's input multiple (the axis furthest above its share shrinks first)."""
    multiple = np.array(size_multiple(dimension))
    median = np.median(np.asarray(shapes, float), axis=0)
    target = median * min(1.0, (PATCH_VOXELS[dimension] / np.prod(median)) ** (1 / dimension))
    patch = np.maximum(multiple, np.round(target / multiple) * multiple).astype(int)
    while np.prod(patch) > PATCH_VOXELS[dimension] and (patch > multiple).any():
        axis = int(np.argmax(np.where(patch > multiple, patch / target, 0)))
        patch[axis] -= multiple[axis]
    return tuple(int(p) for p in patch)


def plan_batch(patch) -> int:
    return int(np.clip(round(BATCH_VOXELS / np.prod(patch)), 2, 8))


def learning_rate(progress: float, peak: float, schedule: str = "poly", warmup: float = WARMUP) -> float:
    """Peak rate times a linear warm-up over the first `warmup` of the run, then poly (0.9) or cosine decay to 0.

    `progress` is the share of the run done, 0..1: of the time budget with --minutes, else of the steps.
    """
    t = min(max(progress, 0.0), 1.0)
    if t < warmup:
        return peak * max(t / warmup, 0.02)
    t = (t - warmup) / (1 - warmup)
    return peak * (1 - t) ** 0.9 if schedule == "poly" else peak * 0.5 * (1 + math.cos(math.pi * t))


class Budget:
    """A time budget that ends a run on time: before each step, is there room for it and for what must follow
    (the last validation and saving the model)? Step and validation costs are learnt as the run goes."""

    def __init__(self, minutes: float | None, already_spent_s: float = 0.0):
        self.seconds = minutes * 60 if minutes else None
        self.start = time.monotonic() - already_spent_s
        self.step_s: list[float] = []
        self.validation_s = 0.0     # the last validation's duration, once measured
        self.validation_windows = 0  # until then: a window's forward pass costs about 0.4 of a patch's step
        self.batch = 1
        self.save_s = 2.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def progress(self) -> float | None:
        """Share of the budget spent, or None without a budget."""
        return None if self.seconds is None else self.elapsed() / self.seconds

    def step_seconds(self) -> float:
        """A cautious estimate of the next step: the slowest of the last few (CPUs shared with other work vary)."""
        return max(self.step_s[-5:]) if self.step_s else 0.0

    def room_for_step(self, will_validate: bool) -> bool:
        if self.seconds is None:
            return True
        validation = self.validation_s or self.validation_windows * 0.4 * self.step_seconds() / self.batch
        reserve = (validation if will_validate else 0.0) + self.save_s
        return self.elapsed() + self.step_seconds() + reserve <= self.seconds

    def remaining(self) -> float:
        return float("inf") if self.seconds is None else max(0.0, self.seconds - self.elapsed())
