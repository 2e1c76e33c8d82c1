"""KneeT2Segment subregions on the analytic knee, whose anatomy is known by construction."""

import numpy as np
import pytest

from mskquant.errors import InputError
from mskquant.image import Geometry

from KneeT2SegmentLib.anatomy import FEMORAL_CARTILAGE, analytic_knee
from KneeT2SegmentLib.subregions import (SUBREGION_NAMES, decode_label, femoral_subregions, fit_circle,
                                         projection_maps, region_keys, region_stats)


@pytest.fixture(scope="module")
def knee():
    img = analytic_knee()
    mask = img.array == FEMORAL_CARTILAGE
    k, j, i = np.nonzero(mask)
    ras = (img.geometry.ijk_to_ras @ np.stack([i, j, k, np.ones(i.size)]))[:3]
    return img, mask, ras


def test_circle_fit_is_exact_on_a_circle():
    t = np.linspace(-2.5, 1.0, 200)
    cx, cy, r = fit_circle(3.0 + 21.0 * np.cos(t), -4.0 + 21.0 * np.sin(t))
    assert abs(cx - 3.0) < 1e-6 and abs(cy + 4.0) < 1e-6 and abs(r - 21.0) < 1e-6


def test_right_knee_subregions_match_the_anatomy(knee):
    img, mask, (x, y, z) = knee
    sub = femoral_subregions(mask, img.geometry, "right")
    lab = sub.labels[mask]
    layer, side, zone = (np.array(v) for v in zip(*(decode_label(v) for v in lab)))
    assert sub.ml_method == "notch"
    assert set(np.unique(lab)) == set(SUBREGION_NAMES)
    # right knee: the medial condyle is on the patient's left (-R); the notch lies between the condyles
    assert np.all(side[x < -12] == 0) and np.all(side[x > 12] == 1)
    boundary_x = img.geometry.origin[0] + sub.boundary_slice * img.geometry.spacing[0]
    assert -9 < boundary_x < 9
    # zones: under the condyle centres -> central; trochlear groove -> anterior; back of the condyles -> posterior
    condyle = (x < -9) | (x > 9)
    assert np.all(zone[condyle & (z < -21) & (np.abs(y + 5) < 4)] == 1)
    assert np.all(zone[(y > 17.5) & (z > 8)] == 0)
    assert np.all(zone[condyle & (y < -24) & (z > -8)] == 2)
    # layers: at the bottom of a condyle the deep half is the one nearer the bone (higher)
    col = condyle & (np.abs(y + 5) < 0.3) & (np.abs(x + 20) < 0.5)
    assert col.sum() >= 4
    assert z[col][layer[col] == 0].min() > z[col][layer[col] == 1].max()
    assert abs((layer == 0).mean() - 0.5) < 0.1


