"""Agreement statistics shared by the modules (Dice, Jaccard, volume similarity, Bland-Altman).

Definitions: Dice = 2|A∩B| / (|A| + |B|) (Hepburn et al., supplement S1); Jaccard =
|A∩B| / |A∪B|; volume similarity = 1 - |V_A - V_B| / (V_A + V_B); Bland-Altman: mean of
the differences (B - A) and 95 % limits of agreement mean ± 1.96 SD (sample SD, ddof=1).
Two empty masks agree perfectly (Dice 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union


def volume_similarity(volume_a: float, volume_b: float) -> float:
    total = volume_a + volume_b
    return 1.0 if total == 0 else 1.0 - abs(volume_a - volume_b) / total


@dataclass
class BlandAltman:
    n: int
    mean_difference: float
    sd_difference: float
    lower_limit: float
    upper_limit: float
    means: np.ndarray
    differences: np.ndarray


def bland_altman(a: Sequence[float], b: Sequence[float]) -> BlandAltman:
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError("Bland-Altman needs two equally long series of at least 2 measurements")
    d = b - a
    md = float(d.mean())
    sd = float(d.std(ddof=1))
    return BlandAltman(len(a), md, sd, md - 1.96 * sd, md + 1.96 * sd, (a + b) / 2.0, d)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)
