"""A knee T2 case under review: the MESE echo with the T2 map and the 12 subregions, the femoral
cartilage editable, T2 quantified again on request (KneeT2Logic through
:mod:`KneeT2SegmentLib.results`) and saved per reader."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from mskquant import mrml

from .cases import Case, check_reader
from .edits import edit_log, now_iso

SAVED_FILES = ("t2.nii.gz", "subregions.nii.gz", "subregions.csv", "projection.png", "knee_t2.json",
               "t2_fit_r2.nii.gz", "t2_fit_amplitude.nii.gz", "t2_loglinear.nii.gz", "cartilage.nii.gz", "edits.json")


class KneeReviewSession:
    kind = "knee-t2"

    def __init__(self, rt, case: Case, reader: str) -> None:
        from KneeT2SegmentLib.logic import KneeT2Logic
        from KneeT2SegmentLib.results import CARTILAGE_SEGMENT, reopen_result

        self.case, self.reader = case, check_reader(reader)
        self.logic = KneeT2Logic(rt)
        self.reopened = reopen_result(self.logic, case.folder)
        self.started = now_iso()
        self.segment = CARTILAGE_SEGMENT
        self.automatic = self.cartilage_mask()
        self.result = None  # the latest recomputation (KneeT2Result), None while the folder's result stands
        self.regions: List[dict] = list(self.reopened.summary.get("regions", []))
        self.dirty = False
        self.actions: List[dict] = []

    @property
    def geometry(self):
        return self.reopened.series.geometry

    def cartilage_mask(self):
        return mrml.segment_mask(self.reopened.cartilage, self.segment, self.geometry)

    def recompute(self) -> None:
        from KneeT2SegmentLib.results import requantify, segment_specs, show_as_t2

        self._drop_result()
        self.result = result = requantify(self.logic, self.reopened)
        mrml.update_volume(self.reopened.t2, mrml.image_from_volume(result.t2_volume))
        show_as_t2(self.logic, self.reopened.t2)
        labels = result.quant.subregions.labels
        for spec in segment_specs(labels)[1:]:
            mrml.set_segment(self.reopened.cartilage, spec, self.geometry)
        self.regions = list(result.summary["regions"])
        self.dirty = True
        self.actions.append({"time": now_iso(), "action": "T2 recomputed"})

    def _drop_result(self) -> None:
        r, self.result = self.result, None
        if r is None:
            return
        for node in (r.t2_volume, r.segmentation, r.table, r.plot, *r.fit_volumes.values()):
            if node is not None and node.GetScene() is not None:
                node.GetScene().RemoveNode(node)

    def figures(self) -> dict:
        def mean(r):
            v = r.get("mean_t2_ms")
            return None if v is None or v != v else round(float(v), 2)  # NaN: an empty subregion

        return {"regions": [{"region": r["region"], "mean": mean(r), "n": int(r["n_voxels"])} for r in self.regions],
                "cartilage_voxels": int(self.cartilage_mask().sum()), "recomputed": self.result is not None}

    def save(self) -> Path:
        from mskquant.atomic import OutputFolder
        from mskquant.cli.common import write_json
        from mskquant.imageio import write_image
        from mskquant.image import Image

        if self.result is None:
            self.recompute()
        cart = self.cartilage_mask()
        edits = edit_log(self.reader, self.started, {self.segment: cart}, {self.segment: self.automatic},
                         int(self.reopened.summary.get("subregions", {}).get("slice_axis", 0)), self.actions)
        self.result.summary["review"] = {"reader": self.reader, "reviewed": True, "start_time": self.started,
                                         "end_time": edits["end_time"], "case": str(self.case.folder)}
        self.result.summary["source"] = self.reopened.summary.get("source")
        rdir = self.case.reader_dir(self.reader)
        with OutputFolder(rdir, SAVED_FILES, overwrite=True) as out:
            self.logic.export(self.result, out.stage)
            write_image(Image(cart.astype("uint8"), self.geometry), out.path("cartilage.nii.gz"))
            write_json(edits, out.path("edits.json"))
        self.dirty = False
        return rdir

    def autosave(self) -> Optional[Path]:
        return None  # the edited mask is small to redo; only Save writes (noted in the README)

    @staticmethod
    def autosave_pending(case: Case, reader: str) -> bool:
        return False

    def close(self) -> None:
        self._drop_result()
        r = self.reopened
        for node in (r.echo, r.t2, r.cartilage):
            if node is not None and node.GetScene() is not None:
                node.GetScene().RemoveNode(node)
