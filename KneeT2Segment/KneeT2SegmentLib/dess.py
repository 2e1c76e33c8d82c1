"""DESS-like 3D knee volumes from a knee label map (numeric core), for the morphometry networks.

Morales et al. segment bone and cartilage on the OAI's sagittal 3D water-excitation DESS
(0.365 x 0.365 mm pixels, 0.7 mm slices). No such images are available to the project, only
label maps, so the training and test images are simulated by the shared generator
(:mod:`mskquant.synth`) from the tissue codes of :func:`.anatomy.prepare_anatomy` (marrow,
cortex, the three cartilages, muscle, subcutaneous fat, joint fluid, joint soft tissue):

* grid (:func:`random_dess_geometry`): pixels 0.3-0.45 mm, slices 0.6-0.9 mm (box or
  Gaussian profile, partial volume from several points per voxel), field of view 120-160 mm,
  sagittal with +-15 deg rotation in plane and +-8 deg out of it - or, for
  ``orientation="any"``, also coronal and axial 3D acquisitions - with the slice axis on any
  array axis and any axis signs, so that consumers must read the orientation from the
  direction matrix;
* appearance: with probability ``dess_fraction`` the DESS prior (:data:`DESS_SIGNAL`: water
  excitation - fluid brightest, cartilage bright, muscle intermediate, fat and marrow
  suppressed, cortex and menisci dark), otherwise the generator's own priors (MR-like or
  fully random contrasts, SynthSeg's domain randomisation); texture, bias field, blur and
  gamma on top (:func:`mskquant.synth.appearance.render`);
* noise: Rician (or Gaussian) at a signal-to-noise ratio of 8-60 relative to the foreground mean.

Labels (0-6, :mod:`.morphometry.labels`) are on the image's grid, the label with the largest
partial-volume fraction in each voxel. :func:`native_grid_dess` renders on the label map's
own grid (one tissue per voxel, no partial volume): the high-resolution reference for
through-plane super-resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Tuple, Union

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Geometry, Image
from mskquant.synth import appearance as ap
from mskquant.synth.sampling import PROFILES, slab_offsets, subsamples_for, tissue_counts

from . import anatomy as an
from .morphometry.labels import N_LABELS, tissue_labels

# appearance kind of each anatomy tissue code (an.AIR ... an.JOINT)
KINDS = ("air", "marrow", "cortex", "marrow", "cortex", "marrow", "cortex", "cartilage_deep", "cartilage_deep",
         "cartilage_deep", "muscle", "fat", "fluid", "fibrous")
# water-excitation DESS signal per kind (relative to fluid ~1; wide on purpose)
DESS_SIGNAL = {"air": (0.0, 0.02), "marrow": (0.03, 0.15), "cortex": (0.0, 0.05), "cartilage_deep": (0.4, 0.75),
               "muscle": (0.15, 0.35), "fat": (0.02, 0.12), "fluid": (0.8, 1.0), "fibrous": (0.02, 0.12)}
PIXEL_MM = (0.3, 0.45)
SLICE_MM = (0.6, 0.9)
FOV_MM = (120.0, 160.0)
MAX_MATRIX = 448
MAX_SLICES = 192
ORIENTATIONS = ("sagittal", "coronal", "axial")
_SLICE_AXIS_RAS = {"sagittal": 0, "coronal": 1, "axial": 2}
_COVERAGE_MM = {"sagittal": (90.0, 120.0), "coronal": (80.0, 110.0), "axial": (100.0, 140.0)}


@dataclass
class DessPrior:
    """Ranges of the randomisation of :func:`simulate_dess`."""

    dess_fraction: float = 0.5  # share of volumes with the DESS prior (the rest: the generator's priors)
    appearance: ap.AppearancePrior = field(default_factory=ap.AppearancePrior)
    snr: Tuple[float, float] = (8.0, 60.0)  # log-uniform
    rician_probability: float = 0.8


# the fixed DESS look (randomise=False): mild texture and bias, no blur or gamma
PLAIN = ap.AppearancePrior(random_fraction=0.0, texture_sd=(0.0, 0.06), bias_sd=(0.0, 0.12), blur_probability=0.0,
                           gamma_log_sd=0.0, air_signal_probability=0.0)


@dataclass
class DessVolume:
    image: Image  # float32 [k, j, i]
    labels: Image  # uint8 0-6 on the same grid
    fractions: Optional[np.ndarray]  # float16 [k, j, i, 7] label fractions (when asked for)
    slice_thickness_mm: float
    orientation: str
    prior: str  # "dess", "physical" or "random"
    snr: float
    sigma: float
    subject_id: Optional[str] = None


# --- grid ---------------------------------------------------------------------------------------------
def _rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = math.radians(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * (k @ k)


def random_dess_geometry(centre_ras, rng: np.random.Generator, orientation: str = "sagittal",
                         rotation_deg: Tuple[float, float] = (15.0, 8.0)) -> Tuple[Geometry, float]:
    """A random 3D DESS-like grid about ``centre_ras`` and its slice thickness (mm).

    ``orientation`` is one of :data:`ORIENTATIONS` or ``"any"`` (sagittal 70 %, coronal and
    axial 15 % each). The slice axis lands on a random array axis, every axis sign is random.
    """
    if orientation == "any":
        orientation = str(rng.choice(ORIENTATIONS, p=[0.7, 0.15, 0.15]))
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS} or 'any', not {orientation!r}")
    s_axis = _SLICE_AXIS_RAS[orientation]
    plane = [a for a in range(3) if a != s_axis]
    eye = np.eye(3)
    normal = eye[s_axis] * rng.choice([-1.0, 1.0])
    u, v = (eye[a] * rng.choice([-1.0, 1.0]) for a in (plane if rng.random() < 0.5 else plane[::-1]))
    rot = _rotation(normal, rng.uniform(-rotation_deg[0], rotation_deg[0]))
    rot = _rotation(u, rng.uniform(-rotation_deg[1], rotation_deg[1])) @ rot
    rot = _rotation(v, rng.uniform(-rotation_deg[1], rotation_deg[1])) @ rot
    px = rng.uniform(*PIXEL_MM)
    thick = rng.uniform(*SLICE_MM)
    fov = rng.uniform(*FOV_MM)
    n_plane = int(min(MAX_MATRIX, round(fov / px)))
    n_slices = int(min(MAX_SLICES, round(rng.uniform(*_COVERAGE_MM[orientation]) / thick)))
    # array axes i, j, k: the slice direction on a random one of them
    dirs = [rot @ u, rot @ v, rot @ normal]
    spacing = [px, px * rng.uniform(0.95, 1.05), thick]
    shape = [n_plane, int(min(MAX_MATRIX, round(n_plane * rng.uniform(0.85, 1.0)))), n_slices]
    order = [int(x) for x in rng.permutation(3)]
    d = np.stack([dirs[o] for o in order], axis=1)
    sp = np.array([spacing[o] for o in order])
    sh = [shape[o] for o in order]
    centre = np.asarray(centre_ras, float) + rng.normal(0.0, 8.0, 3)
    origin = centre - d @ ((np.asarray(sh, float) - 1.0) / 2.0 * sp)
    return Geometry.from_spacing(sh, sp, origin, d), float(thick)


def slice_axis_of(geometry: Geometry, thickness_mm: float) -> int:
    """The array axis ``0 k, 1 j, 2 i`` with the largest spacing (the acquired slices)."""
    sp = geometry.spacing
    return int(np.argmax([sp[2], sp[1], sp[0]]))


# --- sampling and rendering ----------------------------------------------------------------------------
def sample_counts(anat: an.KneeAnatomy, geometry: Geometry, thickness_mm: float, rng: Optional[np.random.Generator],
                  slice_spacing_mm: Optional[float] = None, progress=None) -> Tuple[np.ndarray, int]:
    """Tissue-code counts ``uint8 [k, j, i, 14]`` of ``geometry`` (slices along its k axis) and points per voxel."""
    sp = geometry.spacing
    spacing_k = float(slice_spacing_mm or sp[2])
    sub = subsamples_for(sp, float(min(anat.geometry.spacing)), thickness_mm)
    sub = (sub[0], sub[1], max(sub[2], 3))  # odd: few ties between two labels
    profile = PROFILES[int(rng.integers(len(PROFILES)))] if rng is not None else "box"
    offsets = slab_offsets(sub, thickness_mm, spacing_k, profile)
    counts = tissue_counts(anat.tissue, anat.geometry, geometry, an.N_TISSUES, offsets, progress,
                           outside_code=an.AIR)
    return counts, int(offsets.shape[0])


def label_counts(counts: np.ndarray) -> np.ndarray:
    """Counts per label ``uint8 [..., 7]`` from tissue-code counts ``[..., 14]``."""
    out = np.zeros(counts.shape[:-1] + (N_LABELS,), np.uint8)
    for code in range(an.N_TISSUES):
        out[..., an.TISSUE_TO_LABEL[code]] += counts[..., code]
    return out


def labels_from_counts(counts: np.ndarray) -> np.ndarray:
    """The label with the largest fraction per voxel (ties: the lower label), uint8."""
    out = np.empty(counts.shape[:-1], np.uint8)
    for k in range(counts.shape[0]):  # slice by slice: small temporaries
        out[k] = np.argmax(label_counts(counts[k]), axis=-1)
    return out


def draw_look(rng: np.random.Generator, randomise: bool, prior: Optional[DessPrior] = None
              ) -> Tuple[ap.Appearance, Tuple[float, ...], str]:
    """(appearance, echo time, prior name): the DESS prior or one of the generator's own."""
    prior = prior or DessPrior()
    look = ap.draw_appearance(rng, KINDS, prior.appearance if randomise else PLAIN)
    if randomise and rng.random() >= prior.dess_fraction:
        return look, (float(rng.uniform(0.0, 30.0)),), look.prior
    look.pd = np.array([rng.uniform(*DESS_SIGNAL[k]) for k in KINDS])
    look.pd[list(an.CARTILAGE_TISSUES)] = look.pd[an.FC] * rng.uniform(0.9, 1.1, 3)  # one tissue, one signal
    look.t2_ms = np.full(len(KINDS), 1e6)  # echo at TE 0: the signal is the drawn value
    look.prior = "dess"
    return look, (0.0,), "dess"


