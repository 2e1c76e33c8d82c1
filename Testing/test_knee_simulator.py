"""KneeT2Segment MESE simulator on the analytic knee (no ../shared needed): truth, SNR, options,
randomised training variants."""

from dataclasses import replace

import numpy as np
import pytest

from mskquant.errors import InputError

from KneeT2SegmentLib import anatomy as an
from KneeT2SegmentLib import simulator as sm
from KneeT2SegmentLib.subregions import femoral_subregions, sagittal_frame


@pytest.fixture(scope="module")
def anat():
    return an.prepare_anatomy(an.analytic_knee(), None, "analytic", "analytic knee")


@pytest.fixture(scope="module")
def phantom(anat):
    return sm.simulate(anat, sm.PhantomParameters(snr=40.0, matrix=(224, 144), fov_mm=(70.0, 64.2)))


def test_anatomy_of_the_analytic_knee(anat):
    assert anat.laterality == "right" and "tibial cartilage" in anat.laterality_source
    counts = np.bincount(anat.tissue.ravel(), minlength=an.N_TISSUES)
    for code in (an.FEMUR_MARROW, an.FEMUR_CORTEX, an.FC, an.TC, an.PC, an.MUSCLE, an.FAT, an.JOINT):
        assert counts[code] > 0, an.TISSUE_NAMES[code]
    fem = anat.cartilage_tissue == an.FC
    assert np.isfinite(anat.phi_deg[fem]).all() and np.isnan(anat.phi_deg[~fem]).all()
    assert set(np.unique(anat.subregion[fem])) == set(range(1, 13))
    assert 0 < anat.depth.min() and anat.depth.max() < 1


def test_truth_geometry_and_snr(phantom):
    ph = phantom
    g = ph.series.geometry
    assert sagittal_frame(g, "right").slice_axis == 0 and ph.series.echoes.array.shape == (7, 21, 144, 224)
    mask = ph.cartilage_mask.array
    assert ph.truth["femoral_cartilage_voxels"] == int(mask.sum()) > 1000
    assert ph.sigma == pytest.approx(1000.0 / 40.0)
    # SNR reference: the mean noise-free first echo of the cartilage is 1000 (Rician mean ~ sqrt(S^2 + sigma^2))
    assert float(ph.series.echoes.array[0][mask].mean()) == pytest.approx(1000.0, rel=0.01)
    pure = ph.femoral_fraction >= 1.0
    spread = np.abs(ph.t2_noise_free.array[pure] - ph.t2_true.array[pure])  # T2 varies inside a voxel
    assert spread.mean() < 0.01 and spread.max() < 0.2
    assert np.isfinite(ph.t2_true.array[mask]).all() and np.isnan(ph.t2_true.array[ph.labels.array == 0]).all()
    assert set(np.unique(ph.labels.array)) == set(range(7))
    # cartilage T2 rises from the bone to the surface
    sub = femoral_subregions(mask, g, "right")
    t2 = ph.t2_true.array[mask]
    deep = sub.labels[mask] <= 6
    assert t2[deep].mean() + 5.0 < t2[~deep].mean()


def test_first_echo_bias_lesion_and_change_options(anat, phantom):
    params = replace(phantom.params, first_echo_factor=0.85, seed=1, delta_t2_ms={8: 3.0},
                     lesions=[sm.default_lesion(anat)])
    ph = sm.simulate(anat, params, follow_up=True)
    mask = ph.cartilage_mask.array
    ratio = ph.series.echoes.array[0][mask].mean() / phantom.series.echoes.array[0][mask].mean()
    assert ratio == pytest.approx(0.85, abs=0.01)
    np.testing.assert_allclose(ph.series.echoes.array[1][mask].mean(), phantom.series.echoes.array[1][mask].mean(),
                               rtol=0.02)
    lesion = ph.lesion_fraction > 0
    assert lesion.any() and np.all(ph.femoral_fraction[lesion] > 0)  # only femoral cartilage carries it
    full = (ph.lesion_fraction >= 1.0) & mask
    np.testing.assert_allclose(ph.lesion_t2_increment[full], 15.0, atol=1e-4)
    assert len(ph.truth["lesions"]) == 1 and ph.truth["delta_t2_ms"] == {"Superficial medial central": 3.0}
    rise = ph.t2_true.array[full] - phantom.t2_true.array[full]
    assert np.median(rise) == pytest.approx(15.0, abs=3.5)  # lesion (+3 where it overlaps the changed subregion)


def test_randomised_variants_for_training(anat):
    rng = np.random.default_rng(7)
    base = sm.PhantomParameters(matrix=(192, 144), fov_mm=(60.0, 64.0))
    seen = set()
    for _ in range(3):
        p = base.randomized(rng)
        p = replace(p, matrix=(min(p.matrix[0], 224), min(p.matrix[1], 176)), n_slices=min(p.n_slices, 22))
        ph = sm.simulate(anat, p)
        g = ph.series.geometry
        frame = sagittal_frame(g, ph.series.laterality)
        assert frame.obliquity_deg < 20
        assert np.allclose(g.spacing[2], p.slice_thickness_mm + p.slice_gap_mm)
        assert ph.cartilage_mask.array.sum() > 200
        seen.add((p.slice_direction, p.swap_inplane))
        femoral_subregions(ph.cartilage_mask.array, g, ph.series.laterality)
    assert len(seen) >= 2  # orientation does vary


def test_bad_phantom_parameters(anat):
    with pytest.raises(InputError, match="SNR"):
        sm.simulate(anat, sm.PhantomParameters(snr=0))
    with pytest.raises(InputError, match="increasing"):
        sm.simulate(anat, sm.PhantomParameters(echo_times_ms=(10, 30, 20, 40)))
    with pytest.raises(InputError, match="no femoral cartilage"):
        sm.simulate(anat, sm.PhantomParameters(centre_offset_mm=(0.0, 0.0, 400.0)))
