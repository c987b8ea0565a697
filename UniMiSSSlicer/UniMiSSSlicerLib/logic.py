"""The module's logic: MRML nodes to files and back, the core run as a separate process. No Qt here.

Segmenting writes the input volume to a temporary NRRD, runs `python -m unimiss segment ...
--progress jsonl`, and turns the `.seg.nrrd` it writes into a segmentation node. Fine-tuning writes
each (volume, segmentation) pair as an image and a labelmap on the volume's grid and runs
`unimiss finetune`; the result is a new model version in the registry. Nothing is added to the
scene until a run has succeeded, so a cancelled or failed run leaves the scene as it was.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import vtk

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from .chart import TrainingChart
from .geometry import checkVolume, placeOnVolumeGrid, rasToLps, ijkToRas, writeVolume
from .models import ModelInfo, findModel, isPretrainingCheckpoint, listModels
from .process import BackgroundProcess, ProcessOutcome, python_executable

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
LABELMAP_FORMATS = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii")


class UniMiSSSlicerLogic(ScriptedLoadableModuleLogic):
    """Segment, fine-tune and export. Long work returns a started BackgroundProcess: poll() it from a
    timer (the Widget does), or wait() for it (tests and scripts)."""

    def __init__(self, python: str | None = None, environment: dict | None = None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.python = python or python_executable()
        self.environment = dict(environment or {})  # added to os.environ for the core's process

    # ------------------------------------------------------------------------------------ models

    @staticmethod
    def defaultInputVolume():
        """The first volume the input selector offers: a scalar volume that is not a labelmap, or None."""
        return next((node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                     if not node.IsA("vtkMRMLLabelMapVolumeNode")), None)

    def models(self, dimension: int | None = None) -> list[ModelInfo]:
        return listModels(dimension)

    def modelFor(self, dimension: int, reference: str = "") -> ModelInfo:
        """The model to segment a `dimension`-D image with: the one named, else the default one."""
        if reference:
            info = findModel(reference)
            if info.dimension != dimension:
                kind = "a single-slice (2D) image" if dimension == 2 else "a 3D volume"
                raise ValueError(f"Model {info.reference} segments {info.dimension}D images, but the input is {kind}. "
                                 f"Choose a {dimension}D model.")
            return info
        candidates = self.models(dimension)
        if not candidates:
            raise ValueError(f"No model for {dimension}D images is installed. Import one, or fine-tune one "
                             "from your own segmentations.")
        return next((m for m in candidates if m.default and m.builtin), candidates[0])

    def exportModel(self, reference: str, path) -> Path:
        """Share a model: write it as a .zip package that `Import model` (or `unimiss models import`) reads."""
        from unimiss.zoo import export_model

        return export_model(reference, path)

    def importModel(self, path) -> ModelInfo:
        from unimiss.zoo import import_model

        return ModelInfo.fromPackage(import_model(path))

    def removeModel(self, reference: str) -> None:
        """Remove one version of a user model (roll back to the one before); built-in models stay."""
        from unimiss.zoo import remove_model

        remove_model(reference)

    # ------------------------------------------------------------------------------------ segment

    def segment(self, volumeNode, model: str = "", device: str = "auto", tta: bool = False,
                segmentNames: list[str] | None = None, outputName: str | None = None,
                onEvent=None, onFinished=None) -> BackgroundProcess:
        """Start segmenting `volumeNode`. When it ends, `onFinished(outcome)` gets outcome.value = the new
        vtkMRMLSegmentationNode (status "done"), or a readable outcome.message."""
        dimension = checkVolume(volumeNode)
        info = self.modelFor(dimension, model)
        keep = [n.strip() for n in segmentNames or [] if n.strip()]
        unknown = [n for n in keep if n not in info.labels]
        if unknown:
            raise ValueError(f"Model {info.reference} has no segment '{unknown[0]}'; its segments are "
                             f"{', '.join(info.labels)}.")
        work = Path(tempfile.mkdtemp(prefix="unimiss-segment-"))
        try:
            writeVolume(volumeNode, work / "input.nrrd")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        output = work / "result.seg.nrrd"
        command = ["segment", work / "input.nrrd", "-o", output, "--model", info.reference, "--device", device]
        command += ["--tta"] if tta else []
        name = outputName or slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} {info.name}")

        def finished(outcome: ProcessOutcome):
            try:
                if outcome.ok:
                    outcome.value = self.loadSegmentation(output, volumeNode, name, keep)
            except Exception as exc:  # whatever goes wrong, the caller hears of it through the outcome
                outcome.status, outcome.message = "failed", f"The result could not be loaded: {oneLine(exc)}"
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if onFinished is not None:
                onFinished(outcome)

        process = self._run(command, onEvent, finished, cleanup=work)
        process.model = info.reference
        return process

    def loadSegmentation(self, path, volumeNode, name: str, segmentNames=()):
        """A new segmentation node from a .seg.nrrd on the volume's grid, with names, colours and terminology."""
        scene = slicer.mrmlScene
        node = slicer.modules.segmentations.logic().LoadSegmentationFromFile(str(path), False, name)
        if node is None:
            raise ValueError(f"Slicer could not read {Path(path).name}")
        try:
            # The file is temporary: the node is new data, to be saved wherever the user saves the scene.
            storage = node.GetStorageNode()
            node.SetAndObserveStorageNodeID(None)
            if storage is not None:
                scene.RemoveNode(storage)
            placeOnVolumeGrid(node, volumeNode)
            node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
            segmentation = node.GetSegmentation()
            if segmentNames:
                for segmentId in list(segmentation.GetSegmentIDs()):
                    if segmentation.GetSegment(segmentId).GetName() not in segmentNames:
                        segmentation.RemoveSegment(segmentId)
        except BaseException:
            _removeWithDependents(scene, node)
            raise
        return node

    # ------------------------------------------------------------------------------------ fine-tune

    def trainingPairs(self) -> list[tuple]:
        """(volume, segmentation) pairs in the scene: each segmentation with segments and a reference volume."""
        pairs = []
        for node in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
            volume = node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole())
            if volume is not None and volume.IsA("vtkMRMLScalarVolumeNode") and \
                    not volume.IsA("vtkMRMLLabelMapVolumeNode") and node.GetSegmentation().GetNumberOfSegments():
                pairs.append((volume, node))
        return pairs

    def finetune(self, pairs, name: str, base: str = "", newLabelSet: bool = False, epochs: int | None = None,
                 minutes: float | None = None, learningRate: float | None = None, patchSize=None,
                 iterations: int | None = None, batchSize: int | None = None, spacing=None,
                 precision: str | None = None, device: str = "auto", chart: bool = True,
                 onEvent=None, onFinished=None, onPrepare=None) -> BackgroundProcess:
        """Start fine-tuning on (volume, segmentation) pairs; outcome.value = the new model's name@version.

        `base`: a model (name, name@version or package folder), a UniMiSS or UniMiSS+ pretraining checkpoint
        file (.pth), or "" to train from scratch.

        Writing the cases takes a while on large volumes: `onPrepare(index, count, name)` is called before each.
        With chart=True the returned process has `.chart`, a TrainingChart filled epoch by epoch.
        """
        if not pairs:
            raise ValueError("Tick at least one case (a volume with its segmentation) to train on.")
        if not MODEL_NAME.match(name or ""):
            raise ValueError(f"'{name}' cannot name a model: use lower-case letters, digits, '.', '_' and '-', "
                             "starting with a letter or digit.")
        dimensions = {checkVolume(volume) for volume, _ in pairs}
        if len(dimensions) > 1:
            raise ValueError("The ticked cases mix 2D radiographs and 3D volumes; train on one kind at a time.")
        dimension = dimensions.pop()
        checkpoint = isPretrainingCheckpoint(base)  # 2D and 3D at once, new output layers: as from scratch
        if checkpoint and not Path(base).is_file():
            raise ValueError(f"{base}: no such pretraining checkpoint file.")
        info = findModel(base) if base and not checkpoint else None
        if info is not None and info.dimension != dimension:
            raise ValueError(f"Model {info.reference} is a {info.dimension}D model; the cases are {dimension}D.")
        if patchSize and info is None:
            _checkPatchSize(tuple(patchSize), dimension)
        work = Path(tempfile.mkdtemp(prefix="unimiss-finetune-"))
        try:
            command = ["finetune", *self._trainingCases(pairs, work, info, newLabelSet, onPrepare)]
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        command += ["--name", name, "--workdir", work / "run", "--device", device]
        if info is not None:
            command += ["--base", info.reference] + (["--new-head"] if newLabelSet else [])
        else:
            command += ["--base", base] if checkpoint else []  # the core picks the intensity window for the data
        options = {"--epochs": epochs, "--minutes": minutes, "--lr": learningRate, "--iterations": iterations,
                   "--batch-size": batchSize, "--precision": precision}
        for flag, value in options.items():
            if value:
                command += [flag, value]
        for flag, values in (("--patch-size", patchSize), ("--spacing", spacing)):
            if values:
                command += [flag, *values]
        trainingChart = TrainingChart() if chart else None

        def event(e: dict):
            if trainingChart is not None and e.get("event") == "metric":
                trainingChart.add(e)
            if onEvent is not None:
                onEvent(e)

        def finished(outcome: ProcessOutcome):
            shutil.rmtree(work, ignore_errors=True)
            if outcome.ok:
                outcome.value = modelThatRan(outcome)
                if outcome.value is None:
                    outcome.status, outcome.message = "failed", "Fine-tuning ended without registering a model."
            if not outcome.ok and trainingChart is not None:
                trainingChart.remove()
            if onFinished is not None:
                onFinished(outcome)

        try:
            process = self._run(command, event, finished, cleanup=work)
        except BaseException:
            if trainingChart is not None:
                trainingChart.remove()
            raise
        process.chart = trainingChart
        return process

    def _trainingCases(self, pairs, work: Path, info, newLabelSet: bool, onPrepare=None) -> list:
        """Write each pair as caseN.nrrd + caseN.seg.nrrd; the --images/--labels arguments."""
        from unimiss.data import write_labelmap

        images, labelmaps = [], []
        for i, (volume, segmentation) in enumerate(pairs):
            if onPrepare is not None:
                onPrepare(i, len(pairs), segmentation.GetName())
            voxels, labels = self.labelmapFromSegmentation(segmentation, volume)
            present = {label.name for label in labels if (voxels == label.value).any()}
            if not present:
                raise ValueError(f"'{segmentation.GetName()}' has no painted voxel inside '{volume.GetName()}'.")
            if info is not None and not newLabelSet:
                unknown = sorted(present - set(info.labels))
                if unknown:
                    raise ValueError(f"Segment '{unknown[0]}' of '{segmentation.GetName()}' is not a label of model "
                                     f"{info.reference} ({', '.join(info.labels)}). Rename it to one of those, or "
                                     "tick 'New label set' to train the model on your labels.")
            image, labelmap = work / f"case{i}.nrrd", work / f"case{i}.seg.nrrd"
            writeVolume(volume, image)
            write_labelmap(self._imageOnGrid(voxels, volume), labelmap, labels)
            images.append(image)
            labelmaps.append(labelmap)
        return ["--images", *images, "--labels", *labelmaps]

    # ------------------------------------------------------------------------------------ export

    def labelmapFromSegmentation(self, segmentationNode, referenceVolume, segmentIds=None):
        """Voxels (k, j, i) on the reference volume's grid, value i+1 for the i-th segment, and their Labels."""
        from unimiss.data import Label

        segmentation = segmentationNode.GetSegmentation()
        segmentIds = list(segmentIds or segmentation.GetSegmentIDs())
        if not segmentIds:
            raise ValueError(f"'{segmentationNode.GetName()}' has no segments.")
        ids = vtk.vtkStringArray()
        for segmentId in segmentIds:
            ids.InsertNextValue(segmentId)
        scene = slicer.mrmlScene
        labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "UniMiSS export (temporary)")
        try:
            if not slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                    segmentationNode, ids, labelmapNode, referenceVolume):
                raise ValueError(f"Slicer could not turn '{segmentationNode.GetName()}' into a labelmap on the grid "
                                 f"of '{referenceVolume.GetName()}'.")
            voxels = np.array(slicer.util.arrayFromVolume(labelmapNode), copy=True)
        finally:
            _removeWithDependents(scene, labelmapNode)
        labels = []
        for value, segmentId in enumerate(segmentIds, start=1):
            segment = segmentation.GetSegment(segmentId)
            colour = tuple(int(round(255 * c)) for c in segment.GetColor())
            labels.append(Label(value, segment.GetName(), colour, _terminology(segment)))
        return voxels, labels

    def exportSegmentation(self, segmentationNode, path, referenceVolume=None) -> Path:
        """Write a segmentation: .seg.nrrd (Slicer's own writer), or a labelmap NRRD/NIfTI with a .ctbl colour
        table on the reference volume's grid (the segmentation's reference volume by default)."""
        path = Path(path)
        suffix = next((s for s in LABELMAP_FORMATS if path.name.lower().endswith(s)), None)
        if suffix is None:
            raise ValueError(f"{path.name}: export as {', '.join(LABELMAP_FORMATS)}")
        if segmentationNode is None or not segmentationNode.GetSegmentation().GetNumberOfSegments():
            raise ValueError("Select a segmentation with at least one segment to export.")
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".seg.nrrd":
            self._writeSegNrrd(segmentationNode, path)
            return path
        from unimiss.data import write_labelmap

        reference = referenceVolume or segmentationNode.GetNodeReference(
            segmentationNode.GetReferenceImageGeometryReferenceRole())
        if reference is None:
            raise ValueError("A labelmap needs a grid: select the volume the segmentation belongs to.")
        voxels, labels = self.labelmapFromSegmentation(segmentationNode, reference)
        return write_labelmap(self._imageOnGrid(voxels, reference), path, labels)

    def _writeSegNrrd(self, segmentationNode, path: Path) -> None:
        """Slicer's own .seg.nrrd writer, always from binary labelmaps: a segmentation whose source is, e.g., a
        closed surface would otherwise be written as polydata under the .seg.nrrd name."""
        labelmapName = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        source = segmentationNode
        if segmentationNode.GetSegmentation().GetSourceRepresentationName() != labelmapName:
            source = slicer.vtkMRMLSegmentationNode()  # a copy outside the scene: the user's node stays as it is
            source.GetSegmentation().DeepCopy(segmentationNode.GetSegmentation())
            if not source.GetSegmentation().CreateRepresentation(labelmapName):
                raise ValueError(f"Slicer could not turn '{segmentationNode.GetName()}' into a binary labelmap.")
            source.GetSegmentation().SetSourceRepresentationName(labelmapName)
        storage = slicer.vtkMRMLSegmentationStorageNode()  # not added to the scene: the node stays as it is
        storage.SetFileName(str(path))
        if not storage.WriteData(source):
            raise OSError(f"{path}: Slicer could not write the segmentation")

    def exportDicomSeg(self, segmentationNode, folder, referenceVolume=None) -> None:
        """DICOM SEG through Slicer's DICOM segmentation exporter (DICOMSegmentationPlugin), when present.

        The reference volume must come from the DICOM database; the segmentation is placed in its study in the
        subject hierarchy, as Slicer's DICOM export expects."""
        if segmentationNode is None or not segmentationNode.GetSegmentation().GetNumberOfSegments():
            raise ValueError("Select a segmentation with at least one segment to export.")
        reference = referenceVolume or segmentationNode.GetNodeReference(
            segmentationNode.GetReferenceImageGeometryReferenceRole())
        if reference is None or not (reference.GetAttribute("DICOM.instanceUIDs") or "").strip():
            name = f"'{reference.GetName()}' was not" if reference is not None else "the segmentation has no volume"
            raise ValueError(f"DICOM SEG needs a segmentation of a volume loaded from DICOM (through the DICOM "
                             f"module): {name} loaded from DICOM. Export as .seg.nrrd instead.")
        try:
            import DICOMSegmentationPlugin
        except ImportError:
            raise ValueError("DICOM SEG export needs Slicer's DICOM segmentation exporter (the QuantitativeReporting "
                             "extension provides it in older Slicer versions). Export as .seg.nrrd instead.") from None
        shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
        study = shNode.GetItemParent(shNode.GetItemByDataNode(reference))
        if not study or study == shNode.GetSceneItemID():
            raise ValueError(f"'{reference.GetName()}' is not in a DICOM study in the Data module's subject "
                             "hierarchy; load it through the DICOM module.")
        segmentationItem = shNode.GetItemByDataNode(segmentationNode)
        shNode.SetItemParent(segmentationItem, study)
        plugin = DICOMSegmentationPlugin.DICOMSegmentationPluginClass()
        exportables = plugin.examineForExport(segmentationItem)
        if not exportables:
            raise ValueError(f"Slicer's DICOM exporter cannot export '{segmentationNode.GetName()}' as DICOM SEG.")
        Path(folder).mkdir(parents=True, exist_ok=True)
        for exportable in exportables:
            exportable.directory = str(folder)
        error = plugin.export(exportables)
        if error:
            raise ValueError(f"DICOM SEG export failed: {oneLine(error)}")

    # ------------------------------------------------------------------------------------ helpers

    def _imageOnGrid(self, voxels, volumeNode):
        from unimiss.data import ImageData

        return ImageData.from_ijk_to_lps(voxels, rasToLps(ijkToRas(volumeNode))).squeeze_slice()

    def _run(self, arguments, onEvent, onFinished, cleanup: Path) -> BackgroundProcess:
        """Start `python -m unimiss ARGUMENTS` in the run's private folder. `-m` puts the working directory first on
        sys.path, so Slicer's own (anyone's `unimiss.py` could lie there) is never used. (Not `-I`: PythonSlicer
        needs its PYTHONHOME.) PYTHONSAFEPATH keeps even that folder off sys.path on Python 3.11 and later."""
        command = [self.python, "-m", "unimiss", *arguments, "--progress", "jsonl"]
        environment = {**os.environ, **self.environment, "PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1"}
        process = BackgroundProcess(command, env=environment, cwd=cleanup, on_event=onEvent, on_finished=onFinished)
        try:
            return process.start()
        except OSError as exc:
            shutil.rmtree(cleanup, ignore_errors=True)
            raise ValueError(f"Could not start {self.python}: {exc}") from None


