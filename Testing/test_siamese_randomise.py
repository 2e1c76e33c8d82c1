"""The domain-randomised pair generator of the pain network (``pain-train --generator randomised``):
every knee its own look and acquisition, the lesions still what makes them lesions, the truth
(centre slice, joint, lesion mask) following the random grid. Runs without ../shared."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SiamesePainCAMLib import preprocessing as pp, randomise as rz, simulator as sim


@pytest.fixture(scope="module")
def analytic():
    return sim.build_anatomy(sim.analytic_knee_labels(), "analytic", seed=99)


def test_tissue_signals_vary_but_fluid_stays_brightest_and_oedema_between_marrow_and_fluid():
    look = rz.Look()
    luts = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        lut = rz.tissue_signal(sim.SIGNAL, rng, look, (sim.MARROW, sim.FAT), sim.FLUID)
        others = np.delete(lut, sim.FLUID)
        assert lut[sim.FLUID] >= 1.15 * others.max() - 1e-3
        bml = rz.bml_signal(lut, rng, look, sim.MARROW, sim.FLUID)
        assert lut[sim.MARROW] < bml < lut[sim.FLUID]
        luts.append(lut / lut[sim.FLUID])
    luts = np.array(luts)
    # real variety: marrow from darker than muscle to brighter than it (fat suppression good to poor)
    ratio = luts[:, sim.MARROW] / luts[:, sim.MUSCLE]
    assert ratio.min() < 0.5 and ratio.max() > 1.0
    assert np.std(np.log(luts[:, sim.CARTILAGE])) > 0.2


def test_random_acquisitions_cover_the_ranges():
    look = rz.Look()
    acqs = [rz.acquisition(np.random.default_rng(s), look) for s in range(300)]
    px = np.array([a["pixel_mm"] for a in acqs])
    th = np.array([a["slice_mm"] for a in acqs])
    fov = np.array([a["matrix"] * a["pixel_mm"] for a in acqs])
    assert px.min() >= 0.30 and px.max() <= 0.45 and np.ptp(px) > 0.1
    assert th.min() >= 2.6 and th.max() <= 3.6
    assert fov.min() > 130 and fov.max() < 180 and all(a["matrix"] % 8 == 0 for a in acqs)
    assert {a["slice_direction"] for a in acqs} == {-1, 1}
    assert all(a["n_slices"] * a["slice_mm"] >= 95 for a in acqs)  # enough slices for centre +- 11


def test_gamma_keeps_the_99th_percentile_and_noise_kinds_differ():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 100, (4, 32, 32)).astype(np.float32)
    out = rz.gamma(img, np.random.default_rng(1), rz.Look(gamma=(1.3, 1.3)))
    assert np.percentile(out, 99) == pytest.approx(np.percentile(img, 99), rel=1e-4)
    assert np.median(out) < np.median(img)  # gamma > 1 darkens the mid-tones
    zero = np.zeros((64, 64), np.float32)
    rician = rz.add_noise(zero, 1.0, np.random.default_rng(2), rz.Look(rician_probability=1.0))
    gauss = rz.add_noise(zero, 1.0, np.random.default_rng(2), rz.Look(rician_probability=0.0))
    assert rician.mean() == pytest.approx(np.sqrt(np.pi / 2), rel=0.05)  # Rayleigh floor
    assert gauss.mean() == pytest.approx(1 / np.sqrt(2 * np.pi), rel=0.1)  # half-normal after clipping at 0


def test_randomised_pair_each_knee_its_own_look_grid_and_truth(analytic):
    pair = sim.simulate_pair(analytic, np.random.default_rng(5), "r", painful_side="right", lesion_kind="effusion",
                             variation=sim.Variation.randomised())
    gl, gr = pair.left.image.geometry, pair.right.image.geometry
    assert gl.shape_kji != gr.shape_kji or not np.allclose(gl.spacing, gr.spacing)
    for knee in (pair.left, pair.right):
        g = knee.image.geometry
        assert 0.30 <= g.spacing[0] <= 0.45 and 2.6 <= g.spacing[2] <= 3.6
        assert 0 <= knee.centre_slice < g.shape_kji[0]
    img, mask = pair.right.image.array, pair.right.lesion_mask.array
    assert mask.sum() > 200 and not pair.left.lesion_mask.array.any()
    tissue = img[img > 0.1 * np.percentile(img, 99)]
    assert np.median(img[mask]) > 1.5 * np.median(tissue)  # the effusion is this knee's fluid: bright
    # the template alignment still finds the knee on its random look (centre slice, joint centre)
    ref = sim.reference_knee(analytic)
    template = pp.Template(pp.prepare_knee(ref.image, "right", None, centre=ref.centre_slice,
                                           joint_centre_uv=sim.joint_centre_uv(ref)).planes)
    for knee in (pair.left, pair.right):
        pk = pp.prepare_knee(knee.image, knee.side, template)
        step = pp.MODEL_SLICE_SPACING_MM / knee.image.geometry.spacing[2]
        assert abs(pk.centre_slice - knee.centre_slice) <= 1.5 * step
        t = np.median([al.t_uv for al in pk.alignments], axis=0)
        assert np.linalg.norm(t - sim.joint_centre_uv(knee)) < 6.0  # mm


def test_pain_phantom_randomised_generator(cli, tmp_path):
    out = tmp_path / "ph"
    rc, _, _ = cli("pain-phantom", "--out", str(out), "--pairs", "1", "--analytic", "--generator", "randomised",
                   "--seed", "4", "-q")
    assert rc == 0
    from mskquant.imageio import read_image

    left, right = (read_image(out / f"pain_000_{s}.nii.gz") for s in ("left", "right"))
    assert left.geometry.shape_kji != right.geometry.shape_kji
    truth = json.loads((out / "truth.json").read_text())
    assert truth[0]["painful_side"] == "right"
