"""A small synthetic SIJ case whose V_HI is known by construction.

Grid 48 x 40 x 6 voxels of 0.6 x 0.6 x 3.3 mm (like the paper's STIR). The normal-bone
ROI holds the values 0..99 plus one voxel of 300 (101 voxels), so Q1 = 25, Q3 = 75,
IQR = 50 and L_upper = 300; at n = 1.5 the gap L_upper - L_lower = 150 is >= IQR/2, so n
climbs in 0.05 steps; at n = 4.00 the gap is exactly 25 = IQR/2 (not below it), so n stops
at 4.05 with L_lower = 277.5. Inside the disease region:

* lesion A, 3 x 3 pixels on 2 slices at 280 (sensitive only): 18 voxels;
* lesion B, 2 x 2 pixels at 310 (conservative, hence also sensitive): 4 voxels;
* island C, 3 pixels at 310: removed (< 4 pixels);
* island D, 4 pixels touching only diagonally at 290: kept (8-connectivity);
* lesion E at 400 outside the disease region: ignored;
* lesion F, 2 x 3 pixels at 280 of which 2 at 310: all 6 sensitive, and its 2-pixel
  core stays conservative because islands are components of the sensitive mask.

So V_HI(sensitive) = 32 voxels and V_HI(conservative) = 6 voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mskquant.image import Geometry, Image

SPACING = (0.6, 0.6, 3.3)
EXPECTED = {"sensitive_voxels": 32, "conservative_voxels": 6, "q1": 25.0, "q3": 75.0, "iqr": 50.0,
            "upper": 300.0, "n": 4.05, "lower": 277.5}


@dataclass
class SyntheticCase:
    t1: Image
    stir: Image
    normal_roi: Image
    disease_region: Image
    expected_sensitive: np.ndarray
    expected_conservative: np.ndarray


def make_case(origin=(-10.0, 20.0, -5.0)) -> SyntheticCase:
    shape_kji = (6, 40, 48)
    g = Geometry.from_spacing(shape_kji[::-1], SPACING, origin,
                              directions=np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]).T)
    stir = np.full(shape_kji, 40.0, np.float32)
    roi = np.zeros(shape_kji, bool)
    # normal-bone ROI: slice 1, rows 2..11, cols 2..11 (100 voxels with 0..99) + one at 300
    roi[1, 2:12, 2:12] = True
    stir[1, 2:12, 2:12] = np.arange(100, dtype=np.float32).reshape(10, 10)
    roi[1, 12, 2] = True
    stir[1, 12, 2] = 300.0
    region = np.zeros(shape_kji, bool)
    region[:, 16:38, 14:46] = True
    sens = np.zeros(shape_kji, bool)
    cons = np.zeros(shape_kji, bool)
    stir[2:4, 20:23, 20:23] = 280.0  # A
    sens[2:4, 20:23, 20:23] = True
    stir[4, 30:32, 30:32] = 310.0  # B
    sens[4, 30:32, 30:32] = True
    cons[4, 30:32, 30:32] = True
    stir[1, 25, 40:43] = 310.0  # C: 3 pixels, removed
    for d in range(4):  # D: diagonal chain
        stir[0, 18 + d, 36 + d] = 290.0
        sens[0, 18 + d, 36 + d] = True
    stir[3, 5:8, 40:43] = 400.0  # E: outside the disease region
    stir[5, 34:36, 20:23] = 280.0  # F: lesion with a 2-pixel core
    stir[5, 34, 20:22] = 310.0
    sens[5, 34:36, 20:23] = True
    cons[5, 34, 20:22] = True
    t1 = np.where(region, 300.0, 100.0).astype(np.float32)
    return SyntheticCase(Image(t1, g), Image(stir, g), Image(roi, g), Image(region, g), sens, cons)
