"""STIR thresholds from the normal-bone region (Hepburn et al., section 2.5.2).

Conservative limit ``L_upper`` = the maximum STIR intensity in the normal-bone ROI.
Sensitive limit ``L_lower`` = Q3 + n * IQR, where n starts at 1.5 and moves in steps of
0.05 until 0 < L_upper - L_lower < IQR/2: up while the gap is too wide (the paper's case),
down while L_lower is not below L_upper. If the condition holds at n = 1.5, n stays 1.5.
Quartiles are numpy's default (linear interpolation between order statistics).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mskquant.errors import InputError

N_START = 1.5
N_STEP = 0.05
MIN_ROI_VOXELS = 10


@dataclass(frozen=True)
class Thresholds:
    lower: float  # L_lower, sensitive
    upper: float  # L_upper, conservative
    n: float
    q1: float
    q3: float
    iqr: float
    median: float
    n_voxels: int
    steps: int  # how many 0.05 steps n moved (signed)

    def as_dict(self) -> dict:
        return asdict(self)


def thresholds_from_normal_bone(values: np.ndarray, n_start: float = N_START, step: float = N_STEP) -> Thresholds:
    """Both limits from the STIR intensities of the normal-bone ROI voxels."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < MIN_ROI_VOXELS:
        raise InputError(f"The normal-bone ROI covers {v.size} voxel(s) of the STIR image; at least "
                         f"{MIN_ROI_VOXELS} are needed for stable quartiles: draw a larger ROI in the "
                         f"interforaminal sacrum.")
    if not np.all(np.isfinite(v)):
        raise InputError(f"The STIR image has {int((~np.isfinite(v)).sum())} NaN/infinite voxel(s) inside the "
                         f"normal-bone ROI: fix the image or move the ROI.")
    q1, median, q3 = (float(x) for x in np.percentile(v, [25, 50, 75]))
    iqr = q3 - q1
    upper = float(v.max())
    if iqr <= 0:
        raise InputError("The STIR intensities inside the normal-bone ROI have no spread (IQR = 0), so no "
                         "threshold can be derived: check that the ROI lies on marrow of the STIR image, "
                         "not on a constant or masked region.")

    def lower_at(k: int) -> float:
        return q3 + round(n_start + k * step, 10) * iqr

    def ok(k: int) -> bool:
        gap = upper - lower_at(k)
        return 0 < gap < iqr / 2

    k = 0
    direction = 1 if upper - lower_at(0) >= iqr / 2 else -1
    # Each step moves L_lower by 0.05*IQR and the accepted window is 0.5*IQR wide, so this
    # ends; the bound only guards against non-finite input.
    limit = int(np.ceil(abs(upper - lower_at(0)) / (step * iqr))) + 20
    while not ok(k):
        k += direction
        if abs(k) > limit:
            raise InputError("No sensitive threshold satisfies 0 < L_upper - L_lower < IQR/2 for this ROI: "
                             "check the normal-bone ROI.")
    n = round(n_start + k * step, 10)
    return Thresholds(lower=lower_at(k), upper=upper, n=n, q1=q1, q3=q3, iqr=iqr, median=median,
                      n_voxels=int(v.size), steps=k)
