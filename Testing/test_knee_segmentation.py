"""KneeT2Segment automatic segmentation, numeric core: slice layout from the direction matrix,
the paper's pre-processing, exact pad/crop, thresholds, the model file and its errors.

No ../shared data needed. Tests that run the bundled network use a small analytic-knee phantom.
"""

import itertools
import math
import shutil

import numpy as np
import pytest
import torch

from mskquant.errors import InputError, ModelError
from mskquant.image import Geometry, Image, sagittal_obliquity_warnings

from KneeT2SegmentLib import anatomy as an
from KneeT2SegmentLib import simulator as sm
from KneeT2SegmentLib.checkpoint import (DEFAULT_MODEL_ID, Thresholds, default_input_spec, make_checkpoint,
                                         read_checkpoint)
from KneeT2SegmentLib.mese import MeseSeries
from KneeT2SegmentLib.segmentation import (apply_thresholds, load_model, network_input, normalisation_of, normalise,
                                           pad_or_crop, restore, sagittal_layout, segment, window_for)

from conftest import ROOT

BUNDLED = ROOT / "Resources" / "Models" / f"{DEFAULT_MODEL_ID}.pt"
needs_bundled = pytest.mark.skipif(not BUNDLED.is_file(), reason=f"bundled model {BUNDLED} not present")


def rotation(axis, deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    m = np.eye(3)
    i, j = [a for a in range(3) if a != axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def oai_geometry(shape_ijk=(40, 30, 7), directions=None):
    """i -> posterior, j -> inferior, k -> patient left: the network's own layout."""
    d = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]]).T if directions is None else directions
    return Geometry.from_spacing(shape_ijk, (0.3125, 0.446, 3.5), (10.0, 20.0, 30.0), d)


def reordered(image: Image, perm, flips) -> Image:
    """The same voxels stored in another axis order/direction (the geometry follows, the anatomy does not move)."""
    g = image.geometry
    arr = image.array
    m = g.ijk_to_ras.copy()
    shape = np.array(g.shape_ijk)
    # array axes are k, j, i (0, 1, 2); ijk index = 2 - array axis
    for ax, f in enumerate(flips):
        if f:
            arr = np.flip(arr, axis=ax)
            ijk = 2 - ax
            m[:3, 3] += m[:3, ijk] * (shape[ijk] - 1)
            m[:3, ijk] *= -1
    arr = np.ascontiguousarray(np.transpose(arr, perm))
    new = np.eye(4)
    new[:3, 3] = m[:3, 3]
    for new_ax, old_ax in enumerate(perm):
        new[:3, 2 - new_ax] = m[:3, 2 - old_ax]
    return Image(arr, Geometry(tuple(arr.shape[::-1]), new))


# --- layout -----------------------------------------------------------------------------------------
def test_layout_of_the_simulated_grid_is_the_identity():
    lay = sagittal_layout(oai_geometry())
    assert lay.axes == (0, 1, 2) and lay.flips == (False, False, False)
    assert lay.pixel_mm == pytest.approx((0.446, 0.3125)) and lay.slice_mm == pytest.approx(3.5)


@pytest.mark.parametrize("perm,flips", [((0, 2, 1), (False, False, False)), ((1, 0, 2), (True, False, True)),
                                        ((2, 1, 0), (False, True, True)), ((1, 2, 0), (True, True, False))])
def test_any_voxel_order_gives_the_same_network_slices(perm, flips):
    rng = np.random.default_rng(0)
    img = Image(rng.random((7, 30, 40)).astype(np.float32), oai_geometry())
    other = reordered(img, perm, flips)
    a = sagittal_layout(img.geometry).to_canonical(img.array)
    lay = sagittal_layout(other.geometry)
    b = lay.to_canonical(other.array)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lay.from_canonical(b), other.array)  # and back, exactly


def test_oblique_sagittal_is_accepted_and_axial_or_coronal_refused():
    base = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]]).T
    assert sagittal_layout(oai_geometry(directions=rotation(2, 20) @ base)).obliquity_deg == pytest.approx(20, abs=1e-6)
    with pytest.raises(InputError, match="not sagittal .* axial"):
        sagittal_layout(oai_geometry(directions=np.eye(3)[:, [1, 0, 2]] @ np.diag([1, -1, 1])))
    coronal = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]).T
    with pytest.raises(InputError, match="not sagittal .* coronal"):
        sagittal_layout(oai_geometry(directions=coronal))
    with pytest.raises(InputError, match="not sagittal"):
        sagittal_layout(oai_geometry(directions=rotation(2, 45) @ base))
    # 25-40 deg: accepted (correct series lie within 20 deg), with a warning for the results
    assert sagittal_layout(oai_geometry(directions=rotation(2, 35) @ base)).obliquity_deg == pytest.approx(35, abs=1e-6)
    assert sagittal_obliquity_warnings(35.0) and not sagittal_obliquity_warnings(20.0)


