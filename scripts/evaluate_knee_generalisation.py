"""Cartilage models on three families of simulated MESE (phantom, randomised, independent).

Prints, per model and family (and per robustness condition with --conditions), the mean and
minimum Dice and the subregional mean-T2 MAE (model mask vs true mask) on the knees held out
from training, and writes the per-case rows to --csv. The README's generalisation and
robustness tables come from this script:

    .venv/bin/python scripts/evaluate_knee_generalisation.py --models knee-femoral-cartilage-mese NEW_MODEL \\
        --families phantom randomised independent --per-subject 2
    .venv/bin/python scripts/evaluate_knee_generalisation.py --models ... --conditions all
    .venv/bin/python scripts/evaluate_knee_generalisation.py --families phantom independent --precisions float32 bfloat16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "KneeT2Segment"):
    sys.path.insert(0, str(p))

HELD_OUT = ("9002817", "9004175", "9005132")  # the domain-randomised model's test split: never trained on by either model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["knee-femoral-cartilage-mese"], help="model ids or .pt files")
    ap.add_argument("--families", nargs="+", default=["independent"], choices=("phantom", "randomised", "independent"))
    ap.add_argument("--conditions", nargs="*", default=None, help="robustness conditions ('all' for every one)")
    ap.add_argument("--labelmaps", default=str(ROOT.parent / "shared" / "data" / "knee_labelmaps"))
    ap.add_argument("--subjects", nargs="+", default=list(HELD_OUT))
    ap.add_argument("--per-subject", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--csv", default="")
    ap.add_argument("--precisions", nargs="+", default=["float32"], choices=("float32", "bfloat16"),
                    help="the network's arithmetic; several: each model in each (same cases)")
    args = ap.parse_args(argv)

    from KneeT2SegmentLib import generalisation as gen
    from KneeT2SegmentLib.segmentation import load_model

    paths = [Path(args.labelmaps) / f"{s}.nii.gz" for s in args.subjects]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"label maps not found: {', '.join(missing)} (needs ../shared/data/knee_labelmaps)", file=sys.stderr)
        return 2
    runs = [(f, None) for f in args.families]
    if args.conditions is not None:
        names = list(gen.CONDITIONS) if args.conditions in ([], ["all"]) else args.conditions
        runs = [("independent", c) for c in names]
    loaded = {m: load_model(m, "cpu") for m in args.models}
    models = {(m, p): loaded[m] for m in args.models for p in args.precisions}
    rows = []
    print(f"{'family':<12} {'condition':<18} " + " ".join(f"{(Path(m).stem[:28] + ' ' + p):>40}" for m, p in models))
    for family, condition in runs:
        t0 = time.time()
        cases = list(gen.family_cases(paths, family, args.per_subject, args.seed, condition))
        cells = []
        for (m, precision), model in models.items():
            res = gen.evaluate(model, cases, precision=precision)
            s = gen.summary(res)
            cells.append(f"Dice {s['mean_dice']:.3f} (min {s['min_dice']:.3f}), T2 MAE {s['subregion_t2_mae_ms']:.2f} ms")
            for r in res:
                rows.append([m, precision, family, condition or "", r.name, f"{r.dice:.4f}", r.error])
        print(f"{family:<12} {condition or '-':<18} " + " ".join(f"{c:>40}" for c in cells)
              + f"   [{len(cases)} cases, {time.time() - t0:.0f} s]", flush=True)
    if args.csv:
        from mskquant.csvio import write_rows_csv

        write_rows_csv(Path(args.csv), ["model", "precision", "family", "condition", "case", "dice", "error"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
