"""Disease-region ensemble speed: straightforward fp32 PyTorch vs the project's inference path.

Baseline: the three published models in eval mode, the whole 336x336x25 volume as one batch
(what a plain PyTorch script does). Project: BN folded into the convolutions, channels-last
layout, one slice per forward pass (``mskquant.inference``), same float32 arithmetic.
Reports seconds (best and median of the repeats), the speed-up and the Dice agreement of
the two masks. Uses ../shared data and weights when present; otherwise random weights on a
synthetic volume (timings only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "VHIWorkflow")]

from mskquant.inference import prepare_for_inference  # noqa: E402
from mskquant.metrics import dice  # noqa: E402
from mskquant.models import ModelRegistry  # noqa: E402
from mskquant.unet import build_unet, load_weights  # noqa: E402
from VHIWorkflowLib.disease_region import network_slices, normalise, predict_probability  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    torch.set_num_threads(2)
    spec = ModelRegistry().get("sij-disease-region")
    shared = ROOT.parent / "shared" / "data"
    nets = [build_unet(spec.architecture["params"]).eval() for _ in range(3)]
    if (shared / "sij_models" / "model_1.pt").is_file():
        for n, net in enumerate(nets, start=1):
            load_weights(net, shared / "sij_models" / f"model_{n}.pt")
        from mskquant.imageio import read_image

        t1 = read_image(shared / "sij" / "2014" / "T1W.nii.gz")
        data = "SIJ subject 2014 (published weights)"
        array, geometry = t1.array, t1.geometry
    else:
        from mskquant.image import Geometry

        geometry = Geometry.from_spacing((336, 336, 25), (0.595, 0.595, 3.3), (0, 0, 0), np.diag([-1.0, 1.0, 1.0]))
        array = np.random.default_rng(0).gamma(2.0, 100.0, geometry.shape_kji).astype(np.float32)
        data = "synthetic volume, random weights (../shared absent)"
    x = torch.from_numpy(network_slices(normalise(array)))  # (25, 1, 336, 336)

    def baseline():
        with torch.no_grad():
            return (sum(net(x) for net in nets) / 3)[:, 0].numpy()

    fast = [prepare_for_inference(net, torch.device("cpu")) for net in nets]

    def project():
        return predict_probability(array, geometry, fast, torch.device("cpu"))

    def timed(fn):
        fn()  # warm-up (oneDNN primitive creation)
        times, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return times, out

    t_base, p_base = timed(baseline)
    t_fast, p_fast = timed(project)
    base_mask = p_base[:, ::-1, :] >= 0.5  # back to the volume's row order
    agreement = dice(base_mask, p_fast >= 0.5)
    result = {
        "data": data, "slices": int(x.shape[0]), "threads": torch.get_num_threads(),
        "baseline_s": {"best": min(t_base), "median": statistics.median(t_base)},
        "project_s": {"best": min(t_fast), "median": statistics.median(t_fast)},
        "speedup_best": min(t_base) / min(t_fast), "speedup_median": statistics.median(t_base) / statistics.median(t_fast),
        "mask_dice_vs_baseline": agreement,
        "max_probability_difference": float(np.abs(p_base[:, ::-1, :] - p_fast).max()),
        "target": "project <= 4 s, Dice >= 0.999",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["project_s"]["best"] <= 4.0 and agreement >= 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())
