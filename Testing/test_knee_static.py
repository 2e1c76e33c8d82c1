"""KneeT2Segment packaging: CMake lists every file (both ways), the panel's widgets exist in the .ui,
the module cites its paper."""

import ast
import re
import xml.etree.ElementTree as ET

from conftest import ROOT

MODULE = ROOT / "KneeT2Segment"


def cmake_files():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set()
    for block in re.findall(r"set\(MODULE_PYTHON_(?:SCRIPTS|RESOURCES)(.*?)\)", text, re.S):
        for item in block.split():
            listed.add(item.replace("${MODULE_NAME}", "KneeT2Segment"))
    return listed


def test_cmake_lists_every_module_file_and_nothing_else():
    listed = cmake_files()
    present = {str(p.relative_to(MODULE)) for p in MODULE.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"}
    assert listed == present, (sorted(present - listed), sorted(listed - present))
    assert "add_subdirectory(KneeT2Segment)" in (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


def test_every_ui_widget_used_by_the_panel_exists():
    tree = ET.parse(MODULE / "Resources" / "UI" / "KneeT2Segment.ui")
    names = {w.get("name") for w in tree.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "KneeT2SegmentLib" / "widget.py").read_text(encoding="utf-8")))
    assert used and used <= names, sorted(used - names)
    for key in ("runButton", "cancelButton", "progressBar", "statusLabel"):  # RunControls needs them
        assert key in names


def test_module_cites_the_paper_and_sources_parse():
    text = re.sub(r'"\s*\n\s*"', "", (MODULE / "KneeT2Segment.py").read_text(encoding="utf-8"))  # join implicit concatenations
    assert "Thomas KA" in text
    assert "Open source software for automatic subregional assessment of knee cartilage degradation" in text
    for path in MODULE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        doc = ast.get_docstring(tree)
        assert doc, f"{path.name} has no module docstring"
    numeric = ("anatomy", "change", "mese", "parameters", "quantify", "simulator", "subregions", "t2fit", "pictures")
    for name in numeric:  # the numeric core never imports slicer
        src = (MODULE / "KneeT2SegmentLib" / f"{name}.py").read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import slicer|from slicer)", src, re.M), name
