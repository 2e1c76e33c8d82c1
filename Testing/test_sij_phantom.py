"""The SIJ phantom (VHIWorkflowLib.sij_phantom): anatomy, contrasts and the V_HI method on it.

The exact V_HI arithmetic is checked on the tiny constructed case (test_vhi_logic); here the
method meets an image with anatomy: partial volume, texture, noise and a joint full of fluid.
"""

import numpy as np
import pytest

from VHIWorkflowLib.inflammation import segment_inflammation, vhi_of
from VHIWorkflowLib.sij_phantom import TISSUES, make_sij_phantom
from VHIWorkflowLib.thresholds import thresholds_from_normal_bone

from mskquant.image import resample_nearest


@pytest.fixture(scope="module")
def phantom():
    return make_sij_phantom(seed=0)


def test_contrasts_follow_stir_and_t1w(phantom):
    labels = resample_nearest(phantom.labels_fine.array, phantom.labels_fine.geometry, phantom.stir.geometry)
    med = {name: (float(np.median(phantom.stir.array[labels == c])), float(np.median(phantom.t1.array[labels == c])))
           for c, name in enumerate(TISSUES) if (labels == c).sum() > 50}
    # STIR: fat suppressed, fluid and oedema bright; T1W: fat and marrow bright, oedema dark
    assert med["fat"][0] < med["marrow"][0] < med["oedema"][0] < med["fluid"][0]
    assert med["oedema"][1] < 0.6 * med["marrow"][1] and med["fat"][1] > med["marrow"][1]
    assert phantom.stir.geometry.same_grid(phantom.t1.geometry)
    assert tuple(np.round(phantom.stir.geometry.spacing, 3)) == (0.6, 0.6, 3.3)


def test_regions_lie_where_the_method_expects_them(phantom):
    roi, region = phantom.normal_roi.array, phantom.disease_region.array
    assert roi.sum() >= 500 and not (roi & region).any()  # the reference is away from the joint
    assert (phantom.oedema_fraction[~region] < 0.5).all()  # every lesion lies in the disease region
    assert 2.0 < phantom.oedema_ml < 5.0


def test_vhi_finds_every_lesion_and_little_else(phantom):
    th = thresholds_from_normal_bone(phantom.stir.array[phantom.normal_roi.array])
    masks = segment_inflammation(phantom.stir.array, phantom.disease_region.array, th, phantom.stir.geometry)
    core = (phantom.oedema_fraction >= 0.5) & phantom.disease_region.array
    assert (masks.sensitive & core).sum() >= 0.95 * core.sum()
    assert (masks.conservative & core).sum() >= 0.9 * core.sum() and not (masks.conservative & ~masks.sensitive).any()
    # before cleaning: joint-margin partial volume and marrow speckle add to the oedema, not more than x2.5
    vhi = vhi_of(masks.sensitive, phantom.stir.geometry).volume_ml
    assert phantom.oedema_ml <= vhi <= 2.5 * phantom.oedema_ml


def test_the_phantom_is_reproducible(phantom):
    again = make_sij_phantom(seed=0)
    np.testing.assert_array_equal(again.stir.array, phantom.stir.array)
    assert not np.array_equal(make_sij_phantom(seed=1).stir.array, phantom.stir.array)
