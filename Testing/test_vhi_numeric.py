"""VHIWorkflow numeric core: thresholds (Hepburn 2.5.2), island removal and masks (2.5.1),
comparison statistics — each against a hand calculation."""

from __future__ import annotations

import numpy as np
import pytest

from mskquant.errors import InputError
from mskquant.image import Geometry
from VHIWorkflowLib.comparison import Change, agreement, compare_masks
from VHIWorkflowLib.inflammation import remove_small_islands_2d, segment_inflammation, slice_axis, vhi_of
from VHIWorkflowLib.thresholds import thresholds_from_normal_bone


def test_n_climbs_until_the_gap_is_below_half_the_iqr():
    # 0..99 and one 300: Q1 = 25, Q3 = 75, IQR = 50, max 300. Gap 300 - (75 + 50 n) < 25  <=> n > 4.0;
    # at n = 4.00 the gap equals IQR/2 exactly (not below), so n = 4.05, L_lower = 277.5.
    v = np.r_[np.arange(100.0), 300.0]
    t = thresholds_from_normal_bone(v)
    assert (t.q1, t.q3, t.iqr, t.upper) == (25.0, 75.0, 50.0, 300.0)
    assert t.n == pytest.approx(4.05) and t.lower == pytest.approx(277.5) and t.steps == 51
    assert 0 < t.upper - t.lower < t.iqr / 2


def test_n_unchanged_when_the_condition_already_holds():
    # 0..99 and one 160: Q3 + 1.5 IQR = 150, gap 10 in (0, 25): n stays 1.5
    t = thresholds_from_normal_bone(np.r_[np.arange(100.0), 160.0])
    assert t.n == 1.5 and t.lower == pytest.approx(150.0) and t.steps == 0


def test_n_goes_down_when_the_lower_limit_is_not_below_the_maximum():
    # 0..100: Q1 25, Q3 75, IQR 50, max 100: at 1.5 the gap is -50 <= 0; first n with gap in (0, 25): 0.45
    t = thresholds_from_normal_bone(np.arange(101.0))
    assert t.n == pytest.approx(0.45) and t.lower == pytest.approx(97.5) and t.steps == -21


@pytest.mark.parametrize("values, match", [
    (np.arange(9.0), "at least 10"),
    (np.full(50, 7.0), "IQR = 0"),
    (np.r_[np.arange(20.0), np.nan], "NaN"),
])
def test_threshold_inputs_are_checked(values, match):
    with pytest.raises(InputError, match=match):
        thresholds_from_normal_bone(values)


def test_islands_use_8_connectivity_per_slice():
    m = np.zeros((3, 10, 10), bool)
    for d in range(4):
        m[0, 2 + d, 2 + d] = True  # diagonal chain of 4: one 8-connected region, kept
    m[0, 8, 0:3] = True  # 3 pixels: removed
    m[1:3, 5:7, 5] = True  # 2 pixels in each of 2 slices: 4 voxels in 3D, but < 4 per slice: removed
    out = remove_small_islands_2d(m, 4, axis=0)
    assert out[0].sum() == 4 and out[0, 2:6, 2:6].trace() == 4
    assert out[1:].sum() == 0 and not out[0, 8].any()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_islands_match_scipy_8_connected_labelling(axis):
    """The island rule (SimpleITK components) keeps exactly what SciPy's 8-connected labelling keeps."""
    from scipy import ndimage

    rng = np.random.default_rng(axis)
    m = rng.random((12, 30, 25)) < 0.12  # many small and touching-by-corner pieces
    moved = np.moveaxis(m, axis, 0)
    expected = np.zeros_like(moved)
    for k, sl in enumerate(moved):
        lab, _ = ndimage.label(sl, structure=np.ones((3, 3), bool))
        sizes = np.bincount(lab.ravel())
        keep = sizes >= 4
        keep[0] = False
        expected[k] = keep[lab]
    out = remove_small_islands_2d(m, 4, axis=axis)
    np.testing.assert_array_equal(out, np.moveaxis(expected, 0, axis))
    assert 0 < out.sum() < m.sum()


def test_island_slices_follow_the_thickest_axis():
    g = Geometry.from_spacing((10, 4, 12), (0.6, 3.3, 0.6), (0, 0, 0))  # slices along j
    assert slice_axis(g) == 1
    assert slice_axis(Geometry.from_spacing((5, 5, 5), (1, 1, 1), (0, 0, 0))) == 0


def test_conservative_core_is_kept_with_its_lesion():
    g = Geometry.from_spacing((8, 8, 1), (0.6, 0.6, 3.3), (0, 0, 0))
    from VHIWorkflowLib.thresholds import Thresholds

    th = Thresholds(lower=10, upper=20, n=1.5, q1=0, q3=1, iqr=1, median=0.5, n_voxels=10, steps=0)
    stir = np.zeros(g.shape_kji)
    stir[0, 1:3, 1:4] = 15
    stir[0, 1, 1:3] = 25  # 2-pixel hyperintense core in a 6-pixel lesion
    stir[0, 6, 5:7] = 25  # 2-pixel lesion on its own: removed
    m = segment_inflammation(stir, np.ones(g.shape_kji, bool), th, g)
    assert m.sensitive.sum() == 6 and m.conservative.sum() == 2
    assert set(np.unique(m.label_map)) == {0, 1, 2} and (m.label_map == 2).sum() == 2
    v = vhi_of(m.sensitive, g)
    assert v.voxels == 6 and v.volume_mm3 == pytest.approx(6 * 0.6 * 0.6 * 3.3) and v.volume_ml == v.volume_mm3 / 1000


def test_comparison_statistics():
    g = Geometry.from_spacing((10, 1, 1), (1, 1, 10), (0, 0, 0))
    a = np.zeros(g.shape_kji, bool)
    b = np.zeros(g.shape_kji, bool)
    a[..., :4] = True
    b[..., 2:8] = True
    c = compare_masks(a, b, g)
    assert c.dice == pytest.approx(0.4) and c.jaccard == pytest.approx(0.25)
    assert c.volume_similarity == pytest.approx(0.8) and c.volume_a_ml == pytest.approx(0.04)
    ba = agreement([1, 2, 3], [2, 2, 5])
    assert ba.mean_difference == pytest.approx(1.0) and ba.sd_difference == pytest.approx(1.0)
    assert ba.lower_limit == pytest.approx(-0.96) and ba.upper_limit == pytest.approx(2.96)
    ch = Change(pre_ml=4.0, post_ml=3.0)
    assert ch.change_ml == -1.0 and ch.change_percent == -25.0 and ch.improved
    with pytest.raises(InputError):
        agreement([1], [2])
