"""The whole morphometry of one knee (numeric core): what ``mskquant knee-morph``, the batch and the
panel run.

3D image (or a user's label map) -> labels 0-6 -> cartilage thickness per plate and region ->
bone surfaces with thickness (and, with a MESE series of the same knee, T2) on their articular
vertices -> 2D maps per bone -> the figures of ``morph.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Image
from mskquant.progress import Progress, as_progress

from . import labels as lb

MAX_SLICE_MM = 1.5
DEFAULT_MODEL = "knee-morphometry-dess"
MEASURES = ("thickness_mm", "t2_ms")


@dataclass
class MorphParameters:
    model_id: str = DEFAULT_MODEL  # segmentation ensemble (registered id)
    device: str = "auto"
    laterality: str = "auto"  # auto | left | right
    super_resolve: bool = False  # restore thick slices (through-plane super-resolution) before segmenting
    sr_factor: int = 3
    register_mese: bool = True  # rigid registration of the 3D image to the MESE series

    def validate(self) -> "MorphParameters":
        from ..mese import normalize_laterality

        normalize_laterality(self.laterality)
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"Unknown device '{self.device}': use auto, cpu or cuda.")
        if not str(self.model_id).strip():
            raise InputError("No segmentation model given: use a registered id ('mskquant models list').")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def check_3d_image(image: Image, what: str = "The 3D knee image", max_slice_mm: float = MAX_SLICE_MM) -> None:
    """Refuse what the morphometry cannot measure: a series, a 2D image, slices thicker than ``max_slice_mm``."""
    if image.is_series:
        raise InputError(f"{what} is a series of volumes (4D): give one 3D volume (e.g. the DESS or 3D water-"
                         f"excitation image).")
    shape = image.geometry.shape_ijk
    if min(shape) < 8:
        raise InputError(f"{what} is 2D or nearly so ({'x'.join(str(s) for s in shape)} voxels): the morphometry "
                         f"needs a 3D volume covering the knee (e.g. a sagittal 3D DESS).")
    sp = image.geometry.spacing
    if float(sp.max()) > max_slice_mm:
        raise InputError(f"{what} has {float(sp.max()):.2f} mm voxels along one axis ({image.geometry.describe()}): "
                         f"cartilage thickness needs slices of at most {max_slice_mm:g} mm. Use a 3D (DESS-like) "
                         f"scan, or restore the thick slices first with super-resolution ('--super-resolve').")


@dataclass
class MorphResult:
    labels: Image
    labels_source: str  # "segmented by <model>" | "given"
    thickness: object  # .thickness.ThicknessResult
    surfaces: Dict[str, object]  # bone -> .surface.BoneSurface
    maps: Dict[str, Dict[str, object]] = field(default_factory=dict)  # bone -> measure -> map
    t2: Optional[object] = None  # .t2.CartilageT2
    warnings: List[str] = field(default_factory=list)
    timings_s: Dict[str, float] = field(default_factory=dict)
    params: Optional[MorphParameters] = None
    segmentation: Dict[str, object] = field(default_factory=dict)

    def summary(self) -> dict:
        """``morph.json``."""
        from .surface import bone_summary

        counts = {lb.NAMES[v]: int(np.count_nonzero(self.labels.array == v)) for v in range(1, lb.N_LABELS)}
        vox = float(self.labels.geometry.voxel_volume_mm3)
        out = {
            "labels": {"source": self.labels_source, "grid": self.labels.geometry.describe(),
                       "voxels": counts, "volume_mm3": {k: round(v * vox, 1) for k, v in counts.items()},
                       "missing": [k for k, v in counts.items() if v == 0]},
            "thickness": {"definition": self.thickness.definition, "plates": self.thickness.rows()},
            "bones": {bone: bone_summary(s) for bone, s in self.surfaces.items()},
            "missing_bones": [b for b in lb.BONES if b not in self.surfaces],
            "maps": {bone: {m: getattr(v, "describe", lambda: {})() for m, v in ms.items()}
                     for bone, ms in self.maps.items()},
            "warnings": list(self.warnings),
            "timings_s": {k: round(v, 2) for k, v in self.timings_s.items()},
            "parameters": self.params.as_dict() if self.params else {},
        }
        if self.segmentation:
            out["segmentation"] = self.segmentation
        if self.t2 is not None:
            q = self.t2.quantification
            out["t2"] = {"registration": self.t2.registration.as_dict(), "noise": q.summary()["noise"],
                         "femoral_subregions": q.summary()["regions"], "surface_regions": self.surface_t2_regions()}
        return out

    def surface_t2_regions(self) -> List[dict]:
        """T2 per femoral subregion from the femur's articular surface (count-weighted vertex means)."""
        from .surface import region_means

        femur = self.surfaces.get("femur")
        if femur is None or self.t2 is None:
            return []
        return region_means(femur, "t2_ms")


