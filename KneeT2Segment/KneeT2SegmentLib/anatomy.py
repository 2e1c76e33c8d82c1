"""Knee anatomy for the MESE simulator: tissue classes and cartilage coordinates on the fine grid.

Input is a knee label map in the OAI-ZIB convention used by ``../shared/data/knee_labelmaps``
(OAI 3D DESS grid, 0.7 x 0.365 x 0.365 mm): 1 femur, 2 femoral cartilage, 3 tibia, 4 tibial
cartilage, 5 patella, 6 patellar cartilage (other values are ignored), or the small analytic
knee of :func:`analytic_knee` when no real anatomy is available. From it we derive what the
MESE simulator of Thomas et al. 2.2/Table 1 needs:

* tissue classes: bone split into a cortical shell (~1 mm, dark: subchondral plate and
  cortex) and fatty marrow; the three cartilages; "joint soft tissue" (menisci, capsule,
  synovium: short T2) within 2 mm of the cartilage; soft tissue around the bones (muscle, with
  a 4 mm subcutaneous fat layer at the skin) whose outline is the bones dilated by 12 mm and
  swept 45 mm posteriorly (thigh and calf muscles), so the anterior FOV holds air as in a real
  sagittal knee scan; joint fluid in the suprapatellar recess, and optionally a fluid film on
  the cartilage surfaces (bright: strong partial-volume effect on boundary voxels);
* for every cartilage voxel its depth fraction, 0 at the bone and 1 at the articular surface:
  for femoral cartilage the radial position between the innermost and outermost cartilage
  voxel of its sagittal slice and 5-degree bin about the condylar circle (the depth the
  deep/superficial split of Thomas et al. uses, so that layer means do not depend on the
  cartilage thickness); for tibial and patellar cartilage distance to bone / (distance to
  bone + distance to the surface), Euclidean, in mm;
* for femoral cartilage its intrinsic coordinates from :func:`subregions.femoral_subregions`
  run on the fine grid: angle phi about the condylar circle, medial-lateral position from the
  notch and subregion label. T2 is assigned in these coordinates, so a lesion or a texture
  lands on the same anatomy at two time points even when the knee was repositioned.

The laterality of a label map is taken from the caller or estimated from the tibial
cartilage (:func:`estimate_label_map_laterality`): the lateral tibial cartilage is thicker
and the medial plateau larger; on the 16 shared OAI label maps (all right knees, which the
left-knee atlas in ../shared confirms: mirrored, it overlaps every one of them better) this
vote is right in 16/16, and mirrored maps come out left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Geometry, Image
from mskquant.progress import Progress, as_progress

from .subregions import femoral_subregions

# Source labels (OAI-ZIB convention)
FEMUR, FEMORAL_CARTILAGE, TIBIA, TIBIAL_CARTILAGE, PATELLA, PATELLAR_CARTILAGE = 1, 2, 3, 4, 5, 6

# Fine-grid tissue codes
AIR, FEMUR_MARROW, FEMUR_CORTEX, TIBIA_MARROW, TIBIA_CORTEX, PATELLA_MARROW, PATELLA_CORTEX, \
    FC, TC, PC, MUSCLE, FAT, FLUID, JOINT = range(14)
N_TISSUES = 14
TISSUE_NAMES = ("air", "femur marrow", "femur cortex", "tibia marrow", "tibia cortex", "patella marrow",
                "patella cortex", "femoral cartilage", "tibial cartilage", "patellar cartilage", "muscle",
                "subcutaneous fat", "joint fluid", "joint soft tissue")
TISSUE_TO_LABEL = np.array([0, FEMUR, FEMUR, TIBIA, TIBIA, PATELLA, PATELLA, FEMORAL_CARTILAGE, TIBIAL_CARTILAGE,
                            PATELLAR_CARTILAGE, 0, 0, 0, 0], np.uint8)
CARTILAGE_TISSUES = (FC, TC, PC)

CORTEX_MM = 1.0
JOINT_MM = 2.0
BODY_MARGIN_MM = 12.0
POSTERIOR_SWEEP_MM = 45.0
FAT_MM = 4.0


@dataclass
class KneeAnatomy:
    """Tissue classes and cartilage coordinates on the fine (label-map) grid."""

    geometry: Geometry
    tissue: np.ndarray  # uint8 [k, j, i] tissue codes
    cartilage_index: np.ndarray  # sorted flat indices of cartilage voxels (tissue FC/TC/PC)
    cartilage_tissue: np.ndarray  # tissue code per cartilage voxel
    depth: np.ndarray  # float32 per cartilage voxel: 0 at the bone, 1 at the surface
    phi_deg: np.ndarray  # float32 per cartilage voxel (NaN for tibial/patellar)
    ml_mm: np.ndarray  # float32 per cartilage voxel, + lateral (NaN for tibial/patellar)
    subregion: np.ndarray  # uint8 per cartilage voxel, 1..12 for femoral cartilage, else 0
    arc_radius_mm: float
    laterality: str
    laterality_source: str
    subject_id: Optional[str] = None
    source: str = ""
    warnings: List[str] = field(default_factory=list)

    def femoral_centroid_ras(self) -> np.ndarray:
        sel = self.cartilage_index[self.cartilage_tissue == FC]
        k, j, i = np.unravel_index(sel, self.tissue.shape)
        ijk = np.stack([i.mean(), j.mean(), k.mean(), 1.0])
        return (self.geometry.ijk_to_ras @ ijk)[:3]

    def lookup(self, flat_index: np.ndarray) -> np.ndarray:
        """Position of cartilage voxels (flat indices known to be cartilage) in the per-voxel arrays."""
        return np.searchsorted(self.cartilage_index, flat_index)


# --- helpers ---------------------------------------------------------------------------------
def _array_axis_towards(geometry: Geometry, ras_axis: int) -> Tuple[int, float]:
    """(array axis of [k, j, i], sign) whose direction is nearest the RAS axis (0 R, 1 A, 2 S)."""
    d = geometry.directions
    by_array = [d[:, 2], d[:, 1], d[:, 0]]
    comps = [v[ras_axis] for v in by_array]
    a = int(np.argmax(np.abs(comps)))
    return a, float(np.sign(comps[a]))


def _spacing_kji(geometry: Geometry) -> Tuple[float, float, float]:
    s = geometry.spacing
    return float(s[2]), float(s[1]), float(s[0])


def _erode_mm(mask: np.ndarray, spacing_kji, mm: float) -> np.ndarray:
    """Erosion by about ``mm`` along each axis (separable 1D erosions: fast on big grids)."""
    from scipy import ndimage as ndi

    out = mask
    for axis, sp in enumerate(spacing_kji):
        n = max(1, int(round(mm / sp)))
        shape = [1, 1, 1]
        shape[axis] = 2 * n + 1
        out = ndi.binary_erosion(out, structure=np.ones(shape, bool))
    return out


def _bbox(mask: np.ndarray, margin_vox) -> Tuple[slice, slice, slice]:
    idx = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0] for ax in range(3)]
    return tuple(slice(max(0, int(ix[0]) - m), min(n, int(ix[-1]) + m + 1))
                 for ix, m, n in zip(idx, margin_vox, mask.shape))  # type: ignore[return-value]


# --- laterality --------------------------------------------------------------------------------
def estimate_label_map_laterality(labels: np.ndarray, geometry: Geometry) -> Tuple[Optional[str], float]:
    """Left/right knee from the tibial cartilage: the lateral plate is thicker and smaller.

    Returns (laterality or None, score); the score is log(thickness ratio) - log(area
    ratio) of the higher-slice half over the lower-slice half (positive: that half is lateral).
    """
    tc = labels == TIBIAL_CARTILAGE
    if tc.sum() < 100:
        return None, 0.0
    lr_axis, lr_sign = _array_axis_towards(geometry, 0)
    si_axis, _ = _array_axis_towards(geometry, 2)
    if si_axis == lr_axis:
        return None, 0.0
    prof = tc.sum(axis=tuple(a for a in range(3) if a != lr_axis)).astype(float)
    idx = np.nonzero(prof)[0]
    lo, hi = int(idx[0]), int(idx[-1])
    q = (hi - lo) // 4
    if q < 2:
        return None, 0.0
    gap = lo + q + int(np.argmin(prof[lo + q: hi - q + 1]))
    sp = _spacing_kji(geometry)[si_axis]
    stats = []
    for part in (slice(lo, gap), slice(gap, hi + 1)):
        sl = [slice(None)] * 3
        sl[lr_axis] = part
        sub = tc[tuple(sl)]
        column = sub.sum(axis=si_axis)
        area = int((column > 0).sum())
        if area == 0:
            return None, 0.0
        stats.append((column[column > 0].mean() * sp, area))
    (th_a, ar_a), (th_b, ar_b) = stats
    score = math.log(th_b / th_a) - math.log(ar_b / ar_a)
    if abs(score) < 1e-3:
        return None, score
    # the higher-slice half is lateral when score > 0; for a right knee lateral is +R
    high_is_plus_r = lr_sign > 0
    lateral_is_plus_r = high_is_plus_r if score > 0 else not high_is_plus_r
    return ("right" if lateral_is_plus_r else "left"), score


# --- preparation -----------------------------------------------------------------------------------
def _body_and_fat(bones: np.ndarray, geometry: Geometry) -> Tuple[np.ndarray, np.ndarray]:
    """Soft-tissue outline and subcutaneous fat, computed on a ~1.5 mm grid and mapped back."""
    from scipy import ndimage as ndi

    sp = np.array(_spacing_kji(geometry))
    factor = np.maximum(1, np.round(1.5 / sp)).astype(int)
    shape = np.array(bones.shape)
    pad = (-shape) % factor
    b = np.pad(bones, [(0, int(p)) for p in pad])
    coarse = b.reshape(b.shape[0] // factor[0], factor[0], b.shape[1] // factor[1], factor[1],
                       b.shape[2] // factor[2], factor[2]).any(axis=(1, 3, 5))
    csp = sp * factor
    dist = ndi.distance_transform_edt(~coarse, sampling=csp)
    body = dist <= BODY_MARGIN_MM
    ap_axis, ap_sign = _array_axis_towards(geometry, 1)
    steps = int(round(POSTERIOR_SWEEP_MM / csp[ap_axis]))
    swept = body.copy()
    for s in range(1, steps + 1):  # posterior = towards -A
        shifted = np.roll(body, -int(ap_sign) * s, axis=ap_axis)
        sl = [slice(None)] * 3
        sl[ap_axis] = slice(-s, None) if ap_sign > 0 else slice(0, s)
        shifted[tuple(sl)] = False
        swept |= shifted
    swept = ndi.binary_closing(swept, structure=np.ones((3, 3, 3), bool), iterations=3)
    swept = ndi.binary_fill_holes(swept)
    inner = ndi.distance_transform_edt(swept, sampling=csp)
    fat = swept & (inner <= FAT_MM)

    def up(a):
        for ax, f in enumerate(factor):
            a = np.repeat(a, f, axis=ax)
        return a[:shape[0], :shape[1], :shape[2]]

    return up(swept), up(fat)


def prepare_anatomy(label_image: Image, laterality: Optional[str] = None, subject_id: Optional[str] = None,
                    source: str = "", fluid_film_mm: float = 0.0, progress: "Progress | None" = None) -> KneeAnatomy:
    """Tissue classes, cartilage depth and femoral cartilage coordinates from a knee label map."""
    from scipy import ndimage as ndi

    from .mese import normalize_laterality

    progress = as_progress(progress)
    if label_image.is_series:
        raise InputError("The knee label map is 4D: give a 3D label map (1 femur ... 6 patellar cartilage).")
    labels = np.asarray(label_image.array)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise InputError("The knee label map holds non-integer values: give a label map (1 femur, 2 femoral "
                             "cartilage, 3 tibia, 4 tibial cartilage, 5 patella, 6 patellar cartilage).")
    labels = labels.astype(np.int32)
    g = label_image.geometry
    present = {lab: int((labels == lab).sum()) for lab in range(1, 7)}
    if present[FEMUR] == 0 or present[FEMORAL_CARTILAGE] < 100:
        raise InputError(f"The knee label map has no femur (label 1) or almost no femoral cartilage (label 2: "
                         f"{present[FEMORAL_CARTILAGE]} voxels): give an OAI-style knee label map.")
    warnings = []
    lat = normalize_laterality(laterality)
    lat_source = "given"
    if lat is None:
        lat, score = estimate_label_map_laterality(labels, g)
        if lat is None:
            raise InputError("The knee's laterality cannot be estimated from this label map (no tibial cartilage): "
                             "give it (--laterality left or right).")
        lat_source = f"estimated from the tibial cartilage (score {score:+.3f})"
        if abs(score) < 0.05:
            warnings.append(f"Laterality '{lat}' was estimated with low confidence (score {score:+.3f}): give it "
                            f"explicitly if known.")
    sp = _spacing_kji(g)
    progress(0.05, "Tissue classes")
    tissue = np.zeros(labels.shape, np.uint8)
    for bone, marrow, cortex in ((FEMUR, FEMUR_MARROW, FEMUR_CORTEX), (TIBIA, TIBIA_MARROW, TIBIA_CORTEX),
                                 (PATELLA, PATELLA_MARROW, PATELLA_CORTEX)):
        m = labels == bone
        if not m.any():
            continue
        inner = _erode_mm(m, sp, CORTEX_MM)
        tissue[m] = cortex
        tissue[inner] = marrow
    bones = np.isin(labels, (FEMUR, TIBIA, PATELLA))
    cart_any = np.isin(labels, (FEMORAL_CARTILAGE, TIBIAL_CARTILAGE, PATELLAR_CARTILAGE))
    progress(0.2, "Soft tissue outline")
    body, fat = _body_and_fat(bones | cart_any, g)
    soft = body & ~bones & ~cart_any
    tissue[soft] = MUSCLE
    tissue[soft & fat] = FAT
    for lab, code in ((FEMORAL_CARTILAGE, FC), (TIBIAL_CARTILAGE, TC), (PATELLAR_CARTILAGE, PC)):
        tissue[labels == lab] = code

    progress(0.45, "Cartilage depth")
    cart_index_parts, cart_tissue_parts, depth_parts = [], [], []
    margin = [int(math.ceil(4.0 / s)) for s in sp]
    for lab, code in ((FEMORAL_CARTILAGE, FC), (TIBIAL_CARTILAGE, TC), (PATELLAR_CARTILAGE, PC)):
        own = labels == lab
        if not own.any():
            continue
        box = _bbox(own, margin)
        own_b = own[box]
        bone_b = bones[box]
        d_bone = ndi.distance_transform_edt(~bone_b, sampling=sp)
        d_surf = ndi.distance_transform_edt(own_b | bone_b, sampling=sp)
        kk, jj, ii = np.nonzero(own_b)
        db, ds = d_bone[kk, jj, ii], d_surf[kk, jj, ii]
        # distances run between voxel centres; the interfaces lie about half a voxel nearer
        half = 0.5 * min(sp)
        db, ds = np.maximum(db - half, 0.0), np.maximum(ds - half, 0.0)
        depth = np.where(db + ds > 0, db / np.maximum(db + ds, 1e-9), 0.5)
        flat = np.ravel_multi_index((kk + box[0].start, jj + box[1].start, ii + box[2].start), labels.shape)
        cart_index_parts.append(flat)
        cart_tissue_parts.append(np.full(flat.size, code, np.uint8))
        depth_parts.append(depth.astype(np.float32))
    cart_index = np.concatenate(cart_index_parts)
    order = np.argsort(cart_index)
    cart_index = cart_index[order]
    cart_tissue = np.concatenate(cart_tissue_parts)[order]
    depth = np.concatenate(depth_parts)[order]

    progress(0.6, "Joint soft tissue")
    box = _bbox(cart_any, [int(math.ceil(JOINT_MM / s)) + 1 for s in sp])
    d_any = ndi.distance_transform_edt(~cart_any[box], sampling=sp)
    tissue[box][(d_any > 0) & (d_any <= JOINT_MM) & np.isin(tissue[box], (MUSCLE, FAT))] = JOINT

    progress(0.65, "Joint fluid")
    # suprapatellar recess: soft tissue within 5 mm in front of the femur, above the trochlear cartilage
    ap_axis, ap_sign = _array_axis_towards(g, 1)
    si_axis, si_sign = _array_axis_towards(g, 2)
    fc = labels == FEMORAL_CARTILAGE
    femur = labels == FEMUR
    fc_si = np.nonzero(fc.any(axis=tuple(a for a in range(3) if a != si_axis)))[0]
    top = fc_si.max() if si_sign > 0 else fc_si.min()
    span = int(round(30.0 / sp[si_axis]))
    rng_si = (top + 1, top + span) if si_sign > 0 else (top - span, top - 1)
    lo_si, hi_si = max(0, min(rng_si)), min(labels.shape[si_axis] - 1, max(rng_si))
    if hi_si > lo_si:
        sl = [slice(None)] * 3
        sl[si_axis] = slice(lo_si, hi_si + 1)
        sl = tuple(sl)
        femur_s = femur[sl]
        d_femur = ndi.distance_transform_edt(~femur_s, sampling=sp)
        # anterior of the femur: A coordinate beyond the femur's centre line in that slab
        a_idx = np.nonzero(femur_s.any(axis=tuple(a for a in range(3) if a != ap_axis)))[0]
        if a_idx.size:
            centre = 0.5 * (a_idx[0] + a_idx[-1])
            coords = np.arange(femur_s.shape[ap_axis]).reshape([-1 if a == ap_axis else 1 for a in range(3)])
            anterior = (coords - centre) * ap_sign > 0
            # keep 1 mm off the cartilage: fluid touching it is the optional film below
            d_cart = ndi.distance_transform_edt(~cart_any[sl], sampling=sp)
            recess = (d_femur > 0) & (d_femur <= 5.0) & (d_cart > 1.0) & anterior & (tissue[sl] == MUSCLE)
            tissue[sl][recess] = FLUID
    if fluid_film_mm > 0:
        box = _bbox(cart_any, [int(math.ceil(fluid_film_mm / s)) + 1 for s in sp])
        d_cart = ndi.distance_transform_edt(~cart_any[box], sampling=sp)
        film = (d_cart > 0) & (d_cart <= fluid_film_mm) & np.isin(tissue[box], (MUSCLE, FAT))
        tissue[box][film] = FLUID

    progress(0.8, "Femoral cartilage coordinates")
    fc_mask = tissue == FC
    sub = femoral_subregions(fc_mask, g, lat)
    fc_flat = np.ravel_multi_index(sub.voxels, labels.shape)  # C order: already sorted
    pos = np.searchsorted(cart_index, fc_flat)
    n = cart_index.size
    phi = np.full(n, np.nan, np.float32)
    ml = np.full(n, np.nan, np.float32)
    subregion = np.zeros(n, np.uint8)
    phi[pos] = sub.phi_deg
    # Femoral cartilage depth is radial, normalised within each slice and 5-degree bin: the
    # same depth the deep/superficial split uses, so layer means do not depend on thickness.
    depth[pos] = sub.radial_depth(0.5 * min(sp)).astype(np.float32)
    ml[pos] = sub.ml_mm(sub.slice_of_voxels()).astype(np.float32)
    subregion[pos] = sub.labels[sub.voxels]
    warnings.extend(sub.warnings)
    progress(1.0, "Anatomy ready")
    return KneeAnatomy(g, tissue, cart_index, cart_tissue, depth, phi, ml, subregion, sub.radius_mm, lat, lat_source,
                       subject_id, source, warnings)


def load_anatomy(path, laterality: Optional[str] = None, fluid_film_mm: float = 0.0,
                 progress: "Progress | None" = None) -> KneeAnatomy:
    """:func:`prepare_anatomy` of a label-map file; the subject id is the file name's leading digits."""
    import re
    from pathlib import Path

    from mskquant.imageio import read_image

    path = Path(path)
    image = read_image(path, "Knee label map")
    m = re.match(r"(\d+)", path.name)
    return prepare_anatomy(image, laterality, m.group(1) if m else path.name.split(".")[0], str(path),
                           fluid_film_mm, progress)


