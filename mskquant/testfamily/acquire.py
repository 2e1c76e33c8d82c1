"""Acquisition of the independent test family: slice profile, Fourier truncation, ghosts, coils.

Each slice is rendered on an in-plane grid ``oversample`` times finer than the matrix,
averaged through a smooth-edged slice profile (a Fermi window, 80 % of the points within the
nominal thickness: what a Hann-windowed sinc pulse excites), multiplied by the sensitivities of
4 receive coils, Fourier transformed and truncated to the matrix (Gibbs ringing at edges),
a random share of phase-encode lines gets a phase error (motion ghosts along the phase-encode
direction), complex Gaussian noise is added per coil, and the coil images are combined by
root-sum-of-squares (a non-central chi noise floor, not Rician).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from mskquant.image import Geometry, rotation_matrix_deg

from . import anatomy as fa


@dataclass
class Protocol:
    matrix: Tuple[int, int] = (384, 288)  # columns (i), rows (j)
    pixel_mm: Tuple[float, float] = (0.36, 0.45)
    n_slices: int = 24
    thickness_mm: float = 3.0
    gap_mm: float = 0.3
    rotation_deg: Tuple[float, float, float] = (0.0, 0.0, 0.0)  # about R, A, S
    centre_offset_mm: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    slices_towards: str = "right"  # the k axis runs towards the patient's right or left
    columns: str = "posterior"  # columns run towards posterior or superior
    oversample: float = 2.0
    slab_points: int = 5
    n_coils: int = 4
    snr: float = 30.0  # mean first-echo femoral cartilage (or tissue) signal / noise SD per coil-combined image
    ghost_fraction: float = 0.05
    ghost_phase_sd: float = 0.5
    bias_sd: float = 0.0  # extra receive bias: exp(bias_sd * a quadratic in position), beyond the coils
    seed: int = 0


def sagittal_grid(centre_ras: Sequence[float], p: Protocol) -> Geometry:
    """The protocol's sagittal grid centred on ``centre_ras`` (+ its offset)."""
    across = np.array([1.0, 0.0, 0.0]) if p.slices_towards == "right" else np.array([-1.0, 0.0, 0.0])
    if p.columns == "posterior":
        col, row = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    else:
        col, row = np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0])
    d = rotation_matrix_deg(p.rotation_deg) @ np.stack([col, row, across], axis=1)
    spacing = np.array([p.pixel_mm[0], p.pixel_mm[1], p.thickness_mm + p.gap_mm])
    shape = np.array([p.matrix[0], p.matrix[1], p.n_slices])
    centre = np.asarray(centre_ras, float) + np.asarray(p.centre_offset_mm, float)
    origin = centre - d @ (spacing * (shape - 1) / 2.0)
    m = np.eye(4)
    m[:3, :3] = d * spacing[None, :]
    m[:3, 3] = origin
    return Geometry(tuple(int(v) for v in shape), m)


def _profile(p: Protocol) -> Tuple[np.ndarray, np.ndarray]:
    """Through-slice offsets (mm) and weights of the slice profile."""
    u = np.linspace(-0.8, 0.8, p.slab_points) * p.thickness_mm
    w = 1.0 / (1.0 + np.exp((np.abs(u) - p.thickness_mm / 2.0) / (0.12 * p.thickness_mm)))
    return u, w / w.sum()


def _coil_sensitivities(rng: np.random.Generator, centre_ras: np.ndarray, n: int):
    """Complex sensitivities as functions of RAS points: coils on a ring about the knee's S axis."""
    angles = rng.uniform(0, 2 * np.pi) + np.arange(n) * 2 * np.pi / n
    radius = rng.uniform(70.0, 95.0)
    width = rng.uniform(60.0, 90.0)
    pos = np.stack([centre_ras[0] + radius * np.cos(angles), centre_ras[1] + radius * np.sin(angles),
                    centre_ras[2] + rng.uniform(-20, 20, n)], axis=1)
    phases = rng.uniform(-np.pi, np.pi, (n, 4))

    def sens(ras: np.ndarray) -> np.ndarray:  # ras [..., 3] -> [n, ...]
        out = []
        for c in range(n):
            d2 = ((ras - pos[c]) ** 2).sum(-1)
            ph = phases[c, 0] + 0.01 * (phases[c, 1] * (ras[..., 0] - centre_ras[0])
                                        + phases[c, 2] * (ras[..., 1] - centre_ras[1])
                                        + phases[c, 3] * (ras[..., 2] - centre_ras[2]))
            out.append(np.exp(-d2 / (2 * width ** 2)) * np.exp(1j * ph))
        s = np.stack(out)
        return s / np.sqrt((np.abs(s) ** 2).sum(0).mean())

    return sens


