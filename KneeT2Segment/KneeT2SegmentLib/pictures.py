"""Report pictures: the T2 projection maps (Thomas et al. Figure 4), the change map with its
focal clusters (2.6.3) and a T2 overlay on a MESE slice. Drawn with :mod:`mskquant.render`
(numpy + VTK PNG writer), the same in Slicer and on the command line.

Projection maps are drawn with one row per sagittal slice, medial at the top, and one column
per 5-degree bin, anterior (trochlea) on the left and posterior on the right; cells keep the
physical aspect (slice spacing : arc length of 5 degrees on the fitted circle). Dashed lines
mark the zone boundaries (-35 and +25 degrees) and the medial/lateral boundary.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from mskquant import render

from .subregions import ANTERIOR_MAX_DEG, CENTRAL_MAX_DEG, ProjectionMaps

T2_RANGE_MS = (0.0, 100.0)
NAN_RGB = (0.12, 0.12, 0.12)
CELL_W = 8


def _columns(*maps: np.ndarray) -> Tuple[int, int]:
    occupied = np.zeros(maps[0].shape[1], bool)
    for m in maps:
        occupied |= np.isfinite(m).any(axis=0)
    idx = np.nonzero(occupied)[0]
    if idx.size == 0:
        return 0, maps[0].shape[1]
    return max(0, int(idx[0]) - 1), min(maps[0].shape[1], int(idx[-1]) + 2)


def _cell_height(slice_spacing_mm: float, radius_mm: float, bin_deg: float) -> int:
    arc = max(radius_mm, 1.0) * math.radians(bin_deg)
    return int(min(40, max(4, round(CELL_W * slice_spacing_mm / arc))))


def _cells(values_rgb: np.ndarray, h: int) -> np.ndarray:
    return np.repeat(np.repeat(values_rgb, h, axis=0), CELL_W, axis=1)


def _dashed_vline(rgb: np.ndarray, x: int, color=(255, 255, 255)) -> None:
    if 0 <= x < rgb.shape[1]:
        for y0 in range(0, rgb.shape[0], 6):
            rgb[y0:y0 + 3, x] = color


def _dashed_hline(rgb: np.ndarray, y: int, color=(255, 255, 255)) -> None:
    if 0 <= y < rgb.shape[0]:
        for x0 in range(0, rgb.shape[1], 6):
            rgb[y, x0:x0 + 3] = color


def _annotate(rgb: np.ndarray, c0: int, bin_deg: float, boundary_row: float, h: int) -> np.ndarray:
    for angle in (ANTERIOR_MAX_DEG, CENTRAL_MAX_DEG):
        _dashed_vline(rgb, int(round(((angle + 180.0) / bin_deg - c0) * CELL_W)))
    _dashed_hline(rgb, int((math.floor(boundary_row) + 1) * h))
    pad = np.full((rgb.shape[0] + 36, rgb.shape[1] + 70, 3), 0, np.uint8)
    pad[18:18 + rgb.shape[0], 64:64 + rgb.shape[1]] = rgb
    pad = render.put_text(pad, "medial", 20, 2, 12)
    pad = render.put_text(pad, "lateral", 18 + rgb.shape[0] - 16, 2, 12)
    pad = render.put_text(pad, "anterior", 18 + rgb.shape[0] + 2, 64, 12)
    pad = render.put_text(pad, "posterior", 18 + rgb.shape[0] + 2, 64 + rgb.shape[1] - 60, 12)
    x_c = 64 + int(round(((ANTERIOR_MAX_DEG + CENTRAL_MAX_DEG) / 2 + 180.0) / bin_deg - c0) * CELL_W) - 20
    pad = render.put_text(pad, "central", 2, max(64, x_c), 12)
    return pad


def projection_image(proj: ProjectionMaps, title: str = "T2 projection") -> np.ndarray:
    c0, c1 = _columns(proj.all)
    h = _cell_height(proj.slice_spacing_mm, proj.radius_mm, proj.bin_deg)
    panels = []
    for name, label in (("all", "All layers"), ("deep", "Deep"), ("superficial", "Superficial")):
        m = proj.layer(name)[:, c0:c1]
        rgb = _cells(render.colorize(m, "t2", *T2_RANGE_MS, nan_rgb=NAN_RGB), h)
        valid = m[np.isfinite(m)]
        mean = f"{valid.mean():.1f}" if valid.size else "-"
        panels.append(render.titled(_annotate(rgb, c0, proj.bin_deg, proj.boundary_row, h),
                                    f"{label}: mean T2 {mean} ms"))
    body = render.grid(panels, 1, gap=6)
    bar = render.colorbar("t2", *T2_RANGE_MS, "T2 (ms)", height=min(240, body.shape[0] - 40))
    canvas = np.zeros((body.shape[0], body.shape[1] + bar.shape[1] + 6, 3), np.uint8)
    canvas[:, :body.shape[1]] = body
    canvas[:bar.shape[0], body.shape[1] + 6:] = bar
    return render.titled(canvas, f"{title} ({proj.laterality} knee; rows: sagittal slices, columns: "
                                 f"{proj.bin_deg:g} deg bins)")


def projection_png(proj: ProjectionMaps, path, title: str = "T2 projection") -> Path:
    return render.write_png(projection_image(proj, title), path)


def change_image(change, title: str = "T2 change") -> np.ndarray:
    """Baseline, aligned follow-up and their difference with the focal clusters outlined."""
    c0, c1 = _columns(change.baseline_map, change.followup_map)
    h = _cell_height(change.slice_spacing_mm, change.radius_mm, change.bin_deg)
    panels = []
    for m, label in ((change.baseline_map, "Baseline"), (change.followup_map, "Follow-up (aligned)")):
        v = m[:, c0:c1]
        rgb = _cells(render.colorize(v, "t2", *T2_RANGE_MS, nan_rgb=NAN_RGB), h)
        panels.append(render.titled(_annotate(rgb, c0, change.bin_deg, change.boundary_row, h),
                                    f"{label}: T2 0-100 ms"))
    d = change.difference[:, c0:c1]
    finite = np.isfinite(d)
    vmax = max(5.0, float(np.nanpercentile(np.abs(d[finite]), 99))) if finite.any() else 5.0
    rgb = _cells(render.colorize(d, "diverging", -vmax, vmax, nan_rgb=NAN_RGB), h)
    clusters = _cells((change.cluster_labels[:, c0:c1] > 0).astype(np.uint8)[..., None].repeat(3, -1), h)[..., 0] > 0
    rgb = render.mask_overlay(rgb, clusters, (0.0, 0.0, 0.0), outline=True)
    panels.append(render.titled(_annotate(rgb, c0, change.bin_deg, change.boundary_row, h),
                                f"Change, -{vmax:.0f} to +{vmax:.0f} ms: {change.n_clusters} focal cluster(s), "
                                f"{change.percent_area:.1f} % of the plate"))
    body = render.grid(panels, 1, gap=6)
    bar = render.colorbar("diverging", -round(vmax), round(vmax), "change (ms)", height=min(200, body.shape[0] - 40))
    canvas = np.zeros((body.shape[0], body.shape[1] + bar.shape[1] + 6, 3), np.uint8)
    canvas[:, :body.shape[1]] = body
    canvas[:bar.shape[0], body.shape[1] + 6:] = bar
    return render.titled(canvas, f"{title}: clusters = pixels > mean + 1 SD ({change.threshold_ms:.1f} ms), "
                                 f"> 1 % of the plate")


def change_png(change, path, title: str = "T2 change") -> Path:
    return render.write_png(change_image(change, title), path)


def t2_overlay_png(echo: np.ndarray, t2_ms: np.ndarray, geometry, path, slice_index: Optional[int] = None,
                   title: str = "T2") -> Path:
    """One MESE slice (grey) with the cartilage T2 in colour (0-100 ms)."""
    if slice_index is None:
        counts = np.isfinite(t2_ms).sum(axis=(1, 2))
        slice_index = int(np.argmax(counts))
    base = render.colorize(render.display_slice(echo, geometry, slice_index), "gray")
    t2 = render.display_slice(t2_ms, geometry, slice_index)
    color = render.colorize(t2, "t2", *T2_RANGE_MS)
    rgb = render.overlay(base, color, np.isfinite(t2).astype(float))
    sp = geometry.spacing
    aspect = sp[1] / sp[0]
    rows = int(round(rgb.shape[0] * aspect))
    rgb = render.resize_nearest(rgb, rows, rgb.shape[1])
    scale = max(1, 720 // max(rgb.shape))
    return render.write_png(render.titled(render.upscale(rgb, scale), f"{title} (slice {slice_index + 1})"), path)


# --- agreement (Thomas et al. 2.6.2, Figure 2 and SM.7) ---------------------------------------------------
def agreement_png(scan, path, title: str = "Mean T2 per subregion: A vs B") -> Path:
    """Mean T2 of the 12 subregions from segmentation A and from B (one scan)."""
    from .subregions import SUBREGION_NAMES

    labels = sorted(SUBREGION_NAMES)
    a = [scan.mean_t2_a[SUBREGION_NAMES[lab]] for lab in labels]
    b = [scan.mean_t2_b[SUBREGION_NAMES[lab]] for lab in labels]
    chart = render.Chart(f"{title} (Dice {scan.dice:.3f})", "subregion (1 DMA ... 12 SLP)", "mean T2 (ms)",
                         [render.Series(labels, a, "A (reference)", "points", (0.1, 0.3, 0.8)),
                          render.Series(labels, b, "B", "points", (0.9, 0.45, 0.1))])
    return render.chart_png(chart, path)


def bland_altman_png(region, path, title: str = "") -> Path:
    """Bland-Altman plot of one region's mean T2 over scans: B - A against the mean, bias and 95 % limits."""
    means = (region.a + region.b) / 2.0
    diff = region.b - region.a
    chart = render.Chart(title or f"{region.region}: Bland-Altman of mean T2 (n = {region.n_scans})",
                         "mean of A and B (ms)", "B - A (ms)",
                         [render.Series(means, diff, "scans", "points", (0.1, 0.3, 0.8))],
                         [render.HLine(region.bias_ms, f"bias {region.bias_ms:+.2f} ms", (0.1, 0.4, 0.9)),
                          render.HLine(region.upper_limit_ms, f"+1.96 SD {region.upper_limit_ms:+.2f}", (0.95, 0.5, 0.1)),
                          render.HLine(region.lower_limit_ms, f"-1.96 SD {region.lower_limit_ms:+.2f}", (0.2, 0.7, 0.2))])
    return render.chart_png(chart, path)


def segmentation_overlay_png(echo: np.ndarray, masks, geometry, path, slice_index: Optional[int] = None,
                             title: str = "") -> Path:
    """One sagittal MESE slice with up to two cartilage masks: A filled blue, B outlined orange."""
    from .segmentation import sagittal_layout

    layout = sagittal_layout(geometry)
    img = layout.to_canonical(echo)
    ms = [layout.to_canonical(np.asarray(m, bool)) for m in masks]
    if slice_index is None:
        slice_index = int(np.argmax(ms[0].sum(axis=(1, 2))))
    s = img[slice_index]
    rgb = render.colorize(s, "gray", float(np.percentile(s, 1)), float(np.percentile(s, 99.5)))
    rgb = render.upscale(rgb, 2)
    for n, (m, color) in enumerate(zip(ms, ((0.2, 0.5, 1.0), (1.0, 0.55, 0.1)))):
        big = np.repeat(np.repeat(m[slice_index], 2, axis=0), 2, axis=1)
        rgb = render.mask_overlay(rgb, big, color, 0.4 if n == 0 else 1.0, outline=n > 0)
    return render.write_png(render.titled(rgb, title or f"sagittal slice {slice_index}"), path)
