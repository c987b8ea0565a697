"""Back to the input grid: the separable path gives SimpleITK's linear resampling, on real CT and on
grids with flips, axis permutations and non-zero origins; oblique grids keep the SimpleITK path."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from testkit import DATA
from unimiss.data import read_image
from unimiss.data.image import ImageData
from unimiss.inference import resample
from unimiss.inference.preprocessing import prepare

PREPROCESSING = {"spacing": [1.5, 1.5, 2.5], "orientation": "LPS", "intensity": {"method": "zscore"}}


def working_probabilities(grid: sitk.Image, num_classes: int, seed=0, smoothness=4) -> np.ndarray:
    """Smooth class probabilities on the working grid, fp16 as the sliding window accumulates them
    (the larger `smoothness`, the fewer the boundaries between classes)."""
    gen = torch.Generator().manual_seed(seed)
    shape = sitk.GetArrayViewFromImage(grid).shape
    logits = torch.randn(1, num_classes, *[max(2, n // smoothness) for n in shape], generator=gen) * 3
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    logits = torch.nn.functional.interpolate(logits, size=shape, mode=mode, align_corners=True)
    return torch.softmax(logits[0], 0).half().numpy()


def sitk_resampled(probs, grid, image: ImageData, c) -> np.ndarray:
    """One class resampled onto the whole input grid by SimpleITK, as the general path does."""
    prob = sitk.GetImageFromArray(probs[c].astype(np.float32))
    prob.CopyInformation(grid)
    return sitk.GetArrayFromImage(sitk.Resample(prob, image.to_sitk(), sitk.Transform(), sitk.sitkLinear,
                                                1.0 if c == 0 else 0.0, sitk.sitkFloat32))


def check_against_sitk(image: ImageData, monkeypatch, num_classes=5, slab_bytes=None):
    grid = prepare(image, {**PREPROCESSING, "spacing": PREPROCESSING["spacing"][:image.dimension]}).grid
    probs = working_probabilities(grid, num_classes)
    maps = resample.axis_maps(grid, image)
    assert maps is not None, "a grid that differs by spacing, flips and axis order is separable"
    if slab_bytes:
        monkeypatch.setattr(resample, "SLAB_BYTES", slab_bytes)
    classes = list(range(num_classes))
    ours = np.concatenate([x for _, _, x in resample.interpolated_slabs(probs, maps, image.array.shape,
                                                                                 classes)], axis=1)
    reference = np.stack([sitk_resampled(probs, grid, image, c) for c in classes])
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-6)

    general = resample.labels_by_sitk(probs, grid, image, classes, np.uint8)
    assert len(np.unique(general)) > 2  # the comparison covers real boundaries between classes
    top2 = np.sort(reference, axis=0)[-2:]
    for share in (0.0, 1.0):  # whole slabs interpolated, or only the voxels in cells with a boundary
        monkeypatch.setattr(resample, "POINTWISE_SHARE", share)
        fast = resample.labels_on_input_grid(probs, maps, image.array.shape, classes, np.uint8)
        differ = fast != general
        assert np.all(top2[1][differ] - top2[0][differ] < 1e-5), "labels differ only where two classes tie"
        assert differ.mean() < 1e-4


def test_real_ct_crop_matches_simpleitk(monkeypatch):
    ct = read_image(DATA / "ct" / "lidc-idri-0001" / "image.nii.gz")
    z0, y0, x0 = 50, 180, 140
    crop = ct.array[z0:z0 + 24, y0:y0 + 96, x0:x0 + 128]
    origin = ct.to_sitk().TransformIndexToPhysicalPoint((x0, y0, z0))
    image = ImageData(crop, ct.spacing, origin, ct.direction)
    check_against_sitk(image, slab_bytes=3 * 96 * 128 * 5 * 4, monkeypatch=monkeypatch)


@pytest.mark.parametrize("direction", [
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),   # RAS-stored: x and y flipped
    (0, 0, 1, 1, 0, 0, 0, -1, 0),    # axes permuted and one flipped (a sagittal acquisition)
    (0, 1, 0, -1, 0, 0, 0, 0, -1),
])
def test_flipped_and_permuted_grids_match_simpleitk(direction, monkeypatch):
    rng = np.random.default_rng(1)
    image = ImageData(rng.normal(size=(19, 33, 41)).astype(np.float32), (0.9, 1.3, 2.0), (-31.5, 12.25, 40.0),
                      direction)
    check_against_sitk(image, slab_bytes=4 * 33 * 41 * 5 * 4, monkeypatch=monkeypatch)


def test_2d_grid_with_a_flip_matches_simpleitk(monkeypatch):
    image = ImageData(np.zeros((70, 90), np.float32), (0.7, 0.6), (10.0, -5.0), (1, 0, 0, -1))
    check_against_sitk(image, monkeypatch)


def rotation(degrees):
    a = np.deg2rad(degrees)
    return (np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a), 0, 0, 0, 1)


def test_an_oblique_acquisition_is_still_separable(monkeypatch):
    """The working grid keeps the input's axes (reoriented, resampled), however tilted they are in space."""
    image = ImageData(np.zeros((12, 30, 26), np.float32), (0.8, 0.8, 2.0), (3.0, -7.0, 11.0), rotation(20))
    check_against_sitk(image, slab_bytes=5 * 30 * 26 * 5 * 4, monkeypatch=monkeypatch)


def test_grids_oblique_to_each_other_take_the_general_path():
    image = ImageData(np.zeros((8, 20, 20), np.float32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), rotation(0))
    grid = prepare(image, PREPROCESSING).grid
    grid.SetDirection(rotation(20))
    assert resample.axis_maps(grid, image) is None
