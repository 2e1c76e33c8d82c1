"""Check the Slicer-only files (module files, panels, .ui) against the API of the oldest Slicer the
extension claims, as extracted from Slicer's, CTK's and PythonQt's source by
scripts/extract_slicer_api.py into Testing/slicer_api/slicer-api.json.

What is checked (a finding is ``(path, line, message)``):
- ``slicer.util.X``, ``slicer.modules.x``, ``slicer.X`` (classes, submodules, ``import slicer.X``),
  ``qt.X``, ``ctk.X`` exist; members of those classes (``slicer.vtkMRMLScene.EndCloseEvent``) exist;
- ``self.ui.W.member`` / ``ui.W.member``: the member exists on the class W has in the module's .ui
  (through its CTK/Slicer base classes; members of Qt classes are checked against everything
  PythonQt exposes on Qt classes, which is as precise as the source allows); connected signals
  ("clicked(bool)") exist the same way;
- every other CamelCase method call (VTK/MRML style) names a method some Slicer, CTK or VTK class
  declares (the receiver's type is unknown statically, so this catches misspelt and invented
  methods, not a real method called on the wrong class); every "vtkMRML..." class name in a string exists;
- every .ui widget class exists and every property set on it exists on that class.
A use inside ``try: ... except (ImportError, AttributeError)`` is a deliberate fallback for older
versions and is not a finding.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

API_JSON = Path(__file__).resolve().parent / "slicer_api" / "slicer-api.json"
# PythonQt's own methods on every wrapped object and signal (src/PythonQtInstanceWrapper.cpp,
# PythonQtSignal.cpp) and QObject's meta-object API used from Python.
PYTHONQT_MEMBERS = {"connect", "disconnect", "className", "help", "delete", "emit"}
Finding = Tuple[str, int, str]
SCENE_AND_APP = {"mrmlScene": "vtkMRMLScene", "app": "qSlicerApplication"}


class SlicerApi:
    def __init__(self, path: Path = API_JSON) -> None:
        self.data = json.loads(path.read_text(encoding="utf-8"))
        self.cpp = {**self.data["ctk_classes"], **self.data["classes"]}
        self.qt_classes = set(self.data["qt_classes"])
        self.qt_members = set(self.data["qt_members"]) | set(self.data["qt_ui_properties"]) | PYTHONQT_MEMBERS
        self.qt_signals = set(self.data["qt_signals"])
        self.vtk_classes = set(self.data["vtk_classes"])
        self.vtk_methods = set(self.data["vtk_methods"])
        self.all_methods = set(self.vtk_methods)
        for info in self.cpp.values():
            self.all_methods.update(info["methods"])

    def class_exists(self, name: str) -> bool:
        return name in self.cpp or name in self.qt_classes or name in self.vtk_classes

    def _lineage(self, name: str) -> Tuple[List[dict], bool]:
        """CTK/Slicer class infos up the base classes, and whether a Qt class is reached."""
        infos, reaches_qt, todo, seen = [], name in self.qt_classes, [name], set()
        while todo:
            cls = todo.pop()
            if cls in seen:
                continue
            seen.add(cls)
            if cls in self.cpp:
                infos.append(self.cpp[cls])
                todo.extend(self.cpp[cls]["bases"])
            elif cls in self.qt_classes:
                reaches_qt = True
        return infos, reaches_qt

    def has_member(self, cls: str, member: str, kind: str = "methods") -> bool:
        infos, reaches_qt = self._lineage(cls)
        keys = ("signals",) if kind == "signals" else ("methods", "properties", "signals")
        if any(member in info[k] for info in infos for k in keys):
            return True
        if reaches_qt:
            return member in (self.qt_signals if kind == "signals" else self.qt_members)
        if cls.startswith("vtk") or any(b.startswith("vtk") for i in infos for b in i["bases"]):
            return member in self.vtk_methods  # the VTK base classes: any VTK method (union)
        return False


def ui_classes(ui_path: Path) -> Dict[str, str]:
    """objectName -> widget/layout class of a Designer file."""
    root = ET.parse(ui_path).getroot()
    return {w.get("name"): w.get("class") for w in root.iter() if w.tag in ("widget", "layout") and w.get("name")}


def check_ui(api: SlicerApi, ui_path: Path) -> List[Finding]:
    findings = []
    for w in ET.parse(ui_path).getroot().iter("widget"):
        cls = w.get("class")
        if not api.class_exists(cls):
            findings.append((str(ui_path), 0, f"widget class {cls} ({w.get('name')}) does not exist in Slicer"))
            continue
        for prop in w.findall("property"):
            if not api.has_member(cls, prop.get("name")):
                findings.append((str(ui_path), 0, f"{cls} ({w.get('name')}) has no property '{prop.get('name')}'"))
    return findings


def _dotted(node: ast.AST) -> Optional[List[str]]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return None


def _guarded_lines(tree: ast.AST) -> Set[int]:
    """Lines inside try-blocks that fall back on ImportError/AttributeError."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = {getattr(n, "id", getattr(n, "attr", "")) for h in node.handlers if h.type is not None
                      for n in ast.walk(h.type)}
            if caught & {"ImportError", "ModuleNotFoundError", "AttributeError"}:
                for stmt in node.body:
                    lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


