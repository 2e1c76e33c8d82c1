"""Issue 9 item 3 and the SIGKILL cases, with real processes: one run per output folder
(a second gets "in use by process N", exit 2, nothing written), the kernel drops the lock of
a killed run, and a run killed at any moment leaves complete results or none."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, write_vhi_case_files
from mskquant.atomic import STAGING_PREFIX
from VHIWorkflowLib.cli import VHI_OUTPUTS

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("", "VHIWorkflow", "KneeT2Segment",
                                                                            "SiamesePainCAM")),
       "MSKQUANT_DEVICE": "cpu"}


def _mskquant(*args):
    return [sys.executable, "-m", "mskquant.cli", *map(str, args)]


@pytest.fixture
def case_files(tmp_path):
    write_vhi_case_files(tmp_path / "in")
    return tmp_path / "in"


def _vhi(d, out):
    return _mskquant("vhi", "-q", "--stir", d / "STIR.nii.gz", "--normal-roi", d / "ROI.nii.gz",
                     "--disease-region", d / "DR.nii.gz", "--out", out)


def test_second_run_is_told_the_folder_is_in_use_and_a_killed_holder_frees_it(tmp_path, case_files):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom mskquant.atomic import OutputFolder\n"
                               f"o = OutputFolder({str(out)!r}, ['vhi.json'])\nprint('locked', flush=True)\n"
                               "time.sleep(120)"], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = subprocess.run(_vhi(case_files, out), capture_output=True, text=True, env=ENV, timeout=300)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, r.stderr
        assert lines == [f"mskquant: error: Output folder {out} is in use by process {holder.pid} (another mskquant "
                         f"run is writing there): wait for it to finish, or choose another output folder."], lines
        assert not out.exists()  # nothing written by the refused run (nor by the holder, still checking)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    r = subprocess.run(_vhi(case_files, out), capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr  # the kernel dropped the killed holder's lock
    assert sorted(p.name for p in out.iterdir()) == sorted(VHI_OUTPUTS)


def test_two_runs_started_together_never_both_succeed(tmp_path, case_files):
    out = tmp_path / "out"
    runs = [subprocess.Popen(_vhi(case_files, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=ENV) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    refusal = next(err for rc, err in results if rc == 2).strip().splitlines()
    # told at once ("in use") or, if the first had already finished, that the folder holds its results
    assert len(refusal) == 1 and ("is in use by process" in refusal[0] or "already holds results" in refusal[0])
    assert sorted(p.name for p in out.iterdir()) == sorted(VHI_OUTPUTS)


def test_sigkill_at_random_moments_leaves_all_results_or_none(tmp_path, case_files):
    rng = random.Random(9)
    # one untimed run: how long a whole run takes here
    t0 = time.monotonic()
    assert subprocess.run(_vhi(case_files, tmp_path / "timing"), capture_output=True, env=ENV).returncode == 0
    whole = time.monotonic() - t0
    earlier = tmp_path / "earlier"  # a folder with earlier results, rewritten with --overwrite
    assert subprocess.run(_vhi(case_files, earlier), capture_output=True, env=ENV).returncode == 0
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    for n in range(3):
        out = tmp_path / f"killed{n}"
        p = subprocess.Popen(_vhi(case_files, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        time.sleep(rng.uniform(0.3, 1.0) * whole)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if out.exists():
            names = sorted(q.name for q in out.iterdir() if not q.name.startswith(STAGING_PREFIX))
            assert names in ([], sorted(VHI_OUTPUTS)), names  # no partial set of results
            # a staging folder left by a kill while writing is removed by the next run on the folder
            r = subprocess.run(_vhi(case_files, out) + ["--overwrite"], capture_output=True, env=ENV)
            assert r.returncode == 0 and sorted(q.name for q in out.iterdir()) == sorted(VHI_OUTPUTS), r.stderr
        q = subprocess.Popen(_vhi(case_files, earlier) + ["--overwrite"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=ENV)
        time.sleep(rng.uniform(0.3, 1.0) * whole)
        q.send_signal(signal.SIGKILL)
        q.wait()
        # the earlier results stay whole; a kill after the run made its hidden staging folder leaves that
        # folder behind (the next run on the folder removes it, checked above)
        names = sorted(x.name for x in earlier.iterdir() if not x.name.startswith(STAGING_PREFIX))
        assert names == sorted(VHI_OUTPUTS), names
        for name, data in before.items():  # vhi.json holds timings; the .seg.nrrd header a random segment id
            if name.endswith((".csv", ".nii.gz")):
                assert (earlier / name).read_bytes() == data, name
        assert json.loads((earlier / "vhi.json").read_text())["voxels"] == {"sensitive": 32, "conservative": 6}
