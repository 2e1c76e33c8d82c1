"""Noise-corrected mono-exponential T2 mapping of multi-echo spin-echo (MESE) series.

Implements the T2 step of Thomas et al., "Open source software for automatic subregional
assessment of knee cartilage degradation using quantitative T2 relaxometry and deep
learning", section 2.5: the first echo is excluded (stimulated echoes), a noise-corrected
mono-exponential is fitted, and T2 values outside the physiological range [0, 100] ms are
discarded (NaN here).

Signal model (magnitude images, noise of standard deviation sigma in each of the real and
imaginary channels)::

    S(TE) = sqrt(A^2 * exp(-2 TE / T2) + 2 sigma^2)

This is the "noise-corrected exponential" (Miller & Joseph 1993; Raya et al., MRM 2010): the
second moment of a Rician magnitude is exactly E[M^2] = A^2 exp(-2 TE/T2) + 2 sigma^2, so the
fit follows the echoes down into the noise floor instead of reading the floor as slow decay
(which is what biases the log-linear fit upwards). The exact Rician *mean* lies slightly below
this model (sqrt(nu^2 + sigma^2) at high SNR); fitting it by least squares gives T2 about
0.2-0.4 ms too long at SNR 30 because 1/R is convex (Jensen), whereas this model's small
over-correction cancels most of that: measured on 200 000 simulated voxels, T2 35-55 ms,
echoes 20-70 ms, the mean error is -0.1 to +0.15 ms at SNR 30 (log-linear: +0.4 to +0.5 ms).

sigma is given by the user or estimated from the background air of the echo images
(:func:`estimate_noise_sigma`): pure-noise magnitudes are Rayleigh distributed with
E[M^2] = 2 sigma^2 whatever the echo time, so sigma^2 is half the mean squared magnitude of
the voxels whose echo-mean is consistent with pure noise, found iteratively (a root-sum-of-squares
image of n coils has E[M^2] = 2 n sigma^2 in air: the same estimate is then the effective sigma
of the floor); if those voxels decay with TE (no air in the field of view) the estimate is
refused and sigma must be given, if they are unusual noise it is used with a warning
(:func:`judge_background`). One
sigma for the whole series: spatially varying noise (parallel imaging) is not modelled.

Voxels whose echo mean is consistent with pure noise (below the Rayleigh mean + 4 SD) carry
no measurable T2 and stay NaN, as do voxels with non-finite or all-zero echoes (reported).

Solver: a weighted log-linear fit of the floor-corrected signal gives the start, then
vectorised Levenberg-Marquardt iterations on (ln A, R = 1/T2) with per-voxel damping and
accept/reject until every voxel's T2 moves by less than 0.3 % (converged voxels leave the
working set; at most 8 iterations), in float32 numpy over chunks of 32 768 voxels that stay
in the CPU caches; sums over echoes are small matrix products. No torch: a fit with a given
mask does not pay for loading it (about 1.4 s per process).
Chunks run on worker threads (see :func:`_in_parallel`); progress
and cancel are checked between chunks. A log-linear fit (ordinary least squares of ln M over
TE, no noise correction) is computed alongside for comparison. Goodness of fit is the
coefficient of determination R^2 of the fitted echoes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from mskquant.errors import InputError
from mskquant.progress import Progress, as_progress

# Rayleigh (pure noise) magnitude: mean sqrt(pi/2) sigma, SD sqrt((4 - pi)/2) sigma.
RAYLEIGH_MEAN = math.sqrt(math.pi / 2.0)
RAYLEIGH_SD = math.sqrt((4.0 - math.pi) / 2.0)
# A voxel whose echo mean is within this many SDs of the Rayleigh mean carries no signal.
NOISE_Z = 4.0
MIN_BACKGROUND_VOXELS = 1000
# Background-evidence limits (judge_background): warn outside the single-coil noise range,
# refuse only far outside what correct inputs give (scripts/evaluate_noise_estimator.py:
# correct inputs decay 1.00-1.05 with mean/RMS 0.874-0.966; tissue without air decays 2.8-5.3).
DECAY_WARN = 0.15
MEAN_RMS_SINGLE_COIL = (0.82, 0.93)
DECAY_REFUSE = 0.5
MEAN_RMS_REFUSE = 0.75
# no spread at all (a constant or masked background): noise of up to ~125 summed coils stays below
MEAN_RMS_NO_SPREAD = 0.999
R_MIN = 1e-4  # 1/ms: T2 10 s (fluid is ~0.5 s)
R_MAX = 10.0  # 1/ms: T2 0.1 ms


@dataclass
class NoiseEstimate:
    sigma: float
    n_voxels: int
    source: str  # "given" or "background"
    note: str = ""
    echo_decay: float = float("nan")  # echo-1 mean / last-echo mean of the background voxels (noise: 1)
    mean_rms: float = float("nan")  # their mean / RMS (single-coil noise: 0.886; sum of squares of n coils: -> 1)
    warnings: List[str] = field(default_factory=list)


@dataclass
class FitSettings:
    """How T2 is fitted (defaults: Thomas et al. 2.5)."""

    skip_echoes: int = 1  # leading echoes left out (stimulated-echo contamination)
    t2_range_ms: Tuple[float, float] = (0.0, 100.0)  # outside -> NaN
    noise_sigma: Optional[float] = None  # None: estimated from the background
    max_iterations: int = 8
    chunk_voxels: int = 32768
    workers: Optional[int] = None  # threads fitting chunks (default: default_workers(), i.e. the cores)
    loglinear: bool = True  # also compute the log-linear T2 for comparison

    def validate(self, n_echoes: int) -> "FitSettings":
        if self.skip_echoes < 0:
            raise InputError(f"The number of leading echoes to skip must be 0 or more (got {self.skip_echoes}).")
        used = n_echoes - self.skip_echoes
        if used < 3:
            raise InputError(f"Only {used} usable echo(es) remain after skipping the first {self.skip_echoes} of "
                             f"{n_echoes}: a T2 fit needs at least 3; give a series with more echoes or skip fewer.")
        lo, hi = self.t2_range_ms
        if not (0 <= lo < hi):
            raise InputError(f"The valid T2 range must satisfy 0 <= min < max (got {lo}, {hi}).")
        if self.noise_sigma is not None and not (np.isfinite(self.noise_sigma) and self.noise_sigma >= 0):
            raise InputError(f"The noise SD must be a finite number >= 0 (got {self.noise_sigma}): give the noise SD per "
                             f"channel, or leave it out to estimate it from the background air.")
        if self.max_iterations < 1 or self.chunk_voxels < 1:
            raise InputError("Iterations and chunk size must be positive.")
        return self


@dataclass
class T2Fit:
    """Maps in ``[k, j, i]`` order (float32; NaN where no valid T2)."""

    t2_ms: np.ndarray
    amplitude: np.ndarray  # A, the fitted signal at TE = 0
    r2: np.ndarray  # goodness of fit (coefficient of determination)
    t2_loglinear_ms: Optional[np.ndarray]
    noise: NoiseEstimate
    echo_times_used_ms: np.ndarray
    counts: dict = field(default_factory=dict)  # voxels fitted / no signal / out of range / non-finite / zero
    warnings: List[str] = field(default_factory=list)


# --- noise ----------------------------------------------------------------------------------
def _noise_threshold(sigma: float, n_echoes: int) -> float:
    """Echo-mean magnitude above which a voxel is not pure noise (Rayleigh mean + NOISE_Z SD)."""
    return sigma * (RAYLEIGH_MEAN + NOISE_Z * RAYLEIGH_SD / math.sqrt(n_echoes))


def estimate_noise_sigma(echoes: np.ndarray, max_voxels: int = 400_000) -> NoiseEstimate:
    """sigma of the complex noise from background voxels (Rayleigh statistics), all echoes pooled.

    Start from the lowest 2 % of echo-mean magnitudes (air, if there is any), then iterate:
    background = voxels whose echo mean is below the Rayleigh mean + 4 SD for the current
    sigma, sigma^2 = mean(M^2) / 2 over them. Exact zeros (zero-filled or pre-masked
    regions) are not noise and are ignored.
    """
    if echoes.ndim != 4:
        raise ValueError("echoes must be [t, k, j, i]")
    t = echoes.shape[0]
    flat = echoes.reshape(t, -1)
    n = flat.shape[1]
    if n > max_voxels:  # a regular subsample keeps this fast; 1e5 noise voxels pin sigma to ~0.1 %
        step = int(math.ceil(n / max_voxels))
        flat = flat[:, ::step]
    flat = np.asarray(flat, dtype=np.float32)
    finite = np.all(np.isfinite(flat), axis=0)
    mean = np.where(finite, np.nan_to_num(flat).mean(axis=0), np.inf)
    nonzero = np.any(flat != 0, axis=0) & finite
    candidates = mean[nonzero]
    if candidates.size < MIN_BACKGROUND_VOXELS:
        raise InputError("Cannot estimate the noise level: the MESE images have almost no non-zero background "
                         "(zero-filled or masked images); give the noise SD with --noise-sigma.")
    start = float(np.percentile(candidates, 2.0))
    if start <= 0:
        raise InputError("Cannot estimate the noise level from the background (its magnitudes are 0): "
                         "give the noise SD with --noise-sigma.")
    sigma = start / RAYLEIGH_MEAN
    sq = np.square(flat[:, nonzero], dtype=np.float64).mean(axis=0)
    selected = np.zeros(candidates.shape, bool)
    for _ in range(30):
        selected = candidates < _noise_threshold(sigma, t)
        if selected.sum() < MIN_BACKGROUND_VOXELS:
            break
        new = math.sqrt(sq[selected].mean() / 2.0)
        if abs(new - sigma) <= 1e-5 * sigma:
            sigma = new
            break
        sigma = new
    n_bg = int(selected.sum())
    if n_bg < MIN_BACKGROUND_VOXELS:
        raise InputError(f"Cannot estimate the noise level: only {n_bg} background (air) voxels were found in the "
                         f"MESE images; give the noise SD with --noise-sigma.")
    # The evidence is judged on the darker half of the selected voxels: where the field of view has
    # air, that half is air even when faint tissue or ghosts (low SNR, motion) fill the brighter
    # half; without air it is still tissue, and tissue decays with TE.
    bg = flat[:, nonzero][:, selected].astype(np.float64)
    darker = bg[:, np.argsort(candidates[selected], kind="stable")[:max(1, n_bg // 2)]]
    decay = float(darker[0].mean() / darker[-1].mean())
    mean_rms = float(bg.mean() / math.sqrt((bg * bg).mean()))
    frac = n_bg / candidates.size
    note = f"{n_bg} background voxels ({100 * frac:.1f} % of the image), all {t} echoes"
    return NoiseEstimate(float(sigma), n_bg, "background", note, decay, mean_rms, judge_background(decay, mean_rms))


def judge_background(echo_decay: float, mean_rms: float) -> List[str]:
    """Refuse a background that is not noise, warn about one that is unusual noise.

    Without air the darkest voxels are tissue: they decay with echo time (echo-1/last-echo mean
    exp(dTE/T2): 2 or more over a knee protocol's 60 ms for T2 <= 90 ms). Noise does not decay;
    single-coil noise in air has mean/RMS sqrt(pi)/2 = 0.886, a sum-of-squares image of n coils
    more (0.94 for 2, 0.97 for 4, 0.996 for 32 coils; a constant background gives exactly 1), and
    ghosting adds a little decay. The refusal limits lie
    far outside what correct inputs give (scripts/evaluate_noise_estimator.py: the project's
    phantom and the independent test family with 4 coils, ghosts and Gibbs ringing); in between
    the estimate is used (sigma^2 = half the background's second moment is what the noise-floor
    model needs for any coil count) with a warning in the results.
    """
    if not (abs(echo_decay - 1.0) <= DECAY_REFUSE and MEAN_RMS_REFUSE <= mean_rms <= MEAN_RMS_NO_SPREAD):
        raise InputError(f"Cannot estimate the noise level: the darkest voxels of the MESE images do not behave like "
                         f"noise in air (echo-1/last-echo mean {echo_decay:.2f}, mean/RMS {mean_rms:.4f}, expected 1 "
                         f"and 0.886-0.99); give the noise SD with --noise-sigma.")
    warnings = []
    if abs(echo_decay - 1.0) > DECAY_WARN or not (MEAN_RMS_SINGLE_COIL[0] <= mean_rms <= MEAN_RMS_SINGLE_COIL[1]):
        warnings.append(f"The background is not plain single-coil noise in air (echo-1/last-echo mean {echo_decay:.2f}, "
                        f"mean/RMS {mean_rms:.3f}; expected 1 and 0.886): multi-coil sum of squares, ghosting or "
                        f"filtering. The noise floor was taken from its second moment; give --noise-sigma if the "
                        f"scanner's noise level is known.")
    return warnings


# --- the solver --------------------------------------------------------------------------------
def _contract(weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``weights @ rows`` without BLAS: the chunks already run one per core, and BLAS's own
    threads inside them oversubscribe the cores (measured once by hand, not by a repository
    script: 2 chunk threads 0.76 s with BLAS threads vs 0.37 s without, 1.9 M voxels on 2 cores)."""
    return np.einsum("ij,jk->ik", weights, rows)


def _init_weights(te):
    """[5, 2E] matrix turning the stacked [w; w y] rows into the weighted log-linear sums."""
    E = te.shape[0]
    t = te.reshape(E)
    m = np.zeros((5, 2 * E), np.float32)
    m[0, :E] = 1.0  # sum w
    m[1, :E] = t  # sum w TE
    m[2, :E] = t * t  # sum w TE^2
    m[3, E:] = 1.0  # sum w y
    m[4, E:] = t  # sum w TE y
    return m


def _init_loglinear(M, te, floor2, buf):
    """Weighted log-linear start on the floor-corrected signal: (ln A, R).

    y = ln sqrt(max(M^2 - 2 sigma^2, 0.01 M^2)), weights w = S^2 (var ln S ~ sigma^2 / S^2).
    """
    E = M.shape[0]
    m2 = M * M
    w = np.subtract(m2, np.float32(floor2))
    np.maximum(w, np.multiply(m2, np.float32(0.01), out=m2), out=w)
    np.maximum(w, np.float32(1e-12), out=w)
    wy = np.log(w, out=buf[E:2 * E])
    wy *= np.float32(0.5)
    wy *= w
    buf[:E] = w
    sw, st, stt, sy, sty = _contract(_init_weights(te), buf[:2 * E])
    det = sw * stt - st * st
    slope = (sw * sty - st * sy) / det
    lnA = (sy - slope * st) / sw
    R = np.clip(-slope, np.float32(R_MIN), np.float32(R_MAX))
    bad = ~np.isfinite(R) | ~np.isfinite(lnA)
    if bad.any():
        R = np.where(bad, np.float32(1.0 / 40.0), R)
        lnA = np.where(bad, np.log(M.max(0) + np.float32(1e-12)) + R * te[0, 0], lnA)
    return lnA, R


def _sum_weights(te):
    """[6, 3E] matrix turning the stacked [q^2; q r; r^2] rows into the six Gauss-Newton sums."""
    E = te.shape[0]
    t = te.reshape(E)
    w = np.zeros((6, 3 * E), np.float32)
    w[0, 2 * E:] = 1.0  # sum r^2 (cost)
    w[1, :E] = 1.0  # sum q^2
    w[2, :E] = t  # sum TE q^2
    w[3, :E] = t * t  # sum TE^2 q^2
    w[4, E:2 * E] = 1.0  # sum q r
    w[5, E:2 * E] = t  # sum TE q r
    return w


def _normal_sums(M, lnA, R, te, floor2, weights, buf):
    """Cost and Gauss-Newton sums ``[6, n]`` of the noise-corrected model at (ln A, R).

    J = [dF/d(ln A), dF/dR] = [q, -TE q] with q = nu^2 / F, so the normal matrix is
    [[sum q^2, -sum TE q^2], [-sum TE q^2, sum TE^2 q^2]] and the gradient [sum q r, -sum TE q r].
    The sums over echoes are one small matrix product (fewer passes over memory than six
    reductions); the [E, n] work arrays are reused in place.
    """
    E = M.shape[0]
    nu = np.multiply(te, R)
    np.subtract(lnA, nu, out=nu)
    nu2 = np.square(np.exp(nu, out=nu), out=nu)  # (A exp(-R TE))^2, [E, n]
    F = np.sqrt(np.add(nu2, np.float32(floor2)))
    q = np.divide(nu2, F, out=nu2)
    r = np.subtract(M, F, out=F)
    np.multiply(q, q, out=buf[:E])
    np.multiply(q, r, out=buf[E:2 * E])
    np.multiply(r, r, out=buf[2 * E:])
    return _contract(weights, buf)


def fit_curves(signals, echo_times_ms: Sequence[float], sigma: float, max_iterations: int = 8,
               loglinear: bool = True):
    """Fit echo curves ``signals[E, n]`` (magnitudes) at ``echo_times_ms``.

    Returns float32 arrays ``(t2_ms, amplitude, r2, t2_loglinear_ms or None)``; T2 is not yet
    limited to a valid range.
    """
    M = np.asarray(signals, dtype=np.float32)
    if M.ndim != 2:
        raise ValueError("signals must be [echoes, voxels]")
    E, n = M.shape
    te = np.asarray(echo_times_ms, dtype=np.float32).reshape(E, 1)
    floor2 = float(2.0 * sigma * sigma)
    weights = _sum_weights(te)
    f32 = np.float32
    with np.errstate(all="ignore"):  # zero determinants and logs of 0 become NaN/inf and are handled
        buf = np.empty((3 * E, n), np.float32)
        lnA, R = _init_loglinear(M, te, floor2, buf)
        params = np.stack([lnA, R])  # [2, n]
        cur = _normal_sums(M, params[0], params[1], te, floor2, weights, buf)
        final_params, final_cost = params.copy(), cur[0].copy()
        # Voxels leave the working set once converged, so a few slow ones (noise-floor tissue)
        # do not keep the whole chunk iterating.
        idx = np.arange(n)
        Mw, pw, cw, lam = M, params, cur, np.full(n, 1e-3, np.float32)
        for it in range(max_iterations):
            cost, a11, a12n, a22, g1, g2n = cw
            b11 = a11 * (f32(1.0) + lam)
            b22 = a22 * (f32(1.0) + lam)
            det = b11 * b22 - a12n * a12n
            det = np.where(det > 0, det, f32(1.0))
            d_lnA = np.clip((b22 * g1 - a12n * g2n) / det, f32(-2.0), f32(2.0))
            d_R = (a12n * g1 - b11 * g2n) / det
            new = np.stack([pw[0] + d_lnA, np.clip(pw[1] + d_R, f32(R_MIN), f32(R_MAX))])
            trial = _normal_sums(Mw, new[0], new[1], te, floor2, weights, buf[:, :idx.size])
            ok = trial[0] <= cost * f32(1.0 + 1e-6)  # float32 rounding must not reject a converged step
            # converged: an accepted step that moved T2 by < 0.3 %; what is left is far below the noise
            # (against 30 iterations: mean |difference| 0.002 ms on a whole simulated knee at SNR 30)
            done = ok & (np.abs(new[1] - pw[1]) < f32(3e-3) * pw[1])
            rejected = np.flatnonzero(~ok)
            if rejected.size:  # usually few: patch them rather than blend everything
                trial[:, rejected] = cw[:, rejected]
                new[:, rejected] = pw[:, rejected]
            pw, cw = new, trial
            lam = np.clip(np.where(ok, lam * f32(0.2), lam * f32(10.0)), f32(1e-7), f32(1e7))
            last = it == max_iterations - 1
            finished = np.flatnonzero(done) if not last else np.arange(idx.size)
            if last or finished.size > 0.1 * idx.size:
                out = idx[finished]
                final_params[:, out] = pw[:, finished]
                final_cost[out] = cw[0, finished]
                if finished.size == idx.size:
                    break
                keep = np.flatnonzero(~done)
                idx, lam = idx[keep], lam[keep]
                Mw, pw, cw = Mw[:, keep], pw[:, keep], cw[:, keep]
        params, cur_cost = final_params, final_cost
        total = np.square(M - M.mean(0, keepdims=True)).sum(0)
        r2 = np.where(total > 0, f32(1.0) - cur_cost / total, f32(np.nan))
        t2 = f32(1.0) / params[1]
        amp = np.exp(params[0])
        t2_ll = None
        if loglinear:  # ordinary least squares of ln M on TE: slope = sum (TE - mean TE) ln M / sum (...)^2
            dt = (te - te.mean()).reshape(1, E)
            slope = _contract(dt, np.log(M)).reshape(n) / f32((dt * dt).sum())
            t2_ll = np.where(np.isfinite(slope) & (slope < 0), f32(-1.0) / slope, f32(np.nan))
    return tuple(None if a is None else np.asarray(a, np.float32) for a in (t2, amp, r2, t2_ll))


def model_signal(amplitude, t2_ms, echo_times_ms, sigma: float) -> np.ndarray:
    """The fitted model sqrt(A^2 exp(-2 TE/T2) + 2 sigma^2) (numpy; for plots and baselines)."""
    te = np.asarray(echo_times_ms, dtype=float)
    a = np.asarray(amplitude, dtype=float)[..., None]
    t2 = np.asarray(t2_ms, dtype=float)[..., None]
    return np.sqrt(a * a * np.exp(-2.0 * te / t2) + 2.0 * sigma * sigma)


def default_workers() -> int:
    """Threads that fit chunks: torch's thread count when torch is loaded (a batch worker or the
    user set it), else ``OMP_NUM_THREADS``, else the cores this process may use."""
    import sys

    from mskquant.device import omp_threads, usable_cores

    if "torch" in sys.modules:
        return max(1, int(sys.modules["torch"].get_num_threads()))
    return omp_threads() or usable_cores()


def _in_parallel(task, n_tasks: int, workers: Optional[int]):
    """Run ``task(0..n_tasks-1)`` on worker threads; yield the number finished after each one
    (the caller reports progress and may raise Cancelled, which stops the remaining tasks).

    Independent chunks in separate threads (numpy releases the GIL in its array loops) rather
    than a library's own thread pool: thousands of small operations per second each ending in
    a barrier stall for a whole scheduler slice whenever another process shares the cores
    (measured with torch's OpenMP threads: 0.5 s becoming 5-50 s on a busy 2-core machine);
    independent chunks just run slower.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    workers = max(1, int(workers or default_workers()))
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        pending = set()
        queued = 0
        finished = 0
        while queued < n_tasks or pending:
            while queued < n_tasks and len(pending) < 2 * workers:
                pending.add(pool.submit(task, queued))
                queued += 1
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                f.result()  # re-raise a worker's error here
                finished += 1
            yield finished
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def fit_t2(echoes: np.ndarray, echo_times_ms: Sequence[float], mask: Optional[np.ndarray] = None,
           settings: Optional[FitSettings] = None, progress: "Progress | None" = None) -> T2Fit:
    """T2 map of a MESE series ``echoes[t, k, j, i]`` (magnitudes), masked or whole-volume.

    Without ``mask`` every voxel is considered; voxels whose echoes are consistent with pure
    noise, that hold non-finite values or are all zero are reported and left NaN.
    """
    progress = as_progress(progress)
    echoes = np.asarray(echoes)
    if echoes.ndim != 4:
        raise InputError(f"A MESE series must be 4D (echoes, slices, rows, columns); got {echoes.ndim}D.")
    te_all = np.asarray(echo_times_ms, dtype=np.float64)
    if te_all.shape != (echoes.shape[0],):
        raise InputError(f"{te_all.size} echo times for {echoes.shape[0]} echoes: give one echo time per echo.")
    settings = (settings or FitSettings()).validate(echoes.shape[0])
    used = slice(settings.skip_echoes, None)
    te = te_all[used]
    shape = echoes.shape[1:]
    warnings: List[str] = []

    progress(0.0, "Estimating the noise level")
    if settings.noise_sigma is not None:
        noise = NoiseEstimate(float(settings.noise_sigma), 0, "given")
    else:
        noise = estimate_noise_sigma(echoes)
        warnings.extend(noise.warnings)
    sigma = noise.sigma

    flat = echoes.reshape(echoes.shape[0], -1)
    # The used echoes of the candidate voxels, echo-major ([E, n], contiguous rows).
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != shape:
            raise InputError(f"The mask grid {mask.shape} differs from the MESE grid {shape}: give a mask on the MESE grid.")
        candidates = np.flatnonzero(mask.ravel())
        data = np.ascontiguousarray(flat[used][:, candidates], dtype=np.float32)
    else:
        candidates = np.arange(flat.shape[1])
        data = np.ascontiguousarray(flat[used], dtype=np.float32)
    if data.size and np.nanmin(data) < 0:
        raise InputError("The MESE images hold negative values: T2 mapping needs magnitude images "
                         "(export magnitude, not real or phase, images).")
    echo_mean = data.mean(axis=0)  # NaN/inf wherever an echo is not finite
    finite = np.isfinite(echo_mean)
    zero = echo_mean == 0  # magnitudes are >= 0: a zero mean means every echo is zero
    n_nonfinite = int((~finite).sum())
    n_zero = int(zero.sum())
    if n_nonfinite:
        warnings.append(f"{n_nonfinite} voxel(s) hold NaN or infinite echo values: their T2 is NaN.")
    if n_zero:
        warnings.append(f"{n_zero} voxel(s) are zero in every fitted echo: their T2 is NaN.")
    signal = finite & ~zero
    if sigma > 0:
        signal &= echo_mean > _noise_threshold(sigma, len(te))
    n_no_signal = int((finite & ~zero).sum() - signal.sum())
    fit_idx = np.flatnonzero(signal)

    t2_flat = np.full(flat.shape[1], np.nan, np.float32)
    amp_flat = np.full(flat.shape[1], np.nan, np.float32)
    r2_flat = np.full(flat.shape[1], np.nan, np.float32)
    ll_flat = np.full(flat.shape[1], np.nan, np.float32) if settings.loglinear else None
    chunk = settings.chunk_voxels
    n_chunks = max(1, int(math.ceil(fit_idx.size / chunk)))
    fit_progress = progress.sub(0.05, 1.0)

    def run_chunk(c: int) -> None:
        sel = fit_idx[c * chunk:(c + 1) * chunk]
        if sel.size == 0:
            return
        t2, amp, r2, t2_ll = fit_curves(data[:, sel], te, sigma, settings.max_iterations, settings.loglinear)
        out = candidates[sel]
        t2_flat[out] = t2
        amp_flat[out] = amp
        r2_flat[out] = r2
        if ll_flat is not None:
            ll_flat[out] = t2_ll

    chunks = _in_parallel(run_chunk, n_chunks, settings.workers)
    try:
        for done in chunks:
            fit_progress(done / n_chunks, f"Fitting T2 ({fit_idx.size} voxels)")
    finally:
        chunks.close()  # on cancel: drop the queued chunks
    lo, hi = settings.t2_range_ms
    valid = np.isfinite(t2_flat) & (t2_flat >= lo) & (t2_flat <= hi)
    n_out = int(fit_idx.size - valid.sum())  # fitted, but T2 outside the valid range (or undefined)
    t2_flat[~valid] = np.nan
    amp_flat[~valid] = np.nan
    r2_flat[~valid] = np.nan
    if ll_flat is not None:
        ll_flat[~(np.isfinite(ll_flat) & (ll_flat >= lo) & (ll_flat <= hi))] = np.nan
    fit_progress(1.0, "T2 fit done")
    counts = {"candidates": int(candidates.size), "fitted": int(fit_idx.size), "valid": int(valid.sum()),
              "no_signal": n_no_signal, "out_of_range": n_out, "nonfinite": n_nonfinite, "zero": n_zero}
    return T2Fit(t2_flat.reshape(shape), amp_flat.reshape(shape), r2_flat.reshape(shape),
                 None if ll_flat is None else ll_flat.reshape(shape), noise, te.astype(np.float32), counts, warnings)
