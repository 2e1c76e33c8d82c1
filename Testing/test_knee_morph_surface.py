"""Bone surfaces, articular surface, projections onto it, .vtp files and 2D maps (knee morphometry)."""

import math
import time

import numpy as np
import pytest

from mskquant.image import Geometry, Image

from KneeT2SegmentLib.anatomy import analytic_knee
from KneeT2SegmentLib.morphometry import labels as L
from KneeT2SegmentLib.morphometry.maps import bone_maps, fit_cylinder, write_maps
from KneeT2SegmentLib.morphometry.phantoms import shell_knee
from KneeT2SegmentLib.morphometry.projection import (project_thickness, project_voxel_measure, read_vtp,
                                                     write_vtp)
from KneeT2SegmentLib.morphometry.regions import femoral_region_of_subregion
from KneeT2SegmentLib.morphometry.shape import shape_summary
from KneeT2SegmentLib.morphometry.surface import bone_surfaces
from KneeT2SegmentLib.morphometry.thickness import measure_thickness
from KneeT2SegmentLib.subregions import femoral_subregions

R = 10.0


def _mirrored(image: Image) -> Image:
    """The same voxels on a grid whose i axis runs the other way (negative determinant, as LPS files)."""
    m = image.geometry.ijk_to_ras.copy()
    m[:3, 0] *= -1
    centre = (np.asarray(image.geometry.shape_ijk) - 1) / 2.0
    m[:3, 3] = -m[:3, :3] @ centre
    return Image(image.array, Geometry(image.geometry.shape_ijk, m))


def _cap(image: Image) -> Image:
    """The shell phantom with cartilage on the superior half only."""
    a = image.array.copy()
    k, j, i = np.nonzero(a == L.FEMORAL_CARTILAGE)
    z = (np.stack([i, j, k, np.ones(i.size)], 1) @ image.geometry.ijk_to_ras.T)[:, 2]
    a[k[z < 0], j[z < 0], i[z < 0]] = 0
    return image.with_array(a)


@pytest.mark.parametrize("spacing, mirror", [((0.3, 0.3, 0.3), False), ((0.7, 0.365, 0.365), True)])
def test_sphere_volume_area_normals_articular(spacing, mirror):
    image = _cap(shell_knee(spacing, R, 2.0))
    image = _mirrored(image) if mirror else image
    s = bone_surfaces(image)
    femur = s["femur"]
    assert s["tibia"].missing and s["patella"].missing and "No tibia" in s["tibia"].message
    ball, half = 4.0 / 3.0 * math.pi * R ** 3, 2.0 * math.pi * R ** 2
    # measured: voxel volume +0.1 %, mesh volume -0.0 / -0.2 %, area +1.0 / +1.8 %
    assert abs(femur.volume_mm3 / ball - 1) < 0.01
    assert abs(femur.mesh_volume_mm3 / ball - 1) < 0.01
    assert abs(femur.area_mm2 / (2 * half) - 1) < 0.03
    # articular: the superior half plus a rim under half a millimetre wide (+5.5 / +5.9 % measured)
    assert 1.0 < femur.articular_area_mm2 / half < 1.10
    p, n = femur.points, femur.normals
    r = np.linalg.norm(p, axis=1)
    assert abs(r.mean() - R) < 0.05
    assert np.mean(np.sum(n * p, axis=1) / r) > 0.97  # outward, even on the mirrored grid
    z = p[:, 2]
    assert femur.articular[z > 0.5].all() and not femur.articular[z < -1.0].any()
    shape = shape_summary(s)
    assert shape["patella"]["volume_mm3"] is None and shape["femur"]["articular_area_mm2"] > 0


@pytest.fixture(scope="module")
def knee():
    image = analytic_knee()
    thick = measure_thickness(image, "right")
    surfaces = bone_surfaces(image)
    project_thickness(surfaces, thick)
    return image, thick, surfaces


def _smooth_t2(image: Image, seed=0) -> np.ndarray:
    g = image.geometry
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.shape_kji), indexing="ij")
    m = g.ijk_to_ras
    x, y, z = (m[a, 0] * i + m[a, 1] * j + m[a, 2] * k + m[a, 3] for a in range(3))
    t2 = 35.0 + 0.15 * x + 0.25 * y - 0.2 * z + np.random.default_rng(seed).normal(0, 4.0, x.shape)
    return np.where(np.isin(image.array, (2, 4, 6)), t2, np.nan).astype(np.float32)


