"""Extract the Python-visible API of a Slicer release from its source, for Testing/test_slicer_api.py.

The panels and module files run only inside the Slicer application, so nothing here can import
them against the real ``slicer``/``qt``/``ctk`` modules. What the test can do is check every name
they use against what the oldest Slicer the extension claims (mskquant.dependencies
MINIMUM_SLICER_VERSION) declares in its source. This script reads that source from git
repositories (no checkout needed) and writes one JSON list, committed with the commits it came
from:

* Slicer (branch of the minimum version): ``slicer.util`` functions, ``slicer.<name>`` submodules,
  module names (``slicer.modules.<lowercase name>``), and every C++ class of Libs/, Base/ and
  Modules/ (``vtk*`` and ``q*``) with its base classes, methods (including the ones VTK's
  Set/Get/Boolean macros generate), Qt properties and signals.
* CTK at the commit Slicer's superbuild pins: the same for the ``ctk*`` classes.
* VTK at the release Slicer's superbuild builds by default (upstream tag of Slicer's VTK fork): the
  ``vtk*`` class names and the union of their methods.
* PythonQt's generated wrappers for Qt 5.15 (the Qt classes and methods PythonQt exposes as
  ``qt.*``), completed by the properties, slots and signals that Slicer's and CTK's own Python and
  Designer (.ui) files use on Qt widgets - wrappers list neither slots nor signals.

Usage::

    python scripts/extract_slicer_api.py --slicer SLICER_GIT_DIR --slicer-ref 5.10 \
        --ctk CTK_GIT_DIR --vtk VTK_GIT_DIR --pythonqt PYTHONQT_GIT_DIR --out Testing/slicer_api/slicer-api.json
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import PurePosixPath

CLASS_RE = re.compile(r"^\s*class\s+(?:\w+_EXPORT\s+)?(?:[A-Z][A-Z_0-9]+(?:\([^)]*\))?\s+)*([A-Za-z_]\w*)"
                      r"\s*(?:final\s*)?(?::\s*([^{;]+))?\{", re.M)
# what VTK's type macro declares in every class that uses it (Common/Core/vtkSetGet.h)
TYPE_MACRO_METHODS = {"IsA", "IsTypeOf", "SafeDownCast", "NewInstance", "GetClassName", "GetNumberOfGenerationsFromBaseType"}
BASE_RE = re.compile(r"(?:public|protected|private)\s+(?:virtual\s+)?([A-Za-z_][\w:]*)")
CALLABLE_RE = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
MACRO_RE = re.compile(r"\bvtk(Set|Get)\w*Macro\s*\(\s*(\w+)")
BOOL_MACRO_RE = re.compile(r"\bvtkBooleanMacro\s*\(\s*(\w+)")
ENUM_RE = re.compile(r"\benum\s+(?:class\s+)?\w*\s*(?::\s*\w+\s*)?\{([^}]*)\}")
PROPERTY_RE = re.compile(r"Q_PROPERTY\s*\(\s*[\w:<>*&, ]+?\s+\*?(\w+)\s+((?:[^()]|\([^)]*\))*)\)")
SECTION_RE = re.compile(r"^\s*(public|protected|private|signals|Q_SIGNALS|public\s+slots|"
                        r"public\s+Q_SLOTS|protected\s+slots|private\s+slots)\s*:", re.M)
CPP_WORDS = {"if", "for", "while", "switch", "return", "sizeof", "defined", "static_cast", "const_cast",
             "reinterpret_cast", "dynamic_cast", "decltype", "operator", "Q_DECLARE_PRIVATE",
             "Q_DISABLE_COPY", "Q_OBJECT", "Q_PROPERTY", "Q_ENUM", "Q_ENUMS", "Q_FLAGS", "Q_FLAG",
             "Q_DECLARE_PUBLIC", "QSharedPointer", "new", "delete", "throw", "catch"}


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True,
                          text=True, errors="replace").stdout


def read_files(repo: str, ref: str, paths: list[str]) -> dict[str, str]:
    """Blob contents of many paths at once (one git cat-file process)."""
    if not paths:
        return {}
    spec = "".join(f"{ref}:{p}\n" for p in paths)
    out = subprocess.run(["git", "-C", repo, "cat-file", "--batch"], input=spec.encode(),
                         capture_output=True, check=True).stdout
    texts, pos = {}, 0
    for p in paths:
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        texts[p] = out[header_end + 1:header_end + 1 + size].decode("utf-8", "replace")
        pos = header_end + 1 + size + 1
    return texts


def list_files(repo: str, ref: str, *suffixes: str) -> list[str]:
    return [p for p in git(repo, "ls-tree", "-r", "--name-only", ref).splitlines()
            if p.endswith(suffixes)]


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def parse_header(text: str) -> dict[str, dict]:
    """Classes of one C++ header: bases, callables, Qt properties and signals (liberal: a name
    declared anywhere in the class body counts)."""
    text = strip_comments(text)
    found = {}
    starts = [(m.start(), m.group(1), m.group(2)) for m in CLASS_RE.finditer(text)]
    for i, (start, name, bases) in enumerate(starts):
        body = text[start:starts[i + 1][0] if i + 1 < len(starts) else len(text)]
        methods = {m for m in CALLABLE_RE.findall(body) if m not in CPP_WORDS and m != name}
        for kind, field in MACRO_RE.findall(body):
            methods.add(kind + field)
        for items in ENUM_RE.findall(body):  # enumerators: events, modes (slicer.vtkMRMLScene.EndCloseEvent)
            methods.update(re.findall(r"(?:^|,)\s*([A-Za-z_]\w*)", items))
        if re.search(r"\bvtk(?:Abstract)?TypeMacro\s*\(", body):
            methods.update(TYPE_MACRO_METHODS)
        for field in BOOL_MACRO_RE.findall(body):
            methods.update({field + "On", field + "Off"})
        props = set()
        for prop, rest in PROPERTY_RE.findall(body):
            props.add(prop)
            methods.update(re.findall(r"\b(?:READ|WRITE|RESET)\s+(\w+)", rest))
        signals = set()
        sections = list(SECTION_RE.finditer(body))
        for j, sec in enumerate(sections):
            if sec.group(1) in ("signals", "Q_SIGNALS"):
                end = sections[j + 1].start() if j + 1 < len(sections) else len(body)
                signals.update(CALLABLE_RE.findall(body[sec.end():end]))
        found[name] = {"bases": sorted({b.split("::")[-1] for b in BASE_RE.findall(bases or "")}),
                       "methods": sorted(methods), "properties": sorted(props),
                       "signals": sorted(signals - CPP_WORDS)}
    return found


def merge_classes(into: dict, more: dict) -> None:
    for name, info in more.items():
        if name in into:  # a class declared twice (e.g. #ifdef branches): keep the union
            for key in ("bases", "methods", "properties", "signals"):
                into[name][key] = sorted(set(into[name][key]) | set(info[key]))
        else:
            into[name] = info


def cpp_classes(repo: str, ref: str, roots: tuple[str, ...], prefixes: tuple[str, ...]) -> dict:
    headers = [p for p in list_files(repo, ref, ".h") if p.startswith(roots)
               and PurePosixPath(p).name.startswith(prefixes) and "/Testing/" not in p]
    classes: dict = {}
    for text in read_files(repo, ref, headers).values():
        merge_classes(classes, {n: i for n, i in parse_header(text).items() if n.startswith(prefixes)})
    return classes


def python_defs(text: str) -> list[str]:
    tree = ast.parse(text)
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return sorted(names)


def slicer_modules(repo: str, ref: str) -> list[str]:
    names = set()
    for kind in ("Loadable", "Scripted", "CLI"):
        for d in git(repo, "ls-tree", "-d", "--name-only", f"{ref}:Modules/{kind}").splitlines():
            names.add(d.lower())
    for p in list_files(repo, ref, ".py"):  # scripted modules are named after their .py file
        parts = PurePosixPath(p).parts
        if len(parts) == 4 and parts[:2] == ("Modules", "Scripted") and parts[3] == parts[2] + ".py":
            names.add(parts[2].lower())
    return sorted(names)


def qt_usage(texts: dict[str, str]) -> tuple[set, set, set]:
    """Members, signals and (widget class, property) pairs that Slicer's/CTK's own Python and .ui
    files use on Qt objects: what PythonQt's wrappers do not list (slots, signals, properties)."""
    members, signals, ui_props = set(), set(), set()
    for path, text in texts.items():
        if path.endswith(".py"):
            members.update(re.findall(r"\b(?:ui|self)\.\w+\.([a-z]\w*)\b", text))
            signals.update(re.findall(r"""connect\(\s*['"](\w+)\(""", text))
        elif path.endswith(".ui"):
            try:
                root = ET.fromstring(text)
            except ET.ParseError:
                continue
            for w in root.iter("widget"):
                for prop in w.findall("property"):
                    ui_props.add((w.get("class"), prop.get("name")))
            for sig in root.iter("signal"):
                signals.add((sig.text or "").split("(")[0])
    return members, signals, ui_props


