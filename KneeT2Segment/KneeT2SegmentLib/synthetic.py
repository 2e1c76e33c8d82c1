"""Domain-randomised MESE volumes of a knee for training the cartilage network (numeric core).

The knee's tissue classes (:mod:`.anatomy`: marrow, cortex, cartilages, muscle, fat, fluid,
menisci/capsule) with each cartilage split at half depth into a deep and a superficial class,
sampled by the shared generator (:mod:`mskquant.synth`) onto a random sagittal grid and given
a random appearance per use. Compared with the MESE phantom (:mod:`.simulator`, one
physically modelled contrast), every volume here looks different:

* grid: pixels 0.25-0.6 mm, matrix 256-448, slices 1-4 mm thick with 0-50 % gaps (box or
  Gaussian slice profile, partial volume from up to 7 points through the slice), rotation
  +-15 deg in the sagittal plane and +-8 deg out of it, the field of view shifted by ~10 mm;
* appearance (:mod:`mskquant.synth.appearance`): PD and T2 per class from an MR prior (with
  or without fat suppression) or fully at random (contrast swaps), texture, bias, blur, gamma;
  echo times 6-15 ms apart;
* tissue beside the cartilage (:func:`vary_joint_shell`, training): the anatomy wraps every
  cartilage in one 2 mm layer of joint soft tissue, a cue no real knee gives; per volume the
  layer is 0-3 mm thick, muscle, fat or fluid lie beyond it in patches, sometimes a fluid film;
* noise (added by the training loop per use): Gaussian or Rician, SNR 10-100.

The network still sees what it sees at inference (Thomas et al. 2.3): one echo, per-volume
quartile normalisation, the sagittal layout; only the images it learns from vary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Image
from mskquant.synth import appearance as ap
from mskquant.synth.sampling import PROFILES, slab_offsets, subsamples_for, tissue_counts

from . import anatomy as an
from . import simulator as sm
from .mese import MeseSeries
from .segmentation import sagittal_layout

# synthetic class codes: the anatomy's 14 tissue codes + superficial halves of the three cartilages
FC_SUPERFICIAL, TC_SUPERFICIAL, PC_SUPERFICIAL = 14, 15, 16
N_CLASSES = 17
KINDS = ("air", "marrow", "cortex", "marrow", "cortex", "marrow", "cortex", "cartilage_deep", "cartilage_deep",
         "cartilage_deep", "muscle", "fat", "fluid", "fibrous", "cartilage_superficial", "cartilage_superficial",
         "cartilage_superficial")
FEMORAL_CODES = (an.FC, FC_SUPERFICIAL)


def class_map(anat: an.KneeAnatomy) -> np.ndarray:
    """The anatomy's tissue codes with each cartilage's superficial half (depth > 0.5) recoded."""
    codes = anat.tissue.copy()
    flat = codes.reshape(-1)
    sup = anat.depth > 0.5
    for deep_code, sup_code in ((an.FC, FC_SUPERFICIAL), (an.TC, TC_SUPERFICIAL), (an.PC, PC_SUPERFICIAL)):
        sel = sup & (anat.cartilage_tissue == deep_code)
        flat[anat.cartilage_index[sel]] = sup_code
    return codes


@dataclass
class JointShell:
    """The joint soft-tissue shell of the anatomy (tissue ``JOINT``: every voxel within 2 mm of a
    cartilage), with each voxel's distance to the nearest cartilage."""

    index: np.ndarray  # int64 flat indices of the shell's voxels
    distance_mm: np.ndarray  # float32 per voxel
    ijk: np.ndarray  # int32 [3, n]: (k, j, i) of each voxel


