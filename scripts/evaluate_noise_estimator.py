"""The background noise estimator on correct inputs and on inputs without air.

For MESE series of two families (the project's phantom: one coil, Rician; the independent test
family: 4 coils summed as root-sum-of-squares, phase-encode ghosts, Gibbs ringing) and every
robustness condition of the independent family, prints the background evidence the estimator
judges (echo-1/last-echo mean, mean/RMS), its decision (ok / warn / refuse) and the estimated
over the true (effective) noise SD. The last columns crop each series to its central third in
every direction (mostly or only tissue) and show what the estimator makes of that. The refusal limits in
KneeT2SegmentLib/t2fit.py (DECAY_REFUSE, MEAN_RMS_REFUSE) are set from these spreads:

    .venv/bin/python scripts/evaluate_noise_estimator.py [--per-subject 1] [--csv FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "KneeT2Segment"):
    sys.path.insert(0, str(p))

SUBJECTS = ("9002817", "9004175", "9005132")


def judge(echoes):
    from KneeT2SegmentLib.t2fit import estimate_noise_sigma
    from mskquant.errors import InputError

    try:
        est = estimate_noise_sigma(echoes)
    except InputError as e:
        return None, str(e)
    return est, ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labelmaps", default=str(ROOT.parent / "shared" / "data" / "knee_labelmaps"))
    ap.add_argument("--subjects", nargs="+", default=list(SUBJECTS))
    ap.add_argument("--per-subject", type=int, default=1)
    ap.add_argument("--conditions", nargs="*", default=None, help="independent-family conditions (default: all)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--csv", default="")
    args = ap.parse_args(argv)

    from KneeT2SegmentLib import generalisation as gen

    paths = [Path(args.labelmaps) / f"{s}.nii.gz" for s in args.subjects]
    if not all(p.is_file() for p in paths):
        print("knee label maps not found (needs ../shared/data/knee_labelmaps)", file=sys.stderr)
        return 2
    runs = [("phantom", None), ("independent", None)]
    runs += [("independent", c) for c in (args.conditions if args.conditions is not None else gen.CONDITIONS)]
    rows = []
    print(f"{'case':<44} {'decay':>6} {'mean/RMS':>8} {'decision':>8} {'sigma est/true':>15} {'central third: decay, decision, sigma est/true':>40}")
    for family, condition in runs:
        for case in gen.family_cases(paths, family, args.per_subject, args.seed, condition):
            echoes = case.series.echoes.array
            est, err = judge(echoes)
            decision = "refuse" if est is None else ("warn" if est.warnings else "ok")
            ratio = float("nan") if est is None else est.sigma / case.sigma
            # no air: the central third of the knee in every direction (tissue only)
            t, k, j, i = echoes.shape
            core = echoes[:, k // 3:2 * k // 3, j // 3:2 * j // 3, i // 3:2 * i // 3]
            core_est, core_err = judge(core)
            core_decision = "refuse" if core_est is None else ("warn" if core_est.warnings else "ok")
            core_decay = core_est.echo_decay if core_est is not None else _decay_from(core_err)
            core_ratio = float("nan") if core_est is None else core_est.sigma / case.sigma
            decay = est.echo_decay if est is not None else _decay_from(err)
            mean_rms = est.mean_rms if est is not None else float("nan")
            print(f"{case.name:<44} {decay:6.2f} {mean_rms:8.3f} {decision:>8} {ratio:15.3f} "
                  f"{core_decay:>10.2f} {core_decision:>7} {core_ratio:7.3f}", flush=True)
            rows.append([family, condition or "", case.name, f"{decay:.4f}", f"{mean_rms:.4f}", decision,
                         f"{ratio:.4f}", f"{core_decay:.4f}", core_decision, f"{core_ratio:.4f}"])
    if args.csv:
        from mskquant.csvio import write_rows_csv

        write_rows_csv(Path(args.csv), ["family", "condition", "case", "echo_decay", "mean_rms", "decision",
                                        "sigma_ratio", "central_echo_decay", "central_decision",
                                        "central_sigma_ratio"], rows)
    return 0


def _decay_from(message: str) -> float:
    import re

    m = re.search(r"last-echo mean ([0-9.]+)", message)
    return float(m.group(1)) if m else float("nan")


if __name__ == "__main__":
    sys.exit(main())
