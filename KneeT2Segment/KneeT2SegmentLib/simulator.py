"""MESE phantom: an OAI-like sagittal multi-echo spin-echo acquisition simulated from knee anatomy.

The project's own simulator (no real knee MESE images are available), following the
acquisition of Thomas et al. section 2.2 / Table 1: sagittal slices of 3 mm with a 0.5 mm
gap, 384 x 269 matrix over 120 mm (0.313 x 0.446 mm), 21 slices, 7 echoes at TE 10-70 ms.

Signal. Each MESE voxel is sampled at ``subsamples`` points (default 2 x 2 in plane x 5
through the 3 mm slab) on the fine label-map grid (:mod:`.anatomy`); each point holds one
tissue, so partial volume comes from the fine anatomy. The noise-free echo is the mean over
the points of PD * exp(-TE / T2), times an optional smooth receive-bias field. Tissue
(PD, T2 ms at 3 T, MESE): marrow (0.9, 60), cortex/subchondral plate (0.05, 2), muscle
(0.7, 35), fat (0.95, 70), joint fluid (1.0, 400), joint soft tissue next to the cartilage
(menisci, capsule: 0.45, 15), air (0). Cartilage PD 0.75 and T2 rising
from the bone to the surface (femoral 35 -> 53 ms linearly in depth), plus smooth zone and
side offsets (posterior +2.5, anterior +1, central -1; medial +0.5, lateral -0.5 ms) and a
low-frequency texture (SD 1 ms) in the cartilage's own coordinates (angle about the condylar
circle, medial-lateral mm from the notch) so that a follow-up of the same knee has the same
texture. Optional: stimulated-echo bias of the first echo (the first echo lacks the
stimulated pathway and falls below the mono-exponential through the later echoes; modelled as
a factor on echo 1), focal lesions (a T2 increase over an angle x medial-lateral window),
a prescribed T2 change per subregion (follow-up), a fluid film on the cartilage surfaces.

Noise. Complex Gaussian noise of SD sigma in each channel, magnitude taken (Rician). SNR is
the mean noise-free first-echo signal of the femoral cartilage voxels (before any
stimulated-echo factor) divided by sigma.

Truth on the MESE grid: the femoral cartilage mask (voxels at least half femoral
cartilage); the cartilage's own T2 (mean T2 over the cartilage points of each voxel that is
at least half cartilage, NaN elsewhere); the noise-free T2 (the model fitted to the
noise-free echoes 2..n: equal to the cartilage T2 in pure voxels, but in boundary voxels it
carries the neighbours' signal - partial volume, which no voxel-wise fit can undo); the
femoral cartilage fraction (1 = pure cartilage voxel); the 0-6 label map; the lesion
fraction and the lesion's T2 increment.

For training data (the segmentation issue) :meth:`PhantomParameters.randomized` varies tissue
properties, SNR, bias field, resolution, slice direction, in-plane axis order and obliquity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Geometry, Image, rotation_matrix_deg
from mskquant.progress import Progress, as_progress
from mskquant.synth.sampling import sample_codes, slab_offsets

from . import anatomy as an
from .mese import MeseSeries
from .subregions import SUBREGION_NAMES

OAI_ECHO_TIMES_MS = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0)
REFERENCE_SIGNAL = 1000.0  # mean femoral cartilage first-echo signal after scaling

# (PD, T2 ms) per tissue code; cartilage T2 comes from CartilageModel
DEFAULT_TISSUES: Dict[int, Tuple[float, float]] = {
    an.AIR: (0.0, 1.0), an.FEMUR_MARROW: (0.90, 60.0), an.FEMUR_CORTEX: (0.05, 2.0),
    an.TIBIA_MARROW: (0.90, 60.0), an.TIBIA_CORTEX: (0.05, 2.0), an.PATELLA_MARROW: (0.90, 60.0),
    an.PATELLA_CORTEX: (0.05, 2.0), an.MUSCLE: (0.70, 35.0), an.FAT: (0.95, 70.0), an.FLUID: (1.0, 400.0),
    an.JOINT: (0.45, 15.0),
}


@dataclass
class CartilageModel:
    """Cartilage PD and T2 (ms) as functions of depth and femoral position."""

    pd: float = 0.75
    femoral_deep_ms: float = 35.0
    femoral_superficial_ms: float = 53.0
    depth_exponent: float = 1.0
    anterior_offset_ms: float = 1.0
    central_offset_ms: float = -1.0
    posterior_offset_ms: float = 2.5
    medial_offset_ms: float = 0.5
    lateral_offset_ms: float = -0.5
    texture_sd_ms: float = 1.0
    tibial_deep_ms: float = 30.0
    tibial_superficial_ms: float = 48.0
    patellar_deep_ms: float = 32.0
    patellar_superficial_ms: float = 50.0


@dataclass
class Lesion:
    """A focal T2 increase on the femoral cartilage, in the cartilage's own coordinates."""

    phi_deg: float  # centre angle (0 inferior, + posterior)
    ml_mm: float  # centre medial-lateral position from the notch (+ lateral)
    half_width_deg: float = 15.0  # 30 deg of arc: ~16 mm on a 30 mm condyle
    half_width_mm: float = 9.0  # 18 mm medial-lateral: ~5 MESE slices
    delta_t2_ms: float = 15.0
    layer: str = "all"  # all | deep | superficial

    def as_dict(self) -> dict:
        return {"phi_deg": self.phi_deg, "ml_mm": self.ml_mm, "half_width_deg": self.half_width_deg,
                "half_width_mm": self.half_width_mm, "delta_t2_ms": self.delta_t2_ms, "layer": self.layer}


