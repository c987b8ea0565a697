"""The generic sliding window: coverage, blending and padding, in 2D and 3D."""
from __future__ import annotations

import pytest
import torch

from unimiss.inference import gaussian_importance, sliding_window, window_starts


@pytest.mark.parametrize("size, patch, overlap", [(100, 32, 0.5), (32, 32, 0.5), (33, 32, 0.25), (500, 96, 0.0)])
def test_windows_cover_the_axis_with_the_overlap_asked(size, patch, overlap):
    starts = window_starts(size, patch, overlap)
    assert starts[0] == 0 and starts[-1] + patch == max(size, patch)
    steps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(0 < s <= int(patch * (1 - overlap)) or overlap == 0 and s <= patch for s in steps)


def test_gaussian_weights_peak_in_the_centre_and_never_vanish():
    w = gaussian_importance((16, 32, 32))
    assert w.shape == (16, 32, 32) and w.min() > 0
    assert w.max() == w[7:9, 15:17, 15:17].max()


def voxelwise(batch):
    """A per-voxel 'network': blending identical per-voxel answers must give them back exactly."""
    logits = torch.cat([batch[:, :1], -batch[:, :1], batch[:, :1] ** 2], dim=1)
    return torch.softmax(logits, dim=1)


@pytest.mark.parametrize("shape, patch", [((1, 40, 70, 50), (16, 32, 32)), ((1, 300, 200), (128, 128)),
                                           ((1, 10, 20, 90), (16, 32, 32))])  # the last is smaller than the patch
def test_blended_result_equals_the_whole_volume_answer(shape, patch):
    volume = torch.randn(shape)
    calls = []
    probs = sliding_window(voxelwise, volume, patch, 3, overlap=0.5, batch_size=3,
                           on_window=lambda d, t: calls.append((d, t)))
    assert probs.shape == (3, *shape[1:])
    assert torch.allclose(probs, voxelwise(volume[None])[0], atol=1e-5)
    assert calls[-1][0] == calls[-1][1] and len(calls) == -(-calls[-1][1] // 3)
