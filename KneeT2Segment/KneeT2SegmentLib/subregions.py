"""Femoral cartilage: 2D projection, the 12 subregions and their T2 statistics.

Thomas et al. section 2.6.2 and Figure 4 (projection after Monu et al. 2017, as in the
authors' reference code ``projection.py`` and in DOSMA's ``FemoralCartilage``):

1. **Slice axis.** The image axis nearest the patient's left-right axis (sagittal
   acquisition; more than 35 degrees off is refused).
2. **Circle.** A least-squares circle (algebraic start, then geometric refinement) through
   the pixels of the cartilage's maximum projection along the slice axis, in mm (the
   reference code fits in pixels, which distorts angles when pixels are not square).
3. **Angle.** Each voxel's angle phi about the circle centre in the slice plane: 0 deg points
   inferior (the world superior-inferior axis projected on the plane), positive towards
   posterior, in (-180, 180]. Zones (the reference code's boundaries): anterior
   phi <= -35 deg, central -35 < phi <= 25 deg, posterior phi > 25 deg. (DOSMA instead uses a
   central sector of +-15 deg about inferior.)
4. **Layers.** In each slice and 5-degree angular bin, voxels at a distance from the centre
   <= r_min + 0.5 (r_max - r_min) are deep (nearer the bone), the others superficial: 50 % of
   the local thickness along the radius.
5. **Medial/lateral, by slice.** The boundary is the intercondylar notch: the centre of the
   run of slices with the fewest central+posterior cartilage voxels between the two condyles
   (searched in the middle 60 % of the plate; smoothed over ~3 mm on thin-slice grids). If no
   clear gap exists (fewest > 35 % of the smaller condyle's peak) the cartilage's centre of
   mass along the slice axis is used (DOSMA's rule); the reference code used the middle
   slice of the volume. A slice exactly on the boundary counts as medial. Which side is
   medial comes from the knee's laterality and the slice axis's world direction (right knee:
   medial is towards the patient's left, -R; left knee: +R), never from the slice order.

Labels: ``1 + 6 * layer + 3 * side + zone`` with layer deep 0 / superficial 1, side
medial 0 / lateral 1, zone anterior 0 / central 1 / posterior 2, so 1 = "Deep medial
anterior" ... 12 = "Superficial lateral posterior". Projection maps have one row per slice
(medial first) and one column per 5-degree bin (-180..180 deg, anterior on the left), holding
the mean T2 of the voxels in that cell, per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from mskquant.errors import InputError
from mskquant.image import SAGITTAL_MAX_OBLIQUITY_DEG as MAX_OBLIQUITY_DEG, Geometry

LAYERS = ("deep", "superficial")
SIDES = ("medial", "lateral")
ZONES = ("anterior", "central", "posterior")
ANTERIOR_MAX_DEG = -35.0
CENTRAL_MAX_DEG = 25.0
BIN_DEG = 5.0
N_BINS = int(360 / BIN_DEG)
DEEP_FRACTION = 0.5
NOTCH_MAX_RELATIVE = 0.35


def label_of(layer: int, side: int, zone: int) -> int:
    return 1 + 6 * layer + 3 * side + zone


def decode_label(label: int) -> Tuple[int, int, int]:
    v = int(label) - 1
    return v // 6, (v // 3) % 2, v % 3


SUBREGION_NAMES: Dict[int, str] = {
    label_of(l, s, z): f"{LAYERS[l].capitalize()} {SIDES[s]} {ZONES[z]}"
    for l in range(2) for s in range(2) for z in range(3)
}
SUBREGION_ABBREVIATIONS: Dict[int, str] = {
    label_of(l, s, z): f"{LAYERS[l][0].upper()}{SIDES[s][0].upper()}{ZONES[z][0].upper()}"
    for l in range(2) for s in range(2) for z in range(3)
}


def _subregion_color(label: int) -> Tuple[float, float, float]:
    layer, side, zone = decode_label(label)
    base = [((0.15, 0.45, 0.85), (0.1, 0.65, 0.55), (0.45, 0.3, 0.8)),  # medial: blues/teal/violet
            ((0.9, 0.45, 0.1), (0.85, 0.2, 0.2), (0.85, 0.7, 0.1))][side][zone]  # lateral: orange/red/yellow
    if layer == 1:  # superficial: lighter
        return tuple(min(1.0, c + 0.35 * (1 - c)) for c in base)  # type: ignore[return-value]
    return base


SUBREGION_COLORS: Dict[int, Tuple[float, float, float]] = {k: _subregion_color(k) for k in SUBREGION_NAMES}


# --- frame -----------------------------------------------------------------------------------
@dataclass
class SagittalFrame:
    """How a voxel grid sits in the knee: slice axis, in-plane axes and which way is medial."""

    slice_axis: int  # array axis of [k, j, i]
    plane_axes: Tuple[int, int]  # the two in-plane array axes (ascending)
    spacing: Tuple[float, float, float]  # mm along array axes 0, 1, 2
    inferior: np.ndarray  # unit 2-vector in plane-axis mm coordinates pointing inferior
    posterior: np.ndarray  # unit 2-vector pointing posterior
    medial_step: int  # +1 when increasing slice index moves medially
    laterality: str
    obliquity_deg: float

    @property
    def slice_spacing(self) -> float:
        return self.spacing[self.slice_axis]


def sagittal_frame(geometry: Geometry, laterality: Optional[str]) -> SagittalFrame:
    from .mese import normalize_laterality

    lat = normalize_laterality(laterality)
    if lat is None:
        raise InputError("The knee's laterality is unknown, so medial cannot be told from lateral: give it (--laterality "
                         "left or right; 'Laterality' in the panel) or use images whose DICOM header records it.")
    d = geometry.directions  # columns: i, j, k
    dirs = [d[:, 2], d[:, 1], d[:, 0]]  # array axes 0 (k), 1 (j), 2 (i)
    sp = geometry.spacing
    spacing = (float(sp[2]), float(sp[1]), float(sp[0]))
    lr = [abs(v[0]) for v in dirs]
    slice_axis = int(np.argmax(lr))
    obliquity = math.degrees(math.acos(min(1.0, lr[slice_axis])))
    if obliquity > MAX_OBLIQUITY_DEG:
        raise InputError(f"The image is not sagittal (its slice axis is {obliquity:.0f} deg from left-right): "
                         f"femoral subregions need sagittal slices, as in the OAI MESE protocol.")
    plane = tuple(a for a in range(3) if a != slice_axis)
    a, b = plane
    inferior = np.array([-dirs[a][2], -dirs[b][2]])
    posterior = np.array([-dirs[a][1], -dirs[b][1]])
    if np.linalg.norm(inferior) < 0.3:
        raise InputError("The slice plane does not contain the superior-inferior axis: sagittal slices are needed.")
    inferior /= np.linalg.norm(inferior)
    posterior -= inferior * float(posterior @ inferior)
    if np.linalg.norm(posterior) < 0.3:
        raise InputError("The slice plane does not contain the anterior-posterior axis: sagittal slices are needed.")
    posterior /= np.linalg.norm(posterior)
    medial_r = -1.0 if lat == "right" else 1.0  # right knee: medial is towards the patient's left (-R)
    medial_step = 1 if dirs[slice_axis][0] * medial_r > 0 else -1
    return SagittalFrame(slice_axis, plane, spacing, inferior, posterior, medial_step, lat, obliquity)


# --- circle fit ------------------------------------------------------------------------------
def fit_circle(x: np.ndarray, y: np.ndarray, iterations: int = 20) -> Tuple[float, float, float]:
    """Least-squares circle (centre x, centre y, radius): algebraic (Kasa) start, geometric refinement."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.size < 3:
        raise InputError("The cartilage projection has fewer than 3 pixels: the mask is too small for subregions.")
    a = np.c_[2 * x, 2 * y, np.ones_like(x)]
    sol, *_ = np.linalg.lstsq(a, x * x + y * y, rcond=None)
    cx, cy = sol[0], sol[1]
    r = math.sqrt(max(sol[2] + cx * cx + cy * cy, 1e-12))
    for _ in range(iterations):
        dx, dy = x - cx, y - cy
        d = np.hypot(dx, dy)
        d = np.where(d > 1e-9, d, 1e-9)
        res = d - r
        jac = np.c_[-dx / d, -dy / d, -np.ones_like(d)]
        step, *_ = np.linalg.lstsq(jac, -res, rcond=None)
        cx, cy, r = cx + step[0], cy + step[1], r + step[2]
        if np.abs(step).max() < 1e-7:
            break
    return float(cx), float(cy), float(abs(r))