def joint_shell(anat: an.KneeAnatomy) -> JointShell:
    """The shell and its distances (computed once per anatomy; about a second)."""
    from scipy import ndimage as ndi

    tissue = anat.tissue
    shell = tissue == an.JOINT
    if not shell.any():
        return JointShell(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((3, 0), np.int32))
    sp = anat.geometry.spacing
    spacing_kji = (float(sp[2]), float(sp[1]), float(sp[0]))
    kk, jj, ii = np.nonzero(shell)
    lo = [max(0, int(v.min()) - 2) for v in (kk, jj, ii)]
    hi = [int(v.max()) + 3 for v in (kk, jj, ii)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    cart = np.isin(tissue[box], an.CARTILAGE_TISSUES)
    distance = ndi.distance_transform_edt(~cart, sampling=spacing_kji)
    d = distance[kk - lo[0], jj - lo[1], ii - lo[2]].astype(np.float32)
    return JointShell(np.ravel_multi_index((kk, jj, ii), tissue.shape), d, np.stack([kk, jj, ii]).astype(np.int32))


def vary_joint_shell(codes: np.ndarray, shell: JointShell, spacing_kji, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``codes`` whose joint shell is redrawn, so that the cartilage does not always meet one
    2 mm layer of its own class: the layer is 0-3 mm thick (70 %; else the anatomy's 2 mm), what lies
    beyond it is muscle, fat or fluid in patches of 4-15 mm, and a fluid film of 0.2-0.8 mm lines the
    cartilage in 40 % of the volumes."""
    out = codes.copy()
    if not shell.index.size:
        return out
    thickness = rng.uniform(0.0, 3.0) if rng.random() < 0.7 else an.JOINT_MM
    cell_mm = rng.uniform(4.0, 15.0)
    cells = np.floor(shell.ijk * (np.asarray(spacing_kji, np.float32)[:, None] / cell_mm)).astype(np.int64)
    cells -= cells.min(axis=1, keepdims=True)
    dims = cells.max(axis=1) + 1
    table = rng.choice(np.array([an.MUSCLE, an.FAT, an.FLUID], np.uint8), size=int(np.prod(dims)), p=[0.5, 0.35, 0.15])
    beyond = table[np.ravel_multi_index(tuple(cells), tuple(int(v) for v in dims))]
    new = np.where(shell.distance_mm <= thickness, np.uint8(an.JOINT), beyond)
    if rng.random() < 0.4:
        new = np.where(shell.distance_mm <= rng.uniform(0.2, 0.8), np.uint8(an.FLUID), new)
    out.reshape(-1)[shell.index] = new
    return out


def random_grid(rng: np.random.Generator, base: Optional[sm.PhantomParameters] = None) -> sm.PhantomParameters:
    """A random sagittal acquisition grid (see the module docstring)."""
    base = base or sm.PhantomParameters()
    px = rng.uniform(0.25, 0.6)
    ni = int(np.clip(rng.integers(256, 449), 160 / px * 0.5, 200 / px))
    nj = int(np.clip(rng.integers(192, 449), 100 / px, 200 / px))
    thick = rng.uniform(1.0, 4.0)
    gap = thick * rng.uniform(0.0, 0.5) if rng.random() < 0.6 else 0.0
    coverage = rng.uniform(60.0, 110.0)
    n_slices = int(np.clip(round(coverage / (thick + gap)), 12, 48))
    return replace(base, matrix=(ni, nj), fov_mm=(ni * px, nj * px * rng.uniform(0.9, 1.1)),
                   n_slices=n_slices, slice_thickness_mm=float(thick), slice_gap_mm=float(gap),
                   slice_direction=str(rng.choice(["left", "right"])), swap_inplane=bool(rng.random() < 0.2),
                   rotation_deg=(float(rng.uniform(-15, 15)), float(rng.uniform(-8, 8)), float(rng.uniform(-8, 8))),
                   centre_offset_mm=tuple(float(v) for v in rng.normal(0.0, 10.0, 3)))


@dataclass
class FractionVolume:
    """Class counts of one random grid of one knee, kept for many random appearances."""

    counts: np.ndarray  # uint8 [nk, nj, ni, N_CLASSES] on the acquisition grid
    n_points: int
    params: sm.PhantomParameters
    geometry: object
    fraction: np.ndarray  # float16 femoral cartilage fraction, network layout [slice, row, col]
    anatomy: str

    @property
    def nbytes(self) -> int:
        return int(self.counts.nbytes + self.fraction.nbytes)


def sample_volume(anat: an.KneeAnatomy, codes: np.ndarray, rng: np.random.Generator,
                  params: Optional[sm.PhantomParameters] = None, shell: Optional[JointShell] = None
                  ) -> FractionVolume:
    """Class counts of ``anat`` on a random grid (``params`` fixes the grid instead; ``shell``: the
    joint shell redrawn by :func:`vary_joint_shell`)."""
    if shell is not None:
        sp = anat.geometry.spacing
        codes = vary_joint_shell(codes, shell, (float(sp[2]), float(sp[1]), float(sp[0])), rng)
    for _ in range(5):
        p = params or random_grid(rng)
        geometry = sm.mese_geometry(anat.femoral_centroid_ras(), p)
        sub = subsamples_for(geometry.spacing, float(min(anat.geometry.spacing)), p.slice_thickness_mm)
        sub = (sub[0], sub[1], max(sub[2], 2))  # at least 2 points through every slice
        offsets = slab_offsets(sub, p.slice_thickness_mm, float(geometry.spacing[2]),
                               PROFILES[int(rng.integers(len(PROFILES)))] if params is None else "box")
        counts = tissue_counts(codes, anat.geometry, geometry, N_CLASSES, offsets, outside_code=an.AIR)
        fem = (counts[..., an.FC].astype(np.float32) + counts[..., FC_SUPERFICIAL]) / offsets.shape[0]
        if (fem >= 0.5).any() or params is not None:
            layout = sagittal_layout(geometry)
            return FractionVolume(counts, int(offsets.shape[0]), p, geometry,
                                  np.ascontiguousarray(layout.to_canonical(fem).astype(np.float16)),
                                  anat.subject_id or anat.source)
    raise InputError(f"Could not place a field of view on the femoral cartilage of {anat.source}.")


def random_echo_times(rng: np.random.Generator, n: int) -> Tuple[float, ...]:
    te1, dte = rng.uniform(6.0, 15.0), rng.uniform(6.0, 15.0)
    return tuple(float(te1 + k * dte) for k in range(n))


def render_volume(vol: FractionVolume, rng: np.random.Generator, n_echoes: int = 3,
                  prior: Optional[ap.AppearancePrior] = None, echo_times_ms=None):
    """(echoes float32 [E, nk, nj, ni] on the acquisition grid, echo times, reference signal, appearance)."""
    te = tuple(echo_times_ms) if echo_times_ms is not None else random_echo_times(rng, n_echoes)
    look = ap.draw_appearance(rng, KINDS, prior)
    sp = vol.geometry.spacing
    echoes = ap.render(vol.counts, vol.n_points, look, te, (float(sp[2]), float(sp[1]), float(sp[0])))
    first = echoes[0]
    hi = float(np.percentile(first, 99))
    fg = first[first > 0.05 * hi]
    reference = float(fg.mean()) if fg.size and hi > 0 else 1.0
    return echoes, te, reference, look


def noisy_series(vol: FractionVolume, rng: np.random.Generator, snr: float, rician: bool = True,
                 n_echoes: int = 4, prior: Optional[ap.AppearancePrior] = None, name: str = "") -> Tuple[MeseSeries, float]:
    """A complete noisy series (for validation): random appearance, noise at ``snr`` of the foreground mean."""
    echoes, te, reference, _ = render_volume(vol, rng, n_echoes, prior)
    sigma = reference / snr
    n1 = rng.standard_normal(echoes.shape, dtype=np.float32) * np.float32(sigma)
    if rician:
        n2 = rng.standard_normal(echoes.shape, dtype=np.float32) * np.float32(sigma)
        echoes = np.sqrt((echoes + n1) ** 2 + n2 ** 2)
    else:
        echoes = np.abs(echoes + n1)
    series = MeseSeries(Image(echoes.astype(np.float32), vol.geometry), np.asarray(te, np.float64), None, "",
                        vol.anatomy, name or f"randomised MESE of {vol.anatomy}")
    return series, float(sigma)


def femoral_truth(vol: FractionVolume) -> np.ndarray:
    """Femoral cartilage mask (fraction >= 0.5) on the acquisition grid."""
    fem = vol.counts[..., an.FC].astype(np.float32) + vol.counts[..., FC_SUPERFICIAL]
    return fem / vol.n_points >= 0.5


def snr_draw(rng: np.random.Generator) -> float:
    return float(math.exp(rng.uniform(math.log(10.0), math.log(100.0))))
