"""The femorotibial joint localiser of SiamesePainCAM (issue 15, 4a): its training loop, the
bundled model on knees it never saw, and the alignment window it gives the pre-processing.

The bundled localiser's accuracy on the independent test family is asserted in
test_siamese_generalisation.py (it reuses that file's simulated pairs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from SiamesePainCAMLib import localiser as jl
from SiamesePainCAMLib import localiser_training as lt
from SiamesePainCAMLib import preprocessing as pp
from SiamesePainCAMLib import simulator as sim

HELD_OUT_MAPS = ("9055361_00m", "9057479_36m")  # never used to train the localiser or the pain model
MAX_ERROR_MM = 10.0


@pytest.fixture(scope="module")
def analytic():
    return sim.build_anatomy(sim.analytic_knee_labels(), "analytic", seed=99)


@pytest.fixture(scope="module")
def localiser():
    return jl.default_localiser(torch.device("cpu"))


def joint_uv(knee: sim.SimulatedKnee) -> np.ndarray:
    return np.array([-knee.tibial_cartilage_ras[2], -knee.tibial_cartilage_ras[1]])


def test_training_samples_put_the_target_on_the_joint(analytic):
    """The target pixel of every sample maps back onto the knee's tibial cartilage centroid."""
    rng = np.random.default_rng(3)
    knee = sim.render_knee(analytic, "left", rng, None, None, lt.localiser_variation())
    s = lt.knee_samples(knee, rng, per_knee=6)
    assert len(s.targets) == 6 and s.canvases.shape[1:] == (jl.CANVAS_PX, jl.CANVAS_PX)
    assert np.all((s.targets > 5) & (s.targets < jl.CANVAS_PX - 5))  # the canvas shift keeps the joint inside
    # the joint on the canvas is surrounded by anatomy (not the empty field outside the knee)
    for canvas, (y, x) in zip(s.canvases.astype(np.float32), s.targets):
        patch = canvas[int(y) - 5:int(y) + 6, int(x) - 5:int(x) + 6]
        assert patch.mean() > 0.05


def test_training_loop_lowers_the_heatmap_loss(analytic):
    samples = lt.Samples.concatenate([lt.anatomy_samples(analytic, 2, seed=5, per_knee=8)])
    torch.manual_seed(0)
    net = jl.build_localiser({"features": [4, 8, 16, 32]})
    x = torch.from_numpy(samples.canvases.astype(np.float32))[:, None]
    y = torch.from_numpy(samples.targets)
    with torch.no_grad():
        before = float(jl.heatmap_loss(net.eval()(x), y))
    lt.train(samples, steps=40, batch_size=8, lr=3e-3, seed=0, network=net)
    with torch.no_grad():
        after = float(jl.heatmap_loss(net(x), y))
    assert after < before - 0.5, (before, after)


def test_bundled_localiser_finds_the_joint_on_held_out_knees(knee_labelmap_dir, localiser):
    """Project-simulated knees of subjects held out of its training, in the fixed look and with
    random looks: the joint within 10 mm on every knee."""
    from mskquant.imageio import read_image

    errors = []
    for n, m in enumerate(HELD_OUT_MAPS):
        anatomy = sim.build_anatomy(read_image(knee_labelmap_dir / f"{m}.nii.gz"), m, seed=n)
        rng = np.random.default_rng([41, n])
        for k, variation in enumerate((sim.Variation(), sim.Variation.randomised(), sim.Variation.randomised())):
            side = ("left", "right")[(n + k) % 2]
            knee = sim.render_knee(anatomy, side, rng, None, None, variation)
            frame = pp.knee_frame(knee.image.geometry, side)
            est = localiser.locate(knee.image.array, frame, frame.plane_indices(knee.centre_slice))
            assert est.usable, (m, k, est.confidence)
            errors.append(float(np.linalg.norm(est.uv - joint_uv(knee))))
    print("localiser error (mm):", [round(e, 1) for e in errors])
    assert max(errors) <= MAX_ERROR_MM, errors


