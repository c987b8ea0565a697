"""The module's panel: wires Resources/UI/UniMiSSSlicer.ui to the parameter node and calls the Logic.

Long work runs in a separate process (the Logic's BackgroundProcess); a timer polls it, so the GUI
never waits. Every failure reaches the user as a dialog with its one-line cause, and whatever happens
in a finish handler, the buttons, bars and timer are reset.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from .chart import meanDice
from .dependencies import Dependencies
from .geometry import checkVolume
from .logic import UniMiSSSlicerLogic, modelOrigin, modelThatRan, oneLine
from .models import isPretrainingCheckpoint
from .parameters import UniMiSSParameters

EXPORT_FORMATS = (("Segmentation (.seg.nrrd)", "seg.nrrd"), ("Labelmap NRRD + colour table (.nrrd)", "nrrd"),
                  ("Labelmap NIfTI + colour table (.nii.gz)", "nii.gz"), ("DICOM SEG (volume loaded from DICOM)", "dicom"))
NEEDS_CORE = {"nrrd", "nii.gz"}  # .seg.nrrd and DICOM SEG are written by Slicer alone
LIB_MODULES = ("parameters", "process", "geometry", "models", "chart", "dependencies", "samples", "logic", "widget")


CHOOSE_CHECKPOINT = "<choose a pretraining checkpoint>"  # the base list's last entry: opens a file dialog


def currentData(comboBox):
    return comboBox.itemData(comboBox.currentIndex)


class UniMiSSSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.dependencies = Dependencies()
        self._parameterNode = None
        self._updating = False
        self._installing = False
        self._segmenting = None  # the running BackgroundProcess, if any
        self._training = None
        self._chartView = None

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
        self.ui.trainingChartFrame.visible = False

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
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node: self.showModelDescription())
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.showModelDescription)
        self.ui.baseModelComboBox.connect("currentIndexChanged(int)", self.onBaseModelChosen)
        self.ui.refreshModelsButton.connect("clicked(bool)", lambda checked=False: self.refreshModels(install=True))
        self.ui.segmentButton.connect("clicked(bool)", lambda checked=False: self.onSegmentButton())
        self.ui.refreshCasesButton.connect("clicked(bool)", lambda checked=False: self.refreshCases())
        self.ui.startTrainingButton.connect("clicked(bool)", lambda checked=False: self.onTrainingButton())
        self.ui.importModelButton.connect("clicked(bool)", lambda checked=False: self.onImportModel())
        self.ui.shareModelButton.connect("clicked(bool)", lambda checked=False: self.onShareModel())
        self.ui.removeModelButton.connect("clicked(bool)", lambda checked=False: self.onRemoveModel())
        self.ui.exportButton.connect("clicked(bool)", lambda checked=False: self.onExport())
        self.initializeParameterNode()
        self.refreshModels()

    def cleanup(self):
        self.cancelRuns()
        self.timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.refreshCases()

    def onReload(self):
        """Reload the Lib too: Slicer's Reload re-reads only the module file."""
        for name in LIB_MODULES:
            module = sys.modules.get(f"UniMiSSSlicerLib.{name}")
            if module is not None:
                importlib.reload(module)
        ScriptedLoadableModuleWidget.onReload(self)

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
            parameters.inputVolume = self.logic.defaultInputVolume()  # never a labelmap the selector hides
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
            if isPretrainingCheckpoint(p.baseModel):
                self.checkpointItem(p.baseModel)
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
        self.showModelDescription()

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

    # ------------------------------------------------------------------------- errors and installs

    def attempt(self, action: str, call, *args):
        """call(*args); any exception reaches the user as a dialog '<action> failed: <one line>' (the traceback goes
        to the Python console). Returns (True, result) or (False, None)."""
        try:
            return True, call(*args)
        except Exception as exc:
            logging.exception(f"UniMiSS: {action} failed")
            slicer.util.errorDisplay(f"{action} failed: {oneLine(exc)}")
            return False, None

    def ensureDependencies(self) -> bool:
        """torch and the core, installed first if the user agrees. One install at a time: pip runs with Slicer's
        event loop turning, so a second click could otherwise start a second install."""
        if self._installing:
            return False
        if not self.dependencies.missing():
            return True
        self._installing = True
        buttons = (self.ui.segmentButton, self.ui.startTrainingButton, self.ui.exportButton,
                   self.ui.importModelButton, self.ui.refreshModelsButton)
        for button in buttons:
            button.enabled = False
        self.ui.statusLabel.text = "Installing UniMiSS's Python packages (see the Python console)..."
        try:
            ok, installed = self.attempt("Installing UniMiSS's Python packages", self.dependencies.ensure)
        finally:
            self._installing = False
            for button in buttons:
                button.enabled = True
            self.ui.statusLabel.text = ""
        if ok and installed:
            self.refreshModels()
        return bool(ok and installed)

    # ------------------------------------------------------------------------- models

    def refreshModels(self, install=False):
        if install and not self.ensureDependencies():
            return
        if self.dependencies.missing():
            self.ui.modelDescriptionLabel.text = ("UniMiSS's Python packages are not installed yet: click Segment "
                                                  "(or Refresh) to install them.")
            return
        ok, models = self.attempt("Listing the models", self.logic.models)
        if not ok:
            return
        wasUpdating, self._updating = self._updating, True  # refilling the combo boxes changes no parameter
        try:
            for combo, first in ((self.ui.modelComboBox, "default for the input"),
                                 (self.ui.baseModelComboBox, "none: train from scratch")):
                combo.clear()
                combo.addItem(first, "")
                for model in models:
                    combo.addItem(f"{model.reference}  ({model.dimension}D {model.modality})", model.reference)
                    combo.setItemData(combo.count - 1, model.details, qt.Qt.ToolTipRole)
            self.ui.baseModelComboBox.addItem("a pretraining checkpoint (UniMiSS, UniMiSS+)...", CHOOSE_CHECKPOINT)
        finally:
            self._updating = wasUpdating
        if not wasUpdating:  # (else the update in progress selects the parameter node's models next)
            self.updateGUIFromParameterNode()
        self.showModelDescription()

    def onBaseModelChosen(self, index):
        combo = self.ui.baseModelComboBox
        if self._updating or combo.itemData(index) != CHOOSE_CHECKPOINT:
            return
        path = qt.QFileDialog.getOpenFileName(None, "Start from a pretraining checkpoint", "",
                                              "UniMiSS or UniMiSS+ checkpoint (*.pth *.pt *.ckpt)")
        self._updating = True  # adding the entry moves the current index: no parameter changes until it is chosen
        try:
            chosen = self.checkpointItem(path) if path else 0
        finally:
            self._updating = False
        combo.setCurrentIndex(chosen)

    def checkpointItem(self, path: str) -> int:
        """The base list's entry for a pretraining checkpoint file, added before the 'choose' entry if new."""
        combo = self.ui.baseModelComboBox
        index = combo.findData(path)
        if index < 0:
            index = max(0, combo.findData(CHOOSE_CHECKPOINT))
            combo.insertItem(index, f"{os.path.basename(path)}  (pretraining checkpoint)", path)
            combo.setItemData(index, path, qt.Qt.ToolTipRole)
        return index

    def inputDimension(self):
        volume = self.ui.inputVolumeSelector.currentNode()
        try:
            return checkVolume(volume) if volume is not None else None
        except ValueError:
            return None

    def showModelDescription(self, *args):
        if self.logic is None or self.dependencies.missing():
            return
        reference = currentData(self.ui.modelComboBox)
        dimension = self.inputDimension()
        ok, models = self.attempt("Listing the models", self.logic.models)
        if not ok:
            return
        if not reference:
            default = next((m for m in models if m.dimension == dimension and m.default), None) if dimension else None
            text = f"For this input: {default.summary}" if default else ""
        else:
            model = next((m for m in models if m.reference == reference), None)
            text = model.summary if model else ""
            if model and dimension and model.dimension != dimension:
                text += f"\nThis is a {model.dimension}D model; the input is {dimension}D: choose another to segment it."
        self.ui.modelDescriptionLabel.text = text

    def selectedModel(self):
        reference = currentData(self.ui.modelComboBox)
        if not reference:
            slicer.util.errorDisplay("Select a model in the Segment section first (not 'default for the input').")
        return reference

    def onImportModel(self):
        path = qt.QFileDialog.getOpenFileName(None, "Import a model package", "", "Model package (*.zip)")
        if not path or not self.ensureDependencies():
            return
        ok, info = self.attempt("Importing the model", self.logic.importModel, path)
        if ok:
            self.refreshModels()
            self.ui.modelComboBox.setCurrentIndex(max(0, self.ui.modelComboBox.findData(info.reference)))
            self.ui.modelsStatusLabel.text = f"Imported {info.reference}: it is selected for segmenting."

    def onShareModel(self):
        reference = self.selectedModel()
        if not reference or not self.ensureDependencies():
            return
        path = qt.QFileDialog.getSaveFileName(None, "Share the model as", f"{reference.replace('@', '-')}.zip",
                                              "Model package (*.zip)")
        if path:
            ok, written = self.attempt("Sharing the model", self.logic.exportModel, reference, path)
            if ok:
                self.ui.modelsStatusLabel.text = f"Wrote {reference} to {written}."

    def onRemoveModel(self):
        reference = self.selectedModel()
        if reference and self.ensureDependencies() and slicer.util.confirmOkCancelDisplay(
                f"Remove {reference} from your models?"):
            ok, _ = self.attempt("Removing the model", self.logic.removeModel, reference)
            if ok:
                self.refreshModels()
                self.ui.modelsStatusLabel.text = f"Removed {reference}."

    # ------------------------------------------------------------------------- segment

    def onSegmentButton(self):
        if self._segmenting is not None:
            self._segmenting.cancel()
            self.ui.statusLabel.text = "Cancelling..."
            return
        if not self.ensureDependencies():
            return
        self.updateParameterNodeFromGUI()
        p = self.parameters()
        ok, process = self.attempt("Segmenting", lambda: self.logic.segment(
            p.inputVolume, p.model, p.device, p.testTimeAugmentation, p.segmentNameList(),
            onEvent=self.onSegmentEvent, onFinished=self.onSegmentFinished))
        if not ok:
            return
        self._segmenting = process
        self.ui.segmentButton.text = "Cancel"
        self.ui.progressBar.value = 0
        self.ui.progressBar.format = "starting: %p%"
        self.ui.statusLabel.text = f"Segmenting '{p.inputVolume.GetName()}' with {process.model}..."
        self.timer.start()

    def onSegmentEvent(self, event):
        self.showEvent(event, self.ui.progressBar, self.ui.statusLabel)

    def onSegmentFinished(self, outcome):
        try:
            if outcome.ok:
                node = outcome.value
                count = node.GetSegmentation().GetNumberOfSegments()
                self.ui.progressBar.value = 100
                self.ui.progressBar.format = "done"
                self.ui.statusLabel.text = (f"Done: '{node.GetName()}', {count} segment{'s' * (count != 1)}, "
                                            f"by {modelThatRan(outcome) or 'an unnamed model'} ({modelOrigin(outcome) or 'origin not reported'}).")
                self.ui.exportSegmentationSelector.setCurrentNode(node)
            elif outcome.status == "cancelled":
                self.ui.statusLabel.text = "Cancelled: nothing was added to the scene."
            else:
                self.ui.statusLabel.text = f"Failed: {outcome.message}"
                slicer.util.errorDisplay(f"Segmentation failed: {outcome.message}")
        finally:
            self.endSegmenting()

    def endSegmenting(self):
        process, self._segmenting = self._segmenting, None
        self.ui.segmentButton.text = "Segment"
        if process is None or not (process.outcome and process.outcome.ok):
            self.ui.progressBar.value = 0
            self.ui.progressBar.format = "%p%"

    def showEvent(self, event, bar, label):
        """A progress event moves the bar (its text names the stage); a message goes to the label."""
        kind = event.get("event")
        if kind == "progress" and event.get("total"):
            bar.value = int(100 * event["done"] / event["total"])
            bar.format = f"{event['stage']}: %p%"
        elif kind == "message":
            label.text = event.get("text", "")

    def onTimer(self):
        for process, end in ((self._segmenting, self.endSegmenting), (self._training, self.endTraining)):
            if process is None:
                continue
            try:
                process.poll()
            except Exception as exc:  # a finish handler failed: say so, and never leave the GUI running
                logging.exception("UniMiSS: finishing the run failed")
                slicer.util.errorDisplay(f"Finishing the run failed: {oneLine(exc)}")
            finally:
                if process.outcome is not None and process in (self._segmenting, self._training):
                    end()
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

    def onPrepareCase(self, index, count, name):
        self.ui.trainingStatusLabel.text = f"Preparing case {index + 1} of {count} ('{name}')..."
        slicer.app.processEvents()

    def onTrainingButton(self):
        if self._training is not None:
            self._training.cancel()
            self.ui.trainingStatusLabel.text = "Cancelling..."
            return
        if not self.ensureDependencies():
            return
        self.updateParameterNodeFromGUI()
        p = self.parameters()

        def start():
            return self.logic.finetune(
                self.checkedPairs(), p.newModelName, base=p.baseModel, newLabelSet=p.newLabelSet, epochs=p.epochs,
                minutes=p.minutes or None, learningRate=p.learningRate or None, patchSize=p.patchSizeValues(),
                device=p.device, onEvent=self.onTrainingEvent, onFinished=self.onTrainingFinished,
                onPrepare=self.onPrepareCase)

        self.ui.startTrainingButton.enabled = False
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            ok, process = self.attempt("Fine-tuning", start)
        finally:
            qt.QApplication.restoreOverrideCursor()
            self.ui.startTrainingButton.enabled = True
        if not ok:
            self.ui.trainingStatusLabel.text = ""
            return
        self._training = process
        self.ui.startTrainingButton.text = "Cancel fine-tuning"
        self.ui.trainingProgressBar.value = 0
        self.ui.trainingStatusLabel.text = "Starting the training process..."
        self.showChart(process.chart)
        self.timer.start()

    def showChart(self, chart):
        """The live chart (loss, validation Dice and the base model's Dice against minutes) in the panel."""
        if self._chartView is None:
            self._chartView = slicer.qMRMLPlotView()
            self._chartView.setMinimumHeight(180)
            self.ui.trainingChartFrame.layout().addWidget(self._chartView)
        self._chartView.setMRMLScene(slicer.mrmlScene)
        self._chartView.setMRMLPlotViewNode(chart.view)
        self.ui.trainingChartFrame.visible = True

    def onTrainingEvent(self, event):
        if event.get("event") != "metric":
            self.showEvent(event, self.ui.trainingProgressBar, self.ui.trainingStatusLabel)
            return
        text = f"Epoch {event['epoch']}: loss {event.get('loss', float('nan')):.3f}"
        if event.get("val_dice"):
            text += f", validation Dice {meanDice(event['val_dice']):.3f}"
            if event.get("base_val_dice"):
                text += f" (base model {meanDice(event['base_val_dice']):.3f})"
        if event.get("eta_s"):
            text += f"; about {max(1, round(event['eta_s'] / 60))} min left"
        self.ui.trainingStatusLabel.text = text

    def onTrainingFinished(self, outcome):
        try:
            if outcome.ok:
                self.ui.trainingProgressBar.value = 100
                self.refreshModels()
                self.ui.modelComboBox.setCurrentIndex(max(0, self.ui.modelComboBox.findData(outcome.value)))
                self.ui.trainingStatusLabel.text = f"New model {outcome.value}: it is selected for segmenting."
            elif outcome.status == "cancelled":
                self.ui.trainingStatusLabel.text = "Cancelled: no model was made."
            else:
                self.ui.trainingStatusLabel.text = f"Failed: {outcome.message}"
                slicer.util.errorDisplay(f"Fine-tuning failed: {outcome.message}")
        finally:
            self.endTraining()

    def endTraining(self):
        process, self._training = self._training, None
        self.ui.startTrainingButton.text = "Start fine-tuning"
        if process is not None and not (process.outcome and process.outcome.ok):
            self.ui.trainingChartFrame.visible = False  # the Logic removed the chart's nodes
            if self._chartView is not None:
                self._chartView.setMRMLPlotViewNode(None)
            self.ui.trainingProgressBar.value = 0

    # ------------------------------------------------------------------------- export

    def onExport(self):
        self.updateParameterNodeFromGUI()
        p = self.parameters()
        node = p.exportSegmentation
        if node is None:
            slicer.util.errorDisplay("Select a segmentation to export.")
            return
        if p.exportFormat in NEEDS_CORE and not self.ensureDependencies():
            return
        if p.exportFormat == "dicom":
            folder = qt.QFileDialog.getExistingDirectory(None, "Write the DICOM SEG into")
            if folder:
                ok, _ = self.attempt("DICOM SEG export", self.logic.exportDicomSeg, node, folder,
                                     p.exportReferenceVolume)
                if ok:
                    self.ui.exportStatusLabel.text = f"Wrote the DICOM SEG into {folder}."
            return
        suffix = "." + p.exportFormat
        path = qt.QFileDialog.getSaveFileName(None, "Export the segmentation as", node.GetName() + suffix,
                                              f"*{suffix}")
        if path:
            path = path if path.lower().endswith(suffix) else path + suffix
            ok, written = self.attempt("Export", self.logic.exportSegmentation, node, path, p.exportReferenceVolume)
            if ok:
                self.ui.exportStatusLabel.text = f"Wrote {written}."
