"""Simulated left/right knee MRI pairs with a pain-associated lesion in one knee (numeric core).

Chang et al. trained on OAI sagittal intermediate-weighted turbo spin-echo scans with fat
suppression (SAG IW TSE: 3 mm slices, 0.357 mm pixels, TR/TE 3200/30 ms) and found, in the
CAM hot spots of painful knees, mostly effusion-synovitis (88.8 %) and bone-marrow lesions
(4.7 %) — Results and Figure 3. No such images are public, so MSKQuant simulates them:

* **anatomy** from a real knee label map (OAI DESS grid; labels 1 femur, 2 femoral cartilage,
  3 tibia, 4 tibial cartilage, 5 patella, 6 patellar cartilage) or from
  :func:`analytic_knee_labels`; soft tissue the label maps lack (muscle, subcutaneous fat,
  skin, menisci, patellar and quadriceps tendons, posterior cruciate ligament) is added by
  rules tied to the bones;
* **contrast** of a fat-suppressed intermediate-weighted image: fluid bright, cartilage
  intermediate, muscle intermediate-dark, marrow and fat dark, menisci/tendons/cortex black;
  per-knee jitter of each tissue's signal, a smooth receive-coil bias field, multiplicative
  texture and Rician noise (SNR 15-30 relative to cartilage);
* **acquisition**: 37 sagittal slices of 3 mm (slab-averaged, so partial volume is real),
  448 x 448 pixels of 0.357 mm, both knees stacked along +R by default;
* **positioning variation** per knee: flexion (in-plane rotation) ±8°, in-plane translation
  ±12 mm, through-plane shift ±4.5 mm (the PCL slice moves by ±1.5 slices), size ±5 %, and
  optionally a small out-of-plane tilt;
* **the lesion**, planted in the painful knee at a known place: a suprapatellar joint
  effusion / synovitis (fluid 4-10 mm deep, 20-45 mm up the femur, a rounded pouch) or a
  subchondral bone-marrow lesion (ill-defined ellipsoid, 5-10 mm semi-axes, centre 3-8 mm
  under the cartilage, in one of four femoral/tibial compartments). Both knees carry a little
  physiological fluid.

``Variation.randomised()`` (``--generator randomised``) gives every knee its own random look and
acquisition as well (:mod:`.randomise`: domain randomisation of the demo model's training pairs).

Each simulated knee comes with its geometry, the lesion mask on the same grid, the true
centre (intercondylar notch / PCL) slice and the joint centre, so preprocessing, AUC and
CAM pointing accuracy can be checked against truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from mskquant.errors import InputError
from mskquant.image import Geometry, Image
from mskquant.progress import Progress, as_progress

from . import randomise as rz

# label values of the knee label maps
FEMUR, FEMORAL_CARTILAGE, TIBIA, TIBIAL_CARTILAGE, PATELLA, PATELLAR_CARTILAGE = 1, 2, 3, 4, 5, 6
BONES = (FEMUR, TIBIA, PATELLA)
CARTILAGES = (FEMORAL_CARTILAGE, TIBIAL_CARTILAGE, PATELLAR_CARTILAGE)

# tissue classes of the simulation
AIR, MARROW, CORTEX, CARTILAGE, FLUID, MUSCLE, FAT, SKIN, MENISCUS, TENDON = range(10)
TISSUE_NAMES = ("air", "marrow", "cortex", "cartilage", "fluid", "muscle", "fat", "skin", "meniscus", "tendon")
# fat-suppressed intermediate-weighted TSE signal (arbitrary units)
SIGNAL = np.array([0.0, 170.0, 40.0, 470.0, 950.0, 310.0, 120.0, 380.0, 45.0, 50.0], np.float32)
EDEMA_SIGNAL = 750.0  # bone-marrow lesion (oedema-like: bright in fat-suppressed marrow, below fluid)
LESION_KINDS = ("effusion", "bml")
WORK_MM = 0.7  # working grid spacing (the label maps' coarsest axis)


# --- label maps -----------------------------------------------------------------------------
def _canonical_axes(geometry: Geometry):
    """Array axes (of [k, j, i]) and signs of the S, A and R directions."""
    found = {}
    for ijk in range(3):
        world, sign = geometry.nearest_world_axis(ijk)
        found[world] = (2 - ijk, sign, ijk)
    if len(found) != 3:
        raise InputError("The knee label map's axes are too oblique to tell superior, anterior and left-right apart.")
    return found


def lateral_is_plus_r(labels_sar: np.ndarray, spacing_sar: np.ndarray) -> bool:
    """Whether the knee's lateral side lies towards +R (a right knee).

    From the label map alone: the medial tibial plateau is longer antero-posteriorly than the
    lateral one.
    """
    tc = labels_sar == TIBIAL_CARTILAGE
    cols = np.where(tc.any(axis=(0, 1)))[0]
    if cols.size < 4:
        raise InputError("The knee label map has no tibial cartilage (label 4): cannot tell medial from lateral.")
    mid = (cols.min() + cols.max()) // 2

    def ap_length(m):
        rows = np.where(m.any(axis=(0, 2)))[0]
        return (rows.max() - rows.min()) * spacing_sar[1] if rows.size else 0.0

    medial_minus_r = ap_length(tc[:, :, :mid]) > ap_length(tc[:, :, mid:])
    return bool(medial_minus_r)


def labels_in_knee_frame(labels: Image) -> Tuple[np.ndarray, np.ndarray]:
    """The label map as ``[S, A, lateral]`` (each increasing that way) and its spacing (mm)."""
    if labels.is_series:
        raise InputError("A knee label map must be a 3D volume.")
    axes = _canonical_axes(labels.geometry)
    order = [axes[2][0], axes[1][0], axes[0][0]]
    arr = np.transpose(np.asarray(labels.array), order)
    for n, world in enumerate((2, 1, 0)):
        if axes[world][1] < 0:
            arr = np.flip(arr, axis=n)
    spacing = labels.geometry.spacing[[axes[2][2], axes[1][2], axes[0][2]]]
    arr = np.ascontiguousarray(arr.astype(np.uint8))
    if not lateral_is_plus_r(arr, spacing):
        arr = np.ascontiguousarray(arr[:, :, ::-1])  # a left knee: make lateral the increasing axis
    return arr, np.asarray(spacing, float)


def analytic_knee_labels(spacing_mm: float = 0.7) -> Image:
    """A right-knee label map drawn from simple shapes (for use without real label maps).

    Femur: shaft, metaphysis and two condyles (the medial one larger, reaching lower);
    tibia: plateau (the medial half longer antero-posteriorly) and shaft; patella; cartilage
    shells 2-3 mm thick. Grid 140 x 140 x 112 mm, i -> +R (lateral), j -> +A, k -> +S.
    """
    s = spacing_mm
    shape = (int(140 / s), int(140 / s), int(112 / s))  # S, A, lateral
    S, A, L = np.meshgrid(*(np.arange(n) * s - extent / 2 for n, extent in zip(shape, (140, 140, 112))),
                          indexing="ij", sparse=True)
    femur = (A + 5) ** 2 + (L - 0) ** 2 <= 14 ** 2
    femur = femur & (S >= 25)
    femur = femur | (((S - 36) / 20) ** 2 + ((A + 3) / 21) ** 2 + (L / 38) ** 2 <= 1)
    medial = (L >= -38) & (L <= -6) & ((S - 22) ** 2 + (A + 8) ** 2 <= 22 ** 2)
    lateral = (L >= 6) & (L <= 36) & ((S - 23) ** 2 + (A + 6) ** 2 <= 20 ** 2)
    femur = femur | medial | lateral
    plateau_med = (L < 0) & (((A + 4) / 27) ** 2 + ((L + 19) / 22) ** 2 <= 1)
    plateau_lat = (L >= 0) & (((A + 3) / 22) ** 2 + ((L - 18) / 21) ** 2 <= 1)
    tibia = (plateau_med | plateau_lat) & (S <= -5) & (S >= -40)
    tibia = tibia | (((A + 2) / 17) ** 2 + (L / 17) ** 2 <= 1) & (S < -40)
    tibia = tibia | ((((A + 3) / 26) ** 2 + (L / 40) ** 2 + ((S + 30) / 14) ** 2) <= 1) & (S <= -5)
    patella = ((S - 30) / 20) ** 2 + ((A - 40) / 10) ** 2 + ((L - 3) / 20) ** 2 <= 1
    labels = np.zeros(shape, np.uint8)
    labels[femur] = FEMUR
    labels[tibia] = TIBIA
    labels[patella] = PATELLA
    spacing = np.array([s, s, s])

    def shell(bone, thickness, where):
        d = ndimage.distance_transform_edt(~bone, sampling=spacing)
        return (d > 0) & (d <= thickness) & where & (labels == 0)

    fc_where = (S < 42) & ~((np.abs(L) < 6) & (S < 20) & (A < 10))
    labels[shell(femur, 2.2, np.broadcast_to(fc_where, shape))] = FEMORAL_CARTILAGE
    tc_where = (S > -5) & (S <= -2.5) & (np.abs(L) > 5)
    labels[shell(tibia, 2.5, np.broadcast_to(tc_where, shape))] = TIBIAL_CARTILAGE
    pc_where = np.broadcast_to(A < 38, shape)
    labels[shell(patella, 3.0, pc_where)] = PATELLAR_CARTILAGE
    # label map array is [k, j, i] = [S, A, R] with i -> +R being lateral for this right knee
    geometry = Geometry.from_spacing((shape[2], shape[1], shape[0]), (s, s, s), (-56.0, -70.0, -70.0))
    return Image(labels, geometry)


# --- anatomy: the label map turned into tissues, computed once per knee --------------------------
def _segment_distance(S, A, p0, p1):
    """Distance (mm) in the sagittal plane from points (S, A) to the segment p0-p1."""
    p0 = np.asarray(p0, float)
    p1 = np.asarray(p1, float)
    d = p1 - p0
    t = np.clip(((S - p0[0]) * d[0] + (A - p0[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
    return np.hypot(S - (p0[0] + t * d[0]), A - (p0[1] + t * d[1]))


def _extend_shafts(lab: np.ndarray) -> np.ndarray:
    """Continue the femoral shaft up and the tibial shaft down to the edges of the map.

    Label maps often stop the bones short of the field of view; the simulated scan (160 mm)
    must show them running on, as in a real one.
    """
    lab = lab.copy()

    def steady_level(levels, areas, from_top):
        # the last level whose cross-section is still a full shaft (segmentations taper at their end)
        order = levels[::-1] if from_top else levels
        ref = np.median(areas[order[:40]]) if len(order) else 0
        for k in order:
            if areas[k] >= 0.8 * ref:
                return k
        return order[0]

    for label, up in ((FEMUR, True), (TIBIA, False)):
        mask = lab == label
        areas = mask.sum(axis=(1, 2))
        levels = np.where(areas > 0)[0]
        if not levels.size:
            continue
        ref = steady_level(levels, areas, up)
        section = mask[ref]
        beyond = range(ref + 1, lab.shape[0]) if up else range(0, ref)
        for k in beyond:
            lab[k][section & ((lab[k] == 0) | (lab[k] == label))] = label
    return lab


def _bbox(mask: np.ndarray):
    idx = [np.where(mask.any(axis=tuple(b for b in range(3) if b != a)))[0] for a in range(3)]
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)


def _grow(box, mm, sp, shape):
    return tuple(slice(max(b.start - int(mm / sp[a]), 0), min(b.stop + int(mm / sp[a]), shape[a]))
                 for a, b in enumerate(box))


def _distance_in_box(mask: np.ndarray, sp, box) -> np.ndarray:
    """Distance (mm) to ``mask``, computed inside ``box`` (infinite outside it)."""
    out = np.full(mask.shape, np.inf, np.float32)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=sp)
    return out


@dataclass
class Anatomy:
    """One knee's tissue model on a ~0.7 mm working grid ``[S, A, lateral]``."""

    name: str
    tissue: np.ndarray  # uint8 tissue classes
    spacing: np.ndarray  # mm (S, A, lateral)
    notch_lat_mm: float  # lateral coordinate of the intercondylar notch (PCL plane)
    joint_centre_mm: np.ndarray  # (S, A, lateral) centre of the 105 mm field
    effusion_voxels: np.ndarray  # (N, 3) int32 candidate recess voxels
    effusion_depth_mm: np.ndarray  # (N,) distance to the femur
    effusion_height_mm: np.ndarray  # (N,) height above the patella's superior pole
    effusion_lat_range_mm: Tuple[float, float]  # femoral width at the recess
    bml_voxels: Dict[str, np.ndarray]  # compartment -> (N, 3) candidate centres
    bml_depth_mm: Dict[str, np.ndarray]
    tibial_cartilage_mm: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))  # its centroid (S, A, lateral)

    @property
    def shape(self):
        return self.tissue.shape


