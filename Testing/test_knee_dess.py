"""DESS-like knee simulation (KneeT2SegmentLib.dess): grids, labels, contrast, native grid."""

import numpy as np
import pytest

from mskquant.image import Image
from KneeT2SegmentLib import anatomy as an
from KneeT2SegmentLib import dess
from KneeT2SegmentLib.morphometry import labels as lb


@pytest.fixture(scope="module")
def knee():
    image = an.analytic_knee((0.8, 0.5, 0.5))
    return image, dess.prepare_dess_anatomy(image, "analytic")


def _label_at_centres(vol, label_image, values, step=7):
    """Fraction of voxels of ``values`` whose centre lies on the same label in the source map."""
    lab = vol.labels.array
    idx = np.argwhere(np.isin(lab, values))[::step]
    ijk = np.c_[idx[:, 2], idx[:, 1], idx[:, 0], np.ones(len(idx))]
    f = (label_image.geometry.ras_to_ijk @ vol.labels.geometry.ijk_to_ras @ ijk.T)[:3].T.round().astype(int)
    ok = (f >= 0).all(1) & (f < np.array(label_image.geometry.shape_ijk)).all(1)
    src = label_image.array[f[ok, 2], f[ok, 1], f[ok, 0]]
    return float((src == lab[idx[ok, 0], idx[ok, 1], idx[ok, 2]]).mean()), int(ok.sum())


@pytest.mark.parametrize("orientation", ["sagittal", "coronal", "axial"])
def test_random_grid_labels_follow_the_anatomy(knee, orientation):
    image, anat = knee
    vol = dess.simulate_dess(anat, np.random.default_rng(4), orientation=orientation, keep_fractions=True)
    g = vol.image.geometry
    assert vol.labels.geometry.same_grid(g) and vol.image.array.shape == vol.labels.array.shape
    assert vol.image.array.dtype == np.float32 and vol.labels.array.dtype == np.uint8
    sp = sorted(g.spacing)
    assert dess.PIXEL_MM[0] * 0.95 <= sp[0] <= sp[1] <= dess.PIXEL_MM[1] * 1.05
    assert dess.SLICE_MM[0] <= sp[2] <= dess.SLICE_MM[1]
    assert vol.orientation == orientation
    # the slice normal (the thick axis) points within 15 deg of the orientation's world axis
    thick = int(np.argmax(g.spacing))
    world = {"sagittal": 0, "coronal": 1, "axial": 2}[orientation]
    assert abs(g.directions[world, thick]) > np.cos(np.radians(15.0))
    present = np.bincount(vol.labels.array.ravel(), minlength=7)
    assert present.size == 7 and (present[1:] > 0).all()
    for value in (lb.FEMUR, lb.FEMORAL_CARTILAGE, lb.TIBIA):
        agree, n = _label_at_centres(vol, image, [value])
        assert n > 20 and agree > 0.9, (value, agree)
    # labels are the fractions' argmax
    f = vol.fractions.astype(np.float32)
    assert np.allclose(f.sum(-1), 1.0, atol=1e-2)
    assert (np.argmax(f, -1) == vol.labels.array).mean() > 0.999


def test_plain_dess_contrast(knee):
    _, anat = knee
    vol = dess.simulate_dess(anat, np.random.default_rng(1), randomise=False, snr=1000.0, orientation="sagittal")
    assert vol.prior == "dess" and vol.snr == 1000.0
    img, lab = vol.image.array, vol.labels.array
    cart = img[lab == lb.FEMORAL_CARTILAGE].mean()
    bone = img[lab == lb.FEMUR].mean()
    # water excitation DESS: cartilage bright, fat-suppressed marrow dark
    assert cart > 2.5 * bone
    assert img[lab == lb.TIBIAL_CARTILAGE].mean() > 2.5 * img[lab == lb.TIBIA].mean()


def test_randomised_priors_mix(knee):
    _, anat = knee
    rng = np.random.default_rng(7)
    counts, n = dess.sample_counts(anat, dess.random_dess_geometry(anat.femoral_centroid_ras(), rng)[0], 0.7, rng)
    names = set()
    for _ in range(12):
        img, name, snr, sigma = dess.render_counts(counts[::8], n, (5.6, 0.4, 0.4), rng, randomise=True)
        names.add(name)
        assert 8.0 <= snr <= 60.0 and sigma > 0 and np.isfinite(img).all()
    assert "dess" in names and names & {"physical", "random"}


def test_native_grid_is_the_label_map(knee):
    image, anat = knee
    lesion = image.array.copy()
    lesion[(lesion == lb.TIBIA) & (np.arange(lesion.shape[2])[None, None, :] % 9 == 0)] = 8  # tibial lesions
    vol = dess.native_grid_dess(Image(lesion, image.geometry), np.random.default_rng(0))
    assert vol.image.geometry.same_grid(image.geometry)
    assert np.array_equal(vol.labels.array, lb.tissue_labels(image.array))
    assert vol.image.array.shape == image.array.shape and vol.prior == "dess"


def test_refuses_2d_label_map():
    from mskquant.errors import InputError

    g = an.analytic_knee().geometry
    with pytest.raises(InputError, match="3D"):
        dess.prepare_dess_anatomy(Image(np.zeros((4, 5), np.uint8), g))