def render_counts(counts: np.ndarray, n_points: int, spacing_kji, rng: np.random.Generator, randomise: bool = True,
                  snr: Optional[float] = None, prior: Optional[DessPrior] = None
                  ) -> Tuple[np.ndarray, str, float, float]:
    """(noisy image float32 [k, j, i], prior name, snr, noise sigma) of a count volume."""
    prior = prior or DessPrior()
    look, te, name = draw_look(rng, randomise, prior)
    clean = ap.render(counts, n_points, look, te, spacing_kji)[0]
    if snr is None:
        snr = float(math.exp(rng.uniform(*np.log(prior.snr)))) if randomise else 30.0
    hi = float(np.percentile(clean, 99))
    fg = clean[clean > 0.05 * hi]
    reference = float(fg.mean()) if fg.size and hi > 0 else 1.0
    sigma = reference / float(snr)
    noisy = clean + rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma)
    if not randomise or rng.random() < prior.rician_probability:
        n2 = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma)
        noisy = np.sqrt(noisy ** 2 + n2 ** 2)
    else:
        noisy = np.abs(noisy)
    return noisy.astype(np.float32), name, float(snr), float(sigma)


def _spacing_kji(g: Geometry):
    sp = g.spacing
    return float(sp[2]), float(sp[1]), float(sp[0])


