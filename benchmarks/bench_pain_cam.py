"""Benchmark: one subject (46 slices: 23 per knee) with CAMs, SiamesePainCAM, on 2 CPU cores.

Target (issue 6): <= 2 s for one subject with CAMs on 2 CPU cores. Timed, on one simulated
pair (448 x 448 x 37 per knee, like the OAI SAG IW TSE), median of repeated runs after a
warm-up:

* ``analysis``: both knees pre-processed (centre-slice estimate, joint localiser, alignment
  of 23 slices to the template, crop, resize), the network on all 46 slices with CAMs, and both CAMs mapped
  back onto the input grids — the whole ``pipeline.analyse_pair`` with the bundled model;
* ``end to end``: as ``mskquant pain-cam`` does it — read both NIfTI files, run the Slicer
  logic (nodes, table, CAM volumes) and write pain.json, pain.csv, two CAM volumes and the
  overlay PNG;
* baselines measured in the same run: the analysis without the joint localiser; network + CAMs on the same 46 slices only: the demo
  network as plain PyTorch (no batch-norm folding, no channels-last), and the paper's
  full-width branch (64-128-256-256-512-512), which is why the demo model is narrower.

Run: ``python benchmarks/bench_pain_cam.py`` (``--repeats N``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "SiamesePainCAM"):
    sys.path.insert(0, str(p))
os.environ.setdefault("MSKQUANT_DEVICE", "cpu")


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from mskquant import mrml
    from mskquant.atomic import OutputFolder
    from mskquant.device import select_device
    from mskquant.headless import create_headless_runtime
    from mskquant.imageio import write_image
    from mskquant.models import ModelStore
    from mskquant.unet import load_weights

    from SiamesePainCAMLib import network, simulator as sim
    from SiamesePainCAMLib.cam import predict
    from SiamesePainCAMLib.logic import OUTPUT_FILES, PainCAMLogic
    from SiamesePainCAMLib.pipeline import analyse_pair, load_pain_model

    anatomy = sim.build_anatomy(sim.analytic_knee_labels(), "analytic", seed=99)
    pair = sim.simulate_pair(anatomy, np.random.default_rng(1), "bench", painful_side="left", lesion_kind="effusion")
    store = ModelStore()
    spec = store.registry.get("siamese-pain-demo")
    device = select_device("cpu")
    model = load_pain_model(store.ensure(spec.id)[0], spec.architecture, device, spec.id)

    print(f"CPU threads: {torch.get_num_threads()}; input: 2 x {pair.left.image.geometry.describe()}; "
          f"model {spec.id} widths {spec.architecture['params']['widths']}")
    med, best = timed(lambda: analyse_pair(model, pair.left.image, pair.right.image), args.repeats)
    res = analyse_pair(model, pair.left.image, pair.right.image)
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in res.timings_s.items() if k != "total")
    print(f"analysis (46 slices + CAMs on the input grids): median {med:.2f} s, best {best:.2f} s  ({parts})")
    bare = load_pain_model(store.ensure(spec.id)[0], spec.architecture, device, spec.id, localiser=None)
    med_bare, _ = timed(lambda: analyse_pair(bare, pair.left.image, pair.right.image), args.repeats)
    print(f"  the same without the joint localiser (template alignment alone): median {med_bare:.2f} s; "
          f"the localiser adds {med - med_bare:+.2f} s ({med / med_bare:.2f}x)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_image(pair.left.image, tmp / "L.nii.gz")
        write_image(pair.right.image, tmp / "R.nii.gz")
        rt = create_headless_runtime()
        logic = PainCAMLogic(rt, store)
        counter = iter(range(10 ** 6))

        def end_to_end():
            rt.clear()
            left = mrml.load_volume(rt, tmp / "L.nii.gz", "L")
            right = mrml.load_volume(rt, tmp / "R.nii.gz", "R")
            r = logic.run(left, right)
            with OutputFolder(tmp / f"out{next(counter)}", OUTPUT_FILES) as out:
                logic.export(r, out.stage)

        med_e2e, best_e2e = timed(end_to_end, args.repeats)
    print(f"end to end (read NIfTI, Slicer logic, write the 5 output files): median {med_e2e:.2f} s, best {best_e2e:.2f} s")

    left, right = res.prepared["left"].planes, res.prepared["right"].planes
    plain = network.build_network(spec.architecture["params"])
    load_weights(plain, store.ensure(spec.id)[0])  # a bare state dict or pain-train's {state_dict, architecture}
    plain.eval()
    med_fast, _ = timed(lambda: predict(model.network, left, right, device), args.repeats)
    med_plain, _ = timed(lambda: predict(plain, left, right, device), args.repeats)
    paper = network.SiamesePainNet(network.PAPER_WIDTHS).eval()
    med_paper, _ = timed(lambda: predict(paper, left, right, device), max(1, args.repeats // 2))
    print(f"network + CAMs only, 46 slices: demo model (BN folded, channels-last) {med_fast:.3f} s; "
          f"same as plain PyTorch {med_plain:.3f} s ({med_plain / med_fast:.1f}x); "
          f"paper widths 64..512 {med_paper:.2f} s ({med_paper / med_fast:.0f}x the demo model)")
    target = 2.0
    print(f"target <= {target:.1f} s for one subject with CAMs: analysis {'MET' if med <= target else 'NOT MET'} "
          f"({med:.2f} s), end to end {'MET' if med_e2e <= target else 'NOT MET'} ({med_e2e:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