# A prescribed follow-up change per subregion (ms), as a 4-year change in at-risk knees might look.
DEFAULT_DELTA_T2: Dict[int, float] = {1: 0.5, 2: 1.0, 3: 1.5, 4: 0.0, 5: 0.5, 6: 1.0,
                                      7: 1.5, 8: 2.0, 9: 2.5, 10: 1.0, 11: 1.5, 12: 2.0}


@dataclass
class PhantomParameters:
    echo_times_ms: Tuple[float, ...] = OAI_ECHO_TIMES_MS
    snr: float = 40.0
    seed: int = 0  # noise (and randomisation) seed
    texture_seed: int = 0  # the subject's tissue texture: keep it for every time point of a knee
    matrix: Tuple[int, int] = (384, 269)  # columns (i), rows (j)
    fov_mm: Tuple[float, float] = (120.0, 120.0)
    n_slices: int = 21
    slice_thickness_mm: float = 3.0
    slice_gap_mm: float = 0.5
    subsamples: Tuple[int, int, int] = (2, 2, 5)  # i, j, through-slice
    slice_direction: str = "left"  # k runs towards the patient's left or right
    swap_inplane: bool = False  # False: i anterior->posterior, j superior->inferior
    rotation_deg: Tuple[float, float, float] = (0.0, 0.0, 0.0)  # about R, A, S
    centre_offset_mm: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    first_echo_factor: float = 1.0  # < 1: stimulated-echo deficit of echo 1
    bias_field: float = 0.0  # SD of the log receive field (0.2 ~ +-20 %)
    tissue_texture: float = 0.05  # SD of a smooth PD modulation of non-cartilage tissue
    tissues: Dict[int, Tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_TISSUES))
    cartilage: CartilageModel = field(default_factory=CartilageModel)
    delta_t2_ms: Dict[int, float] = field(default_factory=dict)  # per femoral subregion label
    lesions: List[Lesion] = field(default_factory=list)

    def validate(self) -> "PhantomParameters":
        te = validate_te(self.echo_times_ms)
        del te
        if not (self.snr > 0 and np.isfinite(self.snr)):
            raise InputError(f"The SNR must be a positive number (got {self.snr}).")
        if min(self.matrix) < 8 or self.n_slices < 1 or min(self.fov_mm) <= 0:
            raise InputError("The phantom matrix, field of view and slice count must be positive.")
        if self.slice_thickness_mm <= 0 or self.slice_gap_mm < 0:
            raise InputError("Slice thickness must be positive and the gap not negative.")
        if self.slice_direction not in ("left", "right"):
            raise InputError("slice_direction must be 'left' or 'right'.")
        if min(self.subsamples) < 1:
            raise InputError("Subsamples must be at least 1 along each axis.")
        return self

    def randomized(self, rng: np.random.Generator) -> "PhantomParameters":
        """A varied copy for training data: tissue properties, SNR, bias, resolution, orientation."""
        tissues = {c: (pd * rng.uniform(0.85, 1.15), t2 * rng.uniform(0.8, 1.25)) for c, (pd, t2) in self.tissues.items()}
        tissues[an.AIR] = (0.0, 1.0)
        cart = replace(self.cartilage, femoral_deep_ms=rng.uniform(28, 42), femoral_superficial_ms=rng.uniform(45, 62),
                       pd=rng.uniform(0.6, 0.9), texture_sd_ms=rng.uniform(0.5, 2.5))
        px = rng.uniform(0.28, 0.40)
        matrix = (int(rng.integers(320, 448)), int(rng.integers(224, 320)))
        fov = (matrix[0] * px, matrix[1] * px * rng.uniform(1.0, 1.5))
        thickness = rng.uniform(2.5, 3.5)
        return replace(self, tissues=tissues, cartilage=cart, snr=float(rng.uniform(15, 80)),
                       seed=int(rng.integers(0, 2 ** 31)), texture_seed=int(rng.integers(0, 2 ** 31)),
                       matrix=matrix, fov_mm=fov, slice_thickness_mm=thickness,
                       slice_gap_mm=rng.uniform(0.0, 1.0), n_slices=int(rng.integers(18, 30)),
                       slice_direction=str(rng.choice(["left", "right"])), swap_inplane=bool(rng.random() < 0.2),
                       rotation_deg=tuple(float(v) for v in rng.normal(0, 4, 3)),
                       centre_offset_mm=tuple(float(v) for v in rng.normal(0, 5, 3)),
                       first_echo_factor=float(rng.uniform(0.8, 1.0)), bias_field=float(rng.uniform(0, 0.3)))


