"""Femorotibial joint localiser: where the knee joint lies in a sagittal slice, from the anatomy
(numeric core, no Slicer).

The template alignment of :mod:`.preprocessing` matches intensities, so it follows whatever
looks most like the template; on a knee imaged with another look it can settle 20 mm or more
off the joint. This small 2D U-Net answers one question that does not depend on the look:
where is the femorotibial joint (the centroid of the tibial cartilage) in this slice? It was
trained the SynthSeg way (Billot et al.): every training knee is rendered from a label map
with a random tissue contrast (swaps included), acquisition, pose, blur, bias, noise and
field of view (``scripts/train_joint_localiser.py``), so the only thing that stays put is
the anatomy.

Each sagittal slice is resampled onto a canvas of ``CANVAS_PX`` x ``CANVAS_PX`` pixels of
``CANVAS_MM`` mm centred on the slice's field of view; the network outputs a heat map whose
softmax over the canvas is the joint position's probability. The slices around the knee's
centre are averaged; the estimate is the probability-weighted mean near the peak, and its
confidence is the probability mass there.

The same localiser, run on a model's template, says where the template's own joint lies, so
the preprocessing can keep the template alignment within ``WINDOW_MM`` of the joint (see
:func:`.preprocessing.prepare_knee`). Nothing here is tuned on the independent test family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from mskquant.errors import ModelError
from mskquant.unet import UNet2D

ARCHITECTURE_NAME = "knee-joint-localiser"
MODEL_ID = "knee-joint-localiser"
CANVAS_PX = 96
CANVAS_MM = 2.0
FEATURES = (8, 16, 32, 64)
SIGMA_PX = 1.5  # training target: Gaussian of 3 mm SD at the joint
PEAK_RADIUS_PX = 5  # the estimate and its confidence: within 10 mm of the peak
MIN_CONFIDENCE = 0.25  # below this the estimate is not used (the alignment is left unconstrained)
PLANES_USED = 11  # the centre plane +- 5 (15 mm each way at 3 mm) are averaged


def build_localiser(params: Optional[Dict] = None) -> UNet2D:
    params = dict(params or {})
    features = tuple(params.pop("features", FEATURES))
    if params:
        raise ModelError(f"Unknown joint-localiser parameter(s) {sorted(params)}: fix the model registry entry.")
    return UNet2D(1, 1, features, final_activation="none")


def normalise_volume(volume: np.ndarray) -> np.ndarray:
    """Intensities over the 99th percentile of the volume, clipped to [0, 1.5] (no tissue assumed)."""
    v = np.asarray(volume, np.float32)
    ref = float(np.percentile(v, 99.0))
    if not np.isfinite(ref) or ref <= 0:
        return np.zeros_like(v)
    return np.clip(v / ref, 0.0, 1.5)


def canvas_of_slice(plane: np.ndarray, A: np.ndarray, c: np.ndarray, centre_uv: Sequence[float]) -> np.ndarray:
    """One slice on the localiser's canvas, centred on ``centre_uv`` ((inferior, posterior) mm)."""
    from .preprocessing import Alignment, crop_plane

    return crop_plane(plane, A, c, Alignment(0.0, np.asarray(centre_uv, float), 1.0), CANVAS_PX, CANVAS_MM)


def pixel_to_uv(centre_uv: Sequence[float], yx: Sequence[float]) -> np.ndarray:
    """Canvas pixel (row, column) -> (u, v) mm."""
    return np.asarray(centre_uv, float) + CANVAS_MM * (np.asarray(yx, float) - (CANVAS_PX - 1) / 2)


def uv_to_pixel(centre_uv: Sequence[float], uv: Sequence[float]) -> np.ndarray:
    return (np.asarray(uv, float) - np.asarray(centre_uv, float)) / CANVAS_MM + (CANVAS_PX - 1) / 2


def heatmap_loss(logits: torch.Tensor, target_yx: torch.Tensor, sigma_px: float = SIGMA_PX) -> torch.Tensor:
    """Cross-entropy between the canvas softmax and a Gaussian at each target pixel (N, 2)."""
    n, _, h, w = logits.shape
    yy = torch.arange(h, dtype=logits.dtype, device=logits.device).view(1, h, 1)
    xx = torch.arange(w, dtype=logits.dtype, device=logits.device).view(1, 1, w)
    d2 = (yy - target_yx[:, 0].view(n, 1, 1)) ** 2 + (xx - target_yx[:, 1].view(n, 1, 1)) ** 2
    target = torch.softmax((-d2 / (2 * sigma_px ** 2)).view(n, -1), dim=1)
    return -(target * F.log_softmax(logits.view(n, -1), dim=1)).sum(dim=1).mean()


