"""Knee morphometry end to end: ``mskquant knee-morph`` on label maps (the network's part is
tested in test_knee_morph_segment.py), T2 on the bone surface against the volumetric subregion
means, missing tissue, bad input, and a knee-morph cohort through ``mskquant batch``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mskquant.image import Geometry, Image


@pytest.fixture(scope="module")
def analytic(tmp_path_factory):
    """The analytic knee's label map and an OAI-like MESE phantom of the same anatomy (files)."""
    from KneeT2SegmentLib import anatomy as an
    from KneeT2SegmentLib import simulator as sm
    from KneeT2SegmentLib.cli import write_phantom
    from mskquant.imageio import write_image

    d = tmp_path_factory.mktemp("morph")
    labels = an.analytic_knee()
    write_image(labels, d / "labels.nii.gz")
    anat = an.prepare_anatomy(labels, "right", "analytic", "analytic knee")
    ph = sm.simulate(anat, sm.PhantomParameters(snr=40.0, seed=3))
    (d / "mese").mkdir()
    write_phantom(ph, d / "mese")
    return {"dir": d, "labels": labels, "phantom": ph}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _surface_t2_within(labels, phantom, tol_ms=1.0):
    from KneeT2SegmentLib.morphometry.pipeline import MorphParameters, measure
    from KneeT2SegmentLib.parameters import KneeT2Parameters

    r = measure(labels, None, phantom.series, MorphParameters(laterality="right"), KneeT2Parameters(laterality="right"))
    rows = r.surface_t2_regions()
    assert len(rows) == 12
    for row in rows:
        assert row["n_voxels"] > 200, row
        assert abs(row["surface_mean_t2_ms"] - row["volumetric_mean_t2_ms"]) < tol_ms, row
    return r


def test_surface_t2_per_subregion_equals_the_volumetric_mean_analytic(analytic):
    r = _surface_t2_within(analytic["labels"], analytic["phantom"])
    femur = r.surfaces["femur"]
    exact, filled = femur.array("t2_ms_voxels"), femur.array("t2_ms")
    art = femur.articular
    # the 3.5 mm MESE slices reach some articular vertices; the display array covers the rest
    assert 0.1 < np.isfinite(exact[art]).mean() < np.isfinite(filled[art]).mean()
    assert np.isfinite(filled[art]).mean() > 0.9 and not np.isfinite(filled[~art]).any()
    has = np.isfinite(exact)
    assert np.array_equal(filled[has], exact[has].astype(np.float32))
    assert 20.0 < np.nanmean(filled) < 70.0
    assert set(r.maps["femur"]) == {"thickness_mm", "t2_ms"}
    assert np.isfinite(r.maps["femur"]["t2_ms"].values).mean() > 0.5


def test_surface_t2_per_subregion_equals_the_volumetric_mean_real_anatomy(knee_labelmap_dir):
    from KneeT2SegmentLib import anatomy as an
    from KneeT2SegmentLib import simulator as sm
    from mskquant.imageio import read_image

    labels = read_image(knee_labelmap_dir / "9002817.nii.gz")
    ph = sm.simulate(an.prepare_anatomy(labels, "right", "9002817", "9002817"), sm.PhantomParameters(snr=40.0, seed=5))
    _surface_t2_within(labels, ph)


