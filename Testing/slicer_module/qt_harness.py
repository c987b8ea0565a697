"""Run the module's real Widget on a real Qt (PyQt5, offscreen) against a real MRML scene (slicer-core).

What Slicer's application gives a scripted module and PyPI does not is supplied here, and only that:
- `qt`: PythonQt's syntax over PyQt5. Attributes that are Qt properties read and write the property
  (`label.text = "..."`), `obj.connect("clicked(bool)", f)` connects a signal by its C++ signature, and
  an exception in a slot is recorded (PythonQt prints it to the console, where a user never looks:
  the tests fail on it);
- stand-ins for the CTK/qMRML classes the .ui names (collapsible sections, node selectors listing the
  real scene's nodes, a plot view drawing the real MRML chart);
- slicer.util.loadUI / childWidgetVariables (PyQt5's uic loads the real .ui file), the message boxes
  (recorded, answered by the test), ScriptedLoadableModule's base classes.
Modal file dialogs cannot be clicked offscreen: a test queues the answers a user would give.
"""
from __future__ import annotations

import os
import sys
import types
import unittest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt5 import QtCore, QtGui, QtWidgets, sip, uic  # noqa: E402

from slicer_testing import MODULE_DIR, slicer  # noqa: E402

sip.setdestroyonexit(False)  # let the process end without PyQt tearing down widgets in a random order
_APP = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["UniMiSS panel tests"])
_PY_TYPES = {"bool": bool, "int": int, "double": float, "QString": str}


class SlotErrors(list):
    """Exceptions raised in slots (in Slicer they would only reach the Python console)."""


slot_errors = SlotErrors()


# ------------------------------------------------------------------------------------------ PythonQt syntax

def unwrap(value):
    return object.__getattribute__(value, "_obj") if isinstance(value, Wrapped) else value


def wrap(value):
    if isinstance(value, (QtCore.QObject, QtWidgets.QListWidgetItem, QtWidgets.QLayoutItem)):
        return Wrapped(value)
    return value


def _slot(function):
    def call(*args):
        try:
            return function(*[wrap(a) for a in args])
        except Exception as exc:  # noqa: BLE001 (what PythonQt would print to the console)
            import traceback

            traceback.print_exc()
            slot_errors.append(exc)
    return call


class Wrapped:
    """A Qt object as PythonQt shows it to Python."""

    def __init__(self, obj):
        object.__setattr__(self, "_obj", obj)

    def _property(self, name):
        obj = object.__getattribute__(self, "_obj")
        if isinstance(obj, QtCore.QObject) and obj.metaObject().indexOfProperty(name) >= 0:
            return True
        return False

    def __getattr__(self, name):
        obj = object.__getattribute__(self, "_obj")
        if self._property(name):
            return wrap(obj.property(name))
        value = getattr(obj, name)
        if callable(value) and not isinstance(value, type):
            return lambda *args, **kwargs: wrap(value(*[unwrap(a) for a in args],
                                                      **{k: unwrap(v) for k, v in kwargs.items()}))
        return wrap(value)

    def __setattr__(self, name, value):
        if not self._property(name):
            raise AttributeError(f"{type(unwrap(self)).__name__} has no Qt property '{name}' (PythonQt would "
                                 "silently add a Python attribute that does nothing)")
        if not unwrap(self).setProperty(name, unwrap(value)):
            raise TypeError(f"could not set the Qt property {name} to {value!r}")

    def __eq__(self, other):
        return unwrap(self) is unwrap(other)

    def __hash__(self):
        return id(unwrap(self))

    def __bool__(self):
        return True

    def connect(self, signature: str, slot) -> bool:
        name, _, arguments = signature.partition("(")
        types_ = [a.strip() for a in arguments.rstrip(")").split(",") if a.strip()]
        signal = getattr(unwrap(self), name)  # AttributeError: the widget has no such signal
        if len(types_) == 1 and types_[0] in _PY_TYPES:
            try:
                signal = signal[_PY_TYPES[types_[0]]]
            except (KeyError, TypeError):
                pass
        signal.connect(_slot(slot))
        return True


class _WrappedClass:
    """qt.QTimer(), qt.QListWidgetItem(...): construct the PyQt5 object, hand out its PythonQt view."""

    def __init__(self, cls):
        self.cls = cls

    def __call__(self, *args):
        return Wrapped(self.cls(*[unwrap(a) for a in args]))

    def __getattr__(self, name):
        value = getattr(self.cls, name)
        if callable(value):
            return lambda *args: wrap(value(*[unwrap(a) for a in args]))
        return value


