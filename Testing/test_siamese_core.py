"""SiamesePainCAM numeric core: pre-processing geometry, simulator truth, network and CAM
identities, training loop, folds. Runs without ../shared (the analytic knee stands in)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mskquant.errors import InputError
from mskquant.image import Geometry, Image
from mskquant.metrics import roc_auc, roc_curve
from mskquant.progress import Cancelled, CancelToken, Progress

from SiamesePainCAMLib import network, preprocessing as pp, simulator as sim
from SiamesePainCAMLib.cam import peak_index, predict
from SiamesePainCAMLib.training import (PairData, TrainingConfig, cross_validate, predict_probabilities,
                                        subject_folds, train_fold)


@pytest.fixture(scope="module")
def analytic():
    return sim.build_anatomy(sim.analytic_knee_labels(), "analytic", seed=99)


@pytest.fixture(scope="module")
def analytic_template(analytic):
    ref = sim.reference_knee(analytic)
    return pp.prepare_knee(ref.image, "right", None, centre=ref.centre_slice,
                           joint_centre_uv=sim.joint_centre_uv(ref)).planes


def sagittal_geometry(n_slices=37, matrix=64, slice_dir=1.0, pixel=2.5):
    m = np.eye(4)
    m[:3, 0] = (0, -pixel, 0)
    m[:3, 1] = (0, 0, -pixel)
    m[:3, 2] = (3.0 * slice_dir, 0, 0)
    m[:3, 3] = (-50.0 * slice_dir, 80.0, 80.0)
    return Geometry((matrix, matrix, n_slices), m)


# --- the knee's frame -------------------------------------------------------------------------
def test_lateral_direction_comes_from_the_direction_matrix_and_the_side():
    plus_r = sagittal_geometry(slice_dir=1.0)
    minus_r = sagittal_geometry(slice_dir=-1.0)
    # a right knee's lateral side is the patient's right (+R): the left knee is mirrored
    assert pp.knee_frame(plus_r, "right").lateral_step == 1
    assert pp.knee_frame(plus_r, "left").lateral_step == -1
    assert pp.knee_frame(minus_r, "right").lateral_step == -1
    assert pp.knee_frame(minus_r, "left").lateral_step == 1
    f = pp.knee_frame(plus_r, "right")
    assert f.slice_axis == 0 and f.slice_spacing_mm == pytest.approx(3.0) and f.plane_step == 1.0
    assert list(f.plane_indices(18)[[0, 11, 22]]) == [7, 18, 29]  # plane 0 = 11 slices medial
    assert list(pp.knee_frame(plus_r, "left").plane_indices(18)[[0, 22]]) == [29, 7]


def test_sagittal_axis_found_in_any_array_order():
    # slices stacked along i (like the OAI DESS label maps: 0.7 mm along R, 0.365 mm in-plane)
    g = Geometry.from_spacing((160, 384, 384), (0.7, 0.365, 0.365))
    f = pp.knee_frame(g, "right")
    assert f.slice_axis == 2 and f.lateral_step == 1 and f.plane_step == pytest.approx(3.0 / 0.7)


def test_non_sagittal_volume_is_refused():
    axial = Geometry.from_spacing((448, 448, 37), (0.36, 0.36, 3.0))  # k along S
    with pytest.raises(InputError, match="not sagittal.*superior-inferior"):
        pp.knee_frame(axial, "left", "left knee")
    coronal = Geometry.from_spacing((448, 37, 448), (0.36, 3.0, 0.36))
    with pytest.raises(InputError, match="not sagittal.*anterior-posterior"):
        pp.knee_frame(coronal, "right", "right knee")


def test_fewer_than_23_slices_are_refused_not_padded():
    g = sagittal_geometry(n_slices=20)
    img = Image(np.random.default_rng(0).random(g.shape_kji, dtype=np.float32), g)
    with pytest.raises(InputError, match="only 20 sagittal slices.*does not pad"):
        pp.prepare_knee(img, "left")


def test_centre_out_of_range_and_too_close_to_the_edge():
    g = sagittal_geometry(n_slices=37)
    img = Image(np.random.default_rng(0).random(g.shape_kji, dtype=np.float32), g)
    with pytest.raises(InputError, match="centre slice 40 is out of range.*0 to 36"):
        pp.prepare_knee(img, "right", centre=40)
    with pytest.raises(InputError, match="choose a centre between 11 and 25"):
        pp.prepare_knee(img, "right", centre=5)


# --- simulator -------------------------------------------------------------------------------
def test_simulated_pair_has_the_lesion_only_in_the_painful_knee(analytic):
    pair = sim.simulate_pair(analytic, np.random.default_rng(4), "t", painful_side="left", lesion_kind="bml")
    assert pair.label == 0 and pair.painful is pair.left
    assert pair.left.lesion_mask.array.sum() > 50 and not pair.right.lesion_mask.array.any()
    g = pair.left.image.geometry
    assert g.shape_kji == (37, 448, 448) and np.allclose(g.spacing, (0.357, 0.357, 3.0))
    assert pp.knee_frame(g, "left").slice_axis == 0
    # the lesion is bright: oedema in dark fat-suppressed marrow
    img = pair.left.image.array
    tissue = img[img > 0.1 * np.percentile(img, 99)]
    assert np.median(img[pair.left.lesion_mask.array]) > 1.5 * np.median(tissue)
    for knee in (pair.left, pair.right):
        assert 11 <= knee.centre_slice <= 25


def test_simulated_left_and_right_knees_are_mirror_images(analytic, analytic_template):
    """Indexing: with no variation, plane o of the left knee shows what plane o of the right does."""
    none = sim.Variation.none()
    rng = np.random.default_rng(0)
    left = sim.render_knee(analytic, "left", rng, None, variation=none)
    right = sim.render_knee(analytic, "right", rng, None, variation=none)
    assert not np.allclose(left.image.array, right.image.array)  # stored in one scanner order: mirrored
    pl = pp.prepare_knee(left.image, "left", analytic_template).planes
    pr = pp.prepare_knee(right.image, "right", analytic_template).planes
    for o in (0, 5, 11, 17, 22):
        assert np.corrcoef(pl[o].ravel(), pr[o].ravel())[0, 1] > 0.95
    assert np.corrcoef(pl[0].ravel(), pr[22].ravel())[0, 1] < np.corrcoef(pl[0].ravel(), pr[0].ravel())[0, 1]


def test_preprocessing_recovers_the_pose_of_a_simulated_knee(analytic, analytic_template):
    template = pp.Template(analytic_template)
    rng = np.random.default_rng(11)
    for side in ("left", "right"):
        knee = sim.render_knee(analytic, side, rng, None)
        pk = pp.prepare_knee(knee.image, side, template)
        assert abs(pk.centre_slice - knee.centre_slice) <= 1
        t = np.median([a.t_uv for a in pk.alignments], axis=0)
        assert np.linalg.norm(t - sim.joint_centre_uv(knee)) < 3.0  # mm
        theta = math.degrees(np.median([a.theta_rad for a in pk.alignments]))
        assert abs(theta - knee.pose["flexion_deg"]) < 2.0
        assert pk.planes.shape == (23, 224, 224) and pk.planes.min() >= 0 and pk.planes.max() <= 1
        assert pk.centre_estimate.laterality_margin > 0  # looks like the side it was given as


def test_cam_maps_back_onto_the_input_voxels(analytic, analytic_template):
    """A spot at the template's joint centre on plane 11 lands on the joint centre of the input."""
    knee = sim.render_knee(analytic, "left", np.random.default_rng(5), None)
    pk = pp.prepare_knee(knee.image, "left", analytic_template, centre=knee.centre_slice)
    maps = np.zeros((23, 28, 28), np.float32)
    maps[11, 13:15, 13:15] = 1.0  # the four cells around the field's centre
    vol = pp.map_planes_to_volume(pk, maps, knee.image.geometry.shape_kji)
    k, j, i = peak_index(vol)
    assert k == knee.centre_slice
    assert np.count_nonzero(vol.max(axis=(1, 2))) == 1  # only that slice
    ras = knee.image.geometry.ijk_to_ras @ np.array([i, j, k, 1.0])
    uv = np.array([-ras[2], -ras[1]])
    assert np.linalg.norm(uv - sim.joint_centre_uv(knee)) < 4.0


