"""Issue 9 item 4: the commands that only talk (``--help``, ``info``, ``models list``) load none of
the heavy libraries; the timing itself is measured by ``benchmarks/bench_startup.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

HEAVY = ("torch", "slicer", "slicer_core", "vtk", "vtkmodules", "scipy", "SimpleITK")

PROBE = r"""
import contextlib, io, json, sys
from mskquant.cli import main
loaded = {}
for argv in (["--help"], ["info"], ["models", "list"], ["vhi", "--help"], ["knee-t2", "--help"], ["pain-cam", "--help"]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
    loaded[" ".join(argv)] = {"rc": rc, "heavy": heavy, "chars": len(out.getvalue())}
print(json.dumps(loaded))
"""


def test_help_info_and_models_list_load_no_heavy_library():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("", "VHIWorkflow", "KneeT2Segment",
                                                                             "SiamesePainCAM"))}
    r = subprocess.run([sys.executable, "-c", PROBE, *HEAVY], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout.strip().splitlines()[-1])
    for command, seen in loaded.items():
        assert seen["rc"] == 0 and seen["chars"] > 100, (command, seen)  # it answered
        assert seen["heavy"] == [], f"'mskquant {command}' imported {seen['heavy']}"


def test_the_probe_sees_a_heavy_import():
    """The check above can fail: a command that needs torch is seen loading it."""
    code = "import sys, json\nimport mskquant.device as d\nd.select_device('cpu')\n" \
           "print(json.dumps('torch' in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1]) is True, r.stderr
