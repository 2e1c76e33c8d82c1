#!/usr/bin/env python
"""Speed and memory of through-plane super-resolution of one 384 x 384 x 160 knee volume.

Goal: SR (TCI + the residual CNN) of a 384 x 384 x 160 volume in <= 60 s on 2 CPU cores,
peak memory <= 4 GB, reported against TCI alone in the same run.

Data: a fine volume of 384 x 384 x 162 voxels (0.365 x 0.365 x 0.7 mm, sagittal; piecewise
constant tissue-like blobs, content does not change the cost) made 3x thicker (54 slices of
2.1 mm) and written to a temporary NIfTI; the SR output covers 162 >= 160 fine slices. Each
method runs in a fresh process (torch on ``--threads`` threads) that reads that file, so its
peak RSS (``getrusage``) is its own; file reading and model loading are timed apart:

* ``tci``: :func:`KneeT2SegmentLib.superres.degrade.tricubic_to_fine`;
* ``sr``: :func:`KneeT2SegmentLib.superres.infer.super_resolve` (TCI + network, slab-wise).

``--sizes`` adds the network-size table (the paper's 20 layers x 64 features, 3x3x3, and
smaller residual networks), float32 and bfloat16: the network alone on a 16 x 128 x 128 block, extrapolated to
384 x 384 x 160 voxels (the paper's size would take ~20 min per full volume here).

    .venv/bin/python benchmarks/bench_superres.py [--repeats 2] [--threads 2] [--sizes] [--model ID|FILE] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "KneeT2Segment")]
SIZES = [(20, 64, False), (10, 32, False), (8, 32, False), (8, 32, True), (8, 24, True), (6, 24, True)]


def _volume(path: Path) -> None:
    import numpy as np
    from scipy.ndimage import gaussian_filter

    from KneeT2SegmentLib.superres import degrade as dg
    from mskquant.image import Geometry, Image
    from mskquant.imageio import write_image

    rng = np.random.default_rng(0)
    x = gaussian_filter(rng.normal(size=(96, 96, 41)).astype(np.float32), 2.0)
    x = np.kron(x, np.ones((4, 4, 4), np.float32))[:, :, :162]
    arr = (np.digitize(x, np.quantile(x, [0.3, 0.6, 0.85])) * 0.3 + 0.05).astype(np.float32)
    arr += rng.normal(0, 0.02, arr.shape).astype(np.float32)
    g = Geometry.from_spacing((162, 384, 384), (0.7, 0.365, 0.365), (-22.7, 80.7, -80.3))
    write_image(dg.thick_slices(Image(arr, g), 3), path)


def _one(method: str, path: str, threads: int, model: str) -> dict:
    import resource

    import torch

    torch.set_num_threads(threads)
    from KneeT2SegmentLib.superres import degrade as dg
    from KneeT2SegmentLib.superres.infer import super_resolve
    from KneeT2SegmentLib.superres.model import load_model
    from mskquant.imageio import read_image

    t = time.perf_counter()
    thick = read_image(path)
    read_s = time.perf_counter() - t
    out = {"method": method, "read_s": read_s, "threads": threads}
    if method == "tci":
        t = time.perf_counter()
        img = dg.tricubic_to_fine(thick, 3)
        out["seconds"] = time.perf_counter() - t
    else:
        t = time.perf_counter()
        m = load_model(model)
        out["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        res = super_resolve(thick, m, device="cpu")
        out["seconds"] = time.perf_counter() - t
        out["network_s"] = res.seconds["network_s"]
        out["precision"] = res.precision
        img = res.image
        out["model"] = m.name
    out["output_shape_ijk"] = list(img.geometry.shape_ijk)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def _sizes(threads: int) -> list:
    import torch

    from KneeT2SegmentLib.superres.network import ResidualSRNet, macs_per_voxel

    torch.set_num_threads(threads)
    x = torch.randn(1, 1, 16, 128, 128).contiguous(memory_format=torch.channels_last_3d)
    rows = []
    for depth, width, sep in SIZES:
        net = ResidualSRNet(depth, width, sep).eval().to(memory_format=torch.channels_last_3d)
        row = {"depth": depth, "width": width, "separable": sep}
        for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=bool(dtype)):
                net(x[:, :, :4])
                t = time.perf_counter()
                net(x)
                dt = time.perf_counter() - t
            row[f"volume_s_{name}"] = dt / x.numel() * 384 * 384 * 160
        n_par = sum(p.numel() for p in net.parameters())
        row.update(params=n_par, weights_mb=n_par * 4 / 1e6, macs_per_voxel=macs_per_voxel(depth, width, sep))
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="knee-superres-3x")
    ap.add_argument("--sizes", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "FILE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(_one(a.one[0], a.one[1], a.threads, a.model)))
        return 0
    report = {"cpu": os.cpu_count(), "threads": a.threads, "load_average_before": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "thick.nii.gz"
        _volume(path)
        for _ in range(a.repeats):
            for method in ("tci", "sr"):
                r = subprocess.run([sys.executable, __file__, "--one", method, str(path), "--threads", str(a.threads),
                                    "--model", a.model], capture_output=True, text=True, check=True)
                row = json.loads(r.stdout.strip().splitlines()[-1])
                report["runs"].append(row)
                print(f"{method:4s}: {row['seconds']:6.2f} s (read {row['read_s']:.2f} s), peak RSS "
                      f"{row['peak_rss_mb']:.0f} MB, output {row['output_shape_ijk']}", flush=True)
    best = {m: min(r["seconds"] for r in report["runs"] if r["method"] == m) for m in ("tci", "sr")}
    peak = {m: max(r["peak_rss_mb"] for r in report["runs"] if r["method"] == m) for m in ("tci", "sr")}
    report["best_s"], report["peak_rss_mb"] = best, peak
    print(f"best of {a.repeats}: SR {best['sr']:.1f} s (target <= 60 s), TCI {best['tci']:.2f} s; peak RSS SR "
          f"{peak['sr']:.0f} MB (target <= 4096 MB), TCI {peak['tci']:.0f} MB")
    if a.sizes:
        report["sizes"] = _sizes(a.threads)
        print("depth x width  kernel      params  MB     MACs/voxel  s per 384x384x160 (extrapolated): "
              "float32  bfloat16")
        for r in report["sizes"]:
            kind = "1x3x3+3x1x1" if r["separable"] else "3x3x3"
            print(f"{r['depth']:5d} x {r['width']:<4d}  {kind:11s} {r['params']:8d}  {r['weights_mb']:5.2f}  "
                  f"{r['macs_per_voxel']:10d}  {r['volume_s_float32']:8.1f}  {r['volume_s_bfloat16']:8.1f}")
    report["load_average_after"] = os.getloadavg()
    print(f"load average before {report['load_average_before'][0]:.1f}, after {report['load_average_after'][0]:.1f} "
          f"(other processes share the {os.cpu_count()} cores)")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
