"""Change over time: per-subregion Delta T2, aligned projection maps and focal clusters.

Thomas et al. 2.6.2-2.6.3 (cluster analysis after Monu et al. 2017):

* **Delta T2 per subregion** = follow-up mean - baseline mean, for the 12 subregions and
  every aggregate (each time point uses its own segmentation and subregions).
* **Alignment of the projection maps.** Both maps live in the knee's own frame: columns are
  5-degree bins of the angle about the condylar circle measured from the inferior direction,
  rows are sagittal slices placed by their medial-lateral distance from the intercondylar
  notch (medial first). The follow-up rows are mapped onto the baseline rows by that distance
  (nearest row within half a slice), then the integer translation within +-1 row and
  +-2 bins (10 degrees) that maximises the overlap (Dice) of the two cartilage footprints is
  applied; the unshifted alignment is kept unless a shift improves the overlap by more than
  1 %. (The reference code only centred the row ranges of the two maps.)
* **Focal clusters.** On the pixels covered at both time points (the plate), the difference
  follow-up - baseline of the all-layer maps; pixels more than one standard deviation above
  the mean change over the plate form clusters of 8-connected pixels; clusters larger than
  1 % of the plate area are focal lesions. Reported: % of the plate covered by them and
  their number.

Refused: time points of different knees (laterality or subject id differ, or plates of very
different size: condylar circle radius or medial-lateral plate width differing by more than
25 %).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from mskquant.errors import InputError
from mskquant.metrics import dice as footprint_dice

from .subregions import ANTERIOR_MAX_DEG, CENTRAL_MAX_DEG, ZONES, ProjectionMaps, region_keys, region_name

SD_MULTIPLE = 1.0
MIN_AREA_FRACTION = 0.01
MAX_SIZE_RATIO = 1.25
ROW_SHIFTS = (-1, 0, 1)
BIN_SHIFTS = (-2, -1, 0, 1, 2)

CHANGE_COLUMNS = ("region", "layer", "side", "zone", "baseline_mean_t2_ms", "followup_mean_t2_ms", "delta_t2_ms",
                  "baseline_n_voxels", "followup_n_voxels")


@dataclass
class TimePoint:
    """What the change analysis needs from one knee-t2 result (its ``knee_t2.json`` summary)."""

    regions: Dict[Tuple[str, str, str], Tuple[float, int]]  # (layer, side, zone) -> (mean, n)
    projection: ProjectionMaps
    laterality: str
    subject_id: Optional[str]
    label: str = ""

    @classmethod
    def from_summary(cls, summary: dict, label: str = "") -> "TimePoint":
        try:
            regions = {(r["layer"], r["side"], r["zone"]): (np.nan if r["mean_t2_ms"] is None else float(r["mean_t2_ms"]),
                                                           int(r["n_voxels"])) for r in summary["regions"]}
            proj = ProjectionMaps.from_dict(summary["projection"])
            return cls(regions, proj, str(summary["laterality"]), summary.get("subject_id"), label)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"The {label or 'knee-t2'} result is incomplete or from another program ({exc!r}): "
                             f"run 'mskquant knee-t2' again for it.") from None

    @property
    def plate_width_mm(self) -> float:
        rows = np.nonzero(np.isfinite(self.projection.all).any(axis=1))[0]
        return float((rows[-1] - rows[0] + 1) * self.projection.slice_spacing_mm) if rows.size else 0.0


@dataclass
class Cluster:
    area_pixels: int
    percent_of_plate: float
    mean_change_ms: float
    max_change_ms: float
    centroid_row: float
    centroid_angle_deg: float
    side: str
    zone: str

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class ChangeResult:
    rows: List[dict]
    baseline_map: np.ndarray  # aligned, all layers, on the baseline rows
    followup_map: np.ndarray
    difference: np.ndarray  # NaN off the plate
    plate: np.ndarray
    cluster_labels: np.ndarray  # 0 none, n = n-th kept cluster
    clusters: List[Cluster]
    n_candidate_clusters: int
    threshold_ms: float
    mean_change_ms: float
    sd_change_ms: float
    percent_area: float
    row_shift: int
    bin_shift: int
    overlap_dice: float
    ml_mm: np.ndarray
    boundary_row: float
    bin_deg: float
    radius_mm: float
    slice_spacing_mm: float
    warnings: List[str] = field(default_factory=list)

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)

    def clusters_json(self) -> dict:
        return {
            "percent_area": self.percent_area, "n_clusters": self.n_clusters,
            "threshold_ms": self.threshold_ms, "mean_change_ms": self.mean_change_ms,
            "sd_change_ms": self.sd_change_ms, "plate_pixels": int(self.plate.sum()),
            "min_cluster_pixels": MIN_AREA_FRACTION * int(self.plate.sum()),
            "rule": "pixels > mean + 1 SD of the change over the plate, 8-connected, clusters > 1 % of the plate",
            "candidate_clusters": self.n_candidate_clusters,
            "alignment": {"row_shift": self.row_shift, "angle_shift_deg": self.bin_shift * self.bin_deg,
                          "footprint_dice": self.overlap_dice},
            "clusters": [c.as_dict() for c in self.clusters],
            "warnings": self.warnings,
        }


def check_same_knee(base: TimePoint, follow: TimePoint) -> None:
    if base.laterality != follow.laterality:
        raise InputError(f"Baseline and follow-up are of different knees: a {base.laterality} and a {follow.laterality} "
                         f"knee; compare two results of the same knee.")
    if base.subject_id and follow.subject_id and str(base.subject_id) != str(follow.subject_id):
        raise InputError(f"Baseline and follow-up are of different subjects ({base.subject_id} vs {follow.subject_id}): "
                         f"compare two results of the same knee.")
    r = follow.projection.radius_mm / base.projection.radius_mm
    w0, w1 = base.plate_width_mm, follow.plate_width_mm
    wr = w1 / w0 if w0 > 0 else np.inf
    for what, ratio, a, b in (("condylar radius", r, base.projection.radius_mm, follow.projection.radius_mm),
                              ("medial-lateral plate width", wr, w0, w1)):
        if not (1 / MAX_SIZE_RATIO <= ratio <= MAX_SIZE_RATIO):
            raise InputError(f"Baseline and follow-up look like different knees (femoral {what} {a:.1f} vs {b:.1f} mm): "
                             f"compare two results of the same knee.")


def _map_rows(base: ProjectionMaps, follow: ProjectionMaps, maps: List[np.ndarray]) -> List[np.ndarray]:
    """Follow-up maps resampled onto the baseline rows by medial-lateral position (nearest row)."""
    out = [np.full(base.all.shape, np.nan) for _ in maps]
    tol = 0.5 * base.slice_spacing_mm + 1e-6
    for r, x in enumerate(base.ml_mm):
        d = np.abs(follow.ml_mm - x)
        n = int(np.argmin(d))
        if d[n] <= tol:
            for o, m in zip(out, maps):
                o[r] = m[n]
    return out


def _shift(a: np.ndarray, dr: int, dc: int) -> np.ndarray:
    out = np.full(a.shape, np.nan)
    rs = slice(max(dr, 0), a.shape[0] + min(dr, 0))
    rd = slice(max(-dr, 0), a.shape[0] + min(-dr, 0))
    cs = slice(max(dc, 0), a.shape[1] + min(dc, 0))
    cd = slice(max(-dc, 0), a.shape[1] + min(-dc, 0))
    out[rs, cs] = a[rd, cd]
    return out


def align(base: ProjectionMaps, follow: ProjectionMaps) -> Tuple[np.ndarray, int, int, float]:
    """The follow-up all-layer map on the baseline grid, and the (row, bin) shift applied."""
    (mapped,) = _map_rows(base, follow, [follow.all])
    occ_b = np.isfinite(base.all)
    best = (footprint_dice(occ_b, np.isfinite(mapped)), 0, 0)
    unshifted = best[0]
    for dr in ROW_SHIFTS:
        for dc in BIN_SHIFTS:
            if dr == 0 and dc == 0:
                continue
            d = footprint_dice(occ_b, np.isfinite(_shift(mapped, dr, dc)))
            if d > best[0]:
                best = (d, dr, dc)
    if best[0] <= unshifted * 1.01:
        best = (unshifted, 0, 0)
    return _shift(mapped, best[1], best[2]), best[1], best[2], best[0]


def follow_map_on_baseline(base: ProjectionMaps, follow: ProjectionMaps, follow_values: np.ndarray,
                           row_shift: int, bin_shift: int) -> np.ndarray:
    """Any follow-up projection-grid map moved onto the baseline grid exactly as :func:`align` moved T2."""
    (mapped,) = _map_rows(base, follow, [follow_values])
    return _shift(mapped, row_shift, bin_shift)


def focal_clusters(difference: np.ndarray, plate: np.ndarray, sd_multiple: float = SD_MULTIPLE,
                   min_area_fraction: float = MIN_AREA_FRACTION):
    """(labels of kept clusters, kept [(label, pixels)], n candidates, threshold, mean, SD)."""
    from scipy import ndimage as ndi

    values = difference[plate]
    mean = float(values.mean())
    sd = float(values.std())
    threshold = mean + sd_multiple * sd
    above = plate & (np.nan_to_num(difference, nan=-np.inf) > threshold)
    labels, n = ndi.label(above, structure=np.ones((3, 3), bool))
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    min_pixels = min_area_fraction * int(plate.sum())
    kept = [lab for lab in range(1, n + 1) if areas[lab] > min_pixels]
    out = np.zeros(labels.shape, np.int32)
    for new, lab in enumerate(sorted(kept, key=lambda l: -areas[l]), start=1):
        out[labels == lab] = new
    return out, n, threshold, mean, sd


def region_changes(base: TimePoint, follow: TimePoint) -> List[dict]:
    rows = []
    for key in region_keys():
        b_mean, b_n = base.regions.get(key, (np.nan, 0))
        f_mean, f_n = follow.regions.get(key, (np.nan, 0))
        rows.append({"region": region_name(*key), "layer": key[0], "side": key[1], "zone": key[2],
                     "baseline_mean_t2_ms": b_mean, "followup_mean_t2_ms": f_mean,
                     "delta_t2_ms": f_mean - b_mean if (b_n and f_n) else float("nan"),
                     "baseline_n_voxels": b_n, "followup_n_voxels": f_n})
    return rows


def compare(base: TimePoint, follow: TimePoint) -> ChangeResult:
    check_same_knee(base, follow)
    rows = region_changes(base, follow)
    bp, fp = base.projection, follow.projection
    if abs(bp.bin_deg - fp.bin_deg) > 1e-9:
        raise InputError("The two results use different angular bins: run 'mskquant knee-t2' again for both.")
    follow_map, dr, dc, dice = align(bp, fp)
    base_map = bp.all
    plate = np.isfinite(base_map) & np.isfinite(follow_map)
    warnings = []
    if plate.sum() < 20:
        raise InputError(f"The baseline and follow-up projection maps overlap on only {int(plate.sum())} pixels: they "
                         f"are not the same cartilage plate; compare results of the same knee.")
    if dice < 0.6:
        warnings.append(f"The two cartilage footprints overlap poorly after alignment (Dice {dice:.2f}): check the "
                        f"segmentations of both time points.")
    difference = np.where(plate, follow_map - base_map, np.nan)
    labels, n_cand, threshold, mean, sd = focal_clusters(difference, plate)
    n_plate = int(plate.sum())
    centres = bp.angle_centres_deg
    clusters = []
    for lab in range(1, int(labels.max()) + 1):
        rr, cc = np.nonzero(labels == lab)
        vals = difference[rr, cc]
        angle = float(centres[cc].mean())
        row = float(rr.mean())
        zone = ZONES[0] if angle <= ANTERIOR_MAX_DEG else (ZONES[1] if angle <= CENTRAL_MAX_DEG else ZONES[2])
        side = "medial" if row <= bp.boundary_row else "lateral"
        clusters.append(Cluster(int(rr.size), 100.0 * rr.size / n_plate, float(vals.mean()), float(vals.max()), row,
                                angle, side, zone))
    percent = 100.0 * float((labels > 0).sum()) / n_plate
    return ChangeResult(rows, base_map, follow_map, difference, plate, labels, clusters, n_cand, threshold, mean, sd,
                        percent, dr, dc, dice, bp.ml_mm, bp.boundary_row, bp.bin_deg, bp.radius_mm, bp.slice_spacing_mm,
                        warnings)