def test_knee_morph_command_files_and_contract(analytic, cli, tmp_path):
    from KneeT2SegmentLib.morphometry.projection import read_vtp
    from mskquant.imageio import read_image

    d = analytic["dir"]
    out = tmp_path / "out"
    rc, stdout, err = cli("knee-morph", "--labels", d / "labels.nii.gz", "--laterality", "right",
                          "--mese", d / "mese" / "mese.nii.gz", "--out", out, "-q")
    assert rc == 0, err
    assert "cartilage thickness (mm): femoral" in stdout
    for name in ("labels.nii.gz", "labels.ctbl", "thickness.csv", "thickness.nii.gz", "morph.json",
                 "bone_surface_femur.vtp", "bone_surface_tibia.vtp", "bone_surface_patella.vtp",
                 "maps/femur_thickness_mm.png", "maps/femur_thickness_mm.npy", "maps/femur_t2_ms.png"):
        assert (out / name).is_file(), name
    rows = _rows(out / "thickness.csv")
    assert list(rows[0]) == ["plate", "region", "mean_mm", "sd_mm", "p5_mm", "p95_mm", "n_points"]
    whole = {r["plate"]: r for r in rows if r["region"] == "all"}
    assert set(whole) == {"femoral", "medial tibial", "lateral tibial", "patellar"}
    for r in whole.values():
        assert int(r["n_points"]) > 100 and 0.5 < float(r["mean_mm"]) < 5.0
        assert float(r["p5_mm"]) <= float(r["mean_mm"]) <= float(r["p95_mm"])
    labels = read_image(out / "labels.nii.gz")
    assert np.array_equal(labels.array, analytic["labels"].array) and labels.geometry.same_grid(
        analytic["labels"].geometry)
    thick = read_image(out / "thickness.nii.gz").array
    assert np.all(thick[labels.array == 0] == 0) and (thick[labels.array == 2] > 0).mean() > 0.9
    pd = read_vtp(out / "bone_surface_femur.vtp").GetPointData()
    for name in ("thickness_mm", "t2_ms", "articular", "region"):
        assert pd.GetArray(name) is not None, name
    summary = json.loads((out / "morph.json").read_text())
    assert summary["missing_bones"] == [] and set(summary["bones"]) == {"femur", "tibia", "patella"}
    for b in summary["bones"].values():
        assert b["volume_mm3"] > 0 and 0 < b["articular_area_mm2"] < b["area_mm2"]
    surf = summary["t2"]["surface_femoral_subregions"]
    assert len(surf) == 12 and all(abs(r["surface_mean_t2_ms"] - r["volumetric_mean_t2_ms"]) < 1.0 for r in surf)
    assert summary["t2"]["registration"]["method"] == "scanner coordinates"
    lines = (out / "labels.ctbl").read_text().splitlines()
    assert lines[2].startswith("1 femur ") and lines[-1].startswith("6 patellar_cartilage ")
    # results already there: refused without --overwrite, nothing changed
    before = (out / "morph.json").stat().st_mtime_ns
    rc, _, err = cli("knee-morph", "--labels", d / "labels.nii.gz", "--out", out, "-q")
    assert rc == 2 and "--overwrite" in err and (out / "morph.json").stat().st_mtime_ns == before


def test_missing_patella_is_reported_not_a_crash(analytic, cli, tmp_path):
    from mskquant.imageio import write_image

    lab = analytic["labels"].array.copy()
    lab[np.isin(lab, (5, 6))] = 0  # no patella in the field of view
    write_image(Image(lab, analytic["labels"].geometry), tmp_path / "nopatella.nii.gz")
    rc, _, err = cli("knee-morph", "--labels", tmp_path / "nopatella.nii.gz", "--laterality", "right",
                     "--out", tmp_path / "o", "-q")
    assert rc == 0, err
    assert "patella" in err  # the warning names what is missing
    summary = json.loads((tmp_path / "o" / "morph.json").read_text())
    assert summary["missing_bones"] == ["patella"] and "patellar cartilage" in summary["labels"]["missing"]
    assert not (tmp_path / "o" / "bone_surface_patella.vtp").exists()
    pat = [r for r in _rows(tmp_path / "o" / "thickness.csv") if r["plate"] == "patellar"]
    assert pat and all(r["n_points"] == "0" and r["mean_mm"] == "" for r in pat)


def test_bad_input_is_refused_with_the_reason(analytic, cli, tmp_path):
    from mskquant.imageio import write_image

    g = analytic["labels"].geometry
    thick = Geometry.from_spacing((64, 64, 20), (0.4, 0.4, 3.0))
    write_image(Image(np.ones((20, 64, 64), np.float32), thick), tmp_path / "thick.nii.gz")
    rc, _, err = cli("knee-morph", "--image", tmp_path / "thick.nii.gz", "--out", tmp_path / "a", "-q")
    assert rc == 2 and "3.00 mm" in err and "at most 1.5 mm" in err and not (tmp_path / "a").exists()
    flat = Geometry.from_spacing((64, 64, 1), (0.4, 0.4, 0.7))
    write_image(Image(np.ones((1, 64, 64), np.float32), flat), tmp_path / "flat.nii.gz")
    rc, _, err = cli("knee-morph", "--image", tmp_path / "flat.nii.gz", "--out", tmp_path / "b", "-q")
    assert rc == 2 and "2D" in err and not (tmp_path / "b").exists()
    write_image(Image(np.zeros(g.shape_kji, np.uint8), g), tmp_path / "empty.nii.gz")
    rc, _, err = cli("knee-morph", "--labels", tmp_path / "empty.nii.gz", "--out", tmp_path / "c", "-q")
    assert rc == 2 and "no cartilage" in err and not (tmp_path / "c").exists()
    rc, _, err = cli("knee-morph", "--out", tmp_path / "d", "-q")
    assert rc == 2 and "--image" in err


