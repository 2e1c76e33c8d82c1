"""CAM quality on simulated pairs: AUC and pointing accuracy (numeric core).

Chang et al. reported the AUC of the painful-side prediction (Figure 4) and had a
radiologist check which lesion lay in the CAM hot spots (Figure 3). With simulated pairs
the truth is known, so both become numbers:

* **AUC** of P(right knee painful) against the true painful side;
* **pointing accuracy**: the fraction of pairs whose painful knee's CAM maximum (on the
  input voxel grid, after up-sampling) falls inside the planted lesion. The distance from
  the maximum to the nearest lesion voxel is kept too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List

import numpy as np
from mskquant.metrics import roc_auc
from mskquant.progress import Progress

from .cam import peak_index, peak_inside
from .pipeline import PainModel, PainResult, analyse_pair
from .simulator import SimulatedPair


@dataclass
class PairOutcome:
    subject: str
    anatomy: str
    painful_side: str
    lesion_kind: str
    lesion_site: str
    p_right_painful: float
    predicted_side: str
    correct: bool
    pointing_hit: bool
    peak_to_lesion_mm: float
    max_cam_slice: int  # of the painful knee
    lesion_slices: str  # first-last slice of the lesion in the painful knee
    centre_error_left: int
    centre_error_right: int


def peak_to_mask_mm(cam_kji: np.ndarray, mask_kji: np.ndarray, geometry) -> float:
    """Distance (mm) from the CAM maximum to the nearest voxel of the mask (0 inside it)."""
    if not mask_kji.any():
        return float("inf")
    k, j, i = peak_index(cam_kji)
    if mask_kji[k, j, i]:
        return 0.0
    pts = np.argwhere(mask_kji)
    d = (pts - np.array([k, j, i])) * geometry.spacing[::-1]
    return float(np.sqrt((d ** 2).sum(axis=1)).min())


def outcome_of(pair: SimulatedPair, result: PainResult) -> PairOutcome:
    """How one analysis of a simulated pair did against the pair's truth."""
    knee = pair.painful
    cam = result.cam[pair.painful_side]
    mask = knee.lesion_mask.array
    axis = result.prepared[pair.painful_side].frame.slice_axis
    lesion_slices = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    return PairOutcome(
        pair.subject, pair.anatomy, pair.painful_side, pair.lesion_kind, knee.lesion_site, result.p_right_painful,
        result.painful_side, result.painful_side == pair.painful_side, peak_inside(cam, mask),
        peak_to_mask_mm(cam, mask, knee.image.geometry), result.max_cam_slice[pair.painful_side],
        f"{lesion_slices.min()}-{lesion_slices.max()}" if lesion_slices.size else "",
        result.prepared["left"].centre_slice - pair.left.centre_slice,
        result.prepared["right"].centre_slice - pair.right.centre_slice)


def evaluate_pair(model: PainModel, pair: SimulatedPair, use_true_centres: bool = False,
                  progress: "Progress | None" = None) -> tuple:
    centres = (pair.left.centre_slice, pair.right.centre_slice) if use_true_centres else (None, None)
    result = analyse_pair(model, pair.left.image, pair.right.image, *centres, progress=progress)
    return outcome_of(pair, result), result


def summarise(outcomes: Iterable[PairOutcome]) -> Dict[str, float]:
    outcomes = list(outcomes)
    labels = np.array([o.painful_side == "right" for o in outcomes], int)
    scores = np.array([o.p_right_painful for o in outcomes])
    auc = roc_auc(labels, scores) if 0 < labels.sum() < len(labels) else float("nan")
    return {
        "n_pairs": len(outcomes),
        "auc": auc,
        "accuracy": float(np.mean([o.correct for o in outcomes])),
        "pointing_accuracy": float(np.mean([o.pointing_hit for o in outcomes])),
        "median_peak_to_lesion_mm": float(np.median([o.peak_to_lesion_mm for o in outcomes])),
        "centre_slice_within_1": float(np.mean([abs(o.centre_error_left) <= 1 and abs(o.centre_error_right) <= 1
                                                for o in outcomes])),
    }


OUTCOME_FIELDS = list(PairOutcome.__dataclass_fields__)


def outcome_rows(outcomes: Iterable[PairOutcome]) -> List[list]:
    return [[asdict(o)[f] for f in OUTCOME_FIELDS] for o in outcomes]
