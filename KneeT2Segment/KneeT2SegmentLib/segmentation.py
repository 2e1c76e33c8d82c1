"""Automatic femoral cartilage segmentation of MESE series: pre-processing, U-Net, post-processing.

Thomas et al. 2.3-2.5, on the project's shared 2D U-Net (:mod:`mskquant.unet`,
transposed-convolution up-sampling, sigmoid output):

* **Slices.** The network segments each sagittal slice. The slice axis is found from the
  image's direction matrix (the array axis nearest the patient's left-right axis; more than
  35 degrees off, or thick slices along another axis - an axial or coronal acquisition - is
  refused as "not sagittal"), and the volume is brought to one layout - slices towards the
  patient's left, rows superior -> inferior, columns anterior -> posterior - by transposing
  and flipping (never resampling), then mapped back: any voxel ordering of the same scan
  gives the same mask.
* **Pre-processing (2.3).** The second echo; per volume a linear map that takes the 25th
  percentile to -1 and the 75th to +1, then values clipped to the mapped 3rd and 97th
  percentiles. One linear map cannot also put the median exactly at 0 unless the histogram
  is symmetric between the quartiles; as in the authors' public code (``whiten_img``,
  ``normalization='quartile'``) the quartiles are matched and the median lands near 0. The
  public code does this per 2D slice image; the paper and this implementation, per volume.
  Each slice is padded (with the lowest clipped value) or centre-cropped to the network size
  (384 x 384, as the paper's network) and the probability is mapped back exactly: padding is
  removed, cropped-away margins get probability 0.
* **Post-processing (2.5).** Voxels with p > 0.01 get a noise-corrected T2 fit
  (:mod:`.t2fit`: first echo excluded); voxels with T2 outside [0, 100] ms are dropped; the
  rest is binarised at p >= threshold; sagittal slices holding less cartilage than a minimum
  are emptied. The two thresholds were found by grid search on validation data (paper:
  p >= 0.501 and 425 voxels on the OAI grid); here they are stored with each model
  (:mod:`.checkpoint`), the slice minimum as an area (mm^2) so that it holds on any pixel size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from mskquant.errors import InputError, ModelError
from mskquant.image import SAGITTAL_MAX_OBLIQUITY_DEG as MAX_OBLIQUITY_DEG, Geometry, sagittal_obliquity_warnings
from mskquant.progress import Progress, as_progress

from .checkpoint import DEFAULT_MODEL_ID, MODULE, Thresholds, build_network, read_checkpoint
from .mese import MeseSeries

MIN_SLICES = 5  # fewer sagittal slices cannot cover the condyles (and the notch search needs 5)


# --- slice layout --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SagittalLayout:
    """How an array ``[..., k, j, i]`` maps to (slice, row, column) of the network's layout."""

    axes: Tuple[int, int, int]  # array axes (of the last three) giving slice, row (S->I), column (A->P)
    flips: Tuple[bool, bool, bool]
    pixel_mm: Tuple[float, float]  # row, column spacing
    slice_mm: float
    obliquity_deg: float

    def _perm(self, ndim: int) -> Tuple[int, ...]:
        lead = ndim - 3
        return tuple(range(lead)) + tuple(lead + a for a in self.axes)

    def to_canonical(self, a: np.ndarray) -> np.ndarray:
        b = np.transpose(a, self._perm(a.ndim))
        for n, f in enumerate(self.flips):
            if f:
                b = np.flip(b, axis=a.ndim - 3 + n)
        return b

    def from_canonical(self, b: np.ndarray) -> np.ndarray:
        for n, f in enumerate(self.flips):
            if f:
                b = np.flip(b, axis=b.ndim - 3 + n)
        return np.ascontiguousarray(np.transpose(b, np.argsort(self._perm(b.ndim))))

    @property
    def pixel_area_mm2(self) -> float:
        return float(self.pixel_mm[0] * self.pixel_mm[1])

    @property
    def slice_axis(self) -> int:
        return self.axes[0]


_AXIS_WORDS = ("left-right", "anterior-posterior", "superior-inferior")