def test_t2_projection_keeps_region_means(knee):
    image, thick, surfaces = knee
    t2 = _smooth_t2(image)
    fc = image.array == L.FEMORAL_CARTILAGE
    codes = np.zeros(image.array.shape, np.uint8)
    codes[fc] = femoral_region_of_subregion(femoral_subregions(fc, image.geometry, "right").labels[fc])
    proj = project_voxel_measure(surfaces, image, t2, "t2_ms", region_labels=codes)
    femur = surfaces["femur"]
    fp = proj["femur"]
    # every femoral cartilage voxel landed on an articular vertex; counts add up
    assert fp.count.sum() == fc.sum() and np.all(femur.articular[fp.vertex])
    assert np.all(np.isnan(femur.array("t2_ms")[fp.count == 0]))
    # exact: the count-weighted surface mean of any vertex set is the mean of the voxels it received
    flat_t2 = t2.ravel()
    sel = np.zeros(len(fp.count), bool)
    sel[::3] = True
    got = fp.weighted_mean(sel)
    want = flat_t2[fp.voxel_index[sel[fp.vertex]]].mean()
    assert abs(got - want) < 1e-4
    # acceptance: per region, the surface mean (vertices labelled by their voxels' majority) is the
    # volumetric subregion mean within 1 ms
    region = femur.array("region")
    for code in range(1, 7):
        vol = t2[codes == code].mean()
        surf = fp.weighted_mean(region == code)
        assert abs(surf - vol) < 1.0, (code, surf, vol)
    assert abs(fp.weighted_mean(fp.count > 0) - np.nanmean(t2[fc])) < 1e-4
    for bone in ("tibia", "patella"):
        assert proj[bone].count.sum() == np.sum(image.array == L.CARTILAGE_OF[bone])
    # the maps keep the voxel counts: their weighted mean is the plate's volumetric mean
    for bone, m in bone_maps(surfaces, "t2_ms", "right").items():
        ok = m.weight > 0
        want = np.nanmean(t2[image.array == L.CARTILAGE_OF[bone]])
        assert abs((m.values[ok] * m.weight[ok]).sum() / m.weight[ok].sum() - want) < 1e-3


def test_thickness_on_the_surface(knee):
    image, thick, surfaces = knee
    tib = surfaces["tibia"]
    t = tib.array("thickness_mm")
    assert np.all(np.isnan(t[~tib.articular]))
    lateral = tib.articular & (tib.points[:, 0] > 12) & np.isfinite(t)
    medial = tib.articular & (tib.points[:, 0] < -12) & np.isfinite(t)
    assert abs(np.median(t[lateral]) - 3.0) < 0.1 and abs(np.median(t[medial]) - 2.0) < 0.1
    region = tib.array("region")
    assert set(np.unique(region[lateral])) <= {4, 5, 6} and set(np.unique(region[medial])) <= {1, 2, 3}
    fem = surfaces["femur"].array("thickness_mm")
    assert 2.0 < np.nanmedian(fem) < 3.0


def test_vtp_round_trip(knee, tmp_path):
    image, thick, surfaces = knee
    project_voxel_measure(surfaces, image, _smooth_t2(image), "t2_ms")
    path = write_vtp(surfaces["tibia"].polydata, tmp_path / "tibia.vtp")
    assert [p.name for p in tmp_path.iterdir()] == ["tibia.vtp"]  # no partial file left
    back = read_vtp(path)
    assert back.GetNumberOfPoints() == surfaces["tibia"].polydata.GetNumberOfPoints()
    for name in ("thickness_mm", "t2_ms", "articular", "region", "Normals"):
        assert back.GetPointData().GetArray(name) is not None, name
    from mskquant.vtklite import numpy_support

    a = numpy_support.vtk_to_numpy(back.GetPointData().GetArray("t2_ms"))
    np.testing.assert_array_equal(a, surfaces["tibia"].array("t2_ms"))


