"""Cartilage thickness (knee morphometry) on shapes of known thickness, the analytic knee and a real label map."""

import math
import time

import numpy as np
import pytest

from mskquant.progress import CancelToken, Cancelled, Progress

from KneeT2SegmentLib.anatomy import analytic_knee
from KneeT2SegmentLib.morphometry import labels as L
from KneeT2SegmentLib.morphometry.phantoms import shell_knee, slab_knee
from KneeT2SegmentLib.morphometry.regions import CSV_COLUMNS, tibial_boundary_r
from KneeT2SegmentLib.morphometry.thickness import interface_thickness, measure_thickness

OAI_SPACING = (0.7, 0.365, 0.365)  # i (left-right), j, k as in the OAI DESS label maps


def _interface(image):
    a = L.tissue_labels(image.array)
    bone = np.isin(a, (L.FEMUR, L.TIBIA, L.PATELLA))
    cart = np.isin(a, (L.FEMORAL_CARTILAGE, L.TIBIAL_CARTILAGE, L.PATELLAR_CARTILAGE))
    return interface_thickness(bone, cart, image.geometry)


@pytest.mark.parametrize("spacing, rotation", [((0.3, 0.3, 0.3), None), (OAI_SPACING, None),
                                               ((0.365, 0.365, 0.7), (10.0, 25.0, -15.0))])
def test_spherical_shell_of_2_mm(spacing, rotation):
    it = _interface(shell_knee(spacing, 10.0, 2.0, rotation_deg=rotation))
    assert len(it.thickness_mm) > 3000 and np.all(np.isfinite(it.thickness_mm))
    # measured: 1.994 (0.3 mm), 1.999 (0.365 x 0.365 x 0.7 mm): scripts/compare_thickness_methods.py --phantoms
    assert abs(it.thickness_mm.mean() - 2.0) < 0.05
    assert abs(np.median(it.thickness_mm) - 2.0) < 0.05
    # interface points lie on the 10 mm sphere and the normals are radial
    r = np.linalg.norm(it.points_ras, axis=1)
    assert abs(r.mean() - 10.0) < 0.05
    cos = np.sum(it.normals_ras * it.points_ras / r[:, None], axis=1)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).mean() < 3.0
    # the nearest-point thickness is a little lower (noisy surfaces): 1.963 / 1.943 measured
    assert 1.85 < it.nearest_mm.mean() < 2.02


@pytest.mark.parametrize("spacing", [(0.3, 0.3, 0.3), OAI_SPACING, (0.365, 0.365, 0.7)])
@pytest.mark.parametrize("tilt", [(30.0, 0.0, 0.0), (30.0, 0.0, 20.0)])
def test_slab_tilted_to_the_grid(spacing, tilt):
    image, normal = slab_knee(spacing, 2.0, tilt)
    it = _interface(image)
    h = it.points_ras @ normal
    lateral = np.linalg.norm(it.points_ras - np.outer(h, normal), axis=1)
    inner = lateral < 8.0  # away from the disc's rim
    assert inner.sum() > 500
    assert np.abs(h[inner]).mean() < 0.1 and np.abs(h[inner]).max() < 0.3  # the interface is the plane
    # measured inner means 1.994 .. 2.018 over these grids and tilts
    assert abs(np.nanmean(it.thickness_mm[inner]) - 2.0) < 0.05
    assert np.degrees(np.arccos(np.clip(it.normals_ras[inner] @ normal, -1, 1))).mean() < 3.0


def test_analytic_knee_plates_and_regions():
    res = measure_thickness(analytic_knee(), "right")
    rows = {(r["plate"], r["region"]): r for r in res.rows()}
    assert all(tuple(r) == CSV_COLUMNS for r in res.rows())
    # flat tibial plates: 4 voxels (2.0 mm) medial, 6 voxels (3.0 mm) lateral - medial/lateral told apart
    assert abs(rows[("medial tibial", "all")]["p95_mm"] - 2.0) < 0.1
    assert abs(rows[("lateral tibial", "all")]["mean_mm"] - 3.0) < 0.05
    assert rows[("medial tibial", "all")]["n_points"] > 1000 and rows[("lateral tibial", "all")]["n_points"] > 1000
    for plate in ("medial tibial", "lateral tibial"):
        assert {r["region"] for r in res.rows() if r["plate"] == plate} == {"all", "anterior", "central", "posterior"}
    # femoral shell 2.4 mm at the condyles' narrowest, up to 2.4 * 25/21 about the ellipses
    fem = rows[("femoral", "all")]
    assert 2.2 < fem["mean_mm"] < 2.8 and fem["n_points"] > 5000
    assert {"medial anterior", "lateral posterior", "medial", "lateral"} <= {r for (p, r) in rows if p == "femoral"}
    # right knee: medial femoral points at -R
    fp = res.plates["femoral"]
    medial = (fp.region >= 1) & (fp.region <= 3)
    assert np.median(fp.points_ras[medial, 0]) < -10 < 10 < np.median(fp.points_ras[~medial, 0])
    # the map: thickness on every cartilage voxel, 0 elsewhere
    cart = np.isin(analytic_knee().array, (2, 4, 6))
    assert np.all(res.map.array[cart] > 0) and np.all(res.map.array[~cart] == 0)
    assert res.map.array.dtype == np.float32


