"""Robustness of the knee-pain models on the independent test family, one acquisition property changed
at a time (the README's SiamesePainCAM robustness table):

    .venv/bin/python scripts/evaluate_pain_robustness.py --pairs 6 \\
        --conditions "snr 10" "snr 100" "slice 1 mm" "slice 4 mm" "bias 0.6" "contrast inverted" "rotation 20 deg"

Per condition, ``--pairs`` left/right pairs of the held-out subjects (9055361, 9057479) with a lesion
in one knee (sides alternate; effusion and bone-marrow lesion alternate where the label map has bone
lesions), each knee drawn by mskquant.testfamily (test only) with the condition applied to both knees.
Every model in ``--models`` reads the same pairs (``ID`` = the registered model with the joint
localiser, ``ID:template`` = aligned by the template alone, as before the localiser). Prints AUC,
accuracy, CAM maximum within 10 mm of the lesion and the smallest margin by which the femorotibial
joint lies inside the 105 mm crop; writes the per-pair rows to --csv.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "SiamesePainCAM"):
    sys.path.insert(0, str(p))

MAPS = ("9055361_00m", "9055361_96m", "9057479_00m", "9057479_36m")  # the pain model's held-out subjects
CONDITIONS = {
    "baseline": {}, "snr 10": {"snr": 10.0}, "snr 30": {"snr": 30.0}, "snr 100": {"snr": 100.0},
    "slice 1 mm": {"thickness_mm": 1.0, "gap_mm": 0.0}, "slice 2 mm": {"thickness_mm": 2.0, "gap_mm": 0.0},
    "slice 4 mm": {"thickness_mm": 4.0, "gap_mm": 0.0},
    "bias 0.3": {"bias_sd": 0.3}, "bias 0.6": {"bias_sd": 0.6},
    "contrast inverted": {"inverted": True},
    "rotation 10 deg": {"rotation_deg": (10.0, 0.0, 0.0)}, "rotation 20 deg": {"rotation_deg": (20.0, 0.0, 0.0)},
}


def load(model_arg: str):
    from mskquant.device import select_device
    from mskquant.models import ModelStore
    from SiamesePainCAMLib.pipeline import load_pain_model

    model_id, _, how = model_arg.partition(":")
    store = ModelStore()
    spec = store.registry.get(model_id)
    return load_pain_model(store.ensure(spec.id)[0], spec.architecture, select_device("cpu"), spec.id,
                           localiser=None if how == "template" else "default")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+",
                    default=["siamese-pain-demo-project:template", "siamese-pain-demo:template", "siamese-pain-demo"])
    ap.add_argument("--conditions", nargs="+", default=["baseline"], choices=sorted(CONDITIONS))
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=2028)
    ap.add_argument("--labelmaps", default=str(ROOT.parent / "shared" / "data" / "knee_labelmaps"))
    ap.add_argument("--csv", default="")
    args = ap.parse_args(argv)

    from mskquant.errors import InputError
    from mskquant.imageio import read_image
    from mskquant.metrics import roc_auc
    from mskquant.testfamily import cases as tf
    from SiamesePainCAMLib.evaluation import peak_to_mask_mm
    from SiamesePainCAMLib.pipeline import analyse_pair
    from SiamesePainCAMLib.preprocessing import CROP_MM, crop_position_mm

    models = {m: load(m) for m in args.models}
    labels = {m: read_image(Path(args.labelmaps) / f"{m}.nii.gz") for m in MAPS}
    rows, table = [], []
    for condition in args.conditions:
        over = dict(CONDITIONS[condition])
        inverted = bool(over.pop("inverted", False))
        t0 = time.time()
        pairs = []
        for k in range(args.pairs):
            m = MAPS[k % len(MAPS)]
            has_bml = np.isin(np.asarray(labels[m].array), (7, 8, 9)).sum() > 200
            kind = "bml" if (k // 2) % 2 and has_bml else "effusion"
            side = ("right", "left")[k % 2]
            pairs.append((f"{m}-{k}", side, kind, tf.pain_pair(labels[m], np.random.default_rng([args.seed, k]), side,
                                                                kind, over or None, inverted)))
        sim_s = time.time() - t0
        for name_m, model in models.items():
            res = []
            for name, side, kind, pair in pairs:
                knee = pair.right if side == "right" else pair.left
                try:
                    r = analyse_pair(model, pair.left.image, pair.right.image)
                except InputError as exc:
                    res.append((side, float("nan"), float("nan"), float("nan"), str(exc)))
                    continue
                dist = peak_to_mask_mm(r.cam[side], knee.lesion_mask.array, knee.image.geometry)
                inside = min(CROP_MM / 2 - float(np.abs(crop_position_mm(r.prepared[s], k.joint_centre_ras)).max())
                             for s, k in (("left", pair.left), ("right", pair.right)))
                res.append((side, r.p_right_painful, dist, inside, ""))
                rows.append([condition, name_m, name, side, kind, f"{r.p_right_painful:.4f}", f"{dist:.1f}",
                             f"{inside:.1f}", ""])
            ok = [x for x in res if not x[4]]
            y = np.array([s == "right" for s, *_ in ok], int)
            p = np.array([x[1] for x in ok])
            auc = roc_auc(y, p) if 0 < y.sum() < len(y) else float("nan")
            acc = float(np.mean((p >= 0.5) == y)) if len(ok) else float("nan")
            point = float(np.mean([x[2] <= 10.0 for x in ok])) if ok else float("nan")
            inside = min((x[3] for x in ok), default=float("nan"))
            table.append((condition, name_m, auc, acc, point, inside, len(res) - len(ok)))
            print(f"{condition:<18} {name_m:<36} AUC {auc:.3f} accuracy {acc:.2f} pointing {point:.2f} "
                  f"joint inside crop >= {inside:.0f} mm refused {len(res) - len(ok)} "
                  f"({len(pairs)} pairs, simulated in {sim_s:.0f} s)", flush=True)
    if args.csv:
        from mskquant.csvio import write_rows_csv

        write_rows_csv(Path(args.csv), ["condition", "model", "pair", "painful", "lesion", "p_right",
                                        "peak_to_lesion_mm", "joint_inside_crop_mm", "refused"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
