"""Cases of the independent test family: knee MESE series with truth, knee-pain left/right pairs.

``mese_case`` - a sagittal MESE series of one knee (EPG signal, 6-8 echoes 9-12 ms apart,
random protocol: 0.3-0.45 mm pixels, 2.5-4 mm slices, +-10 deg obliquity, SNR 20-60) with the
femoral cartilage truth on its grid (in-slice fraction >= 0.5).

``pain_pair`` - both knees of one subject as sagittal IW fat-suppressed TSE (32-38 slices of
3.0-3.4 mm, 0.33-0.4 mm pixels): the right knee is the label map, the left one its mirror
image 180 mm to the patient's left; the painful knee carries an effusion in front of the
distal femur, or its label map's own bone lesions (labels 7-9) as marrow oedema (``bml``),
or nothing (``None``: a pair without a lesion, for calibration).

``dess_case`` - a sagittal 3D water-excitation DESS-like volume of one knee (0.3-0.45 mm
pixels, 0.6-0.9 mm slices, +-10 deg obliquity, SNR 15-45) with the bone and cartilage labels
(0-6) on its grid: the family's own steady-state signal (:func:`.signal.dess_weight`) and
acquisition, for the multi-tissue segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Optional

import numpy as np

from mskquant.image import Geometry, Image

from . import acquire as aq
from . import anatomy as fa
from . import signal as fs

LEFT_OFFSET_MM = -180.0


@dataclass
class MeseCase:
    echoes: Image  # [E, k, j, i]
    echo_times_ms: np.ndarray
    cartilage_truth: Image  # bool femoral cartilage
    laterality: str
    protocol: aq.Protocol
    noise_sigma: float  # effective Rician-equivalent noise SD
    info: Dict[str, object] = field(default_factory=dict)


def _centroid(labels: Image, values) -> np.ndarray:
    k, j, i = np.nonzero(np.isin(np.asarray(labels.array), values))
    sel = slice(None, None, max(1, i.size // 20000))
    ijk = np.stack([i[sel], j[sel], k[sel], np.ones(i[sel].size)])
    return (labels.geometry.ijk_to_ras @ ijk)[:3].mean(axis=1)


def random_mese_protocol(rng: np.random.Generator, snr: Optional[float] = None) -> aq.Protocol:
    px = rng.uniform(0.3, 0.45)
    ni = int(rng.integers(320, 417))
    nj = int(round(ni * rng.uniform(0.7, 0.9)))
    thick = rng.uniform(2.5, 4.0)
    gap = rng.uniform(0.0, 0.8)
    n = int(round(rng.uniform(70.0, 95.0) / (thick + gap)))
    return aq.Protocol(matrix=(ni, nj), pixel_mm=(px, px * rng.uniform(1.0, 1.4)), n_slices=n, thickness_mm=thick,
                       gap_mm=gap, rotation_deg=tuple(float(v) for v in rng.uniform(-10, 10, 3)),
                       centre_offset_mm=tuple(float(v) for v in rng.normal(0, 5, 3)),
                       slices_towards=str(rng.choice(["left", "right"])),
                       columns=str(rng.choice(["posterior", "superior"], p=[0.8, 0.2])),
                       snr=float(snr if snr is not None else rng.uniform(20.0, 60.0)),
                       ghost_fraction=float(rng.uniform(0.0, 0.1)), ghost_phase_sd=float(rng.uniform(0.2, 0.8)),
                       oversample=1.5, slab_points=4, seed=int(rng.integers(0, 2 ** 31)))


def _b1_field(rng: np.random.Generator, centre: np.ndarray):
    g = rng.normal(0.0, 1.0, 3)
    g /= np.linalg.norm(g)
    slope = rng.uniform(0.0, 0.0025)  # per mm
    mean = rng.uniform(0.88, 1.0)

    def b1(ras):
        return np.clip(mean + slope * ((ras - centre) @ g), 0.8, 1.1)

    return b1


def _tables(rng: np.random.Generator, jitter: float = 0.15):
    pd = np.zeros(fa.N_CODES, np.float32)
    t2 = np.ones(fa.N_CODES, np.float32)
    t1 = np.ones(fa.N_CODES, np.float32)
    for code, (p, t, r) in fs.TISSUES.items():
        pd[code] = p * rng.uniform(1 - jitter, 1 + jitter)
        t2[code] = t * rng.uniform(1 - jitter, 1 + jitter)
        t1[code] = r
    return pd, t2, t1


def mese_case(labels: Image, rng: np.random.Generator, protocol: Optional[aq.Protocol] = None,
              laterality: str = "right", progress=None, inverted: bool = False) -> MeseCase:
    """One MESE series of the knee in ``labels`` (see the module docstring).

    ``inverted``: a T1-like look - fluid dark, fat and marrow bright, muscle and cartilage dim
    (the echo train still decays with each tissue's T2).
    """
    knee = fa.build_knee(labels, rng, laterality, "mese")
    p = protocol or random_mese_protocol(rng)
    esp = rng.uniform(9.0, 12.0)
    n_e = int(rng.integers(6, 9))
    lut = fs.MeseLookup.build(esp, n_e)
    pd, t2, _ = _tables(rng)
    if inverted:
        pd[[fa.FLUID, fa.EFFUSION]], t2[[fa.FLUID, fa.EFFUSION]] = 0.2, 40.0
        pd[[fa.FAT, fa.MARROW, fa.LESION]], t2[[fa.FAT, fa.MARROW, fa.LESION]] = 1.0, 150.0
        pd[fa.MUSCLE] *= 0.45
        pd[[fa.FCART, fa.TCART, fa.PCART]] *= 0.6
    deep, sup = rng.uniform(28.0, 36.0), rng.uniform(45.0, 58.0)
    centre = _centroid(labels, (2,))
    b1 = _b1_field(rng, centre)
    cart = np.zeros(fa.N_CODES, bool)
    cart[[fa.FCART, fa.TCART, fa.PCART]] = True

    def signal(code, depth, tex, ras):
        t = np.where(cart[code], deep + (sup - deep) * depth + 1.0 * tex, t2[code])
        amp = pd[code] * (1.0 + 0.06 * tex * ~cart[code])
        return amp[..., None] * lut(t, b1(ras))

    grid = aq.sagittal_grid(centre, p)
    echoes, truth, sigma = aq.acquire(knee, grid, p, signal, n_e, (fa.FCART,), fa.FCART, progress)
    te = esp * np.arange(1, n_e + 1)
    info = {"inverted": inverted, "esp_ms": esp, "n_echoes": n_e, "t2_deep_ms": deep, "t2_superficial_ms": sup, **knee.info,
            "snr": p.snr, "thickness_mm": p.thickness_mm, "pixel_mm": list(p.pixel_mm)}
    return MeseCase(Image(echoes, grid), te, Image(truth[fa.FCART] >= 0.5, grid), laterality, p, sigma, info)


# --- knee-pain pairs -------------------------------------------------------------------------------
@dataclass
class PainKnee:
    image: Image
    lesion_mask: Image  # bool (empty without a lesion)
    side: str
    joint_centre_ras: np.ndarray  # the femorotibial joint: centroid of the tibial cartilage


@dataclass
class PainPair:
    left: PainKnee
    right: PainKnee
    painful_side: Optional[str]  # None: no lesion in either knee
    lesion_kind: Optional[str]
    info: Dict[str, object] = field(default_factory=dict)

    @property
    def label(self) -> Optional[int]:
        return None if self.painful_side is None else int(self.painful_side == "right")


def random_pain_protocol(rng: np.random.Generator) -> aq.Protocol:
    px = rng.uniform(0.33, 0.40)
    n = int(round(rng.uniform(150.0, 165.0) / px / 8.0)) * 8
    thick = rng.uniform(3.0, 3.3)
    return aq.Protocol(matrix=(n, n), pixel_mm=(px, px), n_slices=int(rng.integers(32, 39)), thickness_mm=thick,
                       gap_mm=float(rng.uniform(0.0, 0.1)),
                       rotation_deg=(float(rng.uniform(-10, 10)), float(rng.uniform(-4, 4)), float(rng.uniform(-4, 4))),
                       centre_offset_mm=tuple(float(v) for v in rng.normal(0, 6, 3)), slices_towards="right",
                       snr=float(rng.uniform(15.0, 40.0)), ghost_fraction=float(rng.uniform(0.0, 0.08)),
                       ghost_phase_sd=float(rng.uniform(0.2, 0.6)), oversample=1.5, slab_points=3,
                       seed=int(rng.integers(0, 2 ** 31)))


def _shifted(labels: Image, dr_mm: float) -> Image:
    m = labels.geometry.ijk_to_ras.copy()
    m[0, 3] += dr_mm
    return Image(labels.array, Geometry(labels.geometry.shape_ijk, m))


def _overridden(p: aq.Protocol, overrides: Optional[Dict[str, object]]) -> aq.Protocol:
    """The protocol with some properties set (robustness conditions); a new slice thickness keeps
    the covered width."""
    if not overrides:
        return p
    width = p.n_slices * (p.thickness_mm + p.gap_mm)
    p = replace(p, **overrides)
    if "thickness_mm" in overrides:
        p = replace(p, n_slices=int(round(width / (p.thickness_mm + p.gap_mm))))
    return p


def pain_knee(labels: Image, side: str, rng: np.random.Generator, lesion: Optional[str],
              protocol_overrides: Optional[Dict[str, object]] = None, inverted: bool = False) -> PainKnee:
    """One knee as IW fat-suppressed TSE; ``lesion`` 'effusion', 'bml' or None. ``protocol_overrides``
    set acquisition properties (e.g. ``{"snr": 100.0}``); ``inverted``: a T1-like look (fluid and an
    effusion dark, fat and marrow bright, oedema darker than marrow). Neither draws extra random numbers."""
    knee = fa.build_knee(labels, rng, side, side, effusion=lesion == "effusion")
    p = _overridden(random_pain_protocol(rng), protocol_overrides)
    pd, t2, t1 = _tables(rng)
    tr, te = rng.uniform(3000.0, 3600.0), rng.uniform(25.0, 35.0)
    sat = rng.uniform(0.05, 0.2)
    pd[fa.FAT] *= sat
    pd[fa.MARROW] *= sat
    pd[fa.LESION] = pd[fa.MARROW]
    t2[fa.LESION] = t2[fa.MARROW]
    if lesion == "bml":
        pd[fa.LESION], t2[fa.LESION], t1[fa.LESION] = fs.OEDEMA[0] * rng.uniform(0.85, 1.0), fs.OEDEMA[1], fs.OEDEMA[2]
    if inverted:  # short TR/TE: T1 weighting, no fat suppression
        pd[fa.FAT] /= sat
        pd[fa.MARROW] /= sat
        tr, te = 500.0, 12.0
    weight = (pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)).astype(np.float32)

    def signal(code, depth, tex, ras):
        return (weight[code] * (1.0 + 0.05 * tex))[..., None]

    centre = _centroid(labels, (2, 4))
    grid = aq.sagittal_grid(centre, p)
    lesion_code = {"effusion": fa.EFFUSION, "bml": fa.LESION}.get(lesion or "", None)
    codes = (lesion_code,) if lesion_code is not None else ()
    img, truth, _ = aq.acquire(knee, grid, p, signal, 1, codes, fa.MUSCLE)
    mask = truth[lesion_code] >= 0.3 if lesion_code is not None else np.zeros(grid.shape_kji, bool)
    return PainKnee(Image(img[0], grid), Image(mask, grid), side, _centroid(labels, (4,)))


def pain_pair(labels: Image, rng: np.random.Generator, painful_side: Optional[str], lesion_kind: Optional[str],
              protocol_overrides: Optional[Dict[str, object]] = None, inverted: bool = False) -> PainPair:
    """Right knee = ``labels`` (a right knee), left knee = its mirror image; lesion in the painful one
    (``protocol_overrides`` and ``inverted`` as :func:`pain_knee`, for both knees)."""
    if lesion_kind == "bml" and not np.isin(np.asarray(labels.array), (7, 8, 9)).any():
        raise ValueError("this label map has no bone lesion (labels 7-9) to render as a bone-marrow lesion")
    right = pain_knee(labels, "right", rng, lesion_kind if painful_side == "right" else None, protocol_overrides,
                      inverted)
    left_labels = _shifted(fa.mirrored(labels), LEFT_OFFSET_MM)
    left = pain_knee(left_labels, "left", rng, lesion_kind if painful_side == "left" else None, protocol_overrides,
                     inverted)
    return PainPair(left, right, painful_side, lesion_kind if painful_side else None)


# --- 3D DESS with bone and cartilage labels --------------------------------------------------------------
@dataclass
class DessCase:
    image: Image  # float32 [k, j, i]
    labels: Image  # uint8 0-6 (background, femur, femoral cartilage, tibia, tibial cart., patella, patellar cart.)
    protocol: aq.Protocol
    noise_sigma: float
    info: Dict[str, object] = field(default_factory=dict)


def random_dess_protocol(rng: np.random.Generator, snr: Optional[float] = None) -> aq.Protocol:
    px = rng.uniform(0.3, 0.45)
    ni = int(np.clip(round(rng.uniform(130.0, 160.0) / px), 300, 448))
    nj = int(round(ni * rng.uniform(0.8, 1.0)))
    thick = rng.uniform(0.6, 0.9)
    n = int(round(rng.uniform(90.0, 115.0) / thick))
    return aq.Protocol(matrix=(ni, nj), pixel_mm=(px, px * rng.uniform(1.0, 1.1)), n_slices=n, thickness_mm=thick,
                       gap_mm=0.0, rotation_deg=tuple(float(v) for v in rng.uniform(-10, 10, 3)),
                       centre_offset_mm=tuple(float(v) for v in rng.normal(0, 5, 3)),
                       slices_towards=str(rng.choice(["left", "right"])),
                       columns=str(rng.choice(["posterior", "superior"], p=[0.7, 0.3])),
                       snr=float(snr if snr is not None else rng.uniform(15.0, 45.0)),
                       ghost_fraction=float(rng.uniform(0.0, 0.05)), ghost_phase_sd=float(rng.uniform(0.2, 0.5)),
                       oversample=1.5, slab_points=3, seed=int(rng.integers(0, 2 ** 31)))


def grid_labels(labels: Image, grid: Geometry, thickness_mm: float, points: int = 3) -> np.ndarray:
    """Labels 0-6 on ``grid``: the most frequent label at each voxel centre and ``points`` evenly
    through the nominal slice (bone lesions 7-9 count as their bone)."""
    lab = np.asarray(labels.array).astype(np.uint8)
    lut = np.array([0, 1, 2, 3, 4, 5, 6, 1, 3, 5] + [0] * 246, np.uint8)
    flat = lut[lab].reshape(-1)
    fine_shape = lab.shape
    mf = labels.geometry.ras_to_ijk @ grid.ijk_to_ras
    ni, nj, nk = grid.shape_ijk
    jj, ii = np.meshgrid(np.arange(nj, dtype=np.float32), np.arange(ni, dtype=np.float32), indexing="ij")
    slice_mm = float(np.linalg.norm(grid.ijk_to_ras[:3, 2]))
    offsets = ((np.arange(points) + 0.5) / points - 0.5) * thickness_mm / slice_mm
    out = np.zeros((nk, nj, ni), np.uint8)
    for k in range(nk):
        votes = np.zeros((7, nj, ni), np.uint8)
        for o in offsets:
            f = [mf[a, 0] * ii + mf[a, 1] * jj + mf[a, 2] * (k + o) + mf[a, 3] for a in range(3)]
            ri, rj, rk = (np.rint(v).astype(np.int64) for v in f)
            ok = (ri >= 0) & (ri < fine_shape[2]) & (rj >= 0) & (rj < fine_shape[1]) & (rk >= 0) & (rk < fine_shape[0])
            val = np.where(ok, flat[np.where(ok, (rk * fine_shape[1] + rj) * fine_shape[2] + ri, 0)], 0)
            for c in range(7):
                votes[c] += val == c
        out[k] = np.argmax(votes, axis=0)
    return out


def dess_case(labels: Image, rng: np.random.Generator, protocol: Optional[aq.Protocol] = None,
              laterality: str = "right", progress=None) -> DessCase:
    """One sagittal 3D DESS-like volume of the knee in ``labels`` with its labels 0-6 on the grid."""
    knee = fa.build_knee(labels, rng, laterality, "dess")
    p = protocol or random_dess_protocol(rng)
    pd, t2, t1 = _tables(rng)
    flip = rng.uniform(20.0, 30.0)
    tr, te = rng.uniform(14.0, 18.0), rng.uniform(4.0, 6.0)
    weight = fs.dess_weight(pd, t1, t2, flip, tr, te, water_excitation=rng.uniform(0.05, 0.2))

    def signal(code, depth, tex, ras):
        return (weight[code] * (1.0 + 0.05 * tex))[..., None]

    grid = aq.sagittal_grid(_centroid(labels, (2, 4)), p)
    img, _, sigma = aq.acquire(knee, grid, p, signal, 1, (), fa.FCART, progress)
    truth = grid_labels(labels, grid, p.thickness_mm)
    info = {"flip_deg": flip, "tr_ms": tr, "te_ms": te, "snr": p.snr, "thickness_mm": p.thickness_mm,
            "pixel_mm": list(p.pixel_mm), **knee.info}
    return DessCase(Image(img[0], grid), Image(truth, grid), p, sigma, info)
