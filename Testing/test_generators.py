"""The shared domain-randomised generator (mskquant.synth), its knee use, and the independent
test family (mskquant.testfamily): numbers checked against hand calculations, and the rule that
no training code ever reads the test family."""

import re

import numpy as np
import pytest

from mskquant.image import Geometry
from mskquant.synth import appearance as ap
from mskquant.synth.sampling import slab_offsets, tissue_counts
from mskquant.testfamily import anatomy as fa
from mskquant.testfamily import cases as tf
from mskquant.testfamily.signal import MeseLookup, epg_cpmg

from conftest import ROOT


def test_tissue_counts_give_partial_volume_of_a_half_plane():
    # fine grid 0.1 mm; tissue 1 where x >= 0.0 mm; target voxels of 1 mm centred at x = -1, 0, 1
    fine = Geometry.from_spacing((60, 10, 10), (0.1, 0.1, 0.1), (-2.95, -0.45, -0.45))
    x = fine.origin[0] + 0.1 * np.arange(60)
    codes = np.broadcast_to((x >= 0.0).astype(np.uint8)[None, None, :], (10, 10, 60)).copy()
    target = Geometry.from_spacing((3, 1, 1), (1.0, 1.0, 1.0), (-1.0, 0.0, 0.0))
    offsets = slab_offsets((10, 1, 1), 1.0, 1.0)
    counts = tissue_counts(codes, fine, target, 2, offsets)
    assert counts.shape == (1, 1, 3, 2)
    assert np.all(counts.sum(-1) == offsets.shape[0])
    np.testing.assert_array_equal(counts[0, 0, :, 1], [0, 5, 10])  # outside, half, inside


def test_gaussian_slice_profile_has_the_slice_thickness_as_fwhm():
    box = slab_offsets((1, 1, 8), 4.0, 4.0, "box")[:, 2]
    gauss = slab_offsets((1, 1, 64), 4.0, 4.0, "gauss")[:, 2]  # in voxels of 4 mm
    assert np.isclose(box.min(), -0.4375) and np.isclose(box.max(), 0.4375)
    assert np.std(gauss) == pytest.approx(1.0 / 2.3548, rel=0.05)  # FWHM = one slice
    assert np.abs(gauss).max() > 0.5  # its tails reach the neighbouring slices


def test_render_is_pd_times_t2_decay_for_pure_voxels():
    counts = np.zeros((1, 2, 2, 3), np.uint8)
    counts[0, 0, 0, 1] = 4
    counts[0, 1, 1, 2] = 4
    counts[0, 0, 1, 1] = counts[0, 0, 1, 2] = 2  # half and half
    look = ap.Appearance(np.array([0.0, 0.8, 0.5]), np.array([1.0, 40.0, 80.0]), np.zeros((3, 3)), 5.0, 0.0, 100.0,
                         0.0, 1.0, "physical", 1)
    te = [10.0, 20.0, 30.0]
    out = ap.render(counts, 4, look, te, (1.0, 1.0, 1.0))
    for e, t in enumerate(te):
        assert out[e, 0, 0, 0] == pytest.approx(0.8 * np.exp(-t / 40.0), rel=1e-5)
        assert out[e, 0, 1, 1] == pytest.approx(0.5 * np.exp(-t / 80.0), rel=1e-5)
        assert out[e, 0, 0, 1] == pytest.approx(0.5 * (0.8 * np.exp(-t / 40.0) + 0.5 * np.exp(-t / 80.0)), rel=1e-5)
        assert out[e, 0, 1, 0] == 0.0


def test_random_appearances_vary_and_keep_cartilage_t2_in_range():
    rng = np.random.default_rng(0)
    kinds = ("air", "marrow", "cartilage_deep", "fluid", "cartilage_superficial")
    looks = [ap.draw_appearance(rng, kinds) for _ in range(200)]
    assert {lk.prior for lk in looks} == {"random", "physical"}
    fluid_brighter = [lk.pd[3] > lk.pd[1] for lk in looks]
    assert 0.2 < np.mean(fluid_brighter) < 0.95  # contrasts are swapped in a share of the looks
    for lk in looks:
        assert 20.0 <= lk.t2_ms[2] <= lk.t2_ms[4] <= 70.0
    f = ap.smooth_field((20, 30, 40), (1.0, 1.0, 1.0), 8.0, rng)
    assert f.shape == (20, 30, 40) and abs(f.mean()) < 1e-5 and f.std() == pytest.approx(1.0, rel=1e-4)


@pytest.fixture(scope="module")
def analytic_anatomy():
    from KneeT2SegmentLib import anatomy as an

    return an.prepare_anatomy(an.analytic_knee(), "right")


