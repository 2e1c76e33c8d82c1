"""Thick slices from a fine-sliced volume, and tricubic interpolation back to the fine grid.

Chaudhari et al. (Methods): "Low-resolution DESS images with 3x thicker slices were synthesized
from the high-resolution OAI data using a finite impulse response filter and were tricubicly
interpolated (TCI) at the ground-truth slice locations." Here:

* **slice profile (FIR)**: thick slice ``m`` is ``sum_j taps[j] * fine[f*m + j]`` along the slice
  axis - by default the rectangular profile of a slice ``f`` times thicker (the mean of the ``f``
  fine slices it covers), or a Gaussian profile of FWHM ``f`` fine slices (:func:`slice_profile_taps`);
* **decimation**: one thick slice per ``f`` fine slices; a trailing remainder of fewer than ``f``
  slices is dropped;
* **TCI**: cubic convolution (Keys, a = -0.5) along the slice axis at the fine slice centres. The
  in-plane samples of both grids coincide, where a tricubic kernel reduces to the identity, so
  tricubic interpolation onto the fine grid is this 1D cubic along the slice axis. Beyond the first
  and last thick-slice centres the edge slices are repeated (clamped taps).

Geometry convention (exact, tested): the slice axis is the image axis (i, j or k) of the largest
spacing. A thick slice covers the ``f`` fine slices it was made from, so its centre lies at fine
index ``f*m + (f-1)/2``: ``thick spacing = f * fine spacing`` and ``thick origin = fine origin +
(f-1)/2 * fine spacing * slice direction``. The fine grid of a thick image is the inverse:
``f * M`` slices of ``thick spacing / f`` with ``origin = thick origin - (f-1)/2 * fine spacing *
slice direction`` - the fine slices tile exactly the slabs of the thick ones (same outer edges),
and :func:`fine_geometry` of :func:`thick_geometry` is the original grid (first ``f*M`` slices).
In-plane spacing, directions and the other axes are unchanged.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Geometry, Image

PROFILES = ("rect", "gaussian")
KEYS_A = -0.5  # Keys' cubic convolution parameter (the usual "cubic" of MATLAB and ITK)


def slice_axis_ijk(geometry: Geometry) -> int:
    """The image axis (0 = i, 1 = j, 2 = k) with the largest spacing: the slice axis."""
    return int(np.argmax(geometry.spacing))


def array_axis(axis_ijk: int) -> int:
    """The numpy axis of ``array[k, j, i]`` for an image axis."""
    return 2 - int(axis_ijk)


def check_factor(factor) -> int:
    f = int(factor) if float(factor) == int(float(factor)) else -1
    if f < 2 or f > 8:
        raise InputError(f"Super-resolution factor {factor} is not supported: give a whole number from 2 to 8 "
                         f"(the bundled model is trained for 3).")
    return f


def _scaled_axis(geometry: Geometry, axis_ijk: int, n: int, scale: float, shift_voxels: float) -> Geometry:
    """``geometry`` with ``n`` samples along ``axis_ijk``, that axis' column scaled by ``scale`` and the
    origin moved by ``shift_voxels`` original voxels along it."""
    m = geometry.ijk_to_ras.copy()
    column = m[:3, axis_ijk].copy()
    m[:3, 3] = m[:3, 3] + shift_voxels * column
    m[:3, axis_ijk] = column * scale
    shape = list(geometry.shape_ijk)
    shape[axis_ijk] = int(n)
    return Geometry(tuple(shape), m)


def thick_geometry(fine: Geometry, factor: int, axis_ijk: Optional[int] = None) -> Geometry:
    """The grid of the thick slices made from ``fine`` (see the module's convention)."""
    f = check_factor(factor)
    axis = slice_axis_ijk(fine) if axis_ijk is None else int(axis_ijk)
    n_thick = fine.shape_ijk[axis] // f
    return _scaled_axis(fine, axis, n_thick, float(f), (f - 1) / 2.0)


def fine_geometry(thick: Geometry, factor: int, axis_ijk: Optional[int] = None) -> Geometry:
    """The fine slice grid of a thick-sliced image: spacing / factor, slice centres tiling the thick slabs."""
    f = check_factor(factor)
    axis = slice_axis_ijk(thick) if axis_ijk is None else int(axis_ijk)
    return _scaled_axis(thick, axis, thick.shape_ijk[axis] * f, 1.0 / f, -(f - 1) / (2.0 * f))


def slice_profile_taps(factor: int, profile: str = "rect") -> Tuple[np.ndarray, int]:
    """FIR taps and the offset of the first tap relative to the first fine slice of a thick slice."""
    f = check_factor(factor)
    if profile == "rect":
        return np.full(f, 1.0 / f), 0
    if profile == "gaussian":
        sigma = f / 2.3548  # FWHM = one thick slice
        offsets = np.arange(-f, 2 * f) - (f - 1) / 2.0
        taps = np.exp(-0.5 * (offsets / sigma) ** 2)
        return taps / taps.sum(), -f
    raise InputError(f"Unknown slice profile '{profile}': use one of {', '.join(PROFILES)}.")


def thick_slices(fine: Image, factor: int = 3, profile: str = "rect", axis_ijk: Optional[int] = None) -> Image:
    """The thick-sliced image of ``fine`` (slice-profile FIR filter, then one slice per ``factor``)."""
    f = check_factor(factor)
    axis = slice_axis_ijk(fine.geometry) if axis_ijk is None else int(axis_ijk)
    a = array_axis(axis)
    x = np.moveaxis(np.asarray(fine.array, dtype=np.float32), a, 0)
    n = x.shape[0]
    m = n // f
    if m < 2:
        raise InputError(f"The image has {n} slices along its slice axis: at least {2 * f} are needed for "
                         f"{f}x thicker slices.")
    taps, first = slice_profile_taps(f, profile)
    out = np.zeros((m,) + x.shape[1:], np.float32)
    starts = np.arange(m) * f
    for j, w in enumerate(taps):
        idx = np.clip(starts + first + j, 0, n - 1)
        out += np.float32(w) * x[idx]
    return Image(np.ascontiguousarray(np.moveaxis(out, 0, a)), thick_geometry(fine.geometry, f, axis))


def _keys(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    a = KEYS_A
    return np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                    np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))


