"""Real MRML nodes on slicer-core: volumes, segmentations, tables, sequences, markups and
colour tables round-trip through numpy and files with geometry and values intact."""

from __future__ import annotations

import numpy as np
import pytest

from mskquant import imageio, mrml
from mskquant.image import Geometry, Image


def oblique_geometry(shape_ijk=(7, 6, 5)):
    # a rotated, anisotropic, non-axis-aligned grid like the SIJ scans
    a = np.deg2rad(25)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]) @ \
        np.array([[-1, 0, 0], [0, 0, 1], [0, 1, 0]], float)
    return Geometry.from_spacing(shape_ijk, (0.6, 0.45, 3.3), (12.5, -40.0, 7.25), rot)


def test_volume_roundtrip_numpy_node_file(runtime, tmp_path):
    g = oblique_geometry()
    arr = np.random.default_rng(0).normal(100, 20, g.shape_kji).astype(np.float32)
    node = mrml.volume_from_image(runtime, Image(arr, g), "T1W")
    assert node.GetClassName() == "vtkMRMLScalarVolumeNode"
    back = mrml.image_from_volume(node)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.geometry.ijk_to_ras, g.ijk_to_ras, atol=1e-9)
    np.testing.assert_allclose(node.GetSpacing(), g.spacing, atol=1e-9)
    np.testing.assert_allclose(node.GetOrigin(), g.origin, atol=1e-9)
    for suffix in (".nii.gz", ".nrrd"):
        path = mrml.save_volume(node, tmp_path / f"v{suffix}")
        node2 = mrml.load_volume(runtime, path)
        img2 = mrml.image_from_volume(node2)
        np.testing.assert_array_equal(img2.array, arr)
        np.testing.assert_allclose(img2.geometry.ijk_to_ras, g.ijk_to_ras, atol=1e-4)


def test_linear_parent_transform_is_applied(runtime):
    g = oblique_geometry()
    node = mrml.volume_from_image(runtime, Image(np.zeros(g.shape_kji, np.int16), g), "v")
    t = runtime.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    m = np.eye(4)
    m[:3, 3] = (5, -3, 2)
    import vtk
    vm = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vm.SetElement(r, c, m[r, c])
    t.SetMatrixTransformToParent(vm)
    node.SetAndObserveTransformNodeID(t.GetID())
    np.testing.assert_allclose(mrml.geometry_of(node).origin, g.origin + (5, -3, 2), atol=1e-9)


def test_segmentation_masks_roundtrip_through_seg_nrrd(runtime, tmp_path):
    g = oblique_geometry()
    rng = np.random.default_rng(1)
    a = rng.random(g.shape_kji) > 0.6
    b = rng.random(g.shape_kji) > 0.8
    ref = mrml.volume_from_image(runtime, Image(np.zeros(g.shape_kji, np.float32), g), "ref")
    term = mrml.terminology_entry(("SCT", "85756007", "Tissue"), ("SCT", "14016003", "Bone marrow"))
    seg = mrml.segmentation_from_masks(runtime, "seg", [mrml.SegmentSpec("A", a, (1, 0, 0)),
                                                        mrml.SegmentSpec("B", b, (0, 1, 0), term)], g, ref)
    assert mrml.segment_names(seg) == ["A", "B"]
    np.testing.assert_array_equal(mrml.segment_mask(seg, "A", g), a)
    np.testing.assert_array_equal(mrml.segment_mask(seg, "B", g), b)  # overlapping segments stay separate
    path = mrml.save_segmentation(seg, tmp_path / "s.seg.nrrd")
    seg2 = mrml.load_segmentation(runtime, path)
    np.testing.assert_array_equal(mrml.segment_mask(seg2, "A", g), a)
    s = seg2.GetSegmentation().GetSegment(mrml.find_segment_id(seg2, "B"))
    assert "Bone marrow" in s.GetTerminology()
    np.testing.assert_allclose(s.GetColor(), (0, 1, 0))


