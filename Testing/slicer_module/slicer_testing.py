"""Helpers for the Slicer module tests: slicer-core imported and completed, scenes, data, models.

slicer-core gives the MRML classes, module logics and slicer.util, but no application: this file
sets slicer.mrmlScene, an application logic with the Colors, Volumes, Segmentations, Tables and Plots
logics, reachable as slicer.modules.<name>.logic(), and supplies the one class the module needs
from the application, ScriptedLoadableModuleLogic.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np

from testkit import DATA, make_package

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODULE_DIR = REPO / "UniMiSSSlicer"
CT = DATA / "ct" / "ts-abdomen" / "image.nii.gz"
CT_LABELS = DATA / "ct" / "ts-abdomen" / "labels.nii.gz"
XRAY = DATA / "xray" / "nih-00000001_000.png"


try:
    import slicer
except ImportError as error:
    raise ImportError("the Slicer module tests need slicer-core: pip install slicer-core==5.13.31053.0 "
                      "(a wheel for CPython 3.11)") from error
import slicer.util  # noqa: E402  (the real one, from slicer-core)


class ScriptedLoadableModuleLogic:
    """What the application's slicer.ScriptedLoadableModule gives a Logic: a module name and its parameter node."""

    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetModuleName(self.moduleName)
            node = slicer.mrmlScene.AddNode(node)
        return node


_shim = types.ModuleType("slicer.ScriptedLoadableModule")
_shim.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
sys.modules["slicer.ScriptedLoadableModule"] = _shim
slicer.ScriptedLoadableModule = _shim
sys.path.insert(0, str(MODULE_DIR))



TERMINOLOGY = {  # SNOMED CT, as the built-in models carry it
    "liver": ["SCT", "10200004", "Liver"],
    "spleen": ["SCT", "78961009", "Spleen"],
}
CT_PREPROCESSING = {"spacing": [4.0, 4.0, 4.0], "orientation": "LPS",
                    "intensity": {"method": "ct", "clip": [-1000, 1000], "scale": [0.0, 1000.0]}}
CXR_PREPROCESSING = {"size": [128, 128], "intensity": {"method": "percentile", "lower": 0.5, "upper": 99.5}}


def make_models(folder: Path) -> None:
    """test-ct (3D: liver, spleen, with colours and terminology) and test-cxr (2D: lungs, heart)."""
    package = make_package(folder, "test-ct", 3, ["liver", "spleen"], CT_PREPROCESSING, (32, 64, 64))
    meta_path = package.root / "model.json"
    meta = json.loads(meta_path.read_text())
    colours = {"liver": [221, 130, 101], "spleen": [157, 108, 162]}
    for label in meta["labels"]:
        label["color"] = colours[label["name"]]
        label["terminology"] = {"category": ["SCT", "123037004", "Anatomical Structure"],
                                "type": TERMINOLOGY[label["name"]]}
    meta_path.write_text(json.dumps(meta, indent=2))  # labels are not covered by the weights' sha256
    make_package(folder, "test-cxr", 2, ["lung_left", "lung_right", "heart"], CXR_PREPROCESSING, (128, 128))


def new_scene():
    """A scene with an application logic and the module logics the module calls; (scene, app logic, modules)."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    colors = app_logic.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    logics = {"colors": colors}
    for name, logic in (("volumes", slicer.vtkSlicerVolumesLogic()),
                        ("segmentations", slicer.vtkSlicerSegmentationsModuleLogic()),
                        ("tables", slicer.vtkSlicerTablesLogic()), ("plots", slicer.vtkSlicerPlotsLogic())):
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        logics[name] = logic
    for name, logic in logics.items():
        app_logic.SetModuleLogic(name.capitalize(), logic)
    modules = types.SimpleNamespace(**{name: types.SimpleNamespace(logic=lambda l=logic: l)
                                       for name, logic in logics.items()})
    return scene, app_logic, modules


def load_ct(name="ct", path=CT):
    """Load a CT the way Slicer does: the Volumes module logic with its own reader."""
    node = slicer.modules.volumes.logic().AddArchetypeVolume(str(path), name)
    assert node is not None, path
    return node


def load_radiograph(name="cxr", path=XRAY, ijk_to_ras=None):
    """A PNG as a single-slice scalar volume (slicer-core's ITK reads no PNG: SimpleITK reads it)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    voxels = sitk.GetArrayFromImage(image)[np.newaxis]  # (1, rows, columns)
    if ijk_to_ras is None:
        ijk_to_ras = np.diag([-0.5, -0.5, 1.0, 1.0])
        ijk_to_ras[:3, 3] = (120.0, 130.0, 37.5)
    return slicer.util.addVolumeFromArray(voxels, ijk_to_ras, name, "vtkMRMLScalarVolumeNode")


def add_segmentation(volume, masks: dict, name="segmentation"):
    """A segmentation of `volume` with one segment per {name: boolean voxels (k, j, i)}, as the Segment Editor makes."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    for segment_name, mask in masks.items():
        segment_id = node.GetSegmentation().AddEmptySegment("", segment_name)  # IDs Segment_1, ... as the editor gives
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), node, segment_id, volume)
    return node


def organ_masks(crop=slice(None)):
    """Liver and spleen of the ts-abdomen CT from its (automatic TotalSegmentator) labels, as (k, j, i) masks."""
    import SimpleITK as sitk

    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(CT_LABELS)))[crop]
    names = {v: int(k) for k, v in json.loads((CT_LABELS.parent / "labels.json").read_text())["labels"].items()}
    return {organ: labels == names[organ] for organ in ("liver", "spleen")}


def node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
