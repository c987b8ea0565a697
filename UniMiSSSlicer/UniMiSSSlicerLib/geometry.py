"""MRML volumes and the core's images: the one place where Slicer's RAS meets the core's LPS.

Slicer gives every volume an IJK-to-RAS matrix; the core works in LPS (as ITK and DICOM do).
The two differ by the sign of the first two world axes, nothing else.
"""
from __future__ import annotations

import numpy as np
import vtk

import slicer

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
GRID_TOLERANCE = 1e-4  # mm, and relative for spacing: float32 round trips through files


def ijkToRas(volumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def rasToLps(matrix) -> np.ndarray:
    """An IJK-to-RAS matrix as IJK-to-LPS (and back: the flip is its own inverse)."""
    return RAS_TO_LPS @ np.asarray(matrix, dtype=float)


def checkVolume(volumeNode) -> int:
    """The dimension (2 for a single slice, else 3) of a volume the core can segment; ValueError if not."""
    if volumeNode is None:
        raise ValueError("Select an input volume first.")
    name = volumeNode.GetName()
    image = volumeNode.GetImageData()
    if volumeNode.IsA("vtkMRMLVectorVolumeNode") or (image is not None and image.GetNumberOfScalarComponents() > 1):
        raise ValueError(f"'{name}' is a colour (RGB) volume. UniMiSS segments greyscale images: convert it "
                         "with the 'Vector to Scalar Volume' module (luminance) and segment the result.")
    if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        raise ValueError(f"'{name}' is a labelmap, not an image; select the CT or radiograph it belongs to.")
    if image is None or image.GetNumberOfPoints() == 0 or min(image.GetDimensions()) < 1:
        raise ValueError(f"'{name}' is empty: it has no voxels. Load an image into it first.")
    dims = image.GetDimensions()
    if dims[2] == 1:
        return 2
    if 1 in dims[:2]:
        raise ValueError(f"'{name}' is a single slice along its first or second axis ({dims[0]} x {dims[1]} x "
                         f"{dims[2]} voxels); only single-slice images along the third axis are 2D images.")
    return 3


def imageFromVolume(volumeNode):
    """The volume as the core's ImageData: voxels (k, j, i) with their LPS geometry (3D, even for one slice)."""
    from unimiss.data import ImageData

    checkVolume(volumeNode)
    voxels = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    return ImageData.from_ijk_to_lps(voxels, rasToLps(ijkToRas(volumeNode)))


def writeVolume(volumeNode, path) -> None:
    """Write the volume as NRRD in LPS, the way the core reads images (uncompressed: it is a temporary file)."""
    import SimpleITK as sitk

    sitk.WriteImage(imageFromVolume(volumeNode).to_sitk(), str(path), False)


def placeOnVolumeGrid(segmentationNode, volumeNode) -> None:
    """Make every segment's labelmap lie on the volume's grid (its IJK-to-RAS), or raise ValueError.

    A 3D result must already lie there (the core writes results on the input's grid). A single-slice
    result comes back as a 2D image whose out-of-plane position the core does not keep, so it gets
    the volume's matrix. Either way its voxels must lie within the volume's extent.
    """
    target = ijkToRas(volumeNode)
    dims = volumeNode.GetImageData().GetDimensions()
    segmentation = segmentationNode.GetSegmentation()
    name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    for index in range(segmentation.GetNumberOfSegments()):
        labelmap = segmentation.GetNthSegment(index).GetRepresentation(name)
        if labelmap is None:
            continue
        extent = labelmap.GetExtent()
        if any(high >= low and (low < 0 or high >= size)
               for low, high, size in zip(extent[0::2], extent[1::2], dims)):
            raise ValueError(f"the result (extent {list(extent)}) reaches outside the volume ({list(dims)} voxels)")
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(matrix)
        if dims[2] == 1:
            labelmap.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(target))
        elif not np.allclose(slicer.util.arrayFromVTKMatrix(matrix), target, rtol=GRID_TOLERANCE, atol=GRID_TOLERANCE):
            raise ValueError("the result does not lie on the volume's grid (its IJK-to-RAS matrix differs)")