def sagittal_layout(geometry: Geometry) -> SagittalLayout:
    """The network layout of a grid, or one clear error when its slices are not sagittal."""
    d = geometry.directions
    dirs = (d[:, 2], d[:, 1], d[:, 0])  # RAS direction of array axes 0 (k), 1 (j), 2 (i)
    sp = geometry.spacing
    spacing = (float(sp[2]), float(sp[1]), float(sp[0]))
    lr = [abs(float(v[0])) for v in dirs]
    slice_axis = int(np.argmax(lr))
    obliquity = math.degrees(math.acos(min(1.0, lr[slice_axis])))
    # The acquired slices are the thick ones: a thick axis other than left-right means the
    # sagittal planes would be reformatted from axial or coronal slices, which the network never saw.
    thick = int(np.argmax(spacing))
    reformatted = thick != slice_axis and spacing[thick] > 1.5 * spacing[slice_axis]
    if obliquity > MAX_OBLIQUITY_DEG or reformatted:
        across = dirs[thick] if reformatted else np.cross(dirs[(slice_axis + 1) % 3], dirs[(slice_axis + 2) % 3])
        nearest = _AXIS_WORDS[int(np.argmax(np.abs(across)))]
        plane = {"anterior-posterior": "coronal", "superior-inferior": "axial"}.get(nearest, "oblique")
        why = (f"its {spacing[thick]:g} mm slices are {plane}" if reformatted else
               f"no image axis lies within {MAX_OBLIQUITY_DEG:.0f} deg of left-right; its slices look {plane}")
        raise InputError(f"The MESE series is not sagittal ({why}): the cartilage network segments sagittal slices, "
                         f"as in the OAI protocol - give the sagittal MESE series.")
    plane_axes = [a for a in range(3) if a != slice_axis]
    row = max(plane_axes, key=lambda a: abs(float(dirs[a][2])))
    col = plane_axes[0] if plane_axes[1] == row else plane_axes[1]
    flip_slice = bool(dirs[slice_axis][0] > 0)  # slices run towards the patient's left
    flip_row = bool(dirs[row][2] > 0)  # rows towards inferior
    flip_col = bool(dirs[col][1] > 0)  # columns towards posterior
    return SagittalLayout((slice_axis, row, col), (flip_slice, flip_row, flip_col), (spacing[row], spacing[col]),
                          spacing[slice_axis], obliquity)


# --- pre-processing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Normalisation:
    """The linear map and clip limits applied to one echo volume."""

    scale: float
    offset: float
    low: float  # mapped 3rd percentile
    high: float  # mapped 97th percentile
    percentiles: Tuple[float, float, float, float, float]  # p3, p25, p50, p75, p97 of the raw values

    def apply(self, values: np.ndarray) -> np.ndarray:
        out = np.asarray(values, np.float32) * np.float32(self.scale) + np.float32(self.offset)
        return np.clip(out, self.low, self.high, out=out)

    @property
    def median_mapped(self) -> float:
        return self.percentiles[2] * self.scale + self.offset


def normalisation_of(values: np.ndarray, max_samples: int = 0, rng: Optional[np.random.Generator] = None
                     ) -> Normalisation:
    """The map of Thomas et al. 2.3 from an echo volume's percentiles (non-finite values ignored).

    ``max_samples`` > 0 estimates the percentiles on a random subsample (training only).
    """
    v = np.asarray(values).ravel()
    if max_samples and v.size > max_samples:
        rng = rng or np.random.default_rng(0)
        v = v[rng.integers(0, v.size, max_samples)]
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise InputError("The network's input echo holds no finite values: check the MESE images.")
    p3, p25, p50, p75, p97 = (float(x) for x in np.percentile(v, [3, 25, 50, 75, 97]))
    if not p75 > p25:
        raise InputError(f"The network's input echo has no contrast between its 25th and 75th percentiles "
                         f"({p25:g}): the image is constant or mostly one value; check the MESE series.")
    scale = 2.0 / (p75 - p25)
    offset = -1.0 - p25 * scale
    return Normalisation(scale, offset, p3 * scale + offset, p97 * scale + offset, (p3, p25, p50, p75, p97))


