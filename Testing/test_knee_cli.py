"""The knee-phantom / knee-t2 / knee-change commands: contract files, and one clear error per bad input.

Runs on the analytic knee (no ../shared needed). Every bad input must exit with code 2, print
one line on stderr and write nothing.
"""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mskquant import render
from mskquant.image import Geometry, Image
from mskquant.imageio import read_image, write_image

from KneeT2SegmentLib.anatomy import analytic_knee
from KneeT2SegmentLib.subregions import CSV_COLUMNS

from conftest import ROOT, run_console

TE = "10,20,30,40,50,60,70"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """knee-phantom (with a follow-up of the same anatomy), knee-t2 on both, knee-change."""
    from mskquant.cli import main

    d = tmp_path_factory.mktemp("knee_cli")
    write_image(analytic_knee(), d / "knee.nii.gz")
    assert main(["knee-phantom", "--labelmap", str(d / "knee.nii.gz"), "--followup", str(d / "knee.nii.gz"),
                 "--out", str(d / "phantom"), "--snr", "40", "-q"]) == 0
    assert main(["knee-t2", "--mese", str(d / "phantom" / "mese.nii.gz"), "--mask",
                 str(d / "phantom" / "truth_cartilage.nii.gz"), "--out", str(d / "t0"), "-q"]) == 0
    assert main(["knee-t2", "--mese", str(d / "phantom" / "followup"), "--te", TE, "--mask",
                 str(d / "phantom" / "followup" / "truth_cartilage.nii.gz"), "--out", str(d / "t1"), "-q"]) == 0
    return d


def nifti_values(path: Path) -> np.ndarray:
    """Voxel values of a float32 NIfTI-1 file as stored, ``[k, j, i]``.

    ITK's NIfTI reader (SimpleITK, Slicer; before ITK 6) replaces NaN by 0 when reading
    (InsightSoftwareConsortium/ITK#6575), so the NaN the contract asks for are checked on the bytes.
    """
    import gzip
    import struct

    raw = gzip.open(path).read() if str(path).endswith(".gz") else Path(path).read_bytes()
    dims = struct.unpack("<8h", raw[40:56])
    datatype, offset = struct.unpack("<h", raw[70:72])[0], int(struct.unpack("<f", raw[108:112])[0])
    assert datatype == 16, "float32 expected"
    shape = dims[1:1 + dims[0]]
    return np.frombuffer(raw[offset:], "<f4", int(np.prod(shape))).reshape(shape[::-1])


def fails_cleanly(cli, out: Path, *args, match: str):
    rc, stdout, stderr = cli(*args, "-q")  # no progress lines: stderr holds only the error
    lines = stderr.strip().splitlines()
    assert rc == 2, (rc, stderr)
    assert len(lines) == 1 and lines[0].startswith("mskquant: error:"), stderr
    assert match in lines[0], lines[0]
    assert not out.exists(), f"{out} was written"
    return lines[0]


def test_phantom_contract(runs):
    import SimpleITK as sitk

    ph = runs / "phantom"
    for folder in (ph, ph / "followup"):
        img = sitk.ReadImage(str(folder / "mese.nii.gz"))
        assert img.GetDimension() == 4 and img.GetSize()[3] == 7  # echoes as the 4th dimension
        assert json.loads((folder / "te.json").read_text()) == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
        mese = read_image(folder / "mese.nii.gz")
        for name in ("truth_t2.nii.gz", "truth_cartilage.nii.gz"):
            truth = read_image(folder / name)
            assert truth.geometry.same_grid(mese.geometry) and not truth.is_series
        cart = read_image(folder / "truth_cartilage.nii.gz").array
        t2 = read_image(folder / "truth_t2.nii.gz").array
        assert set(np.unique(cart)) == {0, 1} and np.isfinite(t2[cart == 1]).all()
    truth = json.loads((ph / "followup" / "truth.json").read_text())
    assert truth["follow_up"] and len(truth["lesions"]) == 1 and len(truth["delta_t2_ms"]) == 12