def _slices_last(geometry: Geometry, axis_kji: int) -> Tuple[Geometry, Tuple[int, int, int]]:
    """The same grid with the slice axis as k (for sampling), and the array permutation back."""
    ijk = 2 - axis_kji  # array axis kji -> ijk index
    order = [a for a in range(3) if a != ijk] + [ijk]
    m = np.eye(4)
    m[:3, :3] = geometry.ijk_to_ras[:3, :3][:, order]
    m[:3, 3] = geometry.ijk_to_ras[:3, 3]
    g = Geometry(tuple(geometry.shape_ijk[o] for o in order), m)
    # array of g is [k', j', i'] = ijk axes order[2], order[1], order[0]; back to [k, j, i]
    kji_of = [2 - order[2], 2 - order[1], 2 - order[0]]
    return g, tuple(int(np.argsort(kji_of)[a]) for a in range(3))  # type: ignore[return-value]


def simulate_dess(anat: an.KneeAnatomy, rng: np.random.Generator, geometry: Optional[Geometry] = None,
                  randomise: bool = True, snr: Optional[float] = None, orientation: str = "sagittal",
                  slice_thickness_mm: Optional[float] = None, keep_fractions: bool = False,
                  prior: Optional[DessPrior] = None, progress=None) -> DessVolume:
    """A DESS-like volume of ``anat`` with its labels on the same grid.

    ``geometry`` fixes the grid (its thickest axis is the slice axis, thickness = its spacing
    unless ``slice_thickness_mm``); otherwise a random grid (:func:`random_dess_geometry`).
    ``randomise=False`` gives the plain DESS look (the DESS prior, mild texture and bias, SNR
    30 unless ``snr``); ``True`` the domain-randomised mixture.
    """
    if geometry is None:
        geometry, thick = random_dess_geometry(anat.femoral_centroid_ras(), rng, orientation)
    else:
        sp = _spacing_kji(geometry)
        thick = float(slice_thickness_mm or max(sp))
    axis = slice_axis_of(geometry, thick)
    work, back = _slices_last(geometry, axis)
    counts, n_points = sample_counts(anat, work, thick, rng if randomise else None, progress=progress)
    labels = np.transpose(labels_from_counts(counts), back)
    image, name, snr_used, sigma = render_counts(counts, n_points, _spacing_kji(work), rng, randomise, snr, prior)
    fractions = None
    if keep_fractions:
        fractions = np.empty(counts.shape[:3] + (N_LABELS,), np.float16)
        for k in range(counts.shape[0]):
            fractions[k] = label_counts(counts[k]).astype(np.float16) / np.float16(n_points)
        fractions = np.ascontiguousarray(np.transpose(fractions, back + (3,)))
    del counts
    image = np.ascontiguousarray(np.transpose(image, back))
    labels = np.ascontiguousarray(labels)
    orient = ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(geometry.directions[:, 2 - axis])))]
    return DessVolume(Image(image, geometry), Image(labels, geometry), fractions, thick, orient, name, snr_used,
                      sigma, anat.subject_id)