def normalise(volume: np.ndarray) -> np.ndarray:
    """Normalised float32 copy of an echo volume (non-finite voxels set to the lowest value)."""
    norm = normalisation_of(volume)
    out = norm.apply(volume)
    bad = ~np.isfinite(out)
    if bad.any():
        out[bad] = norm.low
    return out


@dataclass(frozen=True)
class Window:
    """Where a slice of ``shape`` sits in the network's input of ``size`` (per axis: source and target ranges)."""

    shape: Tuple[int, int]
    size: Tuple[int, int]
    src: Tuple[Tuple[int, int], Tuple[int, int]]
    dst: Tuple[Tuple[int, int], Tuple[int, int]]


def window_for(shape: Tuple[int, int], size: Tuple[int, int]) -> Window:
    """Centre alignment: pad where the slice is smaller than the network, crop where larger."""
    src, dst = [], []
    for n, m in zip(shape, size):
        if n <= m:
            start = (m - n) // 2
            src.append((0, n))
            dst.append((start, start + n))
        else:
            start = (n - m) // 2
            src.append((start, start + m))
            dst.append((0, m))
    return Window(tuple(shape), tuple(size), tuple(src), tuple(dst))  # type: ignore[arg-type]


def pad_or_crop(slices: np.ndarray, size: Tuple[int, int], fill: float) -> Tuple[np.ndarray, Window]:
    """``slices[n, rows, cols]`` -> ``[n, size...]`` float32 and the window to map results back."""
    w = window_for(slices.shape[-2:], size)
    out = np.full(slices.shape[:-2] + tuple(size), fill, np.float32)
    (sr, sc), (dr, dc) = w.src, w.dst
    out[..., dr[0]:dr[1], dc[0]:dc[1]] = slices[..., sr[0]:sr[1], sc[0]:sc[1]]
    return out, w


def restore(network_output: np.ndarray, w: Window, fill: float = 0.0) -> np.ndarray:
    """Inverse of :func:`pad_or_crop` for network outputs: the slice shape again, ``fill`` where cropped."""
    out = np.full(network_output.shape[:-2] + tuple(w.shape), fill, np.float32)
    (sr, sc), (dr, dc) = w.src, w.dst
    out[..., sr[0]:sr[1], sc[0]:sc[1]] = network_output[..., dr[0]:dr[1], dc[0]:dc[1]]
    return out


def network_input(series: MeseSeries, echo: int, size: Tuple[int, int], layout: Optional[SagittalLayout] = None
                  ) -> Tuple[np.ndarray, Window, SagittalLayout]:
    """Slices ``[n, 1, rows, cols]`` for the network (checked, laid out, normalised, padded/cropped)."""
    layout = layout or sagittal_layout(series.geometry)
    check_series(series, echo, layout)
    x = normalise(layout.to_canonical(series.echoes.array[echo - 1]))
    slices, w = pad_or_crop(x, size, float(x.min()))
    return slices[:, None], w, layout


def check_series(series: MeseSeries, echo: int, layout: SagittalLayout) -> None:
    shape = series.echoes.array.shape[1:]
    n_slices = shape[layout.slice_axis]
    if n_slices < MIN_SLICES:
        raise InputError(f"The MESE series has {n_slices} sagittal slice(s): automatic segmentation needs at least "
                         f"{MIN_SLICES} covering the femoral condyles (the OAI protocol has 21); give the whole "
                         f"series, or a cartilage mask (--mask).")
    if series.n_echoes < max(echo, 3):
        raise InputError(f"The MESE series has {series.n_echoes} echo(es): the network reads echo {echo} and the T2 "
                         f"refinement needs at least 3; give the whole multi-echo series.")
    rows, cols = (shape[layout.axes[1]], shape[layout.axes[2]])
    if min(rows, cols) < 32:
        raise InputError(f"The MESE slices are only {rows} x {cols} pixels: give the full-resolution series.")


# --- the model -----------------------------------------------------------------------------------
@dataclass
class KneeModel:
    """A loaded cartilage network ready for inference, with its input spec and thresholds."""

    model_id: str
    net: object  # torch module prepared for inference
    device: object
    echo: int
    network_size: Tuple[int, int]
    thresholds: Thresholds
    architecture: dict
    sha256: str = ""
    training: dict = field(default_factory=dict)

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.architecture.get("params", {}).get("features", [0])) - 1)


