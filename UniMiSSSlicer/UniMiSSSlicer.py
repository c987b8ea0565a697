"""UniMiSS for 3D Slicer: segment CT volumes and radiographs, fine-tune on your own cases, export.

The Widget wires Resources/UI/UniMiSSSlicer.ui to the parameter node and calls the Logic
(UniMiSSSlicerLib/logic.py), which runs the `unimiss` core in a separate process. A timer polls
that process, so the GUI never waits for it.
"""
import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleTest,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from UniMiSSSlicerLib import UniMiSSParameters, UniMiSSSlicerLogic
from UniMiSSSlicerLib.dependencies import Dependencies
from UniMiSSSlicerLib.samples import SAMPLES, loadSample, registerSampleData

EXPORT_FORMATS = (("Segmentation (.seg.nrrd)", "seg.nrrd"), ("Labelmap NRRD + colour table (.nrrd)", "nrrd"),
                  ("Labelmap NIfTI + colour table (.nii.gz)", "nii.gz"), ("DICOM SEG", "dicom"))


def currentData(comboBox):
    return comboBox.itemData(comboBox.currentIndex)


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
            "process: Slicer stays responsive and Cancel stops it at once.")
        self.parent.acknowledgementText = (
            "UniMiSS is by Yutong Xie, Jianpeng Zhang, Yong Xia and Qi Wu (ECCV 2022); cite their paper when you "
            "use these models.")
        slicer.app.connect("startupCompleted()", registerSampleData)


class UniMiSSSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updating = False
        self._segmenting = None  # the running BackgroundProcess, if any
        self._training = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/UniMiSSSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = UniMiSSSlicerLogic()
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.onTimer)
        for label, key in EXPORT_FORMATS:
            self.ui.exportFormatComboBox.addItem(label, key)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for widget, signal in (
                (self.ui.inputVolumeSelector, "currentNodeChanged(vtkMRMLNode*)"),
                (self.ui.exportSegmentationSelector, "currentNodeChanged(vtkMRMLNode*)"),
                (self.ui.exportReferenceSelector, "currentNodeChanged(vtkMRMLNode*)"),
                (self.ui.modelComboBox, "currentIndexChanged(int)"),
                (self.ui.baseModelComboBox, "currentIndexChanged(int)"),
                (self.ui.deviceComboBox, "currentIndexChanged(int)"),
                (self.ui.exportFormatComboBox, "currentIndexChanged(int)"),
                (self.ui.ttaCheckBox, "toggled(bool)"), (self.ui.newLabelSetCheckBox, "toggled(bool)"),
                (self.ui.segmentNamesLineEdit, "editingFinished()"),
                (self.ui.newModelNameLineEdit, "editingFinished()"), (self.ui.patchSizeLineEdit, "editingFinished()"),
                (self.ui.epochsSpinBox, "valueChanged(int)"), (self.ui.minutesSpinBox, "valueChanged(double)"),
                (self.ui.learningRateSpinBox, "valueChanged(double)")):
            widget.connect(signal, self.updateParameterNodeFromGUI)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node: self.refreshModels())
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.showModelDescription)
        self.ui.refreshModelsButton.connect("clicked(bool)", lambda checked: self.refreshModels(install=True))
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.refreshCasesButton.connect("clicked(bool)", self.refreshCases)
        self.ui.startTrainingButton.connect("clicked(bool)", self.onTrainingButton)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.shareModelButton.connect("clicked(bool)", self.onShareModel)
        self.ui.removeModelButton.connect("clicked(bool)", self.onRemoveModel)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.initializeParameterNode()
        self.refreshModels()

    def cleanup(self):
        self.cancelRuns()
        self.timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.refreshCases()

    def onSceneStartClose(self, caller, event):
        self.cancelRuns()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------------------------- parameters <-> GUI

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        parameters = self.parameters()
        if parameters.inputVolume is None:
            parameters.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            parameters.save(self._parameterNode)

    def setParameterNode(self, node):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def parameters(self) -> UniMiSSParameters:
        return UniMiSSParameters.load(self._parameterNode)

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._parameterNode is None or self._updating:
            return
        self._updating = True
        try:
            p, ui = self.parameters(), self.ui
            ui.inputVolumeSelector.setCurrentNode(p.inputVolume)
            ui.exportSegmentationSelector.setCurrentNode(p.exportSegmentation)
            ui.exportReferenceSelector.setCurrentNode(p.exportReferenceVolume)
            for combo, value in ((ui.modelComboBox, p.model), (ui.baseModelComboBox, p.baseModel),
                                 (ui.exportFormatComboBox, p.exportFormat)):
                combo.setCurrentIndex(max(0, combo.findData(value)))
            ui.deviceComboBox.setCurrentIndex(max(0, ui.deviceComboBox.findText(p.device)))
            ui.ttaCheckBox.checked = p.testTimeAugmentation
            ui.segmentNamesLineEdit.text = p.segmentNames
            ui.newLabelSetCheckBox.checked = p.newLabelSet
            ui.newModelNameLineEdit.text = p.newModelName
            ui.patchSizeLineEdit.text = p.patchSize
            ui.epochsSpinBox.value = p.epochs
            ui.minutesSpinBox.value = p.minutes
            ui.learningRateSpinBox.value = p.learningRate
        finally:
            self._updating = False

    def updateParameterNodeFromGUI(self, *args):
        if self._parameterNode is None or self._updating:
            return
        ui = self.ui
        UniMiSSParameters(
            inputVolume=ui.inputVolumeSelector.currentNode(), model=currentData(ui.modelComboBox) or "",
            device=ui.deviceComboBox.currentText, testTimeAugmentation=ui.ttaCheckBox.checked,
            segmentNames=ui.segmentNamesLineEdit.text.strip(),
            baseModel=currentData(ui.baseModelComboBox) or "", newModelName=ui.newModelNameLineEdit.text.strip(),
            newLabelSet=ui.newLabelSetCheckBox.checked, epochs=ui.epochsSpinBox.value, minutes=ui.minutesSpinBox.value,
            learningRate=ui.learningRateSpinBox.value, patchSize=ui.patchSizeLineEdit.text.strip(),
            exportSegmentation=ui.exportSegmentationSelector.currentNode(),
            exportReferenceVolume=ui.exportReferenceSelector.currentNode(),
            exportFormat=currentData(ui.exportFormatComboBox) or "seg.nrrd",
        ).save(self._parameterNode)

    # ------------------------------------------------------------------------- models

    def ensureDependencies(self) -> bool:
        try:
            return Dependencies().ensure()
        except RuntimeError as exc:
            slicer.util.errorDisplay(str(exc))
            return False

    def refreshModels(self, install=False):
        if install and not self.ensureDependencies():
            return
        if Dependencies().missing():
            self.ui.modelDescriptionLabel.text = "UniMiSS is not installed yet: click Segment to install it."
            return
        volume = self.ui.inputVolumeSelector.currentNode()
        try:
            from UniMiSSSlicerLib.geometry import checkVolume

            dimension = checkVolume(volume) if volume is not None else None
        except ValueError:
            dimension = None
        wasUpdating, self._updating = self._updating, True  # refilling the combo boxes changes no parameter
        try:
            for combo, first, models in ((self.ui.modelComboBox, "default for the input", self.logic.models(dimension)),
                                         (self.ui.baseModelComboBox, "none: train from scratch", self.logic.models())):
                combo.clear()
                combo.addItem(first, "")
                for model in models:
                    combo.addItem(model.reference, model.reference)
                    combo.setItemData(combo.count - 1, model.details, qt.Qt.ToolTipRole)
        finally:
            self._updating = wasUpdating
        if not wasUpdating:  # (else the update in progress selects the parameter node's models next)
            self.updateGUIFromParameterNode()
        self.showModelDescription()

    def showModelDescription(self, *args):
        reference = currentData(self.ui.modelComboBox)
        text = ""
        if reference:
            text = next((m.summary for m in self.logic.models() if m.reference == reference), "")
        self.ui.modelDescriptionLabel.text = text

    def onImportModel(self):
        path = qt.QFileDialog.getOpenFileName(None, "Import a model package", "", "Model package (*.zip)")
        if path and self.ensureDependencies():
            self.tryLogic(lambda: self.logic.importModel(path), "Imported {}.", lambda info: info.reference)
            self.refreshModels()

    def onShareModel(self):
        reference = currentData(self.ui.modelComboBox)
        if not reference:
            slicer.util.errorDisplay("Select a model in the Segment section first.")
            return
        path = qt.QFileDialog.getSaveFileName(None, "Share the model as", f"{reference.replace('@', '-')}.zip",
                                              "Model package (*.zip)")
        if path:
            self.tryLogic(lambda: self.logic.exportModel(reference, path), "Wrote {}.")

    def onRemoveModel(self):
        reference = currentData(self.ui.modelComboBox)
        if reference and slicer.util.confirmOkCancelDisplay(f"Remove {reference} from your models?"):
            self.tryLogic(lambda: self.logic.removeModel(reference), f"Removed {reference}.")
            self.refreshModels()

    def tryLogic(self, call, message, describe=str, label=None):
        """Call the Logic; show its one-line ValueError/OSError to the user, or `message` in the status label."""
        try:
            result = call()
        except (ValueError, OSError) as exc:
            slicer.util.errorDisplay(str(exc))
            return None
        (label or self.ui.statusLabel).text = message.replace("{}", describe(result))
        return result

    # ------------------------------------------------------------------------- segment

    def onSegmentButton(self):
        if self._segmenting is not None:
            self._segmenting.cancel()
            return
        if not self.ensureDependencies():
            return
        self.updateParameterNodeFromGUI()
        p = self.parameters()
        self._segmenting = self.tryLogic(lambda: self.logic.segment(
            p.inputVolume, p.model, p.device, p.testTimeAugmentation, p.segmentNameList(),
            onEvent=self.onSegmentEvent, onFinished=self.onSegmentFinished), "Starting...")
        if self._segmenting is not None:
            self.ui.segmentButton.text = "Cancel"
            self.ui.progressBar.value = 0
            self.ui.progressBar.format = "%p%"
            self.timer.start()

    def onSegmentEvent(self, event):
        self.showEvent(event, self.ui.progressBar, self.ui.statusLabel)

    def onSegmentFinished(self, outcome):
        self._segmenting = None
        self.ui.segmentButton.text = "Segment"
        self.ui.progressBar.value = 100 if outcome.ok else 0
        if outcome.ok:
            node = outcome.value
            count = node.GetSegmentation().GetNumberOfSegments()
            self.ui.statusLabel.text = f"Done: '{node.GetName()}', {count} segments."
            self.ui.exportSegmentationSelector.setCurrentNode(node)
        elif outcome.status == "cancelled":
            self.ui.statusLabel.text = "Cancelled."
        else:
            self.ui.statusLabel.text = "Failed."
            slicer.util.errorDisplay(f"Segmentation failed: {outcome.message}")

    def showEvent(self, event, bar, label):
        """A progress event moves the bar (its text names the stage); a message goes to the label."""
        kind = event.get("event")
        if kind == "progress" and event.get("total"):
            bar.value = int(100 * event["done"] / event["total"])
            bar.format = f"{event['stage']}: %p%"
        elif kind == "message":
            label.text = event.get("text", "")

    def onTimer(self):
        for process in (self._segmenting, self._training):
            if process is not None:
                process.poll()
        if self._segmenting is None and self._training is None:
            self.timer.stop()

    def cancelRuns(self):
        for process in (self._segmenting, self._training):
            if process is not None:
                process.cancel()
                process.wait(timeout=10)

    # ------------------------------------------------------------------------- fine-tune

    def refreshCases(self, *args):
        self.ui.trainingCasesList.clear()
        for volume, segmentation in self.logic.trainingPairs():
            item = qt.QListWidgetItem(f"{volume.GetName()}  +  {segmentation.GetName()}")
            item.setData(qt.Qt.UserRole, [volume.GetID(), segmentation.GetID()])
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Unchecked)
            self.ui.trainingCasesList.addItem(item)

    def checkedPairs(self):
        items = [self.ui.trainingCasesList.item(i) for i in range(self.ui.trainingCasesList.count)]
        ids = [item.data(qt.Qt.UserRole) for item in items if item.checkState() == qt.Qt.Checked]
        return [(slicer.mrmlScene.GetNodeByID(v), slicer.mrmlScene.GetNodeByID(s)) for v, s in ids]

    def onTrainingButton(self):
        if self._training is not None:
            self._training.cancel()
            return
        if not self.ensureDependencies():
            return
        self.updateParameterNodeFromGUI()
        p = self.parameters()

        def start():
            return self.logic.finetune(
                self.checkedPairs(), p.newModelName, base=p.baseModel, newLabelSet=p.newLabelSet, epochs=p.epochs,
                minutes=p.minutes or None, learningRate=p.learningRate or None, patchSize=p.patchSizeValues(),
                device=p.device, onEvent=self.onTrainingEvent, onFinished=self.onTrainingFinished)

        self._training = self.tryLogic(start, "Preparing the cases...", label=self.ui.trainingStatusLabel)
        if self._training is not None:
            self.ui.startTrainingButton.text = "Cancel fine-tuning"
            self.ui.trainingProgressBar.value = 0
            slicer.modules.plots.logic().ShowChartInLayout(self._training.chart.chart)
            self.timer.start()

    def onTrainingEvent(self, event):
        if event.get("event") != "metric":
            self.showEvent(event, self.ui.trainingProgressBar, self.ui.trainingStatusLabel)
            return
        dice = event.get("val_dice") or {}
        text = f"Epoch {event['epoch']}: loss {event.get('loss', float('nan')):.3f}"
        if dice:
            text += f", validation Dice {sum(dice.values()) / len(dice):.3f}"
        if event.get("eta_s"):
            text += f"; about {max(1, round(event['eta_s'] / 60))} min left"
        self.ui.trainingStatusLabel.text = text

    def onTrainingFinished(self, outcome):
        self._training = None
        self.ui.startTrainingButton.text = "Start fine-tuning"
        if outcome.ok:
            self.refreshModels()
            self.ui.modelComboBox.setCurrentIndex(max(0, self.ui.modelComboBox.findData(outcome.value)))
            self.ui.trainingStatusLabel.text = f"New model {outcome.value}: it is selected for segmenting."
        elif outcome.status == "cancelled":
            self.ui.trainingStatusLabel.text = "Cancelled: no model was made."
        else:
            self.ui.trainingStatusLabel.text = "Failed."
            slicer.util.errorDisplay(f"Fine-tuning failed: {outcome.message}")

    # ------------------------------------------------------------------------- export

    def onExport(self):
        if not self.ensureDependencies():
            return
        self.updateParameterNodeFromGUI()
        p = self.parameters()
        node = p.exportSegmentation
        if node is None:
            slicer.util.errorDisplay("Select a segmentation to export.")
            return
        if p.exportFormat == "dicom":
            folder = qt.QFileDialog.getExistingDirectory(None, "Write the DICOM SEG into")
            if folder:
                self.tryLogic(lambda: self.logic.exportDicomSeg(node, folder), f"Wrote DICOM SEG into {folder}.")
            return
        suffix = "." + p.exportFormat
        path = qt.QFileDialog.getSaveFileName(None, "Export the segmentation as", node.GetName() + suffix,
                                              f"*{suffix}")
        if path:
            path = path if path.lower().endswith(suffix) else path + suffix
            self.tryLogic(lambda: self.logic.exportSegmentation(node, path, p.exportReferenceVolume), "Wrote {}.")


class UniMiSSSlicerTest(ScriptedLoadableModuleTest):
    """Inside Slicer: load each bundled sample, segment it with the default model, check the result."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentSamples()

    def test_SegmentSamples(self):
        import numpy as np

        from UniMiSSSlicerLib.geometry import ijkToRas

        self.assertTrue(Dependencies().ensure())
        logic = UniMiSSSlicerLogic()
        for sampleName, fileName, nodeName in SAMPLES:
            self.delayDisplay(f"Segmenting {sampleName}")
            volume = loadSample(fileName, nodeName)
            before = slicer.mrmlScene.GetNumberOfNodes()
            outcome = logic.segment(volume).wait(timeout=600)
            self.assertTrue(outcome.ok, outcome.message)
            segmentation = outcome.value.GetSegmentation()
            self.assertGreater(segmentation.GetNumberOfSegments(), 0)
            self.assertGreater(slicer.mrmlScene.GetNumberOfNodes(), before)
            labelmap = segmentation.GetNthSegment(0).GetRepresentation("Binary labelmap")
            matrix = vtk.vtkMatrix4x4()
            labelmap.GetImageToWorldMatrix(matrix)
            np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), ijkToRas(volume), atol=1e-4)
        self.delayDisplay("UniMiSS self-test passed")