def qt_wrappers(repo: str, ref: str) -> tuple[list, list]:
    headers = [p for p in list_files(repo, ref, ".h") if p.startswith("generated_cpp_515/")]
    classes, methods = set(), set()
    for text in read_files(repo, ref, headers).values():
        classes.update(re.findall(r"class PythonQtWrapper_(\w+)\s*:", text))
        for name in re.findall(r"^\s+[\w:<>*&, ]+?\s+\*?(\w+)\(\w+\*\s*theWrappedObject", text, re.M):
            name = name[len("py_q_"):] if name.startswith("py_q_") else name
            methods.add(name)
            # PythonQt exposes Q_PROPERTYs as attributes and their setters/getters as slots
            if name.startswith("set") and len(name) > 3:
                methods.add(name[3].lower() + name[4:])
            if name.startswith("is") and len(name) > 2:
                methods.update({name[2].lower() + name[3:], "set" + name[2:]})
        methods.update(re.findall(r"\bstatic_[A-Za-z0-9]+_(\w+)\(", text))  # static methods
        classes.update(re.findall(r"PythonQtWrapper_(Qt)\b", text))
    return sorted(classes), sorted(methods)


def vtk_module_names(repo: str, commit: str) -> list[str]:
    """Module-level names of ``vtk`` that are not classes: the VTK_* type constants and the Python
    wrapping's own types (``vtk.reference``: "vtkmodules.vtkCommonCore.<name>" in Wrapping/PythonCore)."""
    texts = read_files(repo, commit, ["Common/Core/vtkType.h", "Common/Core/vtkSystemIncludes.h"])
    names = {n for t in texts.values() for n in re.findall(r"#\s*define\s+(VTK_[A-Z_0-9]+)\b", t)}
    wrapping = [p for p in list_files(repo, commit, ".cxx") if p.startswith("Wrapping/PythonCore/")]
    for text in read_files(repo, commit, wrapping).values():
        names.update(re.findall(r'"vtkmodules\.vtkCommonCore\.(\w+)"', text))
    return sorted(names)


