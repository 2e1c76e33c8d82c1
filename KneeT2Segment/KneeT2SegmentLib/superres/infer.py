"""Super-resolving a thick-sliced volume: checks, TCI, the residual CNN slab by slab.

The network runs on the TCI image (Chaudhari et al.: SR = TCI + learned residual) in slabs
along the longest in-plane axis that overlap by the network's receptive-field radius, so the
result equals a whole-volume pass exactly while the memory stays bounded (a 384x384x160
output: ~1.5 GB peak with the default slab). CUDA when available (:mod:`mskquant.device`).

Input checks (each refusal names the reason and the fix): a 3D image; a slice axis that is
clearly the thickest (thick spacing >= ``min_anisotropy`` x the finest in-plane spacing);
a thick slice spacing inside the model's range; the factor the model was trained for. An
image that is already fine-sliced is **refused** (not passed through): it fails the
anisotropy or spacing check, and super-resolving it would invent slices finer than any the
model has seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Image
from mskquant.progress import Progress, as_progress

from . import degrade as dg
from .model import SCALE_PERCENTILE, SuperResModel

DEFAULT_SLAB = 48


@dataclass
class SuperResResult:
    image: Image  # SR on the fine slice grid
    tci: Image  # the tricubic interpolation on the same grid
    factor: int
    slice_axis_ijk: int
    seconds: dict = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    precision: str = "float32"


def check_input(thick: Image, model_input: dict, factor: Optional[int] = None) -> tuple:
    """(factor, slice axis) for ``thick``, or an :class:`InputError` that says why it does not fit."""
    if thick.array.ndim != 3:
        raise InputError(f"Super-resolution needs a 3D image; this one has {thick.array.ndim} dimensions: give one "
                         f"volume (e.g. one echo).")
    trained = int(model_input.get("factor", 3))
    f = trained if factor is None else dg.check_factor(factor)
    if f != trained:
        raise InputError(f"The model is trained for {trained}x thicker slices, not {f}x: use --factor {trained} or "
                         f"a model trained for {f}x.")
    sp = thick.geometry.spacing
    axis = dg.slice_axis_ijk(thick.geometry)
    in_plane = min(s for a, s in enumerate(sp) if a != axis)
    aniso = float(model_input.get("min_anisotropy", 2.0))
    lo, hi = (float(v) for v in model_input.get("thick_slice_mm", [1.5, 3.0]))
    if sp[axis] < aniso * in_plane or sp[axis] < lo:
        raise InputError(f"The image is already fine-sliced ({sp[axis]:.3g} mm slices, {in_plane:.3g} mm pixels): "
                         f"this model super-resolves {f}x thicker slices of {lo:.3g}-{hi:.3g} mm (at least "
                         f"{aniso:g}x the pixel size); use the image as it is.")
    if sp[axis] > hi:
        raise InputError(f"The slices are {sp[axis]:.3g} mm thick; this model was trained on {lo:.3g}-{hi:.3g} mm "
                         f"thick slices ({f}x): its output would be unreliable; use a model trained for them.")
    n = thick.geometry.shape_ijk[axis]
    if n < 4:
        raise InputError(f"The image has {n} slices: super-resolution needs at least 4 along the slice axis.")
    return f, axis


def _run_slabs(net, x: np.ndarray, device, slab: int, progress: Progress, bf16: bool = False) -> np.ndarray:
    """``net`` on ``x`` [slice, a, b] in overlapping slabs along the longer of a, b."""
    import torch

    from mskquant.device import autocast

    along = 1 if x.shape[1] >= x.shape[2] else 2
    n, halo = x.shape[along], net.halo
    out = np.empty_like(x)
    starts = list(range(0, n, slab))
    cl = torch.channels_last_3d
    for i, s in enumerate(starts):
        progress(i / len(starts), f"super-resolving slab {i + 1}/{len(starts)}")
        e = min(n, s + slab)
        lo, hi = max(0, s - halo), min(n, e + halo)
        part = np.take(x, np.arange(lo, hi), axis=along)
        with torch.inference_mode(), autocast(device, bf16):
            t = torch.from_numpy(np.ascontiguousarray(part))[None, None].to(device).contiguous(memory_format=cl)
            y = net(t)[0, 0].float().cpu().numpy()
        keep = np.take(y, np.arange(s - lo, s - lo + (e - s)), axis=along)
        if along == 1:
            out[:, s:e] = keep
        else:
            out[:, :, s:e] = keep
    progress(1.0, "super-resolved")
    return out


def super_resolve(thick: Image, model: SuperResModel, factor: Optional[int] = None, device="auto",
                  progress=None, slab: int = DEFAULT_SLAB, precision: str = "auto") -> SuperResResult:
    """SR of a thick-sliced image onto its fine slice grid (:func:`.degrade.fine_geometry`).

    ``precision``: ``"float32"``, ``"bfloat16"`` (autocast; ~3x faster on CPUs with AVX-512 BF16,
    the residual's rounding stays far below the image noise: ``Testing/test_superres.py``) or
    ``"auto"`` (bfloat16 where the device supports it).
    """
    import torch

    from mskquant.device import select_device, use_bf16

    progress = as_progress(progress)
    f, axis = check_input(thick, model.input, factor)
    t0 = time.perf_counter()
    tci = dg.tricubic_to_fine(thick, f, axis)
    t1 = time.perf_counter()
    dev = device if isinstance(device, torch.device) else select_device(device)
    net = model.net.to(dev).to(memory_format=torch.channels_last_3d).eval()
    a = dg.array_axis(axis)
    x = np.moveaxis(tci.array, a, 0).astype(np.float32)
    scale = float(np.percentile(x, SCALE_PERCENTILE))
    if not np.isfinite(scale) or scale <= 0:
        scale = float(np.abs(x).max()) or 1.0
    bf16 = use_bf16(precision, dev)
    y = _run_slabs(net, x / np.float32(scale), dev, slab, progress.sub(0.02, 1.0), bf16) * np.float32(scale)
    sr = Image(np.ascontiguousarray(np.moveaxis(y, 0, a)), tci.geometry)
    t2 = time.perf_counter()
    return SuperResResult(sr, tci, f, axis, {"tci_s": t1 - t0, "network_s": t2 - t1, "total_s": t2 - t0},
                          precision="bfloat16" if bf16 else "float32")