def test_knee_t2_contract(runs):
    out = runs / "t0"
    mese = read_image(runs / "phantom" / "mese.nii.gz")
    mask = read_image(runs / "phantom" / "truth_cartilage.nii.gz").array != 0
    t2 = read_image(out / "t2.nii.gz")
    assert t2.geometry.same_grid(mese.geometry)
    t2 = Image(nifti_values(out / "t2.nii.gz"), t2.geometry)
    assert np.isnan(t2.array[~mask]).all()
    valid = t2.array[np.isfinite(t2.array)]
    assert valid.size > 0.95 * mask.sum() and valid.min() >= 0 and valid.max() <= 100
    sub = read_image(out / "subregions.nii.gz")
    assert sub.geometry.same_grid(mese.geometry)
    assert set(np.unique(sub.array)) == set(range(13))
    np.testing.assert_array_equal(sub.array > 0, np.isfinite(t2.array))
    with open(out / "subregions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 36
    assert {r["layer"] for r in rows} == {"deep", "superficial", "all"}
    assert {r["side"] for r in rows} == {"medial", "lateral", "all"}
    assert {r["zone"] for r in rows} == {"anterior", "central", "posterior", "all"}
    everything = rows[0]
    assert everything["region"] == "All" and int(everything["n_voxels"]) == valid.size
    assert float(everything["mean_t2_ms"]) == pytest.approx(float(valid.mean()), abs=1e-3)
    truth = read_image(runs / "phantom" / "truth_t2_noise_free.nii.gz").array
    assert float(everything["mean_t2_ms"]) == pytest.approx(float(np.nanmean(truth[np.isfinite(t2.array)])), abs=0.3)
    png = render.read_png(out / "projection.png")
    assert png.shape[0] > 200 and png.shape[1] > 300
    summary = json.loads((out / "knee_t2.json").read_text())
    assert summary["laterality"] == "right" and "sidecar" in summary["laterality_source"]
    assert summary["source"].endswith("mese.nii.gz")  # the input file, not an intermediate scene node


def test_knee_change_contract_and_console_script(runs, tmp_path):
    env = {"PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("", "KneeT2Segment", "VHIWorkflow",
                                                                 "SiamesePainCAM"))}
    proc = run_console("knee-change", "--baseline", runs / "t0", "--followup", runs / "t1", "--out", tmp_path / "c",
                       env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    clusters = json.loads((tmp_path / "c" / "clusters.json").read_text())
    assert isinstance(clusters["n_clusters"], int) and clusters["n_clusters"] >= 1
    assert isinstance(clusters["percent_area"], float) and 1.0 < clusters["percent_area"] < 30.0
    with open(tmp_path / "c" / "change.csv", newline="") as fh:
        rows = {r["region"]: r for r in csv.DictReader(fh)}
    assert len(rows) == 36 and float(rows["All"]["delta_t2_ms"]) > 0.5  # prescribed changes are all >= 0
    assert render.read_png(tmp_path / "c" / "change.png").shape[1] > 300
    assert "focal cluster" in proc.stdout


def test_bad_mese_inputs(runs, tmp_path, cli):
    ph = runs / "phantom"
    mask = ph / "truth_cartilage.nii.gz"
    out = tmp_path / "out"
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "truth_t2.nii.gz", "--te", TE, "--mask", mask, "--out", out,
                  match="3D volume without echoes")
    mese = read_image(ph / "mese.nii.gz")
    write_image(Image(mese.array[:3], mese.geometry), tmp_path / "three.nii.gz")
    fails_cleanly(cli, out, "knee-t2", "--mese", tmp_path / "three.nii.gz", "--te", "10,20,30", "--mask", mask,
                  "--out", out, match="usable echo")
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "mese.nii.gz", "--te", "10,10,20,30,40,50,60", "--mask", mask,
                  "--out", out, match="appears more than once")
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "mese.nii.gz", "--te", "70,60,50,40,30,20,10", "--mask", mask,
                  "--out", out, match="not increasing")
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "mese.nii.gz", "--te", "10,20,30", "--mask", mask,
                  "--out", out, match="3 echo times")
    from test_knee_mese_input import sagittal_geometry, write_dicom_series

    g = sagittal_geometry()
    arr = np.stack([np.full(g.shape_kji, 500.0 * np.exp(-t / 40)) for t in (10, 20, 30, 40, 50, 60, 70)])
    write_dicom_series(tmp_path / "dicom", Image(arr, g), [10, 20, 30, 40, 50, 60, 70],
                       spacing_override={2: (0.4, 0.446, 3.5)})
    fails_cleanly(cli, out, "knee-t2", "--mese", tmp_path / "dicom", "--mask", mask, "--out", out,
                  match="different geometry")


