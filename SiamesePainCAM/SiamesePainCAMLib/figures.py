"""Pictures of the results: CAM overlays (as in Chang et al., Figure 3) and ROC curves
(Figure 4) — numeric core, written as PNG through :mod:`mskquant.render` (no matplotlib).

Slices are shown as the network saw them: the 105 mm field around the joint after the
alignment, superior up and anterior to the left as in Slicer's sagittal view.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

from mskquant import render

from .pipeline import SIDES, PainResult
from .preprocessing import HALF

CAM_DISPLAY_FLOOR = 0.05  # CAM below this is not drawn (the input shows through)


def upsample_cam(cam28: np.ndarray, size: int) -> np.ndarray:
    """Bilinear up-sampling of a CAM (cell centres to pixel centres) to ``size`` x ``size``."""
    h = cam28.shape[0]
    scale = h / size
    coords = (np.arange(size) + 0.5) * scale - 0.5
    rr, cc = np.meshgrid(coords, coords, indexing="ij")
    return ndimage.map_coordinates(cam28, [rr, cc], order=1, mode="nearest")


def heat_overlay(gray01: np.ndarray, cam01: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    base = render.colorize(gray01, "gray", 0.0, 1.0)
    heat = render.colorize(cam01, "heat", 0.0, 1.0)
    alpha = np.where(cam01 >= CAM_DISPLAY_FLOOR, opacity * np.clip(0.4 + 0.6 * cam01, 0, 1), 0.0)
    return render.overlay(base, heat, alpha)


def knee_panel(result: PainResult, side: str, plane: Optional[int] = None, opacity: float = 0.6,
               scale: int = 2) -> np.ndarray:
    k = SIDES.index(side)
    plane = result.max_cam_plane[side] if plane is None else plane
    prepared = result.prepared[side]
    cam = result.prediction.scaled_cams()[k, plane]
    size = prepared.planes.shape[-1]
    rgb = heat_overlay(prepared.planes[plane], upsample_cam(cam, size), opacity)
    p_this = result.p_right_painful if side == "right" else 1.0 - result.p_right_painful
    verdict = "PAINFUL" if result.painful_side == side else "not painful"
    slice_index = int(round(float(prepared.plane_indices[plane])))
    title = (f"{side.capitalize()} knee: {verdict} (p {p_this:.2f}); slice {slice_index} "
             f"(offset {plane - HALF:+d}{', max CAM' if plane == result.max_cam_plane[side] else ''})")
    return render.titled(render.upscale(rgb, scale), title, 14)


def overlay_picture(result: PainResult, opacity: float = 0.6) -> np.ndarray:
    """Both knees at their most pain-relevant slice with the CAM in heat colours, and a colour bar."""
    panels = [knee_panel(result, s, None, opacity) for s in SIDES]
    height = panels[0].shape[0]
    bar = render.colorbar("heat", 0.0, 1.0, "CAM", height=height - 60)
    bar = np.pad(bar, ((0, height - bar.shape[0]), (0, 0), (0, 0)))
    gap = np.zeros((height, 6, 3), np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, bar], axis=1)


def write_overlay_png(result: PainResult, path, opacity: float = 0.6):
    return render.write_png(overlay_picture(result, opacity), path)


def roc_chart(fpr, tpr, auc: float, title: str, label: str) -> render.Chart:
    return render.Chart(f"{title} (AUC {auc:.3f})", "1 - specificity", "sensitivity",
                        [render.Series(fpr, tpr, label, "line", (0.8, 0.1, 0.1)),
                         render.Series([0, 1], [0, 1], "chance", "line", (0.6, 0.6, 0.6), 1.0)],
                        x_range=(0, 1), y_range=(0, 1))
