"""VHIWorkflow MRML logic on real slicer-core nodes with the synthetic case (answer known by
construction): every kind of ROI, grid handling, segment output, cleaning and recompute."""

from __future__ import annotations

import numpy as np
import pytest

from mskquant import mrml
from mskquant.errors import InputError
from mskquant.image import Geometry, Image
from VHIWorkflowLib.logic import (SEG_CONSERVATIVE, SEG_DISEASE, SEG_NORMAL, SEG_SENSITIVE, VHILogic)
from VHIWorkflowLib.synthetic import EXPECTED, make_case


@pytest.fixture
def case():
    return make_case()


def nodes(rt, case):
    stir = mrml.volume_from_image(rt, case.stir, "STIR")
    roi = mrml.volume_from_image(rt, case.normal_roi, "normal bone", labelmap=True)
    region = mrml.volume_from_image(rt, case.disease_region, "disease region", labelmap=True)
    return stir, roi, region


def test_synthetic_case_gives_the_constructed_answer(runtime, case):
    stir, roi, region = nodes(runtime, case)
    calls = []
    res = VHILogic(runtime).run(stir, roi, disease_region=region, progress=lambda f, m: calls.append(f))
    th = res.thresholds
    for k in ("q1", "q3", "iqr", "upper", "n", "lower"):
        assert getattr(th, k) == pytest.approx(EXPECTED[k]), k
    g = res.geometry
    np.testing.assert_array_equal(mrml.segment_mask(res.segmentation, SEG_SENSITIVE, g), case.expected_sensitive)
    np.testing.assert_array_equal(mrml.segment_mask(res.segmentation, SEG_CONSERVATIVE, g), case.expected_conservative)
    np.testing.assert_array_equal(mrml.segment_mask(res.segmentation, SEG_DISEASE, g), case.disease_region.array)
    np.testing.assert_array_equal(mrml.segment_mask(res.segmentation, SEG_NORMAL, g), case.normal_roi.array)
    assert res.vhi["sensitive"].voxels == EXPECTED["sensitive_voxels"] == 32
    assert res.vhi["conservative"].voxels == EXPECTED["conservative_voxels"] == 6
    assert res.vhi["sensitive"].volume_mm3 == pytest.approx(32 * 0.6 * 0.6 * 3.3)
    assert res.disease_region_source == "input"
    assert g.same_grid(case.stir.geometry)
    assert calls == sorted(calls) and calls[-1] == 1.0
    # table node: one row per mask with the thresholds
    cols = mrml.columns_from_table(res.table)
    assert cols["mask"] == ["sensitive", "conservative"] and cols["voxels"] == [32, 6]
    assert cols["threshold_value"] == pytest.approx([277.5, 300.0]) and cols["edited"] == [0, 0]
    # segments carry colours and terminology
    seg = res.segmentation.GetSegmentation()
    assert "Edema" in seg.GetSegment(mrml.find_segment_id(res.segmentation, SEG_SENSITIVE)).GetTerminology()


def test_roi_as_segment_box_and_closed_curve(runtime, case):
    logic = VHILogic(runtime)
    stir, roi_label, _ = nodes(runtime, case)
    g = case.stir.geometry
    roi = case.normal_roi.array
    seg = mrml.segmentation_from_masks(runtime, "rois", [mrml.SegmentSpec("other", ~roi, (0, 0, 1)),
                                                         mrml.SegmentSpec("normal marrow", roi, (0, 1, 0))], g)
    np.testing.assert_array_equal(logic.region_mask(seg, g, "normal marrow"), roi)
    with pytest.raises(InputError, match="2 segments"):
        logic.region_mask(seg, g, None)
    # a box around the 10 x 10 block on slice 1 (voxel centres i 2..11, j 2..11, k 1)
    box = runtime.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    centre = g.ijk_to_ras @ np.array([6.5, 6.5, 1, 1])
    box.SetCenterWorld(*centre[:3])
    # i runs along R-L, k (slices, 3.3 mm) along A-P and j along S-I: the box is axis-aligned in RAS
    box.SetSize(10 * 0.6, 3.3, 10 * 0.6)
    m = logic.region_mask(box, g)
    assert m.sum() == 100 and m[1, 2:12, 2:12].all()
    # a closed curve drawn on slice 1 around the same block
    curve = runtime.scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode")
    curve.SetCurveTypeToLinear()
    for i, j in ((1.5, 1.5), (11.5, 1.5), (11.5, 11.5), (1.5, 11.5)):
        curve.AddControlPointWorld(*(g.ijk_to_ras @ np.array([i, j, 1, 1]))[:3])
    c = logic.region_mask(curve, g)
    assert c.sum() == 100 and c[1, 2:12, 2:12].all()
    # several curves on several slices are united
    curve2 = runtime.scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode")
    curve2.SetCurveTypeToLinear()
    for i, j in ((1.5, 1.5), (4.5, 1.5), (4.5, 4.5), (1.5, 4.5)):
        curve2.AddControlPointWorld(*(g.ijk_to_ras @ np.array([i, j, 2, 1]))[:3])
    assert logic.region_mask([curve, curve2], g).sum() == 109


