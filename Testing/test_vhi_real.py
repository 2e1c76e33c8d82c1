"""VHIWorkflow on the real SIJ data with expert masks (../shared/data/sij) and the published
disease-region ensemble (../shared/data/sij_models)."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mskquant.imageio import read_image
from mskquant.models import ModelStore
from VHIWorkflowLib.disease_region import load_ensemble, predict_probability

SUBJECTS = ["2014", "1001", "1007", "1012", "1016", "1234", "2015", "2016", "3002", "3009"]


@pytest.fixture(scope="module")
def ensemble(sij_model_dir):
    store = ModelStore(model_dir=sij_model_dir, offline=True)
    spec = store.registry.get("sij-disease-region")
    return load_ensemble(store.ensure(spec.id), spec.architecture, torch.device("cpu"))


@pytest.mark.parametrize("subject", SUBJECTS)
def test_disease_region_dice_against_the_expert(subject, sij_dir, ensemble):
    # 2014 was a test subject of the published models (not in their training)
    t1 = read_image(sij_dir / subject / "T1W.nii.gz")
    manual = read_image(sij_dir / subject / "disease_region.nii.gz").array > 0
    pred = predict_probability(t1.array, t1.geometry, ensemble, torch.device("cpu")) >= 0.5
    dice = 2 * (pred & manual).sum() / (pred.sum() + manual.sum())
    assert dice >= 0.95, f"{subject}: Dice {dice:.4f}"


def test_voxel_order_does_not_change_the_result(sij_dir, ensemble):
    # the same anatomy stored with the row axis reversed (other converters do this)
    from mskquant.image import Geometry

    t1 = read_image(sij_dir / "2014" / "T1W.nii.gz")
    m = t1.geometry.ijk_to_ras.copy()
    m[:3, 3] += m[:3, 1] * (t1.geometry.shape_ijk[1] - 1)
    m[:3, 1] *= -1
    flipped = Geometry(t1.geometry.shape_ijk, m)
    p1 = predict_probability(t1.array, t1.geometry, ensemble, torch.device("cpu")) >= 0.5
    p2 = predict_probability(np.ascontiguousarray(t1.array[:, ::-1, :]), flipped, ensemble, torch.device("cpu")) >= 0.5
    assert np.array_equal(p1, p2[:, ::-1, :])


# --- an independent plain-numpy V_HI, written from the paper (section 2.5) --------------------
def components_2d(mask2d):
    """8-connected components of a 2D mask by breadth-first search (list of pixel lists)."""
    seen = np.zeros_like(mask2d, bool)
    comps = []
    rows, cols = mask2d.shape
    for r0, c0 in zip(*np.nonzero(mask2d)):
        if seen[r0, c0]:
            continue
        queue, comp = deque([(r0, c0)]), []
        seen[r0, c0] = True
        while queue:
            r, c = queue.popleft()
            comp.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < rows and 0 <= cc < cols and mask2d[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        queue.append((rr, cc))
        comps.append(comp)
    return comps


def reference_vhi(stir, normal, region):
    values = stir[normal]
    q1, q3 = np.percentile(values, [25, 75])
    iqr = q3 - q1
    upper = values.max()
    k = 0
    lower = q3 + 1.5 * iqr
    if upper - lower >= iqr / 2:
        while not (0 < upper - (q3 + (1.5 + k * 0.05) * iqr) < iqr / 2):
            k += 1
    elif upper - lower <= 0:
        while not (0 < upper - (q3 + (1.5 + k * 0.05) * iqr) < iqr / 2):
            k -= 1
    lower = q3 + (1.5 + k * 0.05) * iqr
    sens = region & (stir >= lower)
    kept = np.zeros_like(sens)
    for z in range(stir.shape[0]):  # slices of these scans are along k (3.3 mm)
        for comp in components_2d(sens[z]):
            if len(comp) >= 4:
                rr, cc = zip(*comp)
                kept[z, list(rr), list(cc)] = True
    return kept, kept & (stir >= upper), 1.5 + k * 0.05, lower, upper


@pytest.mark.parametrize("subject", ["1007", "2014", "3002"])
def test_vhi_with_manual_masks_matches_an_independent_computation(subject, sij_dir, cli, tmp_path):
    d = sij_dir / subject
    out = tmp_path / "out"
    rc, _, err = cli("vhi", "-q", "--stir", d / "STIR.nii.gz", "--normal-roi", d / "normal_marrow.nii.gz",
                     "--disease-region", d / "disease_region.nii.gz", "--out", out)
    assert rc == 0, err
    j = json.loads((out / "vhi.json").read_text())
    stir = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "STIR.nii.gz"))).astype(np.float64)
    normal = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "normal_marrow.nii.gz"))) > 0
    region = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "disease_region.nii.gz"))) > 0
    sens, cons, n, lower, upper = reference_vhi(stir, normal, region)
    spacing = sitk.ReadImage(str(d / "STIR.nii.gz")).GetSpacing()
    voxel_mm3 = float(np.prod(spacing))
    assert j["thresholds"]["n"] == pytest.approx(n)
    assert j["thresholds"]["lower"] == pytest.approx(lower, rel=1e-6)
    assert j["thresholds"]["upper"] == pytest.approx(upper, rel=1e-6)
    assert j["voxels"] == {"sensitive": int(sens.sum()), "conservative": int(cons.sum())}
    assert j["vhi_ml"]["sensitive"] == pytest.approx(sens.sum() * voxel_mm3 / 1000, rel=1e-6)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "inflammation.nii.gz")))
    assert np.array_equal(lab >= 1, sens) and np.array_equal(lab == 2, cons)
    assert j["disease_region_source"] == "input" and sens.sum() > 100


def test_full_workflow_with_the_network_keeps_the_input_geometry(sij_dir, sij_model_dir, tmp_path, monkeypatch):
    from conftest import assert_same_geometry, run_console

    d = sij_dir / "2014"
    out = tmp_path / "out"
    r = run_console("vhi", "--t1", d / "T1W.nii.gz", "--stir", d / "STIR.nii.gz", "--normal-roi",
                    d / "normal_marrow.nii.gz", "--out", out,
                    env={"MSKQUANT_MODEL_DIR": str(sij_model_dir), "MSKQUANT_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    j = json.loads((out / "vhi.json").read_text())
    assert j["disease_region_source"] == "model" and j["model"]["id"] == "sij-disease-region"
    manual = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "disease_region.nii.gz"))) > 0
    for name in ("disease_region.nii.gz", "inflammation.nii.gz"):
        assert_same_geometry(out / name, d / "STIR.nii.gz")
    dr = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "disease_region.nii.gz"))) > 0
    assert 2 * (dr & manual).sum() / (dr.sum() + manual.sum()) >= 0.95
    assert j["voxels"]["sensitive"] >= j["voxels"]["conservative"] > 0
    assert "%" in r.stderr  # progress was reported
