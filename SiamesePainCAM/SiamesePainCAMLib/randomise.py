"""Domain randomisation of the simulated knees' look for training the pain network (numeric core).

SynthSeg's idea (Billot et al.) applied to pairs: a network that sees every knee with another
look cannot learn the look of one simulator, only what stays put — the anatomy and the lesion.
Each knee of a pair draws its own look, as two scans of one person may be made on different
days, coils or scanners:

* **tissue signal**: each tissue's signal times exp(N(0, ``tissue_log_sd``)), marrow and fat
  times a fat-suppression factor (from well suppressed to hardly at all);
* **the lesion keeps what makes it a lesion** on a fat-suppressed intermediate-weighted image
  and nothing else: an effusion is joint fluid (whatever fluid looks like in this knee), a
  bone-marrow lesion lies between this knee's marrow and its fluid. Contrast inversion is not
  drawn: on a swapped contrast the lesion is no longer the hyperintensity the pain model reads;
* **acquisition**: pixel size, field of view, slice thickness and number, slice direction;
* **blur** in-plane before the noise, **Gaussian or Rician noise**, **gamma** after it.

The pose, bias, texture and SNR ranges of the randomised generator are in
:meth:`SiamesePainCAMLib.simulator.Variation.randomised`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Look:
    """Ranges of the per-knee random look (uniform over each range unless said otherwise)."""

    tissue_log_sd: float = 0.35
    fat_suppression: Tuple[float, float] = (0.4, 2.5)
    effusion_level: Tuple[float, float] = (0.8, 1.05)  # x this knee's fluid signal
    bml_level: Tuple[float, float] = (0.4, 0.9)  # marrow + this x (fluid - marrow)
    gamma: Tuple[float, float] = (0.7, 1.4)
    blur_mm: Tuple[float, float] = (0.0, 0.6)  # Gaussian SD in-plane
    rician_probability: float = 0.6  # else Gaussian noise, clipped at 0 as stored magnitudes are
    pixel_mm: Tuple[float, float] = (0.30, 0.45)
    fov_mm: Tuple[float, float] = (140.0, 170.0)
    slice_mm: Tuple[float, float] = (2.6, 3.6)
    coverage_mm: Tuple[float, float] = (100.0, 125.0)  # through-plane extent of the slices


def tissue_signal(base: Sequence[float], rng: np.random.Generator, look: Look, fatty: Sequence[int],
                  fluid: int) -> np.ndarray:
    """Signal per tissue: ``base`` with a random gain each and the fat-suppression factor on ``fatty``;
    fluid stays the brightest tissue (the lesions are defined against it)."""
    lut = np.asarray(base, np.float64) * np.exp(rng.normal(0.0, look.tissue_log_sd, len(base)))
    lut[list(fatty)] *= rng.uniform(*look.fat_suppression)
    others = np.delete(lut, fluid)
    lut[fluid] = max(lut[fluid], 1.15 * float(others.max()))
    return lut.astype(np.float32)


def bml_signal(lut: np.ndarray, rng: np.random.Generator, look: Look, marrow: int, fluid: int) -> float:
    """A bone-marrow lesion's signal: between this knee's marrow and its fluid."""
    return float(lut[marrow] + rng.uniform(*look.bml_level) * (lut[fluid] - lut[marrow]))


def effusion_signal(lut: np.ndarray, rng: np.random.Generator, look: Look, fluid: int) -> float:
    return float(lut[fluid] * rng.uniform(*look.effusion_level))


def acquisition(rng: np.random.Generator, look: Look) -> Dict[str, float]:
    """Keyword arguments of a random sagittal acquisition (``simulator.Acquisition``)."""
    px = float(rng.uniform(*look.pixel_mm))
    matrix = int(round(rng.uniform(*look.fov_mm) / px / 8.0)) * 8
    slice_mm = float(rng.uniform(*look.slice_mm))
    n = int(round(rng.uniform(*look.coverage_mm) / slice_mm))
    return {"n_slices": n, "slice_mm": slice_mm, "matrix": matrix, "pixel_mm": px,
            "slice_direction": int(rng.choice((-1, 1)))}


def blur(image: np.ndarray, rng: np.random.Generator, look: Look, pixel_mm: float) -> np.ndarray:
    """In-plane Gaussian blur of a [slice, row, column] volume."""
    sd = float(rng.uniform(*look.blur_mm)) / pixel_mm
    return ndimage.gaussian_filter(image, (0.0, sd, sd)) if sd > 0.1 else image


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator, look: Look) -> np.ndarray:
    """Rician (magnitude of complex Gaussian) or Gaussian noise of SD ``sigma``."""
    if rng.random() < look.rician_probability:
        return np.sqrt((image + sigma * rng.standard_normal(image.shape, dtype=np.float32)) ** 2
                       + (sigma * rng.standard_normal(image.shape, dtype=np.float32)) ** 2)
    return np.maximum(image + sigma * rng.standard_normal(image.shape, dtype=np.float32), 0.0)


def gamma(image: np.ndarray, rng: np.random.Generator, look: Look) -> np.ndarray:
    """Intensity gamma about the 99th percentile (which stays where it is)."""
    g = float(rng.uniform(*look.gamma))
    top = float(np.percentile(image, 99.0))
    if top <= 0:
        return image
    return (top * np.power(np.maximum(image, 0.0) / top, g)).astype(np.float32)
