"""MSKQuant Review without a browser: case discovery, the access rules, the edit log, and a V_HI
review session on the synthetic case (reopen, clean, redraw the ROI, save per reader, two readers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_knee_t2_case, write_vhi_case_files


@pytest.fixture
def vhi_case(tmp_path) -> Path:
    from mskquant.cli import main

    inputs = tmp_path / "inputs"
    write_vhi_case_files(inputs)
    out = tmp_path / "case"
    assert main(["vhi", "--stir", str(inputs / "STIR.nii.gz"), "--normal-roi", str(inputs / "ROI.nii.gz"),
                 "--disease-region", str(inputs / "DR.nii.gz"), "--out", str(out), "-q"]) == 0
    return out


def test_confined_paths(tmp_path):
    from mskquant.review.security import confined

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("x")
    (tmp_path / "secret.txt").write_text("s")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "secret.txt")
    root = tmp_path / "a"
    assert confined(root, "f.txt") == (root / "f.txt").resolve()
    for bad in ("../secret.txt", str(tmp_path / "secret.txt"), "link", "", "missing", "f.txt\x00", "."):
        assert confined(root, bad) is None, bad


def test_access_policy_token_only_off_loopback():
    from mskquant.review.security import AccessPolicy, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    local = AccessPolicy(Path("."), "127.0.0.1")
    assert not local.needs_token and local.allowed(None, None)
    remote = AccessPolicy(Path("."), "0.0.0.0")
    assert remote.needs_token and len(remote.token) >= 24
    assert not remote.allowed(None, None) and not remote.allowed("x", "y")
    assert remote.allowed(remote.token, None) and remote.allowed(None, remote.token)
    assert AccessPolicy(Path("."), "0.0.0.0").token != remote.token


def test_reader_names_are_folder_safe():
    from mskquant.errors import InputError
    from mskquant.review.cases import check_reader

    assert check_reader("A") == "A" and check_reader("j.smith-2") == "j.smith-2"
    for bad in ("", "..", "../B", "a/b", ".hidden", "x" * 41, "a b"):
        with pytest.raises(InputError):
            check_reader(bad)


def test_slice_changes_count_added_and_removed():
    from mskquant.review.edits import slice_changes

    base = np.zeros((3, 4, 4), bool)
    base[1, :2, :2] = True
    cur = base.copy()
    cur[1, 0, 0] = False
    cur[2, 3, 3] = True
    assert slice_changes(cur, base, 0) == [{"slice": 1, "added": 0, "removed": 1}, {"slice": 2, "added": 1, "removed": 0}]
    assert slice_changes(base, base, 0) == []


def test_find_cases_single_and_batch(vhi_case, tmp_path):
    import shutil

    from mskquant.errors import InputError
    from mskquant.review.cases import find_cases, first_unreviewed

    [c] = find_cases(vhi_case)
    assert c.kind == "vhi" and c.id == "." and c.main_measure().startswith("V_HI sensitive")
    batch = tmp_path / "batch"
    for name in ("s2", "s1"):
        shutil.copytree(vhi_case, batch / "cases" / name)
    cases = find_cases(batch)
    assert [x.id for x in cases] == ["cases/s1", "cases/s2"]
    (cases[0].reader_dir("A")).mkdir(parents=True)
    (cases[0].reader_dir("A") / "vhi.json").write_text("{}")
    assert cases[0].reviewed_by("A") and not cases[1].reviewed_by("A") and first_unreviewed(cases, "A") == 1
    with pytest.raises(InputError):
        find_cases(tmp_path / "inputs")


def _session(rt, case_folder, reader, **kw):
    from mskquant.review.cases import find_cases
    from mskquant.review.vhi_session import VHIReviewSession

    return VHIReviewSession(rt, find_cases(case_folder)[0], reader, **kw)


def test_vhi_session_clean_save_reopen(runtime, vhi_case):
    from mskquant import mrml
    from mskquant.imageio import read_image
    from VHIWorkflowLib.logic import SEGMENT_STYLE

    summary = json.loads((vhi_case / "vhi.json").read_text())
    s = _session(runtime, vhi_case, "A")
    assert s.figures()["sensitive_voxels"] == summary["voxels"]["sensitive"] and not s.figures()["edited"]
    sens = s.masks()["Inflammation (sensitive)"]
    k = int(np.argmax(sens.reshape(sens.shape[0], -1).sum(axis=1)))
    cleaned = sens.copy()
    cleaned[k] = False  # the reader erases one slice's lesions
    mrml.set_segment(s.segmentation, mrml.SegmentSpec("Inflammation (sensitive)", cleaned,
                                                      *SEGMENT_STYLE["Inflammation (sensitive)"]), s.geometry)
    assert s.on_segmentation_modified()
    f = s.figures()
    assert f["sensitive_voxels"] == int(cleaned.sum()) and f["edited"]
    # The nesting rule: the conservative mask left the erased voxels too.
    assert not (s.masks()["Inflammation (conservative)"] & ~cleaned).any()
    assert s.autosave() is not None and s.autosave_pending(s.case, "A")
    folder = s.save()
    assert folder == vhi_case / "readers" / "A" and not s.autosave_pending(s.case, "A")
    saved = read_image(folder / "inflammation.nii.gz").array
    assert int((saved >= 1).sum()) == f["sensitive_voxels"]
    edits = json.loads((folder / "edits.json").read_text())
    assert edits["segments"]["Inflammation (sensitive)"]["removed"] == int(sens.sum() - cleaned.sum())
    assert [c["slice"] for c in edits["segments"]["Inflammation (sensitive)"]["slices"]] == [k]
    assert s.case.reviewed_by("A") and not s.case.reviewed_by("B")
    # The case's own result is not touched; reader B starts from it, reader A from the saved state.
    assert json.loads((vhi_case / "vhi.json").read_text()) == summary
    runtime.clear()
    assert _session(runtime, vhi_case, "A").figures()["sensitive_voxels"] == f["sensitive_voxels"]
    runtime.clear()
    b = _session(runtime, vhi_case, "B")
    assert b.figures()["sensitive_voxels"] == summary["voxels"]["sensitive"]
    assert b.reader_comparison() is None
    b.save()
    cmp_ = b.reader_comparison()
    assert cmp_["a"] == "A" and cmp_["b"] == "B" and 0 < cmp_["dice"] < 1


def test_vhi_session_roi_redrawn_recomputes_thresholds(runtime, vhi_case):
    from mskquant import mrml
    from VHIWorkflowLib.inflammation import segment_inflammation
    from VHIWorkflowLib.logic import SEGMENT_STYLE
    from VHIWorkflowLib.thresholds import thresholds_from_normal_bone

    s = _session(runtime, vhi_case, "A")
    before = s.figures()
    roi = s.masks()["Normal bone"]
    i_cut = int(np.median(np.argwhere(roi)[:, 2]))
    smaller = roi.copy()
    smaller[:, :, i_cut:] = False  # the reader removes half of the ROI
    mrml.set_segment(s.segmentation, mrml.SegmentSpec("Normal bone", smaller, *SEGMENT_STYLE["Normal bone"]),
                     s.geometry)
    assert s.on_segmentation_modified()
    stir = s.logic.stir_image(s.result.stir)
    expected = thresholds_from_normal_bone(stir.array[smaller])
    masks = segment_inflammation(stir.array, s.masks()["Disease region"], expected, s.geometry)
    f = s.figures()
    assert f["roi_voxels"] == int(smaller.sum()) < before["roi_voxels"]
    assert f["lower"] == round(expected.lower, 2) and f["upper"] == round(expected.upper, 2)
    assert f["sensitive_voxels"] == int(masks.sensitive.sum())
    s.restore_automatic()
    assert s.figures() == before


def test_review_help_is_fast_and_lazy():
    import subprocess
    import sys

    code = ("import sys; from mskquant.cli import build_parser; build_parser(); "
            "print(any(m.startswith(('trame', 'slicer', 'vtk')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


_SAVER = """
import sys, time
from mskquant import mrml
from mskquant.headless import create_headless_runtime
from mskquant.review.cases import find_cases
from mskquant.review.vhi_session import VHIReviewSession
from mskquant.errors import MSKQuantError
from VHIWorkflowLib.logic import SEGMENT_STYLE
s = VHIReviewSession(create_headless_runtime(), find_cases(sys.argv[1])[0], "A")
name = "Inflammation (sensitive)"
m = s.masks()[name]
m[int(sys.argv[2])] = False
mrml.set_segment(s.segmentation, mrml.SegmentSpec(name, m, *SEGMENT_STYLE[name]), s.geometry)
s.on_segmentation_modified()
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
try:
    s.save()
    print("saved", s.figures()["sensitive_voxels"])
