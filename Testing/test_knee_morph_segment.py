"""Knee morphometry segmentation: training loop, bundled ensemble on a held-out knee, refused input."""

import numpy as np
import pytest

from mskquant.errors import InputError
from mskquant.image import Geometry, Image
from mskquant.metrics import dice
from mskquant.paths import resources_dir, shared_data_dir
from KneeT2SegmentLib import anatomy as an
from KneeT2SegmentLib import dess
from KneeT2SegmentLib.morphometry import segment as sg
from KneeT2SegmentLib.morphometry import training as tr

MODEL_FILE = resources_dir() / "Models" / "knee-morphometry-dess.pt"
# Dice floors on a 256 x 256 x 24 crop (0.4 x 0.4 x 0.7 mm) of held-out knee 9002817, plain DESS
# look; bundled model 0.2 measured femur 0.983, femoral cartilage 0.937, tibia 0.924, tibial
# cartilage 0.391 (1,014 voxels at the crop's edge), patella 0.975, patellar cartilage 0.950
# (0.1: 0.968, 0.857, 0.885, 0.401, 0, 0). Full evaluation: the model card.
FLOORS = {1: 0.95, 2: 0.88, 3: 0.88, 4: 0.3, 5: 0.93, 6: 0.9}


def test_training_loop_lowers_the_loss_and_resumes(tmp_path):
    anat = dess.prepare_dess_anatomy(an.analytic_knee((0.8, 0.5, 0.5)), "analytic")
    config = tr.MorphTrainingConfig(members=2, features=(8, 16), steps=40, batch_size=6, patch=64, bank_size=2,
                                    slices_per_slab=4, refresh_every=1000, validate_every=10, learning_rate=1e-2,
                                    cartilage_centre_fraction=0.5)
    res = tr.train_ensemble([anat], None, tmp_path, config, log=lambda m: None)
    losses = [row["loss"] for row in res.history]
    assert res.steps == 40 and len(losses) == 4
    assert losses[-1] < 0.9 * losses[0] and losses[-1] < losses[1], losses  # measured 2.78 -> 2.37
    ensemble = sg.read_ensemble_file(res.best_path)
    assert len(ensemble["members"]) == 2 and ensemble["format"] == sg.FORMAT
    config.steps = 50
    again = tr.train_ensemble([anat], None, tmp_path, config, log=lambda m: None)
    assert again.steps == 50 and len(again.history) == 5  # resumed from step 40, not restarted


def test_patches_are_centred_on_the_patella_as_often_as_asked():
    """The patella has no contrast of its own: training forces patches onto it (patella_fraction)."""
    rng = np.random.default_rng(0)
    labels = np.zeros((6, 200, 200), np.uint8)
    labels[:, 20:180, 20:90] = 1  # femur on every slice
    labels[:, 100:104, 20:90] = 2
    labels[4, 150:170, 170:190] = 5  # a small patella on one slice, far from the rest
    labels[4, 150:170, 166:170] = 6
    image = rng.normal(size=labels.shape).astype(np.float32)
    with_patella = []
    for fraction in (0.0, 1.0):
        _, ys = tr.patch_batch(image, labels, rng, 200, 48, 0.6, fraction)
        with_patella.append(np.mean([(y == 5).any() or (y == 6).any() for y in ys]))
    assert with_patella[1] == 1.0 and with_patella[0] < 0.1, with_patella
    _, ys = tr.patch_batch(image, np.where(labels >= 5, 0, labels), rng, 20, 48, 0.6, 1.0)  # no patella: no error
    assert not (ys >= 5).any()


def test_fine_tuning_starts_from_the_members_of_a_model_file(tmp_path):
    import torch

    anat = dess.prepare_dess_anatomy(an.analytic_knee((0.8, 0.5, 0.5)), "analytic")
    config = tr.MorphTrainingConfig(members=2, features=(8, 16), steps=2, batch_size=2, patch=64, bank_size=1,
                                    slices_per_slab=4, refresh_every=1000, validate_every=2, learning_rate=1e-2)
    first = tr.train_ensemble([anat], None, tmp_path / "a", config, log=lambda m: None)
    source = sg.read_ensemble_file(first.best_path)["members"]
    config.learning_rate, config.seed = 1e-12, 5  # other initial weights; the steps barely move them
    logs = []
    tuned = tr.train_ensemble([anat], None, tmp_path / "b", config, log=logs.append, init_from=first.best_path)
    for a, b in zip(source, sg.read_ensemble_file(tuned.best_path)["members"]):
        for k, v in a["state_dict"].items():
            if "running_" not in k and v.dtype.is_floating_point:  # batch-norm statistics follow the batches
                torch.testing.assert_close(b["state_dict"][k], v, atol=1e-6, rtol=0)
    assert any("Starting from the members of" in m for m in logs)
    with pytest.raises(InputError, match="architecture differs"):
        tr.train_ensemble([anat], None, tmp_path / "c", tr.MorphTrainingConfig(
            members=2, features=(4, 8), steps=1, batch_size=2, patch=64, bank_size=1, slices_per_slab=4),
            log=lambda m: None, init_from=first.best_path)


