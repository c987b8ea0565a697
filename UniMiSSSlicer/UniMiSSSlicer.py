"""UniMiSS for 3D Slicer: segment CT volumes and radiographs, fine-tune on your own cases, export.

The panel is UniMiSSSlicerLib/widget.py, the work UniMiSSSlicerLib/logic.py, which runs the `unimiss`
core in a separate process. Supported: Slicer 5.8 (Python 3.9) and later.
"""
import os
import tempfile
import uuid

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from UniMiSSSlicerLib.widget import UniMiSSSlicerWidget  # noqa: F401  (Slicer looks the Widget up here)


class UniMiSSSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "UniMiSS"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["UniMiSS for 3D Slicer developers"]
        self.parent.helpText = (
            "Segment CT volumes and chest radiographs with UniMiSS (MiT) models, fine-tune them on cases you "
            "segmented, and export the results. Radiographs are single-slice volumes. The work runs in a separate "
            "process: Slicer stays responsive and Cancel stops it at once. Needs Slicer 5.8 or later and the "
            "PyTorch extension.")
        self.parent.acknowledgementText = (
            "UniMiSS is by Yutong Xie, Jianpeng Zhang, Yong Xia and Qi Wu (ECCV 2022); cite their paper when you "
            "use these models.")
        from UniMiSSSlicerLib.samples import registerSampleData

        slicer.app.connect("startupCompleted()", registerSampleData)


class UniMiSSSlicerTest(ScriptedLoadableModuleTest):
    """Inside Slicer (Reload & Test): segment both samples, fine-tune one epoch on a result, export it."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentFineTuneExport()

    def test_SegmentFineTuneExport(self):
        import numpy as np
        import vtk

        from UniMiSSSlicerLib import UniMiSSSlicerLogic
        from UniMiSSSlicerLib.dependencies import Dependencies
        from UniMiSSSlicerLib.geometry import ijkToRas
        from UniMiSSSlicerLib.samples import SAMPLES, loadSample

        self.assertTrue(Dependencies().ensure(), "UniMiSS's Python packages are not installed")
        logic = UniMiSSSlicerLogic()
        results = {}
        for sampleName, fileName, nodeName in SAMPLES:
            self.delayDisplay(f"Segmenting {sampleName}")
            volume = loadSample(fileName, nodeName)
            outcome = logic.segment(volume).wait(timeout=900)
            self.assertTrue(outcome.ok, outcome.message)
            segmentation = outcome.value.GetSegmentation()
            self.assertGreater(segmentation.GetNumberOfSegments(), 0)
            labelmap = segmentation.GetNthSegment(0).GetRepresentation("Binary labelmap")
            matrix = vtk.vtkMatrix4x4()
            labelmap.GetImageToWorldMatrix(matrix)
            np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), ijkToRas(volume), atol=1e-4)
            results[fileName] = (volume, outcome.value)

        self.delayDisplay("Fine-tuning one epoch on the CT result")
        volume, segmentationNode = results[SAMPLES[0][1]]
        name = "selftest-" + uuid.uuid4().hex[:8]
        process = logic.finetune([(volume, segmentationNode)], name, base=logic.modelFor(3).reference, epochs=1,
                                 iterations=2, batchSize=1)
        outcome = process.wait(timeout=1800)
        self.assertTrue(outcome.ok, outcome.message)
        self.assertEqual(len(process.chart.rows()), 1)
        self.assertIn(outcome.value, [m.reference for m in logic.models(3)])
        logic.removeModel(outcome.value)

        self.delayDisplay("Exporting the CT result")
        with tempfile.TemporaryDirectory() as folder:
            for fileName in ("result.seg.nrrd", "result.nii.gz"):
                path = logic.exportSegmentation(segmentationNode, os.path.join(folder, fileName))
                self.assertTrue(os.path.getsize(path) > 0)
            read = slicer.util.loadSegmentation(os.path.join(folder, "result.seg.nrrd"))
            self.assertEqual(read.GetSegmentation().GetNumberOfSegments(),
                             segmentationNode.GetSegmentation().GetNumberOfSegments())
        self.delayDisplay("UniMiSS self-test passed")
