"""Export from the module: .seg.nrrd, labelmap NRRD/NIfTI with a colour table, DICOM SEG where Slicer has it."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from slicer_testing import CT, add_segmentation, load_ct, node_ids, organ_masks, slicer

LIVER = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
         "~SCT^10200004^Liver~^^~Anatomic codes - DICOM master list~^^~^^")


@pytest.fixture
def organs(scene):
    volume = load_ct()
    masks = organ_masks()
    node = add_segmentation(volume, masks, "organs")
    liver, spleen = (node.GetSegmentation().GetNthSegment(i) for i in range(2))
    liver.SetColor(221 / 255, 130 / 255, 101 / 255)
    liver.SetTerminology(LIVER)
    spleen.SetColor(157 / 255, 108 / 255, 162 / 255)
    return volume, node, masks


def test_seg_nrrd_round_trips_through_slicerio(logic, organs, tmp_path):
    volume, node, masks = organs
    path = logic.exportSegmentation(node, tmp_path / "organs.seg.nrrd")
    segmentation = slicerio.read_segmentation(str(path))
    assert [s["name"] for s in segmentation["segments"]] == ["liver", "spleen"]
    liver = segmentation["segments"][0]
    assert [round(255 * c) for c in liver["color"]] == [221, 130, 101]
    assert liver["terminology"]["type"] == ["SCT", "10200004", "Liver"]
    voxels = slicerio.extract_segments(segmentation, [("liver", 1)])["voxels"]
    assert voxels.sum() == masks["liver"].sum()


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_labelmap_with_colour_table_on_the_volume_grid(logic, organs, tmp_path, suffix):
    from unimiss.data import read_labelmap

    volume, node, masks = organs
    before = node_ids(slicer.mrmlScene)
    path = logic.exportSegmentation(node, tmp_path / f"organs{suffix}")
    assert node_ids(slicer.mrmlScene) == before  # the temporary labelmap and colour nodes are gone
    assert (tmp_path / "organs.ctbl").is_file()
    labelmap, labels = read_labelmap(path)
    assert [(l.value, l.name, l.color) for l in labels] == [(1, "liver", (221, 130, 101)),
                                                           (2, "spleen", (157, 108, 162))]
    np.testing.assert_array_equal(labelmap.array == 1, masks["liver"])
    np.testing.assert_array_equal(labelmap.array == 2, masks["spleen"])
    written, original = sitk.ReadImage(str(path)), sitk.ReadImage(str(CT))  # the CT's own file: LPS, as ITK reads it
    assert written.GetSize() == original.GetSize()
    np.testing.assert_allclose(written.GetOrigin(), original.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetSpacing(), original.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(written.GetDirection(), original.GetDirection(), atol=1e-6)


def test_bad_exports_get_clear_messages(logic, organs, tmp_path):
    volume, node, masks = organs
    with pytest.raises(ValueError, match="export as .seg.nrrd, .nrrd, .nii.gz, .nii"):
        logic.exportSegmentation(node, tmp_path / "organs.stl")
    empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    with pytest.raises(ValueError, match="at least one segment"):
        logic.exportSegmentation(empty, tmp_path / "empty.seg.nrrd")
    with pytest.raises(ValueError, match="DICOM SEG needs a segmentation of a volume loaded from DICOM"):
        logic.exportDicomSeg(node, tmp_path / "dicom")
    assert not list(tmp_path.iterdir())


class Slicer58Segment:
    """A real vtkSegment as Slicer 5.8 shows it: no GetTerminology() (it came in 5.10), the tag API only."""

    def __init__(self, segment):
        self._segment = segment

    def __getattr__(self, name):
        if name in ("GetTerminology", "SetTerminology"):
            raise AttributeError(name)
        return getattr(self._segment, name)


def test_terminology_is_read_through_the_tag_api_of_slicer_5_8(organs):
    from UniMiSSSlicerLib.logic import _terminology

    volume, node, masks = organs
    liver = Slicer58Segment(node.GetSegmentation().GetNthSegment(0))
    assert _terminology(liver)["type"] == ["SCT", "10200004", "Liver"]
    assert _terminology(Slicer58Segment(node.GetSegmentation().GetNthSegment(1)))["type"] == [
        "SCT", "85756007", "Tissue"]  # what Slicer gives a segment nobody named


def test_a_closed_surface_segmentation_is_written_as_a_labelmap(logic, organs, tmp_path):
    volume, node, masks = organs
    segmentation = node.GetSegmentation()
    assert segmentation.CreateRepresentation("Closed surface")
    segmentation.SetSourceRepresentationName("Closed surface")
    segmentation.RemoveRepresentation("Binary labelmap")
    path = logic.exportSegmentation(node, tmp_path / "surface.seg.nrrd")
    read = slicerio.read_segmentation(str(path))  # a NRRD, not VTK polydata under a .seg.nrrd name
    assert [s["name"] for s in read["segments"]] == ["liver", "spleen"]
    liver = slicerio.extract_segments(read, [("liver", 1)])["voxels"]
    assert abs(int(liver.sum()) - int(masks["liver"].sum())) < 0.1 * masks["liver"].sum()
    assert segmentation.GetSourceRepresentationName() == "Closed surface"  # the user's node is unchanged


def test_dicom_seg_checks_the_reference_and_places_the_segmentation_in_its_study(logic, organs, tmp_path,
                                                                                  monkeypatch):
    import sys
    import types

    volume, node, masks = organs
    with pytest.raises(ValueError, match="'ct' was not loaded from DICOM"):
        logic.exportDicomSeg(node, tmp_path / "dicom")
    volume.SetAttribute("DICOM.instanceUIDs", "1.2.3.1 1.2.3.2")
    with pytest.raises(ValueError, match="needs Slicer's DICOM segmentation exporter"):
        logic.exportDicomSeg(node, tmp_path / "dicom")
    # The exporter needs Slicer's DICOM database; a stand-in records what the module hands it.
    shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
    study = shNode.CreateStudyItem(shNode.CreateSubjectItem(shNode.GetSceneItemID(), "patient"), "study")
    shNode.CreateItem(study, volume)
    shNode.CreateItem(shNode.GetSceneItemID(), node)
    exported = []

    class Exportable:
        directory = None

    class Plugin:
        def examineForExport(self, item):
            exported.append(shNode.GetItemParent(item))
            return [Exportable()]

        def export(self, exportables):
            exported.append(exportables[0].directory)
            return ""

    monkeypatch.setitem(sys.modules, "DICOMSegmentationPlugin",
                        types.SimpleNamespace(DICOMSegmentationPluginClass=Plugin))
    logic.exportDicomSeg(node, tmp_path / "dicom")
    assert exported == [study, str(tmp_path / "dicom")]