def validate_te(values) -> np.ndarray:
    from .mese import validate_echo_times

    return validate_echo_times(values, None, "the phantom")


@dataclass
class MesePhantom:
    """Echo volumes plus the truth on the MESE grid."""

    series: MeseSeries
    sigma: float
    t2_true: Image  # ms: the cartilage's own T2 in voxels at least half cartilage, NaN elsewhere
    t2_noise_free: Image  # ms: T2 fitted to the noise-free echoes 2..n (includes partial volume)
    cartilage_mask: Image  # femoral cartilage, bool
    labels: Image  # 0-6 as the source label map
    femoral_fraction: np.ndarray
    lesion_fraction: np.ndarray
    lesion_t2_increment: np.ndarray
    params: PhantomParameters
    truth: dict


# --- geometry --------------------------------------------------------------------------------
def mese_geometry(centre_ras: np.ndarray, params: PhantomParameters) -> Geometry:
    """Sagittal MESE grid centred on ``centre_ras``: i/j in plane, k across slices."""
    posterior, inferior = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    col, row = (inferior, posterior) if params.swap_inplane else (posterior, inferior)
    across = np.array([-1.0, 0.0, 0.0]) if params.slice_direction == "left" else np.array([1.0, 0.0, 0.0])
    rot = rotation_matrix_deg(params.rotation_deg)
    directions = rot @ np.stack([col, row, across], axis=1)
    nx, ny = params.matrix
    spacing = np.array([params.fov_mm[0] / nx, params.fov_mm[1] / ny,
                        params.slice_thickness_mm + params.slice_gap_mm])
    shape = np.array([nx, ny, params.n_slices])
    centre = np.asarray(centre_ras, float) + np.asarray(params.centre_offset_mm, float)
    origin = centre - directions @ (spacing * (shape - 1) / 2.0)
    return Geometry.from_spacing(tuple(int(v) for v in shape), spacing, origin, directions)


