#!/usr/bin/env python
"""Speed and peak memory of the whole knee morphometry of one OAI-sized 3D DESS volume.

Goal: segmentation + thickness + bone surfaces + projection + maps of one 384 x 384 x 160
volume in <= 45 s on 2 CPU cores, peak memory <= 4 GB. Data: a DESS-like volume simulated
(:mod:`KneeT2SegmentLib.dess`, on the label map's own grid) from a knee label map that the
ensemble never saw (9002817 of ../shared; ``--labelmap`` for another). Each repeat runs in a
fresh process (what ``mskquant knee-morph`` does, imports and model loading included in
``process_s``); the stage times come from the pipeline, the peak from the process's maximum
resident set size. In the same run, the measurement alone (the given label map, no network)
is timed as the baseline the network adds to.

    .venv/bin/python benchmarks/bench_knee_morph.py [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
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
DEFAULT_LABELMAP = ROOT.parent / "shared" / "data" / "knee_labelmaps" / "9002817.nii.gz"


def child(image_path: str, labels_path: str, threads: int) -> dict:
    t0 = time.perf_counter()
    import torch

    from KneeT2SegmentLib.morphometry.pipeline import MorphParameters, run
    from mskquant.imageio import read_image

    torch.set_num_threads(threads)
    image = read_image(image_path)
    labels = read_image(labels_path) if labels_path else None
    t1 = time.perf_counter()
    result = run(None if labels is not None else image, labels, None, MorphParameters(laterality="right"))
    t2 = time.perf_counter()
    return {"process_s": round(t2 - t0, 2), "pipeline_s": round(t2 - t1, 2),
            "stages_s": {k: round(v, 2) for k, v in result.timings_s.items()},
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
            "femoral_mean_mm": next(r["mean_mm"] for r in result.thickness.rows()
                                    if (r["plate"], r["region"]) == ("femoral", "all"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labelmap", default=str(DEFAULT_LABELMAP))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="")
    ap.add_argument("--child", nargs=2, metavar=("IMAGE", "LABELS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.threads)))
        return 0
    if not Path(args.labelmap).is_file():
        print(f"skipped: no label map at {args.labelmap} (../shared absent); give --labelmap", file=sys.stderr)
        return 0
    import numpy as np

    from KneeT2SegmentLib import dess
    from mskquant.imageio import read_image, write_image

    with tempfile.TemporaryDirectory() as tmp:
        vol = dess.native_grid_dess(read_image(args.labelmap), np.random.default_rng(0), snr=30.0)
        image_path, labels_path = Path(tmp) / "dess.nii.gz", Path(tmp) / "labels.nii.gz"
        write_image(vol.image, image_path)
        write_image(vol.labels, labels_path)

        def run_child(labels: str) -> dict:
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child", str(image_path),
                                  labels], capture_output=True, text=True, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])

        full = [run_child("") for _ in range(args.repeats)]
        base = [run_child(str(labels_path)) for _ in range(args.repeats)]
    out = {"grid": vol.image.geometry.describe(), "threads": args.threads,
           "segment_and_measure": full, "measure_only_baseline": base,
           "median_pipeline_s": statistics.median(r["pipeline_s"] for r in full),
           "median_process_s": statistics.median(r["process_s"] for r in full),
           "median_baseline_pipeline_s": statistics.median(r["pipeline_s"] for r in base),
           "max_peak_rss_mb": max(r["peak_rss_mb"] for r in full)}
    out["ratio_to_baseline"] = round(out["median_pipeline_s"] / out["median_baseline_pipeline_s"], 2)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