def test_missing_plate_is_reported_not_raised():
    image = analytic_knee()
    a = image.array.copy()
    a[a == L.PATELLAR_CARTILAGE] = 0
    res = measure_thickness(image.with_array(a), "right")
    row = [r for r in res.rows() if r["plate"] == "patellar"]
    assert len(row) == 1 and row[0]["n_points"] == 0 and math.isnan(row[0]["mean_mm"])
    assert res.plates["patellar"].missing and "patellar cartilage" in res.plates["patellar"].message
    assert any("patellar" in m for m in res.messages)
    assert res.rows()[0]["n_points"] > 0  # the others are measured


def test_left_knee_mirror_swaps_tibial_plates():
    image = analytic_knee()
    m = image.geometry.ijk_to_ras.copy()
    m[0, :] *= -1  # mirror R: the medial plate moves to +R, as in a left knee
    from mskquant.image import Geometry

    left = image.__class__(image.array, Geometry(image.geometry.shape_ijk, m))
    res = measure_thickness(left, None)  # laterality estimated from the tibial cartilage
    assert res.laterality == "left"
    rows = {(r["plate"], r["region"]): r for r in res.rows()}
    assert abs(rows[("lateral tibial", "all")]["mean_mm"] - 3.0) < 0.05


def test_tibial_boundary_is_the_gap():
    r = np.r_[np.linspace(-40, -5, 500), np.linspace(3, 35, 400)]
    assert -5 < tibial_boundary_r(r) < 3


def test_progress_and_cancel():
    calls = []
    measure_thickness(analytic_knee(), "right", progress=lambda f, m: calls.append((f, m)))
    fr = [f for f, _ in calls]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0) and len(calls) > 6
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        measure_thickness(analytic_knee(), "right", progress=Progress(None, token))


def test_real_label_map(knee_labelmap_dir):
    from mskquant.imageio import read_image

    image = read_image(knee_labelmap_dir / "9002817.nii.gz", "Knee label map")
    t0 = time.perf_counter()
    res = measure_thickness(image)
    elapsed = time.perf_counter() - t0
    assert res.laterality == "right"
    rows = {(r["plate"], r["region"]): r for r in res.rows()}
    for plate in L.PLATES:
        r = rows[(plate, "all")]
        assert r["n_points"] > 2000 and 1.0 < r["mean_mm"] < 3.5 and r["p95_mm"] < 6.0
    assert elapsed < 30.0  # measured 3.3 s on the 2-core development machine


def test_cartilage_off_the_bone_is_reported():
    image = shell_knee((0.5, 0.5, 0.5), 8.0, 2.0)
    a = image.array.copy()
    a[a == L.FEMUR] = 0  # the ball is gone ...
    a[0:3] = L.FEMUR  # ... a bone slab at the grid's edge, millimetres from the cartilage, is all there is
    res = measure_thickness(image.with_array(a), "right")
    assert res.plates["femoral"].missing and "does not touch" in res.plates["femoral"].message
    assert res.rows()[0]["n_points"] == 0 and math.isnan(res.rows()[0]["mean_mm"])


def test_non_sagittal_grid_keeps_thickness_without_femoral_regions():
    image = shell_knee((0.5, 0.5, 0.5), 10.0, 2.0, rotation_deg=(0.0, 35.26, 45.0))  # no axis within 45 deg of R
    res = measure_thickness(image, "right")
    femoral = [r for r in res.rows() if r["plate"] == "femoral"]
    assert [r["region"] for r in femoral] == ["all"] and abs(femoral[0]["mean_mm"] - 2.0) < 0.05
    assert any("Femoral regions not defined" in m and "sagittal" in m for m in res.messages)
