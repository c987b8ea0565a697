"""The module's own Widget, clicked as a user would: real .ui, real Qt (PyQt5 offscreen), real scene, real core runs.

The pictures of the panel in docs/ come from these tests (idle, segmenting, fine-tuning, done):
UNIMISS_PANEL_PICTURES=docs python -m pytest Testing/slicer_module/test_slicer_panel.py redraws them;
otherwise they go to the temporary folder, so a test run leaves the working tree as it was.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

import qt_harness
from qt_harness import FileDialogs, Messages, process_events, slot_errors, unwrap
from slicer_testing import MODULE_DIR, REPO, add_segmentation, load_ct, organ_masks, slicer

SAMPLE_CT = REPO / "UniMiSSCore" / "unimiss" / "samples" / "ct-abdomen.nii.gz"
DOCS = REPO / os.environ["UNIMISS_PANEL_PICTURES"] if os.environ.get("UNIMISS_PANEL_PICTURES") \
    else Path(tempfile.gettempdir()) / "unimiss-panel-pictures"
DOCS.mkdir(parents=True, exist_ok=True)
UI_FILE = MODULE_DIR / "Resources" / "UI" / "UniMiSSSlicer.ui"


def make_panel(monkeypatch, ui_file=UI_FILE):
    messages = Messages()
    qt_harness.install(monkeypatch, messages)
    from UniMiSSSlicerLib import widget as widget_module

    widget = widget_module.UniMiSSSlicerWidget()
    if ui_file != UI_FILE:
        widget.resourcePath = lambda name: str(ui_file)
    try:
        widget.setup()
    except Exception:
        widget.removeObservers()
        qt_harness.dispose(widget)  # a half-built panel left observing the scene crashes the interpreter's exit
        raise
    return widget, messages


@pytest.fixture
def panel(home, scene, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the core's processes
    widget, messages = make_panel(monkeypatch)
    yield widget, widget.ui, messages
    widget.cleanup()
    qt_harness.dispose(widget)
    assert not slot_errors, f"exceptions in slots (in Slicer: only on the Python console): {slot_errors}"


@pytest.fixture
def own_models(model_home, tmp_path, monkeypatch):
    shutil.copytree(model_home / "models", tmp_path / "home" / "models")
    monkeypatch.setenv("UNIMISS_HOME", str(tmp_path / "home"))


def click(button):
    unwrap(button).click()


def select(combo, data):
    index = combo.findData(data)
    assert index >= 0, f"{data} is not offered"
    combo.setCurrentIndex(index)


def test_segment_the_sample_ct_with_progress_and_the_model_that_ran(panel, home):
    widget, ui, messages = panel
    slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "a labelmap loaded first")
    volume = load_ct("CT abdomen (sample)", SAMPLE_CT)
    widget.initializeParameterNode()
    # The selector hides labelmaps: GUI and parameter node both take the CT.
    assert ui.inputVolumeSelector.currentNode() is volume and widget.parameters().inputVolume is volume
    select(ui.modelComboBox, "test-ct@1.0.0")
    assert "test-ct@1.0.0 (your model): 3D CT, 2 labels (liver, spleen)" in ui.modelDescriptionLabel.text
    assert ui.progressBar.value == 0 and ui.segmentButton.text == "Segment"
    unwrap(ui.fineTuneCollapsibleButton).setCollapsed(True)
    qt_harness.grab(widget.parent, DOCS / "panel-idle.png")

    click(ui.segmentButton)
    assert ui.segmentButton.text == "Cancel"
    assert ui.statusLabel.text == "Segmenting 'CT abdomen (sample)' with test-ct@1.0.0..."
    assert process_events(lambda: ui.progressBar.value > 0 or widget._segmenting is None)
    if widget._segmenting is not None:
        assert ":" in ui.progressBar.format  # the stage's name
        qt_harness.grab(widget.parent, DOCS / "panel-segmenting.png")
    assert process_events(lambda: widget._segmenting is None)
    assert not messages.errors
    nodes = slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
    assert len(nodes) == 1 and ui.exportSegmentationSelector.currentNode() is nodes[0]
    # The status names the copy that ran: here the user's package, by its folder.
    assert ui.statusLabel.text == (f"Done: '{nodes[0].GetName()}', 2 segments, by test-ct@1.0.0 "
                                   f"({home / 'models' / 'test-ct-1.0.0'}).")
    assert ui.segmentButton.text == "Segment" and ui.progressBar.value == 100
    assert not unwrap(widget.timer).isActive()
    qt_harness.grab(widget.parent, DOCS / "panel-done.png")


def test_cancel_and_scene_close_stop_the_run_and_reset_the_panel(panel):
    widget, ui, messages = panel
    load_ct()
    widget.initializeParameterNode()
    select(ui.modelComboBox, "test-ct@1.0.0")
    click(ui.segmentButton)
    assert process_events(lambda: ui.progressBar.value > 0)
    click(ui.segmentButton)  # now "Cancel"
    assert process_events(lambda: widget._segmenting is None)
    assert ui.statusLabel.text == "Cancelled: nothing was added to the scene."
    assert ui.segmentButton.text == "Segment" and ui.progressBar.value == 0
    click(ui.segmentButton)
    process = widget._segmenting
    slicer.mrmlScene.Clear(0)  # File > Close Scene during the run
    assert process.outcome.status == "cancelled" and widget._segmenting is None
    assert ui.segmentButton.text == "Segment" and not messages.errors
    assert not slicer.util.getNodesByClass("vtkMRMLSegmentationNode")


def test_whatever_fails_in_a_finish_handler_reaches_the_user_and_resets_the_panel(panel, monkeypatch):
    widget, ui, messages = panel
    load_ct()
    widget.initializeParameterNode()
    select(ui.modelComboBox, "test-ct@1.0.0")
    monkeypatch.setattr(widget.logic, "loadSegmentation", lambda *a: {}["no such key"])  # a KeyError
    click(ui.segmentButton)
    assert process_events(lambda: widget._segmenting is None)
    assert messages.errors == ["Segmentation failed: The result could not be loaded: KeyError: 'no such key'"]
    assert ui.segmentButton.text == "Segment" and not unwrap(widget.timer).isActive()


def test_finetune_on_scene_pairs_with_the_live_chart_then_share_remove_import(panel, own_models, tmp_path,
                                                                               monkeypatch):
    from test_slicer_finetune import scene_pairs

    widget, ui, messages = panel
    pairs = scene_pairs()
    monkeypatch.setattr(widget.logic, "finetune", functools.partial(  # few iterations: the GUI sets epochs only
        widget.logic.finetune, iterations=2, batchSize=1, precision="fp32"))
    prepared = []
    original = widget.onPrepareCase
    monkeypatch.setattr(widget, "onPrepareCase",
                        lambda *a: (original(*a), prepared.append(ui.trainingStatusLabel.text)))
    unwrap(ui.fineTuneCollapsibleButton).setCollapsed(False)
    unwrap(ui.segmentCollapsibleButton).setCollapsed(True)
    click(ui.refreshCasesButton)
    assert ui.trainingCasesList.count == 2
    for i in range(2):
        ui.trainingCasesList.item(i).setCheckState(qt_harness.qt.Qt.Checked)
    select(ui.baseModelComboBox, "test-ct@1.0.0")
    ui.newModelNameLineEdit.text = "my-organs"
    ui.epochsSpinBox.value = 2
    click(ui.startTrainingButton)
    assert prepared == ["Preparing case 1 of 2 ('case0 segmentation')...",
                        "Preparing case 2 of 2 ('case1 segmentation')..."]
    assert ui.startTrainingButton.text == "Cancel fine-tuning" and not unwrap(ui.trainingChartFrame).isHidden()
    assert process_events(lambda: len(widget._training.chart.rows()) >= 1 if widget._training else True)
    if widget._training is not None:
        assert ui.trainingStatusLabel.text.startswith("Epoch 1: loss ")
        qt_harness.grab(widget.parent, DOCS / "panel-finetuning.png")
    assert process_events(lambda: widget._training is None)
    assert not messages.errors, messages.errors
    assert ui.trainingStatusLabel.text == "New model my-organs@1.0.0: it is selected for segmenting."
    assert widget.ui.modelComboBox.itemData(ui.modelComboBox.currentIndex) == "my-organs@1.0.0"
    assert not unwrap(ui.trainingChartFrame).isHidden() and ui.startTrainingButton.text == "Start fine-tuning"

    FileDialogs.answers = [tmp_path / "shared.zip"]
    click(ui.shareModelButton)
    assert (tmp_path / "shared.zip").is_file()
    assert ui.modelsStatusLabel.text == f"Wrote my-organs@1.0.0 to {tmp_path / 'shared.zip'}."
    click(ui.removeModelButton)
    assert messages.confirmations[-1] == "Remove my-organs@1.0.0 from your models?"
    assert ui.modelComboBox.findData("my-organs@1.0.0") < 0
    FileDialogs.answers = [tmp_path / "shared.zip"]
    click(ui.importModelButton)
    assert ui.modelComboBox.itemData(ui.modelComboBox.currentIndex) == "my-organs@1.0.0"
    assert not messages.errors, messages.errors


def test_export_in_each_format_installs_nothing_it_does_not_need(panel, tmp_path, monkeypatch):
    import importlib.util

    from unimiss.data import read_labelmap

    from UniMiSSSlicerLib.dependencies import Dependencies

    widget, ui, messages = panel
    volume = load_ct()
    segmentation = add_segmentation(volume, organ_masks(), "organs")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",  # as in a fresh Slicer: the core is not installed yet
                        lambda name, *a: None if name == "unimiss" else real_find_spec(name, *a))
    messages.confirm = False  # the user declines any install
    widget.dependencies = Dependencies(confirm=messages.confirmOkCancelDisplay)
    ui.exportSegmentationSelector.setCurrentNode(segmentation)
    written = {}
    for key, suffix in (("seg.nrrd", ".seg.nrrd"), ("nrrd", ".nrrd")):
        select(ui.exportFormatComboBox, key)
        FileDialogs.answers = [tmp_path / f"organs{suffix}"]
        before = len(messages.confirmations)
        click(ui.exportButton)
        written[key] = (tmp_path / f"organs{suffix}").is_file(), len(messages.confirmations) - before
    assert written == {"seg.nrrd": (True, 0), "nrrd": (False, 1)}  # .seg.nrrd: Slicer alone; NRRD: asks
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    for key, name in (("nrrd", "organs.nrrd"), ("nii.gz", "organs.nii.gz")):
        select(ui.exportFormatComboBox, key)
        FileDialogs.answers = [tmp_path / name]
        click(ui.exportButton)
        labelmap, labels = read_labelmap(tmp_path / name)
        assert [l.name for l in labels] == ["liver", "spleen"]
        np.testing.assert_array_equal(labelmap.array == 1, organ_masks()["liver"])
        assert ui.exportStatusLabel.text == f"Wrote {tmp_path / name}."
    select(ui.exportFormatComboBox, "dicom")
    FileDialogs.answers = [tmp_path / "dicom"]
    click(ui.exportButton)
    assert messages.errors == ["DICOM SEG export failed: DICOM SEG needs a segmentation of a volume loaded from "
                               "DICOM (through the DICOM module): 'ct' was not loaded from DICOM. Export as "
                               ".seg.nrrd instead."]
    assert not (tmp_path / "dicom").exists()


def test_first_use_installs_once_refreshes_the_models_and_reports_failures(panel, monkeypatch):
    import importlib.util

    from UniMiSSSlicerLib.dependencies import Dependencies

    widget, ui, messages = panel
    real_find_spec = importlib.util.find_spec
    installed = []
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "unimiss" and not installed else real_find_spec(name, *a))
    widget.refreshModels()
    assert ui.modelDescriptionLabel.text.startswith("UniMiSS's Python packages are not installed yet")

    def pip_install(arguments):
        click(ui.segmentButton)  # the user clicks again while pip runs
        click(ui.startTrainingButton)
        installed.append(arguments)

    widget.dependencies = Dependencies(confirm=lambda text: True, pipInstall=pip_install,
                                       installTorch=lambda requirement: True)
    click(ui.segmentButton)
    assert len(installed) == 1
    assert ui.modelComboBox.findData("test-ct@1.0.0") > 0  # the lists were refreshed after the install
    assert messages.errors == ["Segmenting failed: Select an input volume first."]  # it went on to segment
    assert ui.segmentButton.enabled and ui.startTrainingButton.enabled

    installed.clear()

    def failing_pip(arguments):
        raise subprocess.CalledProcessError(1, ["python", "-m", "pip", "install", arguments[0]])

    widget.dependencies = Dependencies(confirm=lambda text: True, pipInstall=failing_pip,
                                       installTorch=lambda requirement: True)
    click(ui.segmentButton)
    assert messages.errors[-1].startswith("Installing UniMiSS's Python packages failed: Installing the UniMiSS core "
                                          "failed (Command '['python', '-m', 'pip', 'install', ")
    assert "\n" not in messages.errors[-1] and ui.segmentButton.text == "Segment" and ui.segmentButton.enabled


def test_a_pretraining_checkpoint_can_be_the_base_model(panel, plus_checkpoint):
    widget, ui, messages = panel
    combo = ui.baseModelComboBox
    choose = combo.count - 1
    assert combo.itemText(choose) == "a pretraining checkpoint (UniMiSS, UniMiSS+)..."
    FileDialogs.answers = [""]  # Cancel: back to training from scratch
    combo.setCurrentIndex(choose)
    assert combo.currentIndex == 0 and widget.parameters().baseModel == ""
    FileDialogs.answers = [plus_checkpoint]
    combo.setCurrentIndex(choose)
    assert combo.currentText == "checkpoint.pth  (pretraining checkpoint)"
    assert widget.parameters().baseModel == str(plus_checkpoint)
    assert FileDialogs.asked[-2:] == ["Start from a pretraining checkpoint"] * 2
    widget.refreshModels()  # the list is refilled: the checkpoint stays chosen, once
    assert combo.currentText == "checkpoint.pth  (pretraining checkpoint)"
    assert [combo.itemData(i) for i in range(combo.count)].count(str(plus_checkpoint)) == 1
    assert combo.itemData(combo.count - 1) != str(plus_checkpoint)  # the 'choose' entry stays last
    assert not messages.errors, messages.errors


def test_the_model_list_offers_every_model_and_says_which_fit_the_input(panel):
    widget, ui, messages = panel
    load_ct()
    widget.initializeParameterNode()
    offered = [ui.modelComboBox.itemData(i) for i in range(ui.modelComboBox.count)]
    assert {"test-ct@1.0.0", "test-cxr@1.0.0"} <= set(offered)  # a 2D model stays selectable (share, remove)
    select(ui.modelComboBox, "test-cxr@1.0.0")
    assert "This is a 2D model; the input is 3D: choose another to segment it." in ui.modelDescriptionLabel.text
    click(ui.segmentButton)
    assert messages.errors == ["Segmenting failed: Model test-cxr@1.0.0 segments 2D images, but the input is a 3D "
                               "volume. Choose a 3D model."]
    assert widget._segmenting is None and ui.segmentButton.text == "Segment"


@pytest.mark.parametrize("change", ["rename segmentButton", "epochsSpinBox becomes a QLineEdit"])
def test_a_renamed_widget_or_a_missing_signal_in_the_ui_fails(home, scene, monkeypatch, tmp_path, change):
    tree = ElementTree.parse(UI_FILE)
    widgets = {w.get("name"): w for w in tree.getroot().iter("widget")}
    if change == "rename segmentButton":
        widgets["segmentButton"].set("name", "segmentationButton")
    else:
        widgets["epochsSpinBox"].set("class", "QLineEdit")
        for prop in list(widgets["epochsSpinBox"]):
            widgets["epochsSpinBox"].remove(prop)
    changed = tmp_path / "UniMiSSSlicer.ui"
    tree.write(changed)
    with pytest.raises(AttributeError, match="segmentButton|valueChanged"):
        make_panel(monkeypatch, changed)


def test_the_module_file_is_thin_and_names_the_lib_widget(home, scene, monkeypatch):
    widget, _ = make_panel(monkeypatch)
    widget.cleanup()
    qt_harness.dispose(widget)
    import importlib

    module = importlib.import_module("UniMiSSSlicer")
    from UniMiSSSlicerLib.widget import UniMiSSSlicerWidget

    assert module.UniMiSSSlicerWidget is UniMiSSSlicerWidget
    assert {"UniMiSSSlicer", "UniMiSSSlicerTest"} <= set(vars(module))
    assert len((MODULE_DIR / "UniMiSSSlicer.py").read_text().splitlines()) < 100