_MODEL_CACHE: Dict[tuple, KneeModel] = {}


def load_model(model: str = DEFAULT_MODEL_ID, device="auto", store=None, progress: "Progress | None" = None,
               require_thresholds: bool = True) -> KneeModel:
    """A registered model (by id) or a checkpoint file, checked, on ``device`` (cached per file).

    ``require_thresholds=False`` (calibration) accepts a model without calibrated thresholds
    and gives it p >= 0.5 and no slice minimum.
    """
    from pathlib import Path

    import torch

    from mskquant.device import select_device
    from mskquant.inference import prepare_for_inference
    from mskquant.models import ModelStore, sha256_of

    dev = device if isinstance(device, torch.device) else select_device(device)
    path = Path(str(model)).expanduser()
    registry_thresholds = None
    if path.suffix == ".pt" or path.exists():
        model_id, where = path.name, f"Model file {path}"
        if not path.is_file():
            raise ModelError(f"Knee cartilage model file {path} does not exist: check the path, or give a registered "
                             f"model id ('mskquant models list').")
        digest = sha256_of(path)
    else:
        store = store or ModelStore()
        spec = store.registry.get(str(model))
        if spec.module != MODULE or spec.task != "femoral-cartilage-segmentation":
            raise ModelError(f"Model '{spec.id}' is a {spec.module} {spec.task} model, not a femoral cartilage "
                             f"segmentation model: choose a KneeT2Segment model ('mskquant models list').")
        path = store.ensure(spec.id, progress)[0]
        model_id, where = spec.id, f"Model '{spec.id}' ({path})"
        digest = spec.files[0].sha256
        registry_thresholds = spec.get("postprocessing")
    key = (model_id, digest, str(dev), require_thresholds)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    ckpt = read_checkpoint(path)
    if registry_thresholds is not None:
        thresholds = Thresholds.from_dict(registry_thresholds, where)
    elif require_thresholds:
        thresholds = ckpt.thresholds()
    else:
        thresholds = Thresholds(0.5, 0.0)
    net = build_network(ckpt.architecture, ckpt.state_dict, where)
    loaded = KneeModel(model_id, prepare_for_inference(net, dev), dev, ckpt.echo, ckpt.network_size, thresholds,
                       ckpt.architecture, digest, ckpt.training)
    if loaded.network_size[0] % loaded.divisor or loaded.network_size[1] % loaded.divisor:
        raise ModelError(f"{where}: network size {loaded.network_size} is not a multiple of {loaded.divisor}: fix "
                         f"the checkpoint's input spec.")
    _MODEL_CACHE[key] = loaded
    return loaded


def predict_probability(model: KneeModel, series: MeseSeries, progress: "Progress | None" = None,
                        layout: Optional[SagittalLayout] = None, bf16: bool = False) -> np.ndarray:
    """Cartilage probability ``[k, j, i]`` on the MESE grid (float32; ``bf16``: the network in
    bfloat16 autocast)."""
    from mskquant.inference import predict_threaded

    progress = as_progress(progress)
    slices, w, layout = network_input(series, model.echo, model.network_size, layout)
    out = predict_threaded([model.net], slices, model.device, progress, divisor=model.divisor,
                           message="Femoral cartilage (U-Net)", bf16=bf16)[:, 0]
    return layout.from_canonical(restore(out, w))


