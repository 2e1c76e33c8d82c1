"""Where a cartilage model's errors lie on one family of simulated MESE: threshold, shift or misses.

Per case of the held-out knees: Dice of the probability map at p >= 0.02 / 0.05 / 0.2 / 0.5 (no
slice minimum: is the threshold the lever?), the best Dice over whole-voxel shifts of the mask
(±1 slice, ±4 pixels: is the mask misplaced?), the share of the true mask missed and of its
interior (the truth eroded by one voxel: thinner masks or missed cartilage?) and the volume ratio:

    .venv/bin/python scripts/diagnose_knee_errors.py --model knee-femoral-cartilage-mese --family independent
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "KneeT2Segment"):
    sys.path.insert(0, str(p))

HELD_OUT = ("9002817", "9004175", "9005132")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def best_shift(mask: np.ndarray, truth: np.ndarray):
    best = (dice(mask, truth), (0, 0, 0))
    for dk in (-1, 0, 1):
        for dj in range(-4, 5):
            for di in range(-4, 5):
                d = dice(np.roll(mask, (dk, dj, di), axis=(0, 1, 2)), truth)
                if d > best[0]:
                    best = (d, (dk, dj, di))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="knee-femoral-cartilage-mese")
    ap.add_argument("--family", default="independent", choices=("phantom", "randomised", "independent"))
    ap.add_argument("--per-subject", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--labelmaps", default=str(ROOT.parent / "shared" / "data" / "knee_labelmaps"))
    args = ap.parse_args(argv)

    from scipy import ndimage

    from KneeT2SegmentLib import generalisation as gen
    from KneeT2SegmentLib.segmentation import load_model, predict_probability

    paths = [Path(args.labelmaps) / f"{s}.nii.gz" for s in HELD_OUT]
    if not all(p.is_file() for p in paths):
        print(f"label maps not found in {args.labelmaps} (needs ../shared/data/knee_labelmaps)", file=sys.stderr)
        return 2
    model = load_model(args.model, "cpu")
    print(f"{'case':<28} {'p>=0.02':>7} {'0.05':>6} {'0.2':>6} {'0.5':>6} {'shifted':>8} {'shift':>11} "
          f"{'missed':>7} {'interior':>8} {'volume':>7}")
    for case in gen.family_cases(paths, args.family, args.per_subject, args.seed):
        p = predict_probability(model, case.series)
        truth = np.asarray(case.truth, bool)
        d = [dice(p >= t, truth) for t in (0.02, 0.05, 0.2, 0.5)]
        mask = p >= 0.05
        shifted, shift = best_shift(mask, truth)
        interior = truth & ndimage.binary_erosion(truth)
        print(f"{case.name:<28} {d[0]:7.3f} {d[1]:6.3f} {d[2]:6.3f} {d[3]:6.3f} {shifted:8.3f} {str(shift):>11} "
              f"{(truth & ~mask).sum() / truth.sum():7.2f} {(interior & ~mask).sum() / max(interior.sum(), 1):8.2f} "
              f"{mask.sum() / truth.sum():7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