def test_segment_mask_resamples_onto_another_grid(runtime):
    fine = Geometry.from_spacing((20, 20, 4), (0.5, 0.5, 2.0), (0, 0, 0))
    coarse = Geometry.from_spacing((10, 10, 4), (1.0, 1.0, 2.0), (0.25, 0.25, 0))
    m = np.zeros(fine.shape_kji, bool)
    m[1:3, 4:12, 6:14] = True
    seg = mrml.segmentation_from_masks(runtime, "s", [mrml.SegmentSpec("m", m, (1, 1, 0))], fine)
    on_coarse = mrml.segment_mask(seg, "m", coarse)
    assert on_coarse.shape == coarse.shape_kji
    assert on_coarse[1:3, 2:6, 3:7].all() and on_coarse.sum() == 2 * 4 * 4


def test_unknown_segment_names_the_choices(runtime):
    from mskquant.errors import InputError

    g = oblique_geometry()
    seg = mrml.segmentation_from_masks(runtime, "s", [mrml.SegmentSpec("Cartilage", np.ones(g.shape_kji, bool),
                                                                        (1, 0, 0))], g)
    with pytest.raises(InputError, match="Cartilage"):
        mrml.segment_mask(seg, "Bone", g)


def test_table_roundtrip_csv(runtime, tmp_path):
    t = mrml.table_from_columns(runtime, "vhi", {"mask": ["sensitive", "conservative"], "voxels": [26, 4],
                                                  "volume_ml": [0.0309, 0.00475]})
    assert t.GetNumberOfRows() == 2 and t.GetNumberOfColumns() == 3
    path = mrml.write_table_csv(t, tmp_path / "vhi.csv")
    assert path.read_text().splitlines()[0] == "mask,voxels,volume_ml"
    t2 = mrml.table_from_csv(runtime, path)
    cols = mrml.columns_from_table(t2)
    assert cols["mask"] == ["sensitive", "conservative"] and cols["voxels"] == [26, 4]
    np.testing.assert_allclose(cols["volume_ml"], [0.0309, 0.00475])


def test_echo_sequence_roundtrip(runtime):
    g = oblique_geometry()
    echoes = [Image(np.full(g.shape_kji, 1000 * np.exp(-te / 35), np.float32), g) for te in (10, 20, 30)]
    seq, browser = mrml.sequence_from_images(runtime, echoes, [10, 20, 30], "MESE")
    assert seq.GetIndexUnit() == "ms" and seq.GetNumberOfDataNodes() == 3
    assert browser.GetProxyNode(seq) is not None
    images, tes = mrml.images_from_sequence(seq)
    assert tes == [10.0, 20.0, 30.0]
    for a, b in zip(images, echoes):
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_allclose(a.geometry.ijk_to_ras, g.ijk_to_ras, atol=1e-9)


def test_markups_roi_and_closed_curve_rasterise(runtime):
    g = Geometry.from_spacing((40, 30, 5), (0.5, 0.5, 3.0), (0, 0, 0))
    roi = runtime.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenterWorld(5.0, 5.0, 6.0)  # voxel (10, 10, 2)
    roi.SetSize(2.2, 3.2, 1.0)
    m = mrml.roi_mask(roi, g)
    assert m.sum() == 5 * 7 * 1 and m[2, 7:14, 8:13].all()
    curve = runtime.scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode")
    curve.SetCurveTypeToLinear()
    for x, y in ((2.0, 2.0), (8.0, 2.0), (8.0, 6.0), (2.0, 6.0)):
        curve.AddControlPointWorld(x, y, 3.0)  # slice k = 1
    c = mrml.closed_curve_mask(curve, g)
    assert c[1].sum() > 0 and c[[0, 2, 3, 4]].sum() == 0
    # interior pixels of a 6 x 4 mm rectangle at 0.5 mm: 12 x 8 (edges are ambiguous, so check the core)
    assert c[1, 5:12, 5:16].all() and c[1].sum() <= 13 * 9


def test_curve_across_slices_is_refused(runtime):
    from mskquant.errors import InputError

    g = Geometry.from_spacing((40, 30, 5), (0.5, 0.5, 3.0), (0, 0, 0))
    curve = runtime.scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode")
    for x, y, z in ((2, 2, 0), (8, 2, 3), (8, 6, 6), (2, 6, 9)):
        curve.AddControlPointWorld(float(x), float(y), float(z))
    with pytest.raises(InputError, match="one slice"):
        mrml.closed_curve_mask(curve, g)