class FileDialogs:
    """qt.QFileDialog's static functions; the test queues what the user picks ("" = Cancel)."""

    answers: list = []
    asked: list = []

    @classmethod
    def _answer(cls, *args):
        cls.asked.append(args[1] if len(args) > 1 else "")
        return str(cls.answers.pop(0)) if cls.answers else ""

    getOpenFileName = getSaveFileName = getExistingDirectory = _answer


qt = types.ModuleType("qt")
for _name in ("QTimer", "QListWidgetItem", "QWidget", "QVBoxLayout", "QLabel"):
    setattr(qt, _name, _WrappedClass(getattr(QtWidgets, _name, None) or getattr(QtCore, _name)))
qt.QTimer = _WrappedClass(QtCore.QTimer)
qt.Qt = QtCore.Qt
qt.QFileDialog = FileDialogs
qt.QApplication = _WrappedClass(QtWidgets.QApplication)


# ------------------------------------------------------------------------------------------ CTK and qMRML stand-ins

class _PySignal:
    """A signal whose C++ argument type PyQt cannot name (vtkMRMLScene*); uic connects to it by name."""

    def __init__(self):
        self.slots = []

    def __getitem__(self, signature):
        return self

    def connect(self, slot):
        self.slots.append(slot)

    def emit(self, *args):
        for slot in list(self.slots):
            slot(*args)


class qMRMLWidget(QtWidgets.QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.mrmlSceneChanged = _PySignal()
        self._scene = None

    def setMRMLScene(self, scene):
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class _Collapsible:
    def _arrow(self, title):
        return ("\u25b8 " if self._collapsed else "\u25be ") + title

    def getCollapsed(self):
        return self._collapsed

    def setCollapsed(self, collapsed):
        self._collapsed = bool(collapsed)
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
            child.setVisible(not self._collapsed)
        QtWidgets.QGroupBox.setTitle(self, self._arrow(self._title))
        self.setMaximumHeight(24 if self._collapsed else 16777215)

    def mousePressEvent(self, event):
        if event.pos().y() < 20:
            self.setCollapsed(not self._collapsed)

    def setText(self, text):
        self._title = text
        self.setTitle(self._arrow(text))

    def getText(self):
        return self._title


class ctkCollapsibleButton(_Collapsible, QtWidgets.QGroupBox):
    def __init__(self, parent=None):
        QtWidgets.QGroupBox.__init__(self, parent)
        self._collapsed, self._title = False, ""

    collapsed = QtCore.pyqtProperty(bool, _Collapsible.getCollapsed, _Collapsible.setCollapsed)
    text = QtCore.pyqtProperty(str, _Collapsible.getText, _Collapsible.setText)


class ctkCollapsibleGroupBox(_Collapsible, QtWidgets.QGroupBox):
    def __init__(self, parent=None):
        QtWidgets.QGroupBox.__init__(self, parent)
        self._collapsed, self._title = False, ""
        self.setTitle = self._setTitle

    def _setTitle(self, title):
        self._title = title
        QtWidgets.QGroupBox.setTitle(self, self._arrow(title))

    collapsed = QtCore.pyqtProperty(bool, _Collapsible.getCollapsed, _Collapsible.setCollapsed)


class qMRMLNodeComboBox(QtWidgets.QComboBox):
    """Lists the scene's nodes of `nodeTypes` (minus `hideChildNodeTypes`), as qMRMLNodeComboBox does."""

    currentNodeChanged = QtCore.pyqtSignal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._types, self._hidden, self._none, self._scene, self._observers = [], [], False, None, []
        self.addEnabled = self.removeEnabled = False
        self.currentIndexChanged[int].connect(lambda index: self.currentNodeChanged.emit(self.currentNode()))

    def setNodeTypes(self, types_):
        self._types = list(types_)

    def setHideChildNodeTypes(self, types_):
        self._hidden = list(types_)

    def setNoneEnabled(self, enabled):
        self._none = enabled

    def setAddEnabled(self, enabled):
        pass

    def setRemoveEnabled(self, enabled):
        pass

    def setMRMLScene(self, scene):
        for observer in self._observers:
            self._scene.RemoveObserver(observer)
        self._observers = []
        self._scene = scene
        if scene is None:
            return
        self._observers = [scene.AddObserver(event, lambda caller, event: sip.isdeleted(self) or self._refill())
                           for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent)]
        self._refill()

    def nodes(self):
        if self._scene is None:
            return []
        found = []
        for i in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(i)
            if any(node.IsA(t) for t in self._types) and not any(node.IsA(t) for t in self._hidden) \
                    and not node.GetHideFromEditors():
                found.append(node)
        return found

    def _refill(self):
        current = self.currentNode()
        self.blockSignals(True)
        self.clear()
        if self._none:
            self.addItem("None", None)
        for node in self.nodes():
            self.addItem(node.GetName(), node.GetID())
        index = self.findData(current.GetID()) if current is not None and self._scene.IsNodePresent(current) else -1
        if index < 0 and not self._none and self.count():
            index = 0
        self.setCurrentIndex(max(index, 0) if self.count() else -1)
        self.blockSignals(False)
        if self.currentNode() is not current:
            self.currentNodeChanged.emit(self.currentNode())

    def currentNode(self):
        node_id = self.itemData(self.currentIndex()) if self.currentIndex() >= 0 else None
        return self._scene.GetNodeByID(node_id) if node_id and self._scene is not None else None

    def setCurrentNode(self, node):
        index = self.findData(node.GetID()) if node is not None else -1
        self.setCurrentIndex(index if index >= 0 else (0 if self._none else -1))


