"""A pain-CAM case under review: both knees with their CAMs, and the reader's judgement of where the
CAM points, recorded per reader in the case's ``review.csv`` (how CAMs are judged in practice)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from .cases import CAM_REVIEW_FILE, Case, check_reader
from .edits import now_iso

VERDICTS = ("CAM on lesion", "CAM elsewhere", "no lesion visible")
REVIEW_COLUMNS = ("reader", "verdict", "time", "painful_side", "p_right_painful", "max_cam_slice_left",
                  "max_cam_slice_right")


class CAMReviewSession:
    kind = "pain-cam"

    def __init__(self, rt, case: Case, reader: str) -> None:
        from SiamesePainCAMLib.logic import PainCAMLogic
        from SiamesePainCAMLib.results import reopen_result

        self.case, self.reader = case, check_reader(reader)
        self.logic = PainCAMLogic(rt)
        self.result = reopen_result(self.logic, case.folder)
        self.dirty = False

    @property
    def summary(self) -> dict:
        return self.result.summary

    def hot_spot(self, side: str) -> list:
        from SiamesePainCAMLib.results import max_cam_hot_spot

        return max_cam_hot_spot(self.result, side)

    def figures(self) -> dict:
        s = self.summary
        return {"p_right_painful": round(float(s["p_right_painful"]), 3), "painful_side": s["painful_side"],
                "max_cam_slice": s["max_cam_slice"], "verdict": self.verdict()}

    def _rows(self) -> list:
        f = self.case.folder / CAM_REVIEW_FILE
        if not f.is_file():
            return []
        with open(f, newline="", encoding="utf-8") as fh:
            return [r for r in csv.DictReader(fh)]

    def verdict(self) -> Optional[str]:
        return next((r["verdict"] for r in self._rows() if r.get("reader") == self.reader), None)

    def save(self, verdict: str) -> Path:
        """This reader's row of ``review.csv`` replaced (other readers' rows kept), the file written whole."""
        from mskquant.csvio import write_rows_csv
        from mskquant.errors import InputError
        from mskquant.outputlock import FolderLock

        if verdict not in VERDICTS:
            raise InputError(f"Unknown CAM verdict {verdict!r}: choose one of {', '.join(VERDICTS)}.")
        s = self.summary
        lock = FolderLock(self.case.folder)  # two tabs or two readers: one read-modify-write at a time
        try:
            rows = [r for r in self._rows() if r.get("reader") != self.reader]
            rows.append({"reader": self.reader, "verdict": verdict, "time": now_iso(),
                         "painful_side": s["painful_side"], "p_right_painful": s["p_right_painful"],
                         "max_cam_slice_left": s["max_cam_slice"]["left"],
                         "max_cam_slice_right": s["max_cam_slice"]["right"]})
            path = write_rows_csv(self.case.folder / CAM_REVIEW_FILE, REVIEW_COLUMNS,
                                  [[r.get(c, "") for c in REVIEW_COLUMNS] for r in rows])
        finally:
            lock.release()
        return path

    def autosave(self):  # a verdict is saved when it is given: nothing is pending
        return None

    @staticmethod
    def autosave_pending(case: Case, reader: str) -> bool:
        return False