# --- analytic knee ------------------------------------------------------------------------------
def analytic_knee(spacing_mm=(0.8, 0.5, 0.5)) -> Image:
    """A small right-knee label map made of simple shapes (for demos and tests without ../shared).

    World frame RAS (x = R, y = A, z = S), grid axes i -> R, j -> A, k -> S like the OAI
    label maps. Medial condyle at -x (patient's left side of a right knee), longer than the
    lateral one; trochlea in front between them; tibial plateaus below with the lateral
    cartilage thicker; patella in front of the trochlea.
    """
    sx, sy, sz = spacing_mm
    xs = np.arange(-46.0, 46.0 + 1e-6, sx)
    ys = np.arange(-50.0, 50.0 + 1e-6, sy)
    zs = np.arange(-58.0, 52.0 + 1e-6, sz)
    z, y, x = np.meshgrid(zs, ys, xs, indexing="ij")
    labels = np.zeros(z.shape, np.uint8)
    fc_t = 2.4
    # condyles: elliptic wheels about the left-right axis
    condyles = {"medial": (-37.0, -9.0, -6.0, 0.0, 25.0, 21.0), "lateral": (9.0, 34.0, -4.0, 1.0, 22.0, 20.0)}
    femur = np.zeros(z.shape, bool)
    cart = np.zeros(z.shape, bool)
    for x0, x1, yc, zc, a, b in condyles.values():
        inx = (x >= x0) & (x <= x1)
        rr = np.sqrt(((y - yc) / a) ** 2 + ((z - zc) / b) ** 2)
        femur |= inx & (rr <= 1.0)
        shell = inx & (rr > 1.0) & (rr <= 1.0 + fc_t / min(a, b))
        ang = np.degrees(np.arctan2(-(y - yc), -(z - zc)))  # 0 inferior, + posterior
        cart |= shell & (ang >= -75) & (ang <= 130)
    # anterior femur (trochlea) and shaft
    block = (x >= -30) & (x <= 28) & (y >= -8) & (y <= 17) & (z >= 2) & (z <= 30)
    shaft = ((x / 17.0) ** 2 + ((y + 2) / 15.0) ** 2 <= 1.0) & (z >= 10)
    femur |= block | shaft
    groove = (x >= -22) & (x <= 20) & (y > 17) & (y <= 17 + fc_t) & (z >= 4) & (z <= 28)
    cart |= groove
    cart &= ~femur
    labels[femur] = FEMUR
    labels[cart] = FEMORAL_CARTILAGE
    # tibia and tibial cartilage (lateral thicker, medial plate larger)
    tc_thick = {"medial": 2.0, "lateral": 2.9}
    plateau_top = -21.0 - fc_t - 0.4
    tibia = (x >= -42) & (x <= 38) & (y >= -30) & (y <= 22) & (z <= plateau_top - max(tc_thick.values()))
    labels[tibia] = TIBIA
    for side, (x0, x1, yc, zc, a, b) in condyles.items():
        t = tc_thick[side]
        half_ap = 20.0 if side == "medial" else 16.0
        plate = (x >= x0 + 1) & (x <= x1 - 1) & (np.abs(y - yc) <= half_ap) & \
                (z <= plateau_top) & (z > plateau_top - t) & ~tibia
        top = zc - b - fc_t - 0.4
        plate &= z <= top
        labels[plate & (labels == 0)] = TIBIAL_CARTILAGE
        bone_fill = (x >= x0 + 1) & (x <= x1 - 1) & (np.abs(y - yc) <= half_ap) & \
                    (z <= plateau_top - t) & (z > plateau_top - max(tc_thick.values()))
        labels[bone_fill & (labels == 0)] = TIBIA
    # patella with cartilage on its back
    pr = np.sqrt((x / 20.0) ** 2 + ((y - 31.0) / 7.0) ** 2 + ((z - 17.0) / 16.0) ** 2)
    patella = pr <= 1.0
    pc = (pr > 1.0) & (pr <= 1.0 + 2.8 / 7.0) & (y < 31.0 - 3.0) & (labels == 0)
    labels[patella] = PATELLA
    labels[pc] = PATELLAR_CARTILAGE
    g = Geometry.from_spacing((xs.size, ys.size, zs.size), (sx, sy, sz), (xs[0], ys[0], zs[0]))
    return Image(labels, g)
