"""What the batch knows about each pipeline: its single-case command, which manifest columns
are input files, the per-case table that goes into the cohort table, and the summary picture.

Only names live here; the pipelines' code is imported where a case runs (the worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Pipeline:
    name: str
    cli_module: str  # the module that registers the single-case command
    path_options: Tuple[str, ...]  # manifest columns that name input files or folders (relative to the manifest)
    case_table: str  # the case's CSV that the cohort table concatenates
    summary_kind: str  # "boxes" (a box per group) or "histogram"
    summary_group: Optional[str]  # cohort column that names the box (None: one distribution)
    summary_value: str  # cohort column plotted
    summary_title: str
    summary_exclude: Tuple[Tuple[str, str], ...] = ()  # (column, value): cohort rows left out of the picture
    summary_where: Tuple[Tuple[str, str], ...] = ()  # (column, value): the only cohort rows in the picture
    model_unless: Optional[str] = None  # a case needs the pipeline's network unless this column is given


PIPELINES = {
    "knee-t2": Pipeline(
        "knee-t2", "KneeT2SegmentLib.cli", ("mese", "mask", "model"), "subregions.csv", "boxes", "region",
        "mean_t2_ms", "Femoral cartilage T2 per subregion over the cohort",
        (("layer", "all"), ("side", "all"), ("zone", "all")), model_unless="mask"),
    "knee-change": Pipeline(
        "knee-change", "KneeT2SegmentLib.cli", ("baseline", "followup"), "change.csv", "boxes", "region",
        "delta_t2_ms", "T2 change per subregion over the cohort",
        (("layer", "all"), ("side", "all"), ("zone", "all"))),
    "vhi": Pipeline(
        "vhi", "VHIWorkflowLib.cli", ("t1", "stir", "normal_roi", "disease_region"), "vhi.csv", "boxes", "mask",
        "volume_ml", "V_HI over the cohort", model_unless="disease_region"),
    "knee-morph": Pipeline(
        "knee-morph", "KneeT2SegmentLib.morphometry.cli", ("image", "labels", "mese"), "thickness.csv", "boxes",
        "plate", "mean_mm", "Mean cartilage thickness per plate over the cohort", summary_where=(("region", "all"),)),
    "pain-cam": Pipeline(
        "pain-cam", "SiamesePainCAMLib.cli", ("left", "right"), "pain.csv", "histogram", None, "p_painful",
        "Probability that the right knee is the painful one", summary_where=(("knee", "right"),), model_unless=""),
    "super-resolve": Pipeline(
        "super-resolve", "KneeT2SegmentLib.superres.cli", ("image", "model"), "superres.csv", "histogram", None,
        "total_s", "Super-resolution time per case (s)", model_unless=""),
}


def pipeline(name: str) -> Pipeline:
    from ..errors import InputError

    if name not in PIPELINES:
        raise InputError(f"Unknown pipeline '{name}': choose one of {', '.join(PIPELINES)}.")
    return PIPELINES[name]


def case_outputs(name: str) -> Tuple[str, ...]:
    """The files the single-case command writes (a done case folder holds all of them)."""
    if name == "knee-t2":
        from KneeT2SegmentLib.cli import KNEE_T2_OUTPUTS

        return tuple(n for n in KNEE_T2_OUTPUTS if n != "t2_loglinear.nii.gz")  # written when the fit gives it
    if name == "knee-change":
        from KneeT2SegmentLib.cli import CHANGE_OUTPUTS

        return CHANGE_OUTPUTS
    if name == "knee-morph":
        from KneeT2SegmentLib.morphometry.export import CORE_OUTPUTS

        return CORE_OUTPUTS
    if name == "super-resolve":
        from KneeT2SegmentLib.superres.cli import FOLDER_OUTPUTS

        return FOLDER_OUTPUTS
    if name == "vhi":
        from VHIWorkflowLib.cli import VHI_OUTPUTS

        return VHI_OUTPUTS
    from SiamesePainCAMLib.parameters import OUTPUT_FILES

    return OUTPUT_FILES
