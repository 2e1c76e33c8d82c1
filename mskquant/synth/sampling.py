"""Tissue fractions on a target grid from a fine label (tissue-code) map.

Each target voxel is represented by sample points: a regular ``ni x nj`` pattern in plane and
``nk`` points through the slice, placed at equal-probability positions of the slice profile
(box: evenly through the slice thickness; Gaussian: at the quantiles of a normal profile whose
FWHM is the slice thickness, so the slice's middle counts more). Every point takes the tissue
code of the nearest fine voxel; the counts per code are the voxel's partial-volume fractions
(``counts / n_points``). A contrast rendered from fractions is a weighted sum, so one costly
sampling serves any number of random appearances.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from mskquant.image import Geometry
from mskquant.progress import Progress, as_progress

PROFILES = ("box", "gauss")


def slab_offsets(subsamples: Tuple[int, int, int], slice_thickness_mm: float, slice_spacing_mm: float,
                 profile: str = "box") -> np.ndarray:
    """Sample points within a voxel, in voxel units ``(n, 3)`` (i, j, k)."""
    from scipy.special import ndtri

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
    ni, nj, nk = (int(v) for v in subsamples)
    oi = (np.arange(ni) + 0.5) / ni - 0.5
    oj = (np.arange(nj) + 0.5) / nj - 0.5
    q = (np.arange(nk) + 0.5) / nk
    if profile == "box":
        ok = (q - 0.5) * slice_thickness_mm
    else:  # Gaussian profile, FWHM = slice thickness
        ok = ndtri(q) * slice_thickness_mm / 2.3548
    ok = ok / slice_spacing_mm
    g = np.stack(np.meshgrid(oi, oj, ok, indexing="ij"), axis=-1).reshape(-1, 3)
    return g.astype(np.float32)


def sample_codes(codes_flat: np.ndarray, fine_shape_kji, to_fine: np.ndarray, k: int, nj: int, ni: int,
                 offsets: np.ndarray, outside_code: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Codes at every sample point of target slice ``k``: ``(codes [nj*ni, n], flat fine index)``.

    ``to_fine`` maps target IJK to fine IJK (4x4). Points outside the fine grid get
    ``outside_code`` (flat index 0).
    """
    jj, ii = np.meshgrid(np.arange(nj, dtype=np.float32), np.arange(ni, dtype=np.float32), indexing="ij")
    pi = ii[..., None] + offsets[None, None, :, 0]
    pj = jj[..., None] + offsets[None, None, :, 1]
    pk = np.float32(k) + offsets[None, None, :, 2]
    t = to_fine.astype(np.float32)
    fi = t[0, 0] * pi + t[0, 1] * pj + t[0, 2] * pk + t[0, 3]
    fj = t[1, 0] * pi + t[1, 1] * pj + t[1, 2] * pk + t[1, 3]
    fk = t[2, 0] * pi + t[2, 1] * pj + t[2, 2] * pk + t[2, 3]
    ri, rj, rk = (np.rint(a).astype(np.int64) for a in (fi, fj, fk))
    nz, ny, nx = (int(s) for s in fine_shape_kji)
    inside = (ri >= 0) & (ri < nx) & (rj >= 0) & (rj < ny) & (rk >= 0) & (rk < nz)
    flat = np.where(inside, (rk * ny + rj) * nx + ri, 0)
    code = np.where(inside, codes_flat[flat], outside_code)
    n = offsets.shape[0]
    return code.reshape(nj * ni, n), flat.reshape(nj * ni, n)


def tissue_counts(codes: np.ndarray, fine: Geometry, target: Geometry, n_codes: int, offsets: np.ndarray,
                  progress: "Progress | None" = None, outside_code: int = 0) -> np.ndarray:
    """Sample-point counts per code ``uint8 [nk, nj, ni, n_codes]`` (fractions = counts / len(offsets))."""
    progress = as_progress(progress)
    if offsets.shape[0] > 255:
        raise ValueError("at most 255 sample points per voxel (counts are uint8)")
    to_fine = fine.ras_to_ijk @ target.ijk_to_ras
    nk, nj, ni = target.shape_kji
    flat_codes = np.ascontiguousarray(codes).reshape(-1)
    out = np.zeros((nk, nj, ni, n_codes), np.uint8)
    n_vox = nj * ni
    vox = np.repeat(np.arange(n_vox), offsets.shape[0])
    for k in range(nk):
        progress(k / nk, f"Sampling tissue fractions ({k + 1}/{nk})")
        code, _ = sample_codes(flat_codes, codes.shape, to_fine, k, nj, ni, offsets, outside_code)
        counts = np.bincount(vox * n_codes + code.ravel(), minlength=n_vox * n_codes)
        out[k] = counts.reshape(nj, ni, n_codes)
    progress(1.0, "Tissue fractions ready")
    return out


def subsamples_for(target_spacing_mm, fine_spacing_mm: float, slice_thickness_mm: Optional[float] = None,
                   max_in_plane: int = 2, max_through: int = 7) -> Tuple[int, int, int]:
    """Enough sample points to see the fine grid's detail in each target voxel (capped for speed)."""
    sx, sy, sz = (float(v) for v in target_spacing_mm)
    thick = float(slice_thickness_mm or sz)
    ni = int(min(max_in_plane, max(1, round(sx / fine_spacing_mm))))
    nj = int(min(max_in_plane, max(1, round(sy / fine_spacing_mm))))
    nk = int(min(max_through, max(1, round(thick / fine_spacing_mm))))
    return ni, nj, nk