def cubic_weights(n_thick: int, factor: int) -> np.ndarray:
    """The (f*M x M) matrix that interpolates M thick slices at the f*M fine slice centres."""
    f = check_factor(factor)
    n_fine = n_thick * f
    t = (np.arange(n_fine) - (f - 1) / 2.0) / f  # fine slice centres in thick-slice index units
    base = np.floor(t).astype(int)
    w = np.zeros((n_fine, n_thick))
    rows = np.arange(n_fine)
    for d in (-1, 0, 1, 2):
        idx = base + d
        np.add.at(w, (rows, np.clip(idx, 0, n_thick - 1)), _keys(t - idx))
    return w


def tricubic_to_fine(thick: Image, factor: int = 3, axis_ijk: Optional[int] = None) -> Image:
    """TCI: the thick image interpolated onto its fine slice grid (:func:`fine_geometry`)."""
    f = check_factor(factor)
    axis = slice_axis_ijk(thick.geometry) if axis_ijk is None else int(axis_ijk)
    a = array_axis(axis)
    x = np.moveaxis(np.asarray(thick.array, dtype=np.float32), a, 0)
    w = cubic_weights(x.shape[0], f).astype(np.float32)
    out = (w @ x.reshape(x.shape[0], -1)).reshape((w.shape[0],) + x.shape[1:])
    return Image(np.ascontiguousarray(np.moveaxis(out, 0, a)), fine_geometry(thick.geometry, f, axis))


def cut_to_thick_coverage(fine: Image, factor: int = 3, axis_ijk: Optional[int] = None) -> Image:
    """``fine`` (an image or a label map on the fine grid) cut to the ``factor * M`` slices that its
    ``M`` thick slices cover: the grid of TCI and SR (a trailing remainder of < factor slices dropped)."""
    f = check_factor(factor)
    axis = slice_axis_ijk(fine.geometry) if axis_ijk is None else int(axis_ijk)
    a = array_axis(axis)
    n = (fine.array.shape[a] // f) * f
    shape = list(fine.geometry.shape_ijk)
    shape[axis] = n
    cut = np.take(np.asarray(fine.array), np.arange(n), axis=a)
    return Image(cut, Geometry(tuple(shape), fine.geometry.ijk_to_ras))


def simulate_thick_acquisition(fine: Image, factor: int = 3, profile: str = "rect") -> Tuple[Image, Image, Image]:
    """(truth, thick, TCI) of a fine-sliced image; truth is ``fine`` (float32) cut to the ``factor * M``
    slices the thick image covers (:func:`cut_to_thick_coverage`), on exactly TCI's grid. Labels of
    ``fine`` go onto the same grid with ``cut_to_thick_coverage(labels, factor)``."""
    thick = thick_slices(fine, factor, profile)
    tci = tricubic_to_fine(thick, factor)
    truth = cut_to_thick_coverage(Image(np.asarray(fine.array, np.float32), fine.geometry), factor)
    return Image(truth.array, tci.geometry), thick, tci
