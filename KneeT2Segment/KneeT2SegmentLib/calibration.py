"""Calibration of the two post-processing thresholds by grid search on validation scans.

Thomas et al. 2.5: "The validation image set was used to set the values of these two
thresholds to maximize the Dice score between model segmentations and Reader 1
segmentations ... identified to be 425 voxels and p >= 0.501 via grid search". Here: every
validation scan goes through the network once and its candidate voxels (p > 0.01) through
the T2 fit once; then for every probability threshold on the grid the per-slice voxel counts
and overlaps with the reference give the volumetric Dice for every slice minimum at once, and
the pair with the highest mean Dice over the scans wins (ties: the smaller slice minimum,
then the probability threshold nearest 0.5). The slice minimum is searched as an area in
mm^2 (pixel size times voxels) so that it transfers between grids; on the OAI MESE grid
(0.3125 x 0.446 mm pixels) 1 voxel = 0.139 mm^2, and the paper's 425 voxels of the 384 x 384
reconstruction (0.3125 mm pixels) are 41.5 mm^2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from mskquant.errors import InputError
from mskquant.progress import Progress, as_progress

from .checkpoint import Thresholds
from .mese import MeseSeries
from .segmentation import KneeModel, predict_probability, sagittal_layout

PROBABILITY_GRID = tuple(round(float(v), 3) for v in np.arange(0.05, 0.951, 0.01))
AREA_GRID_MM2 = tuple(float(v) for v in np.arange(0.0, 150.01, 2.5))


@dataclass
class CalibrationCase:
    """One validation scan and its reference femoral cartilage mask (reader or simulation truth)."""

    series: MeseSeries
    reference: np.ndarray
    name: str
    noise_sigma: Optional[float] = None  # known noise SD (simulations); None: from the background


@dataclass
class CaseTables:
    """Per probability threshold and slice: cartilage voxels kept and their overlap with the reference."""

    name: str
    counts: np.ndarray  # [n_p, n_slices]
    overlap: np.ndarray  # [n_p, n_slices]
    reference_voxels: int
    pixel_area_mm2: float


@dataclass
class CalibrationResult:
    thresholds: Thresholds
    mean_dice: float
    dice_per_case: List[float]
    dice_at_defaults: List[float]  # p >= 0.5, no slice minimum
    grid: np.ndarray  # [n_p, n_area] mean Dice
    probability_grid: Sequence[float]
    area_grid_mm2: Sequence[float]
    cases: List[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"probability_threshold": self.thresholds.probability,
                "min_slice_area_mm2": self.thresholds.min_slice_area_mm2,
                "mean_dice": self.mean_dice, "dice_per_case": dict(zip(self.cases, self.dice_per_case)),
                "mean_dice_at_p0.5_no_slice_minimum": float(np.mean(self.dice_at_defaults)),
                "probability_grid": [float(v) for v in self.probability_grid],
                "area_grid_mm2": [float(v) for v in self.area_grid_mm2], "n_cases": len(self.cases),
                "method": "grid search maximising the mean volumetric Dice (Thomas et al. 2.5)"}


def case_tables(model: KneeModel, case: CalibrationCase, probability_grid: Sequence[float], fit_settings=None,
                progress: "Progress | None" = None) -> CaseTables:
    from dataclasses import replace

    from .t2fit import FitSettings, fit_t2

    progress = as_progress(progress)
    layout = sagittal_layout(case.series.geometry)
    ref = np.asarray(case.reference, bool)
    if ref.shape != case.series.geometry.shape_kji:
        raise InputError(f"The reference mask of {case.name} is not on its MESE grid: give masks drawn on the MESE images.")
    if not ref.any():
        raise InputError(f"The reference mask of {case.name} is empty: give the femoral cartilage mask.")
    prob = predict_probability(model, case.series, progress.sub(0.0, 0.7), layout)
    th = model.thresholds
    settings = fit_settings or FitSettings(t2_range_ms=th.t2_range_ms)
    if case.noise_sigma is not None:
        settings = replace(settings, noise_sigma=float(case.noise_sigma))
    candidates = prob > th.fit_probability
    if candidates.any():
        valid = np.isfinite(fit_t2(case.series.echoes.array, case.series.echo_times_ms, candidates, settings,
                                   progress.sub(0.7, 0.95)).t2_ms)
    else:
        valid = candidates
    axes = tuple(a for a in range(3) if a != layout.slice_axis)
    counts = np.empty((len(probability_grid), ref.shape[layout.slice_axis]), np.int64)
    overlap = np.empty_like(counts)
    for n, p in enumerate(probability_grid):
        m = (prob >= p) & valid
        counts[n] = m.sum(axis=axes)
        overlap[n] = (m & ref).sum(axis=axes)
    progress(1.0, f"Calibration tables of {case.name}")
    return CaseTables(case.name, counts, overlap, int(ref.sum()), layout.pixel_area_mm2)


def dice_grid(tables: CaseTables, area_grid_mm2: Sequence[float]) -> np.ndarray:
    """Volumetric Dice ``[n_p, n_area]`` of one case for every threshold pair."""
    out = np.empty((tables.counts.shape[0], len(area_grid_mm2)))
    for a, area in enumerate(area_grid_mm2):
        min_vox = Thresholds(0.5, area).min_slice_voxels(tables.pixel_area_mm2)
        keep = tables.counts >= min_vox
        kept = np.where(keep, tables.counts, 0).sum(axis=1)
        inter = np.where(keep, tables.overlap, 0).sum(axis=1)
        out[:, a] = 2.0 * inter / np.maximum(kept + tables.reference_voxels, 1)
    return out


def calibrate(model: KneeModel, cases: Sequence[CalibrationCase], fit_settings=None,
              probability_grid: Sequence[float] = PROBABILITY_GRID, area_grid_mm2: Sequence[float] = AREA_GRID_MM2,
              progress: "Progress | None" = None) -> CalibrationResult:
    """The threshold pair that maximises the mean Dice over ``cases``."""
    progress = as_progress(progress)
    if not cases:
        raise InputError("Calibration needs at least one validation scan with a reference mask.")
    probability_grid = list(probability_grid)
    area_grid_mm2 = list(area_grid_mm2)
    per_case = []
    for n, case in enumerate(cases):
        sub = progress.sub(n / len(cases), (n + 1) / len(cases))
        sub(0.0, f"Calibrating on {case.name} ({n + 1}/{len(cases)})")
        per_case.append(dice_grid(case_tables(model, case, probability_grid, fit_settings, sub), area_grid_mm2))
    stack = np.stack(per_case)  # [case, p, area]
    grid = stack.mean(axis=0)
    best = float(np.max(grid))
    ties = np.argwhere(grid >= best - 1e-9)
    # ties: the smallest slice minimum, then the probability threshold nearest 0.5
    a_min = ties[:, 1].min()
    ties = ties[ties[:, 1] == a_min]
    p_idx = int(ties[np.argmin([abs(probability_grid[i] - 0.5) for i in ties[:, 0]]), 0])
    p_best, a_best = probability_grid[p_idx], area_grid_mm2[int(a_min)]
    th = Thresholds(float(p_best), float(a_best), model.thresholds.fit_probability, model.thresholds.t2_range_ms)
    p05 = int(np.argmin([abs(p - 0.5) for p in probability_grid]))
    a0 = int(np.argmin(np.abs(np.asarray(area_grid_mm2))))
    progress(1.0, f"Calibrated: p >= {p_best:g}, slice minimum {a_best:g} mm2 (mean Dice {best:.4f})")
    return CalibrationResult(th, best, [float(d) for d in stack[:, p_idx, int(a_min)]],
                             [float(d) for d in stack[:, p05, a0]], grid, probability_grid, area_grid_mm2,
                             [c.name for c in cases])