def test_localiser_finds_the_template_joint(localiser):
    """On the bundled pain model's template (a 105 mm crop centred on its reference knees' joint
    centre, which lies above and in front of the tibial cartilage) the joint lies below and behind
    the crop centre, 15-25 mm along each axis: scripts/evaluate_pain_generalisation.py measures
    17-21 mm along the worse axis on the project's own knees."""
    from mskquant.models import ModelStore

    from SiamesePainCAMLib.pipeline import load_pain_model

    store = ModelStore()
    spec = store.registry.get("siamese-pain-demo")
    model = load_pain_model(store.ensure(spec.id)[0], spec.architecture, torch.device("cpu"), spec.id)
    est = model.template.joint(localiser)
    assert est.usable
    assert np.all((est.uv >= 15.0) & (est.uv <= 25.0)), est.uv


def test_joint_window_keeps_the_alignment_near_the_joint(analytic):
    """A window away from where the template matches best: the alignment lands inside it."""
    ref = sim.reference_knee(analytic)
    template = pp.Template(pp.prepare_knee(ref.image, "right", None, centre=ref.centre_slice,
                                           joint_centre_uv=sim.joint_centre_uv(ref)).planes)
    knee = sim.render_knee(analytic, "right", np.random.default_rng(7), None, None, sim.Variation.none())
    frame = pp.knee_frame(knee.image.geometry, "right")
    stack = pp.coarse_stack(knee.image.array, frame, pp.COARSE_MM)
    corr = pp.SliceCorrelator(pp.interpolate_stack(stack, knee.centre_slice), template.align)
    free = pp.align_plane(corr, template.align, pp.HALF, stack.origin_uv)
    truth = sim.joint_centre_uv(knee)
    assert np.linalg.norm(free.t_uv - truth) < 3.0
    # pretend the joint lies 12 mm lower: the template's own joint point is the crop centre (q = 0)
    window = pp.JointWindow(truth + np.array([12.0, 0.0]), np.zeros(2), 4.0)
    bound = pp.align_plane(corr, template.align, pp.HALF, stack.origin_uv, window)
    assert np.linalg.norm(bound.t_uv - window.joint_uv) <= 4.0 + 0.75 * pp.COARSE_MM
    assert bound.score < free.score


def test_joint_window_rotates_the_template_joint_with_the_template():
    """allowed(): with the template turned by theta its joint point q moves to R(theta) q."""
    matcher = type("M", (), {"size": 5, "pixel_mm": 1.0})()
    corr = type("C", (), {"pad": 2})()
    theta = math.radians(90)
    w = pp.JointWindow(np.array([10.0, 10.0]), np.array([3.0, 0.0]), 0.5)
    ok = w.allowed(corr, matcher, np.zeros(2), theta, (21, 21))
    # R(90) (3, 0) = (0, 3): t = (10, 7); map pixel (y, x) has t = (y, x) + (5 - 1) / 2 - 2 = (y, x)
    assert ok.sum() == 1 and ok[10, 7]


def test_pipeline_reports_the_localiser_and_old_models_run_without_it(analytic, localiser):
    """The pain pipeline bounds the alignment by the localiser and says so in pain.json's
    pre-processing; a model loaded without one aligns by the template alone, as before."""
    from SiamesePainCAMLib.pipeline import analyse_pair, load_pain_model
    from mskquant.models import ModelStore

    store = ModelStore()
    spec = store.registry.get("siamese-pain-demo")
    path = store.ensure(spec.id)[0]
    with_loc = load_pain_model(path, spec.architecture, torch.device("cpu"), spec.id)
    without = load_pain_model(path, spec.architecture, torch.device("cpu"), spec.id, localiser=None)
    assert with_loc.localiser is localiser and without.localiser is None
    pair = sim.simulate_pair(analytic, np.random.default_rng(11), "t", "right", "effusion")
    r = analyse_pair(with_loc, pair.left.image, pair.right.image)
    info = r.summary()["preprocessing"]["right"]["joint_localiser"]
    assert info["bounded"] and info["knee"]["used"] and info["window_mm"] == pp.JOINT_WINDOW_MM
    assert np.linalg.norm(np.array(info["knee"]["joint_uv_mm"]) - joint_uv(pair.right)) <= MAX_ERROR_MM
    r0 = analyse_pair(without, pair.left.image, pair.right.image)
    assert r0.summary()["preprocessing"]["right"]["joint_localiser"] is None
