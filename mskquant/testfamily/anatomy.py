"""Tissue classes of the independent test family, built from a knee label map.

Label maps in the OAI-ZIB convention (1 femur, 2 femoral cartilage, 3 tibia, 4 tibial
cartilage, 5 patella, 6 patellar cartilage, 7-9 bone lesions). Rules (all distances in mm,
random where a range is given, from the knee's own seed):

* bone (labels 1, 3, 5, 7-9): cortex = bone within 0.6-1.4 mm of its surface, the rest marrow
  with a fine texture; labels 7-9 are kept apart (oedema in a painful knee, marrow otherwise);
* cartilage with its depth fraction (0 at the bone, 1 at the surface);
* body: within 18-30 mm of bone or cartilage (no posterior sweep), skin 1.5 mm, subcutaneous
  fat 3-10 mm, muscle with fatty striations inside;
* menisci: soft tissue within 3.5 mm of both femoral and tibial cartilage;
* Hoffa's fat pad: soft tissue in front of the joint line below the patella;
* popliteal artery and vein: tubes along S behind the femur at the notch;
* a joint-fluid film of 0-0.8 mm on the cartilage, and an optional effusion in front of the
  distal femur.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import numpy as np

from mskquant.image import Geometry, Image

AIR, MARROW, CORTEX, FCART, TCART, PCART, MUSCLE, FAT, FLUID, MENISCUS, VESSEL, SKIN, LESION, EFFUSION = range(14)
N_CODES = 14
NAMES = ("air", "marrow", "cortex", "femoral cartilage", "tibial cartilage", "patellar cartilage", "muscle", "fat",
         "fluid", "meniscus", "vessel", "skin", "bone lesion", "effusion")


@dataclass
class FamilyKnee:
    """Tissue codes on the label map's grid plus what the signal needs."""

    geometry: Geometry
    codes: np.ndarray  # uint8 [k, j, i]
    depth: np.ndarray  # float16, cartilage depth fraction (0 elsewhere)
    texture: np.ndarray  # float16, zero-mean unit-SD fine texture
    notch_ras: np.ndarray
    side: str
    name: str
    has_bone_lesion: bool
    info: Dict[str, float] = field(default_factory=dict)


def _axes(g: Geometry) -> Dict[int, Tuple[int, float]]:
    """RAS axis -> (array axis of [k, j, i], sign)."""
    out = {}
    for ijk in range(3):
        world, sign = g.nearest_world_axis(ijk)
        out[world] = (2 - ijk, sign)
    return out


def _coords_mm(g: Geometry, shape, world: int) -> np.ndarray:
    """World coordinate ``world`` (0 R, 1 A, 2 S) along its nearest array axis, broadcastable."""
    ax, _ = _axes(g)[world]
    n = shape[ax]
    idx = np.zeros((3, n))
    idx[2 - ax] = np.arange(n)
    pts = g.ijk_to_ras[:3, :3] @ idx + g.ijk_to_ras[:3, 3:4]
    v = pts[world]
    return v.reshape([-1 if a == ax else 1 for a in range(3)])


def _edt(mask: np.ndarray, spacing_kji) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.distance_transform_edt(mask, sampling=spacing_kji).astype(np.float32)


def _coarse_edt_outside(mask: np.ndarray, spacing_kji, factor: int = 2) -> np.ndarray:
    """Distance (mm) to ``mask`` computed on a grid ``factor`` times coarser, repeated back."""
    from scipy import ndimage as ndi

    sh = np.array(mask.shape)
    pad = (-sh) % factor
    m = np.pad(mask, [(0, int(p)) for p in pad])
    c = m.reshape(m.shape[0] // factor, factor, m.shape[1] // factor, factor, m.shape[2] // factor, factor).any(
        axis=(1, 3, 5))
    d = ndi.distance_transform_edt(~c, sampling=np.asarray(spacing_kji) * factor).astype(np.float32)
    for ax in range(3):
        d = np.repeat(d, factor, axis=ax)
    return d[:sh[0], :sh[1], :sh[2]]


