"""KneeT2Segment acceptance on MESE phantoms simulated from real OAI knee anatomy (../shared).

Issue 4 acceptance: mean T2 bias in pure cartilage voxels <= 0.3 ms at SNR 30 (log-linear
shown alongside), per-voxel MAE <= 1.1 ms at SNR 100, subregion means within 0.5 ms of
truth, a prescribed T2 change recovered within 0.5 ms per subregion, a planted focal lesion
found with its area within 30 %. Anatomy: knee 9014797 at baseline (_00m) and 72 months
(_72m). "Truth" for subregion means of the full mask is the noise-free measurement (boundary
voxels mix cartilage with their neighbours, which no voxel-wise fit undoes); the cartilage's
own T2 is the truth in pure cartilage voxels. Run with ``-s`` to see the figures.
"""

from dataclasses import replace

import numpy as np
import pytest

from KneeT2SegmentLib import anatomy as an
from KneeT2SegmentLib import simulator as sm
from KneeT2SegmentLib.change import TimePoint, compare, follow_map_on_baseline
from KneeT2SegmentLib.quantify import quantify
from KneeT2SegmentLib.subregions import SUBREGION_NAMES, projection_maps

BASE, FOLLOW = "9014797_00m", "9014797_72m"


@pytest.fixture(scope="module")
def anatomies(knee_labelmap_dir):
    a0 = an.load_anatomy(knee_labelmap_dir / f"{BASE}.nii.gz")
    a1 = an.load_anatomy(knee_labelmap_dir / f"{FOLLOW}.nii.gz", a0.laterality)
    return a0, a1


@pytest.fixture(scope="module")
def single(anatomies):
    """One time point at SNR 30 and at SNR 100, quantified with the true cartilage mask."""
    out = {}
    for snr, seed in ((30.0, 11), (100.0, 12)):
        ph = sm.simulate(anatomies[0], sm.PhantomParameters(snr=snr, seed=seed))
        out[snr] = (ph, quantify(ph.series, ph.cartilage_mask))
    return out


@pytest.fixture(scope="module")
def longitudinal(anatomies):
    """Baseline, a follow-up of the same anatomy and one of the 72-month anatomy (SNR 40)."""
    a0, a1 = anatomies
    params = sm.PhantomParameters(snr=40.0, seed=0)
    base = sm.simulate(a0, params)
    follows = {}
    for key, anat in (("same", a0), ("72m", a1)):
        p = replace(params, seed=1, delta_t2_ms=dict(sm.DEFAULT_DELTA_T2), lesions=[sm.default_lesion(anat)])
        follows[key] = sm.simulate(anat, p, follow_up=True)
    qb = quantify(base.series, base.cartilage_mask)
    out = {}
    for key, ph in follows.items():
        qf = quantify(ph.series, ph.cartilage_mask)
        change = compare(TimePoint.from_summary(qb.summary()), TimePoint.from_summary(qf.summary()))
        out[key] = (ph, qf, change)
    return base, qb, out


def subregion_mean(values, quant, lab, where=None):
    sel = (quant.subregions.labels == lab) & np.isfinite(values)
    if where is not None:
        sel &= where
    return float(values[sel].mean())


def test_shared_label_maps_are_right_knees(knee_labelmap_dir):
    from mskquant.imageio import read_image

    for path in sorted(knee_labelmap_dir.glob("90*.nii.gz")):
        img = read_image(path)
        assert an.estimate_label_map_laterality(img.array, img.geometry)[0] == "right", path.name
        assert an.estimate_label_map_laterality(img.array[:, :, ::-1], img.geometry)[0] == "left", path.name


def test_noise_free_phantom_matches_its_truth_in_pure_voxels(single):
    ph, _ = single[30.0]
    pure = ph.femoral_fraction >= 1.0
    d = ph.t2_noise_free.array[pure] - ph.t2_true.array[pure]
    assert pure.sum() > 3000
    assert np.abs(d).max() < 0.1, np.abs(d).max()  # only the T2 spread inside a voxel remains


def test_bias_in_pure_cartilage_voxels_at_snr_30(single):
    ph, q = single[30.0]
    assert abs(q.fit.noise.sigma / ph.sigma - 1) < 0.02  # sigma from the background air
    pure = (ph.femoral_fraction >= 1.0) & q.refined
    truth = ph.t2_true.array[pure]
    bias = float(np.mean(q.fit.t2_ms[pure] - truth))
    bias_ll = float(np.nanmean(q.fit.t2_loglinear_ms[pure] - truth))
    print(f"\nSNR 30, {pure.sum()} pure voxels: noise-corrected bias {bias:+.3f} ms, log-linear {bias_ll:+.3f} ms")
    assert abs(bias) <= 0.3
    assert bias_ll > abs(bias) + 0.2  # the noise floor biases the log-linear fit upwards


def test_mae_in_pure_cartilage_voxels_at_snr_100(single):
    ph, q = single[100.0]
    pure = (ph.femoral_fraction >= 1.0) & q.refined
    err = q.fit.t2_ms[pure] - ph.t2_true.array[pure]
    mae = float(np.abs(err).mean())
    print(f"\nSNR 100, {pure.sum()} pure voxels: MAE {mae:.3f} ms, bias {err.mean():+.3f} ms")
    assert mae <= 1.1