def test_roi_problems_are_reported(runtime, case):
    logic = VHILogic(runtime)
    stir, _, region = nodes(runtime, case)
    g = case.stir.geometry
    empty = mrml.volume_from_image(runtime, Image(np.zeros(g.shape_kji, np.uint8), g), "empty", labelmap=True)
    with pytest.raises(InputError, match="empty"):
        logic.run(stir, empty, disease_region=region)
    small = np.zeros(g.shape_kji, np.uint8)
    small[1, 2, 2:7] = 1
    with pytest.raises(InputError, match="at least 10"):
        logic.run(stir, mrml.volume_from_image(runtime, Image(small, g), "small", labelmap=True), disease_region=region)
    far = Geometry(g.shape_ijk, g.ijk_to_ras + np.array([[0, 0, 0, 500.0]] * 3 + [[0, 0, 0, 0]]))
    away = mrml.volume_from_image(runtime, Image(case.normal_roi.array.astype(np.uint8), far), "away", labelmap=True)
    with pytest.raises(InputError, match="outside the STIR field of view"):
        logic.run(stir, away, disease_region=region)
    box = runtime.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    box.SetCenterWorld(900.0, 900.0, 900.0)
    box.SetSize(5.0, 5.0, 5.0)
    with pytest.raises(InputError, match="covers no voxel"):
        logic.run(stir, box, disease_region=region)
    flat = case.stir.array.copy()
    flat[case.normal_roi.array] = 50.0
    with pytest.raises(InputError, match="IQR = 0"):
        logic.run(mrml.volume_from_image(runtime, Image(flat, g), "flat"), mrml.volume_from_image(
            runtime, case.normal_roi, "r", labelmap=True), disease_region=region)
    nan = case.stir.array.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        logic.run(mrml.volume_from_image(runtime, Image(nan, g), "nan"), mrml.volume_from_image(
            runtime, case.normal_roi, "r2", labelmap=True), disease_region=region)


def test_disease_region_on_another_grid_is_mapped_to_stir(runtime, case):
    # the same disease region stored on a 2x finer in-plane grid (nearest-neighbour back onto STIR)
    g = case.stir.geometry
    m = g.ijk_to_ras.copy()
    m[:3, :2] /= 2
    m[:3, 3] -= 0.25 * (g.ijk_to_ras[:3, 0] + g.ijk_to_ras[:3, 1])
    fine = Geometry((g.shape_ijk[0] * 2, g.shape_ijk[1] * 2, g.shape_ijk[2]), m)
    fine_region = np.repeat(np.repeat(case.disease_region.array, 2, axis=1), 2, axis=2)
    stir, roi, _ = nodes(runtime, case)
    region = mrml.volume_from_image(runtime, Image(fine_region.astype(np.uint8), fine), "fine region", labelmap=True)
    res = VHILogic(runtime).run(stir, roi, disease_region=region)
    np.testing.assert_array_equal(mrml.segment_mask(res.segmentation, SEG_DISEASE, g), case.disease_region.array)
    assert res.vhi["sensitive"].voxels == 32


