"""SiamesePainCAM end to end: the MRML logic on real nodes, the ``mskquant pain-*`` commands
(contract and bad inputs), the bundled demo model and — with ../shared — the acceptance
figures on held-out simulated pairs (AUC >= 0.9, CAM pointing accuracy >= 0.8)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mskquant import mrml
from mskquant.errors import InputError
from mskquant.image import Geometry, Image
from mskquant.imageio import read_image, write_image
from mskquant.progress import Cancelled, CancelToken, Progress

from SiamesePainCAMLib import simulator as sim
from SiamesePainCAMLib.logic import CAM_THRESHOLD, HEAT_COLOR_NODE, OUTPUT_FILES, TABLE_COLUMNS, PainCAMLogic

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "SiamesePainCAM"


@pytest.fixture(scope="module")
def analytic():
    return sim.build_anatomy(sim.analytic_knee_labels(), "analytic", seed=99)


@pytest.fixture(scope="module")
def pair(analytic):
    return sim.simulate_pair(analytic, np.random.default_rng(21), "logic", painful_side="right", lesion_kind="effusion")


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    """One simulated pair written by ``mskquant pain-phantom`` (analytic knee)."""
    from mskquant.cli import main

    out = tmp_path_factory.mktemp("phantom") / "pairs"
    assert main(["pain-phantom", "--out", str(out), "--pairs", "1", "--analytic", "--seed", "5", "-q"]) == 0
    return out


# --- the MRML logic ------------------------------------------------------------------------------
def test_logic_puts_cams_on_each_input_grid_with_a_table(runtime, pair):
    left = mrml.volume_from_image(runtime, pair.left.image, "L knee")
    # the right knee on another grid: 20 rows fewer and a shifted origin
    g = pair.right.image.geometry
    m = g.ijk_to_ras.copy()
    m[:3, 3] += m[:3, 1] * 10
    right_img = Image(np.ascontiguousarray(pair.right.image.array[:, 10:-10, :]),
                      Geometry((g.shape_ijk[0], g.shape_ijk[1] - 20, g.shape_ijk[2]), m))
    right = mrml.volume_from_image(runtime, right_img, "R knee")
    before = {s: mrml.image_from_volume(n).array.copy() for s, n in (("left", left), ("right", right))}
    result = PainCAMLogic(runtime).run(left, right)
    assert 0.0 <= result.p_right_painful <= 1.0
    assert result.painful_side == ("right" if result.p_right_painful >= 0.5 else "left")
    assert any("differ in size" in w for w in result.warnings)
    for side, node in (("left", left), ("right", right)):
        cam_node = result.cam_volumes[side]
        assert mrml.geometry_of(cam_node).same_grid(mrml.geometry_of(node), tol_mm=1e-6)
        cam = mrml.image_from_volume(cam_node).array
        assert cam.min() >= 0 and cam.max() <= 1
        display = cam_node.GetDisplayNode()
        assert display.GetColorNode().GetName() == HEAT_COLOR_NODE
        assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(CAM_THRESHOLD)
        assert np.array_equal(mrml.image_from_volume(node).array, before[side])  # inputs untouched
        # the hot spot to jump to is on the max-CAM slice of that knee
        ras = np.r_[result.hot_spot_ras[side], 1.0]
        ijk = mrml.geometry_of(node).ras_to_ijk @ ras
        assert round(ijk[2]) == result.analysis.max_cam_slice[side]
        assert cam[int(round(ijk[2])), int(round(ijk[1])), int(round(ijk[0]))] == pytest.approx(
            cam[result.analysis.max_cam_slice[side]].max(), abs=1e-5)
    assert max(mrml.image_from_volume(result.cam_volumes[s]).array.max() for s in ("left", "right")) == \
        pytest.approx(1.0, abs=0.02)  # one common scale: the hottest spot is 1 (up to interpolation)
    cols = mrml.columns_from_table(result.table)
    assert tuple(cols) == TABLE_COLUMNS and cols["knee"] == ["left", "right"]
    assert cols["p_painful"][1] == pytest.approx(result.p_right_painful, abs=1e-6)
    assert cols["p_painful"][0] + cols["p_painful"][1] == pytest.approx(1.0, abs=1e-6)
    assert [v == "yes" for v in cols["painful"]] == [result.painful_side == "left", result.painful_side == "right"]
    assert cols["max_cam_slice"] == [result.analysis.max_cam_slice["left"], result.analysis.max_cam_slice["right"]]


def test_logic_cancel_leaves_the_scene_as_it_was(runtime, pair):
    left = mrml.volume_from_image(runtime, pair.left.image, "L")
    right = mrml.volume_from_image(runtime, pair.right.image, "R")
    n_before = runtime.scene.GetNumberOfNodes()
    token = CancelToken()

    def cb(fraction, message):
        if fraction > 0.3:
            token.cancel()

    with pytest.raises(Cancelled):
        PainCAMLogic(runtime).run(left, right, progress=Progress(cb, token))
    assert runtime.scene.GetNumberOfNodes() == n_before


def test_logic_refuses_one_volume_as_both_knees(runtime, pair):
    node = mrml.volume_from_image(runtime, pair.left.image, "knee")
    with pytest.raises(InputError, match="same volume"):
        PainCAMLogic(runtime).run(node, node)


# --- the command line contract ------------------------------------------------------------------------
def test_pain_phantom_writes_pairs_masks_and_truth(phantom_dir):
    rows = (phantom_dir / "pairs.csv").read_text().splitlines()
    assert rows[0].startswith("subject,left,right,painful_side,center_left,center_right")
    truth = json.loads((phantom_dir / "truth.json").read_text())[0]
    painful = truth["painful_side"]
    lesion = read_image(phantom_dir / f"pain_000_{painful}_lesion.nii.gz").array
    other = read_image(phantom_dir / f"pain_000_{'left' if painful == 'right' else 'right'}_lesion.nii.gz").array
    assert lesion.any() and not other.any()


def test_pain_cam_contract(cli, phantom_dir, tmp_path):
    out = tmp_path / "result"
    left, right = phantom_dir / "pain_000_left.nii.gz", phantom_dir / "pain_000_right.nii.gz"
    rc, stdout, stderr = cli("pain-cam", "--left", left, "--right", right, "--out", out, "-q")
    assert rc == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    data = json.loads((out / "pain.json").read_text())
    assert list(data)[:3] == ["p_right_painful", "painful_side", "max_cam_slice"]
    assert isinstance(data["p_right_painful"], float) and 0 <= data["p_right_painful"] <= 1
    assert data["painful_side"] == ("right" if data["p_right_painful"] >= 0.5 else "left")
    assert set(data["max_cam_slice"]) == {"left", "right"}
    assert all(isinstance(v, int) for v in data["max_cam_slice"].values())
    import SimpleITK as sitk

    for side, src in (("left", left), ("right", right)):
        a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(out / f"cam_{side}.nii.gz"))
        assert a.GetSize() == b.GetSize()
        assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
        assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
        assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
        cam = sitk.GetArrayFromImage(b)
        assert 0 <= cam.min() and cam.max() <= 1
        assert cam[data["max_cam_slice"][side]].max() > 0
    from mskquant.render import read_png

    png = read_png(out / "cam_overlay.png")
    assert png.shape[0] > 400 and png.shape[1] > 900
    # existing results are never overwritten without --overwrite
    stamp = (out / "pain.json").stat().st_mtime_ns
    rc, _, stderr = cli("pain-cam", "--left", left, "--right", right, "--out", out, "-q")
    assert rc == 2 and "already holds results" in stderr and (out / "pain.json").stat().st_mtime_ns == stamp
    # a given centre slice is used and reported
    rc, _, stderr = cli("pain-cam", "--left", left, "--right", right, "--center-left", 17, "--center-right", 19,
                        "--out", tmp_path / "given", "-q")
    assert rc == 0, stderr
    given = json.loads((tmp_path / "given" / "pain.json").read_text())
    assert given["centre_slice"] == {"left": 17, "right": 19}
    assert given["centre_source"] == {"left": "given", "right": "given"}


def _one_line_error(rc, stderr, pattern, out):
    assert rc == 2
    lines = [ln for ln in stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("mskquant: error: "), stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_bad_inputs_get_one_clear_error(cli, phantom_dir, tmp_path):
    left, right = phantom_dir / "pain_000_left.nii.gz", phantom_dir / "pain_000_right.nii.gz"
    out = tmp_path / "out"
    img = read_image(left)
    g = img.geometry
    # fewer than 23 slices
    short = tmp_path / "short.nii.gz"
    write_image(Image(img.array[:20], Geometry((g.shape_ijk[0], g.shape_ijk[1], 20), g.ijk_to_ras)), short)
    rc, _, err = cli("pain-cam", "--left", short, "--right", right, "--out", out, "-q")
    _one_line_error(rc, err, r"only 20 sagittal slices.*does not pad", out)
    # centre index out of range
    rc, _, err = cli("pain-cam", "--left", left, "--right", right, "--center-left", 37, "--out", out, "-q")
    _one_line_error(rc, err, r"left knee centre slice 37 is out of range.*0 to 36", out)
    rc, _, err = cli("pain-cam", "--left", left, "--right", right, "--center-right", -3, "--out", out, "-q")
    _one_line_error(rc, err, r"--center-right -3 is out of range", out)
    # non-sagittal: the same voxels, but the thick slices stacked superior-inferior (axial)
    m = g.ijk_to_ras.copy()
    m[:3, :3] = np.array([[0.357, 0, 0], [0, 0.357, 0], [0, 0, 3.0]])
    axial = tmp_path / "axial.nii.gz"
    write_image(Image(img.array, Geometry(g.shape_ijk, m)), axial)
    rc, _, err = cli("pain-cam", "--left", axial, "--right", right, "--out", out, "-q")
    _one_line_error(rc, err, r"left knee volume is not sagittal.*superior-inferior", out)
    # left and right swapped (the files say so)
    swapped_left = tmp_path / "knee_RIGHT.nii.gz"
    swapped_left.write_bytes(right.read_bytes())
    rc, _, err = cli("pain-cam", "--left", swapped_left, "--right", left, "--out", out, "-q")
    _one_line_error(rc, err, r"named as a right knee.*swapped", out)
    # left and right swapped (one scanner frame: the 'left' knee lies to the patient's right)
    far = tmp_path / "shifted.nii.gz"
    m = g.ijk_to_ras.copy()
    m[0, 3] += 180.0
    write_image(Image(img.array, Geometry(g.shape_ijk, m)), far)
    rc, _, err = cli("pain-cam", "--left", far, "--right", right, "--out", out, "-q")
    _one_line_error(rc, err, r"lies 1\d\d mm to the patient's right.*swapped", out)


def test_different_sizes_are_resampled_and_said(cli, phantom_dir, tmp_path):
    right = read_image(phantom_dir / "pain_000_right.nii.gz")
    g = right.geometry
    small = tmp_path / "right_small.nii.gz"
    m = g.ijk_to_ras.copy()
    m[:3, :2] *= 2  # half the matrix, twice the pixel size
    write_image(Image(np.ascontiguousarray(right.array[:, ::2, ::2]), Geometry((224, 224, g.shape_ijk[2]), m)), small)
    out = tmp_path / "o"
    rc, _, err = cli("pain-cam", "--left", phantom_dir / "pain_000_left.nii.gz", "--right", small, "--out", out)
    assert rc == 0, err
    assert "warning: The left (448x448x37" in err and "differ in size" in err
    cam = read_image(out / "cam_right.nii.gz")
    assert cam.geometry.same_grid(read_image(small).geometry, tol_mm=1e-3)


# --- the bundled demo model ---------------------------------------------------------------------------
def test_demo_model_is_registered_bundled_and_verified(model_dir):
    from mskquant.models import ModelStore

    store = ModelStore()
    spec = store.registry.get("siamese-pain-demo")
    assert spec.module == "SiamesePainCAM" and spec.architecture["name"] == "siamese-pain-cam"
    (path,) = store.ensure(spec.id)  # offline: must be bundled, SHA-256 checked
    assert path.stat().st_size < 20e6 and spec.files[0].bundled
    card = ROOT / "Resources" / "Models" / spec.get("model_card")
    text = card.read_text()
    assert "trained on simulated pairs; not validated on real scans" in text.lower()
    listed = (ROOT / "Resources" / "CMakeLists.txt").read_text()
    assert f"Models/{spec.files[0].bundled}" in listed and f"Models/{card.name}" in listed


def test_models_add_keeps_the_pooling_a_model_was_trained_with(tmp_path, model_dir, cli):
    """pain-train saves the architecture with the weights; LSE pooling adds no parameters, so a
    bare state dict would load into the --like model's average pooling without a word."""
    import torch

    from mskquant.device import select_device
    from mskquant.models import ModelRegistry

    from SiamesePainCAMLib.checkpoint import save_model
    from SiamesePainCAMLib.network import SiamesePainNet
    from SiamesePainCAMLib.pipeline import load_pain_model

    torch.manual_seed(0)
    net = SiamesePainNet((2, 2, 2, 2, 2, 2), pooling="lse", lse_sharpness=3.0)
    with torch.no_grad():
        net.template.fill_(0.5)
    save_model(net, tmp_path / "lse.pt")
    rc, _, err = cli("models", "add", tmp_path / "lse.pt", "--id", "pain-lse", "--like", "siamese-pain-demo")
    assert rc == 0, err
    spec = ModelRegistry().get("pain-lse")
    assert spec.architecture["params"]["pooling"] == "lse" and spec.architecture["params"]["widths"] == [2] * 6
    from mskquant.models import ModelStore

    model = load_pain_model(ModelStore().ensure("pain-lse")[0], spec.architecture, select_device("cpu"), spec.id)
    assert model.network.pooling == "lse" and model.network.lse_sharpness == 3.0
    # a bare state dict (the bundled demo model's format) takes the --like model's architecture
    torch.save(SiamesePainNet().state_dict(), str(tmp_path / "bare.pt"))
    rc, _, err = cli("models", "add", tmp_path / "bare.pt", "--id", "pain-bare", "--like", "siamese-pain-demo")
    assert rc == 0, err
    assert ModelRegistry().get("pain-bare").architecture == ModelRegistry().get("siamese-pain-demo").architecture