TRUTH_POINTS = 5
SignalFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def acquire(knee: fa.FamilyKnee, grid: Geometry, p: Protocol, signal: SignalFn, n_echoes: int,
            truth_codes: Sequence[int] = (), reference_code: int = fa.FCART, progress=None
            ) -> Tuple[np.ndarray, Dict[int, np.ndarray], float]:
    """Magnitude images ``float32 [E, nk, nj, ni]``, truth fractions per code ``[nk, nj, ni]`` and
    the effective noise SD (``sqrt(coils) * sigma``: the root-sum-of-squares image's second
    moment is ``A^2 + 2 coils sigma^2``, what a Rician-corrected fit needs).

    ``signal(codes, depth, texture, ras)`` gives the noise-free echoes ``[..., E]`` of sample
    points (``ras``: the points' positions in the middle of the slice). The coil sensitivities
    vary slowly, so each coil image is the Fourier-truncated image times its sensitivity.
    """
    from scipy import fft as sfft

    rng = np.random.default_rng(p.seed)
    ni, nj = p.matrix
    nk = p.n_slices
    oi = sfft.next_fast_len(int(round(ni * p.oversample)))
    oj = sfft.next_fast_len(int(round(nj * p.oversample)))
    u, w = _profile(p)
    m = grid.ijk_to_ras
    mf = knee.geometry.ras_to_ijk @ m  # target ijk -> fine ijk
    slice_mm = float(np.linalg.norm(m[:3, 2]))
    fine_shape = knee.codes.shape
    centre = m[:3, :3] @ (np.array(grid.shape_ijk) - 1) / 2.0 + m[:3, 3]
    sens = _coil_sensitivities(rng, centre, p.n_coils)
    ii = (np.arange(oi) + 0.5) * ni / oi - 0.5
    jj = (np.arange(oj) + 0.5) * nj / oj - 0.5
    J, I = np.meshgrid(jj, ii, indexing="ij")
    Jt, It = np.meshgrid(np.arange(nj, dtype=float), np.arange(ni, dtype=float), indexing="ij")
    codes_flat = knee.codes.reshape(-1)
    depth_flat = knee.depth.reshape(-1)
    tex_flat = knee.texture.reshape(-1)
    truth = {c: np.zeros((nk, nj, ni), np.float32) for c in truth_codes}
    clean = np.zeros((n_echoes, nk, nj, ni), np.complex64)
    first = np.zeros((nk, nj, ni), np.float32)
    r0, c0 = (oj - nj) // 2, (oi - ni) // 2
    for k in range(nk):
        if progress:
            progress(k / nk, f"Acquiring slice {k + 1}/{nk}")
        ras = m[:3, 0] * I[..., None] + m[:3, 1] * J[..., None] + (m[:3, 2] * k + m[:3, 3])
        fine0 = mf[:3, 0] * I[..., None] + mf[:3, 1] * J[..., None] + (mf[:3, 2] * k + mf[:3, 3])
        acc = np.zeros((oj, oi, n_echoes), np.float32)
        tacc = {c: np.zeros((oj, oi), np.float32) for c in truth_codes}
        def lookup(mm):
            f = fine0 + mf[:3, 2] * (mm / slice_mm)
            ri, rj, rk = (np.rint(f[..., a]).astype(np.int64) for a in range(3))
            ok = (ri >= 0) & (ri < fine_shape[2]) & (rj >= 0) & (rj < fine_shape[1]) & (rk >= 0) & (rk < fine_shape[0])
            flat = np.where(ok, (rk * fine_shape[1] + rj) * fine_shape[2] + ri, 0)
            return np.where(ok, codes_flat[flat], fa.AIR), flat

        for uu, ww in zip(u, w):
            code, flat = lookup(uu)
            acc += ww * signal(code, depth_flat[flat].astype(np.float32), tex_flat[flat].astype(np.float32), ras)
        if truth_codes:  # truth: the tissue inside the nominal slice, 5 evenly spaced points
            for uu in ((np.arange(TRUTH_POINTS) + 0.5) / TRUTH_POINTS - 0.5) * p.thickness_mm:
                code, _ = lookup(uu)
                for c in truth_codes:
                    tacc[c] += (code == c)
        for c in truth_codes:
            truth[c][k] = _downsample(tacc[c] / TRUTH_POINTS, nj, ni)
        first[k] = _downsample(acc[..., 0], nj, ni)
        ksp = sfft.fftshift(sfft.fft2(np.moveaxis(acc, -1, 0), axes=(-2, -1), workers=2), axes=(-2, -1))
        ksp = ksp[:, r0:r0 + nj, c0:c0 + ni]
        clean[:, k] = sfft.ifft2(sfft.ifftshift(ksp, axes=(-2, -1)), axes=(-2, -1), workers=2) * (nj * ni) / (oj * oi)
    ref_mask = truth.get(reference_code)
    if ref_mask is not None and (ref_mask >= 0.5).any():
        reference = float(first[ref_mask >= 0.5].mean())
    else:
        reference = float(first[first > 0.1 * np.percentile(first, 99)].mean())
    sigma = reference / p.snr
    # motion ghosts: a phase error on some phase-encode lines (rows), the same in every echo and coil
    ghost_lines = rng.random(nj) < p.ghost_fraction
    ghost = np.exp(1j * np.where(ghost_lines, rng.normal(0.0, p.ghost_phase_sd, nj), 0.0)).astype(np.complex64)
    if ghost_lines.any():
        ksp = sfft.fft(clean, axis=2, workers=2) * ghost[None, None, :, None]
        clean = sfft.ifft(ksp, axis=2, workers=2).astype(np.complex64)
    out = np.zeros((n_echoes, nk, nj, ni), np.float32)
    poly = rng.normal(0.0, 1.0, 9)
    for k in range(nk):
        ras = m[:3, 0] * It[..., None] + m[:3, 1] * Jt[..., None] + (m[:3, 2] * k + m[:3, 3])
        s = sens(ras).astype(np.complex64)  # [coils, nj, ni]
        if p.bias_sd > 0:
            x = (ras - centre) / 60.0
            q = (poly[0] * x[..., 0] + poly[1] * x[..., 1] + poly[2] * x[..., 2] + poly[3] * x[..., 0] * x[..., 1]
                 + poly[4] * x[..., 1] * x[..., 2] + poly[5] * x[..., 0] * x[..., 2] + poly[6] * x[..., 0] ** 2
                 + poly[7] * x[..., 1] ** 2 + poly[8] * x[..., 2] ** 2) / 3.0
            s = s * np.exp(p.bias_sd * q).astype(np.float32)[None]
        for e in range(n_echoes):
            coil = clean[e, k][None] * s
            coil = coil + sigma * (rng.standard_normal(coil.shape, dtype=np.float32)
                                   + 1j * rng.standard_normal(coil.shape, dtype=np.float32))
            out[e, k] = np.sqrt((np.abs(coil) ** 2).sum(0))
    return out, truth, float(np.sqrt(p.n_coils) * sigma)


def _downsample(a: np.ndarray, nj: int, ni: int) -> np.ndarray:
    """Mean of the fine samples falling in each matrix pixel (any oversampling factor)."""
    oj, oi = a.shape
    rj = np.minimum((np.arange(oj) * nj) // oj, nj - 1)
    ri = np.minimum((np.arange(oi) * ni) // oi, ni - 1)
    idx = (rj[:, None] * ni + ri[None, :]).ravel()
    s = np.bincount(idx, weights=a.ravel().astype(np.float64), minlength=nj * ni)
    cnt = np.bincount(idx, minlength=nj * ni)
    return (s / np.maximum(cnt, 1)).reshape(nj, ni).astype(np.float32)
