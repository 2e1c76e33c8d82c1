"""Signal of the independent test family: MESE by extended phase graphs, or IW fat-suppressed TSE.

MESE: a CPMG train (90-degree excitation, refocusing pulses of flip angle ``180 * B1``, echo
spacing ESP) simulated with the extended phase graph (EPG) formalism (Hennig 1988; Weigel
2015): with B1 below 1 part of the magnetisation takes stimulated-echo pathways and every
echo deviates from ``exp(-TE / T2)`` - not only the first. Echo amplitudes are tabulated over
T2 (log grid) and B1 and interpolated per sample point. T1 1000 ms for all tissues (its effect
on a 7-echo train is small).

IW TSE with fat suppression: ``PD * (1 - exp(-TR/T1)) * exp(-TE/T2)`` at TR 3000-3500 ms and
TE 25-35 ms, fat and marrow PD scaled by 0.05-0.2.

DESS (water excitation): the sum of the two steady-state echoes, FISP-like
``S+ = PD sin(a) / (1 + cos(a) + (1 - cos(a)) T1/T2)`` (the TR << T2 limit) and
``S- = S+ exp(-2 (TR - TE) / T2)``; water excitation scales fat and marrow by 0.05-0.2.
Fluid (long T2, low T1/T2) is brightest, cartilage bright, muscle a little darker, menisci dark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from . import anatomy as fa

# (PD, T2 ms, T1 ms) per code at 3 T
TISSUES: Dict[int, Tuple[float, float, float]] = {
    fa.AIR: (0.0, 50.0, 1000.0), fa.MARROW: (0.95, 48.0, 380.0), fa.CORTEX: (0.04, 1.5, 1000.0),
    fa.FCART: (0.72, 40.0, 1200.0), fa.TCART: (0.72, 36.0, 1200.0), fa.PCART: (0.72, 38.0, 1200.0),
    fa.MUSCLE: (0.72, 31.0, 1400.0), fa.FAT: (1.0, 75.0, 380.0), fa.FLUID: (1.0, 700.0, 3500.0),
    fa.MENISCUS: (0.25, 9.0, 1000.0), fa.VESSEL: (0.05, 50.0, 1600.0), fa.SKIN: (0.6, 22.0, 900.0),
    fa.LESION: (0.95, 48.0, 380.0), fa.EFFUSION: (1.0, 700.0, 3500.0),
}
OEDEMA = (0.95, 90.0, 1400.0)  # a painful knee's bone lesion


def epg_cpmg(t2_ms: np.ndarray, b1: np.ndarray, esp_ms: float, n_echoes: int, t1_ms: float = 1000.0) -> np.ndarray:
    """Echo amplitudes ``[len(t2), len(b1), n_echoes]`` of a CPMG train (unit magnetisation)."""
    t2 = np.asarray(t2_ms, float)[:, None]
    b = np.asarray(b1, float)[None, :]
    shape = np.broadcast(t2, b).shape
    n_states = 2 * n_echoes + 2
    fp = np.zeros(shape + (n_states,), complex)
    fm = np.zeros_like(fp)
    z = np.zeros_like(fp)
    # excitation 90 * B1 about x from Mz = 1; refocusing about y (CPMG), Weigel's rotation matrix
    a0 = math.pi / 2 * b
    fp[..., 0] = -1j * np.sin(a0)
    fm[..., 0] = np.conj(fp[..., 0])
    z[..., 0] = np.cos(a0)
    e2 = np.exp(-esp_ms / 2.0 / t2)[..., None]
    e1 = np.exp(-esp_ms / 2.0 / t1_ms)
    alpha = (math.pi * b)[..., None] * np.ones(shape + (1,))
    c2, s2, s = np.cos(alpha / 2) ** 2, np.sin(alpha / 2) ** 2, np.sin(alpha)
    out = np.zeros(shape + (n_echoes,))

    def relax_shift(fp, fm, z):
        fp, fm = fp * e2, fm * e2
        z = z * e1
        z[..., 0] += 1.0 - e1
        fp = np.concatenate([np.conj(fm[..., 1:2]), fp[..., :-1]], axis=-1)
        fm = np.concatenate([fm[..., 1:], np.zeros(fm.shape[:-1] + (1,), complex)], axis=-1)
        return fp, fm, z

    for n in range(n_echoes):
        fp, fm, z = relax_shift(fp, fm, z)
        # refocusing about y (CPMG): real rotation matrix
        fp2 = c2 * fp - s2 * fm + s * z
        fm2 = -s2 * fp + c2 * fm + s * z
        z2 = -0.5 * s * fp - 0.5 * s * fm + np.cos(alpha) * z
        fp, fm, z = fp2, fm2, z2
        fp, fm, z = relax_shift(fp, fm, z)
        out[..., n] = np.abs(fp[..., 0])
    return out


@dataclass
class MeseLookup:
    """EPG echo amplitudes tabulated over log T2 and B1, interpolated bilinearly."""

    esp_ms: float
    n_echoes: int
    log_t2: np.ndarray
    b1: np.ndarray
    table: np.ndarray  # [t2, b1, echo]

    @classmethod
    def build(cls, esp_ms: float, n_echoes: int) -> "MeseLookup":
        log_t2 = np.linspace(math.log(1.0), math.log(1000.0), 72)
        b1 = np.linspace(0.7, 1.2, 11)
        return cls(esp_ms, n_echoes, log_t2, b1, epg_cpmg(np.exp(log_t2), b1, esp_ms, n_echoes).astype(np.float32))

    def __call__(self, t2_ms: np.ndarray, b1: np.ndarray) -> np.ndarray:
        """Amplitudes ``[..., n_echoes]`` for arrays of T2 and B1."""
        x = (np.log(np.clip(t2_ms, 1.0, 1000.0)) - self.log_t2[0]) / (self.log_t2[1] - self.log_t2[0])
        y = (np.clip(b1, self.b1[0], self.b1[-1]) - self.b1[0]) / (self.b1[1] - self.b1[0])
        x0 = np.clip(np.floor(x).astype(int), 0, self.log_t2.size - 2)
        y0 = np.clip(np.floor(y).astype(int), 0, self.b1.size - 2)
        wx = (x - x0)[..., None].astype(np.float32)
        wy = (y - y0)[..., None].astype(np.float32)
        t = self.table
        return ((1 - wx) * (1 - wy) * t[x0, y0] + wx * (1 - wy) * t[x0 + 1, y0] + (1 - wx) * wy * t[x0, y0 + 1]
                + wx * wy * t[x0 + 1, y0 + 1])


def dess_weight(pd: np.ndarray, t1_ms: np.ndarray, t2_ms: np.ndarray, flip_deg: float, tr_ms: float, te_ms: float,
                water_excitation: float = 0.1) -> np.ndarray:
    """DESS signal per code (see the module docstring), float32."""
    a = math.radians(flip_deg)
    t1 = np.asarray(t1_ms, float)
    t2 = np.maximum(np.asarray(t2_ms, float), 0.5)
    s_plus = np.asarray(pd, float) * math.sin(a) / (1.0 + math.cos(a) + (1.0 - math.cos(a)) * t1 / t2)
    s = s_plus * (1.0 + np.exp(-2.0 * (tr_ms - te_ms) / t2))
    s[[fa.FAT, fa.MARROW, fa.LESION]] *= water_excitation
    return s.astype(np.float32)