def default_lesion(anat: an.KneeAnatomy, delta_t2_ms: float = 15.0) -> Lesion:
    """A lesion centred on the medial condyle's weight-bearing (central) zone."""
    sel = (anat.subregion > 0) & np.isin(anat.subregion, (2, 8))  # deep/superficial medial central
    if not sel.any():
        raise InputError("The anatomy has no medial central femoral cartilage to place a lesion on.")
    return Lesion(float(np.median(anat.phi_deg[sel])), float(np.median(anat.ml_mm[sel])),
                  delta_t2_ms=delta_t2_ms)


# --- T2 on the fine grid --------------------------------------------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _texture(coords: Sequence[np.ndarray], sd: float, seed: int, wavelengths=(8.0, 30.0), n: int = 8) -> np.ndarray:
    """A smooth random field (sum of sinusoids) of standard deviation ``sd`` at the given mm coordinates."""
    if sd <= 0:
        return np.zeros(coords[0].shape, np.float32)
    rng = np.random.default_rng(seed)
    out = np.zeros(coords[0].shape, np.float64)
    amp = sd * math.sqrt(2.0 / n)
    for _ in range(n):
        direction = rng.normal(size=len(coords))
        direction /= np.linalg.norm(direction)
        k = 2 * math.pi / rng.uniform(*wavelengths)
        phase = rng.uniform(0, 2 * math.pi)
        arg = phase + sum(k * d * c for d, c in zip(direction, coords))
        out += amp * np.sin(arg)
    return out.astype(np.float32)


def cartilage_t2(anat: an.KneeAnatomy, params: PhantomParameters, follow_up: bool = False
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T2 ms, lesion membership, lesion increment) per cartilage voxel of the fine grid."""
    m = params.cartilage
    d = anat.depth.astype(np.float64)
    t2 = np.empty(d.size, np.float64)
    femoral = anat.cartilage_tissue == an.FC
    prof = d ** m.depth_exponent
    t2[femoral] = m.femoral_deep_ms + (m.femoral_superficial_ms - m.femoral_deep_ms) * prof[femoral]
    phi = anat.phi_deg[femoral].astype(np.float64)
    ml = anat.ml_mm[femoral].astype(np.float64)
    w = 6.0
    ant = _sigmoid((-35.0 - phi) / w)
    post = _sigmoid((phi - 25.0) / w)
    t2[femoral] += m.anterior_offset_ms * ant + m.posterior_offset_ms * post + m.central_offset_ms * (1 - ant - post)
    lat = _sigmoid(ml / 3.0)
    t2[femoral] += m.lateral_offset_ms * lat + m.medial_offset_ms * (1 - lat)
    arc = np.radians(phi) * anat.arc_radius_mm
    t2[femoral] += _texture((arc, ml), m.texture_sd_ms, params.texture_seed)
    for code, deep, sup in ((an.TC, m.tibial_deep_ms, m.tibial_superficial_ms),
                            (an.PC, m.patellar_deep_ms, m.patellar_superficial_ms)):
        sel = anat.cartilage_tissue == code
        if sel.any():
            k, j, i = np.unravel_index(anat.cartilage_index[sel], anat.tissue.shape)
            ras = anat.geometry.ijk_to_ras @ np.stack([i, j, k, np.ones(i.size)])
            t2[sel] = deep + (sup - deep) * prof[sel] + _texture(tuple(ras[:3]), 0.5 * m.texture_sd_ms,
                                                                  params.texture_seed + 1)
    in_lesion = np.zeros(d.size, bool)
    increment = np.zeros(d.size, np.float64)
    if follow_up or params.delta_t2_ms or params.lesions:
        for label, delta in params.delta_t2_ms.items():
            t2[anat.subregion == int(label)] += float(delta)
        deep = np.zeros(d.size, bool)
        deep[femoral] = np.isin(anat.subregion[femoral], range(1, 7))
        for lesion in params.lesions:
            sel = femoral.copy()
            sel[femoral] = (np.abs(phi - lesion.phi_deg) <= lesion.half_width_deg) & \
                           (np.abs(ml - lesion.ml_mm) <= lesion.half_width_mm)
            if lesion.layer == "deep":
                sel &= deep
            elif lesion.layer == "superficial":
                sel &= femoral & ~deep
            t2[sel] += lesion.delta_t2_ms
            increment[sel] += lesion.delta_t2_ms
            in_lesion |= sel
    return np.maximum(t2, 1.0).astype(np.float32), in_lesion, increment.astype(np.float32)


# --- the acquisition ---------------------------------------------------------------------------
def _smooth_field(geometry: Geometry, sd: float, seed: int, wavelengths=(60.0, 200.0)) -> np.ndarray:
    """A smooth field over the grid's voxel centres (world mm), for bias and PD texture."""
    if sd <= 0:
        return np.zeros(geometry.shape_kji, np.float32)
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in geometry.shape_kji), indexing="ij")
    m = geometry.ijk_to_ras
    ras = [m[r, 0] * i + m[r, 1] * j + m[r, 2] * k + m[r, 3] for r in range(3)]
    return _texture(ras, sd, seed, wavelengths, n=6)


