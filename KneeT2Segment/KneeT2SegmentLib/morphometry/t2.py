"""Cartilage T2 of a morphometry knee: its cartilage masks carried to a MESE series of the same
knee, T2 fitted there, and the T2 of every MESE voxel handed back to the 3D image's space.

Morales et al. register the cartilage masks of the 3D (DESS) image to the MESE series and fit
T2 there. Here:

1. **Rigid registration** (:func:`rigid_register`, SimpleITK): the 3D image (moving) onto the
   MESE first echo (fixed), Mattes mutual information (the two contrasts differ), a
   three-level pyramid, the metric restricted to the cartilage and 15 mm around it, started at
   identity (both series come from one session, in scanner coordinates). A result that moves
   the cartilage by more than :data:`MAX_SHIFT_MM` or does not improve the metric is not used
   (the scanner coordinates are kept and a warning says so). Without a 3D image (a user's
   label map alone) scanner coordinates are used as they are.
2. **Labels on the MESE grid** (:func:`labels_on_grid`): each MESE voxel's label fractions by
   the shared generator's partial-volume sampling (:func:`mskquant.synth.sampling.tissue_counts`:
   points through the slice thickness), a cartilage label where its fraction is at least one
   half (the knee-t2 truth's rule).
3. **T2** by the existing fit (:func:`..t2fit.fit_t2`) over all cartilage voxels, and the
   femoral cartilage's 12 subregions and statistics by the existing quantification
   (:func:`..quantify.quantify`, reusing that fit) - the volumetric means the surface values
   are checked against.
4. **Points** (:meth:`CartilageT2.points`): every fitted MESE voxel's centre in the 3D image's
   world (the inverse registration), its T2, cartilage label and femoral subregion - what the
   bone-surface projection samples (each voxel to its nearest articular vertex, so that a
   count-weighted region mean on the surface is the volumetric mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Geometry, Image
from mskquant.progress import Progress, as_progress

from . import labels as lb

MAX_SHIFT_MM = 10.0  # a registration moving the cartilage further than this is not trusted
MAX_ROTATION_DEG = 10.0
ROI_MARGIN_MM = 15.0
CARTILAGES = (lb.FEMORAL_CARTILAGE, lb.TIBIAL_CARTILAGE, lb.PATELLAR_CARTILAGE)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Registration:
    """``matrix``: 4x4 RAS map from the 3D image's world to the MESE world."""

    matrix: np.ndarray
    method: str  # "rigid (mutual information)" | "scanner coordinates"
    shift_mm: float = 0.0  # largest displacement of the cartilage's bounding box corners
    rotation_deg: float = 0.0
    metric_before: float = float("nan")
    metric_after: float = float("nan")
    warnings: List[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"method": self.method, "shift_mm": round(self.shift_mm, 3), "rotation_deg": round(self.rotation_deg, 3),
                "metric_before": self.metric_before, "metric_after": self.metric_after,
                "matrix_ras": [[round(float(v), 6) for v in row] for row in self.matrix]}


