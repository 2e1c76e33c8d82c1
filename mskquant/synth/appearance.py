"""Random appearance of a tissue-fraction volume: SynthSeg-style domain randomisation.

Every tissue class gets a random proton density (PD) and T2, so that a multi-echo series
rendered at echo times TE decays as a spin-echo train does (``PD * exp(-TE / T2)``) while its
look at any echo is arbitrary. Two priors are mixed:

* ``physical`` - PD and T2 around MR values of the tissue's kind (marrow, cortex, cartilage,
  muscle, fat, fluid, fibrous tissue), scaled by up to x0.5-x2, with optional fat
  suppression (fat and marrow dark) - many MR contrasts;
* ``random`` - PD uniform in [0, 1] and T2 log-uniform in 15-150 ms for every class
  independently: contrast swaps and inversions, looks no scanner makes (SynthSeg's point:
  a network that must segment all of them learns the anatomy).

Cartilage T2 stays within 20-70 ms in both (the T2 post-processing of the segmentation keeps
0-100 ms). On top: texture inside tissues (smooth random fields of 2-20 mm wavelength with a
random weight per class, SynthSeg's sub-classes), a smooth multiplicative bias field, in-plane
blur and a gamma curve. Noise is added by the caller per use (Gaussian or Rician).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

KINDS = ("air", "marrow", "cortex", "cartilage_deep", "cartilage_superficial", "muscle", "fat", "fluid", "fibrous",
         "lesion")
# (PD range, T2 range ms) per kind, MESE at 3 T (wide on purpose)
PHYSICAL: Dict[str, Tuple[Tuple[float, float], Tuple[float, float]]] = {
    "air": ((0.0, 0.0), (1.0, 1.0)),
    "marrow": ((0.6, 1.0), (40.0, 90.0)),
    "cortex": ((0.02, 0.15), (1.0, 8.0)),
    "cartilage_deep": ((0.55, 0.9), (22.0, 40.0)),
    "cartilage_superficial": ((0.6, 0.95), (35.0, 65.0)),
    "muscle": ((0.5, 0.8), (25.0, 45.0)),
    "fat": ((0.7, 1.0), (50.0, 110.0)),
    "fluid": ((0.8, 1.0), (200.0, 800.0)),
    "fibrous": ((0.1, 0.5), (5.0, 25.0)),
    "lesion": ((0.7, 1.0), (60.0, 200.0)),
}
CARTILAGE_T2_MS = (20.0, 70.0)


@dataclass
class AppearancePrior:
    """Ranges of the randomisation (defaults: the knee segmentation training)."""

    random_fraction: float = 0.5  # share of volumes with the 'random' prior
    fat_suppressed_fraction: float = 0.3  # of the physical ones
    scale_range: Tuple[float, float] = (0.5, 2.0)  # physical PD multiplied by a log-uniform factor
    texture_sd: Tuple[float, float] = (0.0, 0.25)  # per-class texture amplitude (fraction of its PD)
    texture_wavelength_mm: Tuple[float, float] = (2.0, 20.0)
    n_texture_fields: int = 3
    bias_sd: Tuple[float, float] = (0.0, 0.35)  # SD of the log bias field
    bias_wavelength_mm: Tuple[float, float] = (80.0, 300.0)
    blur_probability: float = 0.5
    blur_sigma_px: Tuple[float, float] = (0.2, 1.2)
    gamma_log_sd: float = 0.25
    air_signal_probability: float = 0.1  # air with a little signal (e.g. a filled coil)


@dataclass
class Appearance:
    pd: np.ndarray  # per class
    t2_ms: np.ndarray  # per class
    texture: np.ndarray  # [class, field] weights (fraction of PD)
    texture_wavelength_mm: float
    bias_sd: float
    bias_wavelength_mm: float
    blur_sigma_px: float
    gamma: float
    prior: str
    seed: int

    def as_dict(self) -> dict:
        return {"pd": [round(float(v), 4) for v in self.pd], "t2_ms": [round(float(v), 2) for v in self.t2_ms],
                "texture_wavelength_mm": self.texture_wavelength_mm, "bias_sd": self.bias_sd,
                "blur_sigma_px": self.blur_sigma_px, "gamma": self.gamma, "prior": self.prior}


def draw_appearance(rng: np.random.Generator, kinds: Sequence[str], prior: Optional[AppearancePrior] = None
                    ) -> Appearance:
    """A random appearance for classes of the given kinds (:data:`KINDS`)."""
    prior = prior or AppearancePrior()
    n = len(kinds)
    pd = np.zeros(n)
    t2 = np.ones(n)
    mode = "random" if rng.random() < prior.random_fraction else "physical"
    fat_sat = mode == "physical" and rng.random() < prior.fat_suppressed_fraction
    for c, kind in enumerate(kinds):
        if kind not in PHYSICAL:
            raise ValueError(f"unknown tissue kind {kind!r}")
        if kind == "air":
            pd[c] = rng.uniform(0.0, 0.15) if rng.random() < prior.air_signal_probability else 0.0
            t2[c] = 50.0
            continue
        if mode == "random":
            pd[c] = rng.uniform(0.0, 1.0)
            t2[c] = math.exp(rng.uniform(math.log(15.0), math.log(150.0)))
        else:
            (p0, p1), (t0, t1) = PHYSICAL[kind]
            pd[c] = rng.uniform(p0, p1) * math.exp(rng.uniform(*np.log(prior.scale_range)) * 0.5)
            t2[c] = rng.uniform(t0, t1)
            if fat_sat and kind in ("fat", "marrow"):
                pd[c] *= rng.uniform(0.05, 0.3)
        if kind.startswith("cartilage"):
            t2[c] = float(np.clip(t2[c], *CARTILAGE_T2_MS))
    # deep and superficial cartilage are one tissue: keep their PDs close, deep T2 not above superficial
    deep = [c for c, k in enumerate(kinds) if k == "cartilage_deep"]
    sup = [c for c, k in enumerate(kinds) if k == "cartilage_superficial"]
    for d, s in zip(deep, sup):
        pd[s] = pd[d] * rng.uniform(0.9, 1.15)
        t2[d], t2[s] = min(t2[d], t2[s]), max(t2[d], t2[s])
    texture = rng.uniform(*prior.texture_sd, size=(n, 1)) * rng.normal(0.0, 1.0, (n, prior.n_texture_fields))
    texture /= np.sqrt(prior.n_texture_fields)
    blur = rng.uniform(*prior.blur_sigma_px) if rng.random() < prior.blur_probability else 0.0
    return Appearance(pd, t2, texture, float(rng.uniform(*prior.texture_wavelength_mm)),
                      float(rng.uniform(*prior.bias_sd)), float(rng.uniform(*prior.bias_wavelength_mm)), float(blur),
                      float(math.exp(rng.normal(0.0, prior.gamma_log_sd))), mode, int(rng.integers(0, 2 ** 31)))


def _interpolation_matrix(n_out: int, n_coarse: int) -> np.ndarray:
    """Linear interpolation weights ``[n_out, n_coarse]`` spreading the coarse nodes over the output."""
    x = np.linspace(0.0, n_coarse - 1.0, n_out)
    lo = np.minimum(np.floor(x).astype(int), n_coarse - 2)
    w = x - lo
    m = np.zeros((n_out, n_coarse), np.float32)
    m[np.arange(n_out), lo] = 1.0 - w
    m[np.arange(n_out), lo + 1] = w
    return m


def smooth_field(shape_kji: Sequence[int], spacing_kji: Sequence[float], wavelength_mm: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-SD smooth random field: white noise on cells of ``wavelength/2``, interpolated.

    Separable (one small matrix product per axis), so a field over millions of voxels costs
    a few tens of milliseconds.
    """
    shape = [int(n) for n in shape_kji]
    extent = np.asarray(shape, float) * np.asarray(spacing_kji, float)
    coarse_shape = [int(max(2, math.ceil(e / (wavelength_mm / 2.0)) + 1)) for e in extent]
    out = rng.standard_normal(coarse_shape).astype(np.float32)
    for axis, (n, c) in enumerate(zip(shape, coarse_shape)):
        out = np.moveaxis(np.tensordot(_interpolation_matrix(n, c), out, axes=([1], [axis])), 0, axis)
    out = np.ascontiguousarray(out)
    out -= out.mean()
    sd = float(out.std())
    return out / sd if sd > 0 else out


