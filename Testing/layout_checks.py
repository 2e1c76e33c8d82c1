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


def imports_of(py_path: Path) -> Set[str]:
    tree = ast.parse(py_path.read_text(encoding="utf-8"))
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    return mods
