"""Segment from the module: a CT and a radiograph in the scene become segmentation nodes on their grids."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import slicerio

from slicer_testing import CT, load_ct, load_radiograph, node_ids, slicer

from UniMiSSSlicerLib.geometry import ijkToRas

BINARY = "Binary labelmap"


def labelmap_geometry(segmentation_node, segment_id):
    import vtk

    labelmap = segmentation_node.GetSegmentation().GetSegment(segment_id).GetRepresentation(BINARY)
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    extent = labelmap.GetExtent()
    return slicer.util.arrayFromVTKMatrix(matrix), tuple(extent[2 * i + 1] - extent[2 * i] + 1 for i in range(3))


def test_ct_gives_named_coloured_segments_with_terminology_on_the_volume_grid(logic, scene):
    volume = load_ct()
    events = []
    process = logic.segment(volume, "test-ct", onEvent=events.append)
    outcome = process.wait(timeout=240)
    assert outcome.ok, outcome.message
    node = outcome.value
    assert node.IsA("vtkMRMLSegmentationNode") and scene.IsNodePresent(node)
    segmentation = node.GetSegmentation()
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    assert [s.GetName() for s in segments] == ["liver", "spleen"]
    assert [tuple(round(255 * c) for c in s.GetColor()) for s in segments] == [(221, 130, 101), (157, 108, 162)]
    assert "SCT^10200004^Liver" in segments[0].GetTerminology()
    assert "SCT^78961009^Spleen" in segments[1].GetTerminology()
    for i in range(len(segments)):
        matrix, size = labelmap_geometry(node, segmentation.GetNthSegmentID(i))
        np.testing.assert_allclose(matrix, ijkToRas(volume), atol=1e-4)
        assert size == volume.GetImageData().GetDimensions()
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is volume
    assert node.GetDisplayNode() is not None and node.GetStorageNode() is None  # new data, saved with the scene
    stages = {e["stage"] for e in events if e["event"] == "progress"}
    assert {"preprocess", "inference"} <= stages


def test_the_result_is_what_the_command_line_gives_for_the_same_file(logic, scene, home, tmp_path):
    """Voxel for voxel: the Slicer round trip (RAS volume -> LPS file -> segmentation node) loses nothing."""
    volume = load_ct()
    outcome = logic.segment(volume, "test-ct").wait(timeout=240)
    assert outcome.ok, outcome.message
    reference = tmp_path / "cli.seg.nrrd"
    run = subprocess.run([sys.executable, "-m", "unimiss", "segment", str(CT), "-o", str(reference), "--model",
                          "test-ct", "--progress", "none"], capture_output=True, text=True, timeout=240,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    cli = slicerio.read_segmentation(str(reference))
    voxels = cli["voxels"].T  # slicerio: (i, j, k); Slicer arrays: (k, j, i)
    node = outcome.value
    for segment in cli["segments"]:
        segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(segment["name"])
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume)
        assert mask.any()
        np.testing.assert_array_equal(mask > 0, voxels == segment["labelValue"])


def test_an_oblique_volume_keeps_its_grid(logic, scene):
    volume = load_ct()
    angle = np.radians(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0, 0], [np.sin(angle), np.cos(angle), 0, 0],
                         [0, 0, 1, 0], [0, 0, 0, 1]])
    volume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(rotation @ ijkToRas(volume)))
    outcome = logic.segment(volume, "test-ct").wait(timeout=240)
    assert outcome.ok, outcome.message
    segmentation = outcome.value.GetSegmentation()
    matrix, size = labelmap_geometry(outcome.value, segmentation.GetNthSegmentID(0))
    np.testing.assert_allclose(matrix, ijkToRas(volume), atol=1e-4)
    assert size == volume.GetImageData().GetDimensions()


def test_radiograph_as_single_slice_volume_gives_a_2d_segmentation(logic, scene):
    volume = load_radiograph()
    from unimiss.zoo import default_model

    assert logic.modelFor(2).reference == default_model(2).reference  # without a choice: the built-in default
    outcome = logic.segment(volume, "test-cxr").wait(timeout=240)
    assert outcome.ok, outcome.message
    node = outcome.value
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(3)] == ["lung_left", "lung_right", "heart"]
    matrix, size = labelmap_geometry(node, segmentation.GetNthSegmentID(0))
    assert size == (512, 512, 1)
    np.testing.assert_allclose(matrix, ijkToRas(volume), atol=1e-6)  # out-of-plane position kept


def test_cancel_mid_run_leaves_the_scene_as_it_was(logic, scene):
    volume = load_ct()
    before = node_ids(scene)
    outcomes = []
    process = logic.segment(volume, "test-ct", onFinished=outcomes.append)
    cancelled = []

    def cancel_on_first_progress(event):
        if event["event"] == "progress" and not cancelled:
            cancelled.append(event)
            process.cancel()

    process.on_event = cancel_on_first_progress
    outcome = process.wait(timeout=240)
    assert cancelled, "the run ended before any progress event"
    assert outcome.status == "cancelled" and outcomes == [outcome]
    assert outcome.value is None
    assert node_ids(scene) == before
    assert not slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
    assert not process.running and not process.poll()


def test_a_subset_of_the_model_segments(logic, scene):
    outcome = logic.segment(load_ct(), "test-ct", segmentNames=["spleen"]).wait(timeout=240)
    assert outcome.ok, outcome.message
    segmentation = outcome.value.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == ["spleen"]


@pytest.mark.parametrize("case, message", [
    ("empty volume", "is empty"),
    ("RGB volume", "colour (RGB)"),
    ("labels the model lacks", "has no segment 'kidney_left'"),
    ("2D model for a CT", "segments 2D images"),
    ("no such model", "unknown model"),
    ("no volume", "Select an input volume"),
])
def test_bad_requests_get_clear_messages_and_change_nothing(logic, scene, case, message):
    if case == "empty volume":
        volume, model, names = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty"), "test-ct", None
    elif case == "RGB volume":
        rgb = np.zeros((1, 64, 64, 3), np.uint8)
        volume = slicer.util.addVolumeFromArray(rgb, None, "photo", "vtkMRMLVectorVolumeNode")
        model, names = "test-cxr", None
    else:
        volume = None if case == "no volume" else load_ct()
        model = {"2D model for a CT": "test-cxr", "no such model": "no-such-model"}.get(case, "test-ct")
        names = ["liver", "kidney_left"] if case == "labels the model lacks" else None
    before = node_ids(scene)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        logic.segment(volume, model, segmentNames=names)
    assert "\n" not in str(error.value)
    assert node_ids(scene) == before


def test_an_error_in_the_process_reaches_the_user_as_one_readable_line(logic, scene):
    voxels = np.zeros((16, 32, 32), np.float32)
    voxels[3, 3, 3] = np.nan
    volume = slicer.util.addVolumeFromArray(voxels, None, "broken", "vtkMRMLScalarVolumeNode")
    before = node_ids(scene)
    outcome = logic.segment(volume, "test-ct").wait(timeout=240)
    assert outcome.status == "failed"
    assert "NaN" in outcome.message and "\n" not in outcome.message and "Traceback" not in outcome.message
    assert node_ids(scene) == before