def default_vtk_tag(slicer_repo: str, commit: str) -> str:
    """Upstream tag of the VTK that Slicer's superbuild builds by default ("slicer-v9.5.2-..." -> v9.5.2)."""
    top = git(slicer_repo, "show", f"{commit}:CMakeLists.txt")
    minor = re.search(r'set\(_default_vtk_minor_version "(\d+)"\)', top).group(1)
    ext = git(slicer_repo, "show", f"{commit}:SuperBuild/External_VTK.cmake")
    return "v" + re.search(r'STREQUAL "9\.%s"\)\s*\n\s*set\(_git_tag "[0-9a-f]+"\)\s*# slicer-v([\d.]+)-' % minor,
                           ext).group(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slicer", required=True)
    ap.add_argument("--slicer-ref", default="5.10")
    ap.add_argument("--ctk", required=True)
    ap.add_argument("--ctk-ref", help="default: the commit Slicer's superbuild pins")
    ap.add_argument("--vtk", required=True)
    ap.add_argument("--vtk-ref", help="default: the VTK release Slicer's superbuild builds by default")
    ap.add_argument("--pythonqt", required=True)
    ap.add_argument("--pythonqt-ref", default="HEAD")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    slicer_commit = git(a.slicer, "rev-parse", a.slicer_ref).strip()
    ctk_ref = a.ctk_ref or re.search(r'Slicer_\$\{proj\}_GIT_TAG\s*\n\s*"([0-9a-f]{40})"', git(
        a.slicer, "show", f"{slicer_commit}:SuperBuild/External_CTK.cmake")).group(1)
    pythonqt_commit = git(a.pythonqt, "rev-parse", a.pythonqt_ref).strip()
    vtk_ref = a.vtk_ref or default_vtk_tag(a.slicer, slicer_commit)
    vtk_commit = git(a.vtk, "rev-parse", vtk_ref + "^{commit}").strip()
    vtk = cpp_classes(a.vtk, vtk_commit, ("Common/", "Filters/", "Imaging/", "IO/", "Rendering/", "Interaction/"),
                      ("vtk",))

    slicer_py = read_files(a.slicer, slicer_commit, ["Base/Python/slicer/util.py",
                                                     "Base/Python/slicer/__init__.py"])
    submodules = sorted({PurePosixPath(p).parts[3].split(".")[0] for p in list_files(a.slicer, slicer_commit, "")
                         if p.startswith("Base/Python/slicer/") and len(PurePosixPath(p).parts) >= 4})
    classes = cpp_classes(a.slicer, slicer_commit, ("Libs/", "Base/", "Modules/"), ("vtk", "q"))
    ctk_classes = cpp_classes(a.ctk, ctk_ref, ("Libs/",), ("ctk",))
    usage_paths = list_files(a.slicer, slicer_commit, ".py", ".ui")
    usage = read_files(a.slicer, slicer_commit, usage_paths)
    ctk_ui = [p for p in list_files(a.ctk, ctk_ref, ".ui") if p.startswith("Libs/")]
    usage.update({"ctk:" + p: t for p, t in read_files(a.ctk, ctk_ref, ctk_ui).items()})
    members, signals, ui_props = qt_usage(usage)
    qt_classes, qt_methods = qt_wrappers(a.pythonqt, pythonqt_commit)
    api = {
        "source": {"slicer": {"ref": a.slicer_ref, "commit": slicer_commit},
                   "ctk": {"commit": ctk_ref},
                   "vtk": {"ref": vtk_ref, "commit": vtk_commit},
                   "pythonqt": {"commit": pythonqt_commit, "wrappers": "generated_cpp_515"}},
        "slicer_util": python_defs(slicer_py["Base/Python/slicer/util.py"]),
        "slicer_names": sorted(set(python_defs(slicer_py["Base/Python/slicer/__init__.py"]))
                               | set(submodules) | {"app", "mrmlScene", "modules", "moduleNames"}),
        "slicer_modules": slicer_modules(a.slicer, slicer_commit),
        "classes": classes,
        "ctk_classes": ctk_classes,
        "vtk_classes": sorted(vtk),
        "vtk_names": vtk_module_names(a.vtk, vtk_commit),
        "vtk_methods": sorted({m for info in vtk.values() for m in info["methods"]}),
        "qt_classes": qt_classes,
        "qt_members": sorted(set(qt_methods) | members),
        "qt_signals": sorted(signals),
        "qt_ui_properties": sorted({p for _, p in ui_props}),
    }
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(api, f, indent=0, sort_keys=True)
        f.write("\n")
    print(f"{a.out}: {len(classes)} Slicer classes, {len(ctk_classes)} CTK classes, "
          f"{len(qt_classes)} Qt classes, {len(api['qt_members'])} Qt members; Slicer {slicer_commit[:12]}, "
          f"CTK {ctk_ref[:12]}, VTK {vtk_ref}, PythonQt {pythonqt_commit[:12]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
