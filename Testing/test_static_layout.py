"""Extension layout, CMake listings, .ui files, help texts, registry schema, layering."""

from __future__ import annotations

import ast
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from layout_checks import (GUI, MODULES, PAPER_AUTHOR, ROOT, SLICER_OR_MRML, cmake_set, forbidden_imports, help_text,
                           listing_problems, missing_ui_names, module_files_on_disk, module_listed_files,
                           numeric_core_files, ui_widget_names)


def test_required_top_level():
    for name in ("CMakeLists.txt", "KneeT2Segment", "VHIWorkflow", "SiamesePainCAM", "Resources", "Testing",
                 "README.md", "MSKQuant.json", ".ci/run", "mskquant", "benchmarks"):
        assert (ROOT / name).exists(), name


def test_root_cmake_declares_the_extension():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "project(MSKQuant)" in text
    assert 'set(EXTENSION_CATEGORY "Quantification")' in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    for var in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_SCREENSHOTURLS"):
        assert f"set({var} " in text, var
    assert "find_package(Slicer ${MSKQUANT_MINIMUM_SLICER_VERSION} REQUIRED)" in text
    for sub in MODULES + ("mskquant", "Resources"):
        assert f"add_subdirectory({sub})" in text, sub


def test_extensions_index_description():
    d = json.loads((ROOT / "MSKQuant.json").read_text(encoding="utf-8"))
    assert d["build_dependencies"] == ["PyTorch"]
    assert d["category"] == "Quantification"
    assert d["scm_url"].startswith("https://") and d["scm_revision"]


@pytest.mark.parametrize("module", MODULES)
def test_module_files_match_cmake_listing(module):
    d = ROOT / module
    assert listing_problems(module_listed_files(d), module_files_on_disk(d)) == []