# --- the module's files --------------------------------------------------------------------------------
def test_cmake_lists_every_module_file_and_nothing_else():
    text = (MODULE / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "SiamesePainCAM")
    listed = set(re.findall(r"^\s+(\S+\.(?:py|png|ui))\s*$", text, re.M))
    present = {str(p.relative_to(MODULE)) for p in MODULE.rglob("*") if p.suffix in (".py", ".png", ".ui")
               and "__pycache__" not in p.parts}
    assert listed == present


def test_every_ui_widget_the_panel_uses_exists():
    ui = (MODULE / "Resources" / "UI" / "SiamesePainCAM.ui").read_text()
    names = set(re.findall(r'<widget class="[^"]+" name="([^"]+)"', ui))
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "SiamesePainCAMLib" / "widget.py").read_text()))
    assert used and used <= names, used - names


# --- acceptance on held-out simulated pairs (needs ../shared) ------------------------------------------------
HELD_OUT_PAIRS_PER_MAP = 10


@pytest.fixture(scope="module")
def held_out_outcomes(knee_labelmap_dir):
    """The bundled demo model on 40 pairs simulated from knee label maps it never saw (nor its
    template): 10 per label map of the held-out subjects, lesion kind drawn 60/40."""
    from mskquant.device import select_device
    from mskquant.models import ModelStore

    from SiamesePainCAMLib.datasets import HELD_OUT_SUBJECTS, load_anatomies
    from SiamesePainCAMLib.evaluation import evaluate_pair

    from SiamesePainCAMLib.pipeline import load_pain_model

    store = ModelStore()
    spec = store.registry.get("siamese-pain-demo")
    model = load_pain_model(store.ensure(spec.id)[0], spec.architecture, select_device("cpu"), spec.id)
    anatomies = load_anatomies(knee_labelmap_dir, subjects=HELD_OUT_SUBJECTS)
    assert len(anatomies) == 4
    outcomes = []
    for a, anatomy in enumerate(anatomies):
        for p in range(HELD_OUT_PAIRS_PER_MAP):
            rng = np.random.default_rng([31337, a, p])
            side = "right" if (a * HELD_OUT_PAIRS_PER_MAP + p) % 2 == 0 else "left"
            outcome, _ = evaluate_pair(model, sim.simulate_pair(anatomy, rng, f"{anatomy.name}-{p}", painful_side=side))
            outcomes.append(outcome)
    for o in outcomes:
        print(f"{o.subject} {o.lesion_kind:8s} {o.lesion_site:22s} p_right {o.p_right_painful:.3f} truth {o.painful_side:5s} "
              f"hit {o.pointing_hit} peak-to-lesion {o.peak_to_lesion_mm:.1f} mm")
    return outcomes


def test_held_out_auc_and_pointing_accuracy(held_out_outcomes):
    """Issue 6 acceptance: AUC >= 0.9 and the painful knee's CAM maximum inside the planted
    lesion in >= 80 % of the held-out pairs."""
    from SiamesePainCAMLib.evaluation import summarise

    s = summarise(held_out_outcomes)
    by_kind = {kind: summarise([o for o in held_out_outcomes if o.lesion_kind == kind]) for kind in sim.LESION_KINDS}
    print("all:", s)
    for kind, k in by_kind.items():
        print(f"{kind}: {k['n_pairs']} pairs, pointing {k['pointing_accuracy']:.2f}, accuracy {k['accuracy']:.2f}")
    assert s["n_pairs"] == 40
    assert s["auc"] >= 0.9
    assert s["pointing_accuracy"] >= 0.8
