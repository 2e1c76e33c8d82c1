#!/usr/bin/env python
"""Segmentation on super-resolved vs high-resolution vs tricubic-interpolated images (Chaudhari et
al., Table 1): femoral cartilage Dice and mean femoral cartilage thickness error of the
morphometry ensemble on each, over held-out knees.

For each test subject (never used to train either network: 9002817, 9004175, 9005132) a
high-resolution DESS-like volume is simulated - ``project``: the project's simulator on the label
map's own grid (:func:`KneeT2SegmentLib.dess.native_grid_dess`, plain DESS look, SNR 30);
``family``: the independent test family's DESS case (:func:`mskquant.testfamily.cases.dess_case`)
- made 3x thicker the paper's way (:func:`KneeT2SegmentLib.superres.degrade.simulate_thick_acquisition`)
and restored by TCI and by SR. The ensemble segments the truth, TCI and SR images; each is scored
against the true labels of the truth grid (Dice of the femoral cartilage, label 2) and by the mean
femoral cartilage thickness (:func:`..morphometry.thickness.measure_thickness`) against the same
measurement on the true labels. Writes ``cases.csv``, ``table.md`` and ``evaluation.json``.

    .venv/bin/python scripts/evaluate_superres_segmentation.py --out DIR [--family] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "KneeT2Segment")]
TEST_SUBJECTS = ("9002817", "9004175", "9005132")
KINDS = ("truth", "TCI", "SR")


def _dice(a, b) -> float:
    import numpy as np

    s = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 2.0 * int(np.count_nonzero(a & b)) / s if s else float("nan")


def _femoral_mean(labels) -> float:
    from KneeT2SegmentLib.morphometry.thickness import measure_thickness

    rows = measure_thickness(labels, "right").rows()
    return next(r["mean_mm"] for r in rows if (r["plate"], r["region"]) == ("femoral", "all"))


def evaluate(image, labels, sr_model, seg_model, name: str) -> dict:
    import numpy as np

    from KneeT2SegmentLib.morphometry.segment import segment_knee
    from KneeT2SegmentLib.superres import degrade as dg
    from KneeT2SegmentLib.superres.infer import super_resolve
    truth, thick, tci = dg.simulate_thick_acquisition(image, 3)
    true_labels = dg.cut_to_thick_coverage(labels, 3)
    t0 = time.perf_counter()
    sr = super_resolve(thick, sr_model).image
    sr_s = time.perf_counter() - t0
    ref_mm = _femoral_mean(true_labels)
    row = {"case": name, "true_femoral_thickness_mm": ref_mm, "sr_s": round(sr_s, 1)}
    for kind, img in zip(KINDS, (truth, tci, sr)):
        seg = segment_knee(img, model=seg_model).labels
        row[f"dice_fc_{kind}"] = _dice(seg.array == 2, true_labels.array == 2)
        row[f"dice_bones_{kind}"] = float(np.mean([_dice(seg.array == v, true_labels.array == v) for v in (1, 3, 5)]))
        mm = _femoral_mean(seg)
        row[f"thickness_mm_{kind}"] = mm
        row[f"thickness_error_mm_{kind}"] = abs(mm - ref_mm)
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--labelmaps", default=str(ROOT.parent / "shared" / "data" / "knee_labelmaps"))
    ap.add_argument("--family", action="store_true", help="also the independent test family's DESS case")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from KneeT2SegmentLib import dess
    from KneeT2SegmentLib.morphometry.segment import load_morphometry_model
    from KneeT2SegmentLib.superres.model import load_model
    from mskquant.imageio import read_image

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sr_model, seg_model = load_model(), load_morphometry_model(device="cpu")
    rows = []
    for sid in TEST_SUBJECTS:
        path = Path(args.labelmaps) / f"{sid}.nii.gz"
        if not path.is_file():
            print(f"skipped {sid}: {path} not found", file=sys.stderr)
            continue
        labels = read_image(path)
        rng = np.random.default_rng(args.seed + int(sid))
        vol = dess.native_grid_dess(labels, rng, snr=30.0)
        rows.append({"family": "project", **evaluate(vol.image, vol.labels, sr_model, seg_model, sid)})
        if args.family:
            from mskquant.testfamily.cases import dess_case

            case = dess_case(labels, rng)
            rows.append({"family": "independent", **evaluate(case.image, case.labels, sr_model, seg_model, sid)})
    if not rows:
        print("no test subjects found (../shared absent?)", file=sys.stderr)
        return 1
    with open(out / "cases.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = {}
    lines = ["| family | n | Dice FC truth | Dice FC TCI | Dice FC SR | thickness error truth / TCI / SR (mm) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for fam in sorted({r["family"] for r in rows}):
        rs = [r for r in rows if r["family"] == fam]
        m = {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k.startswith(("dice", "thickness_error"))}
        summary[fam] = {"n": len(rs), **m}
        lines.append(f"| {fam} | {len(rs)} | {m['dice_fc_truth']:.3f} | {m['dice_fc_TCI']:.3f} | {m['dice_fc_SR']:.3f} | "
                     f"{m['thickness_error_mm_truth']:.3f} / {m['thickness_error_mm_TCI']:.3f} / "
                     f"{m['thickness_error_mm_SR']:.3f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "evaluation.json").write_text(json.dumps({"summary": summary, "cases": rows}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