# --- pre-processing ------------------------------------------------------------------------------------
def test_quartiles_map_to_minus_one_and_plus_one_then_clip():
    rng = np.random.default_rng(1)
    v = rng.gamma(2.0, 100.0, (9, 40, 50)).astype(np.float32)  # skewed: the median cannot also land on 0
    norm = normalisation_of(v)
    p3, p25, p50, p75, p97 = np.percentile(v, [3, 25, 50, 75, 97])
    assert p25 * norm.scale + norm.offset == pytest.approx(-1.0, abs=1e-9)
    assert p75 * norm.scale + norm.offset == pytest.approx(1.0, abs=1e-9)
    assert abs(norm.median_mapped) > 0.05
    out = normalise(v)
    assert out.min() == pytest.approx(p3 * norm.scale + norm.offset, abs=1e-5)
    assert out.max() == pytest.approx(p97 * norm.scale + norm.offset, abs=1e-5)
    assert np.mean(out <= out.min()) == pytest.approx(0.03, abs=0.002)
    sym = rng.normal(50.0, 10.0, 200_001)
    assert normalisation_of(sym).median_mapped == pytest.approx(0.0, abs=0.01)  # symmetric: median at 0
    with pytest.raises(InputError, match="no contrast"):
        normalisation_of(np.zeros((5, 10, 10)))


@pytest.mark.parametrize("shape", [(269, 384), (384, 384), (450, 300), (17, 511)])
def test_pad_crop_and_back_is_exact(shape):
    rng = np.random.default_rng(2)
    x = rng.random((3,) + shape).astype(np.float32)
    padded, w = pad_or_crop(x, (384, 384), fill=-7.0)
    assert padded.shape == (3, 384, 384)
    back = restore(padded, w, fill=0.0)
    kept = np.zeros(shape, bool)
    (sr, sc) = w.src
    kept[sr[0]:sr[1], sc[0]:sc[1]] = True
    np.testing.assert_array_equal(back[:, kept], x[:, kept])  # every voxel the network saw comes back in place
    assert (back[:, ~kept] == 0).all()  # cropped-away margins: probability 0
    assert (padded == -7.0).sum() == 3 * (384 * 384 - kept.sum())
    assert window_for(shape, (384, 384)).shape == shape


# --- post-processing ----------------------------------------------------------------------------------------
def test_thresholds_binarise_refine_and_empty_small_slices():
    g = oai_geometry((40, 30, 7))
    lay = sagittal_layout(g)
    prob = np.zeros(g.shape_kji, np.float32)
    prob[1, 5:15, 5:25] = 0.9  # 200 voxels
    prob[3, 5:8, 5:10] = 0.9  # 15 voxels: below the slice minimum
    prob[4, 0:10, 0:10] = 0.4  # below the probability threshold
    valid = np.ones(g.shape_kji, bool)
    valid[1, 5:7, 5:25] = False  # T2 outside [0, 100] ms: 40 voxels dropped
    th = Thresholds(0.5, 20 * lay.pixel_area_mm2 - 1e-6)  # slice minimum: 20 voxels on this grid
    assert th.min_slice_voxels(lay.pixel_area_mm2) == 20
    mask, dropped, counts = apply_thresholds(prob, valid, lay, th)
    assert dropped == [3]
    assert mask.sum() == 160 and mask[1].sum() == 160 and not mask[3].any() and not mask[4].any()
    assert counts == {"above_threshold": 215, "t2_valid_above_threshold": 175, "final": 160, "min_slice_voxels": 20}


def test_threshold_area_transfers_between_pixel_sizes():
    th = Thresholds(0.501, 41.5)  # the paper's 425 voxels of 0.3125 mm pixels
    assert th.min_slice_voxels(0.3125 ** 2) == 425
    assert th.min_slice_voxels(0.3125 * 0.446) == 298


