"""Through-plane super-resolution (KneeT2SegmentLib.superres): thick slices and their geometry,
TCI, the residual CNN's slab-wise inference, the super-resolve command's refusals, a few
training steps, and the bundled model against TCI on held-out anatomy."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from mskquant.errors import InputError
from mskquant.image import Geometry, Image, rotation_matrix_deg
from mskquant.imageio import read_image, write_image
from mskquant.metrics import psnr, ssim
from KneeT2SegmentLib.superres import degrade as dg
from KneeT2SegmentLib.superres import training as tr
from KneeT2SegmentLib.superres.infer import _run_slabs, check_input, super_resolve
from KneeT2SegmentLib.superres.model import default_input_spec, make_checkpoint, read_model_file
from KneeT2SegmentLib.superres.network import ResidualSRNet

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MSKQUANT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _fine_image(shape_kji=(40, 36, 45), spacing=(0.7, 0.36, 0.36), seed=0):
    """A piecewise-constant volume, sagittal-like: i (array axis 2) is the 0.7 mm slice axis, oblique."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.normal(size=shape_kji), 3.0)
    arr = np.digitize(x, np.quantile(x, [0.3, 0.6, 0.85])).astype(np.float32) * 0.3 + 0.1
    g = Geometry.from_spacing(shape_kji[::-1], spacing, (-22.7, 80.7, -80.3), rotation_matrix_deg((5, -8, 12)))
    return Image(arr, g)


def _model_file(tmp_path, depth=3, width=4, seed=0) -> Path:
    torch.manual_seed(seed)
    net = ResidualSRNet(depth, width, True)
    for p in net.parameters():  # a non-trivial residual, so slab seams would show
        torch.nn.init.normal_(p, std=0.1)
    path = tmp_path / "tiny.pt"
    torch.save(make_checkpoint(net, default_input_spec(3), {"data": "test"}), path)
    return path


def test_thick_slices_and_geometry_round_trip():
    fine = _fine_image()
    thick = dg.thick_slices(fine, 3)
    f = fine.array
    # rect profile: each thick slice is the mean of the three fine slices it covers (array axis 2)
    np.testing.assert_allclose(thick.array[..., 4], f[..., 12:15].mean(-1), rtol=1e-6)
    assert thick.array.shape == (40, 36, 15)
    g, gt = fine.geometry, thick.geometry
    np.testing.assert_allclose(gt.spacing, [2.1, 0.36, 0.36], rtol=1e-12)
    np.testing.assert_allclose(gt.directions, g.directions, atol=1e-12)
    # thick slice 0 is centred on fine slice 1 (the middle of the three it covers)
    np.testing.assert_allclose(gt.origin, g.ijk_to_ras[:3, :3] @ [1, 0, 0] + g.origin, atol=1e-12)
    back = dg.fine_geometry(gt, 3)
    assert back.shape_ijk == g.shape_ijk
    np.testing.assert_allclose(back.ijk_to_ras, g.ijk_to_ras, atol=1e-12)
    # thick slabs and fine slices share their outer edges
    np.testing.assert_allclose(back.corners_ras(), gt.corners_ras(), atol=1e-9)


def test_tci_reproduces_linear_ramp_and_shares_grid():
    fine = _fine_image()
    ramp = np.broadcast_to(np.arange(45, dtype=np.float32) * 0.2, (40, 36, 45)).copy()
    truth, thick, tci = dg.simulate_thick_acquisition(fine.with_array(ramp), 3)
    assert tci.geometry.same_grid(fine.geometry, 1e-9) and truth.geometry.same_grid(tci.geometry, 1e-12)
    # a 47-slice volume: the 2 trailing slices no thick slice covers are dropped, labels cut alike
    odd = Image(np.zeros((40, 36, 47), np.uint8), Geometry.from_spacing((47, 36, 40), (0.7, 0.36, 0.36)))
    t_odd, _, tci_odd = dg.simulate_thick_acquisition(odd, 3)
    cut = dg.cut_to_thick_coverage(odd, 3)
    assert cut.array.dtype == np.uint8 and cut.geometry.same_grid(tci_odd.geometry, 1e-12)
    assert t_odd.array.shape == cut.array.shape == (40, 36, 45)
    # cubic convolution is exact on a linear ramp where no tap is clamped (thick centres 1 .. M-2)
    np.testing.assert_allclose(tci.array[..., 4:41], ramp[..., 4:41], atol=1e-4)
    np.testing.assert_allclose(tci.array[..., 1], ramp[..., 1], atol=1e-5)  # at a thick-slice centre
    assert np.allclose(dg.cubic_weights(7, 3).sum(1), 1.0)
    # TCI of a real edge volume differs from the truth (something to restore)
    _, _, tci2 = dg.simulate_thick_acquisition(fine, 3)
    assert psnr(fine.array, tci2.array) < 40