def test_cleaning_recompute_restore_and_rerun_keep_the_users_edits(runtime, case):
    stir, roi, region = nodes(runtime, case)
    logic = VHILogic(runtime)
    res = logic.run(stir, roi, disease_region=region)
    g = res.geometry
    cleaned = mrml.segment_mask(res.segmentation, SEG_SENSITIVE, g)
    cleaned[2:4] = False  # the radiologist removes lesion A (18 voxels) as a vessel
    mrml.set_segment(res.segmentation, mrml.SegmentSpec(SEG_SENSITIVE, cleaned, (1, 0.85, 0.1)), g)
    vhi = logic.recompute(res.segmentation)
    assert vhi["sensitive"].voxels == 32 - 18 and logic.is_edited(res.segmentation)
    cols = mrml.columns_from_table(res.table)
    assert cols["voxels"][0] == 14 and cols["edited"] == [1, 1]
    # the automatic result is untouched
    np.testing.assert_array_equal(mrml.segment_mask(res.automatic, SEG_SENSITIVE, g), case.expected_sensitive)
    # running again creates new nodes: the edited segmentation is not overwritten
    res2 = logic.run(stir, roi, disease_region=region)
    assert res2.segmentation is not res.segmentation
    assert mrml.segment_mask(res.segmentation, SEG_SENSITIVE, g).sum() == 14
    # restore brings the automatic segments back
    logic.restore_automatic(res.segmentation)
    assert logic.recompute(res.segmentation)["sensitive"].voxels == 32 and not logic.is_edited(res.segmentation)


def test_export_writes_table_segmentation_and_labelmap(runtime, case, tmp_path):
    from mskquant.imageio import read_image

    stir, roi, region = nodes(runtime, case)
    logic = VHILogic(runtime)
    res = logic.run(stir, roi, disease_region=region)
    paths = logic.export(res, tmp_path)
    assert sorted(p.name for p in paths) == ["inflammation.nii.gz", "inflammation.seg.nrrd", "vhi.csv"]
    lab = read_image(tmp_path / "inflammation.nii.gz")
    assert lab.geometry.same_grid(case.stir.geometry)
    assert (lab.array == 1).sum() == 26 and (lab.array == 2).sum() == 6
    seg = mrml.load_segmentation(runtime, tmp_path / "inflammation.seg.nrrd")
    assert mrml.segment_names(seg) == [SEG_DISEASE, SEG_NORMAL, SEG_SENSITIVE, SEG_CONSERVATIVE]


def test_parameters_persist_in_a_parameter_node(runtime):
    import slicer
    from VHIWorkflowLib.parameters import VHIParameters

    node = runtime.scene.AddNode(slicer.vtkMRMLScriptedModuleNode())
    VHIParameters(min_island_pixels=6, primary="conservative").save_to_node(node)
    p = VHIParameters.load_from_node(node)
    assert p.min_island_pixels == 6 and p.primary == "conservative" and p.n_step == 0.05
    with pytest.raises(InputError):
        VHIParameters(primary="both").validate()


def test_comparison_tools_as_table_and_plot_nodes(runtime, case):
    logic = VHILogic(runtime)
    stir, roi, region = nodes(runtime, case)
    res = logic.run(stir, roi, disease_region=region)
    g = res.geometry
    reader = mrml.segmentation_from_masks(runtime, "reader 2", [mrml.SegmentSpec(
        "lesions", case.expected_sensitive & (np.arange(6)[:, None, None] != 0), (1, 0, 0))], g)
    c, table = logic.compare_segments(res.segmentation, SEG_SENSITIVE, reader, "lesions", g)
    # reader 2 omitted the 4 diagonal pixels of slice 0: 28 of 32 shared
    assert (c.voxels_a, c.voxels_b) == (32, 28) and c.dice == pytest.approx(2 * 28 / 60)
    assert mrml.columns_from_table(table)["dice"] == pytest.approx([2 * 28 / 60])
    ba, t2, chart = logic.agreement_table(["s1", "s2", "s3"], [1.0, 2.0, 3.0], [1.2, 2.0, 3.4])
    assert ba.mean_difference == pytest.approx(0.2)
    assert chart.GetNumberOfPlotSeriesNodes() == 4 and t2.GetNumberOfRows() == 3
    pre = res.vhi
    cleaned = mrml.segment_mask(res.segmentation, SEG_SENSITIVE, g)
    cleaned[2:4] = False
    mrml.set_segment(res.segmentation, mrml.SegmentSpec(SEG_SENSITIVE, cleaned, (1, 0.85, 0.1)), g)
    changes, t3 = logic.change_table("synthetic", pre, logic.recompute(res.segmentation))
    assert changes["sensitive"].change_ml == pytest.approx(-18 * g.voxel_volume_mm3 / 1000)
    assert changes["sensitive"].improved and mrml.columns_from_table(t3)["improved"] == [1, 0]
