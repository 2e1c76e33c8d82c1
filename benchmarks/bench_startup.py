#!/usr/bin/env python
"""Start-up cost of the ``mskquant`` command (issue 9 item 4), whole processes, median of 5.

Targets: ``mskquant --help``, ``mskquant info`` and ``mskquant models list`` answer in
<= 0.5 s; a single-case command (``vhi``, ``knee-t2``, ``pain-cam``) costs <= 1.5 s above
its computation.

* **cold**: the command as a user runs it, a new process each time (``python -m
  mskquant.cli ...``, fresh output folder), wall time from start to exit, median of
  ``--runs`` (5) after one warm-up run that fills the OS file cache;
* **warm**: the same command run again inside one process that has already run it once
  (every library imported, the headless scene and the model loaded once): what is left is
  the computation and the files; median of ``--runs``;
* **start-up** = cold - warm: what a run pays before (and around) its computation.

Inputs: a real SIJ case (``vhi`` with its expert disease region, no network), a MESE phantom
of a real knee label map with its true cartilage mask (``knee-t2``) and one simulated
left/right pair (``pain-cam``), all from ``../shared/data``; without it the analytic knee and
the synthetic SIJ case are used. ``--code-root DIR`` times another checkout's code (e.g. the
commit before a change: ``git archive <commit> | tar -x -C DIR``) with the same inputs.

    .venv/bin/python benchmarks/bench_startup.py [--runs 5] [--code-root DIR] [--only help,info] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS_S = {"--help": 0.5, "info": 0.5, "models list": 0.5}
GOAL_OVERHEAD_S = 1.5


def env_for(code_root: Path) -> dict:
    paths = [code_root / p for p in ("", "VHIWorkflow", "KneeT2Segment", "SiamesePainCAM")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)), "MSKQUANT_DEVICE": "cpu"}


def prepare_inputs(work: Path, env: dict) -> dict:
    """Argument lists (``{out}`` marks the output folder) of the three single-case commands."""
    shared = ROOT.parent / "shared" / "data"
    cmds = {}
    sij = shared / "sij" / "1007"
    if (sij / "STIR.nii.gz").is_file():
        cmds["vhi"] = ["vhi", "-q", "--stir", sij / "STIR.nii.gz", "--normal-roi", sij / "normal_marrow.nii.gz",
                       "--disease-region", sij / "disease_region.nii.gz", "--out", "{out}"]
    else:
        sys.path[:0] = [str(ROOT), str(ROOT / "VHIWorkflow")]
        import numpy as np
        from mskquant.imageio import write_image
        from VHIWorkflowLib.synthetic import make_case

        case = make_case()
        write_image(case.stir, work / "STIR.nii.gz")
        write_image(case.normal_roi.with_array(case.normal_roi.array.astype(np.uint8)), work / "ROI.nii.gz")
        write_image(case.disease_region.with_array(case.disease_region.array.astype(np.uint8)), work / "DR.nii.gz")
        cmds["vhi"] = ["vhi", "-q", "--stir", work / "STIR.nii.gz", "--normal-roi", work / "ROI.nii.gz",
                       "--disease-region", work / "DR.nii.gz", "--out", "{out}"]
    labelmap = shared / "knee_labelmaps" / "9014797_00m.nii.gz"
    if labelmap.is_file():
        subprocess.run([sys.executable, "-m", "mskquant.cli", "knee-phantom", "-q", "--labelmap", str(labelmap),
                        "--snr", "40", "--out", str(work / "knee")], check=True, env=env)
        cmds["knee-t2"] = ["knee-t2", "-q", "--mese", work / "knee" / "mese.nii.gz", "--mask",
                           work / "knee" / "truth_cartilage.nii.gz", "--out", "{out}"]
    subprocess.run([sys.executable, "-m", "mskquant.cli", "pain-phantom", "-q", "--pairs", "1", "--out",
                    str(work / "pain")], check=True, env=env)
    cmds["pain-cam"] = ["pain-cam", "-q", "--left", work / "pain" / "pain_000_left.nii.gz", "--right",
                        work / "pain" / "pain_000_right.nii.gz", "--out", "{out}"]
    return {k: [str(a) for a in v] for k, v in cmds.items()}


def _with_out(args, out: Path):
    return [str(out) if a == "{out}" else a for a in args]


def cold(args, env: dict, runs: int, work: Path) -> list:
    times = []
    for n in range(runs + 1):
        out = work / f"cold-{args[0]}-{n}"
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mskquant.cli", *_with_out(args, out)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed: {r.stderr.strip()}")
        if n:  # the first run only warms the file cache
            times.append(t)
    return times


def warm(args, runs: int, work: Path) -> list:
    """Run in a child process (``--warm``): the command once untimed, then ``runs`` timed in-process."""
    import contextlib
    import io

    from mskquant.cli import main

    times = []
    for n in range(runs + 1):
        out = work / f"warm-{args[0]}-{n}"
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(_with_out(args, out))
        if rc != 0:
            raise SystemExit(f"{' '.join(args)} failed in-process (exit {rc})")
        if n:
            times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--code-root", type=Path, default=ROOT, help="checkout whose code is timed (default: this one)")
    ap.add_argument("--only", help="comma-separated subset: --help,info,models list,vhi,knee-t2,pain-cam")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--warm", help=argparse.SUPPRESS)  # internal: JSON [args, runs, work]
    a = ap.parse_args()
    if a.warm:
        args, runs, work = json.loads(a.warm)
        print(json.dumps(warm(args, runs, Path(work))))
        return 0
    env = env_for(a.code_root.resolve())
    only = set(a.only.split(",")) if a.only else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        for name in ("--help", "info", "models list"):
            if only is None or name in only:
                t = cold(name.split(), env, a.runs, work)
                rows.append({"command": name, "cold_s": statistics.median(t), "goal_s": GOALS_S[name]})
        if only is None or only & {"vhi", "knee-t2", "pain-cam"}:
            cmds = prepare_inputs(work, env)
            for name, args in cmds.items():
                if only is not None and name not in only:
                    continue
                c = statistics.median(cold(args, env, a.runs, work))
                r = subprocess.run([sys.executable, __file__, "--warm", json.dumps([args, a.runs, str(work)])],
                                   env=env, capture_output=True, text=True)
                if r.returncode != 0:
                    raise SystemExit(r.stderr)
                w = statistics.median(json.loads(r.stdout.strip().splitlines()[-1]))
                rows.append({"command": name, "cold_s": c, "warm_s": w, "startup_s": c - w,
                             "goal_startup_s": GOAL_OVERHEAD_S})
    print(f"code: {a.code_root.resolve()}; median of {a.runs} whole processes (+1 warm-up each)")
    print(f"{'command':<12} {'cold s':>7} {'warm s':>7} {'start-up s':>10}  goal")
    for r in rows:
        if "warm_s" in r:
            ok = "met" if r["startup_s"] <= r["goal_startup_s"] else "NOT met"
            print(f"{r['command']:<12} {r['cold_s']:7.2f} {r['warm_s']:7.2f} {r['startup_s']:10.2f}  "
                  f"<= {r['goal_startup_s']} s above the computation: {ok}")
        else:
            ok = "met" if r["cold_s"] <= r["goal_s"] else "NOT met"
            print(f"{r['command']:<12} {r['cold_s']:7.2f} {'':>7} {'':>10}  <= {r['goal_s']} s: {ok}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