def test_slab_inference_equals_whole_volume():
    net = ResidualSRNet(4, 6, True).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = np.random.default_rng(1).random((18, 50, 23)).astype(np.float32)
    from mskquant.progress import Progress

    slabs = _run_slabs(net, x, torch.device("cpu"), 7, Progress())
    with torch.inference_mode():
        whole = net(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(slabs, whole, atol=2e-5)
    # bfloat16 arithmetic (the default where the CPU has it): the residual rounds, the image does not drift
    from mskquant.device import bf16_supported

    if bf16_supported(torch.device("cpu")):
        low = _run_slabs(net, x, torch.device("cpu"), 7, Progress(), bf16=True)
        residual = np.abs(whole - x).max()
        assert residual > 0.05 and np.abs(low - whole).max() < 0.03 * residual


def _run_cli(args):
    from mskquant.cli import main

    return main(args)


def test_super_resolve_command_output_geometry_exact(tmp_path, capsys):
    fine = _fine_image()
    thick = dg.thick_slices(fine, 3)
    write_image(thick, tmp_path / "thick.nii.gz")
    model = _model_file(tmp_path)
    out = tmp_path / "sr.nii.gz"
    assert _run_cli(["super-resolve", "--image", str(tmp_path / "thick.nii.gz"), "--model", str(model), "--out",
                     str(out), "--tci", str(tmp_path / "tci.nii.gz"), "-q", "--slab", "11"]) == 0
    sr = read_image(out)
    want = dg.fine_geometry(read_image(tmp_path / "thick.nii.gz").geometry, 3)
    assert sr.geometry.shape_ijk == want.shape_ijk == fine.geometry.shape_ijk
    np.testing.assert_allclose(sr.geometry.spacing, want.spacing, rtol=1e-6)
    np.testing.assert_allclose(sr.geometry.origin, want.origin, atol=1e-4)
    np.testing.assert_allclose(sr.geometry.directions, want.directions, atol=1e-6)
    np.testing.assert_allclose(sr.geometry.ijk_to_ras, fine.geometry.ijk_to_ras, atol=1e-4)
    # the output is TCI + the network's residual, computed the same way in memory
    m = read_model_file(model)
    direct = super_resolve(read_image(tmp_path / "thick.nii.gz"), m, device="cpu")
    np.testing.assert_allclose(sr.array, direct.image.array, atol=1e-5)
    assert np.abs(sr.array - read_image(tmp_path / "tci.nii.gz").array).max() > 1e-3
    # folder output (what mskquant batch uses)
    folder = tmp_path / "case"
    assert _run_cli(["super-resolve", "--image", str(tmp_path / "thick.nii.gz"), "--model", str(model), "--out",
                     str(folder), "-q"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["sr.nii.gz", "superres.csv", "superres.json", "tci.nii.gz"]
    assert "thick_spacing_mm" in (folder / "superres.csv").read_text()


def test_fine_sliced_input_and_bad_factor_are_refused(tmp_path, capsys):
    fine = _fine_image()
    write_image(fine, tmp_path / "fine.nii.gz")
    write_image(dg.thick_slices(fine, 3), tmp_path / "thick.nii.gz")
    model = _model_file(tmp_path)
    out = tmp_path / "sr.nii.gz"
    rc = _run_cli(["super-resolve", "--image", str(tmp_path / "fine.nii.gz"), "--model", str(model), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "already fine-sliced" in err and not out.exists()
    for factor, said in (("2", "trained for 3x"), ("2.5", "whole number"), ("0", "whole number")):
        rc = _run_cli(["super-resolve", "--image", str(tmp_path / "thick.nii.gz"), "--model", str(model), "--factor",
                       factor, "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and said in err and not out.exists(), (factor, err)
    # too thick for the model (3.5 mm slices)
    with pytest.raises(InputError, match="trained on"):
        check_input(dg.thick_slices(fine, 5), default_input_spec(3))


def _waves(seed):
    """Slice-axis sinusoids (periods 7-10 fine slices): thick slices attenuate them, a filter restores them."""
    r = np.random.default_rng(seed)
    z = np.arange(48)
    arr = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * z / r.uniform(7, 10) + r.uniform(0, 6.3)) for _ in range(24 * 24)])
    return _fine_image((24, 24, 48)).with_array(arr.reshape(24, 24, 48).astype(np.float32))


def test_tiny_training_run_lowers_the_loss(tmp_path):
    rng = np.random.default_rng(0)
    for name, seeds in (("train", [0, 1, 2]), ("val", [3])):
        xs, ys = zip(*[tr.sample_patches(*tr.training_pair(_waves(s), 3), 8, (12, 16, 16), rng, edge_fraction=0.0)
                       for s in seeds])
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "x.npy", np.concatenate(xs))
        np.save(tmp_path / name / "y.npy", np.concatenate(ys))
    cfg = tr.SRTrainingConfig(depth=3, width=8, lr=3e-3, steps=40, validate_every=20, batch_size=4)
    torch.set_num_threads(1)
    s = tr.train(tmp_path / "train", tmp_path / "val", tmp_path / "run", cfg, log=lambda m: None)
    # the network starts as the identity (SR = TCI); 40 steps cut the held-out error by > 20 %
    assert s["steps"] == 40 and s["best_validation_loss"] < 0.8 * s["validation_loss_tci"], s
    # resumable: a longer run continues from last.pt
    s2 = tr.train(tmp_path / "train", tmp_path / "val", tmp_path / "run", tr.SRTrainingConfig(
        depth=3, width=8, lr=3e-3, steps=60, validate_every=20, batch_size=4), resume=True, log=lambda m: None)
    assert s2["steps"] == 60 and (tmp_path / "run" / "best.pt").is_file()
    assert read_model_file(tmp_path / "run" / "best.pt").factor == 3


@pytest.mark.skipif(not (SHARED / "knee_labelmaps" / "9002817.nii.gz").is_file(),
                    reason="needs the knee label maps in ../shared/data/knee_labelmaps")
def test_bundled_model_beats_tci_on_held_out_crop():
    from KneeT2SegmentLib import dess
    from KneeT2SegmentLib.superres.model import load_model

    anat = dess.load_dess_anatomy(SHARED / "knee_labelmaps" / "9002817.nii.gz")  # a test subject
    vol = dess.native_grid_dess(anat, np.random.default_rng(7), randomise=False)
    k, j, i = np.argwhere(vol.labels.array == 2).mean(0).astype(int)  # femoral cartilage
    sl = (slice(k - 48, k + 48), slice(j - 48, j + 48), slice(max(0, i - 36), max(0, i - 36) + 72))
    arr = vol.image.array[sl]
    g = vol.image.geometry
    ijk0 = np.array([sl[2].start, sl[1].start, sl[0].start, 1.0])
    m = g.ijk_to_ras.copy()
    m[:3, 3] = (g.ijk_to_ras @ ijk0)[:3]
    crop = Image(np.ascontiguousarray(arr), Geometry(arr.shape[::-1], m))
    truth, thick, tci = dg.simulate_thick_acquisition(crop, 3)
    sr = super_resolve(thick, load_model(), device="cpu")
    assert sr.image.geometry.same_grid(truth.geometry, 1e-6)
    gain_db = psnr(truth.array, sr.image.array) - psnr(truth.array, tci.array)
    gain_ssim = ssim(truth.array, sr.image.array) - ssim(truth.array, tci.array)
    print(f"held-out crop: pSNR SR - TCI {gain_db:+.2f} dB, SSIM {100 * gain_ssim:+.2f} points")
    assert gain_db > 0.5 and gain_ssim > 0.003, (gain_db, gain_ssim)


def test_batch_super_resolve_equals_the_single_case_command(tmp_path, capsys):
    write_image(dg.thick_slices(_fine_image(seed=1), 3), tmp_path / "a.nii.gz")
    write_image(_fine_image(seed=2), tmp_path / "fine.nii.gz")
    _model_file(tmp_path)
    (tmp_path / "cohort.csv").write_text("case,image,model\nc1,a.nii.gz,tiny.pt\nc2,fine.nii.gz,tiny.pt\n")
    rc = _run_cli(["batch", "super-resolve", "--manifest", str(tmp_path / "cohort.csv"), "--out",
                   str(tmp_path / "batch"), "--workers", "1", "-q"])
    assert rc == 1  # c2 (already fine-sliced) fails with the command's own message, c1 is done
    status = (tmp_path / "batch" / "status.csv").read_text()
    assert "c1,ok" in status and "already fine-sliced" in status
    assert _run_cli(["super-resolve", "--image", str(tmp_path / "a.nii.gz"), "--model", str(tmp_path / "tiny.pt"),
                     "--out", str(tmp_path / "single.nii.gz"), "-q"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "batch" / "cases" / "c1" / "sr.nii.gz").array,
                                  read_image(tmp_path / "single.nii.gz").array)
    assert "thick_spacing_mm" in (tmp_path / "batch" / "cohort.csv").read_text()