def render(counts: np.ndarray, n_points: int, appearance: Appearance, echo_times_ms: Sequence[float],
           spacing_kji: Sequence[float]) -> np.ndarray:
    """Noise-free echoes ``float32 [E, nk, nj, ni]`` of a count volume ``[nk, nj, ni, classes]``.

    Echo e of a voxel: ``sum_c f_c PD_c (1 + texture_c . F) exp(-TE_e / T2_c)`` with the
    class fractions ``f_c``, then bias, blur (in plane: the last two axes) and gamma.
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(appearance.seed)
    te = np.asarray(echo_times_ms, np.float64)
    shape = counts.shape[:3]
    n_cls = counts.shape[3]
    decay = appearance.pd[:, None] * np.exp(-te[None, :] / appearance.t2_ms[:, None])  # [class, echo]
    n_f = appearance.texture.shape[1]
    weights = [decay] + [decay * appearance.texture[:, f:f + 1] for f in range(n_f)]
    w = np.concatenate(weights, axis=1).astype(np.float32) / float(n_points)  # [class, E * (1 + n_f)]
    n_e = te.size
    fields = [smooth_field(shape, spacing_kji, appearance.texture_wavelength_mm, rng) for _ in range(n_f)]
    out = np.empty(shape + (n_e,), np.float32)
    for k in range(shape[0]):  # slice by slice: the float copy of the counts stays small
        part = counts[k].reshape(-1, n_cls).astype(np.float32) @ w
        sl = part[:, :n_e].reshape(shape[1:] + (n_e,))
        for f in range(n_f):
            sl += part[:, n_e * (f + 1):n_e * (f + 2)].reshape(shape[1:] + (n_e,)) * fields[f][k][..., None]
        out[k] = sl
    out = np.moveaxis(np.maximum(out, 0.0), -1, 0)
    if appearance.bias_sd > 0:
        out *= np.exp(appearance.bias_sd * smooth_field(shape, spacing_kji, appearance.bias_wavelength_mm, rng))[None]
    if appearance.blur_sigma_px > 0:
        s = appearance.blur_sigma_px
        for e in range(n_e):
            out[e] = ndi.gaussian_filter(out[e], sigma=(0.0, s, s), truncate=3.0)
    if appearance.gamma != 1.0:
        ref = float(np.percentile(out[0], 99.5)) or 1.0
        out = ref * np.power(np.maximum(out / ref, 0.0), appearance.gamma)
    return np.ascontiguousarray(out, dtype=np.float32)
