"""Issue 9 item 5: after each module's pipeline on the headless scene, the scene saved as a
Medical Reality Bundle (``.mrb``) and reloaded into a fresh scene comes back identical —
parameter node values, volumes (voxels and geometry), segmentations (segments, colours,
terminology, masks, the hidden automatic copy and the user's edit), tables, colour tables,
attributes and node references — and the results recomputed from the reloaded nodes equal
the saved ones."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mskquant import mrml
from mskquant.headless import create_headless_runtime
from mskquant.image import Geometry, Image, resample_nearest
from mskquant.scenebundle import load_scene_bundle, save_scene_bundle

STATE_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLTableNode",
                 "vtkMRMLScriptedModuleNode", "vtkMRMLColorNode")


def _user_nodes(scene, before_ids=()):
    out = {}
    for n in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(n)
        if node.GetID() in before_ids:
            continue
        if any(node.IsA(c) for c in STATE_CLASSES) and not node.GetSingletonTag():
            out[node.GetName()] = node
    return out


def _geometry(seg_node) -> Geometry:
    """The grid a segmentation was made on (its reference volume)."""
    ref = seg_node.GetNodeReference(seg_node.GetReferenceImageGeometryReferenceRole())
    assert ref is not None, f"segmentation {seg_node.GetName()} has no reference volume: give the grid"
    return mrml.geometry_of(ref)


def state(node, geometry_for_segments=None):
    """Everything a user or the logic reads back from a node, as plain values."""
    s = {"class": node.GetClassName(),
         "attributes": {a: node.GetAttribute(a) for a in (node.GetAttributeNames() or ())},
         "references": sorted((role, node.GetNthNodeReference(role, k).GetName())
                              for role in (node.GetNthNodeReferenceRole(r) for r in
                                           range(node.GetNumberOfNodeReferenceRoles()))
                              for k in range(node.GetNumberOfNodeReferences(role))
                              if node.GetNthNodeReference(role, k) is not None
                              and role not in ("display", "storage"))}
    if node.IsA("vtkMRMLScalarVolumeNode"):
        s["image"] = mrml.image_from_volume(node)
        d = node.GetDisplayNode()
        s["display"] = None if d is None else (d.GetColorNode().GetName() if d.GetColorNode() else None,
                                               *((d.GetWindow(), d.GetLevel()) if hasattr(d, "GetWindow") else ()))
    elif node.IsA("vtkMRMLSegmentationNode"):
        seg = node.GetSegmentation()
        g = geometry_for_segments or _geometry(node)
        segs = []
        for k in range(seg.GetNumberOfSegments()):
            sg = seg.GetNthSegment(k)
            segs.append((seg.GetNthSegmentID(k), sg.GetName(), tuple(round(c, 4) for c in sg.GetColor()),
                         sg.GetTerminology(), mrml.segment_mask(node, seg.GetNthSegmentID(k), g).tobytes()))
        s["segments"] = segs
        d = node.GetDisplayNode()
        s["visible"] = None if d is None else bool(d.GetVisibility())
    elif node.IsA("vtkMRMLTableNode"):
        # Slicer's table files (.tsv) keep 6 significant digits; exact values live in node attributes
        s["columns"] = {k: [float(f"{v:.6g}") if isinstance(v, float) else v for v in vals]
                        for k, vals in mrml.columns_from_table(node).items()}
    elif node.IsA("vtkMRMLScriptedModuleNode"):
        s["parameters"] = {p: node.GetParameter(p) for p in node.GetParameterNames()}
    elif node.IsA("vtkMRMLColorNode"):
        rgba = [0.0] * 4
        colors = []
        for k in range(node.GetNumberOfColors()):
            node.GetColor(k, rgba)
            colors.append(tuple(round(c, 4) for c in rgba))
        s["colors"] = colors
        if node.IsA("vtkMRMLProceduralColorNode"):
            s["range"] = tuple(node.GetColorTransferFunction().GetRange())
    return s


def assert_same(a, b, where=""):
    if isinstance(a, Image):
        # the same voxels in space: a file may store the grid in another voxel order (e.g. a
        # sequence's proxy volume comes back with its slice axis reversed), never other values
        corners = lambda g: sorted(map(tuple, np.round(g.corners_ras(), 4)))  # noqa: E731
        assert a.array.shape == b.array.shape and corners(a.geometry) == corners(b.geometry), where
        np.testing.assert_array_equal(a.array, b.array if a.geometry.same_grid(b.geometry) else
                                      resample_nearest(b.array, b.geometry, a.geometry), err_msg=where)
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-9), where  # the .mrml file's decimal digits
    elif isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b) and \
            any(isinstance(x, float) for x in a):
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{k}]")
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def round_trip(rt, tmp_path, before_ids, grid=None):
    """Save ``rt``'s scene as .mrb, load it into a fresh runtime, compare every node added by the pipeline."""
    original = _user_nodes(rt.scene, before_ids)
    assert original, "the pipeline added no nodes"
    path = save_scene_bundle(rt, tmp_path / "scene.mrb")
    assert path.is_file() and path.stat().st_size > 0
    fresh = create_headless_runtime()
    defaults = _ids(fresh.scene)
    load_scene_bundle(fresh, path)
    reloaded = _user_nodes(fresh.scene, defaults)
    missing = sorted(set(original) - set(reloaded))
    assert not missing, f"not in the reloaded scene: {missing}"
    for name, node in original.items():
        assert_same(state(node, grid), state(reloaded[name], grid), name)
    return fresh, reloaded


