"""The parameter node, the model list with its one-line descriptions, sharing and rolling back models."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slicer_testing import MODULE_DIR, add_segmentation, load_ct, organ_masks

from UniMiSSSlicerLib import UniMiSSParameters


def test_parameters_round_trip_through_the_parameter_node(logic, scene):
    volume = load_ct()
    node = logic.getParameterNode()
    assert node.IsA("vtkMRMLScriptedModuleNode") and logic.getParameterNode() is node
    segmentation = add_segmentation(volume, organ_masks())
    UniMiSSParameters(inputVolume=volume, model="test-ct@1.0.0", testTimeAugmentation=True, epochs=7,
                      minutes=2.5, learningRate=1e-4, patchSize="32 64 64", exportSegmentation=segmentation,
                      exportFormat="nii.gz").save(node)
    loaded = UniMiSSParameters.load(node)
    assert loaded.inputVolume is volume and loaded.exportSegmentation is segmentation
    assert loaded.exportReferenceVolume is None
    assert (loaded.model, loaded.testTimeAugmentation, loaded.epochs, loaded.minutes, loaded.learningRate) == (
        "test-ct@1.0.0", True, 7, 2.5, 1e-4)
    assert loaded.patchSizeValues() == (32, 64, 64) and loaded.exportFormat == "nii.gz"
    node.SetParameter("epochs", "many")  # unreadable: the default stays
    assert UniMiSSParameters.load(node).epochs == 20


@pytest.mark.parametrize("text, expected", [("", None), ("256 256", (256, 256)), ("32x128x128", (32, 128, 128)),
                                            ("32, 64, 64", (32, 64, 64))])
def test_patch_size_text(text, expected):
    assert UniMiSSParameters(patchSize=text).patchSizeValues() == expected


@pytest.mark.parametrize("text", ["32", "a b c", "0 64 64", "1 2 3 4"])
def test_bad_patch_size_text(text):
    with pytest.raises(ValueError, match="patch size"):
        UniMiSSParameters(patchSize=text).patchSizeValues()


def test_model_list_with_one_line_descriptions(logic):
    models = {m.reference: m for m in logic.models()}
    assert {"test-ct@1.0.0", "test-cxr@1.0.0"} <= set(models)
    assert [m.reference for m in logic.models(2) if not m.builtin] == ["test-cxr@1.0.0"]
    summary = models["test-ct@1.0.0"].summary
    assert "\n" not in summary
    assert "3D CT, 2 labels (liver, spleen)" in summary and "none: random weights for tests" in summary
    assert "liver" in models["test-ct@1.0.0"].details and "location" in models["test-ct@1.0.0"].details


def test_share_roll_back_and_import_a_model(logic, home, tmp_path, monkeypatch):
    own = tmp_path / "home"
    shutil.copytree(home / "models", own / "models")
    monkeypatch.setenv("UNIMISS_HOME", str(own))
    shared = logic.exportModel("test-ct", tmp_path / "shared.zip")
    logic.removeModel("test-ct@1.0.0")
    assert "test-ct@1.0.0" not in {m.reference for m in logic.models()}
    with pytest.raises(ValueError, match="unknown model"):
        logic.modelFor(3, "test-ct")
    assert logic.importModel(shared).reference == "test-ct@1.0.0"
    assert logic.modelFor(3, "test-ct").labels == ("liver", "spleen")


def test_the_training_chart_shows_each_epoch_and_goes_away(scene):
    from UniMiSSSlicerLib.chart import TrainingChart

    before = scene.GetNumberOfNodes()
    chart = TrainingChart()
    chart.add({"event": "metric", "epoch": 1, "minutes": 0.5, "loss": 0.9, "val_dice": {"liver": 0.2, "spleen": 0.4}})
    chart.add({"event": "metric", "epoch": 2, "minutes": 1.25, "loss": 0.5, "val_dice": {"liver": 0.6, "spleen": 0.8}})
    rows = chart.rows()
    assert [row[:4] for row in rows] == [(1.0, 0.5, 0.9, pytest.approx(0.3)), (2.0, 1.25, 0.5, pytest.approx(0.7))]
    assert chart.chart.GetNumberOfPlotSeriesNodes() == 2  # from scratch: no base model to compare with
    series = [chart.chart.GetNthPlotSeriesNode(i) for i in range(2)]
    assert {s.GetYColumnName() for s in series} == {"loss", "validation Dice"}
    assert {s.GetXColumnName() for s in series} == {"minutes"} and chart.chart.GetXAxisTitle() == "minutes"
    chart.remove()
    assert scene.GetNumberOfNodes() == before


def test_the_training_chart_shows_the_base_models_dice_beside_the_new_ones(scene):
    from UniMiSSSlicerLib.chart import TrainingChart

    before = scene.GetNumberOfNodes()
    chart = TrainingChart()
    chart.add({"event": "metric", "epoch": 1, "minutes": 2.0, "loss": 0.8, "val_dice": {"liver": 0.5},
               "base_val_dice": {"liver": 0.7}})
    chart.add({"event": "metric", "epoch": 2, "minutes": 4.0, "loss": 0.6, "val_dice": {"liver": 0.9},
               "base_val_dice": {"liver": 0.7}})
    assert [row[4] for row in chart.rows()] == [pytest.approx(0.7), pytest.approx(0.7)]
    assert chart.chart.GetNumberOfPlotSeriesNodes() == 3
    assert chart.chart.GetNthPlotSeriesNode(2).GetYColumnName() == "base model Dice"
    chart.remove()
    assert scene.GetNumberOfNodes() == before


def test_dependencies_are_installed_only_after_the_user_agrees(monkeypatch, tmp_path):
    import importlib.util
    import subprocess
    import sys

    from UniMiSSSlicerLib.dependencies import TORCH_REQUIREMENT, DependencyError, Dependencies, bundledCoreSource

    asked, installed, torch_asked = [], [], []
    core = bundledCoreSource()
    assert core == MODULE_DIR.parent / "UniMiSSCore"
    everything_there = Dependencies(confirm=lambda text: asked.append(text) or True, pipInstall=installed.append)
    assert everything_there.missing() == [] and everything_there.ensure() and not asked and not installed

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "unimiss" and not installed else real_find_spec(name, *a))
    declined = Dependencies(confirm=lambda text: asked.append(text) or False, pipInstall=installed.append)
    assert declined.missing() == ["unimiss"] and not declined.ensure() and not installed
    assert "UniMiSS core library (bundled with this extension)" in asked[-1]

    before = sorted(p.name for p in core.iterdir())

    def pip_wheel(arguments):  # pip builds the bundled core as Slicer's pip_install would: from a private copy
        assert arguments != [str(core)] and (Path(arguments[0]) / "pyproject.toml").is_file()
        run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                              "-w", str(tmp_path / "wheels"), *arguments], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        installed.append(arguments)

    agreed = Dependencies(confirm=lambda text: True, pipInstall=pip_wheel,
                          installTorch=lambda requirement: torch_asked.append(requirement) or True)
    assert agreed.ensure()
    assert len(installed) == 1 and list((tmp_path / "wheels").glob("unimiss-*.whl"))
    assert sorted(p.name for p in core.iterdir()) == before  # no build/ or *.egg-info in the extension's folder
    assert not torch_asked  # torch is there and new enough

    installed.clear()
    from UniMiSSSlicerLib import dependencies

    monkeypatch.setattr(dependencies, "bundledCoreSource", lambda: None)  # an extension that lost its core copy
    with pytest.raises(DependencyError, match="reinstall the UniMiSS extension"):  # never a package index
        Dependencies(confirm=lambda text: True, pipInstall=installed.append).ensure()
    assert not installed


def test_torch_comes_only_through_the_pytorch_extension_with_the_core_range(monkeypatch):
    import importlib.util

    from UniMiSSSlicerLib import dependencies
    from UniMiSSSlicerLib.dependencies import TORCH_REQUIREMENT, DependencyError, Dependencies

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real_find_spec(name, *a))
    monkeypatch.setattr(dependencies, "installedTorchVersion", lambda: None)
    pip = []
    without_extension = Dependencies(confirm=lambda text: True, pipInstall=pip.append)
    assert without_extension.installTorch is None  # no PyTorchUtils here
    with pytest.raises(DependencyError, match="Install the 'PyTorch' extension from the Extensions Manager"):
        without_extension.ensure()
    assert not pip  # never an unpinned `pip install torch`
    asked = []
    failing = Dependencies(confirm=lambda text: True, pipInstall=pip.append,
                           installTorch=lambda requirement: asked.append(requirement) or False)
    with pytest.raises(DependencyError, match="^Installing PyTorch did not succeed"):
        failing.ensure()
    assert asked == [TORCH_REQUIREMENT] and not pip
    monkeypatch.setattr(dependencies, "installedTorchVersion", lambda: "2.1.0+cu118")
    with pytest.raises(DependencyError, match=r"PyTorch 2.1.0\+cu118 is installed, but UniMiSS needs torch>=2.4,<3"):
        Dependencies(confirm=lambda text: True, pipInstall=pip.append, installTorch=lambda r: True).ensure()


def test_the_bundled_samples_are_found():
    from UniMiSSSlicerLib.samples import SAMPLES, samplePath

    for _, file_name, _ in SAMPLES:
        assert samplePath(file_name).is_file()
