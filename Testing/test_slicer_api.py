"""The Slicer-only files checked against the API of the oldest Slicer the extension claims.

The list (Testing/slicer_api/slicer-api.json) is extracted from Slicer's, CTK's, VTK's and
PythonQt's source by scripts/extract_slicer_api.py; how to regenerate it is in the README
("Checking the panels against Slicer's API").
"""

from __future__ import annotations

import importlib.util
import re

import pytest

from layout_checks import MODULES, ROOT
from slicer_api_check import SlicerApi, check_python, check_ui, panel_widgets

from mskquant.dependencies import MINIMUM_SLICER_VERSION

# Every file that runs only inside Slicer or talks to MRML/VTK: module files, panels, MRML logic
# and the shared adapters. (The numeric core imports neither; test_static_layout checks that.)
SCANNED_DIRS = ("mskquant", "KneeT2Segment", "VHIWorkflow", "SiamesePainCAM")
USES_SLICER = re.compile(r"\bimport (slicer|qt|ctk|vtk)\b|\bslicer\.|vtkMRML")


@pytest.fixture(scope="module")
def api():
    return SlicerApi()


def slicer_files():
    files = []
    for d in SCANNED_DIRS:
        for py in sorted((ROOT / d).rglob("*.py")):
            if USES_SLICER.search(py.read_text(encoding="utf-8")):
                files.append(py)
    return files


def test_the_list_is_of_the_minimum_slicer_and_names_its_sources(api):
    src = api.data["source"]
    assert src["slicer"]["ref"] == MINIMUM_SLICER_VERSION
    for part in ("slicer", "ctk", "vtk", "pythonqt"):
        assert re.fullmatch(r"[0-9a-f]{40}", src[part]["commit"]), part
    # a list that lost most of a source would let anything pass: it must be the whole API
    assert len(api.data["classes"]) > 800 and len(api.data["ctk_classes"]) > 400
    assert len(api.vtk_classes) > 2000 and len(api.qt_classes) > 800 and len(api.data["slicer_util"]) > 150


def test_panels_module_files_and_mrml_logic_use_only_existing_api(api):
    findings, scanned = [], slicer_files()
    widgets = {m: panel_widgets(ROOT / m / "Resources" / "UI" / f"{m}.ui") for m in MODULES}
    for py in scanned:
        module = py.relative_to(ROOT).parts[0]
        findings += check_python(api, py.read_text(encoding="utf-8"), str(py.relative_to(ROOT)),
                                 widgets.get(module) if py.name in ("widget.py", f"{module}.py") else None)
    names = {p.relative_to(ROOT).as_posix() for p in scanned}
    for m in MODULES:  # the files that can only be checked this way are among the scanned ones
        assert {f"{m}/{m}.py", f"{m}/{m}Lib/widget.py"} <= names
    assert "mskquant/panel.py" in names and "mskquant/mrml.py" in names
    assert findings == [], "\n".join(f"{p}:{line}: {msg}" for p, line, msg in findings)


@pytest.mark.parametrize("module", MODULES)
def test_ui_classes_and_properties_exist(api, module):
    findings = check_ui(api, ROOT / module / "Resources" / "UI" / f"{module}.ui")
    assert findings == [], findings


def test_the_check_finds_calls_that_do_not_exist(api):
    bad = '''
import slicer, qt, vtk
import slicer.notamodule
slicer.util.loadUi2("x")
slicer.modules.segmenteditr.widgetRepresentation()
self.ui.runButton.setFooBar(1)
self.ui.runButton.connect("clickedd(bool)", f)
self.ui.noSuchButton.setEnabled(True)
node.SetAndObserveFooNodeID("x")
slicer.mrmlScene.AddNewNodeByClazz("vtkMRMLFooNode")
slicer.vtkMRMLScene.EndCloseEventt
slicer.app.processEventz()
qt.QFooWidget()
vtk.vtkFooFilter()
'''
    good = '''
import slicer, qt, vtk
slicer.util.loadUI("x")
slicer.modules.segmenteditor.widgetRepresentation()
self.ui.runButton.setEnabled(True)
self.ui.runButton.connect("clicked(bool)", f)
node.SetAndObserveDisplayNodeID("x")
slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
slicer.vtkMRMLScene.EndCloseEvent
slicer.app.processEvents()
qt.QTimer()
vtk.vtkMatrix4x4()
try:
    import slicer.notamodule  # a fallback for older versions is not a finding
except ImportError:
    pass
'''
    widgets = {"runButton": "QPushButton"}
    findings = check_python(api, bad, "bad.py", widgets)
    lines = {line for _, line, _ in findings}
    assert lines == set(range(3, 15)), findings  # every line of the snippet, each for its own reason
    assert check_python(api, good, "good.py", widgets) == []


def test_the_check_finds_designer_classes_and_properties_that_do_not_exist(api, tmp_path):
    ui = tmp_path / "Bad.ui"
    ui.write_text('''<?xml version="1.0" encoding="UTF-8"?>
<ui version="4.0"><class>Bad</class>
 <widget class="qMRMLWidget" name="Bad"><layout class="QVBoxLayout" name="l">
  <item><widget class="ctkCollapsibleButton" name="a"><property name="collapsed"><bool>true</bool></property>
    <property name="colapsed"><bool>true</bool></property></widget></item>
  <item><widget class="qMRMLNodeComboBox" name="b"><property name="nodeTypes"><stringlist><string>vtkMRMLScalarVolumeNode</string></stringlist></property></widget></item>
  <item><widget class="ctkNoSuchWidget" name="c"/></item>
 </layout></widget></ui>''', encoding="utf-8")
    msgs = [m for _, _, m in check_ui(api, ui)]
    assert len(msgs) == 2 and "colapsed" in msgs[0] and "ctkNoSuchWidget" in msgs[1], msgs


def test_the_extractor_reads_vtk_macros_qt_properties_signals_and_enums():
    spec = importlib.util.spec_from_file_location("extract_slicer_api", ROOT / "scripts" / "extract_slicer_api.py")
    extract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extract)
    header = '''
class VTK_MRML_EXPORT VTK_MARSHALAUTO vtkMRMLFooNode : public vtkMRMLNode
{
public:
  vtkTypeMacro(vtkMRMLFooNode, vtkMRMLNode);
  enum { FooEvent = 1000, BarEvent };
  vtkSetMacro(Radius, double);
  vtkGetStringMacro(Label);
  vtkBooleanMacro(Visible, bool);
  void DoThing(int a); // Hidden(
};
class Q_SLICER_EXPORT qSlicerFooWidget : public QWidget, protected Ui_Foo
{
  Q_OBJECT
  Q_PROPERTY(QString fooName READ fooName WRITE setFooName)
public slots:
  void setFooName(const QString& name);
signals:
  void fooChanged(int);
public:
  QString fooName() const;
};
'''
    classes = extract.parse_header(header)
    node, widget = classes["vtkMRMLFooNode"], classes["qSlicerFooWidget"]
    assert node["bases"] == ["vtkMRMLNode"] and widget["bases"] == ["QWidget", "Ui_Foo"]
    assert {"SetRadius", "GetLabel", "VisibleOn", "VisibleOff", "DoThing", "FooEvent", "BarEvent",
            "SafeDownCast"} <= set(node["methods"])
    assert "Hidden" not in node["methods"]  # comments are not declarations
    assert widget["properties"] == ["fooName"] and widget["signals"] == ["fooChanged"]
    assert {"setFooName", "fooName"} <= set(widget["methods"])