except MSKQuantError as exc:
    print("refused", exc)
"""


def test_two_tabs_saving_at_once_leave_one_whole_state(vhi_case):
    """Two review processes of one reader save the same case at the same moment: the reader's folder holds
    one of the two states, whole (mask, vhi.json and edits.json agree), never a mix."""
    import os
    import subprocess
    import sys
    import time

    from mskquant.imageio import read_image

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(root / p) for p in ("", "VHIWorkflow"))}
    auto = read_image(vhi_case / "inflammation.nii.gz").array >= 1
    slices = [int(k) for k in np.flatnonzero(auto.reshape(auto.shape[0], -1).any(axis=1))[:2]]
    at = time.time() + 6
    procs = [subprocess.Popen([sys.executable, "-c", _SAVER, str(vhi_case), str(k), str(at)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for k in slices]
    outs = [p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs]
    assert any(o.startswith("saved") for o in outs), outs
    saved = vhi_case / "readers" / "A"
    mask = read_image(saved / "inflammation.nii.gz").array >= 1
    summary = json.loads((saved / "vhi.json").read_text())
    edits = json.loads((saved / "edits.json").read_text())
    assert summary["voxels"]["sensitive"] == int(mask.sum())
    changed = [c["slice"] for c in edits["segments"]["Inflammation (sensitive)"]["slices"]]
    assert len(changed) == 1 and changed[0] in slices
    assert not mask[changed[0]].any() and mask[[k for k in slices if k != changed[0]][0]].any()
    assert not any(p.name.startswith(".mskquant-staging") for p in saved.iterdir())


@pytest.fixture
def knee_case(tmp_path) -> Path:
    return write_knee_t2_case(tmp_path)


def test_knee_session_unsaved_edit_is_autosaved_restored_and_cleared_by_save(runtime, knee_case):
    from mskquant import mrml
    from mskquant.review.cases import find_cases
    from mskquant.review.knee_session import KneeReviewSession

    case = find_cases(knee_case)[0]
    s = KneeReviewSession(runtime, case, "A")
    assert s.autosave() is None  # nothing edited: nothing written
    cart = s.cartilage_mask()
    k = int(np.argmax(cart.reshape(cart.shape[0], -1).sum(axis=1)))
    edited = cart.copy()
    edited[k] = False  # the reader erases the cartilage of one slice
    seg = s.reopened.cartilage.GetSegmentation()
    color = tuple(seg.GetSegment(seg.GetSegmentIdBySegmentName(s.segment)).GetColor())
    mrml.set_segment(s.reopened.cartilage, mrml.SegmentSpec(s.segment, edited, color), s.geometry)
    s.dirty = True  # what the panel's segmentation-modified signal sets
    folder = s.autosave()
    assert folder == knee_case / "readers" / "A" / "autosave" and KneeReviewSession.autosave_pending(case, "A")
    assert not (knee_case / "readers" / "A" / "knee_t2.json").exists()  # an autosave is not a save
    # the tab is closed; the next start offers the autosave and restores the edited mask with its log
    runtime.clear()
    again = KneeReviewSession(runtime, case, "A", restore_autosave=True)
    np.testing.assert_array_equal(again.cartilage_mask(), edited)
    assert again.dirty and again.figures()["cartilage_voxels"] == int(edited.sum())
    saved = again.save()
    assert not KneeReviewSession.autosave_pending(case, "A")  # saving clears the autosave
    log = json.loads((saved / "edits.json").read_text())
    assert log["segments"][s.segment]["removed"] == int(cart.sum() - edited.sum())
    runtime.clear()
    fresh = KneeReviewSession(runtime, case, "B", restore_autosave=True)  # another reader: the case's own result
    np.testing.assert_array_equal(fresh.cartilage_mask(), cart)