def build_knee(labels: Image, rng: np.random.Generator, side: str = "right", name: str = "knee",
               effusion: bool = False) -> FamilyKnee:
    """The family's tissue codes for a label map (``side`` tells which knee the map shows)."""
    from scipy import ndimage as ndi

    g = labels.geometry
    lab = np.asarray(labels.array).astype(np.uint8)
    sp = tuple(float(s) for s in g.spacing[::-1])  # k, j, i
    shape = lab.shape
    bone = np.isin(lab, (1, 3, 5, 7, 8, 9))
    lesion = np.isin(lab, (7, 8, 9))
    cart = np.isin(lab, (2, 4, 6))
    codes = np.zeros(shape, np.uint8)
    # body, skin, fat, muscle
    d_out = _coarse_edt_outside(bone | cart, sp)
    body_r = rng.uniform(18.0, 30.0)
    body = d_out <= body_r
    codes[body] = MUSCLE
    fat_mm = rng.uniform(3.0, 10.0)
    codes[body & (d_out > body_r - 1.5 - fat_mm)] = FAT
    codes[body & (d_out > body_r - 1.5)] = SKIN
    s_mm = _coords_mm(g, shape, 2)
    a_mm = _coords_mm(g, shape, 1)
    r_mm = _coords_mm(g, shape, 0)
    # fatty striations in muscle: thin sheets of a slowly varying field's level set
    noise = ndi.gaussian_filter(rng.standard_normal(tuple(max(4, n // 4) for n in shape)).astype(np.float32), 1.5)
    noise = ndi.zoom(noise, [n / m for n, m in zip(shape, noise.shape)], order=1)[:shape[0], :shape[1], :shape[2]]
    noise = (noise - noise.mean()) / (noise.std() + 1e-6)
    codes[(codes == MUSCLE) & (np.abs(noise) < 0.08)] = FAT
    # bone: cortex and marrow
    d_in = _edt(bone, sp)
    cortex_mm = rng.uniform(0.6, 1.4)
    codes[bone] = MARROW
    codes[bone & (d_in <= cortex_mm)] = CORTEX
    codes[lesion & (d_in > cortex_mm)] = LESION
    for value, code in ((2, FCART), (4, TCART), (6, PCART)):
        codes[lab == value] = code
    # cartilage depth
    depth = np.zeros(shape, np.float16)
    zz = np.nonzero(cart.any(axis=(1, 2)))[0]
    yy = np.nonzero(cart.any(axis=(0, 2)))[0]
    xx = np.nonzero(cart.any(axis=(0, 1)))[0]
    box = (slice(max(zz[0] - 8, 0), zz[-1] + 9), slice(max(yy[0] - 8, 0), yy[-1] + 9), slice(max(xx[0] - 8, 0), xx[-1] + 9))
    d_bone = _edt(~bone[box], sp)
    d_free = _edt(cart[box] | bone[box], sp)
    cb = cart[box]
    dep = np.where(cb, d_bone / np.maximum(d_bone + d_free, 1e-3), 0.0)
    depth[box] = dep.astype(np.float16)
    # menisci: soft tissue facing both femoral and tibial cartilage
    d_fc = _edt(~(lab[box] == 2), sp)
    d_tc = _edt(~(lab[box] == 4), sp)
    soft = ~bone[box] & ~cb
    men = soft & (d_fc <= 3.5) & (d_tc <= 3.5)
    sub = codes[box]
    sub[men] = MENISCUS
    # joint-fluid film on the cartilage surfaces
    film = rng.uniform(0.0, 0.8)
    if film > 0.3:
        d_c = _edt(~cb, sp)
        sub[soft & ~men & (d_c > 0) & (d_c <= film)] = FLUID
    codes[box] = sub
    # landmarks
    fem = lab == 1
    fem_s = np.where(fem.any(axis=tuple(a for a in range(3) if a != _axes(g)[2][0])))[0]
    s_line = s_mm.reshape(-1)
    low_s = float(np.min(s_line[fem_s]))
    tc = lab == 4
    tc_top = float(np.max(np.where(tc, s_mm, -np.inf)))
    pat = lab == 5
    pat_low = float(np.min(np.where(pat, s_mm, np.inf))) if pat.any() else tc_top + 20.0
    fc = lab == 2
    fc_a = float(np.max(np.where(fc, a_mm, -np.inf)))
    # Hoffa's fat pad: soft tissue in front of the joint, between the tibial plateau and the patella
    hoffa = (codes == MUSCLE) & (s_mm > tc_top - 8.0) & (s_mm < pat_low + 5.0) & (a_mm > fc_a - 20.0)
    codes[hoffa] = FAT
    # notch: the least femur between the condyles, near the distal end
    r_axis, _ = _axes(g)[0]
    distal = fem & (s_mm < low_s + 12.0)
    prof = distal.sum(axis=tuple(a for a in range(3) if a != r_axis)).astype(float)
    nz = np.nonzero(prof)[0]
    lo, hi = nz[0] + (nz[-1] - nz[0]) // 4, nz[-1] - (nz[-1] - nz[0]) // 4
    notch_idx = lo + int(np.argmin(ndi.uniform_filter1d(prof, 5)[lo:hi + 1]))
    notch_r = float(r_mm.reshape(-1)[notch_idx])
    # popliteal vessels behind the femur at the notch
    fem_post = float(np.min(np.where(fem & (s_mm < low_s + 30), a_mm, np.inf)))
    for offset, radius in ((rng.uniform(10, 14), rng.uniform(2.5, 3.5)), (rng.uniform(16, 21), rng.uniform(3.5, 5.0))):
        tube = ((r_mm - notch_r) ** 2 + (a_mm - (fem_post - offset)) ** 2 <= radius ** 2) & body & (codes != SKIN)
        codes[tube & ~bone & ~cart] = VESSEL
    if effusion:
        trochlea_top = float(np.max(np.where(fc, s_mm, -np.inf)))
        height = rng.uniform(25.0, 45.0)
        deep = rng.uniform(6.0, 12.0)
        d_fem = _edt(~fem, sp)
        t = np.clip((s_mm - trochlea_top + 5.0) / height, 0.0, 1.0)
        thick = deep * np.sin(np.pi * t)
        front = a_mm > float(np.median(a_mm.reshape(-1)[np.nonzero(fem.any(axis=tuple(a for a in range(3) if a != _axes(g)[1][0])))[0]]))
        eff = (d_fem > 0.3) & (d_fem <= thick) & front & np.isin(codes, (MUSCLE, FAT, FLUID)) & (s_mm > trochlea_top - 5.0)
        codes[eff] = EFFUSION
    tex = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.7)
    tex = ((tex - tex.mean()) / (tex.std() + 1e-6)).astype(np.float16)
    notch = np.array([notch_r, 0.0, low_s])
    return FamilyKnee(g, codes, depth, tex, notch, side, name, bool((codes == LESION).sum() > 100),
                      {"body_mm": body_r, "fat_mm": fat_mm, "cortex_mm": cortex_mm, "film_mm": film,
                       "effusion_voxels": int((codes == EFFUSION).sum()), "lesion_voxels": int((codes == LESION).sum()),
                       "joint_s_mm": 0.5 * (low_s + tc_top)})


def mirrored(labels: Image) -> Image:
    """The label map mirrored left-right in place (a right knee becomes the matching left knee)."""
    g = labels.geometry
    ax, _ = _axes(g)[0]
    arr = np.flip(np.asarray(labels.array), axis=ax).copy()
    return Image(arr, g)
