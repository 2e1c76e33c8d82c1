"""Issue 15: the bundled cartilage model on the independent test family (never trained or tuned on).

Knees held out of training (the model's test split), one independent-family MESE series each
(EPG signal with B1 inhomogeneity, other anatomy rules, k-space acquisition with coils, Gibbs
ringing and ghosts, random protocol). The domain-randomised model must beat the first,
phantom-trained model on this family. Run with ``-s`` for the figures (Dice and subregional T2
MAE); the larger evaluation is scripts/evaluate_knee_generalisation.py (README).
"""

import pytest

from KneeT2SegmentLib import generalisation as gen
from KneeT2SegmentLib.checkpoint import DEFAULT_MODEL_ID
from KneeT2SegmentLib.segmentation import load_model

PHANTOM_TRAINED = "knee-femoral-cartilage-mese-phantom"


@pytest.fixture(scope="module")
def independent_results(knee_labelmap_dir):
    from KneeT2SegmentLib.checkpoint import read_checkpoint
    from mskquant.models import ModelStore

    split = read_checkpoint(ModelStore().ensure(DEFAULT_MODEL_ID)[0]).training["split_subjects"]
    assert len(split["test"]) >= 3 and not set(split["test"]) & set(split["train"] + split["validation"])
    paths = [knee_labelmap_dir / f"{s}.nii.gz" for s in split["test"]]
    cases = list(gen.family_cases(paths, "independent", 1, seed=2026))
    out = {}
    for model_id in (DEFAULT_MODEL_ID, PHANTOM_TRAINED):
        res = gen.evaluate(load_model(model_id, "cpu"), cases)
        out[model_id] = res
        print(f"\n{model_id}: " + ", ".join(f"{r.name} Dice {r.dice:.3f}" for r in res)
              + f"; {gen.summary(res)}")
    return out


def test_bundled_model_beats_the_phantom_trained_model_on_the_independent_family(independent_results):
    """Measured (README): 0.625 mean Dice on 6 independent-family scans vs 0.471 for the phantom-
    trained model. Issue 15's target (>= 0.88, no knee < 0.85) is not met yet: this guards the
    progress, it does not claim the target."""
    new = gen.summary(independent_results[DEFAULT_MODEL_ID])
    old = gen.summary(independent_results[PHANTOM_TRAINED])
    assert new["failed"] == 0
    assert new["mean_dice"] >= 0.55
    assert new["min_dice"] >= 0.40
    assert new["mean_dice"] >= old["mean_dice"] + 0.05