def test_knee_synthetic_volume_has_cartilage_truth_and_random_looks(analytic_anatomy):
    from KneeT2SegmentLib import synthetic as sy

    codes = sy.class_map(analytic_anatomy)
    assert (codes == sy.FC_SUPERFICIAL).any() and (codes == 7).any()  # both halves of the femoral cartilage
    rng = np.random.default_rng(3)
    vol = sy.sample_volume(analytic_anatomy, codes, rng)
    assert np.all(vol.counts.sum(-1) == vol.n_points)
    truth = sy.femoral_truth(vol)
    assert truth.any() and (vol.fraction >= 0.5).sum() == truth.sum()
    a, _, _, _ = sy.render_volume(vol, np.random.default_rng(1))
    b, _, _, _ = sy.render_volume(vol, np.random.default_rng(2))
    assert a.shape[0] == 3 and np.all(a >= 0)
    assert abs(np.corrcoef(a[1].ravel(), b[1].ravel())[0, 1]) < 0.99  # two different looks


def test_the_joint_shell_is_redrawn_beside_the_cartilage_only(analytic_anatomy):
    """The tissue meeting the cartilage varies per volume (layer thickness, patches of muscle/fat/fluid,
    a fluid film); nothing else in the anatomy changes, and the cartilage truth stays the same."""
    from KneeT2SegmentLib import anatomy as an
    from KneeT2SegmentLib import synthetic as sy

    codes = sy.class_map(analytic_anatomy)
    shell = sy.joint_shell(analytic_anatomy)
    assert shell.index.size == int((analytic_anatomy.tissue == an.JOINT).sum()) > 0
    assert 0 < shell.distance_mm.min() and shell.distance_mm.max() <= an.JOINT_MM + 0.5
    sp = analytic_anatomy.geometry.spacing
    spacing = (float(sp[2]), float(sp[1]), float(sp[0]))
    rng = np.random.default_rng(0)
    outside = np.ones(codes.size, bool)
    outside[shell.index] = False
    seen = set()
    kept_shell = []
    for _ in range(12):
        varied = sy.vary_joint_shell(codes, shell, spacing, rng)
        assert np.array_equal(varied.reshape(-1)[outside], codes.reshape(-1)[outside])
        new = varied.reshape(-1)[shell.index]
        assert set(np.unique(new)) <= {an.JOINT, an.MUSCLE, an.FAT, an.FLUID}
        seen |= set(int(v) for v in np.unique(new))
        kept_shell.append(float((new == an.JOINT).mean()))
    assert seen == {an.JOINT, an.MUSCLE, an.FAT, an.FLUID}
    assert min(kept_shell) < 0.5 < max(kept_shell)  # thin and thick layers
    # sample_volume applies the redrawn shell: same grid, other tissue beside the cartilage, same truth
    grid = sy.random_grid(np.random.default_rng(4))
    plain = sy.sample_volume(analytic_anatomy, codes, np.random.default_rng(4), params=grid)
    varied = [sy.sample_volume(analytic_anatomy, codes, np.random.default_rng(s), params=grid, shell=shell)
              for s in (5, 6, 7)]
    assert any(not np.array_equal(v.counts[..., an.JOINT], plain.counts[..., an.JOINT]) for v in varied)
    assert all(np.array_equal(v.counts[..., an.FC], plain.counts[..., an.FC]) for v in varied)


def test_epg_equals_the_exponential_with_perfect_refocusing_and_departs_from_it_without():
    te = 10.0 * np.arange(1, 8)
    amp = epg_cpmg(np.array([40.0]), np.array([1.0, 0.8]), 10.0, 7)
    np.testing.assert_allclose(amp[0, 0], np.exp(-te / 40.0), rtol=1e-6)
    low = amp[0, 1]
    assert low[0] < 0.9 * np.exp(-10.0 / 40.0)  # the first echo lacks the stimulated pathway
    assert low[1] > low[0] * np.exp(-10.0 / 40.0)  # later echoes recover part of it
    lut = MeseLookup.build(10.0, 7)
    np.testing.assert_allclose(lut(np.array([40.0]), np.array([1.0]))[0], np.exp(-te / 40.0), rtol=0.02)


def test_mirrored_label_map_is_the_other_knee():
    from KneeT2SegmentLib import anatomy as an

    labels = an.analytic_knee()
    mirror = fa.mirrored(labels)
    np.testing.assert_array_equal(mirror.array, labels.array[:, :, ::-1])  # i runs left-right here
    lat, _ = an.estimate_label_map_laterality(np.asarray(mirror.array), mirror.geometry)
    assert lat == "left"


def test_independent_mese_case_geometry_truth_and_decay():
    from KneeT2SegmentLib import anatomy as an

    labels = an.analytic_knee()
    rng = np.random.default_rng(5)
    p = tf.random_mese_protocol(rng, snr=200.0)
    case = tf.mese_case(labels, rng, p)
    e = case.echoes.array
    assert e.shape == (case.echo_times_ms.size,) + case.cartilage_truth.geometry.shape_kji
    assert np.allclose(case.echoes.geometry.spacing, [p.pixel_mm[0], p.pixel_mm[1], p.thickness_mm + p.gap_mm])
    truth = case.cartilage_truth.array
    assert truth.sum() > 200
    # cartilage decays faster than fluid-free marrow would not: echo 2 -> last falls by T2 ~ 30-60 ms
    ratio = e[-1][truth].mean() / e[1][truth].mean()
    dt = case.echo_times_ms[-1] - case.echo_times_ms[1]
    t2_apparent = -dt / np.log(ratio)
    assert 20.0 < t2_apparent < 80.0
    assert case.noise_sigma > 0