class qMRMLPlotView(QtWidgets.QWidget):
    """Draws the plot view node's chart from the real MRML table: one line per series, its colour, a legend."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = self._view = None
        self.setMinimumHeight(160)

    def setMRMLScene(self, scene):
        self._scene = scene

    def setMRMLPlotViewNode(self, node):
        self._view = node  # paintEvent reads the chart's table as it is then
        self.update()

    def series(self):
        chart = self._scene.GetNodeByID(self._view.GetPlotChartNodeID()) if self._view is not None else None
        if chart is None:
            return None, []
        found = []
        for i in range(chart.GetNumberOfPlotSeriesNodes()):
            series = chart.GetNthPlotSeriesNode(i)
            table = series.GetTableNode().GetTable()
            x, y = table.GetColumnByName(series.GetXColumnName()), table.GetColumnByName(series.GetYColumnName())
            points = [(x.GetValue(r), y.GetValue(r)) for r in range(table.GetNumberOfRows())]
            found.append((series.GetName().replace(chart.GetName(), "").strip(), series.GetColor(), points))
        return chart, found

    def paintEvent(self, event):
        painter = QtGui.QPainter(self)
        painter.setRenderHint(QtGui.QPainter.Antialiasing)
        painter.fillRect(self.rect(), QtCore.Qt.white)
        chart, series = self.series()
        if chart is None:
            return
        left, top, right, bottom = 48, 22, self.width() - 14, self.height() - 30
        painter.drawText(QtCore.QRectF(0, 2, self.width(), 18), QtCore.Qt.AlignCenter, chart.GetTitle())
        painter.drawText(QtCore.QRectF(left, bottom + 12, right - left, 16), QtCore.Qt.AlignCenter,
                         chart.GetXAxisTitle())
        painter.drawLine(left, bottom, right, bottom)
        painter.drawLine(left, top, left, bottom)
        values = [p for _, _, points in series for p in points if p[1] == p[1]]
        epochs = max([int(x) for x, _ in values] + [1]) + 1  # room for the next epoch
        high = max([y for _, y in values] + [1.0])
        for tick in range(1, epochs + 1):
            px = left + (right - left) * tick / epochs
            painter.drawText(QtCore.QRectF(px - 15, bottom + 1, 30, 12), QtCore.Qt.AlignCenter, str(tick))
        painter.drawText(QtCore.QRectF(2, top - 6, left - 4, 12), QtCore.Qt.AlignRight, f"{high:.1f}")
        painter.drawText(QtCore.QRectF(2, bottom - 6, left - 4, 12), QtCore.Qt.AlignRight, "0")
        for row, (name, colour, points) in enumerate(series):
            pen = QtGui.QPen(QtGui.QColor.fromRgbF(*colour), 2)
            painter.setPen(pen)
            screen = [QtCore.QPointF(left + (right - left) * x / epochs, bottom - (bottom - top) * y / high)
                      for x, y in points if y == y]
            for a, b in zip(screen, screen[1:]):
                painter.drawLine(a, b)
            for point in screen:
                painter.drawEllipse(point, 3, 3)
            painter.drawText(left + 10, top + 12 + 14 * row, f"\u25cf {name}")
            painter.setPen(QtCore.Qt.black)


# ------------------------------------------------------------------------------------------ the application's part

class Messages:
    """slicer.util's message boxes: recorded; confirmations answered by `confirm` (OK by default)."""

    def __init__(self):
        self.errors, self.confirmations, self.confirm = [], [], True

    def errorDisplay(self, text, windowTitle=None, parent=None, **kwargs):
        self.errors.append(str(text))

    def confirmOkCancelDisplay(self, text, windowTitle=None, parent=None, **kwargs):
        self.confirmations.append(str(text))
        return self.confirm


