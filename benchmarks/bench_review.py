#!/usr/bin/env python
"""MSKQuant Review in a real browser (headless Chromium): how soon a reader can work, and how fast
V_HI follows a stroke. Target: stroke -> updated V_HI on screen <= 300 ms on 2 cores.

* **server start**: ``mskquant review CASE`` started -> listening with the case loaded;
* **first request -> interactive view**: the page requested -> the slice view shows an image and the
  thresholds and V_HI are on the page (what the reader waits for when opening the address);
* **erase stroke -> V_HI**: mouse released after erasing a lesion the page shows -> the new voxel count
  on the page (Playwright polls the page each animation frame), ``--strokes`` strokes on the most
  inflamed slices;
* **ROI stroke -> thresholds**: the same for a stroke of normal-bone ROI (thresholds and both masks
  recomputed: VHIWorkflowLib.results.rethreshold);
* baseline: the logic alone in-process, no browser (``VHILogic.recompute`` after an erase, and
  ``rethreshold``): what the round trip and rendering add is the difference.

Input: the real SIJ subject 1007 from ``../shared/data`` (its expert disease region and ROI), else the
synthetic SIJ case.

    .venv/bin/python benchmarks/bench_review.py [--strokes 8] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "VHIWorkflow"), str(ROOT / "Testing")]
GOAL_MS = 300.0


def make_case(work: Path) -> "tuple[Path, str]":
    from mskquant.cli import main

    sij = ROOT.parent / "shared" / "data" / "sij" / "1007"
    if (sij / "STIR.nii.gz").is_file():
        stir, roi, dr, what = sij / "STIR.nii.gz", sij / "normal_marrow.nii.gz", sij / "disease_region.nii.gz", \
            "real SIJ subject 1007 (336x336x25)"
    else:
        from conftest import write_vhi_case_files

        write_vhi_case_files(work / "inputs")
        stir, roi, dr = list((work / "inputs" / n for n in ("STIR.nii.gz", "ROI.nii.gz", "DR.nii.gz")))
        what = "synthetic SIJ case (../shared/data absent)"
    out = work / "case"
    assert main(["vhi", "-q", "--stir", str(stir), "--normal-roi", str(roi), "--disease-region", str(dr),
                 "--out", str(out)]) == 0
    return out, what


def logic_baseline(case: Path, repeats: int = 5) -> dict:
    import numpy as np

    from mskquant import mrml
    from mskquant.headless import create_headless_runtime
    from mskquant.review.cases import find_cases
    from mskquant.review.vhi_session import VHIReviewSession
    from VHIWorkflowLib.logic import SEGMENT_STYLE
    from VHIWorkflowLib.results import rethreshold

    s = VHIReviewSession(create_headless_runtime(), find_cases(case)[0], "bench")
    name = "Inflammation (sensitive)"
    times, roi_times = [], []
    for _ in range(repeats):
        m = s.masks()[name]
        k = int(np.argmax(m.reshape(m.shape[0], -1).sum(axis=1)))
        m[k, :, : m.shape[2] // 2] = False
        mrml.set_segment(s.segmentation, mrml.SegmentSpec(name, m, *SEGMENT_STYLE[name]), s.geometry)
        t = time.perf_counter()
        s.on_segmentation_modified()
        s.figures()
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        rethreshold(s.logic, s.segmentation)
        roi_times.append(time.perf_counter() - t)
    return {"erase_ms": 1000 * statistics.median(times), "roi_ms": 1000 * statistics.median(roi_times)}


def browser_figures(case: Path, strokes: int, viewport: "tuple[int, int]") -> dict:
    from review_browser import (browser_page, colour_centre, number, review_server, stroke, view_box, view_pixels,
                                wait_number_change)

    red = (0.9, 0.1, 0.1)
    t0 = time.perf_counter()
    with review_server(case, reader="bench") as (url, _):
        started = time.perf_counter() - t0
        with browser_page(*viewport) as page:
            t = time.perf_counter()
            page.goto(url)
            box = view_box(page)  # the view's image has arrived
            page.wait_for_function("() => document.getElementById('vhi-sensitive-voxels')"
                                   " && document.getElementById('vhi-sensitive-voxels').innerText.trim() !== ''")
            interactive = time.perf_counter() - t
            page.wait_for_timeout(1000)
            page.click("#segment-2")
            page.click("#tool-erase")
            page.focus("#views")
            for _ in range(5):
                page.keyboard.press("]")  # brush 10 mm
            erase, missed = [], 0
            for _ in range(strokes):
                page.click("#slice-max")
                page.wait_for_timeout(1000)  # the new slice's frame
                centre = colour_centre(view_pixels(page, box), red)
                if centre is None:
                    break
                before = number(page, "vhi-sensitive-voxels")
                stroke(page, box, centre[0] - 6, centre[1], dx=12, steps=4)
                t = time.perf_counter()
                try:
                    wait_number_change(page, "vhi-sensitive-voxels", before, timeout_ms=5000)
                    erase.append(time.perf_counter() - t)
                except Exception:  # the stroke missed the lesion (no change): not a latency
                    missed += 1
            page.click("#segment-1")
            page.click("#tool-paint")
            roi = []
            for i in range(3):
                before = number(page, "vhi-roi-voxels")
                stroke(page, box, box["width"] * (0.40 + 0.05 * i), box["height"] * 0.62, dx=20, steps=4)
                t = time.perf_counter()
                wait_number_change(page, "vhi-roi-voxels", before)
                roi.append(time.perf_counter() - t)
    return {"server_start_s": started, "first_request_to_interactive_s": interactive,
            "erase_ms": [1000 * x for x in erase], "erase_missed": missed, "roi_ms": [1000 * x for x in roi]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strokes", type=int, default=8)
    ap.add_argument("--viewport", default="1400x900", help="browser window, WxH (the view takes most of it)")
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        case, what = make_case(Path(tmp))
        base = logic_baseline(case)
        fig = browser_figures(case, args.strokes, tuple(int(x) for x in args.viewport.split("x")))
    e, r = fig["erase_ms"], fig["roi_ms"]
    print(f"input: {what}; browser window {args.viewport}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"server start (case loaded, listening)          {fig['server_start_s']:.2f} s")
    print(f"first request -> interactive slice view        {fig['first_request_to_interactive_s']:.2f} s")
    print(f"erase stroke -> V_HI on screen ({len(e)} strokes)    median {statistics.median(e):.0f} ms, "
          f"best {min(e):.0f} ms, worst {max(e):.0f} ms (target <= {GOAL_MS:.0f} ms: "
          f"{'met' if statistics.median(e) <= GOAL_MS else 'NOT met'}); strokes that changed nothing: "
          f"{fig['erase_missed']}")
    print(f"ROI stroke -> thresholds on screen ({len(r)})        median {statistics.median(r):.0f} ms, "
          f"worst {max(r):.0f} ms")
    print(f"baseline, logic alone in-process: after an erase {base['erase_ms']:.0f} ms, rethreshold "
          f"{base['roi_ms']:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"input": what, **fig, "baseline": base}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
