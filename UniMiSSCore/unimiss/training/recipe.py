"""The training plan sized for the data and a CPU budget: working spacing, patch, batch, learning rates over time.

nnU-Net plans spacing, patch and batch from the dataset's median case and a GPU memory budget; here the budget
is compute: a patch of about PATCH_VOXELS voxels (one training step of MiT-compact takes about a second
on two CPU cores, Testing/benchmarks/bench_training.py) and a batch that keeps a step near 2**20 voxels.
Within that budget a 3D patch is a slab of whole cross-sections (CROSS_SECTION voxels across at a spacing
that fits the median field of view) rather than a taller, narrower block: on a held-out patient the slab
learnt faster and found fewer organs where they cannot be (docs/benchmarks/finetune/patch-shape/).
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..models.config import size_multiple

PATCH_VOXELS = {3: 64 * 96 * 96, 2: 256 * 256}
CROSS_SECTION = 128         # voxels across a 3D patch, in-plane
FIELD_MARGIN = 1.125        # the median field of view spans at most this many patches across (air around the body)
BATCH_VOXELS = 2**20
PATCHES_PER_CASE = 6        # the median case spans at most about this many patches at the planned spacing
WARMUP = 0.05               # share of the run (time or steps) over which the learning rate rises
HEAD_WARMUP = 0.1           # share of the run in which only new layers train when the rest is pretrained


def plan_spacing(spacings, shapes) -> list[float]:
    """(x, y, z) mm: the median spacing; in-plane coarsened until a patch spans the median field of view (but for
    FIELD_MARGIN); then the slice distance (as far as in-plane), then all axes, until the median case holds at
    most PATCHES_PER_CASE patches."""
    spacing = np.median(np.asarray(spacings, float), axis=0)
    extent = np.median([np.asarray(sh[::-1], float) * np.asarray(sp, float) for sh, sp in zip(shapes, spacings)],
                       axis=0)  # mm along (x, y, z)
    spacing[:2] = np.maximum(spacing[:2], extent[:2].max() / (CROSS_SECTION * FIELD_MARGIN))
    budget = PATCHES_PER_CASE * PATCH_VOXELS[3]
    voxels = lambda s: float(np.prod(extent / s))  # noqa: E731
    if voxels(spacing) > budget:  # thin slices: thicker first, as far as the in-plane spacing
        spacing[2] = min(max(spacing[2], spacing[:2].max()), spacing[2] * voxels(spacing) / budget)
    if voxels(spacing) > budget:
        spacing *= (voxels(spacing) / budget) ** (1 / 3)
    return [round(float(s), 3) for s in spacing]


def plan_patch(shapes) -> tuple[int, ...]:
    """3D patch (z, y, x): in-plane the median working shape up to CROSS_SECTION, in multiples of the network's
    input multiple; as many slices as PATCH_VOXELS then allows, no more than the median case has."""
    multiple = np.array(size_multiple(3))
    median = np.median(np.asarray(shapes, float), axis=0)
    round_up = lambda n, m: int(max(m, math.ceil(n / m) * m))  # noqa: E731
    y, x = (min(round_up(median[a], multiple[a]), CROSS_SECTION) for a in (1, 2))
    fits = PATCH_VOXELS[3] // (y * x) // multiple[0] * multiple[0]
    z = int(max(multiple[0], min(fits, round_up(median[0], multiple[0]))))
    return z, y, x


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