@pytest.mark.parametrize("module", MODULES)
def test_module_has_module_widget_logic_test_and_ui(module):
    d = ROOT / module
    tree = ast.parse((d / f"{module}.py").read_text(encoding="utf-8"))
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {module, f"{module}Widget", f"{module}Logic", f"{module}Test"} <= classes
    assert f'resourcePath("UI/{module}.ui")' in (d / f"{module}.py").read_text(encoding="utf-8")
    assert (d / "Resources" / "UI" / f"{module}.ui").is_file()
    assert (d / "Resources" / "Icons" / f"{module}.png").is_file()
    text = (d / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text


@pytest.mark.parametrize("module", MODULES)
def test_ui_parses_and_every_widget_the_code_reads_exists(module):
    d = ROOT / module
    ui = d / "Resources" / "UI" / f"{module}.ui"
    ET.parse(ui)
    assert missing_ui_names(d, ui) == {}
    assert len(ui_widget_names(ui)) > 5


@pytest.mark.parametrize("module", MODULES)
def test_help_text_cites_the_paper(module):
    text = help_text(ROOT / module / f"{module}.py")
    assert PAPER_AUTHOR[module] in text and "<i>" in text, text[:200]


def test_shared_library_files_match_cmake_listing():
    d = ROOT / "mskquant"
    text = (d / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set(cmake_set(text, "LIB_PYTHON_SCRIPTS")) | set(cmake_set(text, "LIB_PYTHON_RESOURCES"))
    on_disk = {p.relative_to(d).as_posix() for p in d.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".txt")
               and p.name != "CMakeLists.txt"}
    assert listing_problems(listed, on_disk) == []


def test_extension_resources_match_cmake_listing():
    d = ROOT / "Resources"
    text = (d / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set(cmake_set(text, "MSKQUANT_RESOURCES")) | set(cmake_set(text, "MSKQUANT_SCREENSHOTS"))
    on_disk = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and p.name != "CMakeLists.txt"}
    assert listing_problems(listed, on_disk) == []


def test_models_json_validates_against_its_schema():
    from mskquant.jsonschema_lite import validate

    reg = json.loads((ROOT / "Resources" / "Models.json").read_text(encoding="utf-8"))
    schema = json.loads((ROOT / "Resources" / "Models.schema.json").read_text(encoding="utf-8"))
    assert validate(reg, schema) == []
    broken = json.loads(json.dumps(reg))
    broken["models"][0]["files"][0]["sha256"] = "not-a-hash"
    del broken["models"][0]["license"]
    errors = validate(broken, schema)
    assert any("sha256" in e for e in errors) and any("license" in e for e in errors)


# --- the checks catch what they should ----------------------------------------------------------
def test_deleting_a_file_name_from_cmake_is_caught(tmp_path):
    copy = tmp_path / "VHIWorkflow"
    shutil.copytree(ROOT / "VHIWorkflow", copy, ignore=shutil.ignore_patterns("__pycache__"))
    cm = copy / "CMakeLists.txt"
    cm.write_text(cm.read_text(encoding="utf-8").replace("  ${MODULE_NAME}Lib/thresholds.py\n", ""))
    problems = listing_problems(module_listed_files(copy), module_files_on_disk(copy))
    assert problems == ["on disk but not in CMakeLists.txt: VHIWorkflowLib/thresholds.py"]


def test_renaming_a_widget_in_the_ui_is_caught(tmp_path):
    copy = tmp_path / "VHIWorkflow"
    shutil.copytree(ROOT / "VHIWorkflow", copy, ignore=shutil.ignore_patterns("__pycache__"))
    ui = copy / "Resources" / "UI" / "VHIWorkflow.ui"
    ui.write_text(ui.read_text(encoding="utf-8").replace('name="runButton"', 'name="startButton"'))
    missing = missing_ui_names(copy, ui)
    assert missing == {"VHIWorkflowLib/widget.py": {"runButton"}}


# --- layering: numeric core never imports Slicer or the MRML layer; MRML layer never imports the GUI ----
@pytest.mark.parametrize("path", numeric_core_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_numeric_core_does_not_import_slicer_or_mrml(path):
    assert forbidden_imports(path, SLICER_OR_MRML) == set()


def test_mrml_layer_does_not_import_the_gui():
    paths = [ROOT / "mskquant" / "mrml.py", ROOT / "mskquant" / "headless.py"]
    paths += [ROOT / m / f"{m}Lib" / "logic.py" for m in MODULES]
    paths += [ROOT / "VHIWorkflow" / "VHIWorkflowLib" / n for n in ("editing.py", "tables.py")]
    for path in paths:
        assert forbidden_imports(path, GUI) == set(), path


def test_layering_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "thresholds.py"
    bad.write_text("from mskquant import mrml\nfrom .logic import VHILogic\nimport numpy\n", encoding="utf-8")
    assert forbidden_imports(bad, SLICER_OR_MRML) == {"mskquant.mrml", ".logic", ".logic.VHILogic"}


def test_every_python_file_says_what_it_is():
    files = [p for m in MODULES for p in (ROOT / m).rglob("*.py")] + list((ROOT / "mskquant").rglob("*.py"))
    missing = [p.relative_to(ROOT).as_posix() for p in files
               if p.name != "__main__.py" and not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert missing == []


# --- Extensions Index entry: screenshots that exist, a short description, documentation links ------
def test_screenshot_urls_point_at_committed_pngs():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    urls = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', text).group(1).split()
    assert len(urls) == len(MODULES)
    prefix = "https://raw.githubusercontent.com/MSKQuant/SlicerMSKQuant/main/"
    for url in urls:
        assert url.startswith(prefix), url
        png = ROOT / url[len(prefix):]
        assert png.is_file(), png
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 400_000, png
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert 400 <= width <= 1280 and 150 <= height <= 1000, (png, width, height)


def test_extension_description_is_one_or_two_sentences():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    desc = re.search(r'set\(EXTENSION_DESCRIPTION "([^"]+)"\)', text).group(1)
    assert 1 <= len(re.findall(r"[.!?](\s|$)", desc)) <= 2 and len(desc) < 400


@pytest.mark.parametrize("module", MODULES)
def test_help_text_links_to_the_documentation(module):
    text = help_text(ROOT / module / f"{module}.py")
    url = re.search(r'<a href="([^"]+)">', text).group(1)
    base, anchor = url.split("#")
    assert base == "https://github.com/MSKQuant/SlicerMSKQuant"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    def slug(heading):  # GitHub's heading anchors
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    assert anchor in {slug(h) for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    assert anchor.startswith(module.lower())