# --- subregions -----------------------------------------------------------------------------
@dataclass
class FemoralSubregions:
    """The 12-label volume plus the geometry that defined it (per mask voxel where relevant)."""

    labels: np.ndarray  # uint8 [k, j, i], 0 outside the mask
    frame: SagittalFrame
    centre_mm: Tuple[float, float]  # circle centre in plane-axis mm coordinates
    radius_mm: float
    boundary_slice: float  # medial/lateral boundary position (slice index units)
    ml_method: str  # "notch" or "centre of mass"
    slice_range: Tuple[int, int]  # first and last slice holding cartilage
    voxels: Tuple[np.ndarray, np.ndarray, np.ndarray]  # indices of the mask voxels
    phi_deg: np.ndarray  # per mask voxel
    angle_bin: np.ndarray  # per mask voxel, 0..N_BINS-1
    deep: np.ndarray  # per mask voxel
    rho_mm: np.ndarray  # per mask voxel: distance from the circle centre
    warnings: List[str] = field(default_factory=list)

    def radial_depth(self, half_voxel_mm: float = 0.0) -> np.ndarray:
        """Per mask voxel, 0 (bone side) to 1 (surface): position between the slice-and-bin extremes.

        ``half_voxel_mm`` widens each extent by half a voxel at both ends, so values stay within (0, 1).
        """
        s = self.slice_of_voxels() - self.slice_range[0]
        key = s * N_BINS + self.angle_bin
        size = (self.slice_range[1] - self.slice_range[0] + 1) * N_BINS
        rmin = np.full(size, np.inf)
        rmax = np.full(size, -np.inf)
        np.minimum.at(rmin, key, self.rho_mm)
        np.maximum.at(rmax, key, self.rho_mm)
        lo = rmin[key] - half_voxel_mm
        span = rmax[key] + half_voxel_mm - lo
        return np.where(span > 0, (self.rho_mm - lo) / np.where(span > 0, span, 1.0), 0.5)

    def slice_of_voxels(self) -> np.ndarray:
        return self.voxels[self.frame.slice_axis]

    def ml_mm(self, slice_index) -> np.ndarray:
        """Signed medial-lateral position (mm) of slices relative to the boundary: positive lateral."""
        s = np.asarray(slice_index, float)
        return (self.boundary_slice - s) * self.frame.medial_step * self.frame.slice_spacing

    def rows(self) -> np.ndarray:
        """Slice indices of the projection-map rows, medial first."""
        s0, s1 = self.slice_range
        idx = np.arange(s0, s1 + 1)
        return idx[::-1] if self.frame.medial_step > 0 else idx