def test_knee_t2_without_mask_segments_automatically(runs, tmp_path, cli):
    from mskquant.metrics import dice

    ph = runs / "phantom"
    rc, out, err = cli("knee-t2", "--mese", ph / "mese.nii.gz", "--out", tmp_path / "auto", "-q")
    assert rc == 0, err
    summary = json.loads((tmp_path / "auto" / "knee_t2.json").read_text())
    seg = summary["segmentation"]
    assert summary["mask_source"] == "automatic (knee-femoral-cartilage-mese)" and seg["edited"] is False
    assert 0 < seg["thresholds"]["probability_threshold"] < 1 and seg["thresholds"]["fit_probability"] == 0.01
    labels = read_image(tmp_path / "auto" / "subregions.nii.gz").array
    truth = read_image(ph / "truth_cartilage.nii.gz").array != 0
    assert (labels > 0).sum() == seg["counts"]["final"] and dice(labels > 0, truth) > 0.6
    assert "cartilage segmented by knee-femoral-cartilage-mese" in err
    assert seg["precision"] == "float32"  # the default: the same numbers on every machine
    rc, _, err = cli("knee-t2", "--mese", ph / "mese.nii.gz", "--precision", "bfloat16", "--out", tmp_path / "bf16", "-q")
    assert rc == 0, err
    half = json.loads((tmp_path / "bf16" / "knee_t2.json").read_text())["segmentation"]
    assert half["precision"] == "bfloat16"
    assert dice(read_image(tmp_path / "bf16" / "subregions.nii.gz").array > 0, labels > 0) > 0.99


def test_bad_segmentation_models(runs, tmp_path, cli):
    import torch

    from test_knee_segmentation import tiny_checkpoint

    ph = runs / "phantom"
    out = tmp_path / "out"
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "mese.nii.gz", "--model", tmp_path / "missing.pt", "--out", out,
                  match="does not exist")
    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x02 truncated" * 20)
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "mese.nii.gz", "--model", tmp_path / "corrupt.pt", "--out", out,
                  match="cannot be read")
    ckpt = tiny_checkpoint(tmp_path / "shape.pt", postprocessing={"probability_threshold": 0.5,
                                                                  "min_slice_area_mm2": 40.0})
    ckpt["state_dict"]["last_layer.weight"] = torch.zeros(1, 3, 1, 1)
    torch.save(ckpt, str(tmp_path / "shape.pt"))
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "mese.nii.gz", "--model", tmp_path / "shape.pt", "--out", out,
                  match="of another shape")
    tiny_checkpoint(tmp_path / "uncalibrated.pt")
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "mese.nii.gz", "--model", tmp_path / "uncalibrated.pt",
                  "--out", out, match="no calibrated post-processing thresholds")
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "mese.nii.gz", "--model", "no-such-model", "--out", out,
                  match="Unknown model 'no-such-model'")
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "mese.nii.gz", "--model", "sij-disease-region", "--out", out,
                  match="not a femoral cartilage segmentation model")


def test_not_sagittal_or_too_few_slices_for_the_network(runs, tmp_path, cli):
    ph = runs / "phantom"
    out = tmp_path / "out"
    mese = read_image(ph / "mese.nii.gz")
    g = mese.geometry
    axial = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).T  # thick slices along S
    (tmp_path / "axial").mkdir()
    write_image(Image(mese.array, Geometry.from_spacing(g.shape_ijk, g.spacing, g.origin, axial)),
                tmp_path / "axial" / "mese.nii.gz")
    shutil.copy(ph / "mese.json", tmp_path / "axial" / "mese.json")
    fails_cleanly(cli, out, "knee-t2", "--mese", tmp_path / "axial" / "mese.nii.gz", "--out", out,
                  match="not sagittal")
    (tmp_path / "thin").mkdir()
    few = Geometry((g.shape_ijk[0], g.shape_ijk[1], 3), g.ijk_to_ras)
    write_image(Image(mese.array[:, 9:12], few), tmp_path / "thin" / "mese.nii.gz")
    shutil.copy(ph / "mese.json", tmp_path / "thin" / "mese.json")
    fails_cleanly(cli, out, "knee-t2", "--mese", tmp_path / "thin" / "mese.nii.gz", "--out", out,
                  match="3 sagittal slice(s): automatic segmentation needs at least 5")