def build_anatomy(labels: Image, name: str = "knee", seed: int = 0, progress: "Progress | None" = None) -> Anatomy:
    """Soft tissue, lesion zones and landmarks around a knee label map."""
    progress = as_progress(progress)
    lab, sp = labels_in_knee_frame(labels)
    for needed in (FEMUR, TIBIA, PATELLA, FEMORAL_CARTILAGE, TIBIAL_CARTILAGE):
        if not (lab == needed).any():
            raise InputError(f"The knee label map '{name}' has no label {needed}: labels 1-6 are needed "
                             f"(femur, femoral cartilage, tibia, tibial cartilage, patella, patellar cartilage).")
    f = [max(1, int(round(WORK_MM / s))) for s in sp]
    lab = lab[::f[0], ::f[1], ::f[2]]
    sp = sp * np.array(f)
    lab = _extend_shafts(lab)
    # room for soft tissue: 35 mm front/back, 25 mm at the sides; the shafts continue 40 mm up and down
    pad = [int(round(40 / sp[0])), int(round(35 / sp[1])), int(round(25 / sp[2]))]
    lab = np.pad(lab, ((pad[0], pad[0]), (0, 0), (0, 0)), mode="edge")
    lab = np.pad(lab, ((0, 0), (pad[1], pad[1]), (pad[2], pad[2])), mode="constant")
    rng = np.random.default_rng(seed)
    progress(0.1, f"Anatomy of {name}: distances")
    bone = np.isin(lab, BONES)
    hard = lab > 0
    fem = (lab == FEMUR) | (lab == FEMORAL_CARTILAGE)
    pat = (lab == PATELLA) | (lab == PATELLAR_CARTILAGE)
    pat_box = _bbox(pat)
    cart_box = _bbox(np.isin(lab, (FEMORAL_CARTILAGE, TIBIAL_CARTILAGE)))
    # distances are needed only near the joint: computed in boxes around it
    recess_box = (slice(max(pat_box[0].start - int(8 / sp[0]), 0), min(pat_box[0].stop + int(65 / sp[0]), lab.shape[0])),
                  slice(None), slice(None))
    d_fem = _distance_in_box(fem, sp, recess_box)
    d_fc = _distance_in_box(lab == FEMORAL_CARTILAGE, sp, _grow(cart_box, 15, sp, lab.shape))
    d_tc = _distance_in_box(lab == TIBIAL_CARTILAGE, sp, _grow(cart_box, 15, sp, lab.shape))
    progress(0.5, f"Anatomy of {name}: tissues")
    nS, nA, nL = lab.shape
    S = (np.arange(nS) * sp[0])[:, None, None]
    A = (np.arange(nA) * sp[1])[None, :, None]
    L = (np.arange(nL) * sp[2])[None, None, :]

    # landmarks
    def extent(mask, axis):
        idx = np.where(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        return idx.min() * sp[axis], idx.max() * sp[axis]

    femur_only = lab == FEMUR
    tib = (lab == TIBIA) | (lab == TIBIAL_CARTILAGE)
    pat_s = extent(pat, 0)
    pat_l = extent(pat, 2)
    fem_l = extent(femur_only, 2)
    # notch: the lateral column where the distal femur is highest, between the condyles
    femur_sl = femur_only.any(axis=1)  # (S, lateral)
    distal_per_col = np.where(femur_sl.any(axis=0), np.argmax(femur_sl, axis=0), nS).astype(float)
    cols = np.arange(nL)
    inner = (cols * sp[2] > fem_l[0] + 0.3 * (fem_l[1] - fem_l[0])) & (cols * sp[2] < fem_l[1] - 0.3 * (fem_l[1] - fem_l[0]))
    roof = np.where(inner, distal_per_col, -np.inf)
    top = roof.max()
    notch_cols = np.where(roof >= top - 1)[0]
    notch_lat = float(np.median(notch_cols) * sp[2])
    femur_distal_s = float(np.nanmin(np.where(np.isfinite(distal_per_col) & (distal_per_col < nS), distal_per_col, np.nan))
                           * sp[0])
    tib_top_s = extent(lab == TIBIAL_CARTILAGE, 0)[1]
    joint_line = 0.5 * (femur_distal_s + tib_top_s)
    fem_a = extent(femur_only[int(joint_line / sp[0]):int((joint_line + 30) / sp[0])], 1)
    pat_a = extent(pat, 1)
    joint_centre = np.array([0.5 * (joint_line + 0.5 * (pat_s[0] + pat_s[1])), 0.5 * (fem_a[0] + pat_a[1]), notch_lat])

    # limb outline: an ellipse per level around the bones, smooth along S
    any_bone = hard.any(axis=2)  # (S, A)
    a_lo = np.array([np.where(r)[0].min() if r.any() else np.nan for r in any_bone]) * sp[1]
    a_hi = np.array([np.where(r)[0].max() if r.any() else np.nan for r in any_bone]) * sp[1]
    lat_any = hard.any(axis=1)
    l_lo = np.array([np.where(r)[0].min() if r.any() else np.nan for r in lat_any]) * sp[2]
    l_hi = np.array([np.where(r)[0].max() if r.any() else np.nan for r in lat_any]) * sp[2]
    win = max(1, int(round(25 / sp[0])))

    def smooth(x):
        x = np.where(np.isnan(x), np.nanmedian(x), x)
        return ndimage.uniform_filter1d(x, win, mode="nearest")

    post_margin = rng.uniform(28, 40)
    a_front = smooth(a_hi) + rng.uniform(7, 11)
    a_back = smooth(a_lo) - post_margin
    l_mid = 0.5 * (smooth(l_lo) + smooth(l_hi))
    l_semi = 0.5 * (smooth(l_hi) - smooth(l_lo)) + rng.uniform(12, 18)
    a_mid = 0.5 * (a_front + a_back)
    a_semi = 0.5 * (a_front - a_back)
    rho = np.sqrt(((A - a_mid[:, None, None]) / a_semi[:, None, None]) ** 2
                  + ((L - l_mid[:, None, None]) / l_semi[:, None, None]) ** 2)
    # the bones' front per (S, lateral) column
    front_idx = np.where(hard.any(axis=1), nA - 1 - np.argmax(hard[:, ::-1, :], axis=1), -1)
    valid = front_idx >= 0
    level_front = np.where(valid.any(axis=1), np.max(np.where(valid, front_idx, -1), axis=1), nA // 2)
    front = np.where(valid, front_idx, level_front[:, None]) * sp[1]  # (S, L)
    anterior = A > front[:, None, :]

    tissue = np.full(lab.shape, AIR, np.uint8)
    limb = rho <= 1.0
    tissue[limb] = MUSCLE
    below_quadriceps = S < pat_s[1] + 8
    tissue[limb & anterior & below_quadriceps] = FAT
    tissue[limb & (rho > 0.86)] = FAT
    tissue[limb & (rho > 0.965)] = SKIN
    # menisci: the thin wedge between femoral and tibial cartilage
    tissue[(d_fc <= 5.0) & (d_tc <= 5.0) & (d_fc + d_tc <= 7.0) & ~hard] = MENISCUS
    # tendons and the PCL, dark bands in the sagittal plane
    pat_low = np.argwhere(pat & (S <= pat_s[0] + 2 * sp[0]))
    p_inf = np.array([pat_s[0], np.percentile(pat_low[:, 1], 70) * sp[1]]) if len(pat_low) else np.array([pat_s[0], pat_a[1]])
    tub_band = tib[int((tib_top_s - 40) / sp[0]):int((tib_top_s - 15) / sp[0])]
    tub_a = extent(tub_band, 1)[1] if tub_band.any() else pat_a[1] - 10
    tuberosity = np.array([tib_top_s - 28, tub_a])
    lat_pat = 0.5 * (pat_l[0] + pat_l[1])
    d_pt = _segment_distance(S, A, p_inf, tuberosity)
    tissue[(d_pt <= 2.5) & (np.abs(L - lat_pat) <= 13) & ~hard & limb] = TENDON
    p_sup = np.array([pat_s[1], pat_a[1] - 4])
    d_qt = _segment_distance(S, A, p_sup, p_sup + np.array([45.0, -6.0]))
    tissue[(d_qt <= 3.0) & (np.abs(L - lat_pat) <= 17) & ~hard & limb] = TENDON
    tib_post = extent(tib[int((tib_top_s - 12) / sp[0]):int(tib_top_s / sp[0])], 1)[0]
    pcl_t = np.array([tib_top_s - 10, tib_post + 5])
    pcl_f = np.array([joint_line + 20, 0.5 * (fem_a[0] + fem_a[1]) + 6])
    d_pcl = _segment_distance(S, A, pcl_t, pcl_f)
    tissue[(d_pcl <= 3.0) & (np.abs(L - notch_lat) <= 4.5) & ~hard & limb] = TENDON
    # bone and cartilage last: they win over every soft-tissue rule
    tissue[bone] = MARROW
    tissue[bone & ~ndimage.binary_erosion(bone, iterations=1)] = CORTEX
    tissue[np.isin(lab, CARTILAGES)] = CARTILAGE

    progress(0.8, f"Anatomy of {name}: lesion zones")
    # suprapatellar recess: in front of the femur, from the patella's lower pole to 50 mm above it
    fem_front = np.where(fem.any(axis=1), nA - 1 - np.argmax(fem[:, ::-1, :], axis=1), -1) * sp[1]
    in_front = A >= fem_front[:, None, :] - 1.0
    in_width = (L >= fem_l[0] + 3) & (L <= fem_l[1] - 3)
    has_femur = fem.any(axis=(1, 2))[:, None, None]
    zone = (~hard & limb & in_front & in_width & has_femur & (S >= pat_s[0]) & (S <= pat_s[1] + 50) & (d_fem <= 12.0)
            & (tissue != TENDON))
    eff = np.argwhere(zone).astype(np.int32)
    # bone-marrow lesion centres: marrow 2-12 mm beneath the cartilage, four compartments
    bml = {}
    bml_depth = {}
    marrow = tissue == MARROW
    for bone_label, d_c, tag in ((FEMUR, d_fc, "femur"), (TIBIA, d_tc, "tibia")):
        cand = marrow & (lab == bone_label) & (d_c >= 2.0) & (d_c <= 12.0)
        if bone_label == FEMUR:
            cand &= S <= joint_line + 35  # the condyles and trochlea, not the shaft
        for side_tag, cond in (("medial", L < notch_lat - 4), ("lateral", L > notch_lat + 4)):
            v = np.argwhere(cand & cond).astype(np.int32)
            if len(v):
                bml[f"{tag} {side_tag}"] = v
                bml_depth[f"{tag} {side_tag}"] = d_c[tuple(v.T)].astype(np.float32)
    progress(1.0, f"Anatomy of {name} ready")
    return Anatomy(name, tissue, sp, notch_lat, joint_centre, eff, d_fem[tuple(eff.T)].astype(np.float32),
                   (eff[:, 0] * sp[0] - pat_s[1]).astype(np.float32), (fem_l[0] + 3, fem_l[1] - 3), bml, bml_depth,
                   np.argwhere(lab == TIBIAL_CARTILAGE).mean(axis=0) * sp)


# --- one knee ------------------------------------------------------------------------------------
@dataclass
class Acquisition:
    """The simulated SAG IW TSE grid (OAI protocol as in the paper)."""

    n_slices: int = 37
    slice_mm: float = 3.0
    matrix: int = 448
    pixel_mm: float = 0.357
    slice_direction: int = 1  # +1: slice index increases towards +R (patient left to right)


@dataclass
class Variation:
    """Ranges of the per-knee random variation (uniform, ± half-widths)."""

    flexion_deg: float = 8.0
    shift_in_plane_mm: float = 12.0
    shift_through_plane_mm: float = 4.5
    scale: float = 0.05
    tilt_deg: float = 0.0  # out-of-plane rotation (costs a 3D resampling)
    contrast: float = 0.10
    snr: Tuple[float, float] = (15.0, 30.0)
    bias: float = 0.15
    texture: float = 0.06
    physiological_fluid_mm: Tuple[float, float] = (0.0, 1.5)
    effusion_depth_mm: Tuple[float, float] = (4.0, 10.0)
    effusion_height_mm: Tuple[float, float] = (20.0, 45.0)
    bml_semi_axes_mm: Tuple[float, float] = (5.0, 10.0)
    bml_depth_mm: Tuple[float, float] = (3.0, 8.0)
    look: Optional[rz.Look] = None  # per-knee random look (domain randomisation); None: the fixed FS IW look

    @classmethod
    def randomised(cls) -> "Variation":
        """The domain-randomised generator (``pain-train --generator randomised``): wider pose, bias,
        texture and SNR ranges and a random look and acquisition per knee (:mod:`.randomise`)."""
        return cls(flexion_deg=12.0, shift_in_plane_mm=15.0, shift_through_plane_mm=6.0, scale=0.08, tilt_deg=3.0,
                   contrast=0.0, snr=(10.0, 60.0), bias=0.4, texture=0.12, physiological_fluid_mm=(0.0, 2.0),
                   look=rz.Look())

    @classmethod
    def none(cls) -> "Variation":
        """No positioning, contrast or noise variation (template knees)."""
        return cls(flexion_deg=0, shift_in_plane_mm=0, shift_through_plane_mm=0, scale=0, tilt_deg=0, contrast=0,
                   snr=(np.inf, np.inf), bias=0, texture=0, physiological_fluid_mm=(0.0, 0.0))


@dataclass
class SimulatedKnee:
    image: Image  # float32 signal on the acquisition grid
    lesion_mask: Image  # bool, same grid (all False without a lesion)
    side: str
    lesion_kind: Optional[str]
    lesion_site: str
    centre_slice: int  # true PCL / notch slice (0-based, along the slice axis)
    joint_centre_ras: np.ndarray
    pose: dict = field(default_factory=dict)
    tibial_cartilage_ras: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))  # femorotibial joint


