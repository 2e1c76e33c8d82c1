"""Shared numeric core: progress/cancel, atomic outputs, image IO errors, U-Net + fast
inference, metrics, pictures, dependency checks, and the CLI's error contract."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from mskquant import imageio, metrics, render
from mskquant.atomic import OutputFolder, atomic_path
from mskquant.errors import InputError, ModelError, OutputError
from mskquant.image import Geometry, Image, resample_nearest
from mskquant.progress import CancelToken, Cancelled, Progress


# --- progress / cancel ------------------------------------------------------------------------
def test_progress_subranges_and_cancel():
    calls = []
    p = Progress(lambda f, m: calls.append((round(f, 3), m)))
    p.sub(0.5, 1.0).sub(0.0, 0.5)(0.5, "inner")
    assert calls == [(0.625, "inner")]
    items = list(p.sub(0.0, 0.5).iterate([1, 2], "step"))
    assert items == [1, 2] and calls[-1] == (0.5, "step")
    token = CancelToken()
    q = Progress(None, token)
    q(0.1)
    token.cancel()
    with pytest.raises(Cancelled):
        q.sub(0.2, 0.3)(0.5, "x")


# --- atomic outputs -----------------------------------------------------------------------------
def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_output_folder_refuses_existing_results_and_cleans_up(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out, ["a.csv", "b.json"]) as f:
        f.path("a.csv").write_text("1")
        f.path("b.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "b.json"]
    with pytest.raises(OutputError, match="--overwrite"):
        OutputFolder(out, ["a.csv", "b.json"])
    with pytest.raises(RuntimeError):
        with OutputFolder(out, ["a.csv", "b.json"], overwrite=True) as f:
            f.path("a.csv").write_text("2")
            raise RuntimeError("cancelled half way")
    assert (out / "a.csv").read_text() == "1" and sorted(p.name for p in out.iterdir()) == ["a.csv", "b.json"]
    new = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with OutputFolder(new, ["a.csv"]) as f:
            f.path("a.csv").write_text("x")
            raise RuntimeError
    assert not new.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; permission check needs a normal user")
def test_output_folder_unwritable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(OutputError, match="not writable"):
        OutputFolder(ro / "sub", ["x"])


def test_output_folder_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        OutputFolder(f, ["x"])


# --- image IO -------------------------------------------------------------------------------------
def test_read_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        imageio.read_image(tmp_path / "missing.nii.gz", "STIR")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot be read"):
        imageio.read_image(bad, "STIR")
    import SimpleITK as sitk
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkFloat32), str(tmp_path / "two_d.nii.gz"))
    with pytest.raises(InputError, match="2D"):
        imageio.read_image(tmp_path / "two_d.nii.gz", "STIR")


def test_resample_nearest_between_grids():
    src = Geometry.from_spacing((4, 4, 2), (2.0, 2.0, 2.0), (0, 0, 0))
    dst = Geometry.from_spacing((8, 8, 4), (1.0, 1.0, 1.0), (-0.5, -0.5, -0.5))
    a = np.arange(32).reshape(src.shape_kji)
    b = resample_nearest(a, src, dst, fill=-1)
    assert b[0, 0, 0] == a[0, 0, 0] and b[-1, -1, -1] == a[-1, -1, -1]
    assert set(np.unique(b)) <= set(np.unique(a))
    far = Geometry.from_spacing((4, 4, 2), (1, 1, 1), (1000, 0, 0))
    assert not src.overlaps(far) and src.overlaps(dst)


# --- U-Net and inference -----------------------------------------------------------------------
def test_bn_folding_and_channels_last_are_exact():
    from mskquant.inference import predict_ensemble, prepare_for_inference
    from mskquant.unet import UNet2D

    torch.manual_seed(0)
    nets = []
    for _ in range(2):
        net = UNet2D(1, 1, (8, 16, 32))
        for m in net.modules():  # non-trivial batch-norm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
        nets.append(net.eval())
    x = np.random.default_rng(0).normal(size=(3, 1, 37, 45)).astype(np.float32)  # not multiples of 4: padded
    with torch.no_grad():  # reference: the plain networks on the input zero-padded to 40 x 48, cropped back
        xt = torch.nn.functional.pad(torch.from_numpy(x), (0, 3, 0, 3))
        ref = (sum(n(xt) for n in nets) / 2)[..., :37, :45]
    fast = [prepare_for_inference(n, torch.device("cpu")) for n in nets]
    out = predict_ensemble(fast, x, torch.device("cpu"), divisor=4)
    assert out.shape == (3, 1, 37, 45)
    np.testing.assert_allclose(out, ref.numpy(), atol=2e-5)


def test_load_weights_names_the_mismatch(tmp_path):
    from mskquant.unet import UNet2D, load_weights

    torch.save(UNet2D(1, 1, (8, 16)).state_dict(), tmp_path / "small.pt")
    with pytest.raises(ModelError, match="do not fit"):
        load_weights(UNet2D(1, 1, (16, 32, 64, 128)), tmp_path / "small.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk")
    with pytest.raises(ModelError, match="cannot be read"):
        load_weights(UNet2D(), tmp_path / "junk.pt")


def test_unet_reproduces_the_published_key_names(sij_model_dir):
    from mskquant.models import ModelRegistry
    from mskquant.unet import build_unet, load_weights

    spec = ModelRegistry().get("sij-disease-region")
    net = build_unet(spec.architecture["params"])
    load_weights(net, sij_model_dir / "model_1.pt")
    assert net.divisor == 8


# --- metrics ----------------------------------------------------------------------------------
def test_metrics_by_hand():
    a = np.zeros(10, bool)
    b = np.zeros(10, bool)
    a[:4] = True
    b[2:8] = True
    assert metrics.dice(a, b) == pytest.approx(2 * 2 / (4 + 6))
    assert metrics.jaccard(a, b) == pytest.approx(2 / 8)
    assert metrics.volume_similarity(4, 6) == pytest.approx(1 - 2 / 10)
    assert metrics.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    ba = metrics.bland_altman([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 3.5, 5.0])
    d = np.array([0.5, 0.0, 0.5, 1.0])
    assert ba.mean_difference == pytest.approx(d.mean())
    assert ba.upper_limit == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))


# --- pictures -----------------------------------------------------------------------------------
def test_png_roundtrip_and_chart(tmp_path):
    rgb = render.colorize(np.linspace(0, 100, 64 * 48).reshape(48, 64), "t2", 0, 100)
    rgb = render.titled(rgb, "T2 (ms)")
    render.write_png(rgb, tmp_path / "a.png")
    np.testing.assert_array_equal(render.read_png(tmp_path / "a.png"), rgb)
    assert render.text_image("Dice 0.97")[..., 3].max() > 0  # text was drawn
    chart = render.Chart("Bland-Altman", "mean", "difference", [render.Series([1, 2, 3], [0.1, -0.2, 0.3], "s")],
                         [render.HLine(0.07, "mean")])
    img = render.read_png(render.chart_png(chart, tmp_path / "ba.png", (400, 300)))
    assert img.shape == (300, 400, 3)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10  # axes, text and points, not a blank frame


def test_display_slice_is_radiological():
    # i points to the patient's right (+R): columns must be flipped so the right is on the viewer's left
    g = Geometry.from_spacing((3, 2, 1), (1, 1, 1), (0, 0, 0), np.diag([1.0, -1.0, 1.0]))
    a = np.arange(6).reshape(1, 2, 3)
    s = render.display_slice(a, g, 0)
    assert s[0, 0] == a[0, 0, 2]


# --- dependencies in Slicer (the pure part) ----------------------------------------------------
def test_requirements_checking():
    from mskquant.dependencies import missing_requirements, read_requirements

    reqs = read_requirements()
    assert ("torch", "2.1") in reqs
    have = {"torch": "2.0.1", "numpy": "2.4.6", "scipy": "1.17.1"}
    assert missing_requirements(reqs, have.get) == ["torch>=2.1", "SimpleITK>=2.2"]
    assert missing_requirements(reqs) == []  # this environment satisfies them


# --- the CLI's error contract -------------------------------------------------------------------
def test_usage_and_input_errors_are_one_line_exit_2(cli, tmp_path):
    rc, out, err = cli("vhi", "--stir", tmp_path / "nope.nii.gz", "--normal-roi", tmp_path / "r.nii.gz",
                       "--disease-region", tmp_path / "d.nii.gz", "--out", tmp_path / "out")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "does not exist" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as e:
        cli("models", "frobnicate")
    assert e.value.code == 2


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd"])
def test_nan_voxels_survive_reading(tmp_path, suffix):
    # ITK's NIfTI reader turns NaN/Inf into 0 silently; imageio restores them so pipelines can refuse them
    g = Geometry.from_spacing((6, 5, 4), (1, 1, 2), (0, 0, 0))
    a = np.ones(g.shape_kji, np.float32)
    a[1, 2, 3] = np.nan
    a[3, 0, 0] = np.inf
    imageio.write_image(Image(a, g), tmp_path / f"x{suffix}")
    b = imageio.read_image(tmp_path / f"x{suffix}").array
    assert np.isnan(b[1, 2, 3]) and np.isinf(b[3, 0, 0]) and np.isfinite(b).sum() == a.size - 2