# --- network and CAM --------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["average", "lse"])
def test_slice_contributions_add_up_to_the_decision_and_swapping_knees_flips_it(pooling):
    torch.manual_seed(0)
    net = network.SiamesePainNet((4, 4, 8, 8, 8, 8), pooling=pooling).eval()
    with torch.no_grad():
        net.fusion.bias.zero_()
        x = torch.rand(3, 2, 23, 224, 224)
        logits, cams, contributions = net.forward_with_cam(x)
        assert logits.shape == (3, 2) and cams.shape == (3, 2, 23, 28, 28) and contributions.shape == (3, 2, 23)
        margin = logits[:, 1] - logits[:, 0]
        # right-knee evidence raises "right painful", left-knee evidence raises "left painful"
        assert torch.allclose(contributions[:, 1].sum(1) - contributions[:, 0].sum(1), margin, atol=1e-4)
        if pooling == "average":  # the paper: a slice's contribution is its mean CAM
            assert torch.allclose(cams.mean(dim=(-1, -2)), contributions, atol=1e-5)
        else:  # a smooth maximum: between the mean and the maximum of the (unscaled) map
            a = net.location_gain()[None, None, :]
            raw = cams / a[..., None, None]
            pooled = contributions / a
            assert torch.all(pooled >= raw.mean(dim=(-1, -2)) - 1e-5)
            assert torch.all(pooled <= raw.amax(dim=(-1, -2)) + 1e-5)
        swapped = net(x.flip(1))
        assert torch.allclose(swapped[:, 1] - swapped[:, 0], -margin, atol=1e-4)


