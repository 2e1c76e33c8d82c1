#!/usr/bin/env python
"""Cohort throughput of ``mskquant batch knee-t2`` against a shell loop (issue 11), one run.

N knee-t2 cases (``--cases``, default 20) of OAI-size MESE phantoms (384x269x21, 7 echoes)
without masks, so every case runs the bundled cartilage segmentation model, the T2 fit and
the 12 subregions. The phantoms are simulated from ``../shared/data/knee_labelmaps`` when
present (else the analytic knee); ``--distinct K`` (default 4) phantoms are simulated and the
cases cycle through copies of them (each case its own files).

* (a) a shell loop calling ``mskquant knee-t2`` once per case (bash ``for``, a new process each);
* (b) ``mskquant batch knee-t2`` with 1 worker; (c) with 2 workers (whole commands: cluster
  start-up included).

Reports cases/hour of each, (b)/(a), the per-case time split of (b) and (c) from their
``status.csv`` (read / network / fit and subregions / write; medians) and the peak resident
memory of each worker process. Targets: (b) >= 2.5x (a); >= 1,500 volumes/hour on 2 cores;
peak memory per worker <= 2 GB. Also checks that every batch case equals the loop's
(``subregions.csv`` to 1e-6).

    .venv/bin/python benchmarks/bench_batch.py [--cases 20] [--distinct 4] [--precision bfloat16] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_SPEEDUP, GOAL_PER_HOUR, GOAL_PEAK_MB = 2.5, 1500.0, 2048.0


def env() -> dict:
    paths = [ROOT / p for p in ("", "VHIWorkflow", "KneeT2Segment", "SiamesePainCAM")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)), "MSKQUANT_DEVICE": "cpu"}


def make_cases(work: Path, n: int, distinct: int, precision: str = "float32") -> Path:
    """``distinct`` phantoms (knee-phantom), ``n`` case folders of copies, and the manifest
    (with a ``precision`` column: the network's arithmetic of every case)."""
    shared = ROOT.parent / "shared" / "data" / "knee_labelmaps"
    maps = sorted(shared.glob("*.nii.gz"))[:distinct] if shared.is_dir() else []
    if not maps:
        sys.path[:0] = [str(ROOT), str(ROOT / "KneeT2Segment")]
        from KneeT2SegmentLib.anatomy import analytic_knee
        from mskquant.imageio import write_image

        write_image(analytic_knee(), work / "analytic.nii.gz")
        maps = [work / "analytic.nii.gz"] * distinct
    for k, labelmap in enumerate(maps):
        subprocess.run([sys.executable, "-m", "mskquant.cli", "knee-phantom", "-q", "--labelmap", str(labelmap),
                        "--seed", str(k), "--out", str(work / f"phantom{k}")], check=True, env=env())
    rows = []
    for i in range(n):
        src, case = work / f"phantom{i % len(maps)}", f"case{i:03d}"
        (work / "cases" / case).mkdir(parents=True)
        for name in ("mese.nii.gz", "te.json", "mese.json"):
            shutil.copy(src / name, work / "cases" / case / name)
        rows.append([case, f"cases/{case}/mese.nii.gz", precision])
    with open(work / "cohort.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["case", "mese", "precision"], *rows])
    print(f"{n} cases from {len(maps)} phantom(s) of {'real label maps' if shared.is_dir() else 'the analytic knee'}")
    return work / "cohort.csv"


def shell_loop(work: Path, n: int, precision: str = "float32") -> float:
    script = ('for c in $(seq -f "case%03g" 0 $((N-1))); do '
              '"$PY" -m mskquant.cli knee-t2 -q --mese "$W/cases/$c/mese.nii.gz" --precision "$P" --out "$W/loop/$c" '
              '>/dev/null || exit 1; done')
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True,
                   env={**env(), "N": str(n), "PY": sys.executable, "W": str(work), "P": precision})
    return time.perf_counter() - t0


def batch(work: Path, manifest: Path, workers: int) -> tuple:
    """Whole ``mskquant batch`` command; also the time each case's progress line appeared."""
    out = work / f"batch{workers}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mskquant.cli", "batch", "knee-t2", "--manifest", str(manifest),
                             "--out", str(out), "--workers", str(workers)], env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines, stamps = [], []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("["):
            stamps.append(time.perf_counter() - t0)
    err = proc.stderr.read()
    seconds = time.perf_counter() - t0
    if proc.wait() != 0:
        raise SystemExit(f"batch with {workers} worker(s) failed:\n{''.join(lines)}\n{err}")
    with open(out / "status.csv", newline="") as fh:
        status = list(csv.DictReader(fh))
    return seconds, status, out, stamps


