"""KneeT2Segment change over time on projection maps built by hand (answers known by construction)."""

import numpy as np
import pytest

from mskquant.errors import InputError

from KneeT2SegmentLib.change import TimePoint, align, compare, focal_clusters, follow_map_on_baseline
from KneeT2SegmentLib.subregions import N_BINS, ProjectionMaps, region_keys

ROWS, SPACING = 20, 3.5


def plate(rng, value=45.0, noise=0.3):
    m = np.full((ROWS, N_BINS), np.nan)
    m[1:19, 20:60] = value + rng.normal(0, noise, (18, 40))
    m[8:11, 35:60] = np.nan  # the notch: no central/posterior cartilage between the condyles
    return m


def projection(all_map, ml0=-35.0, radius=30.0, laterality="right"):
    ml = ml0 + SPACING * np.arange(ROWS)
    return ProjectionMaps(all_map, all_map, all_map, np.isfinite(all_map).astype(int), ml, 9.5, SPACING, radius,
                          laterality, "notch")


def timepoint(all_map, deltas=0.0, subject="9000001", **kw):
    regions = {k: (45.0 + deltas, 100) for k in region_keys()}
    return TimePoint(regions, projection(all_map, **kw), kw.get("laterality", "right"), subject)


def test_planted_lesion_is_the_one_cluster_with_its_area():
    rng = np.random.default_rng(0)
    base = plate(rng)
    follow = plate(rng)
    follow[3:7, 24:30] += 12.0  # 24-pixel lesion
    follow[14, 50] += 12.0  # a single hot pixel: below 1 % of the plate
    res = compare(timepoint(base), timepoint(follow, deltas=1.5))
    assert res.n_clusters == 1 and res.clusters[0].area_pixels == 24
    assert res.percent_area == pytest.approx(100 * 24 / res.plate.sum())
    assert res.threshold_ms == pytest.approx(res.mean_change_ms + res.sd_change_ms)
    d = res.difference[res.plate]
    assert res.mean_change_ms == pytest.approx(d.mean()) and res.sd_change_ms == pytest.approx(d.std())
    assert res.clusters[0].side == "medial" and res.clusters[0].zone == "anterior"
    assert res.n_candidate_clusters >= 2
    rows = {r["region"]: r for r in res.rows}
    assert rows["Deep medial central"]["delta_t2_ms"] == pytest.approx(1.5)
    js = res.clusters_json()
    assert js["n_clusters"] == 1 and js["percent_area"] == pytest.approx(res.percent_area)


def test_diagonal_pixels_join_one_cluster():
    diff = np.zeros((10, 10))
    diff[2, 2] = diff[3, 3] = diff[4, 4] = 10.0
    labels, n, *_ = focal_clusters(diff, np.ones((10, 10), bool), min_area_fraction=0.02)
    assert n == 1 and labels.max() == 1 and (labels > 0).sum() == 3


def test_alignment_by_medial_lateral_position_and_small_shift():
    rng = np.random.default_rng(1)
    base = plate(rng)
    follow = np.full_like(base, np.nan)
    follow[:, 1:] = base[:, :-1]  # follow-up map one bin (5 deg) further posterior
    follow[:-1] = follow[1:].copy()  # and its rows start one slice (3.5 mm) more laterally...
    follow[-1:] = np.nan
    fp = projection(follow, ml0=-35.0 + SPACING)  # ...as its notch-based positions say
    aligned, dr, dc, dice = align(projection(base), fp)
    assert (dr, dc) == (0, -1) and dice == pytest.approx(1.0)
    np.testing.assert_allclose(aligned[np.isfinite(base)], base[np.isfinite(base)])
    moved = follow_map_on_baseline(projection(base), fp, np.isfinite(follow).astype(float), dr, dc)
    assert np.nansum(moved) == np.isfinite(base).sum()


def test_different_knees_are_refused():
    rng = np.random.default_rng(2)
    base, follow = plate(rng), plate(rng)
    with pytest.raises(InputError, match="left and a right|right and a left"):
        compare(timepoint(base), timepoint(follow, laterality="left"))
    with pytest.raises(InputError, match="different subjects"):
        compare(timepoint(base), timepoint(follow, subject="9999999"))
    with pytest.raises(InputError, match="radius"):
        compare(timepoint(base), timepoint(follow, radius=40.0))
    narrow = follow.copy()
    narrow[12:] = np.nan
    with pytest.raises(InputError, match="plate width"):
        compare(timepoint(base), timepoint(narrow))