def _checkPatchSize(patch: tuple, dimension: int) -> None:
    from unimiss.models.mit import size_multiple

    multiple = size_multiple(dimension)
    if len(patch) != dimension or any(p <= 0 or p % m for p, m in zip(patch, multiple)):
        raise ValueError(f"Patch size {' '.join(map(str, patch))}: a {dimension}D model needs {dimension} numbers, "
                         f"multiples of {' '.join(map(str, multiple))} (e.g. "
                         f"{'32 128 128' if dimension == 3 else '256 256'}).")


def oneLine(error) -> str:
    """An exception (or text) as the one line a dialog shows."""
    text = " ".join(str(error).split())
    if isinstance(error, BaseException) and not isinstance(error, (ValueError, OSError)):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text or "unknown error"


def modelThatRan(outcome: ProcessOutcome) -> str | None:
    """name@version of the model the core's process reports in its result events (it may differ from the
    one the module resolved, e.g. when a user package shadows a built-in)."""
    return next((r["model"] for r in outcome.results if r.get("model")), None)


def modelOrigin(outcome: ProcessOutcome) -> str | None:
    """Which copy of that model ran, as the core reports it: "built-in" or the package's folder."""
    result = next((r for r in outcome.results if r.get("model")), {})
    return "built-in" if result.get("model_origin") == "built-in" else result.get("model_path")


def _terminology(segment) -> dict:
    # GetTerminology() appeared in Slicer 5.10; the tag works from 5.0 on.
    text = vtk.mutable("")
    if not segment.GetTag(segment.GetTerminologyEntryTagName(), text):
        return {}
    text = str(text)
    if not text:
        return {}
    from slicerio.segmentation import terminology_entry_from_string

    entry = terminology_entry_from_string(text)
    return entry if entry.get("type") else {}


def _removeWithDependents(scene, node) -> None:
    """Remove a node with the display, storage and colour nodes that came with it."""
    if node is None or not scene.IsNodePresent(node):
        return
    dependents = []
    if hasattr(node, "GetNumberOfDisplayNodes"):
        for i in range(node.GetNumberOfDisplayNodes()):
            display = node.GetNthDisplayNode(i)
            dependents.append(display)
            colour = display.GetColorNode() if display is not None and hasattr(display, "GetColorNode") else None
            if colour is not None and not colour.GetSingletonTag():
                dependents.append(colour)
    if hasattr(node, "GetStorageNode"):
        dependents.append(node.GetStorageNode())
    scene.RemoveNode(node)
    for dependent in dependents:
        if dependent is not None and scene.IsNodePresent(dependent):
            scene.RemoveNode(dependent)