def _lesion_effusion(anatomy: Anatomy, rng, depth_mm, height_mm, lat_fraction=(0.6, 1.0)):
    lo, hi = anatomy.effusion_lat_range_mm
    width = hi - lo
    frac = rng.uniform(*lat_fraction)
    start = lo + rng.uniform(0, 1 - frac) * width
    lat = anatomy.effusion_voxels[:, 2] * anatomy.spacing[2]
    # the recess distended into a pouch: full depth up to the patella, rounded towards its top
    h = np.clip(anatomy.effusion_height_mm / height_mm, 0.0, None)
    depth_here = depth_mm * np.sqrt(np.clip(1.0 - h ** 2, 0.0, 1.0))
    sel = ((anatomy.effusion_depth_mm <= depth_here) & (anatomy.effusion_height_mm <= height_mm)
           & (lat >= start) & (lat <= start + frac * width))
    return anatomy.effusion_voxels[sel]


def _lesion_bml(anatomy: Anatomy, rng, semi_range, depth_range):
    sites = sorted(anatomy.bml_voxels)
    site = sites[int(rng.integers(len(sites)))]
    depth = anatomy.bml_depth_mm[site]
    ok = np.where((depth >= depth_range[0]) & (depth <= depth_range[1]))[0]
    pool = ok if len(ok) else np.arange(len(depth))
    centre = anatomy.bml_voxels[site][pool[int(rng.integers(len(pool)))]].astype(float)
    semi = rng.uniform(*semi_range, size=3)
    sp = anatomy.spacing
    r = np.ceil(semi * 1.6 / sp).astype(int)
    lo = np.maximum(centre.astype(int) - r, 0)
    hi = np.minimum(centre.astype(int) + r + 1, anatomy.shape)
    grids = np.meshgrid(*(np.arange(lo[a], hi[a]) for a in range(3)), indexing="ij")
    q = sum(((g - centre[a]) * sp[a] / semi[a]) ** 2 for a, g in enumerate(grids))
    weight = np.exp(-0.7 * q ** 2)  # bright core, ill-defined rim: oedema fades into the marrow
    box = tuple(slice(lo[a], hi[a]) for a in range(3))
    marrow = anatomy.tissue[box] == MARROW
    weight = np.where(marrow, weight, 0.0).astype(np.float32)
    inside = (marrow & (q <= 1.0)).astype(np.float32)  # the planted lesion: the ellipsoid in marrow
    return site, box, weight, inside