def steady_per_hour(stamps) -> float:
    """Cases/hour between the first and the last finished case (cluster start-up and first case left out)."""
    return 3600.0 * (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")


def split(status) -> dict:
    med = {k: statistics.median(float(r[k]) for r in status) for k in ("seconds", "read_s", "network_s", "compute_s",
                                                                         "write_s")}
    peak = {}
    for r in status:
        peak[r["worker"]] = max(peak.get(r["worker"], 0.0), float(r["worker_peak_mb"]))
    return {**med, "peak_mb_per_worker": sorted(peak.values())}


def same_results(loop: Path, out: Path, cases) -> float:
    """Largest relative difference of subregions.csv numbers between the loop and the batch."""
    worst = 0.0
    for c in cases:
        a = list(csv.reader(open(loop / c / "subregions.csv")))
        b = list(csv.reader(open(out / "cases" / c / "subregions.csv")))
        for ra, rb in zip(a[1:], b[1:]):
            for x, y in zip(ra[4:], rb[4:]):
                if x != y:
                    fx, fy = float(x or "nan"), float(y or "nan")
                    worst = max(worst, abs(fx - fy) / max(abs(fx), abs(fy), 1e-12))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--distinct", type=int, default=4, help="phantoms simulated (cases cycle through copies)")
    ap.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                    help="the segmentation network's arithmetic in every run (knee-t2 --precision)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        manifest = make_cases(work, a.cases, min(a.distinct, a.cases), a.precision)
        load = [os.getloadavg()[0]]  # other jobs on the cores distort the figures: say how busy it was
        loop_s = shell_loop(work, a.cases, a.precision)
        load.append(os.getloadavg()[0])
        b1_s, s1, out1, st1 = batch(work, manifest, 1)
        load.append(os.getloadavg()[0])
        b2_s, s2, out2, st2 = batch(work, manifest, 2)
        load.append(os.getloadavg()[0])
        cases = [r["case"] for r in s1]
        diff = max(same_results(work / "loop", out1, cases), same_results(work / "loop", out2, cases))
    per_hour = {k: 3600.0 * a.cases / v for k, v in (("loop", loop_s), ("batch1", b1_s), ("batch2", b2_s))}
    per_hour_loop = per_hour["loop"]  # every case of the loop pays the start-up
    figures = {"cases": a.cases, "precision": a.precision, "seconds": {"loop": loop_s, "batch1": b1_s, "batch2": b2_s}, "cases_per_hour": per_hour,
               "speedup_batch1_vs_loop": loop_s / b1_s, "speedup_batch2_vs_loop": loop_s / b2_s,
               "split_batch1": split(s1), "split_batch2": split(s2), "max_relative_difference": diff,
               "load_average_1min": load, "first_case_done_s": {"batch1": st1[0], "batch2": st2[0]},
               "steady_cases_per_hour": {"loop": per_hour_loop, "batch1": steady_per_hour(st1),
                                         "batch2": steady_per_hour(st2)}}
    print(f"{a.cases} knee-t2 cases (OAI-size MESE, automatic segmentation, network in {a.precision}) on "
          f"{os.cpu_count()} cores")
    print(f"{'run':<28} {'total s':>8} {'cases/h':>9} {'steady cases/h':>15} {'first case done s':>18}")
    for key, name in (("loop", "(a) shell loop knee-t2"), ("batch1", "(b) batch, 1 worker"),
                      ("batch2", "(c) batch, 2 workers")):
        first = figures["first_case_done_s"].get(key)
        print(f"{name:<28} {figures['seconds'][key]:8.1f} {per_hour[key]:9.0f} "
              f"{figures['steady_cases_per_hour'][key]:15.0f} {'' if first is None else f'{first:.1f}':>18}")
    print(f"(b)/(a) {figures['speedup_batch1_vs_loop']:.2f}x (goal >= {GOAL_SPEEDUP}x: "
          f"{'met' if figures['speedup_batch1_vs_loop'] >= GOAL_SPEEDUP else 'NOT met'}); (c)/(a) "
          f"{figures['speedup_batch2_vs_loop']:.2f}x; best {max(per_hour.values()):.0f} volumes/h (goal >= "
          f"{GOAL_PER_HOUR:.0f}: {'met' if max(per_hour.values()) >= GOAL_PER_HOUR else 'NOT met'})")
    for key, name in (("split_batch1", "(b)"), ("split_batch2", "(c)")):
        s = figures[key]
        peak = max(s["peak_mb_per_worker"])
        print(f"{name} per case (median s): total {s['seconds']:.2f} = read {s['read_s']:.2f} + network "
              f"{s['network_s']:.2f} + fit/subregions {s['compute_s']:.2f} + write {s['write_s']:.2f}; peak memory "
              f"per worker {', '.join(f'{m:.0f}' for m in s['peak_mb_per_worker'])} MB (goal <= {GOAL_PEAK_MB:.0f}: "
              f"{'met' if peak <= GOAL_PEAK_MB else 'NOT met'})")
    print(f"batch results vs the loop's: largest relative difference {diff:.2g} (subregions.csv)")
    print(f"1-minute load average before (a), (b), (c) and after: {', '.join(f'{v:.1f}' for v in load)} "
          f"(above {os.cpu_count()}: other jobs shared the cores)")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