def test_batch_norm_folding_keeps_outputs_and_cams():
    torch.manual_seed(1)
    net = network.SiamesePainNet((4, 8, 8, 8, 16, 16), pooling="lse")
    net.train()
    with torch.no_grad():  # give batch norm non-trivial running statistics
        for _ in range(3):
            net(torch.rand(2, 2, 23, 224, 224))
    net.eval()
    from SiamesePainCAMLib.cam import prepare_model_for_inference

    fast = prepare_model_for_inference(net, torch.device("cpu"))
    left, right = np.random.default_rng(2).random((2, 23, 224, 224), dtype=np.float32)
    a, b = predict(net, left, right), predict(fast, left, right)
    assert a.p_right_painful == pytest.approx(b.p_right_painful, abs=1e-5)
    assert np.allclose(a.cams, b.cams, atol=1e-4)
    assert a.max_cam_plane("left") == b.max_cam_plane("left")


def test_feature_grid_is_the_receptive_field_centre_of_each_map_cell():
    """Map cell m of the 28 x 28 maps is centred on input pixel 8 m + 2 (not 8 m + 3.5): the
    receptive field of a cell, found from the input gradient of a copy of the branch whose max
    poolings are average poolings of the same geometry, is centred there."""
    net = network.SiamesePainNet((2, 2, 2, 2, 2, 2))
    assert net.feature_grid() == (8.0, 2.0)
    layers = [torch.nn.AvgPool2d(m.kernel_size, m.stride, m.padding, count_include_pad=True)
              if isinstance(m, torch.nn.MaxPool2d) else m for m in net.branches[0]]
    branch = torch.nn.Sequential(*[m for m in layers if not isinstance(m, torch.nn.ReLU)]).eval()
    with torch.no_grad():
        for m in branch:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(1.0)
    stride, centre = net.feature_grid()
    for cell in (5, 14):
        x = torch.zeros(1, 1, 224, 224, requires_grad=True)
        branch(x)[0, 0, cell, cell].backward()
        rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten().float()
        assert (rows.min() + rows.max()).item() / 2 == pytest.approx(stride * cell + centre)
    # and the prepared (batch-norm folded) network keeps it
    from SiamesePainCAMLib.cam import prepare_model_for_inference

    assert prepare_model_for_inference(net.eval(), torch.device("cpu")).feature_grid() == (8.0, 2.0)


