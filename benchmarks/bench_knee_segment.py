#!/usr/bin/env python
"""Speed and memory of automatic cartilage segmentation + T2 + subregions of one OAI-sized MESE volume.

Goal (issue 5): segmentation (U-Net on echo 2, T2 of the candidate voxels, thresholds) + T2
quantification + 12 subregions of a 384 x 269 x 21 x 7-echo series in <= 6 s on 2 CPU cores,
peak memory <= 2 GB (Thomas et al.: 6 s on a K80 GPU).

Data: a MESE phantom (OAI protocol, SNR 30) simulated from a held-out test anatomy of the
bundled model (../shared), or from the analytic knee with ``--no-shared``, written to a
temporary 4D NIfTI. Every measurement runs in a fresh process that reads that file, so its
peak RSS (``getrusage``) is the pipeline's own:

* ``project``: :func:`KneeT2SegmentLib.segmentation.segment` (slices on worker threads with
  single-threaded torch, BN folded, channels-last) + :func:`quantify` reusing the candidates'
  T2 fit;
* ``baseline``: the same network run the straightforward way (torch's intra-op threads over
  the slices, :func:`mskquant.inference.predict_ensemble`) and :func:`quantify` fitting the mask
  again;
* ``command``: ``mskquant knee-t2 --mese ... --out ...`` end to end (headless Slicer start,
  nodes, files).

Model loading is timed apart (once per process). Masks of project and baseline are compared.

    .venv/bin/python benchmarks/bench_knee_segment.py [--repeats 3] [--no-shared] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "KneeT2Segment"):
    sys.path.insert(0, str(p))

GOAL_S, GOAL_MB = 6.0, 2048.0


def make_phantom(folder: Path, use_shared: bool) -> str:
    from KneeT2SegmentLib import anatomy as an
    from KneeT2SegmentLib import simulator as sm
    from KneeT2SegmentLib.checkpoint import read_checkpoint
    from KneeT2SegmentLib.cli import write_phantom
    from mskquant.paths import shared_data_dir

    shared = shared_data_dir() if use_shared else None
    anat, name = None, "analytic knee"
    if shared is not None:
        ckpt = read_checkpoint(ROOT / "Resources" / "Models" / "knee-femoral-cartilage-mese.pt")
        test = (ckpt.training.get("split") or {}).get("test") or []
        path = shared / "knee_labelmaps" / test[0] if test else None
        if path is not None and path.is_file():
            anat, name = an.load_anatomy(path), f"OAI anatomy {path.name} (held out from training)"
    if anat is None:
        anat = an.prepare_anatomy(an.analytic_knee(), None, "analytic", "analytic knee")
    ph = sm.simulate(anat, sm.PhantomParameters(snr=30.0, seed=21))
    write_phantom(ph, folder)
    return name


def worker(mese: str, variant: str, repeats: int) -> dict:
    """One fresh process: read, load the model, run the pipeline ``repeats`` times."""
    import numpy as np

    from KneeT2SegmentLib.mese import read_mese
    from KneeT2SegmentLib.parameters import KneeT2Parameters
    from KneeT2SegmentLib.quantify import quantify
    from KneeT2SegmentLib.segmentation import (apply_thresholds, load_model, network_input, restore, segment,
                                               sagittal_layout)
    from KneeT2SegmentLib.t2fit import fit_t2

    t0 = time.perf_counter()
    series = read_mese(mese)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = load_model("knee-femoral-cartilage-mese", "cpu")
    t_load = time.perf_counter() - t0
    params = KneeT2Parameters()
    settings = params.fit_settings()
    times, parts, mask = [], [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        if variant == "project":
            seg = segment(series, model, settings)
            fitted = seg.probability > seg.thresholds.fit_probability
            q = quantify(series, seg.mask, params, fit=seg.fit, fitted=fitted)
            parts.append({"network_s": seg.timings_s["network"], "t2_candidates_s": seg.timings_s["t2_candidates"],
                          "quantify_s": q.timings_s["total"]})
        else:
            import torch

            from mskquant.inference import predict_ensemble

            t1 = time.perf_counter()
            lay = sagittal_layout(series.geometry)
            x, w, _ = network_input(series, model.echo, model.network_size, lay)
            prob = lay.from_canonical(restore(predict_ensemble([model.net], x, torch.device("cpu"),
                                                               divisor=model.divisor)[:, 0], w))
            t2 = time.perf_counter()
            cand = prob > model.thresholds.fit_probability
            fit = fit_t2(series.echoes.array, series.echo_times_ms, cand, settings)
            m, _, _ = apply_thresholds(prob, np.isfinite(fit.t2_ms), lay, model.thresholds)
            t3 = time.perf_counter()
            q = quantify(series, m, params)
            parts.append({"network_s": t2 - t1, "t2_candidates_s": t3 - t2, "quantify_s": q.timings_s["total"]})
        times.append(time.perf_counter() - t0)
        mask = q.refined
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    np.save(os.environ["BENCH_MASK"], mask)
    return {"variant": variant, "read_s": t_read, "model_load_s": t_load, "times_s": times, "parts": parts,
            "peak_rss_mb": peak_mb, "voxels": int(mask.sum())}


def run_worker(mese: Path, variant: str, repeats: int, mask_path: Path) -> dict:
    env = dict(os.environ, BENCH_MASK=str(mask_path), MSKQUANT_DEVICE="cpu")
    proc = subprocess.run([sys.executable, __file__, "--worker", variant, "--mese", str(mese), "--repeats",
                           str(repeats)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_command(folder: Path) -> dict:
    out = folder / "knee_t2_out"
    exe = Path(sys.executable).with_name("mskquant")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mskquant.cli"]
    env = dict(os.environ, MSKQUANT_DEVICE="cpu",
               PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("", "KneeT2Segment", "VHIWorkflow", "SiamesePainCAM")))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + ["knee-t2", "--mese", str(folder / "mese.nii.gz"), "--out", str(out), "-q",
                                 "--overwrite"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"knee-t2 failed:\n{proc.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_s": wall, "peak_rss_mb": max(peak, before) / 1024.0, "stdout": proc.stdout.strip()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-shared", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--worker", choices=("project", "baseline"), help=argparse.SUPPRESS)
    ap.add_argument("--mese", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.mese, args.worker, args.repeats)))
        return 0

    import numpy as np

    from mskquant.metrics import dice

    with tempfile.TemporaryDirectory(prefix="bench_knee_seg_") as tmp:
        folder = Path(tmp)
        name = make_phantom(folder, not args.no_shared)
        print(f"data: MESE phantom of {name}, 384 x 269 x 21, 7 echoes, SNR 30; {os.cpu_count()} CPU cores",
              flush=True)
        res = {}
        for variant in ("baseline", "project"):
            res[variant] = run_worker(folder / "mese.nii.gz", variant, args.repeats, folder / f"{variant}.npy")
        cmd = run_command(folder)
        agree = dice(np.load(folder / "project.npy"), np.load(folder / "baseline.npy"))
    report = {"data": name, "goal_s": GOAL_S, "goal_peak_mb": GOAL_MB, "command": cmd, "masks_dice": agree}
    for variant, r in res.items():
        t = r["times_s"]
        warm = t[1:] or t
        p = min(r["parts"][1:] or r["parts"], key=lambda x: sum(x.values()))
        report[variant] = {"first_s": t[0], "best_s": min(warm), "median_s": statistics.median(warm),
                           "model_load_s": r["model_load_s"], "read_s": r["read_s"], "peak_rss_mb": r["peak_rss_mb"],
                           "parts_best": p, "voxels": r["voxels"]}
        print(f"{variant:>8}: segmentation + T2 + subregions {min(warm):.2f} s best, {statistics.median(warm):.2f} s "
              f"median of {len(warm)} (first {t[0]:.2f} s; model load {r['model_load_s']:.2f} s, file read "
              f"{r['read_s']:.2f} s); network {p['network_s']:.2f} s, T2 of candidates {p['t2_candidates_s']:.2f} s, "
              f"quantify {p['quantify_s']:.2f} s; peak RSS {r['peak_rss_mb']:.0f} MB")
    ratio = report["baseline"]["median_s"] / report["project"]["median_s"]
    print(f"speed-up {ratio:.2f}x; masks agree: Dice {agree:.4f}")
    print(f"knee-t2 command end to end (headless Slicer, nodes, files): {cmd['wall_s']:.2f} s, peak RSS "
          f"{cmd['peak_rss_mb']:.0f} MB")
    ok = report["project"]["median_s"] <= GOAL_S and report["project"]["peak_rss_mb"] <= GOAL_MB
    print(f"goal (<= {GOAL_S:g} s, <= {GOAL_MB / 1024:g} GB): {'met' if ok else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
