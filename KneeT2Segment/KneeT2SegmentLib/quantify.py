"""The quantification pipeline on arrays (no Slicer): T2 fit, mask refinement, subregions, statistics.

Thomas et al. 2.5 and 2.6.2: the T2 of every cartilage voxel is fitted (first echo
excluded, noise-corrected), voxels whose T2 falls outside [0, 100] ms are discarded from the
segmentation ("refinement"), the refined cartilage is divided into 12 subregions on its 2D
projection, and mean/SD/median/count are reported per subregion and for the aggregates.
The MRML logic (``logic.py``) and the command line call this; so do the tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Image, sagittal_obliquity_warnings
from mskquant.progress import Progress, as_progress

from .mese import MeseSeries, normalize_laterality
from .parameters import KneeT2Parameters
from .subregions import (CSV_COLUMNS, FemoralSubregions, ProjectionMaps, RegionStats, femoral_subregions,
                         projection_maps, region_stats, sagittal_frame)
from .t2fit import T2Fit, fit_t2

MODEL_DESCRIPTION = ("noise-corrected mono-exponential S = sqrt(A^2 exp(-2 TE/T2) + 2 sigma^2), least squares "
                     "(Levenberg-Marquardt)")


@dataclass
class Quantification:
    fit: T2Fit
    mask: np.ndarray
    refined: np.ndarray
    subregions: FemoralSubregions
    rows: List[RegionStats]
    projection: ProjectionMaps
    series: MeseSeries
    params: KneeT2Parameters
    laterality: str
    laterality_source: str
    warnings: List[str] = field(default_factory=list)
    timings_s: Dict[str, float] = field(default_factory=dict)

    @property
    def geometry(self):
        return self.series.geometry

    @property
    def t2_map(self) -> np.ndarray:
        """T2 (ms) on the MESE grid: NaN outside the refined mask (or, whole-volume, outside the valid range)."""
        if self.params.whole_volume:
            return self.fit.t2_ms
        return np.where(self.refined, self.fit.t2_ms, np.nan).astype(np.float32)

    def summary(self) -> dict:
        """Everything needed later (change over time, reports), JSON-ready."""
        sub = self.subregions
        g = self.geometry
        return {
            "software": f"mskquant {__import__('mskquant').__version__} KneeT2Segment",
            "method": "Thomas et al. 2.5-2.6 (noise-corrected T2, 12 femoral subregions on the 2D projection)",
            "source": self.series.source,
            "subject_id": self.series.subject_id,
            "laterality": self.laterality,
            "laterality_source": self.laterality_source,
            "echo_times_ms": [float(t) for t in self.series.echo_times_ms],
            "echo_times_used_ms": [float(t) for t in self.fit.echo_times_used_ms],
            "fit": {"model": MODEL_DESCRIPTION, "skip_echoes": self.params.skip_echoes,
                    "t2_range_ms": [self.params.t2_min_ms, self.params.t2_max_ms],
                    "whole_volume": self.params.whole_volume},
            "noise": {"sigma": self.fit.noise.sigma, "source": self.fit.noise.source,
                      "background_voxels": self.fit.noise.n_voxels, "note": self.fit.noise.note,
                      "background_echo_decay": _finite_or_none(self.fit.noise.echo_decay),
                      "background_mean_rms": _finite_or_none(self.fit.noise.mean_rms)},
            "counts": {**self.fit.counts, "mask_voxels": int(self.mask.sum()),
                       "refined_voxels": int(self.refined.sum())},
            "grid": {"shape_ijk": list(g.shape_ijk), "spacing_mm": [float(s) for s in g.spacing],
                     "ijk_to_ras": g.ijk_to_ras.tolist()},
            "subregions": {"circle_centre_mm": list(sub.centre_mm), "circle_radius_mm": sub.radius_mm,
                           "boundary_slice": sub.boundary_slice, "medial_lateral_method": sub.ml_method,
                           "slice_range": list(sub.slice_range), "slice_axis": sub.frame.slice_axis,
                           "medial_step": sub.frame.medial_step, "obliquity_deg": sub.frame.obliquity_deg,
                           "zones_deg": {"anterior": "phi <= -35", "central": "-35 < phi <= 25",
                                         "posterior": "phi > 25"},
                           "deep_fraction": 0.5},
            "regions": [dict(zip(CSV_COLUMNS, r.as_row())) for r in self.rows],
            "projection": self.projection.to_dict(),
            "warnings": list(self.warnings),
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
        }


def resolve_laterality(series: MeseSeries, laterality: Optional[str]) -> tuple:
    """(laterality, where it came from): the user's choice wins over the image metadata."""
    lat = normalize_laterality(laterality)
    if lat is not None:
        return lat, "given"
    if series.laterality:
        return series.laterality, series.laterality_source or "image metadata"
    raise InputError("The knee's laterality is unknown (the images do not record it), so medial cannot be told from "
                     "lateral: give it with --laterality left|right (panel: Laterality).")


