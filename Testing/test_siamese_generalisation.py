"""Issue 15 acceptance for SiamesePainCAM on images made differently: the bundled demo model on
left/right pairs of the independent test family (mskquant.testfamily: its own tissue rules and
contrast tables per knee, k-space acquisition with 4 coils, Gibbs ringing and ghosts, the left
knee the mirror image of the right), from the label maps of the subjects held out of the model's
training and template. The test family is never used to train or to tune anything.

A CI-sized sample (8 pairs: 6 with a lesion, 2 without); the README's larger evaluation is
``scripts/evaluate_pain_generalisation.py``. Needs ../shared (skips without it).
"""

from __future__ import annotations

import numpy as np
import pytest

from mskquant.errors import InputError

MAPS = ("9055361_00m", "9055361_96m", "9057479_00m", "9057479_36m")  # the pain model's held-out subjects
# (label map, painful side, lesion kind): both sides, both kinds (bone-marrow lesions where the map
# has bone lesions, labels 7-9: not 9057479_00m), and two pairs without a lesion
SAMPLE = [(MAPS[0], "right", "effusion"), (MAPS[1], "left", "effusion"), (MAPS[1], "right", "bml"),
          (MAPS[3], "left", "bml"), (MAPS[2], "left", "effusion"), (MAPS[0], "right", "bml"),
          (MAPS[2], None, None), (MAPS[3], None, None)]
SEED = 2027
JOINT_MARGIN_MM = 10.0  # the tibial cartilage centroid at least this far inside the 105 mm crop
# Targets not met yet (README "SiamesePainCAM on images made differently"): strict, so a model or
# pre-processing that meets one fails the suite until its mark is removed.
OPEN_15 = "issue 15 open: "


@pytest.fixture(scope="module")
def outcomes(knee_labelmap_dir):
    from mskquant.device import select_device
    from mskquant.imageio import read_image
    from mskquant.models import ModelStore
    from mskquant.testfamily import cases as tf

    from SiamesePainCAMLib.evaluation import peak_to_mask_mm
    from SiamesePainCAMLib.pipeline import analyse_pair, load_pain_model
    from SiamesePainCAMLib.preprocessing import CROP_MM, crop_position_mm

    store = ModelStore()
    spec = store.registry.get("siamese-pain-demo")
    model = load_pain_model(store.ensure(spec.id)[0], spec.architecture, select_device("cpu"), spec.id)
    labels = {m: read_image(knee_labelmap_dir / f"{m}.nii.gz") for m in MAPS}
    rows = []
    for n, (m, side, kind) in enumerate(SAMPLE):
        pair = tf.pain_pair(labels[m], np.random.default_rng([SEED, n]), side, kind)
        row = {"pair": f"{m}-{n}", "side": side, "kind": kind, "refused": "", "p": float("nan"),
               "peak_to_lesion_mm": float("nan"), "joint_inside_mm": [], "localiser_error_mm": []}
        try:
            r = analyse_pair(model, pair.left.image, pair.right.image)
        except InputError as exc:
            row["refused"] = str(exc)
            rows.append(row)
            continue
        row["p"] = r.p_right_painful
        if side:
            knee = pair.right if side == "right" else pair.left
            row["peak_to_lesion_mm"] = peak_to_mask_mm(r.cam[side], knee.lesion_mask.array, knee.image.geometry)
        for s, knee in (("left", pair.left), ("right", pair.right)):
            q = crop_position_mm(r.prepared[s], knee.joint_centre_ras)
            row["joint_inside_mm"].append(CROP_MM / 2 - float(np.abs(q).max()))
            found = np.array(r.prepared[s].joint["knee"]["joint_uv_mm"])
            truth = np.array([-knee.joint_centre_ras[2], -knee.joint_centre_ras[1]])
            row["localiser_error_mm"].append(float(np.linalg.norm(found - truth)))
        print(f"{row['pair']}: painful {side} ({kind}) p_right {row['p']:.3f} peak-to-lesion "
              f"{row['peak_to_lesion_mm']:.1f} mm, joint inside the crop by "
              f"{', '.join(f'{v:.0f}' for v in row['joint_inside_mm'])} mm, localiser error "
              f"{', '.join(f'{v:.1f}' for v in row['localiser_error_mm'])} mm")
        rows.append(row)
    return rows


def test_no_valid_pair_is_refused(outcomes):
    refused = [(r["pair"], r["refused"]) for r in outcomes if r["refused"]]
    assert not refused


def test_joint_localiser_finds_the_joint_on_every_knee(outcomes):
    """The localiser (trained on the project's randomised knees only) within 10 mm of the tibial
    cartilage centroid of every knee of the independent family."""
    errors = [v for r in outcomes for v in r["localiser_error_mm"]]
    assert len(errors) == 2 * len(SAMPLE)
    assert max(errors) <= 10.0, errors


def test_the_crop_holds_the_femorotibial_joint_on_every_knee(outcomes):
    """Issue 15, 4a: with the joint localiser bounding the template alignment (before it: one knee's
    joint 18 mm outside its crop, two within 3-6 mm of the edge on this sample)."""
    inside = [v for r in outcomes for v in r["joint_inside_mm"]]
    assert len(inside) == 2 * len(SAMPLE)
    assert min(inside) >= JOINT_MARGIN_MM, inside


@pytest.mark.xfail(strict=True, reason=OPEN_15 + "demo model 0.2.0: AUC 0.56, pointing 0.33 on this sample")
def test_painful_side_auc_and_cam_pointing(outcomes):
    from mskquant.metrics import roc_auc

    lesion = [r for r in outcomes if r["side"] and not r["refused"]]
    labels = np.array([r["side"] == "right" for r in lesion], int)
    auc = roc_auc(labels, np.array([r["p"] for r in lesion]))
    pointing = np.mean([r["peak_to_lesion_mm"] <= 10.0 for r in lesion])
    print(f"independent family: AUC {auc:.3f}, CAM maximum within 10 mm of the lesion {pointing:.2f}")
    assert auc >= 0.90
    assert pointing >= 0.80


@pytest.mark.xfail(strict=True, reason=OPEN_15 + "lesion-free pairs lean to 'left painful' (never trained on)")
def test_pairs_without_a_lesion_are_a_coin_toss(outcomes):
    free = [r["p"] for r in outcomes if r["side"] is None and not r["refused"]]
    assert len(free) == 2
    assert all(0.35 <= p <= 0.65 for p in free), free
