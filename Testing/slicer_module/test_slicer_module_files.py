"""Static checks of the module's files: the .ui has every widget the code names, CMake lists every file."""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree

import SimpleITK as sitk

from slicer_testing import MODULE_DIR

MODULE_FILE = MODULE_DIR / "UniMiSSSlicer.py"
WIDGET_FILE = MODULE_DIR / "UniMiSSSlicerLib" / "widget.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "UniMiSSSlicer.ui"
QT_CLASSES = {"QWidget", "QFrame", "QLabel", "QComboBox", "QToolButton", "QLineEdit", "QCheckBox", "QPushButton", "QProgressBar",
              "QListWidget", "QSpinBox", "QDoubleSpinBox"}


def ui_widgets() -> dict[str, str]:
    root = ElementTree.parse(UI_FILE).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def test_every_widget_the_code_names_is_in_the_ui_file():
    named = set(re.findall(r"\bui\.(\w+)", WIDGET_FILE.read_text()))  # self.ui.x and ui.x
    assert len(named) > 20
    missing = sorted(named - set(ui_widgets()))
    assert not missing, f"named in UniMiSSSlicer.py but not in the .ui: {missing}"


def test_the_ui_declares_its_custom_widgets_and_scene_connections():
    root = ElementTree.parse(UI_FILE).getroot()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = set(ui_widgets().values()) - QT_CLASSES
    assert used <= declared, sorted(used - declared)
    node_selectors = {name for name, cls in ui_widgets().items() if cls == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert node_selectors == connected


def cmake_list(text: str, variable: str) -> set[str]:
    body = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S).group(1)
    return {item.replace("${MODULE_NAME}", "UniMiSSSlicer") for item in body.split()}


def test_cmake_lists_every_python_file_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    resources = {str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert cmake_list(text, "MODULE_PYTHON_SCRIPTS") == scripts
    assert cmake_list(text, "MODULE_PYTHON_RESOURCES") == resources
    assert re.search(r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}.*WITH_GENERIC_TESTS", text, re.S)


def test_module_classes_follow_slicer_conventions():
    tree = ast.parse(MODULE_FILE.read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    bases = {name: [b.id for b in node.bases if isinstance(b, ast.Name)] for name, node in classes.items()}
    assert bases["UniMiSSSlicer"] == ["ScriptedLoadableModule"]
    assert bases["UniMiSSSlicerTest"] == ["ScriptedLoadableModuleTest"]
    widget = ast.parse(WIDGET_FILE.read_text())
    assert [b.id for node in widget.body if isinstance(node, ast.ClassDef) and node.name == "UniMiSSSlicerWidget"
            for b in node.bases][0] == "ScriptedLoadableModuleWidget"
    assert 'self.parent.categories = ["Segmentation"]' in MODULE_FILE.read_text()


def test_parameters_the_widget_reads_exist():
    from UniMiSSSlicerLib import UniMiSSParameters

    read = set(re.findall(r"\bp\.(\w+)", WIDGET_FILE.read_text()))
    known = set(UniMiSSParameters.__dataclass_fields__) | {n for n in dir(UniMiSSParameters) if not n.startswith("_")}
    assert read and read <= known, sorted(read - known)


def test_the_library_is_qt_free_but_for_the_widget():
    for path in (MODULE_DIR / "UniMiSSSlicerLib").glob("*.py"):
        if path.name == "widget.py":
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & {"qt", "ctk", "PythonQt"}, path.name


def test_icon_is_a_128_pixel_png():
    image = sitk.ReadImage(str(MODULE_DIR / "Resources" / "Icons" / "UniMiSSSlicer.png"))
    assert image.GetSize() == (128, 128)