def test_subregion_means_within_half_a_millisecond(single):
    ph, q = single[30.0]
    rows = {r.region: r.mean_t2_ms for r in q.rows}
    pure = ph.femoral_fraction >= 1.0
    pure_fit = np.where(pure, q.fit.t2_ms, np.nan)
    worst_nf, worst_pure, worst_pv = 0.0, 0.0, 0.0
    for lab, name in SUBREGION_NAMES.items():
        nf = subregion_mean(ph.t2_noise_free.array, q, lab, q.refined)
        worst_nf = max(worst_nf, abs(rows[name] - nf))
        worst_pure = max(worst_pure, abs(subregion_mean(pure_fit, q, lab) - subregion_mean(ph.t2_true.array, q, lab, pure)))
        worst_pv = max(worst_pv, abs(nf - subregion_mean(ph.t2_true.array, q, lab, q.refined)))
    print(f"\nSNR 30 subregion means: max |error| {worst_nf:.3f} ms vs noise-free truth (full mask), "
          f"{worst_pure:.3f} ms vs cartilage T2 (pure voxels); partial volume of boundary voxels moves the "
          f"noise-free means by up to {worst_pv:.2f} ms")
    assert worst_nf <= 0.5
    assert worst_pure <= 0.5


def _expected_change(base_q, follow_ph, follow_q):
    """Prescribed change per subregion plus the lesion's share of that subregion's voxels."""
    inc = follow_ph.lesion_t2_increment
    return {name: sm.DEFAULT_DELTA_T2[lab] + subregion_mean(inc, follow_q, lab, follow_q.refined)
            for lab, name in SUBREGION_NAMES.items()}


def _lesion(base_q, follow_ph, follow_q, change):
    frac = np.where(follow_q.refined, follow_ph.lesion_fraction, np.nan)
    footprint = projection_maps(frac, follow_q.subregions).all
    on_base = follow_map_on_baseline(base_q.projection, follow_q.projection, footprint, change.row_shift,
                                     change.bin_shift)
    area = float(np.nansum(on_base))
    core = np.nan_to_num(on_base) >= 0.5
    hits = [lab for lab in range(1, change.cluster_labels.max() + 1) if (core & (change.cluster_labels == lab)).any()]
    found = int(sum((change.cluster_labels == lab).sum() for lab in hits))
    covered = float((core & (change.cluster_labels > 0)).sum() / core.sum())
    return area, found, covered, hits


def test_prescribed_change_recovered_per_subregion(longitudinal):
    base, qb, out = longitudinal
    ph, qf, change = out["same"]
    expected = _expected_change(qb, ph, qf)
    rows = {r["region"]: r["delta_t2_ms"] for r in change.rows}
    errors = {name: rows[name] - expected[name] for name in expected}
    worst = max(errors, key=lambda k: abs(errors[k]))
    print(f"\nsame knee, SNR 40: max |measured - prescribed| change {abs(errors[worst]):.3f} ms ({worst})")
    assert all(abs(e) <= 0.5 for e in errors.values()), errors


def test_planted_lesion_found_with_its_area(longitudinal):
    base, qb, out = longitudinal
    ph, qf, change = out["same"]
    area, found, covered, hits = _lesion(qb, ph, qf, change)
    print(f"\nsame knee: lesion {area:.1f} projection pixels, found {found} ({found / area - 1:+.0%}), "
          f"{change.n_clusters} cluster(s), {change.percent_area:.2f} % of the plate")
    assert len(hits) == 1 and covered >= 0.9
    assert abs(found / area - 1) <= 0.30


def test_real_longitudinal_anatomy(longitudinal):
    """72-month anatomy: the pipeline reproduces the change the images hold; the lesion is found."""
    base, qb, out = longitudinal
    ph, qf, change = out["72m"]
    rows = {r["region"]: r["delta_t2_ms"] for r in change.rows}
    expected = _expected_change(qb, ph, qf)
    worst_nf, worst_presc = 0.0, 0.0
    for lab, name in SUBREGION_NAMES.items():
        nf = subregion_mean(ph.t2_noise_free.array, qf, lab, qf.refined) - \
            subregion_mean(base.t2_noise_free.array, qb, lab, qb.refined)
        worst_nf = max(worst_nf, abs(rows[name] - nf))
        worst_presc = max(worst_presc, abs(rows[name] - expected[name]))
    area, found, covered, hits = _lesion(qb, ph, qf, change)
    print(f"\n{BASE} -> {FOLLOW}: max |measured - noise-free| change {worst_nf:.3f} ms; vs prescribed "
          f"{worst_presc:.2f} ms (cartilage shape and partial volume changed too); lesion {area:.1f} pixels, "
          f"found {found} ({found / area - 1:+.0%})")
    assert worst_nf <= 0.5
    assert len(hits) == 1 and covered >= 0.9
    assert abs(found / area - 1) <= 0.5
