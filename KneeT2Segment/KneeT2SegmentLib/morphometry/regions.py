"""Regions of the cartilage plates for thickness and the bone-surface maps, and their summary rows.

Region codes (per interface point, per surface vertex): ``1 + 3 * side + zone`` with side
medial 0 / lateral 1 and zone anterior 0 / central 1 / posterior 2 - the layer-free part of
the femoral subregion labels of :mod:`..subregions` (deep labels 1-6), so a femoral
subregion label ``l`` has region ``(l - 1) % 6 + 1``; 0 means "no region" (patella, or a
knee whose laterality is unknown).

* Femoral cartilage: the existing subregions (Thomas et al.: condylar circle, notch,
  anterior <= -35 deg < central <= 25 deg < posterior), layers merged.
* Tibial cartilage: split medial/lateral at the gap between the two plates - the least
  populated 1 mm bin of the cartilage's world left-right (R) coordinate within the middle
  half of its extent (the two plates are separate in almost every knee, so the gap is empty);
  medial is -R for a right knee and +R for a left one. Each plate is cut into anterior /
  central / posterior thirds of its extent along the world A axis.
* Patellar cartilage: the whole plate.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

SIDES = ("medial", "lateral")
ZONES = ("anterior", "central", "posterior")
REGION_NAMES: Dict[int, str] = {1 + 3 * s + z: f"{SIDES[s]} {ZONES[z]}" for s in range(2) for z in range(3)}
# the cartilage plates on each bone (the tibial cartilage is split medial / lateral)
BONE_PLATES: Dict[str, Tuple[str, ...]] = {"femur": ("femoral",), "tibia": ("medial tibial", "lateral tibial"),
                                           "patella": ("patellar",)}
CSV_COLUMNS = ("plate", "region", "mean_mm", "sd_mm", "p5_mm", "p95_mm", "n_points")


def region_code(side: np.ndarray, zone: np.ndarray) -> np.ndarray:
    return (1 + 3 * np.asarray(side) + np.asarray(zone)).astype(np.uint8)


def side_of(code: np.ndarray) -> np.ndarray:
    """0 medial, 1 lateral, -1 none."""
    c = np.asarray(code, int)
    return np.where(c > 0, (c - 1) // 3, -1)


def zone_of(code: np.ndarray) -> np.ndarray:
    c = np.asarray(code, int)
    return np.where(c > 0, (c - 1) % 3, -1)


def femoral_region_of_subregion(labels12: np.ndarray) -> np.ndarray:
    """Femoral subregion labels 1-12 -> region codes 1-6 (layers merged); 0 stays 0."""
    lab = np.asarray(labels12, int)
    return np.where(lab > 0, (lab - 1) % 6 + 1, 0).astype(np.uint8)


def tibial_boundary_r(r_mm: np.ndarray, bin_mm: float = 1.0) -> float:
    """World R coordinate between the medial and lateral tibial plates (see the module docstring)."""
    r = np.asarray(r_mm, float)
    lo, hi = float(r.min()), float(r.max())
    n = max(int(np.ceil((hi - lo) / bin_mm)), 1)
    counts = np.bincount(np.minimum(((r - lo) / bin_mm).astype(int), n - 1), minlength=n)
    a, b = n // 4, max(n - n // 4, n // 4 + 1)
    window = counts[a:b]
    m = np.flatnonzero(window == window.min())
    centre = a + 0.5 * (m[0] + m[-1])  # middle of the emptiest run
    return lo + (centre + 0.5) * bin_mm


def tibial_side(r_mm: np.ndarray, boundary_r: float, laterality: str) -> np.ndarray:
    """0 medial / 1 lateral from the world R coordinate: a right knee's medial plate is at -R."""
    below = np.asarray(r_mm) < boundary_r
    medial = below if laterality == "right" else ~below
    return np.where(medial, 0, 1).astype(np.int64)


def thirds(a_mm: np.ndarray) -> np.ndarray:
    """Zone 0 anterior / 1 central / 2 posterior from the world A coordinate (thirds of the extent)."""
    a = np.asarray(a_mm, float)
    if a.size == 0:
        return np.zeros(0, np.int64)
    lo, hi = float(a.min()), float(a.max())
    t = (hi - a) / max(hi - lo, 1e-9)  # 0 at the most anterior point
    return np.minimum((t * 3).astype(np.int64), 2)


def stats_row(plate: str, region: str, values: np.ndarray) -> dict:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        nan = float("nan")
        return {"plate": plate, "region": region, "mean_mm": nan, "sd_mm": nan, "p5_mm": nan, "p95_mm": nan,
                "n_points": 0}
    p5, p95 = np.percentile(v, [5, 95])
    return {"plate": plate, "region": region, "mean_mm": float(v.mean()), "sd_mm": float(v.std()),
            "p5_mm": float(p5), "p95_mm": float(p95), "n_points": int(v.size)}


def region_selections(plate: str, codes: np.ndarray) -> List[Tuple[str, np.ndarray]]:
    """(region name, point selection) pairs of a plate's summary rows, "all" first."""
    codes = np.asarray(codes)
    out: List[Tuple[str, np.ndarray]] = [("all", np.ones(codes.size, bool))]
    if plate == "patellar" or not np.any(codes > 0):
        return out
    sides, zones = side_of(codes), zone_of(codes)
    if plate == "femoral":
        for s, side in enumerate(SIDES):
            out.append((side, sides == s))
        for code, name in REGION_NAMES.items():
            out.append((name, codes == code))
    else:  # a tibial plate: its own side only
        for z, zone in enumerate(ZONES):
            out.append((zone, zones == z))
    return out


def summary_rows(plate: str, codes: np.ndarray, values: np.ndarray, missing: bool = False) -> List[dict]:
    if missing:
        return [stats_row(plate, "all", np.zeros(0))]
    return [stats_row(plate, name, np.asarray(values)[sel]) for name, sel in region_selections(plate, codes)]
