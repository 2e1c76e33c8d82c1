"""Agreement between inflammation masks and V_HI measurements (Hepburn et al. 2.7).

* two masks of one scan (two readers, a reader against the workflow): Dice, Jaccard,
  volume similarity and both volumes;
* V_HI across subjects from two methods/readers: Bland-Altman mean difference and 95 %
  limits of agreement (the paper reports them in voxels and on raw data);
* one subject before/after treatment: the change in V_HI (absolute and relative).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Geometry
from mskquant.metrics import BlandAltman, bland_altman, dice, jaccard, volume_similarity


@dataclass(frozen=True)
class MaskComparison:
    dice: float
    jaccard: float
    volume_similarity: float
    voxels_a: int
    voxels_b: int
    volume_a_ml: float
    volume_b_ml: float

    def as_dict(self) -> Dict[str, float]:
        return dict(self.__dict__)


def compare_masks(a: np.ndarray, b: np.ndarray, geometry: Geometry) -> MaskComparison:
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    if a.shape != b.shape:
        raise InputError(f"The two masks have different sizes {a.shape} and {b.shape}: compare masks of one scan.")
    va, vb = int(a.sum()), int(b.sum())
    mm3 = geometry.voxel_volume_mm3
    return MaskComparison(dice(a, b), jaccard(a, b), volume_similarity(va, vb), va, vb, va * mm3 / 1000, vb * mm3 / 1000)


def agreement(values_a: Sequence[float], values_b: Sequence[float]) -> BlandAltman:
    if len(values_a) < 2:
        raise InputError("Bland-Altman agreement needs at least 2 subjects with both measurements: give one row per "
                         "subject, two or more.")
    return bland_altman(values_a, values_b)


@dataclass(frozen=True)
class Change:
    pre_ml: float
    post_ml: float

    @property
    def change_ml(self) -> float:
        return self.post_ml - self.pre_ml

    @property
    def change_percent(self) -> float:
        return float("nan") if self.pre_ml == 0 else 100.0 * self.change_ml / self.pre_ml

    @property
    def improved(self) -> bool:
        """The paper's simplification: any decrease of V_HI counts as a response."""
        return self.post_ml < self.pre_ml