def test_medial_side_follows_laterality_and_orientation_not_slice_order(knee):
    img, mask, (x, y, z) = knee
    right = femoral_subregions(mask, img.geometry, "right").labels
    # the same grid read in the opposite slice order (i axis reversed): identical labels per position
    g = img.geometry
    m = g.ijk_to_ras.copy()
    m[:3, 0] = -m[:3, 0]
    m[:3, 3] = g.ijk_to_ras[:3, 3] + g.ijk_to_ras[:3, 0] * (g.shape_ijk[0] - 1)
    flipped = femoral_subregions(mask[:, :, ::-1], Geometry(g.shape_ijk, m), "right").labels
    np.testing.assert_array_equal(flipped[:, :, ::-1], right)
    # the mirrored knee is a left knee: its medial condyle is now on +R
    left = femoral_subregions(mask[:, :, ::-1], g, "left").labels
    xs = g.origin[0] + g.spacing[0] * np.arange(g.shape_ijk[0])
    side_left = (left[mask[:, :, ::-1]] - 1) // 3 % 2
    k, j, i = np.nonzero(mask[:, :, ::-1])
    assert np.all(side_left[xs[i] > 12] == 0) and np.all(side_left[xs[i] < -12] == 1)
    # a mirrored right knee is a left knee: every voxel keeps its anatomical subregion (a slice lying
    # exactly on the medial/lateral boundary counts as medial in both, so it is left out)
    sub_r = femoral_subregions(mask, g, "right")
    away = mask.copy()
    if float(sub_r.boundary_slice).is_integer():
        away[:, :, int(sub_r.boundary_slice)] = False
    np.testing.assert_array_equal(left[:, :, ::-1][away], right[away])
    # the same mirrored anatomy called a right knee swaps medial and lateral, nothing else
    wrong = femoral_subregions(mask[:, :, ::-1], g, "right").labels[:, :, ::-1]
    np.testing.assert_array_equal((wrong[away] - 1) // 3 % 2 + (right[away] - 1) // 3 % 2, 1)
    np.testing.assert_array_equal((wrong[away] - 1) % 3, (right[away] - 1) % 3)


def test_non_sagittal_grid_or_unknown_laterality_is_refused(knee):
    img, mask, _ = knee
    with pytest.raises(InputError, match="laterality"):
        femoral_subregions(mask, img.geometry, None)
    c = np.cos(np.radians(45))
    rot = np.array([[c, -c, 0], [c, c, 0], [0, 0, 1.0]])
    g = Geometry.from_spacing(img.geometry.shape_ijk, img.geometry.spacing, (0, 0, 0), rot)
    with pytest.raises(InputError, match="not sagittal"):
        femoral_subregions(mask, g, "right")
    with pytest.raises(InputError, match="empty"):
        femoral_subregions(np.zeros_like(mask), img.geometry, "right")


def test_single_condyle_falls_back_to_centre_of_mass(knee):
    img, mask, (x, _, _) = knee
    one = mask.copy()
    k, j, i = np.nonzero(mask)
    one[k[x > -9], j[x > -9], i[x > -9]] = False
    sub = femoral_subregions(one, img.geometry, "right")
    assert sub.ml_method == "centre of mass" and sub.warnings


def test_statistics_and_aggregates_by_construction(knee):
    img, mask, _ = knee
    sub = femoral_subregions(mask, img.geometry, "right")
    t2 = np.where(mask, sub.labels.astype(float) * 2.0, np.nan)  # T2 = 2 x label
    rows = {r.region: r for r in region_stats(t2, sub.labels)}
    assert len(rows) == len(region_keys()) == 36
    counts = {lab: int((sub.labels == lab).sum()) for lab in SUBREGION_NAMES}
    for lab, name in SUBREGION_NAMES.items():
        assert rows[name].mean_t2_ms == pytest.approx(2.0 * lab) and rows[name].sd_t2_ms == pytest.approx(0.0)
        assert rows[name].n_voxels == counts[lab]
    deep = sum(2.0 * l * counts[l] for l in range(1, 7)) / sum(counts[l] for l in range(1, 7))
    assert rows["Deep"].mean_t2_ms == pytest.approx(deep)
    assert rows["All"].n_voxels == int(mask.sum())
    lat_post = [4 + 2, 10 + 2]  # deep and superficial lateral posterior labels
    assert rows["Lateral posterior"].n_voxels == sum(counts[l] for l in lat_post)
    medial = np.isin(sub.labels, (1, 2, 3, 7, 8, 9))
    assert rows["Medial"].median_t2_ms == pytest.approx(float(np.median(t2[medial])))
    proj = projection_maps(t2, sub)
    assert int(proj.counts.sum()) == int(mask.sum())
    assert proj.ml_mm[0] < proj.ml_mm[-1]  # rows run medial -> lateral
    top = np.nanmean(proj.all[: int(proj.boundary_row)])
    assert top < 2.0 * 7  # medial rows hold medial labels (1-3 deep, 7-9 superficial)
