"""Knee morphometry segmentation on held-out knees: Dice per tissue and bone mean surface distance.

Two image families per test knee (never trained or tuned on): (a) the project's DESS-like
simulation (KneeT2SegmentLib.dess, the plain DESS look on a random sagittal grid; with
--randomised also a domain-randomised look) and (b) the independent test family's DESS case
(mskquant.testfamily.cases.dess_case: its own anatomy rules, steady-state signal, slice
profile, Fourier truncation, coils, ghosts). Prints one row per case and the mean per family;
--csv writes the rows. The model card's tables come from:

    .venv/bin/python scripts/evaluate_knee_morph.py --model knee-morphometry-dess
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "KneeT2Segment"):
    sys.path.insert(0, str(p))

TARGETS = {"femur": 0.97, "femoral cartilage": 0.88, "tibia": 0.97, "tibial cartilage": 0.86, "patella": 0.95,
           "patellar cartilage": 0.83}
MSD_TARGET_MM = 0.5


def segment_raw(model, image):
    """The ensemble's labels before the bone-island rule (every rule is then scored on the same labels)
    and the segmentation's seconds."""
    from KneeT2SegmentLib.morphometry import segment as sg

    res = sg.segment_knee(image, model=model, bone_piece_min_fraction=0.0)
    return res.labels.array, res.seconds


def scores(pred, truth, image, fraction):
    """The scores of ``pred`` after the bone-island rule ``fraction`` (applied in place)."""
    from KneeT2SegmentLib.morphometry import segment as sg
    from KneeT2SegmentLib.morphometry.labels import BONES, NAMES
    from mskquant.metrics import dice, mean_surface_distance_mm

    sg.remove_bone_islands(pred, fraction)
    lab = truth.array
    sp = image.geometry.spacing
    row = {NAMES[c]: dice(pred == c, lab == c) for c in range(1, 7)}
    for bone, c in BONES.items():
        row[f"{bone} MSD mm"] = mean_surface_distance_mm(pred == c, lab == c, (sp[2], sp[1], sp[0]))
    return row


def main(argv=None) -> int:
    from mskquant.paths import shared_data_dir

    shared = shared_data_dir()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="knee-morphometry-dess", help="model id or ensemble .pt file")
    ap.add_argument("--labelmaps", default=str(shared / "knee_labelmaps") if shared else "")
    ap.add_argument("--subjects", nargs="+", default=["9002817", "9004175", "9005132"])
    ap.add_argument("--families", nargs="+", default=["dess", "independent"],
                    choices=("dess", "randomised", "independent"))
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--csv", default="")
    ap.add_argument("--cache", default="", help="folder keeping the generated cases (.npz) for reruns")
    ap.add_argument("--generate-only", action="store_true", help="only generate (and cache) the cases")
    ap.add_argument("--bone-piece-min-fraction", type=float, nargs="+", default=None,
                    help="bone-island rule(s) to compare on the same segmentations: pieces of a bone smaller than this "
                         "share of its largest piece are removed (1: only the largest; 0: none; default: the "
                         "pipeline's)")
    args = ap.parse_args(argv)

    import numpy as np

    from KneeT2SegmentLib import dess
    from KneeT2SegmentLib.morphometry import segment as sg
    from mskquant.image import Geometry, Image
    from mskquant.imageio import read_image
    from mskquant.testfamily import cases

    paths = [Path(args.labelmaps) / f"{s}.nii.gz" for s in args.subjects]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"label maps not found: {', '.join(missing)} (needs ../shared/data/knee_labelmaps)", file=sys.stderr)
        return 2
    model = None if args.generate_only else sg.load_morphometry_model(args.model)
    rows = []
    for n, path in enumerate(paths):
        rng = np.random.default_rng(args.seed + n)
        labels = read_image(path, "Knee label map")
        anat = None
        for fam in args.families:
            t0 = time.time()
            cached = Path(args.cache) / f"{args.subjects[n]}_{fam}_{args.seed}.npz" if args.cache else None
            if cached is not None and cached.is_file():
                z = np.load(cached)
                g = Geometry(tuple(int(v) for v in z["shape_ijk"]), z["ijk_to_ras"])
                image, truth = Image(z["image"], g), Image(z["labels"], g)
            else:
                if fam == "independent":
                    case = cases.dess_case(labels, rng)
                    image, truth = case.image, case.labels
                else:
                    anat = anat or dess.load_dess_anatomy(path)
                    vol = dess.simulate_dess(anat, rng, randomise=fam == "randomised")
                    image, truth = vol.image, vol.labels
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(cached, image=image.array, labels=truth.array, ijk_to_ras=image.geometry.ijk_to_ras,
                             shape_ijk=np.array(image.geometry.shape_ijk))
            if args.generate_only:
                print(f"{args.subjects[n]} {fam}: generated {image.geometry.describe()} ({time.time() - t0:.0f} s)",
                      flush=True)
                continue
            fractions = args.bone_piece_min_fraction or [sg.BONE_PIECE_MIN_FRACTION]
            raw, seconds = segment_raw(model, image)
            for rule in fractions:
                result = {**scores(raw.copy(), truth, image, rule), "seconds": seconds}
                row = {"subject": args.subjects[n], "family": fam if len(fractions) == 1 else f"{fam} f={rule:g}",
                       "grid": image.geometry.describe(), **result}
                rows.append(row)
                print(f"{row['subject']} {row['family']:12s} " + " ".join(f"{k} {v:.3f}" for k, v in row.items()
                                                                        if isinstance(v, float)) +
                      f" (case {time.time() - t0:.0f} s)", flush=True)
    if args.generate_only:
        return 0
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    print("\nmean per family (targets: " + ", ".join(f"{k} >= {v}" for k, v in TARGETS.items()) +
          f", bone MSD <= {MSD_TARGET_MM} mm)")
    for fam in dict.fromkeys(r["family"] for r in rows):
        sel = [r for r in rows if r["family"] == fam]
        print(f"{fam:12s} " + " | ".join(f"{k} {np.nanmean([r[k] for r in sel]):.3f}" for k in keys))
    if args.csv:
        from mskquant.csvio import write_rows_csv

        cols = list(rows[0])
        write_rows_csv(Path(args.csv), cols, ([r[c] for c in cols] for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