class ModuleWidgetParent(QtWidgets.QWidget):
    """What qSlicerScriptedLoadableModuleWidget shows a scripted Widget: a layout, and isEntered."""

    def __init__(self):
        super().__init__()
        self.setLayout(QtWidgets.QVBoxLayout())
        self._entered = True

    isEntered = QtCore.pyqtProperty(bool, lambda self: self._entered)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.moduleName = type(self).__name__[:-len("Widget")]
        self.parent = parent or Wrapped(ModuleWidgetParent())
        self.layout = self.parent.layout()

    def resourcePath(self, filename):
        return str(MODULE_DIR / "Resources" / filename)

    def setup(self):
        pass

    def cleanup(self):
        pass

    def onReload(self):
        pass


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        print(message)


def loadUI(path):
    return Wrapped(uic.loadUi(path))


def childWidgetVariables(widget):
    return types.SimpleNamespace(**{child.objectName(): Wrapped(child)
                                    for child in unwrap(widget).findChildren(QtCore.QObject) if child.objectName()})


CUSTOM_WIDGETS = {"ctkCollapsibleButton": ctkCollapsibleButton, "ctkCollapsibleGroupBox": ctkCollapsibleGroupBox,
                  "qMRMLNodeComboBox": qMRMLNodeComboBox, "qMRMLWidget": qMRMLWidget}


def install(monkeypatch, messages: Messages):
    """Make `qt`, the custom widgets and the application's parts of `slicer` importable for one test."""
    for name, cls in CUSTOM_WIDGETS.items():
        module = types.ModuleType(name)
        setattr(module, name, cls)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "qt", qt)
    shim = sys.modules["slicer.ScriptedLoadableModule"]
    for cls in (ScriptedLoadableModuleWidget, ScriptedLoadableModule, ScriptedLoadableModuleTest):
        monkeypatch.setattr(shim, cls.__name__, cls, raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", loadUI)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", childWidgetVariables)
    monkeypatch.setattr(slicer.util, "errorDisplay", messages.errorDisplay)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", messages.confirmOkCancelDisplay)
    monkeypatch.setattr(slicer, "qMRMLPlotView", _WrappedClass(qMRMLPlotView), raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(processEvents=_APP.processEvents,
                                                             connect=lambda *a: True), raising=False)
    FileDialogs.answers, FileDialogs.asked = [], []
    slot_errors.clear()


def dispose(widget) -> None:
    """Take the panel down before its scene: the selectors stop observing it, the Qt objects are deleted."""
    panel = unwrap(widget.parent)
    for combo in panel.findChildren(qMRMLNodeComboBox):
        combo.setMRMLScene(None)
    panel.deleteLater()
    _APP.sendPostedEvents(None, QtCore.QEvent.DeferredDelete)
    import gc

    gc.collect()


def process_events(until=None, timeout=300.0):
    """Turn the Qt event loop (the Widget's timer polls its processes) until `until()` or the timeout."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _APP.processEvents(QtCore.QEventLoop.AllEvents, 50)
        if until is not None and until():
            return True
        time.sleep(0.02)
    return until is None


def grab(widget, path, width=420):
    """A picture of the panel as a user sees it."""
    panel = unwrap(widget)
    panel.resize(width, panel.sizeHint().height())
    panel.adjustSize()
    panel.resize(width, panel.sizeHint().height())
    process_events(timeout=0.2)
    if not panel.grab().save(str(path)):
        raise OSError(f"could not write {path}")
