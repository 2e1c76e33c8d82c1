"""Static checks of the extension layout, for what cannot run here without the Slicer
desktop: CMake file lists, .ui files and the widget names the code reads from them.
Kept as functions so the tests can also prove that each check catches a broken copy."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("KneeT2Segment", "VHIWorkflow", "SiamesePainCAM")
PAPER_AUTHOR = {"KneeT2Segment": "Thomas", "VHIWorkflow": "Hepburn", "SiamesePainCAM": "Chang"}


def cmake_set(cmake_text: str, variable: str, module_name: str = "") -> List[str]:
    """Items of ``set(VARIABLE ...)`` with ${MODULE_NAME}/${LIB_NAME} substituted."""
    m = re.search(r"set\(\s*" + re.escape(variable) + r"\s+(.*?)\)", cmake_text, re.S)
    if not m:
        return []
    items = []
    for line in m.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        for tok in line.split():
            items.append(tok.replace("${MODULE_NAME}", module_name))
    return items


def module_listed_files(module_dir: Path) -> Set[str]:
    text = (module_dir / "CMakeLists.txt").read_text(encoding="utf-8")
    name = re.search(r"set\(\s*MODULE_NAME\s+(\w+)\s*\)", text).group(1)
    return set(cmake_set(text, "MODULE_PYTHON_SCRIPTS", name)) | set(cmake_set(text, "MODULE_PYTHON_RESOURCES", name))


def module_files_on_disk(module_dir: Path) -> Set[str]:
    files = set()
    for p in module_dir.rglob("*"):
        if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt":
            rel = p.relative_to(module_dir).as_posix()
            if rel.endswith(".py") or rel.startswith("Resources/"):
                files.add(rel)
    return files


def listing_problems(listed: Set[str], on_disk: Set[str]) -> List[str]:
    return ([f"on disk but not in CMakeLists.txt: {f}" for f in sorted(on_disk - listed)]
            + [f"in CMakeLists.txt but missing: {f}" for f in sorted(listed - on_disk)])


def ui_widget_names(ui_path: Path) -> Set[str]:
    tree = ET.parse(ui_path)
    return {w.get("name") for w in tree.iter("widget") if w.get("name")}


def ui_names_used(py_path: Path) -> Set[str]:
    """Attribute names read through ``self.ui.X`` / ``ui.X`` in a module's Python code."""
    tree = ast.parse(py_path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
            names.add(node.attr)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ui":
            names.add(node.attr)
    return names


def missing_ui_names(module_dir: Path, ui_path: Path) -> Dict[str, Set[str]]:
    have = ui_widget_names(ui_path)
    out = {}
    for py in module_dir.rglob("*.py"):
        missing = ui_names_used(py) - have
        if missing:
            out[py.relative_to(module_dir).as_posix()] = missing
    return out


def help_text(module_py: Path) -> str:
    tree = ast.parse(module_py.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "helpText"
                                                for t in node.targets):
            return "".join(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)
                           and isinstance(c.value, str))
    return ""


def imported_names(py_path: Path) -> Set[str]:
    """Every module a file imports, absolute (``mskquant.mrml``) or relative (``.logic``)."""
    tree = ast.parse(py_path.read_text(encoding="utf-8"))
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            mods.add(base)
            mods |= {f"{base}.{a.name}" if node.module else f"{base}{a.name}" for a in node.names}
    return mods


# The MRML layer and the front ends; every other file of a Lib or of mskquant is numeric core.
MRML_AND_FRONT_END = {"logic.py", "editing.py", "tables.py", "widget.py", "cli.py", "demo.py", "results.py"}
SHARED_MRML_AND_FRONT_END = {"mrml.py", "headless.py", "panel.py", "dependencies.py", "scenebundle.py"}
SLICER_OR_MRML = ("slicer", "qt", "ctk", "mskquant.mrml", "mskquant.headless", "mskquant.panel", ".logic", ".widget",
                  "..mrml", "..headless", ".mrml", ".headless", ".panel")
GUI = ("qt", "ctk", "mskquant.panel", ".panel", ".widget")


def numeric_core_files() -> List[Path]:
    files = [p for m in MODULES for p in (ROOT / m / f"{m}Lib").glob("*.py") if p.name not in MRML_AND_FRONT_END]
    files += [p for p in (ROOT / "mskquant").glob("*.py") if p.name not in SHARED_MRML_AND_FRONT_END]
    return sorted(files)


def forbidden_imports(py_path: Path, prefixes) -> Set[str]:
    return {m for m in imported_names(py_path) if any(m == p or m.startswith(p + ".") for p in prefixes)}