def _smooth_counts(counts: np.ndarray, spacing_mm: float) -> np.ndarray:
    width = int(round(3.0 / spacing_mm))
    if width <= 1:
        return counts.astype(float)
    width += 1 - width % 2
    kernel = np.ones(width) / width
    return np.convolve(counts.astype(float), kernel, mode="same")


def medial_lateral_boundary(slices: np.ndarray, central_or_posterior: np.ndarray, spacing_mm: float
                            ) -> Tuple[float, str]:
    """Boundary slice position (float) between the condyles, and how it was found."""
    s0, s1 = int(slices.min()), int(slices.max())
    n = s1 - s0 + 1
    counts = np.bincount(slices - s0, weights=central_or_posterior.astype(float), minlength=n)
    smooth = _smooth_counts(counts, spacing_mm)
    lo, hi = int(math.floor(0.2 * (n - 1))), int(math.ceil(0.8 * (n - 1)))
    if hi - lo >= 1 and n >= 5:
        window = smooth[lo:hi + 1]
        cmin = float(window.min())
        tol = cmin + 0.02 * float(smooth.max())
        m = lo + int(np.argmin(window))
        r0 = m
        while r0 - 1 >= lo and smooth[r0 - 1] <= tol:
            r0 -= 1
        r1 = m
        while r1 + 1 <= hi and smooth[r1 + 1] <= tol:
            r1 += 1
        left = float(smooth[:r0].max()) if r0 > 0 else 0.0
        right = float(smooth[r1 + 1:].max()) if r1 + 1 < n else 0.0
        if left > 0 and right > 0 and cmin <= NOTCH_MAX_RELATIVE * min(left, right):
            return s0 + 0.5 * (r0 + r1), "notch"
    return float(slices.mean()), "centre of mass"


