"""``mskquant vhi`` contract on files: outputs, geometry, and every bad input gets one clear
line, exit code 2, and nothing written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import assert_same_geometry, write_vhi_case_files
from mskquant.image import Geometry, Image
from mskquant.imageio import write_image
from VHIWorkflowLib.cli import VHI_OUTPUTS
from VHIWorkflowLib.synthetic import EXPECTED


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "in"
    return write_vhi_case_files(d), d


def vhi_args(d, out, **override):
    args = {"--stir": d / "STIR.nii.gz", "--normal-roi": d / "ROI.nii.gz", "--disease-region": d / "DR.nii.gz",
            "--out": out}
    args.update(override)
    flat = ["vhi", "-q"]
    for k, v in args.items():
        if v is not None:
            flat += [k, v]
    return flat


def test_contract_outputs_and_geometry(cli, files, tmp_path):
    case, d = files
    out = tmp_path / "out"
    rc, stdout, err = cli(*vhi_args(d, out))
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(VHI_OUTPUTS)
    j = json.loads((out / "vhi.json").read_text())
    mm3 = 0.6 * 0.6 * 3.3
    assert j["voxels"] == {"sensitive": 32, "conservative": 6}
    assert j["vhi_ml"]["sensitive"] == pytest.approx(32 * mm3 / 1000)
    assert j["voxel_volume_mm3"] == pytest.approx(mm3)
    assert j["disease_region_source"] == "input"
    for k in ("lower", "upper", "n", "q1", "q3"):
        assert j["thresholds"][k] == pytest.approx(EXPECTED[k])
    for name in ("disease_region.nii.gz", "inflammation.nii.gz"):
        assert_same_geometry(out / name, d / "STIR.nii.gz", origin_atol=1e-5)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "inflammation.nii.gz")))
    assert set(np.unique(lab)) == {0, 1, 2} and (lab == 1).sum() == 26 and (lab == 2).sum() == 6
    dr = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "disease_region.nii.gz")))
    assert set(np.unique(dr)) == {0, 1} and np.array_equal(dr.astype(bool), case.disease_region.array)
    csv_lines = (out / "vhi.csv").read_text().splitlines()
    assert csv_lines[0].startswith("mask,voxels,volume_mm3,volume_ml") and csv_lines[1].startswith("sensitive,32,")
    assert (out / "inflammation.seg.nrrd").stat().st_size > 0


def expect_refusal(cli, args, out, match, existing=None):
    before = None if not out.exists() else sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    rc, stdout, err = cli(*args)
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("mskquant: error:") and match in lines[0], lines
    if before is None:
        assert not out.exists()
    else:
        assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before


def test_missing_file(cli, files, tmp_path):
    _, d = files
    out = tmp_path / "out"
    expect_refusal(cli, vhi_args(d, out, **{"--stir": d / "nope.nii.gz"}), out, "does not exist")


def test_not_3d(cli, files, tmp_path):
    case, d = files
    write_image(Image(np.stack([case.stir.array] * 2), case.stir.geometry), d / "4d.nii.gz")
    out = tmp_path / "out"
    expect_refusal(cli, vhi_args(d, out, **{"--stir": d / "4d.nii.gz"}), out, "4D")
    sitk.WriteImage(sitk.Image(10, 10, sitk.sitkFloat32), str(d / "2d.nii.gz"))
    expect_refusal(cli, vhi_args(d, out, **{"--normal-roi": d / "2d.nii.gz"}), out, "2D")


def test_t1_and_stir_that_do_not_overlap(cli, files, tmp_path, sij_model_dir, monkeypatch):
    monkeypatch.setenv("MSKQUANT_MODEL_DIR", str(sij_model_dir))
    case, d = files
    g = case.t1.geometry
    far = Geometry(g.shape_ijk, g.ijk_to_ras + np.array([[0, 0, 0, 900.0]] + [[0, 0, 0, 0]] * 3))
    write_image(Image(case.t1.array, far), d / "T1far.nii.gz")
    out = tmp_path / "out"
    expect_refusal(cli, vhi_args(d, out, **{"--t1": d / "T1far.nii.gz", "--disease-region": None}), out,
                   "do not overlap")


def test_roi_problems(cli, files, tmp_path):
    case, d = files
    g = case.stir.geometry
    out = tmp_path / "out"
    write_image(Image(np.zeros(g.shape_kji, np.uint8), g), d / "empty.nii.gz")
    expect_refusal(cli, vhi_args(d, out, **{"--normal-roi": d / "empty.nii.gz"}), out, "empty")
    few = np.zeros(g.shape_kji, np.uint8)
    few[1, 3, 3:9] = 1
    write_image(Image(few, g), d / "few.nii.gz")
    expect_refusal(cli, vhi_args(d, out, **{"--normal-roi": d / "few.nii.gz"}), out, "at least 10")
    far = Geometry(g.shape_ijk, g.ijk_to_ras + np.array([[0, 0, 0, 900.0]] + [[0, 0, 0, 0]] * 3))
    write_image(Image(case.normal_roi.array.astype(np.uint8), far), d / "far.nii.gz")
    expect_refusal(cli, vhi_args(d, out, **{"--normal-roi": d / "far.nii.gz"}), out, "outside the STIR field")
    flat = case.stir.array.copy()
    flat[case.normal_roi.array] = 42.0
    write_image(Image(flat, g), d / "flat.nii.gz")
    expect_refusal(cli, vhi_args(d, out, **{"--stir": d / "flat.nii.gz"}), out, "IQR = 0")
    nan = case.stir.array.copy()
    nan[3, 20, 20] = np.nan
    write_image(Image(nan, g), d / "nan.nii.gz")
    expect_refusal(cli, vhi_args(d, out, **{"--stir": d / "nan.nii.gz"}), out, "NaN")


def test_bad_weights(cli, files, tmp_path, sij_model_dir, monkeypatch):
    import torch
    from mskquant.unet import UNet2D

    _, d = files
    out = tmp_path / "out"
    models = tmp_path / "models"
    shutil.copytree(sij_model_dir, models)
    monkeypatch.setenv("MSKQUANT_MODEL_DIR", str(models))
    monkeypatch.setenv("MSKQUANT_OFFLINE", "1")
    noDR = {"--t1": d / "T1W.nii.gz", "--disease-region": None}
    raw = bytearray((models / "model_3.pt").read_bytes())
    raw[-100] ^= 0x55
    (models / "model_3.pt").write_bytes(bytes(raw))
    expect_refusal(cli, vhi_args(d, out, **noDR), out, "corrupt")
    # weights of another architecture registered as a compatible model
    torch.save(UNet2D(1, 1, (8, 16, 32, 64)).state_dict(), tmp_path / "other.pt")
    rc, _, err = cli("models", "add", tmp_path / "other.pt", "--id", "wrong-arch", "--like", "sij-disease-region")
    assert rc == 0, err
    expect_refusal(cli, vhi_args(d, out, **noDR, **{"--model": "wrong-arch"}), out, "do not fit")


def test_output_folder_checks(cli, files, tmp_path):
    _, d = files
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "results"
    rc, _, err = cli(*vhi_args(d, out))
    assert rc == 2 and "is a file" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "out"
    rc, _, err = cli(*vhi_args(d, out))
    assert rc == 0
    expect_refusal(cli, vhi_args(d, out), out, "--overwrite")
    rc, _, err = cli(*vhi_args(d, out), "--overwrite")
    assert rc == 0 and sorted(p.name for p in out.iterdir()) == sorted(VHI_OUTPUTS)


def test_compare_and_agreement_commands(cli, files, tmp_path):
    case, d = files
    g = case.stir.geometry
    a = np.zeros(g.shape_kji, np.uint8)
    b = np.zeros(g.shape_kji, np.uint8)
    a[2, 10:20, 10:20] = 1  # 100 voxels
    b[2, 10:20, 15:25] = 1  # 100 voxels, 50 shared
    write_image(Image(a, g), d / "A.nii.gz")
    write_image(Image(b, g), d / "B.nii.gz")
    rc, out, err = cli("vhi-compare", "--a", d / "A.nii.gz", "--b", d / "B.nii.gz", "--out", tmp_path / "cmp")
    assert rc == 0, err
    j = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert j["dice"] == pytest.approx(0.5) and j["volume_similarity"] == 1.0 and j["voxels_a"] == 100
    assert "Dice 0.5000" in out
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("subject,a,b\ns1,1.0,1.5\ns2,2.0,2.0\ns3,3.0,3.5\ns4," + f"{d / 'A.nii.gz'},{d / 'B.nii.gz'}\n")
    rc, out, err = cli("vhi-agreement", "--pairs", pairs, "--out", tmp_path / "ba", "-q")
    assert rc == 0, err
    j = json.loads((tmp_path / "ba" / "agreement.json").read_text())
    diffs = np.array([0.5, 0.0, 0.5, 0.0])
    assert j["n"] == 4 and j["mean_difference_ml"] == pytest.approx(diffs.mean())
    assert j["upper_limit_ml"] == pytest.approx(diffs.mean() + 1.96 * diffs.std(ddof=1))
    assert (tmp_path / "ba" / "bland_altman.png").stat().st_size > 1000
