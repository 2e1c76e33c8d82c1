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


CASE_PROBE = r"""
import contextlib, io, json, sys
from pathlib import Path
from conftest import write_vhi_case_files
from mskquant.cli import main
from mskquant.imageio import write_image
from KneeT2SegmentLib.anatomy import analytic_knee

work = Path(sys.argv[1])
write_vhi_case_files(work / "sij")
write_image(analytic_knee(), work / "knee.nii.gz")
assert main(["knee-phantom", "-q", "--labelmap", str(work / "knee.nii.gz"), "--out", str(work / "ph")]) == 0
assert "torch" not in sys.modules, "making the inputs loaded torch"
seen = {}
for name, argv in (("knee-t2", ["knee-t2", "-q", "--mese", str(work / "ph" / "mese.nii.gz"), "--mask",
                                 str(work / "ph" / "truth_cartilage.nii.gz"), "--out", str(work / "kt")]),
                   ("vhi", ["vhi", "-q", "--stir", str(work / "sij" / "STIR.nii.gz"), "--normal-roi",
                            str(work / "sij" / "ROI.nii.gz"), "--disease-region", str(work / "sij" / "DR.nii.gz"),
                            "--out", str(work / "vhi")])):
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    seen[name] = {"rc": rc, "torch": "torch" in sys.modules}
print(json.dumps(seen))
"""


def test_single_cases_without_a_network_do_not_load_torch(tmp_path):
    """``knee-t2`` with a given mask (the T2 fit is numpy) and ``vhi`` with a given disease region
    need no network, so they do not pay for importing torch (~1.3 s per process)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("", "VHIWorkflow", "KneeT2Segment",
                                                                             "SiamesePainCAM", "Testing"))}
    r = subprocess.run([sys.executable, "-c", CASE_PROBE, str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["knee-t2"] == {"rc": 0, "torch": False}, seen
    assert seen["vhi"] == {"rc": 0, "torch": False}, seen
    assert (tmp_path / "kt" / "knee_t2.json").is_file() and (tmp_path / "vhi").is_dir()


def test_the_fit_threads_follow_omp_num_threads(monkeypatch):
    """Without torch loaded the T2 fit's chunk threads come from OMP_NUM_THREADS (a batch worker's
    setting), else the usable cores."""
    code = ("import sys, json\nfrom KneeT2SegmentLib.t2fit import default_workers\n"
            "print(json.dumps([default_workers(), 'torch' in sys.modules]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("", "KneeT2Segment"))}
    cores = len(os.sched_getaffinity(0))
    for omp, expected in (("3", 3), ("", cores), ("two", cores), ("-2", cores)):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**env, "OMP_NUM_THREADS": omp})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.strip().splitlines()[-1]) == [expected, False]
