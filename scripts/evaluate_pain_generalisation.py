"""The knee-pain model on left/right pairs of three families, all from knees held out of the model's
training: the project's pair simulator (the fixed look), its domain-randomised generator (a random
look per knee: what the demo model learnt from) and the independent test family (mskquant.testfamily:
other anatomy rules, k-space acquisition, the left knee the mirror image of the right; test only).

Per pair: P(right painful), refusal, the CAM maximum's distance to the planted lesion, and the
laterality margins of both knees as given and with the knees exchanged (the evidence of the
swapped-knees check). Prints AUC, accuracy, pointing within 10 mm, p of lesion-free pairs,
refusals and the margin spread; writes the rows to --csv:

    .venv/bin/python scripts/evaluate_pain_generalisation.py --families project randomised independent --pairs 8
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


def pairs_of(family: str, labelmaps: Path, n: int, seed: int):
    """(name, left image, right image, painful side or None, lesion kind, painful lesion mask, geometry,
    tibial cartilage centroids (RAS) of the left and right knee: the femorotibial joint, defined alike in
    both families)."""
    kinds = ["effusion", "bml", None]
    if family in ("project", "randomised"):
        from SiamesePainCAMLib import simulator as sim

        anatomies = [sim.build_anatomy(__import__("mskquant.imageio", fromlist=["read_image"]).read_image(
            labelmaps / f"{m}.nii.gz"), m, seed=7) for m in MAPS]
        for k in range(n):
            rng = np.random.default_rng([seed, k])
            a = anatomies[k % len(anatomies)]
            side = ("right", "left")[k % 2]
            kind = ("effusion", "bml")[(k // 2) % 2]
            pair = sim.simulate_pair(a, rng, f"{a.name}-{k}", painful_side=side, lesion_kind=kind,
                                     variation=sim.Variation.randomised() if family == "randomised" else None)
            yield (f"{a.name}-{k}", pair.left.image, pair.right.image, side, kind, pair.painful.lesion_mask.array,
                   pair.painful.image.geometry, (pair.left.tibial_cartilage_ras, pair.right.tibial_cartilage_ras))
        return
    from mskquant.imageio import read_image
    from mskquant.testfamily import cases as tf

    labels = {m: read_image(labelmaps / f"{m}.nii.gz") for m in MAPS}
    for k in range(n):
        rng = np.random.default_rng([seed, 1000 + k])
        m = MAPS[k % len(MAPS)]
        kind = kinds[(k // 2) % 3]
        has_lesion = np.isin(np.asarray(labels[m].array), (7, 8, 9)).sum() > 200
        if kind == "bml" and not has_lesion:
            kind = "effusion"
        side = None if kind is None else ("right", "left")[k % 2]
        pair = tf.pain_pair(labels[m], rng, side, kind)
        knee = pair.right if side == "right" else pair.left
        yield (f"{m}-{k}", pair.left.image, pair.right.image, side, kind,
               knee.lesion_mask.array if side else None, knee.image.geometry,
               (pair.left.joint_centre_ras, pair.right.joint_centre_ras))


def margins(model, left, right, joints=None):
    """Laterality margins of both knees; with ``joints`` also how far (mm, the larger of the two in-plane
    axes of the crop) each knee's femorotibial joint (tibial cartilage centroid) lies from its
    centre-plane crop centre: the 105 mm crop holds the joint with 15 mm to spare when this is <= 37.5 mm.
    The crop is centred on the template's joint centre, which lies 18-21 mm above and in front of the
    tibial cartilage centroid in the project's own anatomy, so that is the figure of a perfect alignment."""
    from SiamesePainCAMLib.preprocessing import crop_position_mm, prepare_knee

    out, dist = [], []
    for n, (img, side) in enumerate(((left, "left"), (right, "right"))):
        pk = prepare_knee(img, side, model.template, localiser=model.localiser)
        out.append(pk.centre_estimate.laterality_margin)
        if joints is not None:
            dist.append(float(np.abs(crop_position_mm(pk, joints[n])).max()))
    return (out, dist) if joints is not None else out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="siamese-pain-demo", help="registered model id or a pain-train best_model.pt")
    ap.add_argument("--families", nargs="+", default=["independent"], choices=("project", "randomised", "independent"))
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--labelmaps", default=str(ROOT.parent / "shared" / "data" / "knee_labelmaps"))
    ap.add_argument("--csv", default="")
    ap.add_argument("--no-localiser", action="store_true",
                    help="align by the template alone (the pre-processing before the joint localiser)")
    args = ap.parse_args(argv)

    from mskquant.device import select_device
    from mskquant.errors import InputError
    from mskquant.metrics import roc_auc
    from mskquant.models import ModelStore
    from SiamesePainCAMLib.evaluation import peak_to_mask_mm
    from SiamesePainCAMLib.pipeline import analyse_pair, load_pain_model

    localiser = None if args.no_localiser else "default"
    if Path(args.model).is_file():
        from SiamesePainCAMLib.checkpoint import saved_architecture

        model = load_pain_model(Path(args.model), saved_architecture(Path(args.model)), select_device("cpu"),
                                Path(args.model).name, localiser=localiser)
    else:
        store = ModelStore()
        spec = store.registry.get(args.model)
        model = load_pain_model(store.ensure(spec.id)[0], spec.architecture, select_device("cpu"), spec.id,
                                localiser=localiser)
    rows = []
    for family in args.families:
        t0 = time.time()
        res = []
        for name, left, right, side, kind, mask, geom, joints in pairs_of(family, Path(args.labelmaps), args.pairs,
                                                                          args.seed):
            m_ok, crop_off = margins(model, left, right, joints)
            m_sw = margins(model, right, left)
            try:
                r = analyse_pair(model, left, right)
                p, refused = r.p_right_painful, ""
                dist = peak_to_mask_mm(r.cam[side], mask, geom) if side else float("nan")
            except InputError as exc:
                p, refused, dist = float("nan"), str(exc), float("nan")
            res.append((side, kind, p, dist, refused, m_ok, m_sw, crop_off))
            rows.append([family, name, side or "none", kind or "none", f"{p:.4f}", f"{dist:.1f}", refused[:80],
                         f"{m_ok[0]:.4f}", f"{m_ok[1]:.4f}", f"{m_sw[0]:.4f}", f"{m_sw[1]:.4f}",
                         f"{crop_off[0]:.1f}", f"{crop_off[1]:.1f}"])
            print(f"  {family} {name}: painful {side} ({kind}) p_right {p:.3f} peak-to-lesion {dist:.1f} mm "
                  f"margins {m_ok[0]:+.3f}/{m_ok[1]:+.3f} swapped {m_sw[0]:+.3f}/{m_sw[1]:+.3f}"
                  f" crop centre to tibial cartilage {crop_off[0]:.0f}/{crop_off[1]:.0f} mm{' REFUSED' if refused else ''}", flush=True)
        lab = [(s == "right", p) for s, _, p, _, ref, *_ in res if s and not ref]
        auc = roc_auc(np.array([a for a, _ in lab], int), np.array([b for _, b in lab])) if lab and 0 < sum(
            a for a, _ in lab) < len(lab) else float("nan")
        acc = np.mean([(p >= 0.5) == a for a, p in lab]) if lab else float("nan")
        point = [d <= 10.0 for s, _, p, d, ref, *_ in res if s and not ref]
        free = [p for s, _, p, _, ref, *_ in res if s is None and not ref]
        ok_m = np.array([r[5] for r in res]).ravel()
        sw_m = np.array([r[6] for r in res]).ravel()
        crop = np.array([r[7] for r in res]).ravel()
        print(f"{family}: {len(res)} pairs in {time.time() - t0:.0f} s; refused {sum(bool(r[4]) for r in res)}; "
              f"AUC {auc:.3f}, accuracy {acc:.3f}, pointing within 10 mm {np.mean(point) if point else float('nan'):.3f}"
              f" ({sum(point)}/{len(point)}); lesion-free p {', '.join(f'{v:.2f}' for v in free) or '-'}; "
              f"laterality margin as given {ok_m.mean():+.4f} +- {ok_m.std():.4f} (min {ok_m.min():+.4f}), "
              f"exchanged {sw_m.mean():+.4f} +- {sw_m.std():.4f} (max {sw_m.max():+.4f}); tibial cartilage from crop centre "
              f"median {np.median(crop):.1f} mm, max {crop.max():.1f} mm (joint in the 105 mm crop with 15 mm to "
              f"spare: {int((crop <= 37.5).sum())}/{crop.size} knees)", flush=True)
    if args.csv:
        from mskquant.csvio import write_rows_csv

        write_rows_csv(Path(args.csv), ["family", "pair", "painful", "lesion", "p_right", "peak_to_lesion_mm",
                                        "refused", "margin_left", "margin_right", "margin_left_exchanged",
                                        "margin_right_exchanged", "crop_to_joint_left_mm", "crop_to_joint_right_mm"],
                       rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