def check_mask(mask, series: MeseSeries) -> np.ndarray:
    """A boolean mask on the MESE grid, or one clear error."""
    g = series.geometry
    if isinstance(mask, Image):
        if mask.is_series:
            raise InputError("The cartilage mask is 4D: give a 3D mask (non-zero = cartilage).")
        if not mask.geometry.same_grid(g):
            raise InputError(f"The cartilage mask grid ({mask.geometry.describe()}) differs from the MESE grid "
                             f"({g.describe()}): give a mask drawn on the MESE images (same size, spacing, position "
                             f"and orientation).")
        arr = np.asarray(mask.array)
    else:
        arr = np.asarray(mask)
        if arr.shape != g.shape_kji:
            raise InputError(f"The cartilage mask has {arr.shape[::-1]} voxels but the MESE series "
                             f"{g.shape_kji[::-1]}: give a mask on the MESE grid.")
    if arr.dtype != bool:
        arr = np.nan_to_num(arr.astype(np.float64)) != 0
    if not arr.any():
        raise InputError("The cartilage mask is empty: draw or select the femoral cartilage.")
    return arr


def quantify(series: MeseSeries, mask, params: Optional[KneeT2Parameters] = None,
             progress: "Progress | None" = None, fit: Optional[T2Fit] = None,
             fitted: Optional[np.ndarray] = None) -> Quantification:
    """T2 map, refined mask, 12 subregions, statistics and projection maps of one MESE series.

    ``fit`` (with ``fitted``, the voxels it was computed on, a superset of ``mask``) reuses a
    T2 fit made with the same settings - the automatic segmentation fits its candidate voxels
    anyway, and a voxel's T2 does not depend on the mask - instead of fitting again.
    """
    params = (params or KneeT2Parameters()).validate()
    progress = as_progress(progress)
    t0 = time.monotonic()
    laterality, lat_source = resolve_laterality(series, params.laterality)
    frame = sagittal_frame(series.geometry, laterality)  # refuse non-sagittal grids before the fit
    mask = check_mask(mask, series)
    settings = params.fit_settings()
    settings.validate(series.n_echoes)
    reuse = fit is not None and fitted is not None and not params.whole_volume
    if reuse and not np.all(np.asarray(fitted, bool)[mask]):
        raise ValueError("the given T2 fit does not cover the mask")
    if not reuse:
        fit = fit_t2(series.echoes.array, series.echo_times_ms, None if params.whole_volume else mask, settings,
                     progress.sub(0.0, 0.85))
    else:
        outside = ~mask  # the reused maps must look like a fit of this mask alone
        fit = replace(fit, t2_ms=np.where(outside, np.nan, fit.t2_ms).astype(np.float32),
                      amplitude=np.where(outside, np.nan, fit.amplitude).astype(np.float32),
                      r2=np.where(outside, np.nan, fit.r2).astype(np.float32),
                      t2_loglinear_ms=None if fit.t2_loglinear_ms is None else
                      np.where(outside, np.nan, fit.t2_loglinear_ms).astype(np.float32),
                      counts={**fit.counts, "candidates": int(mask.sum()),
                              "valid": int(np.isfinite(fit.t2_ms[mask]).sum()),
                              "fit_shared_with_voxels": int(np.count_nonzero(fitted))})
    timings = {"fit": time.monotonic() - t0}
    refined = mask & np.isfinite(fit.t2_ms)
    warnings = sagittal_obliquity_warnings(frame.obliquity_deg) + list(fit.warnings)
    n_mask, n_ref = int(mask.sum()), int(refined.sum())
    if n_ref == 0:
        raise InputError(f"None of the {n_mask} mask voxels has a T2 within [{params.t2_min_ms:g}, "
                         f"{params.t2_max_ms:g}] ms: check that the mask lies on the cartilage of this MESE series.")
    if n_ref < n_mask:
        pct = 100.0 * (n_mask - n_ref) / n_mask
        msg = (f"{n_mask - n_ref} of {n_mask} mask voxels ({pct:.1f} %) were discarded: T2 outside "
               f"[{params.t2_min_ms:g}, {params.t2_max_ms:g}] ms or no signal (Thomas et al. 2.5).")
        if pct > 20:
            msg += " That is many: check the mask and the echo times."
        warnings.append(msg)
    progress(0.88, "Subregions")
    t1 = time.monotonic()
    sub = femoral_subregions(refined, series.geometry, laterality)
    warnings.extend(sub.warnings)
    t2 = np.where(refined, fit.t2_ms, np.nan)
    rows = region_stats(t2, sub.labels)
    proj = projection_maps(t2, sub)
    timings["subregions"] = time.monotonic() - t1
    timings["total"] = time.monotonic() - t0
    progress(1.0, "Quantification done")
    return Quantification(fit, mask, refined, sub, rows, proj, series, params, laterality, lat_source, warnings,
                          timings)


def _finite_or_none(value: float) -> Optional[float]:
    """JSON has no NaN: a measure that was not taken (noise SD given) is null."""
    return float(value) if np.isfinite(value) else None