def measure(labels: Image, image: Optional[Image] = None, series=None, params: Optional[MorphParameters] = None,
            t2_params=None, progress: "Progress | None" = None, labels_source: str = "given") -> MorphResult:
    """Thickness, bone surfaces, projections and maps of one knee's ``labels`` (0-6 on the 3D image's grid)."""
    from . import maps as mp
    from . import surface as sf
    from .thickness import measure_thickness

    params = (params or MorphParameters()).validate()
    progress = as_progress(progress)
    lat = None if params.laterality == "auto" else params.laterality
    t0 = time.monotonic()
    labels = labels.with_array(lb.tissue_labels(labels.array))
    if not np.isin(labels.array, (lb.FEMORAL_CARTILAGE, lb.TIBIAL_CARTILAGE, lb.PATELLAR_CARTILAGE)).any():
        raise InputError("The label map holds no cartilage (labels 2, 4, 6): segment the knee first, or give a label "
                         "map in the morphometry numbering (1 femur, 2 femoral cartilage, 3 tibia, 4 tibial "
                         "cartilage, 5 patella, 6 patellar cartilage).")
    warnings: List[str] = []
    thick = measure_thickness(labels, lat, progress.sub(0.0, 0.35))
    warnings += list(getattr(thick, "warnings", []))
    t1 = time.monotonic()
    surfaces = sf.bone_surfaces(labels, progress.sub(0.35, 0.6))
    for bone in lb.BONES:
        if bone not in surfaces:
            warnings.append(f"No {bone} in the label map (not in the field of view or not segmented): its surface, "
                            f"area and maps are not reported.")
    sf.project_thickness(surfaces, thick)
    t2 = None
    t2_time = 0.0
    if series is not None:
        from .t2 import cartilage_t2

        t3 = time.monotonic()
        t2 = cartilage_t2(labels, series, image if params.register_mese else None, t2_params,
                          progress.sub(0.6, 0.85))
        sf.project_points(surfaces, t2.points(), "t2_ms")
        warnings += t2.warnings
        t2_time = time.monotonic() - t3
    t4 = time.monotonic()
    measures = ["thickness_mm"] + (["t2_ms"] if t2 is not None else [])
    maps = {bone: {m: mp.bone_map(s, m) for m in measures} for bone, s in surfaces.items()}
    progress(1.0, "Morphometry done")
    timings = {"thickness": t1 - t0, "surfaces": t4 - t1 - t2_time, "t2": t2_time, "maps": time.monotonic() - t4}
    return MorphResult(labels, labels_source, thick, surfaces, maps, t2, warnings, timings, params)


def segment(image: Image, params: Optional[MorphParameters] = None, progress: "Progress | None" = None):
    """Labels 0-6 of a 3D knee image by the registered ensemble (:mod:`.segment`); returns (labels, info)."""
    from .segment import segment_knee

    params = (params or MorphParameters()).validate()
    check_3d_image(image)
    res = segment_knee(image, progress=progress, device=params.device, model_id=params.model_id)
    info = {"model": params.model_id}
    info.update(getattr(res, "info", {}) or {})
    return res.labels, info


def run(image: Optional[Image], labels: Optional[Image] = None, series=None, params: Optional[MorphParameters] = None,
        t2_params=None, progress: "Progress | None" = None) -> MorphResult:
    """Segment (unless ``labels`` are given) and measure one knee."""
    params = (params or MorphParameters()).validate()
    progress = as_progress(progress)
    if image is None and labels is None:
        raise InputError("Give the 3D knee image, or a label map of the knee ('--labels').")
    timings: Dict[str, float] = {}
    seg_info: Dict[str, object] = {}
    if image is not None and not params.super_resolve:
        check_3d_image(image)
    if labels is None:
        t0 = time.monotonic()
        labels, seg_info = segment(image, params, progress.sub(0.0, 0.6))
        timings["segmentation"] = time.monotonic() - t0
        source = f"segmented by {params.model_id}"
        part = progress.sub(0.6, 1.0)
    else:
        check_3d_image(labels, "The label map")
        if image is not None and not image.geometry.same_grid(labels.geometry):
            raise InputError(f"The label map ({labels.geometry.describe()}) is not on the 3D image's grid "
                             f"({image.geometry.describe()}): give the label map of this image.")
        source = "given"
        part = progress
    result = measure(labels, image, series, params, t2_params, part, source)
    result.timings_s = {**timings, **result.timings_s}
    result.segmentation = seg_info
    return result