def test_stray_bone_islands_are_removed():
    labels = np.zeros((30, 40, 40), np.uint8)
    labels[2:20, 5:30, 5:30] = 1  # femur
    labels[25:28, 35:38, 35:38] = 1  # a stray femur island (27 voxels), not touching the femur
    labels[20:22, 5:30, 5:30] = 2  # femoral cartilage: left alone, whatever its pieces
    labels[0:2, 35:38, 0:3] = 2
    labels[23:30, 0:10, 0:10] = 3  # tibia, one piece
    before = labels.copy()
    removed = sg.remove_bone_islands(labels)
    assert removed == {"femur": 27, "tibia": 0, "patella": 0}
    assert (labels[25:28, 35:38, 35:38] == 0).all()
    changed = labels != before
    assert changed.sum() == 27 and (before[changed] == 1).all()
    halves = np.zeros((10, 40, 40), np.uint8)  # a bone split in two: the default keeps the larger part only,
    halves[:, :16] = 3  # a lower fraction keeps both
    halves[:, 22:] = 3
    split = halves.copy()
    assert sg.remove_bone_islands(split) == {"femur": 0, "tibia": 10 * 16 * 40, "patella": 0}
    assert sg.remove_bone_islands(halves, 0.25)["tibia"] == 0 and (halves == 3).sum() == 10 * 34 * 40


def test_split_keeps_test_validation_and_held_out_knees_apart(tmp_path):
    from pathlib import Path

    names = ["9002817.nii.gz", "9003430.nii.gz", "9055361_00m.nii.gz", "9014797_00m.nii.gz", "9014797_72m.nii.gz"]
    split = tr.split_label_maps([Path(n) for n in names])
    assert [p.name for p in split["test"]] == ["9002817.nii.gz"]
    assert [p.name for p in split["validation"]] == ["9003430.nii.gz"]
    assert [p.name for p in split["held_out"]] == ["9055361_00m.nii.gz"]
    assert [p.name for p in split["train"]] == ["9014797_00m.nii.gz", "9014797_72m.nii.gz"]


@pytest.mark.parametrize("shape,spacing,match", [((1, 64, 64), (0.4, 0.4, 0.7), "2D"),
                                                 ((20, 64, 64), (0.4, 0.4, 3.0), "thick"),
                                                 ((20, 64, 3), (0.4, 0.4, 0.7), "2D")])
def test_refuses_2d_and_thick_slices(shape, spacing, match):
    g = Geometry.from_spacing(shape[::-1], spacing)
    with pytest.raises(InputError, match=match):
        sg.segment_knee(Image(np.ones(shape, np.float32), g), model_id=str(MODEL_FILE))


def test_refuses_a_series():
    g = Geometry.from_spacing((32, 32, 32), (0.4, 0.4, 0.7))
    with pytest.raises(InputError, match="series|dimensions"):
        sg.segment_knee(Image(np.ones((2, 32, 32, 32), np.float32), g), model_id=str(MODEL_FILE))


@pytest.fixture(scope="module")
def held_out_crop():
    shared = shared_data_dir()
    path = shared / "knee_labelmaps" / "9002817.nii.gz" if shared else None
    if path is None or not path.is_file():
        pytest.skip("needs ../shared/data/knee_labelmaps (held-out knee 9002817)")
    if not MODEL_FILE.is_file():
        pytest.skip("bundled model Resources/Models/knee-morphometry-dess.pt absent")
    anat = dess.load_dess_anatomy(path)
    c = anat.femoral_centroid_ras()
    # OAI-like layout (i -> A, j -> S, k -> R): 256 x 256 x 24, 0.4 x 0.4 x 0.7 mm about the joint
    d = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    sp = np.array([0.4, 0.4, 0.7])
    shape = np.array([256, 256, 24])
    g = Geometry.from_spacing(tuple(shape), sp, c - d @ ((shape - 1) / 2.0 * sp) + np.array([0, 0, -8.0]), d)
    return dess.simulate_dess(anat, np.random.default_rng(11), geometry=g, randomise=False)


def test_bundled_ensemble_segments_a_held_out_knee(held_out_crop):
    vol = held_out_crop
    res = sg.segment_knee(vol.image, model_id=str(MODEL_FILE), device="cpu")
    assert res.labels.geometry.same_grid(vol.image.geometry) and not res.resampled
    scores = {c: dice(res.labels.array == c, vol.labels.array == c) for c in FLOORS}
    for c, floor in FLOORS.items():
        assert scores[c] >= floor, scores
    # the same scan stored in another voxel order gives the same labels
    arr = np.ascontiguousarray(np.flip(np.transpose(vol.image.array, (2, 1, 0)), axis=0))
    m = vol.image.geometry.ijk_to_ras
    m2 = np.eye(4)  # new i = old k, new j = old j, new k = old i reversed
    m2[:3, 0], m2[:3, 1], m2[:3, 2] = m[:3, 2], m[:3, 1], -m[:3, 0]
    m2[:3, 3] = m[:3, 3] + m[:3, 0] * (vol.image.array.shape[2] - 1)
    g2 = Geometry((arr.shape[2], arr.shape[1], arr.shape[0]), m2)
    res2 = sg.segment_knee(Image(arr, g2), model_id=str(MODEL_FILE), device="cpu")
    back = np.transpose(np.flip(res2.labels.array, axis=0), (2, 1, 0))
    assert (back == res.labels.array).mean() > 0.999