def _box_corners(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    lo, hi = (i.min(), j.min(), k.min()), (i.max(), j.max(), k.max())
    c = np.array([[a, b, d, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for d in (lo[2], hi[2])]).T
    return (geometry.ijk_to_ras @ c)[:3]


def _roi_mask(labels: Image, margin_mm: float) -> np.ndarray:
    from scipy import ndimage as ndi

    cart = np.isin(labels.array, CARTILAGES)
    sp = labels.geometry.spacing[::-1]
    it = max(1, int(round(margin_mm / float(max(sp)))))
    small = cart[::2, ::2, ::2] if min(cart.shape) > 40 else cart
    step = 2 if small is not cart else 1
    grown = ndi.binary_dilation(small, iterations=max(1, it // step))
    if step == 2:
        grown = np.repeat(np.repeat(np.repeat(grown, 2, 0), 2, 1), 2, 2)[:cart.shape[0], :cart.shape[1], :cart.shape[2]]
    return grown


def rigid_register(moving: Image, fixed: Image, labels: Image, progress: "Progress | None" = None) -> Registration:
    """Rigid map of ``moving`` (the 3D image; ``labels`` on its grid) onto ``fixed`` (the MESE echo)."""
    import SimpleITK as sitk

    from mskquant.imageio import _sitk_from_array

    progress = as_progress(progress)
    progress(0.0, "Registering the 3D image to the MESE series")
    if not np.isin(labels.array, CARTILAGES).any():
        raise InputError("No cartilage in the label map: nothing to carry to the MESE series.")
    roi_mask = _roi_mask(labels, ROI_MARGIN_MM)
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(roi_mask))  # the 3D image cropped to it
    crop = Geometry(tuple(int(s.stop - s.start) for s in box[::-1]),
                    labels.geometry.ijk_to_ras @ _shift(box[2].start, box[1].start, box[0].start))
    f = _sitk_from_array(np.asarray(fixed.array, np.float32), fixed.geometry)
    m = _sitk_from_array(np.ascontiguousarray(moving.array[box], np.float32), crop)
    roi = _sitk_from_array(np.ascontiguousarray(roi_mask[box]).astype(np.uint8), crop)
    reg = _mattes(roi)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=60,
                                                 gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    centre = _box_corners(np.isin(labels.array, CARTILAGES), labels.geometry).mean(axis=1)
    init = sitk.Euler3DTransform()
    init.SetCenter(tuple(float(v) for v in (LPS[:3, :3] @ centre)))
    reg.SetInitialTransform(init, inPlace=False)
    n_iter = [0]

    def tick():
        n_iter[0] += 1
        progress(min(0.95, n_iter[0] / 180.0), f"Registering (level {reg.GetCurrentLevel() + 1}/3)")

    reg.AddCommand(sitk.sitkIterationEvent, tick)
    before = _metric_with(f, m, roi, init)
    euler = _as_euler(reg.Execute(f, m))
    after = _metric_with(f, m, roi, euler)
    # the sitk transform maps fixed (MESE) LPS points to moving (3D image) LPS points
    a = np.eye(4)
    a[:3, :3] = np.asarray(euler.GetMatrix()).reshape(3, 3)
    c = np.asarray(euler.GetCenter())
    a[:3, 3] = c + np.asarray(euler.GetTranslation()) - a[:3, :3] @ c
    fixed_to_moving_ras = LPS @ a @ LPS
    to_mese = np.linalg.inv(fixed_to_moving_ras)
    corners = _box_corners(np.isin(labels.array, CARTILAGES), labels.geometry)
    moved = (to_mese[:3, :3] @ corners + to_mese[:3, 3:4]) - corners
    shift = float(np.linalg.norm(moved, axis=0).max())
    angle = float(np.degrees(np.arccos(np.clip((np.trace(to_mese[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))))
    result = Registration(to_mese, "rigid (mutual information)", shift, angle, before, after)
    progress(1.0, "Registration done")
    if shift > MAX_SHIFT_MM or angle > MAX_ROTATION_DEG:
        return Registration(np.eye(4), "scanner coordinates", 0.0, 0.0, before, before,
                            [f"The rigid registration of the 3D image to the MESE series was not used (it moved the "
                             f"cartilage by {shift:.1f} mm and {angle:.1f} deg, more than {MAX_SHIFT_MM:g} mm or "
                             f"{MAX_ROTATION_DEG:g} deg): the scanner coordinates of the two series were used as they "
                             f"are. Check that they show the same knee in one session."])
    if not after < before:  # already aligned: nothing better than the scanner coordinates was found
        return Registration(np.eye(4), "scanner coordinates (no better rigid match found)", 0.0, 0.0, before, before)
    return result


def _shift(i: int, j: int, k: int) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = (i, j, k)
    return m


def _as_euler(transform):
    """The Euler transform inside what ``ImageRegistrationMethod.Execute`` returns."""
    import SimpleITK as sitk

    if transform.GetName() == "CompositeTransform":
        transform = sitk.CompositeTransform(transform).GetNthTransform(0)
    return sitk.Euler3DTransform(transform)


def _mattes(moving_mask):
    """A registration method with the metric both the registration and its check use: Mattes mutual
    information (32 bins) on a fixed random 5 % of the moving mask's voxels, linear interpolation."""
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.05, seed=1)
    method.SetMetricMovingMask(moving_mask)
    method.SetInterpolator(sitk.sitkLinear)
    return method


def _metric_with(fixed, moving, moving_mask, transform) -> float:
    """Mattes mutual information (lower is better) of ``moving`` through ``transform`` on ``fixed``."""
    check = _mattes(moving_mask)
    check.SetInitialTransform(transform)
    return float(check.MetricEvaluate(fixed, moving))


def scanner_coordinates() -> Registration:
    return Registration(np.eye(4), "scanner coordinates")


def labels_on_grid(labels: Image, target: Geometry, to_target: Optional[np.ndarray] = None,
                   progress: "Progress | None" = None) -> np.ndarray:
    """The labels (0-6) on ``target`` ``uint8 [k, j, i]``: a cartilage label where its fraction >= 1/2,
    else the most frequent label (``to_target``: 4x4 RAS map of the labels' world to the target's)."""
    from mskquant.synth.sampling import slab_offsets, subsamples_for, tissue_counts

    moved = Geometry(labels.geometry.shape_ijk, (np.eye(4) if to_target is None else to_target) @
                     labels.geometry.ijk_to_ras)
    sp = target.spacing
    sub = subsamples_for(sp, float(min(labels.geometry.spacing)), float(sp[2]))
    offsets = slab_offsets((sub[0], sub[1], max(2, sub[2])), float(sp[2]), float(sp[2]))
    counts = tissue_counts(lb.tissue_labels(labels.array), moved, target, lb.N_LABELS, offsets, as_progress(progress))
    out = np.argmax(counts, axis=-1).astype(np.uint8)
    out[np.isin(out, CARTILAGES)] = 0
    half = offsets.shape[0] / 2.0
    for c in CARTILAGES:
        out[counts[..., c] >= half] = c
    return out


@dataclass
class CartilageT2:
    """T2 of the cartilages on the MESE grid and the femoral cartilage's subregion statistics."""

    labels: Image  # uint8 0-6 on the MESE grid
    t2: Image  # ms on the MESE grid, NaN outside the fitted cartilage
    quantification: object  # ..quantify.Quantification of the femoral cartilage (12 subregions)
    registration: Registration
    warnings: List[str] = field(default_factory=list)

    def points(self) -> Dict[str, np.ndarray]:
        """Fitted voxels as points in the 3D image's world: ``ras [n, 3]``, ``t2``, ``label``, ``region``
        (femoral subregion 1-12, 0 for the tibial and patellar cartilage)."""
        t2 = self.t2.array
        sel = np.isfinite(t2) & np.isin(self.labels.array, CARTILAGES)
        k, j, i = np.nonzero(sel)
        g = self.labels.geometry
        back = np.linalg.inv(self.registration.matrix) @ g.ijk_to_ras
        ras = (back @ np.stack([i, j, k, np.ones(i.size)]))[:3].T
        region = np.zeros(i.size, np.int16)
        sub = np.asarray(self.quantification.subregions.labels)
        region[:] = sub[k, j, i]
        lab = self.labels.array[k, j, i]
        region[lab != lb.FEMORAL_CARTILAGE] = 0
        return {"ras": ras, "t2": t2[k, j, i].astype(np.float64), "label": lab, "region": region}

    def region_means(self) -> Dict[int, float]:
        """Volumetric mean T2 per femoral subregion (1-12) of the quantification."""
        out = {}
        t2 = np.where(self.quantification.refined, self.quantification.fit.t2_ms, np.nan)
        sub = np.asarray(self.quantification.subregions.labels)
        for r in range(1, 13):
            v = t2[(sub == r) & np.isfinite(t2)]
            if v.size:
                out[r] = float(v.mean())
        return out


def cartilage_t2(labels: Image, series, image: Optional[Image] = None, params=None,
                 progress: "Progress | None" = None) -> CartilageT2:
    """T2 of the cartilages of ``labels`` (the 3D image's grid) on the MESE ``series`` of the same knee."""
    from ..parameters import KneeT2Parameters
    from ..quantify import quantify
    from ..t2fit import fit_t2

    progress = as_progress(progress)
    params = (params or KneeT2Parameters()).validate()
    g = series.geometry
    if not labels.geometry.overlaps(g):
        raise InputError(f"The MESE series ({g.describe()}) does not overlap the 3D image "
                         f"({labels.geometry.describe()}): give the MESE series of the same knee and session.")
    if image is not None:
        reg = rigid_register(image, Image(series.echoes.array[0], g), labels, progress.sub(0.0, 0.35))
    else:
        reg = scanner_coordinates()
        reg.warnings.append("No 3D image was given with the label map: the label map was carried to the MESE series "
                            "in scanner coordinates, without registration.")
    on_mese = labels_on_grid(labels, g, reg.matrix, progress.sub(0.35, 0.45))
    cart = np.isin(on_mese, CARTILAGES)
    femoral = on_mese == lb.FEMORAL_CARTILAGE
    if not femoral.any():
        raise InputError("No femoral cartilage of the label map falls on the MESE series: check that the MESE series "
                         "covers the knee's femoral cartilage.")
    fit = fit_t2(series.echoes.array, series.echo_times_ms, cart, params.fit_settings(), progress.sub(0.45, 0.9))
    quant = quantify(series, femoral, params, progress.sub(0.9, 1.0), fit=fit, fitted=cart)
    t2 = np.where(cart & np.isfinite(fit.t2_ms), fit.t2_ms, np.nan).astype(np.float32)
    t2[femoral & ~quant.refined] = np.nan
    return CartilageT2(Image(on_mese, g), Image(t2, g), quant, reg, list(reg.warnings) + list(quant.warnings))
