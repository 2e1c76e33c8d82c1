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
from .segment import DEFAULT_MODEL_ID as DEFAULT_MODEL



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


def check_3d_image(image: Image, what: str = "The 3D knee image") -> None:
    """Refuse what the morphometry cannot measure (a series, a 2D image, slices thicker than 1.5 mm)."""
    from .segment import check_input

    check_input(image, what, "use a 3D (DESS-like) scan, or restore the thick slices first with super-resolution "
                             "('--super-resolve')")


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
        from .shape import shape_summary
        from .thickness import DEFINITION

        counts = {lb.NAMES[v]: int(np.count_nonzero(self.labels.array == v)) for v in range(1, lb.N_LABELS)}
        vox = float(self.labels.geometry.voxel_volume_mm3)
        out = {
            "labels": {"source": self.labels_source, "grid": self.labels.geometry.describe(),
                       "voxels": counts, "volume_mm3": {k: round(v * vox, 1) for k, v in counts.items()},
                       "missing": [k for k, v in counts.items() if v == 0]},
            "thickness": {"definition": DEFINITION, "laterality": self.thickness.laterality,
                          "plates": self.thickness.rows(), "nearest_point": self.thickness.rows("nearest")},
            "bones": shape_summary(self.surfaces),
            "missing_bones": [b for b in lb.BONES if b not in self.surfaces],
            "maps": {bone: {m: v.info() for m, v in ms.items()} for bone, ms in self.maps.items()},
            "warnings": list(self.warnings),
            "timings_s": {k: round(v, 2) for k, v in self.timings_s.items()},
            "parameters": self.params.as_dict() if self.params else {},
        }
        if self.segmentation:
            out["segmentation"] = self.segmentation
        if self.t2 is not None:
            q = self.t2.quantification.summary()
            out["t2"] = {"registration": self.t2.registration.as_dict(), "noise": q["noise"],
                         "femoral_subregions": q["regions"], "surface_femoral_subregions": self.surface_t2_regions()}
        return out

    def surface_t2_regions(self) -> List[dict]:
        """T2 per femoral subregion (layer x side x zone) from the femur's articular surface: the count-weighted
        mean of the layer's vertex values over the vertices whose voxels are mostly of that side and zone,
        beside the volumetric mean of the subregion."""
        from ..subregions import SUBREGION_NAMES

        from ..subregions import LAYERS

        femur = self.surfaces.get("femur")
        if femur is None or self.t2 is None or femur.array("t2_ms_voxels") is None:
            return []
        code = femur.array("t2_region")
        volumetric = self.t2.region_means()
        rows = []
        for r in sorted(SUBREGION_NAMES):
            layer, c = LAYERS[(r - 1) // 6], (r - 1) % 6 + 1
            t2, n = femur.array(f"t2_{layer}_ms_voxels"), femur.array(f"t2_{layer}_ms_voxels_count")
            sel = (code == c) & (n > 0)
            w = n[sel].astype(np.float64)
            mean = float((t2[sel] * w).sum() / w.sum()) if w.sum() else float("nan")
            rows.append({"subregion": int(r), "region": SUBREGION_NAMES[r], "surface_mean_t2_ms": mean,
                         "volumetric_mean_t2_ms": volumetric.get(r, float("nan")), "n_vertices": int(sel.sum()),
                         "n_voxels": int(w.sum())})
        return rows


def measure(labels: Image, image: Optional[Image] = None, series=None, params: Optional[MorphParameters] = None,
            t2_params=None, progress: "Progress | None" = None, labels_source: str = "given") -> MorphResult:
    """Thickness, bone surfaces, projections and maps of one knee's ``labels`` (0-6 on the 3D image's grid)."""
    from .maps import bone_map
    from .projection import project_points, project_thickness
    from .surface import bone_surfaces
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
    thick = measure_thickness(labels, lat, progress.sub(0.0, 0.35))
    warnings: List[str] = list(thick.messages)
    t1 = time.monotonic()
    surfaces = {}
    for bone, surf in bone_surfaces(labels, progress.sub(0.35, 0.6)).items():
        if surf.missing:
            warnings.append(surf.message or f"No {bone} in the label map: its surface, areas and maps are not reported.")
        else:
            surfaces[bone] = surf
    project_thickness(surfaces, thick)
    t2 = None
    t2_time = 0.0
    if series is not None:
        from .t2 import cartilage_t2

        t3 = time.monotonic()
        t2 = cartilage_t2(labels, series, image if params.register_mese else None, t2_params,
                          progress.sub(0.6, 0.85))
        project_t2(surfaces, t2)
        warnings += t2.warnings
        t2_time = time.monotonic() - t3
    t4 = time.monotonic()
    measures = ["thickness_mm"] + (["t2_ms"] if t2 is not None else [])
    maps: Dict[str, Dict[str, object]] = {}
    for bone, surf in surfaces.items():
        for m in measures:
            bmap = bone_map(surf, m, thick.laterality)
            if bmap is not None:
                maps.setdefault(bone, {})[m] = bmap
    progress(1.0, "Morphometry done")
    timings = {"thickness": t1 - t0, "surfaces": t4 - t1 - t2_time, "t2": t2_time, "maps": time.monotonic() - t4}
    return MorphResult(labels, labels_source, thick, surfaces, maps, t2, warnings, timings, params)


def project_t2(surfaces: Dict[str, object], t2) -> None:
    """T2 points onto the articular vertices (:func:`.projection.project_points`).

    Exact, count-weighted: ``t2_ms_voxels`` with ``t2_ms_voxels_count`` (all layers; each vertex's femoral
    side x zone region in ``t2_region``) and, on the femur, ``t2_deep_ms_voxels`` / ``t2_superficial_ms_voxels``
    (a surface carries both layers of the cartilage above it, so the layers are kept apart). The voxels of a
    thick-slice MESE series reach only some vertices: ``t2_ms``, ``t2_deep_ms`` and ``t2_superficial_ms``
    (display, maps) fill the others from the nearest reached vertex within one slice spacing."""
    from ..subregions import LAYERS
    from .projection import fill_articular, project_points
    from .regions import femoral_region_of_subregion

    pts = t2.points()
    gap = float(max(t2.labels.geometry.spacing))
    sub = pts["region"].astype(int)
    project_points(surfaces, pts["ras"], pts["t2"], pts["label"], "t2_ms_voxels", femoral_region_of_subregion(sub),
                   "t2_region")
    fill_articular(surfaces, "t2_ms_voxels", "t2_ms", gap)
    if "femur" in surfaces:
        layer = np.where(sub > 0, (sub - 1) // 6, -1)
        femur = {"femur": surfaces["femur"]}
        for li, name in enumerate(LAYERS):
            project_points(femur, pts["ras"], pts["t2"], np.where(layer == li, pts["label"], 0), f"t2_{name}_ms_voxels")
            fill_articular(femur, f"t2_{name}_ms_voxels", f"t2_{name}_ms", gap)


def segment(image: Image, params: Optional[MorphParameters] = None, progress: "Progress | None" = None):
    """Labels 0-6 of a 3D knee image by the registered ensemble (:mod:`.segment`); returns (labels, info)."""
    from .segment import segment_knee

    params = (params or MorphParameters()).validate()
    check_3d_image(image)
    res = segment_knee(image, progress=progress, device=params.device, model_id=params.model_id)
    info = {"model": res.model_id, "device": res.device, "seconds": round(res.seconds, 2),
            "resampled_to_sagittal_grid": res.resampled, "bone_island_voxels_removed": res.islands_removed}
    return res.labels, info


def segment_image(image: Image, params: MorphParameters, progress: "Progress | None" = None):
    """(the image segmented, labels, info, warnings): super-resolved first when ``params.super_resolve``."""
    progress = as_progress(progress)
    warnings: List[str] = []
    sr_info = None
    part = progress
    if params.super_resolve:
        image, sr_info, warnings = super_resolved(image, params, progress.sub(0.0, 0.4))
        part = progress.sub(0.4, 1.0)
    labels, info = segment(image, params, part)
    if sr_info is not None:
        info["super_resolution"] = sr_info
    return image, labels, info, warnings


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
    sr_warnings: List[str] = []
    if labels is None:
        image, labels, seg_info, sr_warnings = segment_image(image, params, progress.sub(0.0, 0.65))
        timings["segmentation"] = seg_info["seconds"]
        if "super_resolution" in seg_info:
            timings["super_resolution"] = seg_info["super_resolution"]["seconds"]
        source = f"segmented by {params.model_id}" + (" on the super-resolved image" if params.super_resolve else "")
        part = progress.sub(0.65, 1.0)
    elif params.super_resolve:
        raise InputError("'Super-resolve' applies to an image that is segmented here: a given label map is measured "
                         "on its own grid; leave out --super-resolve (or the label map).")
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
    result.warnings = sr_warnings + result.warnings
    return result


def super_resolved(image: Image, params: MorphParameters, progress: "Progress | None" = None):
    """(the super-resolved image on the fine slice grid, info, warnings) of a thick-sliced ``image``."""
    from ..superres.infer import super_resolve
    from ..superres.model import load_model

    res = super_resolve(image, load_model(progress=None), params.sr_factor, params.device, progress)
    info = {"factor": res.factor, "slice_axis": "ijk"[res.slice_axis_ijk], "input_grid": image.geometry.describe(),
            "output_grid": res.image.geometry.describe(), "seconds": round(res.seconds.get("total_s", 0.0), 2),
            "note": "super-resolution network trained on simulated images; not validated on real scans"}
    return res.image, info, list(res.warnings)
