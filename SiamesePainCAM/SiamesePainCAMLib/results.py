"""A ``mskquant pain-cam`` output folder back in the scene (MRML layer, no Qt): both input knees and
their CAM volumes in heat colours, as :meth:`.logic.PainCAMLogic.make_result` shows them, for a viewer
that reviews the result (``mskquant review``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict

from mskquant import mrml
from mskquant.errors import InputError
from mskquant.paths import read_run_summary, recorded_input

from .logic import PainCAMLogic
from .pipeline import SIDES

SUMMARY_FILE = "pain.json"


@dataclass
class ReopenedCAM:
    knees: Dict[str, object]  # input volume per side
    cams: Dict[str, object]  # CAM volume per side (0..1, heat colours)
    summary: dict


def reopen_result(logic: PainCAMLogic, folder: "str | Path") -> ReopenedCAM:
    folder = Path(folder)
    summary = read_run_summary(folder, SUMMARY_FILE, "pain-cam")
    knees, cams = {}, {}
    heat = logic.heat_color_node()
    for side in SIDES:
        path = recorded_input(folder, summary.get("inputs", {}).get(side))
        if path is None:
            raise InputError(f"The {side} knee image of {folder} ({summary.get('inputs', {}).get(side)}) is not "
                             f"found: the review needs the images the CAMs were computed on.")
        knees[side] = mrml.load_volume(logic.rt, path, f"{side} knee", what=f"{side.capitalize()} knee")
        cams[side] = mrml.load_volume(logic.rt, folder / f"cam_{side}.nii.gz", f"CAM {side}", what=f"CAM {side}")
        logic.show_as_cam(cams[side], heat)
        cams[side].SetNodeReferenceID("MSKQuantInput", knees[side].GetID())
    return ReopenedCAM(knees, cams, summary)


def max_cam_hot_spot(result: ReopenedCAM, side: str) -> list:
    """RAS of the CAM maximum on the knee's max-CAM slice, from the folder's CAM and summary."""
    cam = mrml.image_from_volume(result.cams[side])
    axis = int(result.summary["preprocessing"][side]["slice_axis_kji"])
    return PainCAMLogic.hot_spot_of(cam.array, cam.geometry, axis, int(result.summary["max_cam_slice"][side]))
