"""Cleaning a V_HI result in Segment Editor without breaking it (MRML layer, no Qt).

The four segments of a result overlap by design (:data:`.inflammation.NESTED_IN`). Segment
Editor's default settings (overwrite all other segments, edit everywhere) would let a stroke
into "Inflammation (conservative)" erase the same voxels from "Inflammation (sensitive)" and
"Disease region". :class:`NestedEditing` hands the segmentation over with settings that keep
the nesting, on the real ``vtkMRMLSegmentEditorNode`` that Segment Editor uses:

* overwrite mode *none*: a stroke changes only the selected segment;
* masking follows the selected segment: conservative may be edited only inside sensitive,
  sensitive only inside the disease region, the others everywhere;
* afterwards (:meth:`NestedEditing.end`) the user's own editor settings come back and the
  removal side of the rule is written into the result (:func:`apply_nesting`).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from mskquant import mrml

from .inflammation import NESTED_IN, SEG_CONSERVATIVE, SEG_DISEASE, SEG_SENSITIVE, nest_masks


def apply_nesting(seg_node, geometry, style: Dict[str, tuple]) -> int:
    """Write :func:`.inflammation.nest_masks` back into an edited result; returns how many
    voxels it removed from the inflammation segments."""
    before = {n: mrml.segment_mask(seg_node, n, geometry) for n in (SEG_DISEASE, SEG_SENSITIVE, SEG_CONSERVATIVE)}
    after = nest_masks(before)
    removed = 0
    for n in (SEG_SENSITIVE, SEG_CONSERVATIVE):
        if not np.array_equal(before[n], after[n]):
            removed += int(before[n].sum() - after[n].sum())
            mrml.set_segment(seg_node, mrml.SegmentSpec(n, after[n], *style[n]), geometry)
    return removed


class NestedEditing:
    """Segment Editor settings that keep a V_HI result nested while it is cleaned, and the
    user's previous settings restored afterwards."""

    _SAVED = ("OverwriteMode", "MaskMode", "MaskSegmentID", "SourceVolumeIntensityMask")

    def __init__(self, editor_node, segmentation_node) -> None:
        self.editor_node = editor_node
        self.segmentation_node = segmentation_node
        self._saved: Optional[dict] = None
        self._observer = None

    @property
    def active(self) -> bool:
        return self._saved is not None

    def begin(self) -> None:
        import slicer

        if self.active:
            return
        e = self.editor_node
        self._saved = {k: getattr(e, f"Get{k}")() for k in self._SAVED}
        e.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)
        e.SetSourceVolumeIntensityMask(False)
        self._observer = e.AddObserver("ModifiedEvent", lambda *_: self._mask_for_selected_segment())
        self._mask_for_selected_segment()

    def _mask_for_selected_segment(self) -> None:
        import slicer

        seg = self.segmentation_node.GetSegmentation()
        selected = seg.GetSegment(self.editor_node.GetSelectedSegmentID() or "")
        outer = NESTED_IN.get(selected.GetName()) if selected is not None else None
        outer_id = seg.GetSegmentIdBySegmentName(outer) if outer else ""
        if outer_id:
            self.editor_node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
            self.editor_node.SetMaskSegmentID(outer_id)
        else:
            self.editor_node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)

    def end(self) -> None:
        """Give the user's editor settings back (safe to call when not active)."""
        if not self.active:
            return
        e = self.editor_node
        e.RemoveObserver(self._observer)
        saved, self._saved, self._observer = self._saved, None, None
        for k in self._SAVED:
            getattr(e, f"Set{k}")(saved[k])


