"""Class activation maps of the Siamese pain network (numeric core).

Chang et al., Methods, *Class activation mapping and radiologist review*: the final feature
maps of the left and right knee (C x 28 x 28 per slice) are multiplied by the weights of
their fully connected layer, giving a 28 x 28 CAM per slice per knee; the slice with the
highest average CAM is the most pain-relevant one (with the LSE pooling option: the highest
pooled CAM, i.e. the slice that adds most to the decision). MSKQuant then up-samples each CAM back
onto the input slice it came from (:func:`preprocessing.map_planes_to_volume`), so the CAM
volume has the input's size, spacing, origin and direction.

Scale: CAM values are in logit units per pixel (their mean over a slice is that slice's
contribution to the decision). For display and files both knees' CAMs are divided by one
common positive maximum and clipped at 0, so 1 is the hottest spot of the subject and the
two knees stay comparable (the painless knee is usually cool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .network import SiamesePainNet, probability_right

KNEES = ("left", "right")


@dataclass
class PainPrediction:
    p_right_painful: float
    cams: np.ndarray  # (2, 23, h, w) raw CAMs, knee 0 left, 1 right; positive = "this knee hurts"
    evidence: np.ndarray  # (2, 23) each slice's contribution to its knee's side (mean CAM with average pooling)

    @property
    def painful_side(self) -> str:
        return "right" if self.p_right_painful >= 0.5 else "left"

    def max_cam_plane(self, knee: str) -> int:
        """Model plane (0..22) contributing most to ``knee`` being painful: the paper's most
        pain-relevant slice (highest mean CAM; with LSE pooling, the highest pooled CAM)."""
        return int(np.argmax(self.evidence[KNEES.index(knee)]))

    def scaled_cams(self) -> np.ndarray:
        """CAMs clipped at 0 and divided by the subject's largest value (0..1)."""
        top = float(self.cams.max())
        if top <= 0:
            return np.zeros_like(self.cams)
        return np.clip(self.cams / top, 0.0, 1.0).astype(np.float32)


def prepare_model_for_inference(model: SiamesePainNet, device: torch.device) -> SiamesePainNet:
    """Batch norm folded into the convolutions (exact in eval mode) and channels-last on CPU."""
    from mskquant.inference import prepare_for_inference

    return prepare_for_inference(model, device)


@torch.no_grad()
def predict(model: SiamesePainNet, left_planes: np.ndarray, right_planes: np.ndarray,
            device: Optional[torch.device] = None) -> PainPrediction:
    """Probability that the right knee is the painful one, and the CAMs of both knees.

    ``left_planes`` / ``right_planes``: (23, 224, 224) float32 in [0, 1] from
    :func:`preprocessing.prepare_knee`. All 46 slices go through the network in one batch.
    """
    device = device or torch.device("cpu")
    x = torch.from_numpy(np.stack([left_planes, right_planes])[None].astype(np.float32)).to(device)
    logits, cams, contributions = model.forward_with_cam(x)
    p = float(probability_right(logits)[0].cpu())
    return PainPrediction(p, cams[0].float().cpu().numpy(), contributions[0].float().cpu().numpy())


def peak_index(volume_kji: np.ndarray) -> tuple:
    """``(k, j, i)`` of the largest value of a volume."""
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(volume_kji)), volume_kji.shape))


def peak_inside(cam_volume_kji: np.ndarray, mask_kji: np.ndarray) -> bool:
    """Pointing: does the CAM maximum fall inside the mask (False for a CAM without evidence)?"""
    if float(np.max(cam_volume_kji)) <= 0:
        return False
    return bool(np.asarray(mask_kji, bool)[peak_index(cam_volume_kji)])