def test_dess_weight_is_the_steady_state_formula():
    from mskquant.testfamily.signal import dess_weight

    pd, t1, t2 = np.ones(fa.N_CODES), np.full(fa.N_CODES, 1200.0), np.full(fa.N_CODES, 40.0)
    w = dess_weight(pd, t1, t2, 25.0, 16.0, 5.0, water_excitation=0.1)
    a = np.radians(25.0)
    s_plus = np.sin(a) / (1 + np.cos(a) + (1 - np.cos(a)) * 30.0)  # hand calculation, T1/T2 = 30
    assert w[fa.FCART] == pytest.approx(s_plus * (1 + np.exp(-2 * 11.0 / 40.0)), rel=1e-5)
    assert w[fa.FAT] == pytest.approx(0.1 * w[fa.FCART], rel=1e-5)


def test_independent_dess_case_labels_and_contrast():
    from KneeT2SegmentLib import anatomy as an

    labels = an.analytic_knee()
    rng = np.random.default_rng(3)
    p = tf.random_dess_protocol(rng, snr=200.0)
    p.n_slices = 40  # the middle 40 slices keep the test fast
    case = tf.dess_case(labels, rng, p)
    img, lab = case.image.array, case.labels.array
    assert img.shape == lab.shape == case.image.geometry.shape_kji and lab.max() <= 6
    assert 0.6 <= p.thickness_mm <= 0.9 and np.isclose(case.image.geometry.spacing[2], p.thickness_mm)
    counts = np.bincount(lab.ravel(), minlength=7)
    assert (counts[1:5] > 100).all()
    # water-excitation DESS: cartilage bright, fat-suppressed marrow dark
    assert img[lab == 2].mean() > 2.0 * img[lab == 1].mean()
    # labels agree with the label map at voxel centres of the femur
    k, j, i = np.nonzero(lab == 1)
    sel = slice(None, None, 50)
    ijk = np.stack([i[sel], j[sel], k[sel], np.ones(i[sel].size)])
    f = np.rint(labels.geometry.ras_to_ijk @ case.image.geometry.ijk_to_ras @ ijk).astype(int)
    assert (labels.array[f[2], f[1], f[0]] == 1).mean() > 0.95


def test_no_training_code_reads_the_independent_test_family():
    training = [ROOT / "mskquant" / "synth", ROOT / "KneeT2Segment" / "KneeT2SegmentLib" / "training.py",
                ROOT / "KneeT2Segment" / "KneeT2SegmentLib" / "synthetic.py",
                ROOT / "KneeT2Segment" / "KneeT2SegmentLib" / "dess.py",
                ROOT / "KneeT2Segment" / "KneeT2SegmentLib" / "morphometry" / "training.py",
                ROOT / "scripts" / "train_knee_morph.py",
                ROOT / "KneeT2Segment" / "KneeT2SegmentLib" / "calibration.py",
                ROOT / "SiamesePainCAM" / "SiamesePainCAMLib" / "training.py",
                ROOT / "SiamesePainCAM" / "SiamesePainCAMLib" / "datasets.py",
                ROOT / "SiamesePainCAM" / "SiamesePainCAMLib" / "simulator.py",
                ROOT / "SiamesePainCAM" / "SiamesePainCAMLib" / "randomise.py",
                ROOT / "SiamesePainCAM" / "SiamesePainCAMLib" / "localiser.py",
                ROOT / "SiamesePainCAM" / "SiamesePainCAMLib" / "localiser_training.py",
                ROOT / "scripts" / "train_joint_localiser.py"]
    files = [f for p in training for f in ([p] if p.is_file() else sorted(p.rglob("*.py")))]
    assert len(files) >= 7
    pattern = re.compile(r"^\s*(from|import)\s+[\w.]*(testfamily|generalisation)|import_module\(", re.M)
    offenders = [str(f.relative_to(ROOT)) for f in files if pattern.search(f.read_text())]
    assert not offenders, f"training code imports the independent test family: {offenders}"
    assert pattern.search("from mskquant.testfamily import cases\n")  # the check itself can fail


def test_pain_protocol_overrides_set_one_property_and_keep_the_covered_width():
    """The robustness conditions of scripts/evaluate_pain_robustness.py: one acquisition property
    changed, a new slice thickness covering the same width, no override = the protocol drawn."""
    from mskquant.testfamily import cases as tf

    p = tf.random_pain_protocol(np.random.default_rng(5))
    assert tf._overridden(p, None) is p
    q = tf._overridden(p, {"snr": 100.0})
    assert q.snr == 100.0 and q.thickness_mm == p.thickness_mm and q.n_slices == p.n_slices
    t = tf._overridden(p, {"thickness_mm": 1.0, "gap_mm": 0.0})
    width = p.n_slices * (p.thickness_mm + p.gap_mm)
    assert t.thickness_mm == 1.0 and abs(t.n_slices * 1.0 - width) <= 0.5
