"""Pre-processing of one sagittal knee MRI for the Siamese pain network (numeric core, no Slicer).

Implements Chang et al., "Pairwise learning of MRI scans using a convolutional Siamese network
for prediction of knee pain", Methods, *Image registration and quality check* and Figure 1:

1. **Centre slice.** The paper picked by hand the slice with the most complete view of the
   posterior cruciate ligament (PCL). Here it is given (panel / ``--center-left K``) or
   estimated automatically by :func:`estimate_centre` — the slice whose neighbourhood best
   matches the model's template slice by slice (the template's centre slice is a PCL /
   intercondylar-notch slice), i.e. the paper's template used to index the slices as well.
2. **23 slices, centre ± 11**, "+" lateral and "−" medial. Which way lateral lies is read from
   the image direction matrix (the sagittal slice axis and its sign in RAS) and the knee's side,
   so the left knee is mirrored and both knees are indexed alike. Inputs whose slice spacing
   differs from the model's (3 mm in the paper) by more than 15 % are sampled at the model's
   spacing by linear interpolation between slices, with a warning.
3. **Rigid in-plane alignment of each slice to a template** (the paper's Euclidean transform):
   masked normalised cross-correlation over translations (FFT) and a fan of rotations, at
   1.5 mm pixels, with sub-pixel / sub-angle refinement. Slices whose estimate is an outlier
   from the knee's median (or scores poorly) take the median transform, because a knee moves
   as one body between slices.
4. **Crop 105 mm x 105 mm at the joint** (the paper's 294 x 294 pixels of 0.357 mm) and
   **resize to 224 x 224** (0.469 mm pixels) in one bilinear resampling through the alignment.
5. **Intensities to [0, 1]** per knee (:func:`normalise_intensities`): air at 0 and the median
   tissue intensity of the 23 crops at 0.25, clipped at 1 — a scale a lesion cannot move.

Coordinates: a slice's in-plane position is described in the patient's sagittal plane as
``(u, v)`` mm = (towards inferior, towards posterior): rows run top to bottom and columns
anterior to posterior, as in Slicer's sagittal view. Template coordinates have the same axes
with the joint centre at the origin; the alignment maps template to slice: ``p = R(θ) q + t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from mskquant.errors import InputError
from mskquant.image import SAGITTAL_MAX_OBLIQUITY_DEG, Geometry, Image, sagittal_obliquity_warnings
from mskquant.progress import Progress, as_progress

if TYPE_CHECKING:  # the localiser imports this module; only its types are needed here
    from .localiser import JointEstimate, JointLocaliser

N_PLANES = 23  # centre ± 11 (paper)
HALF = N_PLANES // 2
MODEL_SLICE_SPACING_MM = 3.0  # OAI SAG IW TSE slice thickness (paper)
CROP_MM = 105.0  # 294 px x 0.357 mm (paper)
INPUT_PX = 224
PIXEL_MM = CROP_MM / INPUT_PX
COARSE_MM = 1.5  # registration grid
CENTRE_MM = 2.5  # grid of the centre-slice search (through-plane matching needs less detail)
MATCH_CLIP_PERCENTILE = 75.0
TYPICAL_TISSUE_LEVEL = 0.25  # where the median foreground intensity lands in [0, 1]
ROTATIONS_DEG = tuple(np.arange(-12.0, 12.01, 3.0))
SPACING_TOLERANCE = 0.15
SIDES = ("left", "right")
FFT_WORKERS = 2
JOINT_WINDOW_MM = 10.0  # the template's joint kept this close to the joint the localiser finds


# --- the knee's frame: which axis is sagittal, which way is lateral --------------------------
@dataclass(frozen=True)
class KneeFrame:
    """How a volume's voxel grid maps onto the knee's sagittal slices.

    ``slice_axis`` is the array axis (of ``[k, j, i]``) along which sagittal slices are stacked;
    ``lateral_step`` is +1 when increasing slice index moves laterally, -1 when medially.
    """

    side: str
    geometry: Geometry
    slice_axis: int
    lateral_step: int
    slice_spacing_mm: float
    obliquity_deg: float = 0.0

    @property
    def n_slices(self) -> int:
        return self.geometry.shape_kji[self.slice_axis]

    @property
    def in_plane_axes(self) -> Tuple[int, int]:
        a, b = [ax for ax in range(3) if ax != self.slice_axis]
        return a, b

    @property
    def plane_step(self) -> float:
        """Input slices per model plane (1.0 when the spacing matches the model's)."""
        ratio = MODEL_SLICE_SPACING_MM / self.slice_spacing_mm
        return 1.0 if abs(ratio - 1.0) <= SPACING_TOLERANCE else ratio

    def slice_affine(self, index: float) -> Tuple[np.ndarray, np.ndarray]:
        """2x2 matrix and offset mapping a slice's pixel (row, column) to ``(u, v)`` mm."""
        m = self.geometry.ijk_to_ras
        a, b = self.in_plane_axes
        # array axis n is ijk axis 2 - n
        cols = [m[:3, 2 - a], m[:3, 2 - b]]
        proj = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])  # RAS -> (inferior, posterior)
        A = proj @ np.stack(cols, axis=1)
        c = proj @ (m[:3, 3] + m[:3, 2 - self.slice_axis] * index)
        return A, c

    def field_centre_uv(self, index: float) -> np.ndarray:
        """``(u, v)`` mm of the middle of slice ``index``'s field of view."""
        a, b = self.in_plane_axes
        A, c = self.slice_affine(float(index))
        shape = self.geometry.shape_kji
        return A @ np.array([(shape[a] - 1) / 2, (shape[b] - 1) / 2]) + c

    def plane_indices(self, centre: float) -> np.ndarray:
        """Input slice index (possibly fractional) of each model plane, lateral offsets positive."""
        offsets = np.arange(-HALF, HALF + 1, dtype=float)
        return centre + self.lateral_step * offsets * self.plane_step

    def valid_centres(self) -> Tuple[int, int]:
        """Smallest and largest centre index for which all 23 planes lie inside the volume."""
        reach = HALF * self.plane_step
        lo = int(math.ceil(reach - 1e-6))
        hi = int(math.floor(self.n_slices - 1 - reach + 1e-6))
        return lo, hi