def femoral_subregions(mask: np.ndarray, geometry: Geometry, laterality: Optional[str]) -> FemoralSubregions:
    """Split a femoral cartilage mask ``[k, j, i]`` on ``geometry`` into the 12 subregions."""
    mask = np.asarray(mask, bool)
    if mask.shape != geometry.shape_kji:
        raise ValueError(f"mask shape {mask.shape} does not match geometry {geometry.shape_kji}")
    if not mask.any():
        raise InputError("The cartilage mask is empty: segment the femoral cartilage (or select a non-empty segment).")
    frame = sagittal_frame(geometry, laterality)
    sa = frame.slice_axis
    a, b = frame.plane_axes
    vox = np.nonzero(mask)
    slices = vox[sa].astype(np.int64)
    u = vox[a] * frame.spacing[a]
    v = vox[b] * frame.spacing[b]
    proj = np.any(mask, axis=sa)  # 2D over (a, b) in ascending axis order
    pu, pv = np.nonzero(proj)
    cu, cv, radius = fit_circle(pu * frame.spacing[a], pv * frame.spacing[b])
    du, dv = u - cu, v - cv
    along_inf = du * frame.inferior[0] + dv * frame.inferior[1]
    along_post = du * frame.posterior[0] + dv * frame.posterior[1]
    phi = np.degrees(np.arctan2(along_post, along_inf))
    rho = np.hypot(du, dv)
    angle_bin = np.clip(np.floor((phi + 180.0) / BIN_DEG).astype(np.int64), 0, N_BINS - 1)
    s0, s1 = int(slices.min()), int(slices.max())
    key = (slices - s0) * N_BINS + angle_bin
    size = (s1 - s0 + 1) * N_BINS
    rmin = np.full(size, np.inf)
    rmax = np.full(size, -np.inf)
    np.minimum.at(rmin, key, rho)
    np.maximum.at(rmax, key, rho)
    deep = rho <= rmin[key] + DEEP_FRACTION * (rmax[key] - rmin[key])
    zone = np.where(phi <= ANTERIOR_MAX_DEG, 0, np.where(phi <= CENTRAL_MAX_DEG, 1, 2))
    boundary, method = medial_lateral_boundary(slices, zone >= 1, frame.slice_spacing)
    lateral = (slices - boundary) * frame.medial_step < 0
    labels = np.zeros(mask.shape, np.uint8)
    labels[vox] = (1 + 6 * (~deep) + 3 * lateral + zone).astype(np.uint8)
    warnings = []
    if method != "notch":
        warnings.append("No intercondylar notch was found in the cartilage mask: the medial/lateral boundary is the "
                        "cartilage's centre of mass along the slice axis.")
    return FemoralSubregions(labels, frame, (cu, cv), radius, boundary, method, (s0, s1), vox,
                             phi.astype(np.float32), angle_bin, deep, rho, warnings)


# --- statistics -------------------------------------------------------------------------------
@dataclass
class RegionStats:
    region: str
    layer: str  # deep | superficial | all
    side: str  # medial | lateral | all
    zone: str  # anterior | central | posterior | all
    mean_t2_ms: float
    sd_t2_ms: float
    median_t2_ms: float
    n_voxels: int

    def as_row(self) -> list:
        return [self.region, self.layer, self.side, self.zone, self.mean_t2_ms, self.sd_t2_ms, self.median_t2_ms,
                self.n_voxels]


CSV_COLUMNS = ("region", "layer", "side", "zone", "mean_t2_ms", "sd_t2_ms", "median_t2_ms", "n_voxels")


def region_name(layer: str, side: str, zone: str) -> str:
    parts = [p for p in (layer, side, zone) if p != "all"]
    return " ".join(parts).capitalize() if parts else "All"


def region_keys() -> List[Tuple[str, str, str]]:
    """Every (layer, side, zone) combination with 'all', most aggregated first (as in the paper's tables)."""
    layers, sides, zones = ("all",) + LAYERS, ("all",) + SIDES, ("all",) + ZONES
    keys = [(l, s, z) for l in layers for s in sides for z in zones]
    # within one level of detail: layer before side before zone (All, Deep, Superficial, Medial, ...)
    kinds = {(1, 0, 0): 0, (0, 1, 0): 1, (0, 0, 1): 2, (1, 1, 0): 0, (0, 1, 1): 1, (1, 0, 1): 2}

    def order(k):
        given = tuple(int(p != "all") for p in k)
        return (sum(given), kinds.get(given, 0), layers.index(k[0]), sides.index(k[1]), zones.index(k[2]))

    return sorted(keys, key=order)


def labels_in(layer: str, side: str, zone: str) -> List[int]:
    ls = range(2) if layer == "all" else [LAYERS.index(layer)]
    ss = range(2) if side == "all" else [SIDES.index(side)]
    zs = range(3) if zone == "all" else [ZONES.index(zone)]
    return [label_of(l, s, z) for l in ls for s in ss for z in zs]


