"""Fine-tune from the module: (volume, segmentation) pairs in the scene become a new model in the list."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from slicer_testing import DATA, add_segmentation, load_ct, load_radiograph, node_ids, organ_masks, slicer
from testkit import THREADS

from UniMiSSSlicerLib.geometry import ijkToRas

TINY = {"epochs": 1, "iterations": 2, "batchSize": 1, "precision": "fp32"}


@pytest.fixture
def own_home(model_home, tmp_path, monkeypatch):
    """A model home of its own (a copy of the shared one): fine-tuning adds models to it."""
    shutil.copytree(model_home / "models", tmp_path / "models")
    monkeypatch.setenv("UNIMISS_HOME", str(tmp_path))
    return tmp_path


def scene_pairs():
    """Two cases as a user leaves them after the Segment Editor: each volume with its segmentation."""
    pairs = []
    for i, crop in enumerate((slice(0, 80), slice(30, 112))):
        volume = load_ct(f"case{i}")
        matrix = ijkToRas(volume)
        matrix[:3, 3] += matrix[:3, 2] * crop.start  # a crop along k moves the origin, nothing else
        slicer.util.updateVolumeFromArray(volume, np.ascontiguousarray(slicer.util.arrayFromVolume(volume)[crop]))
        volume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
        pairs.append((volume, add_segmentation(volume, organ_masks(crop), f"case{i} segmentation")))
    return pairs


def test_finetuning_on_scene_pairs_registers_a_model_in_the_list(own_home, scene):
    from UniMiSSSlicerLib import UniMiSSSlicerLogic

    logic = UniMiSSSlicerLogic(environment={"OMP_NUM_THREADS": THREADS})
    pairs = scene_pairs()
    assert logic.trainingPairs() == pairs
    metrics = []
    process = logic.finetune(pairs, "my-organs", base="test-ct",
                             onEvent=lambda e: e["event"] == "metric" and metrics.append(e), **TINY)
    outcome = process.wait(timeout=300)
    assert outcome.ok, outcome.message
    assert outcome.value == "my-organs@1.0.0"
    listed = {m.reference: m for m in logic.models()}
    assert "my-organs@1.0.0" in listed
    assert listed["my-organs@1.0.0"].labels == ("liver", "spleen") and listed["my-organs@1.0.0"].dimension == 3
    assert "2 local cases" in listed["my-organs@1.0.0"].summary
    assert [m["epoch"] for m in metrics] == [1]
    rows = process.chart.rows()  # the live chart: one row per epoch
    assert len(rows) == 1 and rows[0][0] == 1 and rows[0][2] == pytest.approx(metrics[0]["loss"])
    assert rows[0][1] == pytest.approx(metrics[0]["minutes"])  # the chart's x axis
    assert scene.IsNodePresent(process.chart.chart)
    # The new model segments at once.
    segmented = logic.segment(pairs[0][0], "my-organs").wait(timeout=120)
    assert segmented.ok, segmented.message


def test_a_2d_model_from_scratch_on_radiographs(own_home, scene):
    from UniMiSSSlicerLib import UniMiSSSlicerLogic

    logic = UniMiSSSlicerLogic(environment={"OMP_NUM_THREADS": THREADS})
    pairs = []
    for i, name in enumerate(("nih-00000001_000.png", "tbx11k-h0001.png")):
        volume = load_radiograph(f"cxr{i}", DATA / "xray" / name)
        shape = slicer.util.arrayFromVolume(volume).shape  # (1, rows, columns)
        left, right = np.zeros(shape, bool), np.zeros(shape, bool)
        left[0, 100:400, 280:450] = True  # the patient's left is the image's right
        right[0, 100:400, 60:230] = True
        pairs.append((volume, add_segmentation(volume, {"lung_left": left, "lung_right": right}, f"cxr{i} lungs")))
    outcome = logic.finetune(pairs, "my-cxr", patchSize=(128, 128), **TINY).wait(timeout=300)
    assert outcome.ok, outcome.message
    model = logic.modelFor(2, outcome.value)
    assert (model.dimension, model.labels) == (2, ("lung_left", "lung_right"))
    segmented = logic.segment(pairs[0][0], outcome.value).wait(timeout=120)
    assert segmented.ok, segmented.message
    assert segmented.value.GetSegmentation().GetNumberOfSegments() == 2


def test_segments_the_base_model_lacks_are_refused_before_anything_runs(home, scene):
    from UniMiSSSlicerLib import UniMiSSSlicerLogic

    logic = UniMiSSSlicerLogic()
    pairs = scene_pairs()
    renamed = pairs[1][1].GetSegmentation().GetNthSegment(1)
    renamed.SetName("kidney_left")
    before = node_ids(scene)
    with pytest.raises(ValueError, match=re.escape("Segment 'kidney_left' of 'case1 segmentation' is not a label "
                                                   "of model test-ct@1.0.0 (liver, spleen)")):
        logic.finetune(pairs, "my-organs", base="test-ct", **TINY)
    assert node_ids(scene) == before


@pytest.mark.parametrize("change, message", [
    ("no cases", "Tick at least one case"),
    ("bad name", "cannot name a model"),
    ("2D base model", "is a 2D model; the cases are 3D"),
    ("empty segmentation", "has no painted voxel"),
    ("2D patch for 3D cases", "Patch size 128 128: a 3D model needs 3 numbers, multiples of 16 32 32"),
    ("patch not a multiple", "Patch size 20 64 64: a 3D model needs 3 numbers"),
])
def test_other_bad_requests(home, scene, change, message):
    from UniMiSSSlicerLib import UniMiSSSlicerLogic

    logic = UniMiSSSlicerLogic()
    volume = load_ct()
    shape = slicer.util.arrayFromVolume(volume).shape
    masks = {"liver": np.zeros(shape, bool)} if change == "empty segmentation" else organ_masks()
    pairs = [] if change == "no cases" else [(volume, add_segmentation(volume, masks))]
    before = node_ids(scene)
    base = {"2D base model": "test-cxr", "2D patch for 3D cases": "", "patch not a multiple": ""}.get(change, "test-ct")
    patch = {"2D patch for 3D cases": (128, 128), "patch not a multiple": (20, 64, 64)}.get(change)
    with pytest.raises(ValueError, match=re.escape(message)):
        logic.finetune(pairs, "Bad Name!" if change == "bad name" else "ok", base=base, patchSize=patch, **TINY)
    assert node_ids(scene) == before


def test_cancelled_finetuning_leaves_no_chart_and_no_model(own_home, scene):
    from UniMiSSSlicerLib import UniMiSSSlicerLogic

    logic = UniMiSSSlicerLogic(environment={"OMP_NUM_THREADS": "1"})
    pairs = scene_pairs()
    before = node_ids(scene)
    process = logic.finetune(pairs, "my-organs", base="test-ct", epochs=50, iterations=50)
    assert scene.IsNodePresent(process.chart.chart)
    process.on_event = lambda e: e["event"] == "progress" and process.cancel()
    outcome = process.wait(timeout=300)
    assert outcome.status == "cancelled"
    assert node_ids(scene) == before
    assert "my-organs@1.0.0" not in {m.reference for m in logic.models()}


def test_a_unimissplus_pretraining_checkpoint_starts_a_mitplus_model_that_segments(own_home, scene, plus_checkpoint):
    from UniMiSSSlicerLib import UniMiSSSlicerLogic

    logic = UniMiSSSlicerLogic(environment={"OMP_NUM_THREADS": THREADS})
    pairs = scene_pairs()
    outcome = logic.finetune(pairs, "plus-organs", base=str(plus_checkpoint), patchSize=(32, 64, 64),
                             spacing=(4, 4, 4), **TINY).wait(timeout=300)
    assert outcome.ok, outcome.message
    model = {m.reference: m for m in logic.models()}["plus-organs@1.0.0"]
    assert model.labels == ("liver", "spleen") and model.dimension == 3
    assert model.description.startswith("Fine-tuned from the official UniMiSS+ pretraining checkpoint checkpoint.pth "
                                        "on 2 local cases"), model.description
    assert "MiT-plus" in model.details
    volume = pairs[1][0]
    segmented = logic.segment(volume, "plus-organs").wait(timeout=120)
    assert segmented.ok, segmented.message
    node = segmented.value
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is volume
    with pytest.raises(ValueError, match="no such pretraining checkpoint file"):
        logic.finetune(pairs, "plus-organs", base=str(plus_checkpoint.with_name("UniMissPlus.pth")), **TINY)
