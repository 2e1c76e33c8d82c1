"""The SiamesePainCAM part of ``mskquant demo``: simulated left/right pairs whose painful
side and lesion are known, run through the Slicer logic with the bundled demo model.

* always: pairs simulated from the analytic knee (no data needed) — the demo model's test
  split, but part of its alignment template, so this checks the plumbing, not generalisation;
* with ``../shared``: pairs from the knee label maps held out of the demo model's training
  (:data:`datasets.HELD_OUT_SUBJECTS`) — AUC and CAM pointing accuracy on unseen anatomy.
"""

from __future__ import annotations

import numpy as np

from mskquant import mrml
from mskquant.headless import create_headless_runtime

from . import simulator as sim
from .datasets import HELD_OUT_SUBJECTS, load_anatomies
from .evaluation import OUTCOME_FIELDS, outcome_of, outcome_rows, summarise
from .figures import write_overlay_png
from .logic import PainCAMLogic

PAIRS_ANALYTIC = 4
PAIRS_PER_HELD_OUT_KNEE = 3


def _run_pairs(ctx, logic, anatomies, n_pairs, dataset, out, seed, progress):
    outcomes = []
    total = len(anatomies) * n_pairs
    for a, anatomy in enumerate(anatomies):
        for p in range(n_pairs):
            n = a * n_pairs + p
            prog = progress.sub(n / total, (n + 1) / total)
            prog(0.0, f"Simulating {anatomy.name} pair {p + 1}")
            rng = np.random.default_rng([seed, a, p])
            pair = sim.simulate_pair(anatomy, rng, f"{anatomy.name}-{p}", painful_side="right" if n % 2 == 0 else "left")
            logic.rt.clear()
            left = mrml.volume_from_image(logic.rt, pair.left.image, f"{pair.subject} left")
            right = mrml.volume_from_image(logic.rt, pair.right.image, f"{pair.subject} right")
            res = logic.run(left, right, progress=prog.sub(0.2, 1.0), name=pair.subject)
            a_res = res.analysis
            outcomes.append(outcome_of(pair, a_res))
            if p == 0:
                write_overlay_png(a_res, out / f"{dataset}_{pair.subject}_overlay.png")
    mrml.write_rows_csv(out / f"{dataset}_pairs.csv", OUTCOME_FIELDS, outcome_rows(outcomes))
    s = summarise(outcomes)
    label = ("analytic knee (the test split of the demo model's training, part of its template)" if dataset == "analytic"
             else "held-out knee label maps")
    for key, unit in (("accuracy", ""), ("auc", ""), ("pointing_accuracy", ""), ("median_peak_to_lesion_mm", "mm")):
        value = s[key]
        ctx.result("SiamesePainCAM", f"simulated pairs, {label}", key.replace("_", " "),
                   None if value != value else round(value, 3), unit, f"n={s['n_pairs']} pairs, demo model")
    return outcomes


def run_demo(ctx) -> None:
    out = ctx.folder("pain_cam")
    rt = create_headless_runtime()
    logic = PainCAMLogic(rt)
    ctx.progress(0.0, "SiamesePainCAM: analytic knee")
    analytic = sim.build_anatomy(sim.analytic_knee_labels(), "analytic", seed=99)
    shared = ctx.shared / "knee_labelmaps" if ctx.shared is not None else None
    with_shared = shared is not None and shared.is_dir()
    _run_pairs(ctx, logic, [analytic], PAIRS_ANALYTIC, "analytic", out, 7,
               ctx.progress.sub(0.0, 0.4 if with_shared else 1.0))
    if not with_shared:
        return
    held_out = load_anatomies(shared, subjects=HELD_OUT_SUBJECTS, progress=ctx.progress.sub(0.4, 0.5))
    _run_pairs(ctx, logic, held_out, PAIRS_PER_HELD_OUT_KNEE, "heldout", out, 11, ctx.progress.sub(0.5, 1.0))