class _Checker(ast.NodeVisitor):
    def __init__(self, api: SlicerApi, path: str, widgets: Dict[str, str], guarded: Set[int],
                 modules: Set[str]) -> None:
        self.api, self.path, self.widgets, self.guarded = api, path, widgets, guarded
        self.modules = modules  # names bound by imports: their CamelCase calls are Python classes
        self.findings: List[Finding] = []

    def report(self, node: ast.AST, message: str) -> None:
        if node.lineno not in self.guarded:
            self.findings.append((self.path, node.lineno, message))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == "slicer" and len(parts) > 1 and parts[1] not in self.api.data["slicer_names"]:
                self.report(node, f"module slicer.{parts[1]} does not exist in Slicer")

    def _widget_class(self, parts: List[str]) -> Tuple[Optional[str], int]:
        """Class of self.ui.W / ui.W / self.widget and the index of the first member after it."""
        if parts[:2] == ["self", "ui"] and len(parts) > 2:
            return self.widgets.get(parts[2], ""), 3
        if parts[0] == "ui" and len(parts) > 1:
            return self.widgets.get(parts[1], ""), 2
        if parts[:2] == ["self", "widget"]:
            return self.widgets.get("", ""), 2
        return None, 0

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts = _dotted(node)
        if parts is None:
            self.generic_visit(node)
            return
        api, head = self.api, parts[0]
        if head == "slicer" and len(parts) > 1:
            name = parts[1]
            if name == "util" and len(parts) > 2 and parts[2] not in api.data["slicer_util"]:
                self.report(node, f"slicer.util.{parts[2]} does not exist in Slicer")
            elif name == "modules" and len(parts) > 2 and parts[2] not in api.data["slicer_modules"]:
                self.report(node, f"slicer.modules.{parts[2]}: no such module in Slicer")
            elif name in SCENE_AND_APP:
                if len(parts) > 2 and not api.has_member(SCENE_AND_APP[name], parts[2]):
                    self.report(node, f"slicer.{name} is a {SCENE_AND_APP[name]}, which has no '{parts[2]}'")
            elif name not in ("util", "modules"):
                if name in api.cpp:
                    if len(parts) > 2 and not api.has_member(name, parts[2]):
                        self.report(node, f"{name}.{parts[2]} does not exist in Slicer")
                elif name not in api.data["slicer_names"]:
                    self.report(node, f"slicer.{name} does not exist in Slicer")
        elif head == "vtk" and len(parts) > 1:
            if parts[1] not in api.vtk_classes and parts[1] not in api.data["vtk_names"]:
                self.report(node, f"vtk.{parts[1]} does not exist in Slicer's VTK")
        elif head in ("qt", "ctk") and len(parts) > 1:
            known = api.qt_classes if head == "qt" else set(api.data["ctk_classes"])
            if parts[1] not in known:
                self.report(node, f"{head}.{parts[1]} does not exist in Slicer's {head}")
            elif len(parts) > 2 and parts[1] != "Qt" and not api.has_member(parts[1], parts[2]):
                self.report(node, f"{head}.{parts[1]}.{parts[2]} does not exist")
        else:
            cls, i = self._widget_class(parts)
            if i and self.widgets and parts[i - 1] not in self.widgets and parts[i - 1] != "widget":
                self.report(node, f"{'.'.join(parts[:i])}: no widget of that name in the .ui")
            if cls and len(parts) > i and not api.has_member(cls, parts[i]):
                self.report(node, f"{'.'.join(parts[:i])} is a {cls}, which has no '{parts[i]}'")
        return  # the whole chain is handled

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            parts = _dotted(func)
            cls, i = self._widget_class(parts) if parts else (None, 0)
            if func.attr == "connect" and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                signal = node.args[0].value.split("(")[0]
                ok = api_has_signal(self.api, cls, signal) if cls else (
                    signal in self.api.qt_signals or any(signal in i["signals"] for i in self.api.cpp.values()))
                if not ok:
                    self.report(node, f"signal '{node.args[0].value}' does not exist on {cls or 'any Slicer class'}")
            elif cls is None and func.attr[:1].isupper() and func.attr not in self.api.all_methods \
                    and not self.api.class_exists(func.attr) \
                    and not (parts and parts[0] in self.modules):
                self.report(node, f"method {func.attr}() is declared by no Slicer, CTK or VTK class")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and re.fullmatch(r"vtkMRML\w+", node.value) \
                and node.value not in self.api.cpp:
            self.report(node, f"MRML class {node.value} does not exist in Slicer")


def api_has_signal(api: SlicerApi, cls: str, signal: str) -> bool:
    return api.has_member(cls, signal, kind="signals")


def check_python(api: SlicerApi, source: str, path: str, widgets: Optional[Dict[str, str]] = None) -> List[Finding]:
    tree = ast.parse(source)
    modules = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
               for a in n.names} - {"slicer"}
    checker = _Checker(api, path, widgets or {}, _guarded_lines(tree), modules)
    checker.visit(tree)
    return checker.findings


def panel_widgets(ui_path: Path) -> Dict[str, str]:
    """The .ui's objectName -> class map, with the top-level widget under the key ''."""
    classes = ui_classes(ui_path)
    top = ET.parse(ui_path).getroot().find("widget")
    classes[""] = top.get("class") if top is not None else ""
    return classes
