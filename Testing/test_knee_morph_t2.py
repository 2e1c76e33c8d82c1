"""Knee morphometry T2: the cartilage of the 3D image's label map carried to a MESE series of the
same knee (partial-volume labels, rigid registration), T2 fitted there, points handed back."""

from __future__ import annotations

import numpy as np
import pytest

from mskquant.image import Geometry, Image


@pytest.fixture(scope="module")
def knee():
    from KneeT2SegmentLib import anatomy as an
    from KneeT2SegmentLib import simulator as sm

    labels = an.analytic_knee()
    anat = an.prepare_anatomy(labels, "right", "analytic", "analytic knee")
    phantom = sm.simulate(anat, sm.PhantomParameters(snr=60.0, seed=3))
    return labels, phantom


def _dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_labels_on_the_mese_grid_match_the_phantom_truth(knee):
    from KneeT2SegmentLib.morphometry.t2 import labels_on_grid

    labels, ph = knee
    on = labels_on_grid(labels, ph.series.geometry)
    assert on.shape == ph.series.geometry.shape_kji
    d = _dice(on == 2, ph.cartilage_mask.array)
    assert d > 0.9, d  # both: femoral cartilage fraction >= 1/2 through the slice
    assert set(np.unique(on)) <= set(range(7))


def _look(labels: Image) -> np.ndarray:
    """A DESS-like picture of a label map: bright cartilage, dark bone, a little texture."""
    lut = np.array([0.05, 0.3, 1.0, 0.35, 0.95, 0.3, 0.9], np.float32)
    rng = np.random.default_rng(0)
    return lut[labels.array] + rng.normal(0.0, 0.03, labels.array.shape).astype(np.float32)


def test_rigid_registration_recovers_a_known_shift(knee):
    from KneeT2SegmentLib.morphometry.t2 import rigid_register

    labels, ph = knee
    shift = np.array([1.5, -2.0, 1.0])
    m = labels.geometry.ijk_to_ras.copy()
    m[:3, 3] += shift  # the 3D image was acquired with the knee 1.5/2/1 mm elsewhere in scanner space
    moved = Geometry(labels.geometry.shape_ijk, m)
    reg = rigid_register(Image(_look(labels), moved), Image(ph.series.echoes.array[0], ph.series.geometry),
                         Image(labels.array, moved))
    assert reg.method.startswith("rigid"), reg.warnings
    # in plane (A, S) within 0.5 mm; across the 3.5 mm sagittal MESE slices (R) within 1 mm
    assert np.allclose(reg.matrix[1:3, 3], -shift[1:], atol=0.5), reg.matrix
    assert abs(reg.matrix[0, 3] + shift[0]) < 1.0, reg.matrix
    assert reg.rotation_deg < 2.0 and reg.metric_after < reg.metric_before


def test_cartilage_t2_and_points_in_the_3d_image_world(knee):
    from KneeT2SegmentLib.morphometry.t2 import cartilage_t2

    labels, ph = knee
    ct = cartilage_t2(labels, ph.series, None)
    assert ct.registration.method == "scanner coordinates" and ct.warnings
    pts = ct.points()
    femoral = pts["label"] == 2
    assert femoral.sum() > 100 and np.all(pts["region"][femoral] >= 1) and np.all(pts["region"][~femoral] == 0)
    # every femoral point lies within a MESE voxel (3.5 mm slab) of the label map's femoral cartilage
    from scipy.spatial import cKDTree

    k, j, i = np.nonzero(labels.array == 2)
    fine = (labels.geometry.ijk_to_ras @ np.stack([i, j, k, np.ones(i.size)]))[:3].T
    d, _ = cKDTree(fine).query(pts["ras"][femoral])
    assert np.percentile(d, 95) < 1.0 and d.max() < 2.5
    # the fitted T2 is the phantom's: mean within 2 ms of the truth over the same voxels
    truth = ph.t2_true.array
    sel = np.isfinite(ct.t2.array) & (ct.labels.array == 2) & np.isfinite(truth)
    assert abs(np.nanmean(ct.t2.array[sel]) - np.nanmean(truth[sel])) < 2.0
    # the volumetric subregion means are the existing quantification's
    means = ct.region_means()
    assert len(means) >= 8 and all(20.0 < v < 80.0 for v in means.values())


def test_mese_of_another_knee_is_refused(knee):
    from mskquant.errors import InputError
    from KneeT2SegmentLib.morphometry.t2 import cartilage_t2

    labels, ph = knee
    m = labels.geometry.ijk_to_ras.copy()
    m[:3, 3] += 500.0
    with pytest.raises(InputError, match="does not overlap"):
        cartilage_t2(Image(labels.array, Geometry(labels.geometry.shape_ijk, m)), ph.series)
