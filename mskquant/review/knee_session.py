"""A knee T2 case under review: the MESE echo with the T2 map and the 12 subregions, the femoral
cartilage editable, T2 quantified again on request (KneeT2Logic through
:mod:`KneeT2SegmentLib.results`) and saved per reader."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from mskquant import mrml

from .cases import Case, check_reader
from .edits import edit_log, now_iso

AUTOSAVED_FILES = ("cartilage.nii.gz", "edits.json")  # the unsaved edit: the mask and its log
SAVED_FILES = ("t2.nii.gz", "subregions.nii.gz", "subregions.csv", "projection.png", "knee_t2.json",
               "t2_fit_r2.nii.gz", "t2_fit_amplitude.nii.gz", "t2_loglinear.nii.gz", "cartilage.nii.gz", "edits.json")


class KneeReviewSession:
    kind = "knee-t2"

    def __init__(self, rt, case: Case, reader: str, restore_autosave: bool = False) -> None:
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
        if restore_autosave and self.autosave_pending(case, reader):
            self._restore(case.autosave_dir(reader))

    def _restore(self, folder: Path) -> None:
        """The cartilage as it was autosaved (unsaved edits of an earlier session)."""
        import json

        from mskquant.imageio import read_mask

        mask = read_mask(folder / "cartilage.nii.gz", "Autosaved cartilage")
        if not mask.geometry.same_grid(self.geometry):
            from mskquant.errors import InputError

            raise InputError(f"The autosaved cartilage in {folder} is not on this case's MESE grid: delete that "
                             f"folder to start from the saved result.")
        seg = self.reopened.cartilage.GetSegmentation()
        segment = seg.GetSegment(seg.GetSegmentIdBySegmentName(self.segment))
        mrml.set_segment(self.reopened.cartilage, mrml.SegmentSpec(self.segment, mask.array.astype(bool),
                                                                   tuple(segment.GetColor())), self.geometry)
        log = json.loads((folder / "edits.json").read_text(encoding="utf-8"))
        self.started = log.get("start_time", self.started)
        self.actions = list(log.get("actions", []))
        self.dirty = True

    def _edit_log(self) -> dict:
        return edit_log(self.reader, self.started, {self.segment: self.cartilage_mask()}, {self.segment: self.automatic},
                        int(self.reopened.summary.get("subregions", {}).get("slice_axis", 0)), self.actions)

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
        from mskquant.cli.common import write_json
        from mskquant.imageio import write_image
        from mskquant.image import Image

        if self.result is None:
            self.recompute()
        cart = self.cartilage_mask()
        edits = self._edit_log()
        self.result.summary["review"] = {"reader": self.reader, "reviewed": True, "start_time": self.started,
                                         "end_time": edits["end_time"], "case": str(self.case.folder)}
        self.result.summary["source"] = self.reopened.summary.get("source")
        def write(stage: Path) -> None:
            self.logic.export(self.result, stage)
            write_image(Image(cart.astype("uint8"), self.geometry), stage / "cartilage.nii.gz")
            write_json(edits, stage / "edits.json")

        rdir = self.case.save_reader_files(self.reader, SAVED_FILES, write)
        self.dirty = False
        return rdir

    def autosave(self) -> Optional[Path]:
        """The edited cartilage and its log, where the next start offers them back."""
        from mskquant.cli.common import write_json
        from mskquant.image import Image
        from mskquant.imageio import write_image

        def write(stage: Path) -> None:
            write_image(Image(self.cartilage_mask().astype("uint8"), self.geometry), stage / "cartilage.nii.gz")
            write_json(self._edit_log(), stage / "edits.json")

        return self.case.save_reader_files(self.reader, AUTOSAVED_FILES, write, autosave=True) if self.dirty else None

    @staticmethod
    def autosave_pending(case: Case, reader: str) -> bool:
        return (case.autosave_dir(reader) / "cartilage.nii.gz").is_file()

    def close(self) -> None:
        self._drop_result()
        r = self.reopened
        for node in (r.echo, r.t2, r.cartilage):
            if node is not None and node.GetScene() is not None:
                node.GetScene().RemoveNode(node)
