"""V_HI comparison tools as MRML table and plot nodes (Hepburn et al. 2.7): two segments of one
scan, Bland-Altman across subjects, a subject's change after treatment. MRML layer, no Qt;
mixed into :class:`.logic.VHILogic`, which provides ``self.rt``."""

from __future__ import annotations

from typing import Dict, Sequence

from mskquant import mrml
from mskquant.image import Geometry

from .comparison import Change, agreement, compare_masks
from .inflammation import VHI


class ComparisonTables:
    def compare_segments(self, seg_a, segment_a: str, seg_b, segment_b: str, geometry: Geometry,
                         name: str = "V_HI comparison"):
        """Dice, Jaccard, volume similarity and both volumes of two segments of one scan -> table node."""
        c = compare_masks(mrml.segment_mask(seg_a, segment_a, geometry), mrml.segment_mask(seg_b, segment_b, geometry),
                          geometry)
        table = mrml.table_from_columns(self.rt, name, {
            "a": [f"{seg_a.GetName()}: {segment_a}"], "b": [f"{seg_b.GetName()}: {segment_b}"],
            "dice": [c.dice], "jaccard": [c.jaccard], "volume_similarity": [c.volume_similarity],
            "voxels_a": [c.voxels_a], "voxels_b": [c.voxels_b], "volume_a_ml": [c.volume_a_ml],
            "volume_b_ml": [c.volume_b_ml]})
        return c, table

    def agreement_table(self, subjects: Sequence[str], vhi_a_ml: Sequence[float], vhi_b_ml: Sequence[float],
                        name: str = "V_HI Bland-Altman"):
        """Bland-Altman across subjects -> (statistics, table node, plot chart node).

        The chart shows difference (B - A) against mean with the mean difference and the 95 %
        limits of agreement as lines, as in the paper's Figure 7.
        """
        ba = agreement(vhi_a_ml, vhi_b_ml)
        n = len(subjects)
        table = mrml.table_from_columns(self.rt, name, {
            "subject": list(subjects), "a_ml": list(map(float, vhi_a_ml)), "b_ml": list(map(float, vhi_b_ml)),
            "mean_ml": list(map(float, ba.means)), "difference_ml": list(map(float, ba.differences)),
            "mean_difference_ml": [ba.mean_difference] * n, "lower_limit_ml": [ba.lower_limit] * n,
            "upper_limit_ml": [ba.upper_limit] * n})
        chart = mrml.plot_chart(self.rt, table, "mean_ml", ["difference_ml"], f"{name} chart",
                                "mean of A and B (mL)", "B - A (mL)", kind="scatter")
        limits = ["mean_difference_ml", "lower_limit_ml", "upper_limit_ml"]
        mrml.add_plot_series(self.rt, chart, table, "mean_ml", limits, name, kind="line")
        return ba, table, chart

    def change_table(self, subject: str, pre: Dict[str, VHI], post: Dict[str, VHI], name: str = "V_HI change"):
        """A subject's V_HI before and after treatment (sensitive and conservative) -> table node."""
        rows = {"subject": [], "mask": [], "pre_ml": [], "post_ml": [], "change_ml": [], "change_percent": [],
                "improved": []}
        changes = {}
        for key in ("sensitive", "conservative"):
            ch = Change(pre[key].volume_ml, post[key].volume_ml)
            changes[key] = ch
            for col, val in (("subject", subject), ("mask", key), ("pre_ml", ch.pre_ml), ("post_ml", ch.post_ml),
                             ("change_ml", ch.change_ml), ("change_percent", ch.change_percent),
                             ("improved", int(ch.improved))):
                rows[col].append(val)
        return changes, mrml.table_from_columns(self.rt, name, rows)