def test_colour_tables_and_plot(runtime):
    ct = mrml.color_table(runtime, "labels", [(1, "Deep medial anterior", (1, 0, 0)), (12, "last", (0, 0, 1))])
    assert ct.GetNumberOfColors() == 13 and ct.GetColorName(1) == "Deep medial anterior"
    cn = mrml.continuous_color_node(runtime, "T2 0-100 ms", [(0, (0, 0, 1)), (100, (1, 0, 0))])
    rgb = [0.0, 0.0, 0.0]
    cn.GetColorTransferFunction().GetColor(100, rgb)
    assert rgb == [1.0, 0.0, 0.0]
    t = mrml.table_from_columns(runtime, "t", {"x": [1.0, 2.0], "y": [3.0, 4.0]})
    chart = mrml.plot_chart(runtime, t, "x", ["y"], "chart")
    series = runtime.scene.GetNodeByID(chart.GetNthPlotSeriesNodeID(0))
    assert series.GetTableNode() is t and series.GetYColumnName() == "y"


def test_file_roundtrip_4d_nifti(tmp_path):
    g = oblique_geometry()
    arr = np.random.default_rng(3).random((4,) + g.shape_kji).astype(np.float32)
    imageio.write_image(Image(arr, g), tmp_path / "mese.nii.gz")
    back = imageio.read_image(tmp_path / "mese.nii.gz")
    assert back.is_series and back.array.shape == arr.shape
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.geometry.ijk_to_ras, g.ijk_to_ras, atol=1e-4)


@pytest.mark.parametrize("module", ["VHIWorkflow", "KneeT2Segment", "SiamesePainCAM"])
def test_panel_parameters_live_in_one_singleton_node_per_module(runtime, module):
    """The panels keep their parameters in the module's singleton node: created once, found
    again, and each module's parameters dataclass round-trips through it."""
    import importlib

    from mskquant.panel import module_parameter_node

    node = module_parameter_node(module, runtime.scene)
    assert module_parameter_node(module, runtime.scene) is node
    assert node.GetName() == f"{module} parameters"
    assert runtime.scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1
    params_module = importlib.import_module(f"{module}Lib.parameters")
    cls = next(v for k, v in vars(params_module).items() if k.endswith("Parameters") and isinstance(v, type)
               and hasattr(v, "load_from_node") and v.__module__ == params_module.__name__)
    import dataclasses

    def changed(f, v):  # a value of the field's kind that differs from its default
        if isinstance(v, bool):
            return not v
        if isinstance(v, (int, float)):
            return v + 1
        return f"{v}-x" if isinstance(v, str) else v

    default = cls()
    if hasattr(cls, "validate"):  # keep values the dataclass accepts; a field it refuses keeps its default
        values = {}
        for f in dataclasses.fields(cls):
            trial = dataclasses.replace(default, **{**values, f.name: changed(f, getattr(default, f.name))})
            try:
                trial.validate()
                values[f.name] = getattr(trial, f.name)
            except Exception:
                pass
    else:
        values = {f.name: changed(f, getattr(default, f.name)) for f in dataclasses.fields(cls)}
    custom = dataclasses.replace(default, **values)
    assert len(values) >= 2 and custom != default
    custom.save_to_node(node)
    assert cls.load_from_node(module_parameter_node(module, runtime.scene)) == custom
    assert node.GetAttribute("ModuleName") == module  # how getAllParameterNodes finds it


def test_terminology_set_and_read_back_through_the_tag_api(runtime):
    """Segment terminology goes through ``SetTag(GetTerminologyEntryTagName(), ...)``, which
    Slicer 5.8 has too (``vtkSegment.SetTerminology`` is 5.10+), and reads back unchanged."""
    import inspect

    from VHIWorkflowLib.logic import SEG_SENSITIVE, SEGMENT_STYLE

    g = oblique_geometry()
    color, entry = SEGMENT_STYLE[SEG_SENSITIVE]
    mask = np.zeros(g.shape_kji, bool)
    mask[1, 2, 3] = True
    seg = mrml.segmentation_from_masks(runtime, "s", [mrml.SegmentSpec(SEG_SENSITIVE, mask, color, entry)], g)
    segment = seg.GetSegmentation().GetSegment(mrml.find_segment_id(seg, SEG_SENSITIVE))
    import slicer

    assert slicer.vtkSegment.GetTerminologyEntryTagName() == "TerminologyEntry"
    assert mrml.terminology_of(segment) == entry and "79654002" in entry
    assert "SetTerminology(" not in inspect.getsource(mrml)  # no 5.10-only call left