def _ids(scene):
    return {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}


def test_vhi_scene_round_trips_with_the_edit_and_recomputes_the_same_vhi(runtime, tmp_path):
    from VHIWorkflowLib.logic import SEG_SENSITIVE, VHILogic
    from VHIWorkflowLib.parameters import VHIParameters
    from VHIWorkflowLib.synthetic import make_case

    import slicer

    case = make_case()
    before = _ids(runtime.scene)
    stir = mrml.volume_from_image(runtime, case.stir, "STIR")
    roi = mrml.volume_from_image(runtime, case.normal_roi, "normal bone", labelmap=True)
    region = mrml.volume_from_image(runtime, case.disease_region, "disease region", labelmap=True)
    params = VHIParameters(min_island_pixels=5, primary="conservative")
    node = runtime.scene.AddNode(slicer.vtkMRMLScriptedModuleNode())
    node.SetName("VHIWorkflow parameters")
    params.save_to_node(node)
    logic = VHILogic(runtime)
    res = logic.run(stir, roi, disease_region=region, params=params)
    g = res.geometry
    cleaned = mrml.segment_mask(res.segmentation, SEG_SENSITIVE, g)
    cleaned[2:4] = False  # the reader's edit
    mrml.set_segment(res.segmentation, mrml.SegmentSpec(SEG_SENSITIVE, cleaned, (1, 0.85, 0.1)), g)
    saved = logic.recompute(res.segmentation)
    assert logic.is_edited(res.segmentation) and saved["sensitive"].voxels < res.vhi["sensitive"].voxels

    fresh, nodes = round_trip(runtime, tmp_path, before)
    seg = nodes[res.segmentation.GetName()]
    automatic = nodes[res.automatic.GetName()]
    assert automatic.GetDisplayNode() is not None and not automatic.GetDisplayNode().GetVisibility()
    assert VHIParameters.load_from_node(nodes["VHIWorkflow parameters"]) == params
    again = VHILogic(fresh)
    assert again.is_edited(seg)
    recomputed = again.recompute(seg)
    for key in ("sensitive", "conservative"):
        assert recomputed[key].voxels == saved[key].voxels, key
        assert recomputed[key].volume_mm3 == pytest.approx(saved[key].volume_mm3, rel=1e-12), key
    again.restore_automatic(seg)  # the hidden copy still undoes the edit after the reload
    assert again.recompute(seg)["sensitive"].voxels == res.vhi["sensitive"].voxels