def region_stats(t2_ms: np.ndarray, labels: np.ndarray) -> List[RegionStats]:
    """Mean, SD (population), median and count of finite T2 per subregion and every aggregate."""
    per_label: Dict[int, np.ndarray] = {}
    finite = np.isfinite(t2_ms)
    for lab in SUBREGION_NAMES:
        per_label[lab] = t2_ms[(labels == lab) & finite].astype(np.float64)
    rows = []
    for layer, side, zone in region_keys():
        vals = np.concatenate([per_label[lab] for lab in labels_in(layer, side, zone)])
        if vals.size:
            rows.append(RegionStats(region_name(layer, side, zone), layer, side, zone, float(vals.mean()),
                                    float(vals.std()), float(np.median(vals)), int(vals.size)))
        else:
            nan = float("nan")
            rows.append(RegionStats(region_name(layer, side, zone), layer, side, zone, nan, nan, nan, 0))
    return rows


# --- projection maps --------------------------------------------------------------------------
@dataclass
class ProjectionMaps:
    """Mean T2 per (slice, 5-degree bin), per layer; rows medial first, columns -180..180 deg."""

    all: np.ndarray
    deep: np.ndarray
    superficial: np.ndarray
    counts: np.ndarray  # voxels per cell (all layers)
    ml_mm: np.ndarray  # per row: position relative to the medial/lateral boundary (+ lateral)
    boundary_row: float  # row coordinate of the medial/lateral boundary
    slice_spacing_mm: float
    radius_mm: float
    laterality: str
    ml_method: str
    bin_deg: float = BIN_DEG

    @property
    def angle_centres_deg(self) -> np.ndarray:
        return -180.0 + self.bin_deg * (np.arange(self.all.shape[1]) + 0.5)

    def layer(self, name: str) -> np.ndarray:
        return {"all": self.all, "deep": self.deep, "superficial": self.superficial}[name]

    def to_dict(self) -> dict:
        def grid(a):
            return [[None if not np.isfinite(v) else round(float(v), 4) for v in row] for row in a]

        return {"bin_deg": self.bin_deg, "angle_start_deg": -180.0, "rows": "slices, medial first",
                "all": grid(self.all), "deep": grid(self.deep), "superficial": grid(self.superficial),
                "counts": self.counts.astype(int).tolist(), "ml_mm": [round(float(v), 4) for v in self.ml_mm],
                "boundary_row": self.boundary_row, "slice_spacing_mm": self.slice_spacing_mm,
                "radius_mm": self.radius_mm, "laterality": self.laterality, "ml_method": self.ml_method}

    @classmethod
    def from_dict(cls, d: dict) -> "ProjectionMaps":
        def grid(a):
            return np.array([[np.nan if v is None else float(v) for v in row] for row in a], dtype=np.float64)

        return cls(grid(d["all"]), grid(d["deep"]), grid(d["superficial"]), np.asarray(d["counts"], int),
                   np.asarray(d["ml_mm"], float), float(d["boundary_row"]), float(d["slice_spacing_mm"]),
                   float(d["radius_mm"]), str(d["laterality"]), str(d["ml_method"]), float(d.get("bin_deg", BIN_DEG)))


def projection_maps(t2_ms: np.ndarray, sub: FemoralSubregions) -> ProjectionMaps:
    """Project the T2 of the subregion voxels onto the (slice, angle) plane, per layer."""
    rows = sub.rows()
    n_rows = rows.size
    row_of_slice = np.empty(sub.slice_range[1] - sub.slice_range[0] + 1, np.int64)
    row_of_slice[rows - sub.slice_range[0]] = np.arange(n_rows)
    values = t2_ms[sub.voxels].astype(np.float64)
    finite = np.isfinite(values)
    r = row_of_slice[sub.slice_of_voxels()[finite] - sub.slice_range[0]]
    cell = r * N_BINS + sub.angle_bin[finite]
    vals = values[finite]
    deep = sub.deep[finite]
    size = n_rows * N_BINS

    def mean_map(sel):
        s = np.bincount(cell[sel], weights=vals[sel], minlength=size)
        c = np.bincount(cell[sel], minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (s / c).reshape(n_rows, N_BINS), c.reshape(n_rows, N_BINS)

    all_map, counts = mean_map(np.ones(vals.size, bool))
    deep_map, _ = mean_map(deep)
    sup_map, _ = mean_map(~deep)
    boundary_row = float(np.interp(sub.boundary_slice, rows[::-1] if rows[0] > rows[-1] else rows,
                                   (np.arange(n_rows)[::-1] if rows[0] > rows[-1] else np.arange(n_rows))))
    return ProjectionMaps(all_map, deep_map, sup_map, counts, sub.ml_mm(rows), boundary_row,
                          sub.frame.slice_spacing, sub.radius_mm, sub.frame.laterality, sub.ml_method)