def native_grid_dess(source: Union[an.KneeAnatomy, Image], rng: np.random.Generator, randomise: bool = False,
                     snr: Optional[float] = None, prior: Optional[DessPrior] = None) -> DessVolume:
    """A DESS-like volume on the label map's own grid (one tissue per voxel, labels exact).

    ``source`` is a prepared anatomy or a label map Image (labels 7-9 read as their bone).
    """
    anat = source if isinstance(source, an.KneeAnatomy) else prepare_dess_anatomy(source)
    codes = anat.tissue
    counts = np.zeros(codes.shape + (an.N_TISSUES,), np.uint8)
    for c in range(an.N_TISSUES):
        counts[..., c] = codes == c
    image, name, snr_used, sigma = render_counts(counts, 1, _spacing_kji(anat.geometry), rng, randomise, snr, prior)
    del counts
    labels = an.TISSUE_TO_LABEL[codes]
    sp = _spacing_kji(anat.geometry)
    axis = int(np.argmax(sp))
    orient = ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(anat.geometry.directions[:, 2 - axis])))]
    return DessVolume(Image(image, anat.geometry), Image(labels.astype(np.uint8), anat.geometry), None, float(max(sp)),
                      orient, name, snr_used, sigma, anat.subject_id)


def prepare_dess_anatomy(label_image: Image, subject_id: Optional[str] = None, source: str = "") -> an.KneeAnatomy:
    """:func:`.anatomy.prepare_anatomy` of a label map whose bone-lesion labels (7-9) count as their bone."""
    labels = np.asarray(label_image.array)
    if labels.ndim != 3:
        raise InputError(f"The knee label map has {labels.ndim} dimensions: give a 3D label map (0-6, or 7-9 lesions).")
    return an.prepare_anatomy(Image(tissue_labels(labels), label_image.geometry), subject_id=subject_id,
                              source=source)


def load_dess_anatomy(path) -> an.KneeAnatomy:
    """The anatomy of a label-map file (subject id = the file name's leading digits and time point)."""
    import re
    from pathlib import Path

    from mskquant.imageio import read_image

    path = Path(path)
    m = re.match(r"(\d+(_\d+m)?)", path.name)
    return prepare_dess_anatomy(read_image(path, "Knee label map"), m.group(1) if m else path.name.split(".")[0],
                                str(path))
