"""The swapped-knees check of SiamesePainCAM refuses only on strong evidence (issues 9 and 15).

The template-profile margin of correctly labelled knees was measured on two families of knees
never trained on (scripts/evaluate_pain_generalisation.py): project simulator +0.014 +- 0.006,
the independent family +0.003 +- 0.005 (min -0.009), another simulator down to -0.012. Exchanged knees give the same values with the sign
flipped, so this evidence alone cannot tell a swap from another simulator's look: it warns.
"""

import pytest

from SiamesePainCAMLib.pipeline import LATERALITY_WARN_MARGIN, laterality_decision


@pytest.mark.parametrize("margins", [(-0.005, -0.012), (-0.012, -0.006), (-0.02, -0.03), (0.004, 0.01)])
def test_margins_of_correct_knees_never_refuse(margins):
    refuse, warnings = laterality_decision(dict(zip(("left", "right"), margins)))
    assert refuse is None
    assert len(warnings) == sum(m < -LATERALITY_WARN_MARGIN for m in margins)
    for w in warnings:
        assert "weak evidence" in w and "slice order reversed" in w


def test_both_knees_far_outside_the_correct_spread_are_refused():
    refuse, _ = laterality_decision({"left": -0.06, "right": -0.05})
    assert refuse and "exchange --left and --right" in refuse
    refuse, warnings = laterality_decision({"left": -0.06, "right": 0.01})  # one knee alone: a warning
    assert refuse is None and len(warnings) == 1