@dataclass
class JointEstimate:
    uv: np.ndarray  # (inferior, posterior) mm of the femorotibial joint
    confidence: float  # probability mass within PEAK_RADIUS_PX of the peak (0..1)
    n_planes: int

    @property
    def usable(self) -> bool:
        return self.confidence >= MIN_CONFIDENCE

    def summary(self) -> dict:
        return {"joint_uv_mm": [round(float(x), 2) for x in self.uv], "confidence": round(self.confidence, 3),
                "planes": self.n_planes, "used": self.usable}


def peak_of(prob: np.ndarray) -> tuple:
    """(row, column) probability-weighted mean within PEAK_RADIUS_PX of the maximum, and its mass."""
    y0, x0 = np.unravel_index(int(np.argmax(prob)), prob.shape)
    yy, xx = np.mgrid[:prob.shape[0], :prob.shape[1]]
    near = (yy - y0) ** 2 + (xx - x0) ** 2 <= PEAK_RADIUS_PX ** 2
    mass = float(prob[near].sum())
    if mass <= 0:
        return np.array([y0, x0], float), 0.0
    return np.array([float((prob * yy)[near].sum()), float((prob * xx)[near].sum())]) / mass, mass


class JointLocaliser:
    """A trained localiser on a device; :meth:`locate` on a knee, :meth:`locate_in_crops` on a template."""

    def __init__(self, network: UNet2D, device: torch.device, model_id: str = "", version: str = "") -> None:
        self.network = network.to(device).eval()
        self.device = device
        self.model_id = model_id
        self.version = version

    @torch.no_grad()
    def probabilities(self, canvases: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(canvases, np.float32))[:, None].to(self.device)
        logits = self.network(x)
        n = logits.shape[0]
        return torch.softmax(logits.view(n, -1), dim=1).view(n, CANVAS_PX, CANVAS_PX).cpu().numpy()

    def locate(self, array_kji: np.ndarray, frame, plane_indices: Sequence[float]) -> JointEstimate:
        """The joint in the (u, v) plane from the slices at ``plane_indices`` (fractional allowed)."""
        from .preprocessing import take_plane

        vol = normalise_volume(array_kji)
        mid = len(plane_indices) // 2
        half = PLANES_USED // 2
        used = list(plane_indices)[max(0, mid - half): mid + half + 1]
        centre = frame.field_centre_uv(used[len(used) // 2])
        canvases = []
        for f in used:
            A, c = frame.slice_affine(float(f))
            canvases.append(canvas_of_slice(take_plane(vol, frame, float(f)), A, c, centre))
        prob = self.probabilities(np.stack(canvases)).mean(axis=0)
        yx, mass = peak_of(prob)
        return JointEstimate(pixel_to_uv(centre, yx), mass, len(used))

    def locate_in_crops(self, planes: np.ndarray, pixel_mm: float) -> JointEstimate:
        """The joint in already cropped planes (a template: ``(n, s, s)`` pixels of ``pixel_mm``,
        centred on the crop): ``uv`` is (down, back) mm from the crop centre."""
        n, s = planes.shape[0], planes.shape[1]
        half = PLANES_USED // 2
        used = planes[max(0, n // 2 - half): n // 2 + half + 1]
        A = np.eye(2) * pixel_mm
        c = -pixel_mm * (s - 1) / 2 * np.ones(2)
        canvases = [canvas_of_slice(normalise_volume(p), A, c, (0.0, 0.0)) for p in used]
        prob = self.probabilities(np.stack(canvases)).mean(axis=0)
        yx, mass = peak_of(prob)
        return JointEstimate(pixel_to_uv((0.0, 0.0), yx), mass, len(used))


def load_localiser(weights_path, architecture: Dict, device: torch.device, model_id: str = MODEL_ID,
                   version: str = "") -> JointLocaliser:
    from mskquant.unet import load_weights

    if architecture.get("name") != ARCHITECTURE_NAME:
        raise ModelError(f"Model '{model_id}' is a {architecture.get('name')!r} network, not {ARCHITECTURE_NAME!r}.")
    net = build_localiser(architecture.get("params", {}))
    load_weights(net, weights_path, f"joint localiser '{model_id}'")
    return JointLocaliser(net, device, model_id, version)


_DEFAULT: Dict[str, JointLocaliser] = {}


def default_localiser(device: torch.device) -> JointLocaliser:
    """The registered localiser (bundled, SHA-256 checked), loaded once per device."""
    key = str(device)
    if key not in _DEFAULT:
        from mskquant.models import ModelStore

        store = ModelStore()
        spec = store.registry.get(MODEL_ID)
        _DEFAULT[key] = load_localiser(store.ensure(spec.id)[0], spec.architecture, device, spec.id, spec.version)
    return _DEFAULT[key]