def _plane_name(direction: np.ndarray) -> Tuple[str, str]:
    axis = int(np.argmax(np.abs(direction)))
    return (("sagittal", "left-right"), ("coronal", "anterior-posterior"), ("axial", "superior-inferior"))[axis]


def knee_frame(geometry: Geometry, side: str, what: str = "Knee") -> KneeFrame:
    """The sagittal slice axis and lateral direction of a knee volume, or one clear error.

    The slice axis is the image axis with clearly the largest spacing (a 2D multi-slice scan),
    else the k axis (the stacking axis of a 3D or isotropic scan). It must lie within 40 degrees
    of left-right (mskquant.image.SAGITTAL_MAX_OBLIQUITY_DEG; warned from 25) for the volume to be sagittal.
    """
    if side not in SIDES:
        raise ValueError(f"side must be 'left' or 'right', not {side!r}")
    spacing = geometry.spacing
    order = np.argsort(spacing)
    slice_ijk = int(order[2]) if spacing[order[2]] > 1.1 * spacing[order[1]] else 2
    d = geometry.directions[:, slice_ijk]
    tilt = math.degrees(math.acos(min(1.0, abs(float(d[0])))))
    if tilt > SAGITTAL_MAX_OBLIQUITY_DEG:
        plane, along = _plane_name(d)
        raise InputError(
            f"The {what} volume is not sagittal: its slices are stacked along {along} ({plane} images, "
            f"{tilt:.0f} degrees from left-right): load the sagittal series (slices stacked left to right).")
    lateral_world = 1.0 if side == "right" else -1.0  # lateral is patient right for a right knee
    step = 1 if float(d[0]) * lateral_world > 0 else -1
    return KneeFrame(side, geometry, 2 - slice_ijk, step, float(spacing[slice_ijk]), tilt)


# --- slices ----------------------------------------------------------------------------------
def take_plane(array_kji: np.ndarray, frame: KneeFrame, index: float) -> np.ndarray:
    """One sagittal plane, linearly interpolated between slices at a fractional index."""
    n = frame.n_slices
    lo = int(math.floor(index))
    w = index - lo
    if w < 1e-6 or lo + 1 >= n:
        return np.take(array_kji, min(max(lo, 0), n - 1), axis=frame.slice_axis).astype(np.float32)
    a = np.take(array_kji, lo, axis=frame.slice_axis).astype(np.float32)
    b = np.take(array_kji, lo + 1, axis=frame.slice_axis).astype(np.float32)
    return (1.0 - w) * a + w * b


@dataclass
class CoarseStack:
    """All slices of one knee on a common (u, v) grid of 1.5 mm pixels (for matching)."""

    images: np.ndarray  # (n, H, W) float32
    origin_uv: np.ndarray  # (u, v) mm of pixel (0, 0)
    pixel_mm: float = COARSE_MM