# --- post-processing ---------------------------------------------------------------------------------
@dataclass
class CartilageSegmentation:
    mask: np.ndarray  # bool [k, j, i] on the MESE grid
    probability: np.ndarray  # float32 [k, j, i]
    fit: object  # T2Fit of the candidate voxels (p > fit_probability)
    thresholds: Thresholds
    layout: SagittalLayout
    dropped_slices: List[int]  # array indices along the slice axis emptied by the slice minimum
    counts: Dict[str, int]
    model_id: str = ""
    timings_s: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    precision: str = "float32"  # the network's arithmetic: float32 or bfloat16

    def summary(self) -> dict:
        return {"model": self.model_id, "precision": self.precision, "thresholds": self.thresholds.as_dict(),
                "min_slice_voxels": self.thresholds.min_slice_voxels(self.layout.pixel_area_mm2),
                "dropped_slices": list(self.dropped_slices), "counts": dict(self.counts),
                "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()}}


def apply_thresholds(probability: np.ndarray, t2_valid: np.ndarray, layout: SagittalLayout,
                     thresholds: Thresholds) -> Tuple[np.ndarray, List[int], Dict[str, int]]:
    """Binarise (p >= threshold, T2 valid) and empty slices below the minimum cartilage area.

    ``t2_valid`` marks the candidate voxels whose fitted T2 lies in the valid range.
    """
    above = probability >= thresholds.probability
    mask = above & t2_valid
    min_voxels = thresholds.min_slice_voxels(layout.pixel_area_mm2)
    axis = layout.slice_axis
    per_slice = mask.sum(axis=tuple(a for a in range(3) if a != axis))
    dropped = [int(s) for s in np.nonzero((per_slice > 0) & (per_slice < min_voxels))[0]]
    if dropped:
        index = [slice(None)] * 3
        index[axis] = dropped
        mask[tuple(index)] = False
    counts = {"above_threshold": int(above.sum()), "t2_valid_above_threshold": int((above & t2_valid).sum()),
              "final": int(mask.sum()), "min_slice_voxels": min_voxels}
    return mask, dropped, counts


def segment(series: MeseSeries, model: KneeModel, fit_settings=None, progress: "Progress | None" = None,
            precision: str = "float32") -> CartilageSegmentation:
    """Thomas et al. 2.3-2.5 on one MESE series: probability, T2 of the candidates, thresholds.

    ``precision``: the network's arithmetic, "float32" (default: the same numbers on every
    machine), "bfloat16" (autocast, ~2x faster on CPUs with AVX-512 BF16; a few voxels at the
    threshold change, see the README) or "auto" (bfloat16 where the device supports it).
    """
    from mskquant.device import use_bf16

    from .t2fit import FitSettings, fit_t2

    progress = as_progress(progress)
    t0 = time.monotonic()
    layout = sagittal_layout(series.geometry)
    th = model.thresholds
    settings = fit_settings or FitSettings(t2_range_ms=th.t2_range_ms)
    settings.validate(series.n_echoes)
    bf16 = use_bf16(precision, model.device)
    prob = predict_probability(model, series, progress.sub(0.0, 0.75), layout, bf16)
    t1 = time.monotonic()
    candidates = prob > th.fit_probability
    warnings: List[str] = sagittal_obliquity_warnings(layout.obliquity_deg)
    if not candidates.any():
        raise InputError(f"The cartilage network found no femoral cartilage in this MESE series (no voxel with "
                         f"p > {th.fit_probability:g}): check that it is a sagittal knee MESE series, or give a "
                         f"cartilage mask.")
    fit = fit_t2(series.echoes.array, series.echo_times_ms, candidates, settings, progress.sub(0.75, 0.98))
    t2 = time.monotonic()
    valid = np.isfinite(fit.t2_ms)
    mask, dropped, counts = apply_thresholds(prob, valid, layout, th)
    counts = {"candidates": int(candidates.sum()), "t2_valid": int((valid & candidates).sum()), **counts}
    if not mask.any():
        raise InputError("The cartilage network's segmentation is empty after its thresholds (probability, T2 within "
                         f"[{settings.t2_range_ms[0]:g}, {settings.t2_range_ms[1]:g}] ms, minimum per slice): check the MESE "
                         "series (sagittal knee, echo times), or give a cartilage mask.")
    if dropped:
        warnings.append(f"{len(dropped)} sagittal slice(s) with less than {th.min_slice_area_mm2:g} mm2 of cartilage "
                        f"were emptied (Thomas et al. 2.5): slice index(es) {', '.join(map(str, dropped))}.")
    progress(1.0, "Cartilage segmented")
    timings = {"network": t1 - t0, "t2_candidates": t2 - t1, "total": time.monotonic() - t0}
    return CartilageSegmentation(mask, prob, fit, th, layout, dropped, counts, model.model_id, timings,
                                 warnings + list(fit.warnings), "bfloat16" if bf16 else "float32")