def test_paper_layer_structure_gives_28_by_28_maps():
    net = network.SiamesePainNet(network.PAPER_WIDTHS, branch_per_location=False)
    convs = [m for m in net.branches[0] if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in net.branches[0] if isinstance(m, torch.nn.MaxPool2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512]
    assert convs[0].kernel_size == (7, 7) and convs[0].stride == (2, 2)
    assert all(c.stride == (1, 1) for c in convs[1:]) and len(pools) == 2
    with torch.no_grad():
        f = net.features(torch.rand(1, 2, 23, 224, 224)[:, :, :23])
    assert f.shape == (1, 2, 23, 512, 28, 28)


# --- training --------------------------------------------------------------------------------
def _toy_pairs(n_subjects=6, pairs_each=4, seed=0):
    """Random planes; the painful knee carries a bright square (an easy, learnable signal)."""
    rng = np.random.default_rng(seed)
    n = n_subjects * pairs_each
    planes = (rng.random((n, 2, 23, 224, 224), dtype=np.float32) * 0.3).astype(np.float16)
    labels = np.array([i % 2 for i in range(n)])
    for i, y in enumerate(labels):
        planes[i, y, 8:15, 90:130, 90:130] = 1.0
    groups = np.repeat([f"s{k}" for k in range(n_subjects)], pairs_each)
    return PairData(planes, labels, groups, [f"p{i}" for i in range(n)])


def test_subject_folds_never_split_a_subject():
    groups = np.repeat(np.arange(12), np.arange(1, 13))
    folds = subject_folds(groups, 10, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(groups)))
    for f in folds:
        for g in np.unique(groups[f]):
            assert set(np.nonzero(groups == g)[0]) <= set(f.tolist())
    with pytest.raises(InputError, match="at least 10 subjects"):
        subject_folds(np.arange(5), 10)


def test_cross_validation_decays_the_rate_saves_and_resumes(tmp_path):
    data = _toy_pairs(n_subjects=4, pairs_each=2)
    cfg = TrainingConfig(epochs=2, learning_rate=0.05, lr_step_epochs=1, lr_gamma=0.1, batch_size=4, folds=2,
                         widths=(2, 2, 2, 2, 4, 4), device="cpu", seed=1)
    template = np.full((23, 224, 224), 0.5, np.float32)
    cv, best_state = cross_validate(data, cfg, template, tmp_path)
    assert len(cv.folds) == 2 and len(cv.labels) == len(data)
    tested = sorted(i for r in cv.folds for i in r.test_idx)
    assert tested == list(range(len(data)))  # every pair tested exactly once
    for r in cv.folds:
        assert [h["lr"] for h in r.history] == pytest.approx([0.05, 0.005])
        assert (tmp_path / f"fold_{r.fold}" / "best.pt").is_file()
        auc = [-1.0 if np.isnan(h["val_auc"]) else h["val_auc"] for h in r.history]
        best = max(zip(auc, r.history), key=lambda t: (t[0], -t[1]["val_loss"]))[1]  # highest AUC, then lowest loss
        assert r.best_epoch == best["epoch"]
    assert torch.all(best_state["template"] == 0.5)  # the template travels with the weights
    # resuming finds every fold finished and retrains nothing: no checkpoint is written again
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    cv2, _ = cross_validate(data, cfg, template, tmp_path, resume=True)
    assert [r.probabilities for r in cv2.folds] == [r.probabilities for r in cv.folds]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == stamps


def test_training_learns_a_lesion_signal():
    data = _toy_pairs(n_subjects=4, pairs_each=2, seed=3)
    cfg = TrainingConfig(epochs=5, learning_rate=0.1, lr_step_epochs=20, batch_size=2,
                         widths=(2, 4, 4, 4, 8, 8), device="cpu", seed=2)
    idx = np.arange(len(data))
    model, best, history = train_fold(data, idx[:6], idx[6:], cfg, np.zeros((23, 224, 224), np.float32),
                                      torch.device("cpu"))
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    probs, _ = predict_probabilities(model, data, idx[:6], torch.device("cpu"))
    assert roc_auc(data.labels[:6], probs) == 1.0


def test_training_can_be_cancelled(tmp_path):
    token = CancelToken()
    calls = []

    def cb(f, m):
        calls.append(m)
        if len(calls) > 3:
            token.cancel()

    cfg = TrainingConfig(epochs=5, batch_size=2, folds=1, widths=(2, 2, 2, 2, 2, 2), device="cpu")
    with pytest.raises(Cancelled):
        cross_validate(_toy_pairs(3, 2), cfg, np.zeros((23, 224, 224), np.float32), tmp_path, Progress(cb, token))


def test_roc_auc_matches_mann_whitney_with_ties():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = np.round(rng.normal(size=80) + y, 1)
    u = mannwhitneyu(s[y == 1], s[y == 0]).statistic / ((y == 1).sum() * (y == 0).sum())
    assert roc_auc(y, s) == pytest.approx(u)
    fpr, tpr, _ = roc_curve(y, s)
    assert fpr[0] == 0 and tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
    with pytest.raises(ValueError):
        roc_auc([1, 1], [0.2, 0.3])


