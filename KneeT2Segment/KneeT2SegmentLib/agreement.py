"""Agreement between two femoral cartilage segmentations of the same MESE scans.

Thomas et al. 2.6 compare the model with Reader 1 (and Reader 2 with Reader 1):

* **one scan** (2.6.1): volumetric Dice and Jaccard of the two masks;
* **one scan** (2.6.2): each segmentation goes through the whole quantification on its own
  (T2 fit, refinement to [0, 100] ms, its own 12 subregions on its own 2D projection) and the
  mean T2 of every region (the 12 subregions and their aggregates) is taken from each;
* **a set of scans** (2.6.2, Figure 2-4, SM.7): per region, over the scans, the Spearman
  correlation, the mean absolute error, the bias (mean of B - A, with a one-sample t-test
  p-value as the paper reports which subregions carry a significant bias), and the
  Bland-Altman 95 % limits of agreement (:mod:`mskquant.metrics`).

"A" is the reference (Reader 1), "B" the segmentation being judged (the model, Reader 2).
The T2 fit of the union of both masks is computed once and shared: per voxel it does not
depend on the mask, so each segmentation's numbers are exactly what it alone would give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from mskquant.errors import InputError
from mskquant.metrics import bland_altman, dice, jaccard, spearman
from mskquant.progress import Progress, as_progress

from .mese import MeseSeries
from .parameters import KneeT2Parameters
from .quantify import Quantification, check_mask, quantify
from .subregions import SUBREGION_NAMES, region_keys, region_name

REGIONS = tuple(region_name(*k) for k in region_keys())  # "All", "Deep", ..., the 12 subregions last
SCAN_COLUMNS = ("region", "mean_t2_a_ms", "mean_t2_b_ms", "difference_ms", "n_voxels_a", "n_voxels_b")
SET_COLUMNS = ("region", "n_scans", "spearman", "mae_ms", "bias_ms", "bias_p_value", "sd_difference_ms",
               "lower_limit_ms", "upper_limit_ms", "mean_t2_a_ms", "mean_t2_b_ms")


@dataclass
class ScanAgreement:
    """Two segmentations (A reference, B judged) of one MESE scan."""

    name: str
    dice: float
    jaccard: float
    voxels_a: int  # after refinement (T2 within the valid range)
    voxels_b: int
    volume_a_ml: float
    volume_b_ml: float
    mean_t2_a: Dict[str, float]  # region -> mean T2 (ms)
    mean_t2_b: Dict[str, float]
    n_a: Dict[str, int]
    n_b: Dict[str, int]
    quant_a: Optional[Quantification] = field(default=None, repr=False)
    quant_b: Optional[Quantification] = field(default=None, repr=False)

    def rows(self) -> List[list]:
        return [[r, self.mean_t2_a[r], self.mean_t2_b[r], self.mean_t2_b[r] - self.mean_t2_a[r], self.n_a[r],
                 self.n_b[r]] for r in REGIONS]

    def as_dict(self) -> dict:
        return {"scan": self.name, "dice": self.dice, "jaccard": self.jaccard, "voxels_a": self.voxels_a,
                "voxels_b": self.voxels_b, "volume_a_ml": self.volume_a_ml, "volume_b_ml": self.volume_b_ml,
                "regions": [dict(zip(SCAN_COLUMNS, r)) for r in self.rows()]}


def compare_scan(series: MeseSeries, mask_a, mask_b, params: Optional[KneeT2Parameters] = None, name: str = "",
                 progress: "Progress | None" = None) -> ScanAgreement:
    """Dice, Jaccard and per-region mean T2 of two segmentations of one scan (each refined on its own)."""
    from .t2fit import fit_t2

    params = (params or KneeT2Parameters()).validate()
    progress = as_progress(progress)
    a = check_mask(mask_a, series)
    b = check_mask(mask_b, series)
    union = a | b
    settings = params.fit_settings()
    settings.validate(series.n_echoes)
    fit = fit_t2(series.echoes.array, series.echo_times_ms, union, settings, progress.sub(0.0, 0.7))
    qa = quantify(series, a, params, progress.sub(0.7, 0.85), fit=fit, fitted=union)
    qb = quantify(series, b, params, progress.sub(0.85, 1.0), fit=fit, fitted=union)
    mm3 = series.geometry.voxel_volume_mm3
    ra, rb = {r.region: r for r in qa.rows}, {r.region: r for r in qb.rows}
    return ScanAgreement(name or series.source or "scan", dice(qa.refined, qb.refined), jaccard(qa.refined, qb.refined),
                         int(qa.refined.sum()), int(qb.refined.sum()), qa.refined.sum() * mm3 / 1000.0,
                         qb.refined.sum() * mm3 / 1000.0, {k: ra[k].mean_t2_ms for k in REGIONS},
                         {k: rb[k].mean_t2_ms for k in REGIONS}, {k: ra[k].n_voxels for k in REGIONS},
                         {k: rb[k].n_voxels for k in REGIONS}, qa, qb)


@dataclass
class RegionAgreement:
    region: str
    n_scans: int
    spearman: float
    mae_ms: float
    bias_ms: float
    bias_p_value: float
    sd_difference_ms: float
    lower_limit_ms: float
    upper_limit_ms: float
    mean_t2_a_ms: float
    mean_t2_b_ms: float
    a: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    b: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    scan_names: List[str] = field(repr=False, default_factory=list)  # the scans of a and b (finite in both)

    def as_row(self) -> list:
        return [getattr(self, c) for c in SET_COLUMNS]


@dataclass
class SetAgreement:
    scans: List[ScanAgreement]
    regions: List[RegionAgreement]
    warnings: List[str] = field(default_factory=list)

    @property
    def mean_dice(self) -> float:
        return float(np.mean([s.dice for s in self.scans]))

    @property
    def mean_jaccard(self) -> float:
        return float(np.mean([s.jaccard for s in self.scans]))

    def region(self, name: str) -> RegionAgreement:
        return next(r for r in self.regions if r.region == name)

    def subregion_mae_ms(self) -> float:
        """Mean absolute error over the 12 subregions and all scans (the acceptance figure)."""
        return float(np.mean([self.region(n).mae_ms for n in SUBREGION_NAMES.values()]))

    def as_dict(self) -> dict:
        return {"n_scans": len(self.scans), "mean_dice": self.mean_dice, "sd_dice": float(np.std([s.dice for s in
                                                                                                  self.scans])),
                "mean_jaccard": self.mean_jaccard, "mean_subregion_mae_ms": self.subregion_mae_ms(),
                "scans": [{k: v for k, v in s.as_dict().items() if k != "regions"} for s in self.scans],
                "regions": [dict(zip(SET_COLUMNS, r.as_row())) for r in self.regions],
                "warnings": list(self.warnings)}


def agreement_over_scans(scans: Sequence[ScanAgreement]) -> SetAgreement:
    """Per region over the scans: Spearman, MAE, bias (+ t-test p), Bland-Altman limits."""
    from scipy import stats

    if len(scans) < 2:
        raise InputError(f"Agreement over scans needs at least 2 scans with both segmentations (got {len(scans)}).")
    warnings = []
    if len(scans) < 5:
        warnings.append(f"Only {len(scans)} scans: Spearman correlations and limits of agreement are very uncertain.")
    regions = []
    for name in REGIONS:
        a = np.array([s.mean_t2_a[name] for s in scans], float)
        b = np.array([s.mean_t2_b[name] for s in scans], float)
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        names = [s.name for s, kept in zip(scans, ok) if kept]
        nan = float("nan")
        if a.size < 2:
            regions.append(RegionAgreement(name, int(a.size), nan, nan, nan, nan, nan, nan, nan, nan, nan, a, b, names))
            continue
        d = b - a
        ba = limits_of_agreement(a, b)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = spearman(a, b) if np.ptp(a) > 0 and np.ptp(b) > 0 else nan
            p = float(stats.ttest_1samp(d, 0.0).pvalue) if np.ptp(d) > 0 else (1.0 if d[0] == 0 else 0.0)
        regions.append(RegionAgreement(name, int(a.size), float(rho), float(np.abs(d).mean()), float(d.mean()), p,
                                       ba[0], ba[1], ba[2], float(a.mean()), float(b.mean()), a, b, names))
    return SetAgreement(list(scans), regions, warnings)


def limits_of_agreement(a: np.ndarray, b: np.ndarray):
    """(SD of the differences, lower and upper 95 % limits) or NaNs for fewer than 2 pairs."""
    if a.size < 2:
        return (math.nan, math.nan, math.nan)
    ba = bland_altman(a, b)
    return (ba.sd_difference, ba.lower_limit, ba.upper_limit)
