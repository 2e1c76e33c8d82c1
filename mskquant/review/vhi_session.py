"""A V_HI case under review: the result reopened in the scene the views show, kept consistent after
every stroke, and saved per reader.

All numbers come from the VHIWorkflow logic: :meth:`VHILogic.recompute` (nesting rule and V_HI) after
each stroke, :func:`VHIWorkflowLib.results.rethreshold` when the "Normal bone" segment changed
(thresholds and both inflammation masks, as a new run), :meth:`VHILogic.restore_automatic`,
:meth:`VHILogic.export` and :func:`VHIWorkflowLib.comparison.compare_masks` for two readers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from mskquant import mrml
from mskquant.errors import InputError

from .cases import Case, check_reader
from .edits import edit_log, now_iso

SAVED_FILES = ("inflammation.seg.nrrd", "inflammation.nii.gz", "vhi.csv", "vhi.json", "edits.json")


class VHIReviewSession:
    kind = "vhi"

    def __init__(self, rt, case: Case, reader: str, restore_autosave: bool = False) -> None:
        from VHIWorkflowLib.inflammation import slice_axis
        from VHIWorkflowLib.logic import VHILogic
        from VHIWorkflowLib.results import reopen_result, thresholds_of_summary

        self.case, self.reader = case, check_reader(reader)
        self.logic = VHILogic(rt)
        self.started = now_iso()
        self.actions: List[dict] = []
        self.message = ""
        rdir = case.reader_dir(reader)
        source: Optional[Path] = None
        if restore_autosave and (case.autosave_dir(reader) / "vhi.json").is_file():
            source = case.autosave_dir(reader)
        elif (rdir / "vhi.json").is_file():
            source = rdir
        self.result = reopen_result(self.logic, case.folder, source / SAVED_FILES[0] if source else None)
        self.automatic_thresholds = self.result.thresholds
        self.thresholds = self.result.thresholds
        if source is not None:
            saved = json.loads((source / "vhi.json").read_text(encoding="utf-8"))
            self.thresholds = thresholds_of_summary(saved)
            self.started = saved.get("review", {}).get("start_time", self.started)
        self.geometry = mrml.geometry_of(self.result.stir)
        self.axis = slice_axis(self.geometry)
        self.vhi = self.logic.recompute(self.segmentation, self.thresholds, self.result.table)
        self._roi = self._mask_of("Normal bone")
        self._busy = False
        self.dirty = source == case.autosave_dir(reader)

    # --- scene ----------------------------------------------------------------------------------
    @property
    def segmentation(self):
        return self.result.segmentation

    @property
    def volumes(self) -> list:
        return [v for v in (self.result.stir, self.result.t1) if v is not None]

    def _mask_of(self, name: str, node=None) -> np.ndarray:
        return mrml.segment_mask(node or self.segmentation, name, self.geometry)

    def masks(self, node=None) -> Dict[str, np.ndarray]:
        from VHIWorkflowLib.logic import SEGMENT_STYLE

        return {name: self._mask_of(name, node) for name in SEGMENT_STYLE}

    def on_segmentation_modified(self) -> bool:
        """After a stroke (or undo/redo): thresholds again if the ROI changed, then V_HI. True if handled."""
        from VHIWorkflowLib.results import rethreshold

        if self._busy:
            return False
        self._busy = True
        try:
            roi = self._mask_of("Normal bone")
            if not np.array_equal(roi, self._roi):
                self._roi = roi
                try:
                    self.thresholds, self.vhi = rethreshold(self.logic, self.segmentation, self.result.min_island_pixels)
                    self.message = ""
                    self._act("normal-bone ROI changed: thresholds and inflammation masks recomputed")
                except InputError as exc:  # e.g. an ROI of fewer than 10 voxels while it is being drawn
                    self.message = str(exc)
                    self.vhi = self.logic.recompute(self.segmentation, self.thresholds)
            else:
                self.vhi = self.logic.recompute(self.segmentation, self.thresholds)
            self.dirty = True
            return True
        finally:
            self._busy = False

    def restore_automatic(self) -> None:
        self._busy = True
        try:
            self.logic.restore_automatic(self.segmentation)
            self.thresholds = self.automatic_thresholds
            self.vhi = self.logic.recompute(self.segmentation, self.thresholds)
            self._roi = self._mask_of("Normal bone")
        finally:
            self._busy = False
        self.dirty = True
        self._act("automatic result restored")

    def _act(self, what: str) -> None:
        self.actions.append({"time": now_iso(), "action": what})

    def figures(self) -> dict:
        th, v = self.thresholds, self.vhi
        return {"sensitive_ml": round(v["sensitive"].volume_ml, 4), "sensitive_voxels": v["sensitive"].voxels,
                "conservative_ml": round(v["conservative"].volume_ml, 4),
                "conservative_voxels": v["conservative"].voxels,
                "q1": round(th.q1, 2), "q3": round(th.q3, 2), "n": round(th.n, 2), "lower": round(th.lower, 2),
                "upper": round(th.upper, 2), "roi_voxels": th.n_voxels, "edited": self._edited_in_table()}

    def _edited_in_table(self) -> bool:
        """The flag :meth:`VHILogic.recompute` wrote into the table (no second comparison of the masks)."""
        return str(mrml.columns_from_table(self.result.table)["edited"][0]).strip() in ("1", "True")

    # --- files ----------------------------------------------------------------------------------
    def _summary(self, edits: dict) -> dict:
        th, v = self.thresholds, self.vhi
        return {"vhi_ml": {k: x.volume_ml for k, x in v.items()}, "vhi_mm3": {k: x.volume_mm3 for k, x in v.items()},
                "voxels": {k: x.voxels for k, x in v.items()}, "voxel_volume_mm3": self.geometry.voxel_volume_mm3,
                "thresholds": {"lower": th.lower, "upper": th.upper, "n": th.n, "q1": th.q1, "q3": th.q3,
                               "iqr": th.iqr, "median": th.median, "roi_voxels": th.n_voxels},
                "primary": self.result.summary.get("primary", "sensitive"),
                "min_island_pixels": self.result.min_island_pixels, "inputs": self.result.summary.get("inputs", {}),
                "review": {"reader": self.reader, "reviewed": True, "start_time": self.started,
                           "end_time": edits["end_time"], "case": str(self.case.folder)},
                "software": f"mskquant {__import__('mskquant').__version__}"}

    def _write(self, folder: Path) -> None:
        from mskquant.cli.common import write_json
        from VHIWorkflowLib.logic import VHIResult

        edits = edit_log(self.reader, self.started, self.masks(), self.masks(self.result.automatic), self.axis,
                         self.actions)
        result = VHIResult(self.segmentation, self.result.automatic, self.result.table, self.thresholds, self.vhi,
                           "input", self.geometry)
        self.logic.export(result, folder)  # vhi.csv, inflammation.seg.nrrd, inflammation.nii.gz
        write_json(edits, folder / "edits.json")
        write_json(self._summary(edits), folder / "vhi.json")

    def save(self) -> Path:
        """``readers/<NAME>/``: all files replaced together (never the case's own result or another reader's)."""
        rdir = self.case.save_reader_files(self.reader, SAVED_FILES, self._write)
        self.dirty = False
        self._act("saved")
        return rdir

    def autosave(self) -> Optional[Path]:
        """The unsaved state, where the next start offers it back."""
        return self.case.save_reader_files(self.reader, SAVED_FILES, self._write, autosave=True) if self.dirty else None

    @staticmethod
    def autosave_pending(case: Case, reader: str) -> bool:
        return (case.autosave_dir(reader) / "vhi.json").is_file()

    def reader_comparison(self) -> Optional[dict]:
        """Dice and volumes of the first two readers' saved sensitive masks (``vhi-compare``'s numbers)."""
        from mskquant.imageio import read_mask
        from VHIWorkflowLib.comparison import compare_masks

        saved = [r for r in self.case.readers() if (self.case.reader_dir(r) / "vhi.json").is_file()]
        if len(saved) < 2:
            return None
        a, b = (read_mask(self.case.reader_dir(r) / "inflammation.nii.gz") for r in saved[:2])
        c = compare_masks(a.array, b.array, a.geometry)
        return {"a": saved[0], "b": saved[1], "dice": round(c.dice, 4), "volume_a_ml": round(c.volume_a_ml, 3),
                "volume_b_ml": round(c.volume_b_ml, 3)}
