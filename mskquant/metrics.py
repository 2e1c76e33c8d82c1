"""Agreement statistics shared by the modules (Dice, Jaccard, volume similarity, Bland-Altman).

Definitions: Dice = 2|A∩B| / (|A| + |B|) (Hepburn et al., supplement S1); Jaccard =
|A∩B| / |A∪B|; volume similarity = 1 - |V_A - V_B| / (V_A + V_B); Bland-Altman: mean of
the differences (B - A) and 95 % limits of agreement mean ± 1.96 SD (sample SD, ddof=1).
Two empty masks agree perfectly (Dice 1). ROC curve and its area (AUC) evaluate a binary
classifier (Chang et al., knee pain, 10-fold cross-validation). Image quality against a
reference (Chaudhari et al., super-resolution): pSNR = 20 log10(peak / RMSE) with the
reference's maximum as the peak; SSIM of Wang et al. (2004) with a Gaussian window (SD 1.5
voxels, in 2D or 3D), K1 = 0.01, K2 = 0.03 and the reference's range as L, averaged over the
image.
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


def mean_surface_distance_mm(a: np.ndarray, b: np.ndarray, spacing_kji: Sequence[float]) -> float:
    """Symmetric mean surface distance (mm) of two 3D masks on one grid: the mean over the
    boundary voxels of both (6-connected boundary) of the distance to the other's boundary.
    NaN when either mask is empty."""
    from scipy import ndimage as ndi

    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    if not a.any() or not b.any():
        return float("nan")
    both = a | b
    box = tuple(slice(max(0, int(ix.min()) - 2), int(ix.max()) + 3) for ix in np.nonzero(both))
    a, b = a[box], b[box]
    sa = a & ~ndi.binary_erosion(a)
    sb = b & ~ndi.binary_erosion(b)
    da = ndi.distance_transform_edt(~sb, sampling=spacing_kji)[sa]
    db = ndi.distance_transform_edt(~sa, sampling=spacing_kji)[sb]
    return float(np.concatenate([da, db]).mean())


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


def roc_curve(labels: Sequence[int], scores: Sequence[float]):
    """Receiver operating characteristic: ``(false_positive_rate, true_positive_rate, thresholds)``.

    ``labels`` are 1 (positive) or 0; a case is called positive when its score is >= the
    threshold. Tied scores move both rates together (one step per distinct score), so the
    curve and the AUC do not depend on the order of tied cases.
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("labels and scores must be equally long 1D sequences")
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC needs at least one positive and one negative case")
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]
    tp = np.cumsum(y_sorted == 1)[last_of_tie]
    fp = np.cumsum(y_sorted == 0)[last_of_tie]
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    thresholds = np.r_[np.inf, s_sorted[last_of_tie]]
    return fpr, tpr, thresholds


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (equals the Mann-Whitney probability that a random positive
    scores higher than a random negative, ties counting one half)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))


def psnr(reference: np.ndarray, test: np.ndarray, peak: "float | None" = None) -> float:
    """Peak signal-to-noise ratio (dB) of ``test`` against ``reference`` (peak: the reference's maximum)."""
    ref = np.asarray(reference, np.float64)
    mse = float(np.mean((ref - np.asarray(test, np.float64)) ** 2))
    peak = float(ref.max()) if peak is None else float(peak)
    return float("inf") if mse == 0 else 20.0 * float(np.log10(peak / np.sqrt(mse)))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: "float | None" = None, sigma: float = 1.5) -> float:
    """Mean structural similarity (Wang et al. 2004) with a Gaussian window over all axes of the arrays."""
    from scipy.ndimage import gaussian_filter

    x = np.asarray(reference, np.float64)
    y = np.asarray(test, np.float64)
    rng = float(x.max() - x.min()) if data_range is None else float(data_range)
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2

    def blur(a):
        return gaussian_filter(a, sigma, truncate=3.5)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())
