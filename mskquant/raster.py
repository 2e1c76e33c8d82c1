"""Rasterising drawn shapes (ROI boxes, closed curves) onto a voxel grid — numeric core."""

from __future__ import annotations

import numpy as np

from .image import Geometry


def polygon_mask(shape_ji, polygon_ij: np.ndarray) -> np.ndarray:
    """Pixels whose centres lie inside a closed polygon (even-odd rule).

    ``polygon_ij`` holds (i, j) = (column, row) vertices in pixel coordinates.
    """
    rows, cols = shape_ji
    poly = np.asarray(polygon_ij, dtype=float)
    mask = np.zeros((rows, cols), dtype=bool)
    if len(poly) < 3:
        return mask
    i0 = max(int(np.floor(poly[:, 0].min())), 0)
    i1 = min(int(np.ceil(poly[:, 0].max())), cols - 1)
    j0 = max(int(np.floor(poly[:, 1].min())), 0)
    j1 = min(int(np.ceil(poly[:, 1].max())), rows - 1)
    if i1 < i0 or j1 < j0:
        return mask
    jj, ii = np.mgrid[j0:j1 + 1, i0:i1 + 1]
    x = ii.astype(float)
    y = jj.astype(float)
    inside = np.zeros_like(x, dtype=bool)
    xs, ys = poly[:, 0], poly[:, 1]
    xe, ye = np.roll(xs, -1), np.roll(ys, -1)
    for xa, ya, xb, yb in zip(xs, ys, xe, ye):
        if ya == yb:
            continue
        crosses = (ya > y) != (yb > y)
        x_at = xa + (y - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (x < x_at)
    mask[j0:j1 + 1, i0:i1 + 1] = inside
    return mask


def box_mask(geometry: Geometry, box_to_ras: np.ndarray, size_mm) -> np.ndarray:
    """Voxels (``[k, j, i]``) whose centres lie inside an oriented box.

    ``box_to_ras`` is the 4x4 matrix from box coordinates (origin at the box centre, axes
    along its edges) to RAS; ``size_mm`` the edge lengths.
    """
    k, j, i = np.meshgrid(*(np.arange(n) for n in geometry.shape_kji), indexing="ij")
    ijk1 = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    local = np.linalg.inv(box_to_ras) @ geometry.ijk_to_ras @ ijk1
    half = np.asarray(size_mm, dtype=float)[:, None] / 2.0
    inside = np.all(np.abs(local[:3]) <= half + 1e-9, axis=0)
    return inside.reshape(geometry.shape_kji)


def curve_mask(geometry: Geometry, points_ras: np.ndarray, max_off_slice_voxels: float = 0.5) -> np.ndarray:
    """Fill a closed curve drawn on one slice of ``geometry``.

    Raises ``ValueError`` when the curve is not within one slice (k spread larger than
    ``max_off_slice_voxels``), because a curve across slices has no unambiguous fill.
    """
    pts = np.c_[np.asarray(points_ras, dtype=float), np.ones(len(points_ras))]
    ijk = (geometry.ras_to_ijk @ pts.T)[:3].T
    k = ijk[:, 2]
    if k.max() - k.min() > 2 * max_off_slice_voxels:
        raise ValueError(f"curve spans slices {k.min():.1f} to {k.max():.1f}")
    kk = int(np.rint(k.mean()))
    mask = np.zeros(geometry.shape_kji, dtype=bool)
    if 0 <= kk < geometry.shape_kji[0]:
        mask[kk] = polygon_mask(geometry.shape_kji[1:], ijk[:, :2])
    return mask