def test_knee_morph_cohort_through_batch(analytic, cli, tmp_path):
    """``mskquant batch knee-morph``: each good case equals the single-case command, a bad row fails alone."""
    from distributed import Client, LocalCluster

    from mskquant import batch

    d = analytic["dir"]
    rows = [["a", str(d / "labels.nii.gz"), "right"], ["b", str(d / "labels.nii.gz"), "left"],
            ["bad", str(tmp_path / "missing.nii.gz"), "right"]]
    with open(tmp_path / "cohort.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["case", "labels", "laterality"]] + rows)
    rc, _, _ = cli("knee-morph", "--labels", d / "labels.nii.gz", "--laterality", "right", "--out", tmp_path / "ref",
                   "-q")
    assert rc == 0
    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=True, resources={"case": 1},
                           dashboard_address=None)
    try:
        with Client(cluster) as client:
            res = batch.run("knee-morph", tmp_path / "cohort.csv", tmp_path / "batch", client=client)
    finally:
        cluster.close()
    status = {r["case"]: r for r in res.status}
    assert res.exit_code == 1 and [status[c]["state"] for c in ("a", "b", "bad")] == ["ok", "ok", "failed"]
    assert "missing.nii.gz" in status["bad"]["error"]
    assert _rows(tmp_path / "batch" / "cases" / "a" / "thickness.csv") == _rows(tmp_path / "ref" / "thickness.csv")
    plates = {(r["case"], r["plate"]) for r in res.cohort if r["region"] == "all"}
    assert ("a", "femoral") in plates and ("b", "patellar") in plates
    assert (tmp_path / "batch" / "summary.png").is_file()


def test_super_resolve_before_segmenting_a_thick_slice_image(analytic, cli, tmp_path):
    """knee-morph --super-resolve: a 3x thick-sliced image is restored onto the fine slice grid by the
    bundled SR network, segmented there by the bundled ensemble and measured; without the option it is refused."""
    from KneeT2SegmentLib import dess
    from KneeT2SegmentLib.superres import degrade as dg
    from mskquant.imageio import read_image, write_image

    vol = dess.native_grid_dess(analytic["labels"], np.random.default_rng(1), snr=40.0)
    thick = dg.thick_slices(vol.image, 3)
    write_image(thick, tmp_path / "thick.nii.gz")
    rc, _, err = cli("knee-morph", "--image", tmp_path / "thick.nii.gz", "--out", tmp_path / "refused", "-q")
    assert rc == 2 and "super-resolution" in err and not (tmp_path / "refused").exists()
    rc, _, err = cli("knee-morph", "--image", tmp_path / "thick.nii.gz", "--super-resolve", "--laterality", "right",
                     "--out", tmp_path / "sr", "-q")
    assert rc == 0, err
    labels = read_image(tmp_path / "sr" / "labels.nii.gz")
    fine = dg.fine_geometry(thick.geometry, 3)
    assert labels.geometry.same_grid(fine)  # on the super-resolved (fine) slice grid
    summary = json.loads((tmp_path / "sr" / "morph.json").read_text())
    sr = summary["segmentation"]["super_resolution"]
    assert sr["factor"] == 3 and "not validated on real scans" in sr["note"]
    assert "on the super-resolved image" in summary["labels"]["source"]
    rc, _, err = cli("knee-morph", "--labels", analytic["dir"] / "labels.nii.gz", "--super-resolve",
                     "--out", tmp_path / "both", "-q")
    assert rc == 2 and "label map" in err