def simulate(anat: an.KneeAnatomy, params: Optional[PhantomParameters] = None, follow_up: bool = False,
             progress: "Progress | None" = None) -> MesePhantom:
    """Simulate an OAI-like MESE acquisition of ``anat`` with the truth on the MESE grid."""
    params = (params or PhantomParameters()).validate()
    progress = as_progress(progress)
    te = np.asarray(params.echo_times_ms, np.float64)
    n_e = te.size
    geometry = mese_geometry(anat.femoral_centroid_ras(), params)
    nk, nj, ni = geometry.shape_kji
    sample = anat.cartilage_index[anat.cartilage_tissue == an.FC][::50]
    k, j, i = np.unravel_index(sample, anat.tissue.shape)
    ijk = (geometry.ras_to_ijk @ anat.geometry.ijk_to_ras @ np.stack([i, j, k, np.ones(i.size)]))[:3]
    if not np.any(np.all((ijk > -0.5) & (ijk < np.array(geometry.shape_ijk)[:, None] - 0.5), axis=0)):
        raise InputError("The simulated field of view holds no femoral cartilage: centre it on the knee.")
    progress(0.02, "Cartilage T2")
    t2_cart, in_lesion, lesion_inc = cartilage_t2(anat, params, follow_up)
    pd_tab = np.zeros(an.N_TISSUES)
    t2_tab = np.ones(an.N_TISSUES)
    for code, (pd, t2) in params.tissues.items():
        pd_tab[code], t2_tab[code] = pd, t2
    for code in an.CARTILAGE_TISSUES:
        pd_tab[code] = 0.0  # cartilage is summed point by point below
    decay = pd_tab[:, None] * np.exp(-te[None, :] / t2_tab[:, None])  # [tissue, echo]
    offsets = slab_offsets(params.subsamples, params.slice_thickness_mm, float(geometry.spacing[2]))
    n_sub = offsets.shape[0]
    to_fine = anat.geometry.ras_to_ijk @ geometry.ijk_to_ras
    fine_shape = np.array(anat.tissue.shape)  # k, j, i
    tissue_flat = anat.tissue.ravel()
    n_vox_slice = nj * ni
    signal = np.zeros((n_e, nk, nj, ni), np.float64)
    vox = np.repeat(np.arange(n_vox_slice), n_sub)
    counts_all = np.zeros((nk, nj, ni, an.N_TISSUES), np.uint16)
    cart_sum_t2 = np.zeros((nk, nj, ni), np.float64)
    cart_n = np.zeros((nk, nj, ni), np.float64)
    lesion_n = np.zeros((nk, nj, ni), np.float64)
    lesion_sum = np.zeros((nk, nj, ni), np.float64)
    for k in range(nk):
        progress(0.05 + 0.8 * k / nk, f"Simulating slices ({k + 1}/{nk})")
        code, flat = sample_codes(tissue_flat, fine_shape, to_fine, k, nj, ni, offsets, an.AIR)
        counts = np.bincount(vox * an.N_TISSUES + code.ravel(), minlength=n_vox_slice * an.N_TISSUES)
        counts = counts.reshape(n_vox_slice, an.N_TISSUES)
        counts_all[k] = counts.reshape(nj, ni, an.N_TISSUES)
        signal[:, k] = (counts @ decay).T.reshape(n_e, nj, ni) / n_sub
        cart = np.isin(code, an.CARTILAGE_TISSUES).ravel()
        if cart.any():
            pos = anat.lookup(flat.reshape(-1)[cart])
            t2s = t2_cart[pos].astype(np.float64)
            v = vox[cart]
            for e in range(n_e):
                signal[e, k] += (np.bincount(v, weights=params.cartilage.pd * np.exp(-te[e] / t2s),
                                             minlength=n_vox_slice) / n_sub).reshape(nj, ni)
            cart_sum_t2[k] = np.bincount(v, weights=t2s, minlength=n_vox_slice).reshape(nj, ni)
            cart_n[k] = np.bincount(v, minlength=n_vox_slice).reshape(nj, ni)
            lesion_n[k] = np.bincount(v, weights=in_lesion[pos], minlength=n_vox_slice).reshape(nj, ni)
            lesion_sum[k] = np.bincount(v, weights=lesion_inc[pos], minlength=n_vox_slice).reshape(nj, ni)
    progress(0.88, "Truth maps, bias field and noise")
    femoral_fraction = counts_all[..., an.FC].astype(np.float32) / n_sub
    cart_fraction = cart_n / n_sub
    mask = femoral_fraction >= 0.5
    if not mask.any():
        raise InputError("The simulated field of view holds no femoral cartilage: centre it on the knee.")
    with np.errstate(invalid="ignore", divide="ignore"):
        t2_true = np.where(cart_fraction >= 0.5, cart_sum_t2 / cart_n, np.nan).astype(np.float32)
        lesion_fraction = np.where(cart_n > 0, lesion_n / cart_n, 0.0).astype(np.float32)
        lesion_increment = np.where(cart_n > 0, lesion_sum / cart_n, 0.0).astype(np.float32)
    # 0-6 labels: a cartilage label where that cartilage fills half the voxel, else the majority bone
    fractions = counts_all.astype(np.float32) / n_sub
    labels = np.zeros((nk, nj, ni), np.uint8)
    for lab in (an.FEMUR, an.TIBIA, an.PATELLA):
        codes = np.nonzero(an.TISSUE_TO_LABEL == lab)[0]
        labels[fractions[..., codes].sum(-1) >= 0.5] = lab
    for lab, code in ((an.FEMORAL_CARTILAGE, an.FC), (an.TIBIAL_CARTILAGE, an.TC), (an.PATELLAR_CARTILAGE, an.PC)):
        labels[fractions[..., code] >= 0.5] = lab
    rng = np.random.default_rng(params.seed)
    if params.tissue_texture > 0:  # smooth PD variation of the non-cartilage tissue
        tex = 1.0 + _smooth_field(geometry, params.tissue_texture, params.texture_seed + 7, (15.0, 60.0))
        non_cart = 1.0 - cart_fraction
        signal *= (1.0 + (tex - 1.0) * non_cart)[None]
    bias = np.exp(_smooth_field(geometry, params.bias_field, params.seed + 11)) if params.bias_field > 0 else None
    if bias is not None:
        signal *= bias[None]
    scale = REFERENCE_SIGNAL / float(signal[0][mask].mean())
    signal *= scale
    sigma = REFERENCE_SIGNAL / params.snr
    if params.first_echo_factor != 1.0:
        signal[0] *= params.first_echo_factor
    # What an ideal noise-free measurement gives (echoes 2..n, as the default analysis): equals
    # t2_true in pure cartilage voxels; in boundary voxels it carries the neighbours' signal.
    from .t2fit import fit_curves

    t2_noise_free = np.full((nk, nj, ni), np.nan, np.float32)
    defined = np.isfinite(t2_true)
    if n_e >= 4 and defined.any():
        fitted = fit_curves(signal[1:, defined], te[1:], 0.0, max_iterations=20, loglinear=False)[0]
        fitted = np.where((fitted >= 0) & (fitted <= 100), fitted, np.nan)
        t2_noise_free[defined] = fitted
    echoes = np.empty((n_e, nk, nj, ni), np.float32)
    for e in range(n_e):
        progress(0.9 + 0.1 * e / n_e, "Adding Rician noise")
        re = signal[e] + sigma * rng.standard_normal(signal[e].shape)
        im = sigma * rng.standard_normal(signal[e].shape)
        echoes[e] = np.sqrt(re * re + im * im)
    series = MeseSeries(Image(echoes, geometry), te.copy(), anat.laterality, f"phantom ({anat.laterality_source})",
                        anat.subject_id, f"MESE phantom of {anat.source or 'an analytic knee'}")
    truth = {
        "snr": params.snr, "sigma": sigma, "seed": params.seed, "texture_seed": params.texture_seed,
        "laterality": anat.laterality, "laterality_source": anat.laterality_source,
        "subject_id": anat.subject_id, "source": anat.source, "follow_up": follow_up,
        "first_echo_factor": params.first_echo_factor, "bias_field": params.bias_field,
        "delta_t2_ms": {SUBREGION_NAMES[int(k)]: float(v) for k, v in sorted(params.delta_t2_ms.items())},
        "delta_t2_ms_by_label": {str(int(k)): float(v) for k, v in sorted(params.delta_t2_ms.items())},
        "lesions": [l.as_dict() for l in params.lesions],
        "femoral_cartilage_voxels": int(mask.sum()), "pure_femoral_cartilage_voxels": int((femoral_fraction >= 1).sum()),
        "reference_signal": REFERENCE_SIGNAL,
    }
    progress(1.0, "Phantom ready")
    return MesePhantom(series, sigma, Image(t2_true, geometry), Image(t2_noise_free, geometry), Image(mask, geometry),
                       Image(labels, geometry),
                       femoral_fraction, lesion_fraction, lesion_increment, params, truth)