def _smooth_noise(rng, shape, sigma_px):
    """Zero-mean, unit-SD Gaussian noise low-pass filtered in-plane (per slice)."""
    small = tuple(max(2, int(math.ceil(s / sigma_px))) + 2 for s in shape[-2:])
    coarse = rng.standard_normal((shape[0],) + small).astype(np.float32)
    zoom = [1.0] + [shape[1 + a] / (small[a] - 2) for a in range(2)]
    up = ndimage.zoom(coarse, zoom, order=1, mode="nearest", prefilter=False)[:, :shape[1], :shape[2]]
    up -= up.mean()
    sd = up.std()
    return up / sd if sd > 0 else up


def render_knee(anatomy: Anatomy, side: str, rng: np.random.Generator, lesion: Optional[str] = None,
                acquisition: Optional[Acquisition] = None, variation: Optional[Variation] = None,
                fov_centre_ras: Sequence[float] = (0.0, 0.0, 0.0)) -> SimulatedKnee:
    """One simulated SAG IW TSE FS volume of ``anatomy`` as a ``side`` knee, with its lesion mask."""
    var = variation if variation is not None else Variation()
    look = var.look
    acq = acquisition or (Acquisition(**rz.acquisition(rng, look)) if look is not None else Acquisition())
    if side not in ("left", "right"):
        raise ValueError("side must be 'left' or 'right'")
    if lesion is not None and lesion not in LESION_KINDS:
        raise ValueError(f"lesion must be one of {LESION_KINDS} or None")
    sp = anatomy.spacing
    # --- signal on the working grid
    if look is not None:
        lut = rz.tissue_signal(SIGNAL, rng, look, (MARROW, FAT), FLUID)
    else:
        gains = 1.0 + rng.uniform(-var.contrast, var.contrast, size=len(SIGNAL)) if var.contrast else np.ones(len(SIGNAL))
        lut = (SIGNAL * gains).astype(np.float32)
    volume = lut[anatomy.tissue]
    lesion_w = np.zeros(anatomy.shape, np.float32) if lesion else None
    site = ""
    fluid_mm = rng.uniform(*var.physiological_fluid_mm) if var.physiological_fluid_mm[1] > 0 else 0.0
    if fluid_mm > 0:
        vox = _lesion_effusion(anatomy, rng, fluid_mm, 15.0, (0.5, 1.0))
        volume[tuple(vox.T)] = lut[FLUID]
    if lesion == "effusion":
        vox = _lesion_effusion(anatomy, rng, rng.uniform(*var.effusion_depth_mm), rng.uniform(*var.effusion_height_mm))
        level = rz.effusion_signal(lut, rng, look, FLUID) if look is not None else lut[FLUID] * rng.uniform(0.9, 1.05)
        volume[tuple(vox.T)] = level
        lesion_w[tuple(vox.T)] = 1.0
        site = "suprapatellar recess"
    elif lesion == "bml":
        site, box, weight, inside = _lesion_bml(anatomy, rng, var.bml_semi_axes_mm, var.bml_depth_mm)
        edema = rz.bml_signal(lut, rng, look, MARROW, FLUID) if look is not None else EDEMA_SIGNAL * rng.uniform(0.8, 1.0)
        volume[box] = volume[box] * (1 - weight) + edema * weight
        lesion_w[box] = inside
    # --- pose: the knee frame inside the scanner
    lat_sign = 1.0 if side == "right" else -1.0
    theta = math.radians(rng.uniform(-var.flexion_deg, var.flexion_deg)) if var.flexion_deg else 0.0
    scale = 1.0 + (rng.uniform(-var.scale, var.scale) if var.scale else 0.0)
    shift = np.array([rng.uniform(-var.shift_through_plane_mm, var.shift_through_plane_mm) if var.shift_through_plane_mm else 0.0,
                      *(rng.uniform(-var.shift_in_plane_mm, var.shift_in_plane_mm, 2) if var.shift_in_plane_mm else (0.0, 0.0))])
    if var.tilt_deg:
        volume, lesion_w = _tilt(volume, lesion_w, anatomy, rng, var.tilt_deg)
    fov = np.asarray(fov_centre_ras, float)
    joint_ras = fov + shift  # (R, A, S)
    n, m, h = acq.n_slices, acq.matrix, acq.pixel_mm
    # grid: i (columns) -> posterior, j (rows) -> inferior, k (slices) -> slice_direction * R
    half = (m - 1) / 2 * h
    r_first = fov[0] - acq.slice_direction * (n - 1) / 2 * acq.slice_mm
    origin = np.array([r_first, fov[1] + half, fov[2] + half])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, 0] = (0, -h, 0)
    ijk_to_ras[:3, 1] = (0, 0, -h)
    ijk_to_ras[:3, 2] = (acq.slice_direction * acq.slice_mm, 0, 0)
    ijk_to_ras[:3, 3] = origin
    geometry = Geometry((m, m, n), ijk_to_ras)
    # world (S, A) of pixel (row, col): (origin_S - h row, origin_A - h col); knee (S, A) in mm:
    # Rot(-theta) ((S, A)_world - (S, A)_joint) / scale + joint_centre(S, A)
    c, s_ = math.cos(theta), math.sin(theta)
    rot_inv = np.array([[c, s_], [-s_, c]])
    to_world = np.array([[-h, 0.0], [0.0, -h]])
    world0 = np.array([origin[2], origin[1]])
    jc = anatomy.joint_centre_mm
    matrix_mm = rot_inv @ to_world / scale
    offset_mm = rot_inv @ (world0 - np.array([joint_ras[2], joint_ras[1]])) / scale + jc[:2]
    matrix = matrix_mm / sp[:2, None]
    offset = offset_mm / sp[:2]
    image = np.zeros((n, m, m), np.float32)
    lesion_img = np.zeros((n, m, m), np.float32) if lesion else None
    lat_cells = np.arange(anatomy.shape[2]) * sp[2]
    for k in range(n):
        r_world = r_first + acq.slice_direction * k * acq.slice_mm
        lat_c = lat_sign * (r_world - joint_ras[0]) / scale + jc[2]
        half_t = acq.slice_mm / 2 / scale
        w = np.clip(np.minimum(lat_cells + sp[2] / 2, lat_c + half_t) - np.maximum(lat_cells - sp[2] / 2, lat_c - half_t),
                    0, None)
        if w.sum() <= 0:
            continue
        idx = np.nonzero(w)[0]
        slab = np.tensordot(volume[:, :, idx], w[idx], axes=([2], [0])) / w.sum()
        image[k] = ndimage.affine_transform(slab, matrix, offset, output_shape=(m, m), order=1, mode="constant",
                                            cval=0.0, prefilter=False)
        if lesion_img is not None:
            lw = lesion_w[:, :, idx]
            if lw.any():
                lslab = np.tensordot(lw, w[idx], axes=([2], [0])) / w.sum()
                lesion_img[k] = ndimage.affine_transform(lslab, matrix, offset, output_shape=(m, m), order=1,
                                                         mode="constant", cval=0.0, prefilter=False)
    # --- blur, receive bias, texture, noise, gamma
    if look is not None:
        image = rz.blur(image, rng, look, h)
    if var.texture:
        image *= 1.0 + var.texture * _smooth_noise(rng, image.shape, 6.0)
    if var.bias:
        zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, s_n, dtype=np.float32) for s_n in image.shape), indexing="ij")
        coef = rng.uniform(-1, 1, size=6)
        field = (coef[0] * xx + coef[1] * yy + coef[2] * zz + coef[3] * xx * yy + coef[4] * xx ** 2 + coef[5] * yy ** 2)
        field = field / max(float(np.abs(field).max()), 1e-6)
        image *= (1.0 + var.bias * field).astype(np.float32)
        del zz, yy, xx, field
    if np.isfinite(var.snr[1]):
        sigma = lut[CARTILAGE] / rng.uniform(*var.snr)
        if look is not None:
            image = rz.add_noise(image, sigma, rng, look)
        else:
            image = np.sqrt((image + sigma * rng.standard_normal(image.shape, dtype=np.float32)) ** 2
                            + (sigma * rng.standard_normal(image.shape, dtype=np.float32)) ** 2)
    if look is not None:
        image = rz.gamma(image, rng, look)
    gain = rng.uniform(0.7, 1.4) if var.contrast else 1.0
    image = (image * gain).astype(np.float32)
    # --- truth: PCL slice and lesion mask on the acquisition grid
    r_notch = joint_ras[0] + lat_sign * scale * (anatomy.notch_lat_mm - jc[2])
    centre = int(round((r_notch - r_first) / (acq.slice_direction * acq.slice_mm)))
    mask = lesion_img >= 0.5 if lesion_img is not None else np.zeros(image.shape, bool)
    if lesion and not mask.any():  # a lesion thinner than half a slice: keep its core
        mask = lesion_img >= 0.5 * float(lesion_img.max())
    pose = {"flexion_deg": math.degrees(theta), "scale": scale, "shift_ras_mm": shift.tolist()}
    # the tibial cartilage centroid in the scanner: knee (S, A) = Rot(-theta) (world - joint) / scale + jc
    tc = anatomy.tibial_cartilage_mm - jc
    sa = np.array([[c, -s_], [s_, c]]) @ tc[:2] * scale + np.array([joint_ras[2], joint_ras[1]])
    tibial = np.array([joint_ras[0] + lat_sign * scale * tc[2], sa[1], sa[0]])
    return SimulatedKnee(Image(image, geometry), Image(mask, geometry), side, lesion, site, centre,
                         np.array([joint_ras[0], joint_ras[1], joint_ras[2]]), pose, tibial)