# --- the model file ----------------------------------------------------------------------------------------
def tiny_checkpoint(path, features=(2, 4), postprocessing=None, **extra):
    from mskquant.unet import UNet2D

    torch.manual_seed(0)
    net = UNet2D(1, 1, features, up_mode="transpose")
    arch = {"name": "unet2d", "params": {"in_channels": 1, "out_channels": 1, "features": list(features),
                                        "kernel_size": 3, "batch_norm": True, "up_mode": "transpose",
                                        "final_activation": "sigmoid"}}
    ckpt = make_checkpoint(arch, net.state_dict(), default_input_spec(2, (64, 64)), postprocessing, {"data": "test"},
                           **extra)
    torch.save(ckpt, str(path))
    return ckpt


def test_model_file_errors_each_name_the_problem_and_the_fix(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not a real torch file" * 10)
    with pytest.raises(ModelError, match="cannot be read .* corrupt"):
        load_model(str(tmp_path / "corrupt.pt"))
    from mskquant.unet import UNet2D

    torch.save(UNet2D(1, 1, (2, 4)).state_dict(), str(tmp_path / "bare.pt"))
    with pytest.raises(ModelError, match="bare state dict, not a 'mskquant.knee-cartilage-unet' checkpoint"):
        load_model(str(tmp_path / "bare.pt"))
    ckpt = tiny_checkpoint(tmp_path / "shape.pt", postprocessing={"probability_threshold": 0.5,
                                                                  "min_slice_area_mm2": 10.0})
    ckpt["architecture"]["params"]["features"] = [2, 8]  # weights of another network
    torch.save(ckpt, str(tmp_path / "shape.pt"))
    with pytest.raises(ModelError, match="do not fit its architecture .* of another shape"):
        load_model(str(tmp_path / "shape.pt"))
    tiny_checkpoint(tmp_path / "uncalibrated.pt")
    with pytest.raises(ModelError, match="no calibrated post-processing thresholds: run 'mskquant knee-calibrate"):
        load_model(str(tmp_path / "uncalibrated.pt"))
    assert load_model(str(tmp_path / "uncalibrated.pt"), require_thresholds=False).thresholds.probability == 0.5
    tiny_checkpoint(tmp_path / "ok.pt", postprocessing={"probability_threshold": 0.4, "min_slice_area_mm2": 12.5})
    m = load_model(str(tmp_path / "ok.pt"))
    assert (m.thresholds.probability, m.thresholds.min_slice_area_mm2, m.network_size) == (0.4, 12.5, (64, 64))
    assert read_checkpoint(tmp_path / "ok.pt").training == {"data": "test"}


def small_phantom(**kw):
    anat = an.prepare_anatomy(an.analytic_knee(), None, "analytic", "analytic knee")
    params = sm.PhantomParameters(snr=40.0, matrix=(224, 144), fov_mm=(70.0, 45.0), **kw)
    return sm.simulate(anat, params)


def test_too_few_slices_or_echoes_are_refused():
    ph = small_phantom(n_slices=6)
    s = ph.series
    g = s.geometry
    four = Geometry((g.shape_ijk[0], g.shape_ijk[1], 4), g.ijk_to_ras)
    thin = MeseSeries(Image(s.echoes.array[:, :4], four), s.echo_times_ms, "right")
    with pytest.raises(InputError, match="4 sagittal slice\\(s\\): automatic segmentation needs at least 5"):
        network_input(thin, 2, (256, 256))
    two = MeseSeries(Image(s.echoes.array[:2], g), s.echo_times_ms[:2], "right")
    with pytest.raises(InputError, match="2 echo\\(es\\)"):
        network_input(two, 2, (256, 256))
    x, w, lay = network_input(s, 2, (256, 256))
    assert x.shape == (6, 1, 256, 256) and w.shape == (144, 224)


@needs_bundled
def test_bundled_model_gives_the_same_mask_for_any_voxel_order():
    ph = small_phantom()
    model = load_model(DEFAULT_MODEL_ID)
    ref = segment(ph.series, model).mask
    s = ph.series
    perm, flips = (0, 2, 1), (True, False, True)
    moved = [reordered(Image(a, s.geometry), perm, flips) for a in s.echoes.array]
    other = MeseSeries(Image(np.stack([m.array for m in moved]), moved[0].geometry), s.echo_times_ms, "right")
    mask = segment(other, model).mask
    back = np.flip(np.transpose(mask, np.argsort(perm)), axis=(0, 2))
    np.testing.assert_array_equal(back, ref)
    assert ref.sum() > 0


@needs_bundled
def test_bfloat16_runs_the_network_in_bfloat16_and_keeps_the_mask():
    """``precision="bfloat16"`` reaches the network in the worker threads (autocast is per thread:
    the probabilities change) and changes only voxels near the threshold; float32 is the default
    and is recorded; an unknown precision is refused."""
    from mskquant.device import bf16_supported
    from mskquant.errors import MSKQuantError

    ph = small_phantom()
    model = load_model(DEFAULT_MODEL_ID, "cpu")
    ref = segment(ph.series, model)
    assert ref.precision == "float32" and ref.summary()["precision"] == "float32"
    with pytest.raises(MSKQuantError, match="Unknown precision 'half'"):
        segment(ph.series, model, precision="half")
    auto = segment(ph.series, model, precision="auto")
    assert auto.precision == ("bfloat16" if bf16_supported(torch.device("cpu")) else "float32")
    half = segment(ph.series, model, precision="bfloat16")
    assert half.precision == "bfloat16"
    assert np.abs(half.probability - ref.probability).max() > 1e-3  # bfloat16 arithmetic did happen
    assert np.abs(half.probability - ref.probability).max() < 0.5
    both = np.logical_and(half.mask, ref.mask).sum()
    dice = 2 * both / (half.mask.sum() + ref.mask.sum())
    assert dice >= 0.99, dice


# --- registering weights trained elsewhere ---------------------------------------------------------------------
def test_models_add_reads_the_thresholds_from_the_file(tmp_path, model_dir, cli):
    from mskquant.models import ModelRegistry

    tiny_checkpoint(tmp_path / "real_oai.pt", postprocessing={"probability_threshold": 0.47,
                                                              "min_slice_area_mm2": 55.0, "calibrated": True})
    rc, out, err = cli("models", "add", tmp_path / "real_oai.pt", "--id", "knee-oai-real", "--like", DEFAULT_MODEL_ID)
    assert rc == 0, err
    spec = ModelRegistry().get("knee-oai-real")
    assert spec.user and spec.module == "KneeT2Segment" and spec.task == "femoral-cartilage-segmentation"
    assert spec.get("postprocessing")["probability_threshold"] == 0.47
    assert spec.architecture["params"]["features"] == [2, 4]  # the file's own architecture, not the bundled one
    m = load_model("knee-oai-real")
    assert (m.thresholds.probability, m.thresholds.min_slice_area_mm2) == (0.47, 55.0)
    tiny_checkpoint(tmp_path / "raw.pt")
    rc, _, err = cli("models", "add", tmp_path / "raw.pt", "--id", "knee-raw", "--like", DEFAULT_MODEL_ID)
    assert rc == 2 and "no calibrated post-processing thresholds" in err and "knee-calibrate" in err
    from mskquant.unet import UNet2D

    torch.save(UNet2D(1, 1, (2, 4)).state_dict(), str(tmp_path / "bare.pt"))
    rc, _, err = cli("models", "add", tmp_path / "bare.pt", "--id", "knee-bare", "--like", DEFAULT_MODEL_ID)
    assert rc == 2 and "bare state dict" in err
    assert "knee-raw" not in ModelRegistry().ids() and "knee-bare" not in ModelRegistry().ids()


def test_a_user_entry_without_thresholds_is_refused_at_use(tmp_path, model_dir):
    """Entries edited by hand (or added through the Python API) without thresholds get one clear error."""
    from mskquant.models import ModelStore

    tiny_checkpoint(tmp_path / "raw.pt")
    ModelStore().add(tmp_path / "raw.pt", "knee-handmade", like=DEFAULT_MODEL_ID)
    with pytest.raises(ModelError, match="no calibrated post-processing thresholds"):
        load_model("knee-handmade")


@needs_bundled
def test_bundled_model_registered_again_as_a_user_model_segments_the_same(tmp_path, model_dir, cli):
    shutil.copy(BUNDLED, tmp_path / "copy.pt")
    rc, _, err = cli("models", "add", tmp_path / "copy.pt", "--id", "knee-copy", "--like", DEFAULT_MODEL_ID)
    assert rc == 0, err
    ph = small_phantom()
    a = segment(ph.series, load_model(DEFAULT_MODEL_ID)).mask
    b = segment(ph.series, load_model("knee-copy")).mask
    np.testing.assert_array_equal(a, b)