def test_knee_scene_round_trips_with_the_edited_cartilage(runtime, tmp_path):
    from KneeT2SegmentLib import anatomy as an
    from KneeT2SegmentLib import simulator as sm
    from KneeT2SegmentLib.logic import CARTILAGE_SEGMENT, KneeT2Logic
    from KneeT2SegmentLib.parameters import KneeT2Parameters

    import slicer

    anat = an.prepare_anatomy(an.analytic_knee(), None, "analytic", "analytic knee")
    ph = sm.simulate(anat, sm.PhantomParameters(snr=40.0, matrix=(224, 144), fov_mm=(70.0, 64.2)))
    before = _ids(runtime.scene)
    logic = KneeT2Logic(runtime)
    params = KneeT2Parameters(noise_sigma=ph.sigma, t2_max_ms=90.0)
    node = runtime.scene.AddNode(slicer.vtkMRMLScriptedModuleNode())
    node.SetName("KneeT2Segment parameters")
    params.save_to_node(node)
    seq, _ = logic.add_mese(ph.series, "MESE")
    g = ph.series.geometry
    seg = mrml.segmentation_from_masks(runtime, "cartilage", [mrml.SegmentSpec(
        CARTILAGE_SEGMENT, ph.cartilage_mask.array, (0.2, 0.75, 0.95))], g)
    edited = ph.cartilage_mask.array.copy()
    edited[int(np.argmax(edited.sum(axis=(1, 2))))] = False  # the reader removes one slice
    mrml.set_segment(seg, mrml.SegmentSpec(CARTILAGE_SEGMENT, edited, (0.2, 0.75, 0.95)), g,
                     mrml.find_segment_id(seg, CARTILAGE_SEGMENT))
    res = logic.run(seq, seg, CARTILAGE_SEGMENT, params, name="knee")

    fresh, nodes = round_trip(runtime, tmp_path, before, grid=g)
    assert KneeT2Parameters.load_from_node(nodes["KneeT2Segment parameters"]) == params
    np.testing.assert_array_equal(mrml.segment_mask(nodes["cartilage"], CARTILAGE_SEGMENT, g), edited)
    # the T2 statistics recomputed from the reloaded edited segment equal the saved table
    fresh_logic = KneeT2Logic(fresh)
    seq2, _ = fresh_logic.add_mese(ph.series, "MESE again")
    rerun = fresh_logic.run(seq2, nodes["cartilage"], CARTILAGE_SEGMENT, params, name="rerun")
    assert [r.as_row() for r in rerun.quant.rows] == [r.as_row() for r in res.quant.rows]


def test_pain_cam_scene_round_trips(runtime, tmp_path):
    from SiamesePainCAMLib import simulator as sim
    from SiamesePainCAMLib.logic import HEAT_COLOR_NODE, PainCAMLogic

    anat = sim.build_anatomy(sim.analytic_knee_labels(), "analytic", seed=99)
    pair = sim.simulate_pair(anat, np.random.default_rng(21), "scene", painful_side="right", lesion_kind="effusion")
    before = _ids(runtime.scene)
    left = mrml.volume_from_image(runtime, pair.left.image, "L knee")
    right = mrml.volume_from_image(runtime, pair.right.image, "R knee")
    res = PainCAMLogic(runtime).run(left, right, name="Pain CAM")
    fresh, nodes = round_trip(runtime, tmp_path, before)
    assert HEAT_COLOR_NODE in nodes
    for side in ("left", "right"):
        cam = nodes[res.cam_volumes[side].GetName()]
        assert cam.GetDisplayNode().GetColorNode().GetName() == HEAT_COLOR_NODE
        assert cam.GetAttribute("MSKQuant.MaxCamSlice") == str(res.analysis.max_cam_slice[side])
    table = nodes[res.table.GetName()]
    assert float(table.GetAttribute("MSKQuant.p_right_painful")) == res.analysis.p_right_painful
