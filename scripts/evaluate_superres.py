"""Super-resolution vs tricubic interpolation on held-out knees (Chaudhari et al., Table 1 layout).

For each test subject (never trained on: KneeT2SegmentLib.superres.training.TEST_SUBJECTS) the
high-resolution truth is simulated, made 3x thicker the paper's way (rect slice profile, one
slice per 3, :mod:`KneeT2SegmentLib.superres.degrade`) and restored by TCI and by SR (TCI + CNN):

* ``project``: the project's DESS simulator on the label map's own grid (0.7 mm slices,
  0.365 mm pixels; :func:`KneeT2SegmentLib.dess.native_grid_dess`), ``--plain`` volumes with the
  plain DESS look (SNR 30) and ``--randomised`` domain-randomised volumes per subject;
* ``family``: the independent test family's DESS case (:func:`mskquant.testfamily.cases.dess_case`:
  its own anatomy rules, steady-state signal, acquisition grid of 0.6-0.9 mm slices and noise),
  ``--family`` volumes per subject.

Metrics against the truth over the whole volume (:func:`mskquant.metrics.ssim`, 3D Gaussian
window; :func:`mskquant.metrics.psnr`, peak = the truth's maximum); Wilcoxon signed-rank test
(two-sided) of SR vs TCI over the volumes of each family. Writes ``volumes.csv``,
``table.md`` and ``evaluation.json`` into ``--out``.

    .venv/bin/python scripts/evaluate_superres.py --out /work/runs/superres/eval [--model ID|FILE]
        [--plain 1] [--randomised 2] [--family 1] [--threads 2]
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


def evaluate_volume(model, high):
    from KneeT2SegmentLib.superres import degrade as dg
    from KneeT2SegmentLib.superres.infer import super_resolve
    from mskquant.metrics import psnr, ssim

    truth, thick, tci = dg.simulate_thick_acquisition(high, 3)
    t = time.perf_counter()
    sr = super_resolve(thick, model, device="auto")
    seconds = time.perf_counter() - t
    assert sr.image.geometry.same_grid(truth.geometry, 1e-6)
    y = truth.array
    return {"ssim_sr": 100 * ssim(y, sr.image.array), "ssim_tci": 100 * ssim(y, tci.array),
            "psnr_sr": psnr(y, sr.image.array), "psnr_tci": psnr(y, tci.array), "sr_s": seconds,
            "thick_mm": float(thick.geometry.spacing.max()), "shape_ijk": "x".join(map(str, truth.geometry.shape_ijk))}


def summarise(rows):
    import numpy as np
    from scipy.stats import wilcoxon

    out = {}
    for fam in sorted({r["family"] for r in rows}):
        rr = [r for r in rows if r["family"] == fam]
        s = {"n": len(rr)}
        for m in ("ssim", "psnr"):
            a = np.array([r[f"{m}_sr"] for r in rr])
            b = np.array([r[f"{m}_tci"] for r in rr])
            s[m] = {"sr_mean": a.mean(), "sr_sd": a.std(ddof=1) if len(a) > 1 else 0.0, "tci_mean": b.mean(),
                    "tci_sd": b.std(ddof=1) if len(b) > 1 else 0.0, "gain_mean": (a - b).mean(),
                    "gain_min": (a - b).min(),
                    "wilcoxon_p": float(wilcoxon(a, b).pvalue) if len(a) > 1 else None}
        out[fam] = s
    return out


def table_md(summary) -> str:
    lines = []
    for fam, s in summary.items():
        lines += [f"**{fam}** ({s['n']} held-out volumes)", "",
                  "| | Ground truth | SR-CNN | TCI | SR - TCI (mean, min) | Wilcoxon p |", "|---|---|---|---|---|---|"]
        for m, name, unit in (("ssim", "SSIM", ""), ("psnr", "pSNR", " dB")):
            x = s[m]
            p = "n/a" if x["wilcoxon_p"] is None else f"{x['wilcoxon_p']:.2g}"
            lines.append(f"| {name}{unit} | N/A | {x['sr_mean']:.1f} ± {x['sr_sd']:.1f} | {x['tci_mean']:.1f} ± "
                         f"{x['tci_sd']:.1f} | {x['gain_mean']:+.2f} ({x['gain_min']:+.2f}) | {p} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labelmaps", default=str(ROOT.parent / "shared" / "data" / "knee_labelmaps"))
    ap.add_argument("--model", default="knee-superres-3x")
    ap.add_argument("--out", required=True)
    ap.add_argument("--plain", type=int, default=1)
    ap.add_argument("--randomised", type=int, default=2)
    ap.add_argument("--family", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--cache", help="folder keeping the simulated truth volumes between runs (outside the repository)")
    ap.add_argument("--simulate-only", action="store_true", help="only simulate (and cache) the truth volumes")
    a = ap.parse_args(argv)

    import numpy as np
    import torch

    from KneeT2SegmentLib import dess
    from KneeT2SegmentLib.superres import training as tr
    from KneeT2SegmentLib.superres.model import load_model
    from mskquant.imageio import read_image, write_image
    from mskquant.testfamily import cases

    torch.set_num_threads(a.threads)
    model = None if a.simulate_only else load_model(a.model)
    cache = Path(a.cache) if a.cache else None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in tr.split_label_maps(a.labelmaps)["test"]:
        subject = tr.subject_of(path)
        anat = dess.load_dess_anatomy(path)
        jobs = [("project", "plain", False) for _ in range(a.plain)] + \
               [("project", "randomised", True) for _ in range(a.randomised)] + \
               [("family", "dess_case", None) for _ in range(a.family)]
        for i, (fam, look, randomise) in enumerate(jobs):
            rng = np.random.default_rng([a.seed, int(subject), i])
            cached = cache / f"{subject}_{fam}_{look}_{a.seed}_{i}.nii.gz" if cache else None
            if cached is not None and cached.is_file():
                high = read_image(cached)
            elif fam == "project":
                high = dess.native_grid_dess(anat, rng, randomise=randomise).image
            else:
                high = cases.dess_case(read_image(path, "Knee label map"), rng).image
            if cached is not None and not cached.is_file():
                cached.parent.mkdir(parents=True, exist_ok=True)
                write_image(high, cached)
            if model is None:
                print(f"simulated {subject} {fam} {look}", flush=True)
                continue
            row = {"subject": subject, "family": fam, "look": look, **evaluate_volume(model, high)}
            rows.append(row)
            print(f"{subject} {fam:7s} {look:10s} SSIM SR {row['ssim_sr']:.1f} TCI {row['ssim_tci']:.1f}  pSNR SR "
                  f"{row['psnr_sr']:.2f} TCI {row['psnr_tci']:.2f} dB  ({row['thick_mm']:.2f} mm -> 3x, "
                  f"{row['sr_s']:.0f} s)", flush=True)
    if model is None:
        return 0
    with open(out / "volumes.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = summarise(rows)
    (out / "table.md").write_text(table_md(summary))
    (out / "evaluation.json").write_text(json.dumps({"model": model.name, "summary": summary, "volumes": rows},
                                                    indent=2, default=float))
    print(table_md(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
