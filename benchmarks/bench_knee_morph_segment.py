#!/usr/bin/env python
"""Speed of the knee morphometry ensemble segmentation of one OAI-sized 3D DESS volume.

Goal: the whole ensemble (softmax averaged) on a 384 x 384 x 160 sagittal volume in <= 30 s
on 2 CPU cores. Data: a random image on the OAI DESS grid (the networks' cost does not depend
on the content; pass --labelmap to simulate a DESS volume from a label map instead). Model
loading is timed apart; each repeat runs :func:`segment_knee` end to end (normalisation,
networks on worker threads, arg-max, layout back). ``--threads`` sets torch's thread count
(default 2). Also times a coronal (resampled) input with --coronal.

    .venv/bin/python benchmarks/bench_knee_morph_segment.py [--model knee-morphometry-dess] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "KneeT2Segment"):
    sys.path.insert(0, str(p))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="knee-morphometry-dess")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--labelmap", default="")
    ap.add_argument("--coronal", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from KneeT2SegmentLib.morphometry import segment as sg
    from mskquant.image import Geometry, Image

    torch.set_num_threads(args.threads)
    if args.labelmap:
        from KneeT2SegmentLib import dess

        anat = dess.load_dess_anatomy(args.labelmap)
        image = dess.simulate_dess(anat, np.random.default_rng(0), geometry=anat.geometry).image
    else:  # the OAI DESS grid: i -> R (160 slices of 0.7 mm), j -> A, k -> S (0.365 mm)
        g = Geometry.from_spacing((160, 384, 384), (0.7, 0.365, 0.365), (-56.0, -70.0, -70.0))
        image = Image(np.random.default_rng(0).random((384, 384, 160), dtype=np.float32), g)
    t0 = time.perf_counter()
    model = sg.load_morphometry_model(args.model, "cpu")
    load_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        res = sg.segment_knee(image, model=model)
        times.append(res.seconds)
    out = {"grid": image.geometry.describe(), "members": len(model.networks), "threads": args.threads,
           "load_s": round(load_s, 2), "segment_s": [round(t, 2) for t in times],
           "median_s": round(statistics.median(times), 2), "resampled": res.resampled}
    if args.coronal:
        d = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])  # i -> R, j -> S, k -> A
        gc = Geometry.from_spacing((384, 384, 140), (0.365, 0.365, 0.7), (-70.0, -50.0, -70.0), d)
        img_c = Image(np.random.default_rng(1).random((140, 384, 384), dtype=np.float32), gc)
        res_c = sg.segment_knee(img_c, model=model)
        out["coronal_s"] = round(res_c.seconds, 2)
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
