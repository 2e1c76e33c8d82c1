"""Label maps of known cartilage thickness (for tests and checks of the morphometry).

* :func:`shell_knee`: a ball of bone with a concentric shell of cartilage (thickness exact
  everywhere, normals radial);
* :func:`slab_knee`: bone below a plane tilted to the grid, a disc of cartilage of constant
  thickness on it.

Voxels are labelled by whether their centre lies inside the shape, on any spacing and
direction matrix; the RAS origin is the shape's centre.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from mskquant.image import Geometry, Image, rotation_matrix_deg

from . import labels as L


def _grid(spacing: Sequence[float], half_mm: float, rotation_deg: Optional[Sequence[float]]):
    sp = np.asarray(spacing, float)
    n = [int(np.ceil(2 * half_mm / s)) + 1 for s in sp]
    d = np.eye(3) if rotation_deg is None else rotation_matrix_deg(rotation_deg)
    centre_ijk = (np.asarray(n) - 1) / 2.0
    origin = -(d * sp[None, :]) @ centre_ijk
    g = Geometry.from_spacing(n, sp, origin, d)
    k, j, i = np.meshgrid(*(np.arange(m) for m in g.shape_kji), indexing="ij")
    m = g.ijk_to_ras
    ras = [m[a, 0] * i + m[a, 1] * j + m[a, 2] * k + m[a, 3] for a in range(3)]
    return g, ras


def shell_knee(spacing=(0.3, 0.3, 0.3), radius_mm: float = 10.0, thickness_mm: float = 2.0,
               bone: int = L.FEMUR, cartilage: int = L.FEMORAL_CARTILAGE, rotation_deg=None) -> Image:
    g, (x, y, z) = _grid(spacing, radius_mm + thickness_mm + 2.0, rotation_deg)
    r = np.sqrt(x * x + y * y + z * z)
    labels = np.zeros(g.shape_kji, np.uint8)
    labels[r <= radius_mm] = bone
    labels[(r > radius_mm) & (r <= radius_mm + thickness_mm)] = cartilage
    return Image(labels, g)


def slab_knee(spacing=(0.3, 0.3, 0.3), thickness_mm: float = 2.0, tilt_deg=(30.0, 0.0, 0.0),
              disc_radius_mm: float = 10.0, half_mm: float = 14.0, bone: int = L.TIBIA,
              cartilage: int = L.TIBIAL_CARTILAGE) -> Tuple[Image, np.ndarray]:
    """(label map, unit normal of the slab): the normal is +S rotated by ``tilt_deg`` (about R, A, S)."""
    g, (x, y, z) = _grid(spacing, half_mm, None)
    normal = rotation_matrix_deg(tilt_deg) @ np.array([0.0, 0.0, 1.0])
    h = normal[0] * x + normal[1] * y + normal[2] * z
    lateral = np.sqrt(np.maximum(x * x + y * y + z * z - h * h, 0.0))
    labels = np.zeros(g.shape_kji, np.uint8)
    labels[h <= 0] = bone
    labels[(h > 0) & (h <= thickness_mm) & (lateral <= disc_radius_mm)] = cartilage
    return Image(labels, g), normal