def test_cylinder_fit_recovers_the_axis():
    rng = np.random.default_rng(1)
    ang = rng.uniform(-2.0, 1.5, 3000)
    s = rng.uniform(-30, 30, 3000)
    d = np.array([0.97, 0.2, 0.1])
    d /= np.linalg.norm(d)
    e1 = np.cross(d, [0, 0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    c = np.array([5.0, -3.0, 12.0])
    p = c + np.outer(s, d) + 22.0 * (np.outer(np.cos(ang), e1) + np.outer(np.sin(ang), e2))
    c_fit, d_fit, r = fit_cylinder(p + rng.normal(0, 0.1, p.shape))
    assert abs(r - 22.0) < 0.05 and abs(abs(d_fit @ d) - 1) < 1e-4
    v = c_fit - c
    assert np.linalg.norm(v - (v @ d) * d) < 0.1


def test_maps_of_the_analytic_knee(knee, tmp_path):
    image, thick, surfaces = knee
    maps = bone_maps(surfaces, "thickness_mm", "right")
    assert set(maps) == {"femur", "tibia", "patella"}
    tib = maps["tibia"]
    # plateau plane: normal +S; columns medial -> lateral, so the thicker lateral plate is on the right
    assert tib.parameterisation["normal_ras"][2] > 0.99
    half = tib.values.shape[1] // 2
    assert np.nanmedian(tib.values[:, :half]) == pytest.approx(2.0, abs=0.1)
    assert np.nanmedian(tib.values[:, half:]) == pytest.approx(3.0, abs=0.1)
    assert tib.columns[2] == 1.0 and tib.rows[3] == "mm"
    # analytic plates: medial (-37+1 .. -9-1) and lateral (9+1 .. 34-1) -> about 68 mm of columns
    assert 64 <= tib.values.shape[1] <= 72
    fem = maps["femur"]
    assert abs(fem.parameterisation["axis_direction_ras"][0]) > 0.98 and fem.rows[3] == "deg"
    # mean of a map of vertices equals (about) the plate's surface mean
    assert np.nanmean(fem.values) == pytest.approx(np.nanmean(surfaces["femur"].array("thickness_mm")), abs=0.15)
    written = write_maps(maps, tmp_path / "maps")
    assert sorted(p.name for p in written) == sorted(f"{b}_thickness_mm.{e}" for b in maps for e in ("png", "npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "maps" / "tibia_thickness_mm.npy"),
                                  tib.values.astype(np.float32))
    from mskquant.render import read_png

    png = read_png(tmp_path / "maps" / "tibia_thickness_mm.png")
    assert png.shape[0] > tib.values.shape[0] * 4 and png.shape[1] > tib.values.shape[1] * 4


def test_missing_patella_everywhere():
    image = analytic_knee()
    a = image.array.copy()
    a[np.isin(a, (L.PATELLA, L.PATELLAR_CARTILAGE))] = 0
    image = image.with_array(a)
    thick = measure_thickness(image, "right")
    surfaces = bone_surfaces(image)
    project_thickness(surfaces, thick)
    proj = project_voxel_measure(surfaces, image, _smooth_t2(image), "t2_ms")
    assert surfaces["patella"].missing and proj["patella"].count.size == 0
    assert "patella" not in bone_maps(surfaces, "t2_ms")
    assert shape_summary(surfaces)["patella"]["n_vertices"] == 0


def test_real_label_map_chain(knee_labelmap_dir, tmp_path):
    from mskquant.imageio import read_image

    image = read_image(knee_labelmap_dir / "9002817.nii.gz", "Knee label map")
    t0 = time.perf_counter()
    thick = measure_thickness(image)
    surfaces = bone_surfaces(image)
    project_thickness(surfaces, thick)
    t2 = _smooth_t2(image)
    tissue = L.tissue_labels(image.array)
    fc = tissue == L.FEMORAL_CARTILAGE
    codes = np.zeros(tissue.shape, np.uint8)
    codes[fc] = femoral_region_of_subregion(femoral_subregions(fc, image.geometry, "right").labels[fc])
    proj = project_voxel_measure(surfaces, image, t2, "t2_ms", region_labels=codes)
    maps = bone_maps(surfaces, "thickness_mm", thick.laterality)
    elapsed = time.perf_counter() - t0
    assert elapsed < 40.0  # measured about 9 s on the 2-core development machine
    for bone, s in surfaces.items():
        assert abs(s.mesh_volume_mm3 / s.volume_mm3 - 1) < 0.01
        assert 0 < s.articular_area_mm2 < s.area_mm2
    region = surfaces["femur"].array("region")
    for code in range(1, 7):
        assert abs(proj["femur"].weighted_mean(region == code) - t2[codes == code].mean()) < 1.0
    assert set(maps) == {"femur", "tibia", "patella"}


def test_values_off_the_label_grid_are_refused(knee):
    from mskquant.errors import InputError

    image, thick, surfaces = knee
    with pytest.raises(InputError, match="grid"):
        project_voxel_measure(surfaces, image, np.zeros((3, 4, 5), np.float32))


def test_surfaces_progress_and_cancel():
    from mskquant.progress import CancelToken, Cancelled, Progress

    image = analytic_knee()
    calls = []
    bone_surfaces(image, progress=lambda f, m: calls.append(f))
    assert calls == sorted(calls) and calls[-1] == pytest.approx(1.0) and len(calls) >= 9
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        bone_surfaces(image, progress=Progress(None, token))