# --- pairs without a lesion (issue 15: calibration) -------------------------------------------------
def test_soft_cross_entropy_is_the_paper_loss_for_hard_labels_and_wants_one_half_for_none():
    from SiamesePainCAMLib.training import NO_LESION, soft_cross_entropy

    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5], [0.0, 0.0]])
    hard = torch.tensor([1, 0, 1])
    assert float(soft_cross_entropy(logits, hard.float())) == pytest.approx(float(F.cross_entropy(logits, hard)))
    # a lesion-free pair: the loss is smallest when both classes are equally likely
    z = torch.linspace(-3, 3, 61)
    losses = [float(soft_cross_entropy(torch.stack([torch.zeros(()), v])[None], torch.tensor([NO_LESION])))
              for v in z]
    assert abs(float(z[int(np.argmin(losses))])) < 1e-6


def test_painless_cam_penalty_covers_both_knees_of_a_lesion_free_pair():
    from SiamesePainCAMLib.training import NO_LESION, painless_cam_penalty

    cams = torch.zeros(3, 2, 23, 4, 4)
    cams[:, 0] = 1.0  # positive evidence in every left knee
    cams[:, 1] = 2.0  # and twice as much in every right knee
    per_pair = [float(painless_cam_penalty(cams[i:i + 1], torch.tensor([y])))
                for i, y in enumerate((1.0, 0.0, NO_LESION))]
    assert per_pair == pytest.approx([1.0, 4.0, 5.0])  # right painful -> the left counts; none -> both
    # the batch value is the mean over pairs, as before for labels 0 and 1
    assert float(painless_cam_penalty(cams, torch.tensor([1.0, 0.0, NO_LESION]))) == pytest.approx(10.0 / 3)


def test_training_on_lesion_free_pairs_pulls_them_to_one_half():
    """Toy pairs plus pairs without the bright square: after training, the lesion pairs rank
    perfectly, the lesion-free ones sit near p = 0.5, and AUCs leave them out."""
    from SiamesePainCAMLib.training import NO_LESION, _safe_auc

    toy = _toy_pairs(n_subjects=4, pairs_each=2, seed=3)
    rng = np.random.default_rng(9)
    free = (rng.random((4, 2, 23, 224, 224), dtype=np.float32) * 0.3).astype(np.float16)
    data = PairData(np.concatenate([toy.planes, free]), np.r_[toy.labels, [NO_LESION] * 4].astype(np.float32),
                    np.r_[toy.groups, ["f0", "f0", "f1", "f1"]], toy.ids + [f"f{i}" for i in range(4)])
    cfg = TrainingConfig(epochs=6, learning_rate=0.1, lr_step_epochs=20, batch_size=2,
                         widths=(2, 4, 4, 4, 8, 8), device="cpu", seed=2)
    train = np.r_[0:6, 8:11]
    model, _, history = train_fold(data, train, np.r_[6, 7, 11], cfg, np.zeros((23, 224, 224), np.float32),
                                   torch.device("cpu"))
    probs, _ = predict_probabilities(model, data, np.arange(len(data)), torch.device("cpu"))
    assert _safe_auc(data.labels, probs) == roc_auc(data.labels[:8].astype(int), probs[:8])
    assert roc_auc(data.labels[:6].astype(int), probs[:6]) == 1.0
    assert np.all(np.abs(probs[8:11] - 0.5) < 0.15), probs[8:11]
    assert not np.isnan(history[-1]["val_auc"])  # the validation AUC ignores the lesion-free pair


def test_simulated_dataset_with_lesion_free_pairs(analytic, analytic_template):
    from SiamesePainCAMLib import datasets as ds
    from SiamesePainCAMLib.training import NO_LESION

    data, truth = ds.simulate_dataset([analytic], 3, analytic_template, seed=4, lesion_free_every=3)
    assert list(data.labels) == [1.0, 0.0, NO_LESION]
    assert [t.painful_side for t in truth] == ["right", "left", "none"] and truth[2].lesion_kind == "none"
    pair = sim.simulate_pair(analytic, np.random.default_rng([4, 0, 2]), "x", "right", no_lesion=True)
    assert pair.painful_side is None and pair.painful is None and pair.label == NO_LESION
    assert not pair.left.lesion_mask.array.any() and not pair.right.lesion_mask.array.any()
