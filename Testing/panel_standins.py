"""Stand-ins for the parts of the Slicer application that cannot run here (Qt widgets, ``qt``,
``slicer.util`` dialogs, ``slicer.app``, the Segment Editor GUI), recording what the panels ask of
them. Everything else is real: the panels get slicer-core's MRML classes and a real scene.

The widgets a panel may use are exactly those named in its Designer ``.ui`` file, so a name the
file lacks fails here as it would in Slicer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import types
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class FakeWidget:
    """Any Qt/CTK widget a panel touches: properties as attributes, signals recorded."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.enabled = True
        self.text = ""
        self.value = 0
        self.checked = False
        self.currentPath = ""
        self._slots = {}
        self._node = None
        self._items = []
        self._index = -1
        self._text = ""

    def __repr__(self):
        return f"<{self.name}>"

    # signals
    def connect(self, signal, slot):
        self._slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        for slot in self._slots.get(signal, []):
            slot(*args)

    def click(self):
        """What a user's click does: nothing on a disabled button; a slot's exception would reach Qt."""
        if not self.enabled:
            raise AssertionError(f"{self.name} is disabled: a user cannot click it")
        self.emit("clicked(bool)", False)

    # node selectors
    def currentNode(self):
        return self._node

    def setCurrentNode(self, node):
        self._node = node
        self.emit("currentNodeChanged(vtkMRMLNode*)", node)

    def setMRMLScene(self, scene):
        self.scene = scene

    def addAttribute(self, *args):
        pass

    def setMRMLTableNode(self, node):
        self.table = node

    # progress bars and spin boxes
    def setRange(self, lo, hi):
        self.range = (lo, hi)

    def setValue(self, v):
        self.value = v

    # combo boxes
    def clear(self):
        self._items, self._index = [], -1

    def addItem(self, text, data=None):
        self._items.append((text, data))
        if self._index < 0:
            self._index = 0

    def findText(self, text):
        return next((i for i, (t, _) in enumerate(self._items) if t == text), -1)

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self._items) if d == data), -1)

    def setCurrentIndex(self, i):
        self._index = i

    @property
    def count(self):
        return len(self._items)

    @property
    def currentData(self):
        return self._items[self._index][1] if 0 <= self._index < len(self._items) else None

    @property
    def currentText(self):
        return self._items[self._index][0] if 0 <= self._index < len(self._items) else self._text

    @currentText.setter
    def currentText(self, text):
        i = self.findText(text)
        if i >= 0:
            self._index = i
        else:
            self._text = text


def ui_widget_names(ui_path: Path):
    return set(re.findall(r'<widget class="[^"]+" name="([^"]+)"', Path(ui_path).read_text(encoding="utf-8")))


class Recorder:
    """Dialogs, warnings, layer changes, module switches: what the user would see."""

    def __init__(self):
        self.dialogs = []  # error dialogs (one per failure)
        self.warnings = []
        self.questions = []
        self.layers = []
        self.modules = []
        self.answer = True
        self.folder = ""


def make_util(rec: Recorder):
    util = types.SimpleNamespace()

    def loadUI(path):
        assert Path(path).is_file(), path
        w = FakeWidget("root")
        w.ui_path = Path(path)
        return w

    def childWidgetVariables(widget):
        names = ui_widget_names(widget.ui_path)
        return types.SimpleNamespace(**{n: FakeWidget(n) for n in names})

    @contextlib.contextmanager
    def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
        # as slicer.util (5.8-5.12): show the dialog, then re-raise
        try:
            yield
        except Exception as exc:
            if show:
                rec.dialogs.append(f"{message}\n{exc}")
            raise

    util.loadUI = loadUI
    util.childWidgetVariables = childWidgetVariables
    util.tryWithErrorDisplay = tryWithErrorDisplay
    util.errorDisplay = lambda text, *a, **k: rec.dialogs.append(text)
    util.warningDisplay = lambda text, *a, **k: rec.warnings.append(text)
    util.confirmOkCancelDisplay = lambda text, *a, **k: rec.questions.append(text) or rec.answer
    util.confirmYesNoDisplay = util.confirmOkCancelDisplay
    util.setSliceViewerLayers = lambda **kw: rec.layers.append(kw)
    util.selectModule = lambda name: rec.modules.append(name)
    return util


class FakeEditor:
    """Segment Editor's widget: what the hand-off sets, and its real MRML editor node."""

    def __init__(self, scene):
        self.scene = scene
        self.node = None
        self.segmentation = self.source = None

    def setSegmentationNode(self, n):
        self.segmentation = n

    def setSourceVolumeNode(self, n):
        self.source = n

    def mrmlSegmentEditorNode(self):
        if self.node is None or self.node.GetScene() is None:
            self.node = self.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        return self.node


def make_qt(rec: Recorder):
    qt = types.ModuleType("qt")

    class QTimer:
        def __init__(self):
            self.active = False
            self.slots = []

        def setInterval(self, ms):
            self.interval = ms

        def connect(self, signal, slot):
            self.slots.append(slot)

        def start(self):
            self.active = True

        def stop(self):
            self.active = False

    qt.QTimer = QTimer
    qt.QFileDialog = types.SimpleNamespace(getExistingDirectory=lambda parent, title, start="": rec.folder)
    qt.Qt = types.SimpleNamespace(WaitCursor=3)
    return qt


def install(monkeypatch, runtime):
    """Put the stand-ins in place around the real slicer-core module; returns the Recorder."""
    import slicer

    rec = Recorder()
    monkeypatch.setitem(sys.modules, "qt", make_qt(rec))
    monkeypatch.setattr(slicer, "util", make_util(rec), raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", runtime.scene, raising=False)
    app = types.SimpleNamespace(processEvents=lambda: None, applicationLogic=lambda: runtime.app_logic,
                                setOverrideCursor=lambda c: None, restoreOverrideCursor=lambda: None)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    editor = FakeEditor(runtime.scene)
    rec.editor = editor
    seg_editor_widget = types.SimpleNamespace(self=lambda: types.SimpleNamespace(editor=editor))
    real_logic = {name: types.SimpleNamespace(logic=lambda n=module: runtime.logic(n))
                  for name, module in (("sequences", "Sequences"), ("plots", "Plots"), ("markups", "Markups"))}
    modules = types.SimpleNamespace(segmenteditor=types.SimpleNamespace(widgetRepresentation=lambda: seg_editor_widget),
                                    **real_logic)  # the real module logics of the headless runtime
    monkeypatch.setattr(slicer, "modules", modules, raising=False)
    # the module-file base classes (slicer.ScriptedLoadableModule is part of the application)
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent
            self.layout = types.SimpleNamespace(addWidget=lambda w: None, addStretch=lambda n: None)

        def setup(self):
            pass

        def resourcePath(self, rel):
            return str(self.module_dir / "Resources" / rel)

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=None):
            rec.modules.append(f"delayDisplay: {message}")

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(slm, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", slm)
    return rec


def load_module_file(name: str):
    """Import a module file (``VHIWorkflow/VHIWorkflow.py``...) as Slicer does."""
    path = ROOT / name / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_module_file", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def module_widget(name: str):
    """The module's Widget after ``setup()``, the way Slicer builds it."""
    mod = load_module_file(name)
    widget = getattr(mod, f"{name}Widget")()
    widget.module_dir = ROOT / name
    widget.setup()
    return mod, widget


def get_module_logic(widget):
    """``slicer.util.getModuleLogic`` for a scripted module: the widget's ``logic`` attribute."""
    logic = getattr(widget, "logic", None)
    if not logic:
        raise RuntimeError("Could not find module widget representation")
    return logic
