"""A ``mskquant knee-t2`` output folder back in the scene, and its T2 quantified again from an edited
cartilage mask (MRML layer, no Qt) — for a viewer that reviews the result (``mskquant review``).

The MESE series is read again from the source the run recorded (``knee_t2.json`` ``source``, echo
times ``echo_times_ms``); the cartilage is the run's (``subregions.nii.gz`` > 0, the voxels the
subregions were made of). :func:`requantify` is :meth:`.logic.KneeT2Logic.run` with the run's fit
settings and laterality on the edited mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mskquant import mrml
from mskquant.errors import InputError
from mskquant.image import Image
from mskquant.paths import read_run_summary, recorded_input

from .logic import KneeT2Logic
from .mese import MeseSeries, read_mese
from .parameters import KneeT2Parameters
from .subregions import SUBREGION_COLORS, SUBREGION_NAMES

SUMMARY_FILE = "knee_t2.json"
CARTILAGE_SEGMENT = "Femoral cartilage"


@dataclass
class ReopenedKnee:
    series: MeseSeries
    echo: object  # volume node: the first echo used by the fit (the anatomy under the T2 map)
    t2: object  # volume node, ms, T2 colours
    cartilage: object  # segmentation node: "Femoral cartilage" (editable) and the 12 subregions
    summary: dict


def parameters_of(summary: dict) -> KneeT2Parameters:
    fit = summary.get("fit", {})
    lo, hi = fit.get("t2_range_ms", [0.0, 100.0])
    return KneeT2Parameters(skip_echoes=int(fit.get("skip_echoes", 1)), t2_min_ms=float(lo), t2_max_ms=float(hi),
                            whole_volume=bool(fit.get("whole_volume", False)),
                            laterality=summary.get("laterality") or "auto").validate()


def reopen_result(logic: KneeT2Logic, folder: "str | Path") -> ReopenedKnee:
    from mskquant.imageio import read_image

    folder = Path(folder)
    summary = read_run_summary(folder, SUMMARY_FILE, "knee-t2")
    recorded = summary.get("source") or ""
    source = recorded_input(folder, recorded) or (Path(recorded) if recorded and Path(recorded).is_dir() else None)
    if source is None:
        raise InputError(f"The MESE series of {folder} ({summary.get('source')}) is not found: the review needs the "
                         f"images the T2 map was computed on.")
    series = read_mese(source, summary.get("echo_times_ms"))
    skip = int(summary.get("fit", {}).get("skip_echoes", 1))
    echo = mrml.volume_from_image(logic.rt, Image(series.echoes.array[min(skip, series.n_echoes - 1)],
                                                  series.geometry), f"MESE echo {skip + 1}")
    t2 = mrml.load_volume(logic.rt, folder / "t2.nii.gz", "T2 (ms)", what="T2 map")
    show_as_t2(logic, t2)
    labels = read_image(folder / "subregions.nii.gz", "Subregions").array.astype(np.int16)
    cartilage = mrml.segmentation_from_masks(logic.rt, "Knee cartilage", segment_specs(labels), series.geometry, echo)
    return ReopenedKnee(series, echo, t2, cartilage, summary)


def show_as_t2(logic: KneeT2Logic, node) -> None:
    d = node.GetDisplayNode()
    d.SetAndObserveColorNodeID(logic.t2_color_node().GetID())
    d.SetAutoWindowLevel(False)
    d.SetWindowLevel(100.0, 50.0)
    d.SetAutoThreshold(False)
    d.SetLowerThreshold(0.001)  # NaN and 0 outside the cartilage: transparent over the echo
    d.SetUpperThreshold(1e6)
    d.SetApplyThreshold(True)


def segment_specs(labels: np.ndarray) -> list:
    specs = [mrml.SegmentSpec(CARTILAGE_SEGMENT, labels > 0, (0.95, 0.95, 0.3))]
    return specs + [mrml.SegmentSpec(SUBREGION_NAMES[lab], labels == lab, SUBREGION_COLORS[lab])
                    for lab in sorted(SUBREGION_NAMES)]


def requantify(logic: KneeT2Logic, reopened: ReopenedKnee, name: str = "Knee T2"):
    """T2 and the 12 subregions again from the "Femoral cartilage" segment as it is now."""
    mask = mrml.segment_mask(reopened.cartilage, CARTILAGE_SEGMENT, reopened.series.geometry)
    if not mask.any():
        raise InputError("The femoral cartilage segment is empty: paint the cartilage before recomputing T2.")
    return logic.run(reopened.series, None, None, parameters_of(reopened.summary), name=name, mask=mask)