def test_bad_masks(runs, tmp_path, cli):
    ph = runs / "phantom"
    out = tmp_path / "out"
    mask = read_image(ph / "truth_cartilage.nii.gz")
    write_image(Image(np.zeros_like(mask.array), mask.geometry), tmp_path / "empty.nii.gz")
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "mese.nii.gz", "--mask", tmp_path / "empty.nii.gz",
                  "--out", out, match="empty")
    g = mask.geometry
    cropped = Geometry((g.shape_ijk[0], g.shape_ijk[1] - 1, g.shape_ijk[2]), g.ijk_to_ras)
    write_image(Image(mask.array[:, :-1], cropped), tmp_path / "cropped.nii.gz")
    fails_cleanly(cli, out, "knee-t2", "--mese", ph / "mese.nii.gz", "--mask", tmp_path / "cropped.nii.gz",
                  "--out", out, match="differs from the MESE grid")
    rc, _, stderr = cli("knee-t2", "--mese", ph / "mese.nii.gz", "--mask", ph / "truth_cartilage.nii.gz",
                        "--out", runs / "t0")
    assert rc == 2 and "already holds results" in stderr and "--overwrite" in stderr


def test_nan_and_zero_voxels_are_reported_not_fatal(runs, tmp_path, cli):
    ph = runs / "phantom"
    mese = read_image(ph / "mese.nii.gz")
    mask = read_image(ph / "truth_cartilage.nii.gz").array != 0
    arr = mese.array.copy()
    k, j, i = np.nonzero(mask)
    arr[:, k[0], j[0], i[0]] = np.nan
    arr[:, k[1], j[1], i[1]] = 0.0
    (tmp_path / "in").mkdir()
    write_image(Image(arr, mese.geometry), tmp_path / "in" / "mese.nrrd")  # NRRD keeps NaN (ITK's NIfTI reader does not)
    shutil.copy(ph / "mese.json", tmp_path / "in" / "mese.json")
    rc, stdout, stderr = cli("knee-t2", "--mese", tmp_path / "in" / "mese.nrrd", "--mask",
                             ph / "truth_cartilage.nii.gz", "--out", tmp_path / "out", "-q")
    assert rc == 0, stderr
    assert "warning: 1 voxel(s) hold NaN" in stderr and "warning: 1 voxel(s) are zero" in stderr
    t2 = nifti_values(tmp_path / "out" / "t2.nii.gz")
    assert np.isnan(t2[k[0], j[0], i[0]]) and np.isnan(t2[k[1], j[1], i[1]])
    assert np.isfinite(t2[k[2], j[2], i[2]])


def test_change_of_different_knees_is_refused(runs, tmp_path, cli):
    out = tmp_path / "out"
    for key, value, match in (("laterality", "left", "different knees"),
                              ("subject_id", "9999999", "different subjects")):
        other = tmp_path / f"other_{key}"
        shutil.copytree(runs / "t1", other)
        summary = json.loads((other / "knee_t2.json").read_text())
        summary[key] = value
        (other / "knee_t2.json").write_text(json.dumps(summary))
        fails_cleanly(cli, out, "knee-change", "--baseline", runs / "t0", "--followup", other, "--out", out,
                      match=match)
    fails_cleanly(cli, out, "knee-change", "--baseline", runs / "phantom", "--followup", runs / "t1", "--out", out,
                  match="not a knee-t2 result folder")


def test_phantom_bad_label_map(tmp_path, cli):
    img = analytic_knee()
    write_image(Image((img.array == 3).astype(np.uint8), img.geometry), tmp_path / "tibia_only.nii.gz")
    out = tmp_path / "out"
    fails_cleanly(cli, out, "knee-phantom", "--labelmap", tmp_path / "tibia_only.nii.gz", "--out", out,
                  match="no femur")
    fails_cleanly(cli, out, "knee-phantom", "--labelmap", tmp_path / "missing.nii.gz", "--out", out,
                  match="does not exist")