def simulate_pair(baseline: an.KneeAnatomy, followup: an.KneeAnatomy, params: Optional[PhantomParameters] = None,
                  delta_t2_ms: Optional[Dict[int, float]] = None, lesion: "Lesion | None | bool" = True,
                  progress: "Progress | None" = None) -> Tuple[MesePhantom, MesePhantom]:
    """Baseline and follow-up of one knee: prescribed T2 change per subregion plus a planted lesion.

    The follow-up keeps the texture seed (same tissue) and uses the next noise seed.
    """
    params = (params or PhantomParameters()).validate()
    progress = as_progress(progress)
    if baseline.laterality != followup.laterality:
        raise InputError(f"Baseline and follow-up anatomies are of different knees (laterality {baseline.laterality} vs "
                         f"{followup.laterality}): give two label maps of the same knee.")
    deltas = dict(DEFAULT_DELTA_T2 if delta_t2_ms is None else delta_t2_ms)
    lesions = []
    if lesion is True:
        lesions = [default_lesion(followup)]
    elif isinstance(lesion, Lesion):
        lesions = [lesion]
    base = simulate(baseline, replace(params, delta_t2_ms={}, lesions=[]), False, progress.sub(0.0, 0.5))
    follow = simulate(followup, replace(params, seed=params.seed + 1, delta_t2_ms=deltas, lesions=lesions), True,
                      progress.sub(0.5, 1.0))
    return base, follow


