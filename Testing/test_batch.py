"""``mskquant batch``: a cohort through the single-case code on a 2-process Dask LocalCluster.

A 6-case knee-t2 manifest of small MESE phantoms and a 4-case vhi manifest of the synthetic
V_HI case, each with one corrupt scan: every good case equals the single-case command's
result (masks bitwise, numbers to 1e-6), the corrupt case fails with the command's own
message, a second run does nothing, a batch killed with SIGKILL resumes to the same
cohort.csv, and a worker killed mid-case still yields every case exactly once. knee-change (over the
batch's own knee-t2 results) and pain-cam (two simulated pairs) cohorts likewise, each with a
failing row.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, write_vhi_case_files

pytest.importorskip("distributed")

from mskquant import batch  # noqa: E402
from mskquant.batch.status import COLUMNS  # noqa: E402

ENV_PATH = os.pathsep.join(str(ROOT / p) for p in ("", "KneeT2Segment", "VHIWorkflow", "SiamesePainCAM"))
KNEE_GOOD = ("k0", "k1", "k2", "k3", "k4")


# --- fixtures -------------------------------------------------------------------------------------
def _write_manifest(path: Path, header, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _single_case(cli_args) -> str:
    """Run the single-case command in-process; '' on success, else its one-line error."""
    import contextlib

    from mskquant.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in cli_args])
    return "" if rc == 0 else err.getvalue().strip().splitlines()[-1].replace("mskquant: error: ", "")


@pytest.fixture(scope="module")
def client():
    """The 2-worker-process LocalCluster of the tests (a spare thread per worker reads ahead)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=2, processes=True, resources={"case": 1},
                           dashboard_address=None)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def knee(tmp_path_factory):
    """5 small knee MESE phantoms (different noise) and a truncated copy; single-case results."""
    from KneeT2SegmentLib.anatomy import analytic_knee, load_anatomy
    from KneeT2SegmentLib.cli import write_phantom
    from KneeT2SegmentLib.simulator import PhantomParameters, simulate
    from mskquant.imageio import write_image

    d = tmp_path_factory.mktemp("knee_batch")
    write_image(analytic_knee(), d / "knee.nii.gz")
    anatomy = load_anatomy(d / "knee.nii.gz", None, 0.0, None)
    rows = []
    for n, case in enumerate(KNEE_GOOD):
        phantom = simulate(anatomy, PhantomParameters(matrix=(160, 112), seed=n).validate())
        (d / case).mkdir()
        write_phantom(phantom, d / case)
        rows.append([case, f"{case}/mese.nii.gz", f"{case}/truth_cartilage.nii.gz", "right" if n == 1 else "",
                     "2" if n == 2 else "", f"subject-{n}"])
    (d / "bad").mkdir()
    data = (d / "k0" / "mese.nii.gz").read_bytes()
    (d / "bad" / "mese.nii.gz").write_bytes(data[: len(data) // 3])  # a truncated copy
    shutil.copy(d / "k0" / "te.json", d / "bad" / "te.json")
    rows.insert(2, ["bad", "bad/mese.nii.gz", "k0/truth_cartilage.nii.gz", "", "", "subject-x"])
    manifest = _write_manifest(d / "cohort.csv", ["case", "mese", "mask", "laterality", "skip_echoes", "subject"],
                               rows)
    errors = {}
    for case, mese, mask, lat, skip, _ in rows:  # the single-case command, same inputs and options
        args = ["knee-t2", "--mese", d / mese, "--mask", d / mask, "--out", d / "ref" / case, "-q"]
        args += ["--laterality", lat] if lat else []
        args += ["--skip-echoes", skip] if skip else []
        errors[case] = _single_case(args)
    assert all(not errors[c] for c in KNEE_GOOD) and errors["bad"], errors
    return {"dir": d, "manifest": manifest, "errors": errors}


@pytest.fixture(scope="module")
def knee_run(knee, client):
    out = knee["dir"] / "batch"
    stream = io.StringIO()
    t0 = time.monotonic()
    result = batch.run("knee-t2", knee["manifest"], out, client=client, stream=stream, quiet=False)
    return {"result": result, "out": out, "text": stream.getvalue(), "seconds": time.monotonic() - t0}


def _status(out: Path):
    with open(out / "status.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# --- comparisons with the single-case command ------------------------------------------------------
def _same_number(a: str, b: str) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return a == b
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return abs(x - y) <= 1e-6 * max(abs(x), abs(y), 1e-12)


def _same_json(a, b, path="") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            if k != "timings_s":  # wall-clock times differ between any two runs
                _same_json(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for n, (x, y) in enumerate(zip(a, b)):
            _same_json(x, y, f"{path}[{n}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert _same_number(str(a), str(b)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def _same_case_folder(got: Path, ref: Path) -> None:
    import SimpleITK as sitk

    from mskquant import render

    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in ref.iterdir())
    for f in ref.iterdir():
        g = got / f.name
        if f.name.endswith((".nii.gz", ".nrrd")):
            a, b = sitk.ReadImage(str(g)), sitk.ReadImage(str(f))
            assert a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin()
            x, y = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
            if x.dtype.kind in "iub":  # masks and label maps: bitwise
                assert x.dtype == y.dtype and np.array_equal(x, y), g
            else:
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=0, equal_nan=True, err_msg=str(g))
        elif f.suffix == ".csv":
            ra, rb = list(csv.reader(open(g))), list(csv.reader(open(f)))
            assert len(ra) == len(rb) and ra[0] == rb[0]
            assert all(_same_number(x, y) for r1, r2 in zip(ra, rb) for x, y in zip(r1, r2)), g
        elif f.suffix == ".json":
            _same_json(json.loads(g.read_text()), json.loads(f.read_text()))
        elif f.suffix == ".png":
            assert np.array_equal(render.read_png(g), render.read_png(f)), g


# --- knee-t2 --------------------------------------------------------------------------------------
def test_knee_cases_equal_the_single_case_command_and_the_corrupt_one_fails_alone(knee, knee_run):
    res, out = knee_run["result"], knee_run["out"]
    assert res.exit_code == 1  # not every case is ok
    status = {r["case"]: r for r in res.status}
    assert list(status) == ["k0", "k1", "bad", "k2", "k3", "k4"] and list(_status(out)[0]) == list(COLUMNS)
    assert all(status[c]["state"] == "ok" and len(status[c]["output_sha256"]) == 64 for c in KNEE_GOOD)
    assert all(len(r["input_sha256"]) == 64 for r in status.values())  # hashed by the workers
    digests = json.loads((out / ".batch" / "digests.json").read_text())
    assert str(knee["dir"] / "k3" / "mese.nii.gz") in digests and str(knee["dir"] / "k3" / "te.json") in digests
    assert status["bad"]["state"] == "failed" and status["bad"]["error"] == knee["errors"]["bad"]
    assert "truncated" in status["bad"]["error"]
    assert sorted(p.name for p in (out / "cases").iterdir()) == sorted(KNEE_GOOD)  # no folder for the failure
    for case in KNEE_GOOD:
        _same_case_folder(out / "cases" / case, knee["dir"] / "ref" / case)
    # the cohort table: the case tables verbatim, manifest columns carried along
    cohort = res.cohort
    assert len(cohort) == 5 * 36 and list(cohort[0])[:6] == ["case", "mese", "mask", "laterality", "skip_echoes",
                                                             "subject"]
    with open(out / "cases" / "k3" / "subregions.csv", newline="") as fh:
        k3 = list(csv.DictReader(fh))
    rows = [r for r in cohort if r["case"] == "k3"]
    assert [{k: r[k] for k in k3[0]} for r in rows] == k3 and rows[0]["subject"] == "subject-3"
    text = knee_run["text"].strip().splitlines()
    assert sum(ln.startswith("[") for ln in text) == 6  # one plain line per case (not a terminal)
    assert "1 case(s) failed" in text[-1] and str(out / "status.csv") in text[-1]
    assert "5 ok, 1 failed" in text[-3]
    from mskquant import render

    assert render.read_png(out / "summary.png").shape[1] >= 900


def test_second_run_does_nothing_and_says_so_then_retry_failed_reruns_only_the_failure(knee, knee_run, client):
    out = knee_run["out"]
    before = (out / "status.csv").read_bytes(), (out / "cohort.csv").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cases").rglob("*")}
    stream = io.StringIO()
    res = batch.run("knee-t2", knee["manifest"], out, client=client, stream=stream, quiet=False)
    assert res.ran == [] and res.exit_code == 1
    assert "nothing to do: all 6 cases are done (5 ok, 1 failed" in stream.getvalue()
    assert ((out / "status.csv").read_bytes(), (out / "cohort.csv").read_bytes()) == before
    assert {p: p.stat().st_mtime_ns for p in (out / "cases").rglob("*")} == stamps
    res = batch.run("knee-t2", knee["manifest"], out, client=client, retry_failed=True)
    assert res.ran == ["bad"] and (out / "cohort.csv").read_bytes() == before[1]


def _batch_process(manifest: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ENV_PATH, "MSKQUANT_DEVICE": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "mskquant.cli", "batch", "knee-t2", "--manifest", str(manifest),
                             "--out", str(out), "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env, start_new_session=True)


def test_batch_killed_with_sigkill_resumes_to_the_same_cohort(knee, knee_run, client, tmp_path):
    from KneeT2SegmentLib.cli import KNEE_T2_OUTPUTS

    out = tmp_path / "killed"
    proc = _batch_process(knee["manifest"], out)
    finished = 0
    try:
        for line in proc.stdout:
            finished += line.startswith("[")
            if finished == 2:
                break
    finally:  # power cut: the batch, its scheduler and its workers at once
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert finished == 2
    for folder in (out / "cases").iterdir():  # a case folder is complete or absent
        if not folder.name.startswith("."):
            assert sorted(p.name for p in folder.iterdir()) == sorted(KNEE_T2_OUTPUTS), folder
    if (out / "status.csv").exists():
        assert all(r["state"] in ("ok", "failed") for r in _status(out))
    res = batch.run("knee-t2", knee["manifest"], out, client=client)
    assert 0 < len(res.ran) <= 4  # the two recorded cases were not redone
    assert (out / "cohort.csv").read_bytes() == (knee_run["out"] / "cohort.csv").read_bytes()
    assert not [p for p in (out / "cases").iterdir() if p.name.startswith(".")]


def test_sigterm_stops_the_batch_with_the_finished_cases_recorded(knee, tmp_path):
    out = tmp_path / "terminated"
    proc = _batch_process(knee["manifest"], out)
    try:
        for line in proc.stdout:
            if line.startswith("[1/"):
                proc.send_signal(signal.SIGTERM)  # Cancel in the panel, or a scheduler's time limit
                break
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    states = {r["case"]: r["state"] for r in _status(out)}
    assert list(states) == ["k0", "k1", "bad", "k2", "k3", "k4"] and "skipped" in states.values()
    done = [c for c, s in states.items() if s == "ok"]
    assert sorted(p.name for p in (out / "cases").iterdir()) == sorted(done)  # no staging folder left
    assert len((out / "cohort.csv").read_text().splitlines()) == 1 + 36 * len(done)


def _executing_cases(dask_worker):
    return [str(ts.key) for ts in dask_worker.state.executing if str(ts.key).startswith("mskquant-case-k")]


def test_worker_killed_mid_case_still_yields_every_case_once(knee, knee_run, client, tmp_path):
    out = tmp_path / "worker_killed"
    box = {}
    runner = threading.Thread(target=lambda: box.update(r=batch.run("knee-t2", knee["manifest"], out, client=client)))
    runner.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and runner.is_alive():
        for worker, keys in client.run(_executing_cases).items():
            if keys:  # this worker is computing a case right now
                killed = (client.run(os.getpid, workers=[worker])[worker], keys[0][len("mskquant-case-"):-9])
                os.kill(killed[0], signal.SIGKILL)
                break
        time.sleep(0.02)
    runner.join(180)
    assert killed is not None and not runner.is_alive()
    res = box["r"]
    status = res.status
    assert [r["case"] for r in status] == ["k0", "k1", "bad", "k2", "k3", "k4"]
    assert [r["state"] for r in status].count("ok") == 5
    journal = [json.loads(ln)["case"] for ln in (out / ".batch" / "journal.jsonl").read_text().splitlines()]
    assert sorted(journal) == sorted(r["case"] for r in status)  # each case recorded once
    assert (out / "cohort.csv").read_bytes() == (knee_run["out"] / "cohort.csv").read_bytes()
    again = next(r for r in status if r["case"] == killed[1])  # the interrupted case, done by another process
    assert again["state"] == "ok" and not again["worker"].endswith(f":{killed[0]}")
    client.wait_for_workers(2, timeout=60)  # the nanny replaced the killed worker


# --- vhi ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vhi(tmp_path_factory):
    d = tmp_path_factory.mktemp("vhi_batch")
    write_vhi_case_files(d / "s1")
    rows = [["v1", "s1/STIR.nii.gz", "s1/ROI.nii.gz", "s1/DR.nii.gz", "4"],
            ["v2", "s1/STIR.nii.gz", "s1/ROI.nii.gz", "s1/DR.nii.gz", "2"],
            ["v3", "s1/STIR.nii.gz", "s1/ROI.nii.gz", "s1/DR.nii.gz", "8"],
            ["v4", "broken/STIR.nii.gz", "s1/ROI.nii.gz", "s1/DR.nii.gz", ""]]
    (d / "broken").mkdir()
    (d / "broken" / "STIR.nii.gz").write_bytes(b"not an image at all")
    manifest = _write_manifest(d / "vhi.csv", ["case", "stir", "normal-roi", "disease_region", "min_island_pixels"],
                               rows)
    errors = {}
    for case, stir, roi, dr, island in rows:
        args = ["vhi", "--stir", d / stir, "--normal-roi", d / roi, "--disease-region", d / dr,
                "--out", d / "ref" / case, "-q"] + (["--min-island-pixels", island] if island else [])
        errors[case] = _single_case(args)
    assert not any(errors[c] for c in ("v1", "v2", "v3")) and errors["v4"]
    return {"dir": d, "manifest": manifest, "errors": errors}


def test_vhi_cohort(vhi, client):
    out = vhi["dir"] / "batch"
    res = batch.run("vhi", vhi["manifest"], out, client=client)
    status = {r["case"]: r for r in res.status}
    assert res.exit_code == 1 and [status[c]["state"] for c in ("v1", "v2", "v3", "v4")] == ["ok"] * 3 + ["failed"]
    assert status["v4"]["error"] == vhi["errors"]["v4"]
    for case in ("v1", "v2", "v3"):
        _same_case_folder(out / "cases" / case, vhi["dir"] / "ref" / case)
    cohort = res.cohort
    assert len(cohort) == 6 and {r["mask"] for r in cohort} == {"sensitive", "conservative"}
    assert cohort[0]["normal-roi"] == "s1/ROI.nii.gz"
    # a changed input file is noticed: only the cases that read it run again
    res = batch.run("vhi", vhi["manifest"], out, client=client)
    assert res.ran == []
    write_vhi_case_files(vhi["dir"] / "broken")  # the scan fixed
    res = batch.run("vhi", vhi["manifest"], out, client=client)
    assert res.ran == ["v4"] and res.exit_code == 0 and len(res.cohort) == 8
    # the same cohort through a running scheduler's address (--scheduler / DASK_SCHEDULER_ADDRESS)
    again = batch.run("vhi", vhi["manifest"], vhi["dir"] / "via_scheduler", scheduler=client.scheduler.address)
    assert again.exit_code == 0 and (again.cohort_csv.read_bytes() == res.cohort_csv.read_bytes())


# --- knee-change and pain-cam ----------------------------------------------------------------------
def test_knee_change_cohort_over_the_knee_t2_cases(knee, knee_run, client):
    """Change between two knee-t2 results per row (the batch's own case folders); a missing one fails alone."""
    d, cases = knee["dir"], knee_run["out"] / "cases"
    rows = [["c01", cases / "k0", cases / "k1"], ["c23", cases / "k2", cases / "k3"],
            ["cxx", cases / "k4", cases / "does-not-exist"]]
    manifest = _write_manifest(d / "change.csv", ["case", "baseline", "followup"], rows)
    errors = {case: _single_case(["knee-change", "--baseline", a, "--followup", b, "--out", d / "ref_change" / case,
                                  "-q"]) for case, a, b in rows}
    assert not errors["c01"] and not errors["c23"] and errors["cxx"], errors
    res = batch.run("knee-change", manifest, d / "batch_change", client=client)
    status = {r["case"]: r for r in res.status}
    assert res.exit_code == 1 and [status[c]["state"] for c in ("c01", "c23", "cxx")] == ["ok", "ok", "failed"]
    assert status["cxx"]["error"] == errors["cxx"]
    for case in ("c01", "c23"):
        _same_case_folder(d / "batch_change" / "cases" / case, d / "ref_change" / case)
    assert {r["case"] for r in res.cohort} == {"c01", "c23"}


def test_pain_cam_cohort(tmp_path, client):
    from mskquant.cli import main

    assert main(["pain-phantom", "--analytic", "--pairs", "2", "--out", str(tmp_path / "pairs"), "-q"]) == 0
    rows = [[f"p{n}", f"pairs/pain_00{n}_left.nii.gz", f"pairs/pain_00{n}_right.nii.gz"] for n in range(2)]
    rows.append(["pbad", "pairs/pain_000_left.nii.gz", "pairs/missing_right.nii.gz"])
    manifest = _write_manifest(tmp_path / "pain.csv", ["case", "left", "right"], rows)
    errors = {case: _single_case(["pain-cam", "--left", tmp_path / l, "--right", tmp_path / r,
                                  "--out", tmp_path / "ref" / case, "-q"]) for case, l, r in rows}
    assert not errors["p0"] and not errors["p1"] and errors["pbad"], errors
    res = batch.run("pain-cam", manifest, tmp_path / "batch", client=client)
    status = {r["case"]: r for r in res.status}
    assert res.exit_code == 1 and [status[c]["state"] for c in ("p0", "p1", "pbad")] == ["ok", "ok", "failed"]
    assert status["pbad"]["error"] == errors["pbad"]
    for case in ("p0", "p1"):
        _same_case_folder(tmp_path / "batch" / "cases" / case, tmp_path / "ref" / case)
    assert (tmp_path / "batch" / "summary.png").is_file() and {r["case"] for r in res.cohort} == {"p0", "p1"}


# --- manifest problems, imports, the panel launcher -----------------------------------------------
def test_manifest_problems_are_one_clear_error(tmp_path):
    from mskquant.errors import InputError

    cases = [("no case column", [["id", "stir"], ["a", "x"]], "no 'case' column"),
             ("duplicate", [["case", "stir"], ["a", "x"], ["a", "y"]], "appears twice"),
             ("unsafe id", [["case", "stir"], ["../a", "x"]], "cannot name a folder"),
             ("empty", [["case", "stir"]], "lists no cases")]
    for name, rows, match in cases:
        m = _write_manifest(tmp_path / f"{name}.csv", rows[0], rows[1:])
        with pytest.raises(InputError, match=match):
            batch.run("vhi", m, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_bad_option_in_a_row_fails_that_case_only(tmp_path, vhi):
    from mskquant.batch.manifest import pipeline_options, read_manifest
    from mskquant.batch.pipelines import pipeline
    from mskquant.batch.runner import argv_problem, subcommand_parser

    m = _write_manifest(tmp_path / "m.csv", ["case", "stir", "min_island_pixels", "group"],
                        [["a", "s.nii.gz", "four", "g1"], ["b", str(vhi["dir"] / "s1" / "STIR.nii.gz"), "2", "g2"]])
    parser, sub = subcommand_parser("vhi")
    man = read_manifest(m, pipeline("vhi"), pipeline_options(sub))
    assert man.passed == ["stir", "min_island_pixels"] and man.carried == ["group"]
    a, b = man.cases
    assert a.argv == ["--stir", str(tmp_path / "s.nii.gz"), "--min-island-pixels", "four"]
    assert "invalid int value: 'four'" in argv_problem(parser, "vhi", a.argv)
    assert "required: --normal-roi" in argv_problem(parser, "vhi", b.argv)  # the command's own complaint
    assert argv_problem(parser, "vhi", b.argv + ["--normal-roi", "r.nii.gz"]) is None


def test_input_hash_covers_content_options_and_sidecars(tmp_path):
    from mskquant.batch.digests import DigestCache, input_hash

    (tmp_path / "mese.nii.gz").write_bytes(b"image")
    (tmp_path / "mese.json").write_text('{"Laterality": "R"}')
    argv, inputs = ["--mese", str(tmp_path / "mese.nii.gz")], [tmp_path / "mese.nii.gz"]
    first = input_hash(argv, inputs)
    (tmp_path / "te.json").write_text("[10, 20, 30]")  # echo times beside the image: part of the input
    second = input_hash(argv, inputs)
    (tmp_path / "mese.json").write_text('{"Laterality": "L"}')
    third = input_hash(argv, inputs)
    assert len({first, second, third, input_hash(argv + ["--skip-echoes=2"], inputs)}) == 4
    cache = DigestCache(tmp_path / "digests.json")  # a rerun re-reads only files whose size or time changed
    assert input_hash(argv, inputs, cache.digest) == third
    cache.save()
    cache = DigestCache(tmp_path / "digests.json")
    cache.entries[str(tmp_path / "mese.nii.gz")][2] = "0" * 64  # a stale digest would show: it is used as is
    assert input_hash(argv, inputs, cache.digest) != third
    (tmp_path / "mese.nii.gz").write_bytes(b"image, edited")
    assert input_hash(argv, inputs, cache.digest) == input_hash(argv, inputs)  # size changed: hashed again
    (tmp_path / "mese.nii.gz").unlink()
    assert input_hash(argv, inputs) != input_hash(argv, [tmp_path / "other.nii.gz"])


def test_a_case_thread_gets_the_workers_torch_threads(monkeypatch):
    import torch

    from mskquant.batch.worker import use_worker_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    seen = []

    def case_thread():  # a Dask task thread starts with one OpenMP thread whatever the environment says
        torch.set_num_threads(1)
        use_worker_threads()
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    t = threading.Thread(target=case_thread)
    t.start()
    t.join()
    torch.set_num_threads(before)
    assert seen == [2]


def test_slicer_modules_and_the_command_line_do_not_import_dask():
    code = ("import sys; import mskquant.cli as c; c.build_parser(); import mskquant.batch, mskquant.batchlauncher; "
            "import KneeT2SegmentLib.cli, VHIWorkflowLib.cli, SiamesePainCAMLib.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ENV_PATH}, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
    for module in ("KneeT2Segment", "VHIWorkflow", "SiamesePainCAM"):  # imports go one way: batch -> modules
        for py in (ROOT / module).rglob("*.py"):
            assert "mskquant.batch " not in py.read_text() and "mskquant.batch." not in py.read_text(), py


def test_terminal_progress_bar():
    from mskquant.batch.report import BatchReporter

    stream = io.StringIO()
    r = BatchReporter(4, stream, tty=True)
    r.case_finished("a", "ok", 1.0)
    r.case_finished("b", "failed", 1.0)
    r.say("closing line")
    text = stream.getvalue()
    assert "\r[" in text and "2/4 done, 1 failed" in text and "cases/h, ETA " in text
    assert "b failed (reason in status.csv)" in text and text.endswith("\nclosing line\n")


def test_progress_lines_round_trip_and_the_panel_process(tmp_path):
    from mskquant.batchlauncher import BatchProcess, batch_command, parse_progress_line, progress_line

    line = progress_line(3, 20, "knee_003", "failed", 4.25, 3, 1, 2571.4, "0:00:07")
    p = parse_progress_line(line)
    assert (p.index, p.total, p.case, p.state, p.done, p.failed, p.eta) == (3, 20, "knee_003", "failed", 3, 1,
                                                                          "0:00:07")
    assert p.seconds == pytest.approx(4.2, abs=0.06) and p.fraction == pytest.approx(0.15)
    assert parse_progress_line(progress_line(1, 1, "a", "ok", 1.0, 1, 0, None, None)).rate_per_hour is None
    assert parse_progress_line("nothing to do: all 6 cases are done") is None
    cmd = batch_command("vhi", "m.csv", "out", workers=2, retry_failed=True, python="py")
    assert cmd == ["py", "-m", "mskquant.cli", "batch", "vhi", "--manifest", "m.csv", "--out", "out", "--workers", "2",
                   "--retry-failed"]
    script = f"print({line!r}, flush=True); import time; time.sleep(60)"
    proc = BatchProcess([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while proc.state().progress is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.state().progress.case == "knee_003" and proc.running
    proc.cancel()  # Cancel: SIGTERM
    assert proc.wait(30) != 0 and proc.state().returncode is not None