def _block_mean(img: np.ndarray, fa: int, fb: int) -> np.ndarray:
    if fa == 1 and fb == 1:
        return img
    h = (img.shape[0] // fa) * fa
    w = (img.shape[1] // fb) * fb
    return img[:h, :w].reshape(h // fa, fa, w // fb, fb).mean(axis=(1, 3))


def coarse_stack(array_kji: np.ndarray, frame: KneeFrame, pixel_mm: float = COARSE_MM) -> CoarseStack:
    """Every slice resampled onto one canonical (u, v) grid at ``pixel_mm``."""
    n = frame.n_slices
    a_ax, b_ax = frame.in_plane_axes
    shape2 = (array_kji.shape[a_ax], array_kji.shape[b_ax])
    A, _ = frame.slice_affine(0)
    sp = np.linalg.norm(A, axis=0)  # mm per row / column
    fa, fb = (max(1, int(pixel_mm / s + 1e-6)) for s in sp)  # block-average fine images first
    # bounding box of every slice's corners in (u, v)
    corners = []
    for idx in (0, n - 1):
        A, c = frame.slice_affine(idx)
        for r in (-0.5, shape2[0] - 0.5):
            for q in (-0.5, shape2[1] - 0.5):
                corners.append(A @ np.array([r, q]) + c)
    corners = np.array(corners)
    lo = corners.min(axis=0)
    hi = corners.max(axis=0)
    size = np.ceil((hi - lo) / pixel_mm).astype(int)
    origin = lo + pixel_mm / 2
    out = np.zeros((n, size[0], size[1]), np.float32)
    for idx in range(n):
        sl = np.take(array_kji, idx, axis=frame.slice_axis).astype(np.float32)
        small = _block_mean(sl, fa, fb)
        A, c = frame.slice_affine(idx)
        # block-mean pixel (r', q') has centre at original ((r'+0.5)fa - 0.5, ...)
        Ab = A @ np.diag([fa, fb])
        cb = c + A @ np.array([(fa - 1) / 2.0, (fb - 1) / 2.0])
        # output pixel (y, x) -> (u, v) = origin + pixel_mm (y, x) -> small pixel = Ab^-1 ((u, v) - cb)
        inv = np.linalg.inv(Ab)
        matrix = inv * pixel_mm
        offset = inv @ (origin - cb)
        out[idx] = ndimage.affine_transform(small, matrix, offset, output_shape=tuple(size), order=1,
                                            mode="constant", cval=0.0, prefilter=False)
    return CoarseStack(compress_bright(out), origin, pixel_mm)


def compress_bright(images: np.ndarray, percentile: float = MATCH_CLIP_PERCENTILE) -> np.ndarray:
    """Clip intensities at a percentile of the foreground for matching.

    Fluid (an effusion above all) is the brightest thing in a fat-suppressed IW image; left
    as is, a large effusion dominates the correlation and drags the alignment off the joint.
    Clipped, matching follows the dark bones against the surrounding soft tissue instead.
    """
    fg = images[images > 0.1 * float(np.percentile(images, 99))] if images.size else images
    if fg.size == 0:
        return images
    return np.minimum(images, float(np.percentile(fg, percentile))).astype(np.float32)


def interpolate_stack(stack: CoarseStack, index: float) -> np.ndarray:
    n = stack.images.shape[0]
    lo = int(math.floor(index))
    w = index - lo
    if w < 1e-6 or lo + 1 >= n:
        return stack.images[min(max(lo, 0), n - 1)]
    return (1 - w) * stack.images[lo] + w * stack.images[lo + 1]


# --- template matching -------------------------------------------------------------------------
def _rotate_about_centre(img: np.ndarray, theta_rad: float) -> np.ndarray:
    """``out(q) = img(R(-θ) q)`` about the image centre: the image turned by +θ in (u, v)."""
    c = (np.asarray(img.shape, float) - 1) / 2
    rot_inv = np.array([[math.cos(theta_rad), math.sin(theta_rad)], [-math.sin(theta_rad), math.cos(theta_rad)]])
    return ndimage.affine_transform(img, rot_inv, c - rot_inv @ c, order=1, mode="constant", cval=0.0,
                                    prefilter=False)


class TemplateMatcher:
    """Masked normalised cross-correlation of coarse slices with the template's 23 slices.

    The template is the model's (23, 224, 224) array over the 105 mm field centred on the
    joint. Matching uses a disk of 105 mm diameter, so the window statistics are the same for
    every rotation and are computed once per slice.
    """

    def __init__(self, template: np.ndarray, pixel_mm: float = COARSE_MM,
                 rotations_deg: Sequence[float] = ROTATIONS_DEG) -> None:
        template = np.asarray(template, np.float32)
        if template.ndim != 3 or template.shape[0] != N_PLANES:
            raise ValueError(f"template must be ({N_PLANES}, H, W), not {template.shape}")
        self.pixel_mm = pixel_mm
        self.rotations = np.radians(np.asarray(rotations_deg, float))
        size = int(round(CROP_MM / pixel_mm))
        if size % 2 == 0:
            size += 1  # odd: the centre is a pixel centre
        self.size = size
        src_mm = CROP_MM / template.shape[1]
        f = max(1, int(pixel_mm / src_mm + 1e-6))
        # coarse pixel y <-> q = (y - c_out) pixel_mm <-> template pixel p = (q + CROP/2) / src_mm - 0.5
        # <-> block b = (p - (f - 1) / 2) / f
        c_out = (size - 1) / 2
        scale = pixel_mm / (src_mm * f)
        offset = ((-c_out * pixel_mm + CROP_MM / 2) / src_mm - 0.5 - (f - 1) / 2) / f
        coarse = []
        for t in template:
            small = _block_mean(t, f, f)
            coarse.append(ndimage.affine_transform(small, np.eye(2) * scale, np.full(2, offset),
                                                   output_shape=(size, size), order=1, mode="nearest",
                                                   prefilter=False))
        self.coarse = compress_bright(np.stack(coarse).astype(np.float32))
        yy, xx = np.mgrid[:size, :size]
        r = (size - 1) / 2
        self.mask = (((yy - r) ** 2 + (xx - r) ** 2) <= r * r).astype(np.float32)
        self.n_mask = float(self.mask.sum())
        self._kernels = {}  # (plane, angle index) -> normalised, masked template
        self._ffts = {}  # (plane, angle index, FFT shape) -> its transform

    def kernel(self, plane: int, angle_index: int) -> np.ndarray:
        key = (plane, angle_index)
        k = self._kernels.get(key)
        if k is None:
            t = self.coarse[plane]
            theta = float(self.rotations[angle_index])
            if theta != 0.0:
                t = _rotate_about_centre(t, theta)
            m = self.mask
            t = (t - (t * m).sum() / self.n_mask) * m
            norm = float(np.sqrt((t * t).sum()))
            k = t / norm if norm > 0 else t
            self._kernels[key] = k
        return k

    def kernel_fft(self, plane: int, angle_index: int, fshape) -> np.ndarray:
        key = (plane, angle_index, tuple(fshape))
        f = self._ffts.get(key)
        if f is None:
            f = sfft.rfft2(self.kernel(plane, angle_index)[::-1, ::-1], fshape)
            self._ffts[key] = f
        return f

    @property
    def zero_angle(self) -> int:
        return int(np.argmin(np.abs(self.rotations)))


class Template:
    """The model's template slices with the two matchers built from them (reuse across knees)."""

    def __init__(self, planes: np.ndarray) -> None:
        self.planes = np.asarray(planes, np.float32)
        self.align = TemplateMatcher(self.planes, COARSE_MM)
        self.centre = TemplateMatcher(self.planes, CENTRE_MM, rotations_deg=(0.0,))
        self._joints = {}  # localiser id -> JointEstimate of the template's own joint

    def joint(self, localiser: "JointLocaliser") -> "JointEstimate":
        """Where ``localiser`` finds the joint in the template ((down, back) mm from the crop centre)."""
        key = (localiser.model_id, localiser.version, id(localiser))
        if key not in self._joints:
            self._joints[key] = localiser.locate_in_crops(self.planes, PIXEL_MM)
        return self._joints[key]


class SliceCorrelator:
    """FFTs and window statistics of one coarse slice, reused for every template it meets."""

    def __init__(self, image: np.ndarray, matcher: TemplateMatcher, min_inside: float = 0.9) -> None:
        t = matcher.size
        pad = t // 2
        self.pad = pad
        img = np.pad(image.astype(np.float32), pad)
        self.shape = img.shape
        self.fshape = tuple(sfft.next_fast_len(s + t - 1, real=True) for s in img.shape)
        self.t = t
        self.F = sfft.rfft2(img, self.fshape)
        Fm = sfft.rfft2(matcher.mask[::-1, ::-1], self.fshape)
        s1 = self._valid(sfft.irfft2(self.F * Fm, self.fshape))
        s2 = self._valid(sfft.irfft2(sfft.rfft2(img * img, self.fshape) * Fm, self.fshape))
        var = s2 - s1 * s1 / matcher.n_mask
        floor = 0.05 * float(np.percentile(var, 90)) if var.size else 0.0
        # placements whose disk leaves the acquired field of view by more than 10 % are not
        # considered: the zero padding beyond the image would match the template's dark parts
        support = np.pad(np.ones(image.shape, np.float32), pad)
        inside = self._valid(sfft.irfft2(sfft.rfft2(support, self.fshape) * Fm, self.fshape)) / matcher.n_mask
        ok = (var > max(floor, 1e-12)) & (inside >= min_inside)
        self.denominator = np.where(ok, np.sqrt(np.maximum(var, 1e-12)), np.inf)

    def _valid(self, full: np.ndarray) -> np.ndarray:
        # correlation of img with kernel k (flipped for convolution): valid positions start at t-1
        t = self.t
        h, w = self.shape
        return full[t - 1:h, t - 1:w]

    def ncc(self, matcher: TemplateMatcher, plane: int, angle_index: int) -> np.ndarray:
        """NCC map over template placements (top-left corner in padded coordinates)."""
        Fk = matcher.kernel_fft(plane, angle_index, self.fshape)
        num = self._valid(sfft.irfft2(self.F * Fk, self.fshape))
        return num / self.denominator


def _parabolic(vm: float, v0: float, vp: float) -> float:
    d = vm - 2 * v0 + vp
    return 0.0 if d >= 0 else float(np.clip(0.5 * (vm - vp) / d, -0.5, 0.5))


@dataclass
class Alignment:
    """Template -> slice rigid transform ``p = R(theta) q + t`` in (u, v) mm, and its NCC score."""

    theta_rad: float
    t_uv: np.ndarray
    score: float
    replaced: bool = False

    def as_list(self) -> List[float]:
        return [math.degrees(self.theta_rad), float(self.t_uv[0]), float(self.t_uv[1]), self.score]


@dataclass(frozen=True)
class JointWindow:
    """Where the template may be placed: its own joint point ``template_q`` ((down, back) mm from the
    crop centre) must land within ``radius_mm`` of the knee's joint ``joint_uv`` found from the anatomy."""

    joint_uv: np.ndarray
    template_q: np.ndarray
    radius_mm: float = JOINT_WINDOW_MM

    def allowed(self, corr: SliceCorrelator, matcher: TemplateMatcher, origin_uv: np.ndarray, theta: float,
                shape: Tuple[int, int]) -> np.ndarray:
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        centre_t = np.asarray(self.joint_uv, float) - rot @ np.asarray(self.template_q, float)
        first = origin_uv + ((matcher.size - 1) / 2 - corr.pad) * matcher.pixel_mm  # t of map pixel (0, 0)
        yy = first[0] + matcher.pixel_mm * np.arange(shape[0])[:, None] - centre_t[0]
        xx = first[1] + matcher.pixel_mm * np.arange(shape[1])[None, :] - centre_t[1]
        return yy ** 2 + xx ** 2 <= self.radius_mm ** 2


def align_plane(corr: SliceCorrelator, matcher: TemplateMatcher, plane: int, origin_uv: np.ndarray,
                window: Optional[JointWindow] = None) -> Alignment:
    """Best rotation and translation of template slice ``plane`` within one coarse slice (with
    ``window``: only placements that keep the template's joint near the knee's joint)."""
    best = (-np.inf, 0, (0, 0))
    maps = []
    for a in range(len(matcher.rotations)):
        m = corr.ncc(matcher, plane, a)
        maps.append(m)
        search = m
        if window is not None:
            ok = window.allowed(corr, matcher, origin_uv, float(matcher.rotations[a]), m.shape)
            search = np.where(ok & np.isfinite(m), m, -np.inf)
        pos = np.unravel_index(int(np.argmax(search)), m.shape)
        if search[pos] > best[0]:
            best = (float(m[pos]), a, pos)
    if not np.isfinite(best[0]):  # nothing allowed inside the field of view: the window is dropped
        return align_plane(corr, matcher, plane, origin_uv, None)
    score, a, (y, x) = best
    m = maps[a]
    dy = _parabolic(m[y - 1, x], m[y, x], m[y + 1, x]) if 0 < y < m.shape[0] - 1 else 0.0
    dx = _parabolic(m[y, x - 1], m[y, x], m[y, x + 1]) if 0 < x < m.shape[1] - 1 else 0.0
    theta = float(matcher.rotations[a])
    if 0 < a < len(matcher.rotations) - 1:
        vals = [float(maps[b][y, x]) for b in (a - 1, a, a + 1)]
        step = float(matcher.rotations[a + 1] - matcher.rotations[a])
        theta += _parabolic(*vals) * step
    # template centre in padded coarse pixels -> (u, v)
    centre_px = np.array([y + dy, x + dx]) + (matcher.size - 1) / 2 - corr.pad
    t_uv = origin_uv + centre_px * matcher.pixel_mm
    return Alignment(theta, t_uv, score)


def regularise(alignments: List[Alignment], max_shift_mm: float = 6.0, max_angle_deg: float = 6.0,
               min_relative_score: float = 0.5) -> List[Alignment]:
    """Replace outlying per-slice transforms by the knee's median one."""
    th = np.array([a.theta_rad for a in alignments])
    t = np.array([a.t_uv for a in alignments])
    s = np.array([a.score for a in alignments])
    med_th = float(np.median(th))
    med_t = np.median(t, axis=0)
    med_s = float(np.median(s))
    out = []
    for a in alignments:
        bad = (np.linalg.norm(a.t_uv - med_t) > max_shift_mm or abs(a.theta_rad - med_th) > math.radians(max_angle_deg)
               or a.score < min_relative_score * med_s)
        out.append(Alignment(med_th, med_t.copy(), a.score, True) if bad else a)
    return out


# --- centre estimate ---------------------------------------------------------------------------
@dataclass
class CentreEstimate:
    centre: int
    score: float
    mirrored_score: float  # best score with the slice order reversed (the other knee's side)
    scores: np.ndarray  # score per candidate centre, NaN outside the valid range

    @property
    def laterality_margin(self) -> float:
        """> 0 when the knee matches the template better as the side it was given as."""
        return self.score - self.mirrored_score


def score_matrix(stack: CoarseStack, matcher: TemplateMatcher, progress: Optional[Progress] = None) -> np.ndarray:
    """``S[n, o]``: best NCC (no rotation) of input slice n with template plane o."""
    progress = as_progress(progress)
    n = stack.images.shape[0]
    S = np.zeros((n, N_PLANES), np.float32)
    a0 = matcher.zero_angle
    kernels = None
    for idx in range(n):
        if idx % 4 == 0:
            progress(idx / n, "Estimating the centre slice")
        corr = SliceCorrelator(stack.images[idx], matcher)
        if kernels is None:
            kernels = np.stack([matcher.kernel_fft(o, a0, corr.fshape) for o in range(N_PLANES)])
        # all 23 template planes at once: one batched inverse FFT (threads share the work)
        num = sfft.irfft2(corr.F[None] * kernels, corr.fshape, axes=(-2, -1), workers=FFT_WORKERS)
        t = corr.t
        h, w = corr.shape
        ncc = num[:, t - 1:h, t - 1:w] / corr.denominator[None]
        S[idx] = ncc.reshape(N_PLANES, -1).max(axis=1)
    return S


def _sample_rows(S: np.ndarray, rows: np.ndarray) -> np.ndarray:
    lo = np.floor(rows).astype(int)
    w = rows - lo
    hi = np.minimum(lo + 1, S.shape[0] - 1)
    cols = np.arange(S.shape[1])
    return (1 - w) * S[lo, cols] + w * S[hi, cols]


def estimate_centre(frame: KneeFrame, S: np.ndarray) -> CentreEstimate:
    """Centre slice whose 23-slice neighbourhood matches the template best (mean NCC)."""
    lo, hi = frame.valid_centres()
    scores = np.full(frame.n_slices, np.nan)
    mirrored = np.full(frame.n_slices, np.nan)
    offsets = np.arange(-HALF, HALF + 1, dtype=float) * frame.plane_step
    for c in range(lo, hi + 1):
        scores[c] = float(np.mean(_sample_rows(S, c + frame.lateral_step * offsets)))
        mirrored[c] = float(np.mean(_sample_rows(S, c - frame.lateral_step * offsets)))
    best = int(np.nanargmax(scores))
    return CentreEstimate(best, float(scores[best]), float(np.nanmax(mirrored)), scores)


# --- the whole step --------------------------------------------------------------------------
@dataclass
class PreparedKnee:
    """A knee ready for the network, with everything needed to map results back."""

    side: str
    frame: KneeFrame
    planes: np.ndarray  # (23, 224, 224) float32 in [0, 1], plane 0 = 11 slices medial
    centre_slice: int
    centre_source: str  # "given", "estimated" or "fixed"
    plane_indices: np.ndarray  # input slice index of each plane (fractional if resampled)
    alignments: List[Alignment]
    intensity_range: Tuple[float, float]
    centre_estimate: Optional[CentreEstimate] = None
    warnings: List[str] = field(default_factory=list)
    joint: Optional[dict] = None  # the joint localiser's estimates and whether they bounded the alignment

    def summary(self) -> dict:
        return {
            "side": self.side,
            "centre_slice": self.centre_slice,
            "centre_source": self.centre_source,
            "slice_axis_kji": self.frame.slice_axis,
            "lateral_step": self.frame.lateral_step,
            "slice_spacing_mm": self.frame.slice_spacing_mm,
            "plane_indices": [round(float(x), 3) for x in self.plane_indices],
            "alignment_deg_u_v_score": [[round(v, 3) for v in a.as_list()] for a in self.alignments],
            "alignments_replaced_by_median": int(sum(a.replaced for a in self.alignments)),
            "intensity_range": list(self.intensity_range),
            "laterality_margin": None if self.centre_estimate is None else self.centre_estimate.laterality_margin,
            "joint_localiser": self.joint,
        }


def crop_plane(plane: np.ndarray, A: np.ndarray, c: np.ndarray, alignment: Alignment,
               size: int = INPUT_PX, pixel_mm: float = PIXEL_MM, cval: float = 0.0) -> np.ndarray:
    """The 105 mm field of ``plane`` around the aligned template, ``size`` x ``size`` pixels."""
    rot = np.array([[math.cos(alignment.theta_rad), -math.sin(alignment.theta_rad)],
                    [math.sin(alignment.theta_rad), math.cos(alignment.theta_rad)]])
    # output pixel (y, x) -> q = pixel_mm ((y, x) + 0.5) - CROP/2 -> p = R q + t -> slice pixel A^-1 (p - c)
    inv = np.linalg.inv(A)
    matrix = inv @ rot * pixel_mm
    offset = inv @ (rot @ np.full(2, pixel_mm * 0.5 - size * pixel_mm / 2) + alignment.t_uv - c)
    sp = np.linalg.norm(A, axis=0)
    src = plane
    factor = pixel_mm / sp
    if np.any(factor > 1.5):  # anti-alias before shrinking a fine image
        src = ndimage.gaussian_filter(plane, sigma=np.maximum(factor / 2.5, 0) * (factor > 1.5))
    return ndimage.affine_transform(src, matrix, offset, output_shape=(size, size), order=1, mode="constant",
                                    cval=cval, prefilter=False)


def crop_position_mm(prepared: PreparedKnee, ras: Sequence[float], plane: int = HALF) -> np.ndarray:
    """Where a patient point (RAS mm) falls in the 105 mm crop of ``plane`` (centre plane by default):
    ``(down, back)`` mm from the crop centre, inside the crop while both are within ±52.5 mm. The
    in-plane coordinates are (−S, −A) as in :meth:`KneeFrame.slice_affine`; the alignment maps
    crop to slice, ``p = R(θ) q + t``, so ``q = R(θ)ᵀ (p − t)``."""
    al = prepared.alignments[plane]
    c, s_ = math.cos(al.theta_rad), math.sin(al.theta_rad)
    p = np.array([-float(ras[2]), -float(ras[1])])
    return np.array([[c, s_], [-s_, c]]) @ (p - np.asarray(al.t_uv, float))


def normalise_intensities(planes: np.ndarray, typical: float = TYPICAL_TISSUE_LEVEL):
    """Intensities to [0, 1] from a scale set by the knee's typical tissue, not its brightest.

    0 is the 0.5th percentile (air); the median of the foreground (pixels above 10 % of the
    99th percentile: marrow, muscle, cartilage) maps to ``typical`` (0.25), so fluid at about
    four times that lands near 1 and anything brighter is clipped. A lesion covers a few per
    cent of the knee and cannot move the median: the painful and the painless knee get the
    same scale, so the network cannot tell them apart from a globally darker image — it must
    look at the lesion.
    """
    lo = float(np.percentile(planes, 0.5))
    fg = planes[planes > lo + 0.1 * (float(np.percentile(planes, 99)) - lo)]
    ref = float(np.median(fg)) if fg.size else 0.0
    if ref <= lo:
        raise InputError("The knee image is blank (no intensity variation in the 23 slices): check the input.")
    hi = lo + (ref - lo) / typical
    return np.clip((planes - lo) / (hi - lo), 0.0, 1.0).astype(np.float32), (lo, hi)


def check_centre(frame: KneeFrame, centre: int, what: str) -> None:
    n = frame.n_slices
    if isinstance(centre, bool) or int(centre) != centre:
        raise InputError(f"The {what} centre slice must be a whole slice index, not {centre!r}.")
    if not 0 <= centre < n:
        raise InputError(f"The {what} centre slice {centre} is out of range: the volume has {n} sagittal slices "
                         f"(indices 0 to {n - 1}).")
    lo, hi = frame.valid_centres()
    if not lo <= centre <= hi:
        raise InputError(f"The {what} centre slice {centre} leaves fewer than {HALF} slices on one side for the "
                         f"{N_PLANES} slices the model reads (centre ± {HALF}): choose a centre between {lo} and {hi}.")


def check_slice_count(frame: KneeFrame, what: str) -> None:
    lo, hi = frame.valid_centres()
    if frame.n_slices < N_PLANES or lo > hi:
        need = f"{N_PLANES} sagittal slices" if frame.plane_step == 1.0 else \
            f"{N_PLANES} planes {MODEL_SLICE_SPACING_MM:g} mm apart ({(N_PLANES - 1) * MODEL_SLICE_SPACING_MM:g} mm)"
        raise InputError(
            f"The {what} volume has only {frame.n_slices} sagittal slices of {frame.slice_spacing_mm:.2g} mm: the "
            f"model needs {need} around the centre (centre ± {HALF}); give the complete sagittal series "
            f"(MSKQuant does not pad missing slices, which the network never saw in training).")


def joint_window(arr: np.ndarray, frame: KneeFrame, indices: np.ndarray, template: Template, localiser,
                 what: str) -> Tuple[Optional[JointWindow], dict, List[str]]:
    """The alignment window from the joint localiser on the knee and on the template, the
    summary of both estimates, and a warning when either cannot be used."""
    knee = localiser.locate(arr, frame, indices)
    own = template.joint(localiser)
    summary = {"model": f"{localiser.model_id} {localiser.version}".strip(), "knee": knee.summary(),
               "template": own.summary(), "window_mm": JOINT_WINDOW_MM, "bounded": bool(knee.usable and own.usable)}
    if not own.usable:
        return None, summary, [f"The joint localiser does not find the joint in the model's template (confidence "
                               f"{own.confidence:.2f}): the {what} slices were aligned by the template alone."]
    if not knee.usable:
        return None, summary, [f"The joint localiser does not find the femorotibial joint in the {what} (confidence "
                               f"{knee.confidence:.2f}): the slices were aligned by the template alone; check that "
                               f"the crop holds the joint (pain.json / the CAM overlay)."]
    return JointWindow(knee.uv, own.uv), summary, []


def prepare_knee(image: Image, side: str, template: "np.ndarray | Template | None" = None,
                 centre: Optional[int] = None,
                 joint_centre_uv: Optional[Sequence[float]] = None, progress: "Progress | None" = None,
                 what: Optional[str] = None, localiser=None) -> PreparedKnee:
    """Centre slice, 23 planes, alignment, crop, resize and normalisation of one knee.

    ``template`` is the model's (23, 224, 224) template or a :class:`Template` made from it
    (reuse one across knees: it caches the rotated templates and their FFTs).
    With ``template`` None the planes are not registered: they are cropped around
    ``joint_centre_uv`` (default: the middle of the field of view) — the way a template
    itself is made from a reference knee. With a ``localiser``
    (:class:`.localiser.JointLocaliser`) the template alignment is kept within
    ``JOINT_WINDOW_MM`` of the joint found from the anatomy (:func:`joint_window`).
    """
    progress = as_progress(progress)
    what = what or f"{side} knee"
    if image.is_series:
        raise InputError(f"The {what} image is 4D: give one 3D sagittal volume per knee.")
    frame = knee_frame(image.geometry, side, what)
    check_slice_count(frame, what)
    arr = image.array
    if not np.all(np.isfinite(arr)):
        arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    warnings: List[str] = sagittal_obliquity_warnings(frame.obliquity_deg, f"The {what} slices")
    if frame.plane_step != 1.0:
        warnings.append(f"The {what} slices are {frame.slice_spacing_mm:.2g} mm apart, not {MODEL_SLICE_SPACING_MM:g} mm "
                        f"as in training: the {N_PLANES} planes were interpolated {MODEL_SLICE_SPACING_MM:g} mm apart.")
    progress(0.0, f"Pre-processing the {what}")
    if template is not None and not isinstance(template, Template):
        template = Template(template)
    if centre is not None:
        check_centre(frame, centre, what)  # before any work
    estimate = None
    if template is not None:
        # Scored even when the centre is given: the same scores tell whether the knee looks
        # like the side it was given as (the swapped-knees check).
        small = coarse_stack(arr, frame, CENTRE_MM)
        estimate = estimate_centre(frame, score_matrix(small, template.centre, progress.sub(0.05, 0.5)))
    if centre is not None:
        centre_used, source = int(centre), "given"
    elif estimate is not None:
        centre_used, source = estimate.centre, "estimated"
    else:
        lo, hi = frame.valid_centres()
        centre_used, source = min(max((frame.n_slices - 1) // 2, lo), hi), "fixed"
    indices = frame.plane_indices(centre_used)
    progress(0.6, f"Aligning the {what} slices to the template")
    alignments: List[Alignment] = []
    joint = None
    if template is not None:
        window = None
        if localiser is not None:
            window, joint, notes = joint_window(arr, frame, indices, template, localiser, what)
            warnings.extend(notes)
        stack = coarse_stack(arr, frame, COARSE_MM)
        for o, f in enumerate(indices):
            corr = SliceCorrelator(interpolate_stack(stack, f), template.align)
            alignments.append(align_plane(corr, template.align, o, stack.origin_uv, window))
        alignments = regularise(alignments)
    else:
        if joint_centre_uv is None:
            joint_centre_uv = frame.field_centre_uv(centre_used)
        alignments = [Alignment(0.0, np.asarray(joint_centre_uv, float), 1.0) for _ in indices]
    progress(0.8, f"Cropping the {what} slices")
    planes = np.empty((N_PLANES, INPUT_PX, INPUT_PX), np.float32)
    for o, f in enumerate(indices):
        A, c = frame.slice_affine(float(f))
        planes[o] = crop_plane(take_plane(arr, frame, float(f)), A, c, alignments[o])
    planes, rng = normalise_intensities(planes)
    progress(1.0, f"{what} pre-processed")
    return PreparedKnee(side, frame, planes, int(centre_used), source, indices, alignments, rng, estimate, warnings,
                        joint)


# --- back onto the input grid -------------------------------------------------------------------
def map_planes_to_volume(prepared: PreparedKnee, maps: np.ndarray, shape_kji: Tuple[int, int, int],
                         grid: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """Put per-plane maps on the template grid (23, h, w) back onto the input voxel grid.

    Each input slice takes the map of the model plane it coincides with (within half a plane
    spacing); in-plane the map is up-sampled through the slice's alignment with a cubic spline,
    clipped to [0, 1] (a bilinear map's maximum always sits on a map cell centre, 3.75 mm apart;
    the spline lets it fall between them, nearer the evidence). Voxels outside the 23 planes or
    outside the 105 mm field (to within half a map cell) are 0. ``grid`` = ``(stride, centre)``:
    map cell m summarises the network input pixels centred on ``stride * m + centre``
    (:func:`network.feature_grid`); without it the cells are taken to tile the input evenly.
    """
    frame = prepared.frame
    maps = np.asarray(maps, np.float32)
    h, w = maps.shape[1:]
    cell = CROP_MM / h
    stride, centre_px = grid if grid is not None else (INPUT_PX / h, INPUT_PX / h / 2.0 - 0.5)
    cell_shift = (0.5 + centre_px) / stride  # crop edge -> first cell centre, in cells
    # one cell of edge values, then zeros: the up-sampling reaches the field's edge
    padded = np.pad(np.pad(maps, ((0, 0), (1, 1), (1, 1)), mode="edge"), ((0, 0), (1, 1), (1, 1)))
    a_ax, b_ax = frame.in_plane_axes
    shape2 = (shape_kji[a_ax], shape_kji[b_ax])
    out = np.zeros(shape_kji, np.float32)
    centre = prepared.centre_slice
    step = frame.plane_step
    for n in range(frame.n_slices):
        o_float = (n - centre) * frame.lateral_step / step
        o = int(round(o_float))
        if abs(o) > HALF or abs(o_float - o) > 0.5 + 1e-6:
            continue
        plane = o + HALF
        if not padded[plane].any():
            continue
        al = prepared.alignments[plane]
        A, c = frame.slice_affine(float(n))
        rot_t = np.array([[math.cos(al.theta_rad), math.sin(al.theta_rad)],
                          [-math.sin(al.theta_rad), math.cos(al.theta_rad)]])
        # slice pixel s -> p = A s + c -> q = R^T (p - t) -> map cell (q + CROP/2)/cell - cell_shift (+2 for the pads)
        matrix = rot_t @ A / cell
        offset = (rot_t @ (c - al.t_uv) + CROP_MM / 2) / cell - cell_shift + 2.0
        index = [slice(None)] * 3
        index[frame.slice_axis] = n
        out[tuple(index)] = ndimage.affine_transform(padded[plane], matrix, offset, output_shape=shape2, order=3,
                                                     mode="constant", cval=0.0, prefilter=True)
    return np.clip(out, 0.0, 1.0, out=out)


def plane_of_slice(prepared: PreparedKnee, plane: int) -> int:
    """Input slice index (nearest) of a model plane (0..22)."""
    return int(round(float(prepared.plane_indices[plane])))