def _tilt(volume, lesion_w, anatomy: Anatomy, rng, tilt_deg):
    """Small out-of-plane rotations (about S and A) of the working volume about the joint centre."""
    a = math.radians(rng.uniform(-tilt_deg, tilt_deg))
    b = math.radians(rng.uniform(-tilt_deg, tilt_deg))
    ra = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])  # about S
    rb = np.array([[math.cos(b), 0, -math.sin(b)], [0, 1, 0], [math.sin(b), 0, math.cos(b)]])  # about A
    rot = ra @ rb
    sp = anatomy.spacing
    c = anatomy.joint_centre_mm / sp
    m = np.diag(1 / sp) @ rot @ np.diag(sp)
    off = c - m @ c
    volume = ndimage.affine_transform(volume, m, off, order=1, mode="constant", cval=0.0, prefilter=False)
    if lesion_w is not None:
        lesion_w = ndimage.affine_transform(lesion_w, m, off, order=1, mode="constant", cval=0.0, prefilter=False)
    return volume, lesion_w


# --- pairs -----------------------------------------------------------------------------------
@dataclass
class SimulatedPair:
    subject: str
    anatomy: str
    left: SimulatedKnee
    right: SimulatedKnee
    painful_side: Optional[str]  # None: a pair without a lesion
    lesion_kind: Optional[str]

    @property
    def label(self) -> "int | float":
        """1 when the right knee is the painful one (the paper's label 1), 0 the left, 0.5 neither."""
        return 0.5 if self.painful_side is None else int(self.painful_side == "right")

    @property
    def painful(self) -> Optional[SimulatedKnee]:
        if self.painful_side is None:
            return None
        return self.right if self.painful_side == "right" else self.left


