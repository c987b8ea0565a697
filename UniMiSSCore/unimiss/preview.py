"""PNG previews of a segmentation: three orthogonal planes of a CT, or the radiograph, with segments overlaid."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .data.image import ImageData
from .data.io import atomic_output
from .data.labels import Label


def _window(array: np.ndarray, modality_ct: bool) -> np.ndarray:
    if modality_ct:
        low, high = -160.0, 240.0  # soft-tissue window: W 400, L 40
    else:
        low, high = np.percentile(array, (0.5, 99.5))
    return np.clip((array.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)


def _overlay(grey: np.ndarray, labels: np.ndarray, colors: dict[int, tuple]) -> np.ndarray:
    rgb = np.repeat(grey[..., None] * 255.0, 3, axis=-1)
    for value, color in colors.items():
        mask = labels == value
        rgb[mask] = 0.55 * rgb[mask] + 0.45 * np.array(color, dtype=np.float32)
    return rgb.astype(np.uint8)


def _isotropic(plane: np.ndarray, row_mm: float, col_mm: float, pixel: float) -> np.ndarray:
    """Resample a plane (nearest neighbour) to square pixels of `pixel` mm; anisotropic CT otherwise looks squashed."""
    rows, cols = (int(round(n * s / pixel)) for n, s in zip(plane.shape, (row_mm, col_mm)))
    r = np.minimum((np.arange(rows) + 0.5) * pixel / row_mm, plane.shape[0] - 1).astype(int)
    c = np.minimum((np.arange(cols) + 0.5) * pixel / col_mm, plane.shape[1] - 1).astype(int)
    return plane[np.ix_(r, c)]


def render(image: ImageData, labelmap: ImageData, labels: list[Label], modality_ct: bool = True) -> np.ndarray:
    """An RGB uint8 picture: axial, coronal and sagittal planes through the segments' centre, or the 2D image."""
    colors = {l.value: l.color for l in labels}
    if image.dimension == 2:
        return _overlay(_window(image.array, modality_ct), labelmap.array, colors)
    # Radiological display: patient's right on the left of the picture, head at the top.
    oriented = sitk.DICOMOrient(image.to_sitk(), "LPS")
    ct = sitk.GetArrayFromImage(oriented)
    lab = sitk.GetArrayFromImage(sitk.DICOMOrient(labelmap.to_sitk(), "LPS"))
    sx, sy, sz = oriented.GetSpacing()
    fg = np.argwhere(lab > 0)
    z, y, x = (fg.mean(axis=0).round().astype(int) if len(fg) else np.array(lab.shape) // 2)
    planes = [(ct[z], lab[z], sy, sx), (ct[::-1, y], lab[::-1, y], sz, sx), (ct[::-1, :, x], lab[::-1, :, x], sz, sy)]
    # Square pixels, fine enough that the largest side has at least 384 of them.
    pixel = min(sx, sy, sz, max(n * s for n, s in zip(ct.shape, (sz, sy, sx))) / 384)
    panels = []
    for grey, seg, row_mm, col_mm in planes:
        panels.append(_overlay(_isotropic(_window(grey, modality_ct), row_mm, col_mm, pixel),
                               _isotropic(seg, row_mm, col_mm, pixel), colors))
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels]
    return np.concatenate(padded, axis=1)


def write_preview(path, image: ImageData, labelmap: ImageData, labels: list[Label], modality_ct: bool = True):
    picture = render(image, labelmap, labels, modality_ct)
    with atomic_output(path) as tmp:
        sitk.WriteImage(sitk.GetImageFromArray(picture, isVector=True), str(tmp))
    return path
