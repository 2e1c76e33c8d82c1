"""A ``mskquant vhi`` output folder back in the scene, and the thresholds redone after the
normal-bone ROI was redrawn (MRML layer, no Qt).

The review app (``mskquant review``) and any other viewer reopen a result here: the STIR the
run used (``vhi.json`` inputs), the segmentation as written (four segments) as the one to
clean, an unedited copy as the automatic result, and a table node with the run's thresholds,
so :meth:`.logic.VHILogic.recompute`, ``is_edited`` and ``restore_automatic`` work on it as on
a result made in this session. :func:`rethreshold` is step 1 and 3 of Hepburn et al. 2.5.1
again on the segments as they are now: new thresholds from the (edited) "Normal bone"
segment, new inflammation masks inside the (edited) disease region.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from mskquant import mrml
from mskquant.errors import InputError
from mskquant.paths import read_run_summary, recorded_input

from .inflammation import SEG_CONSERVATIVE, SEG_DISEASE, SEG_NORMAL, SEG_SENSITIVE, VHI, segment_inflammation
from .logic import AUTOMATIC_REFERENCE, SEGMENT_STYLE, STIR_REFERENCE, VHILogic
from .thresholds import N_START, N_STEP, Thresholds, thresholds_from_normal_bone

SEGMENTATION_FILE = "inflammation.seg.nrrd"
SUMMARY_FILE = "vhi.json"


@dataclass
class ReopenedResult:
    segmentation: object  # the segmentation to clean
    automatic: object  # the folder's result, hidden and kept unedited
    stir: object
    t1: Optional[object]
    table: object
    thresholds: Thresholds
    vhi: Dict[str, VHI]
    summary: dict
    min_island_pixels: int


def thresholds_of_summary(summary: dict) -> Thresholds:
    t = summary["thresholds"]
    return Thresholds(lower=t["lower"], upper=t["upper"], n=t["n"], q1=t["q1"], q3=t["q3"], iqr=t["iqr"],
                      median=t["median"], n_voxels=int(t["roi_voxels"]), steps=int(round((t["n"] - N_START) / N_STEP)))


def reopen_result(logic: VHILogic, folder: "str | Path", segmentation_file: Optional[Path] = None,
                  name: str = "V_HI") -> ReopenedResult:
    """The result in ``folder`` as scene nodes; ``segmentation_file`` (e.g. a reader's cleaned result) is
    the one to clean instead of the folder's own."""
    folder = Path(folder)
    summary = read_run_summary(folder, SUMMARY_FILE, "vhi")
    stir_path = recorded_input(folder, summary.get("inputs", {}).get("stir"))
    if stir_path is None:
        raise InputError(f"The STIR image of {folder} ({summary.get('inputs', {}).get('stir')}) is not found: the "
                         f"review needs the image the result was computed on.")
    t1_path = recorded_input(folder, summary.get("inputs", {}).get("t1"))
    rt = logic.rt
    stir = mrml.load_volume(rt, stir_path, "STIR", what="STIR")
    t1 = mrml.load_volume(rt, t1_path, "T1W", what="T1W") if t1_path is not None else None
    automatic = mrml.load_segmentation(rt, folder / SEGMENTATION_FILE, f"{name} (automatic)")
    seg = mrml.load_segmentation(rt, segmentation_file or folder / SEGMENTATION_FILE, name)
    missing = [s for s in SEGMENT_STYLE if s not in mrml.segment_names(seg)]
    if missing:
        raise InputError(f"{folder / SEGMENTATION_FILE} lacks the segment(s) {', '.join(missing)}: give a "
                         f"'mskquant vhi' output folder.")
    automatic.SetAttribute("MSKQuant.Role", "automatic V_HI result (kept unedited)")
    if automatic.GetDisplayNode() is not None:
        automatic.GetDisplayNode().SetVisibility(False)
    for node in (seg, automatic):
        node.SetReferenceImageGeometryParameterFromVolumeNode(stir)
    seg.SetNodeReferenceID(AUTOMATIC_REFERENCE, automatic.GetID())
    seg.SetNodeReferenceID(STIR_REFERENCE, stir.GetID())
    seg.SetAttribute("MSKQuant.Module", "VHIWorkflow")
    thresholds = thresholds_of_summary(summary)
    table = rt.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
    seg.SetNodeReferenceID("MSKQuantTable", table.GetID())
    vhi = logic.recompute(seg, thresholds, table)
    return ReopenedResult(seg, automatic, stir, t1, table, thresholds, vhi, summary,
                          int(summary.get("min_island_pixels", 4)))


def rethreshold(logic: VHILogic, seg_node, min_island_pixels: int = 4):
    """Thresholds from the "Normal bone" segment and both inflammation masks from them inside the
    "Disease region" segment, written into the segmentation (the masks replace the current ones, as a
    new run would); returns ``(thresholds, vhi)``."""
    stir_volume = logic.source_volume(seg_node)
    stir = logic.stir_image(stir_volume)
    g = stir.geometry
    roi = mrml.segment_mask(seg_node, SEG_NORMAL, g)
    region = mrml.segment_mask(seg_node, SEG_DISEASE, g)
    thresholds = thresholds_from_normal_bone(stir.array[roi])
    masks = segment_inflammation(stir.array, region, thresholds, g, min_island_pixels)
    for seg_name, mask in ((SEG_SENSITIVE, masks.sensitive), (SEG_CONSERVATIVE, masks.conservative)):
        mrml.set_segment(seg_node, mrml.SegmentSpec(seg_name, mask, *SEGMENT_STYLE[seg_name]), g)
    return thresholds, logic.recompute(seg_node, thresholds)
