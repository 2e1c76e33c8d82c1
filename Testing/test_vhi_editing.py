"""Cleaning a V_HI result through Segment Editor's own logic (vtkSlicerSegmentEditorLogic and a
vtkMRMLSegmentEditorNode on slicer-core) with the panel's hand-off settings: the other segments
stay intact, sensitive contains conservative, and the user's editor settings come back."""

from __future__ import annotations

import numpy as np

from mskquant import mrml
from VHIWorkflowLib.editing import NestedEditing
from VHIWorkflowLib.inflammation import nest_masks
from VHIWorkflowLib.logic import SEG_CONSERVATIVE, SEG_DISEASE, SEG_NORMAL, SEG_SENSITIVE, VHILogic
from VHIWorkflowLib.synthetic import make_case


def run_case(rt):
    case = make_case()
    stir = mrml.volume_from_image(rt, case.stir, "STIR")
    roi = mrml.volume_from_image(rt, case.normal_roi, "normal bone", labelmap=True)
    region = mrml.volume_from_image(rt, case.disease_region, "disease region", labelmap=True)
    return VHILogic(rt).run(stir, roi, disease_region=region), stir


def editor(rt, seg, stir):
    import slicer

    node = rt.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    logic = slicer.vtkSlicerSegmentEditorLogic()
    logic.SetMRMLScene(rt.scene)
    logic.SetSegmentEditorNode(node)
    node.SetAndObserveSegmentationNode(seg)
    node.SetAndObserveSourceVolumeNode(stir)
    return node, logic


def stroke(logic, seg, name, mask, g, mode):
    """One Segment Editor stroke (what Paint/Erase hand to the logic), masking not bypassed."""
    seg_id = mrml.find_segment_id(seg, name)
    logic.GetSegmentEditorNode().SetSelectedSegmentID(seg_id)
    logic.ModifySegmentByLabelmap(seg, seg_id, mrml._oriented_image(mask, g), mode, False, False)


def masks(seg, g):
    return {n: mrml.segment_mask(seg, n, g) for n in (SEG_DISEASE, SEG_NORMAL, SEG_SENSITIVE, SEG_CONSERVATIVE)}


def test_default_editor_settings_would_erase_the_other_segments(runtime):
    """The control: Segment Editor's defaults (overwrite all, edit everywhere) break the result,
    so the hand-off test below can fail."""
    import slicer

    res, stir = run_case(runtime)
    g = res.geometry
    node, logic = editor(runtime, res.segmentation, stir)
    assert node.GetOverwriteMode() == slicer.vtkMRMLSegmentEditorNode.OverwriteAllSegments
    before = masks(res.segmentation, g)
    stroke(logic, res.segmentation, SEG_CONSERVATIVE, before[SEG_SENSITIVE], g, logic.ModificationModeAdd)
    after = masks(res.segmentation, g)
    assert after[SEG_SENSITIVE].sum() < before[SEG_SENSITIVE].sum()  # sensitive V_HI silently dropped


def test_hand_off_keeps_v_hi_nested_and_restores_the_users_settings(runtime):
    import slicer

    E, S = slicer.vtkMRMLSegmentEditorNode, slicer.vtkMRMLSegmentationNode
    res, stir = run_case(runtime)
    seg, g = res.segmentation, res.geometry
    node, logic = editor(runtime, seg, stir)
    # the user's own settings before the hand-off
    node.SetOverwriteMode(E.OverwriteVisibleSegments)
    node.SetMaskMode(S.EditAllowedInsideAllSegments)
    node.SetSourceVolumeIntensityMask(True)
    before = masks(seg, g)
    assert before[SEG_CONSERVATIVE].sum() < before[SEG_SENSITIVE].sum()

    hand_off = NestedEditing(node, seg)
    hand_off.begin()
    assert node.GetOverwriteMode() == E.OverwriteNone and not node.GetSourceVolumeIntensityMask()
    # a big paint stroke into conservative, over the whole volume: it grows only inside sensitive
    everything = np.ones(g.shape_kji, bool)
    stroke(logic, seg, SEG_CONSERVATIVE, everything, g, logic.ModificationModeAdd)
    assert node.GetMaskMode() == S.EditAllowedInsideSingleSegment
    assert node.GetMaskSegmentID() == mrml.find_segment_id(seg, SEG_SENSITIVE)
    after = masks(seg, g)
    for name in (SEG_DISEASE, SEG_NORMAL, SEG_SENSITIVE):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    np.testing.assert_array_equal(after[SEG_CONSERVATIVE], before[SEG_SENSITIVE])
    # a paint into sensitive stays inside the disease region
    stroke(logic, seg, SEG_SENSITIVE, everything, g, logic.ModificationModeAdd)
    assert node.GetMaskSegmentID() == mrml.find_segment_id(seg, SEG_DISEASE)
    after = masks(seg, g)
    np.testing.assert_array_equal(after[SEG_SENSITIVE], before[SEG_DISEASE])
    np.testing.assert_array_equal(after[SEG_DISEASE], before[SEG_DISEASE])
    # erasing a lesion from sensitive: the rule removes it from conservative on recompute
    erase = np.zeros(g.shape_kji, bool)
    erase[2:4] = True
    stroke(logic, seg, SEG_SENSITIVE, erase, g, logic.ModificationModeRemove)
    assert mrml.segment_mask(seg, SEG_CONSERVATIVE, g)[2:4].any()  # the editor alone leaves it
    hand_off.end()
    assert node.GetOverwriteMode() == E.OverwriteVisibleSegments
    assert node.GetMaskMode() == S.EditAllowedInsideAllSegments and node.GetSourceVolumeIntensityMask()
    vhi = VHILogic(runtime).recompute(seg)
    final = masks(seg, g)
    assert not (final[SEG_CONSERVATIVE] & ~final[SEG_SENSITIVE]).any()
    assert not (final[SEG_SENSITIVE] & ~final[SEG_DISEASE]).any()
    np.testing.assert_array_equal(final[SEG_DISEASE], before[SEG_DISEASE])
    assert vhi["sensitive"].voxels == int(final[SEG_SENSITIVE].sum())
    assert vhi["conservative"].voxels == int(final[SEG_CONSERVATIVE].sum()) > 0
    # selecting another segment after end() no longer changes the user's masking
    node.SetSelectedSegmentID(mrml.find_segment_id(seg, SEG_CONSERVATIVE))
    assert node.GetMaskMode() == S.EditAllowedInsideAllSegments


def test_nesting_rule_is_slicer_free():
    d = np.array([1, 1, 1, 0], bool)
    s = np.array([0, 1, 1, 1], bool)
    c = np.array([1, 0, 1, 1], bool)
    out = nest_masks({SEG_DISEASE: d, SEG_SENSITIVE: s, SEG_CONSERVATIVE: c})
    assert out[SEG_SENSITIVE].tolist() == [False, True, True, False]
    assert out[SEG_CONSERVATIVE].tolist() == [False, False, True, False]
    assert out[SEG_DISEASE].tolist() == d.tolist()