def simulate_pair(anatomy: Anatomy, rng: np.random.Generator, subject: str = "sim", painful_side: Optional[str] = None,
                  lesion_kind: Optional[str] = None, acquisition: Optional[Acquisition] = None,
                  variation: Optional[Variation] = None, kind_weights: Sequence[float] = (0.6, 0.4),
                  no_lesion: bool = False) -> SimulatedPair:
    """Both knees of one simulated subject: the same anatomy (mirrored for the left knee),
    posed, scaled, contrasted and noised independently; the lesion in the painful knee
    (``no_lesion``: in neither knee, painful side None)."""
    if no_lesion:
        painful_side = lesion_kind = None
    else:
        painful_side = painful_side or ("right" if rng.random() < 0.5 else "left")
        lesion_kind = lesion_kind or str(rng.choice(LESION_KINDS, p=np.asarray(kind_weights) / np.sum(kind_weights)))
    fov = rng.uniform(-10, 10, size=3)
    knees = {}
    for side in ("left", "right"):
        knees[side] = render_knee(anatomy, side, rng, lesion_kind if side == painful_side else None, acquisition,
                                  variation, fov)
    return SimulatedPair(subject, anatomy.name, knees["left"], knees["right"], painful_side, lesion_kind)


def reference_knee(anatomy: Anatomy, acquisition: Optional[Acquisition] = None) -> SimulatedKnee:
    """The anatomy as a right knee without variation or noise, joint at the centre of the field."""
    return render_knee(anatomy, "right", np.random.default_rng(0), None, acquisition, Variation.none())


def joint_centre_uv(knee: SimulatedKnee) -> np.ndarray:
    """The joint centre in the preprocessing's sagittal (inferior, posterior) coordinates."""
    return np.array([-knee.joint_centre_ras[2], -knee.joint_centre_ras[1]])


def label_map_files(folder: Path) -> List[Path]:
    """The single-knee label maps in a knee_labelmaps folder (not the atlases)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("*.nii.gz") if p.name[:1].isdigit())


def subject_of(path: Path) -> str:
    """Knee (subject) id of a label map file: the longitudinal pair ``ID_00m``/``ID_36m`` is one knee."""
    return path.name.split(".")[0].split("_")[0]
