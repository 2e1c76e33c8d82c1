"""Train the femorotibial joint localiser (SiamesePainCAMLib.localiser) on domain-randomised knees.

    python scripts/train_joint_localiser.py --work /work/runs/localiser [--knees 12] [--steps 3000]
    python scripts/train_joint_localiser.py --work /work/runs/localiser --bundle

Renders ``--knees`` randomised knees per training label map (localiser_training: random contrast,
acquisition, pose, field of view, noise), keeps their slices near the joint as samples
(``WORK/samples_train.npz``, ``WORK/samples_validation.npz``; reused when present; never in the
repository), trains, and reports the per-knee error (median over the knee's slices, mm) on the
validation subjects. Split: the pain model's held-out subjects (9055361, 9057479) are left out
entirely; 9002817, 9004175, 9005132 are validation; every other label map trains.
``--bundle`` copies ``WORK/knee-joint-localiser.pt`` to ``Resources/Models/`` and updates its size
and SHA-256 in ``Resources/Models.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "SiamesePainCAM")]

HELD_OUT = ("9055361", "9057479")
VALIDATION = ("9002817", "9004175", "9005132")


def _samples_of(args):
    path, knees, seed = args
    import torch

    torch.set_num_threads(1)
    from mskquant.imageio import read_image
    from SiamesePainCAMLib import localiser_training as lt
    from SiamesePainCAMLib import simulator as sim

    anatomy = sim.build_anatomy(read_image(path, "Knee label map"), path.name.split(".")[0], seed=seed)
    return lt.anatomy_samples(anatomy, knees, seed)


def build(files, knees, seed, workers, out: Path):
    import numpy as np

    from SiamesePainCAMLib import localiser_training as lt

    if out.is_file():
        d = np.load(out)
        return lt.Samples(d["canvases"], d["targets"], d["knee"])
    jobs = [(f, knees, seed + n) for n, f in enumerate(files)]
    parts = []
    with ProcessPoolExecutor(workers) as pool:
        for n, s in enumerate(pool.map(_samples_of, jobs)):
            parts.append(s)
            print(f"  {jobs[n][0].name}: {len(s.targets)} slices", flush=True)
    samples = lt.Samples.concatenate(parts)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, canvases=samples.canvases, targets=samples.targets, knee=samples.knee)
    tmp.replace(out)
    return samples


def bundle(work: Path) -> int:
    import shutil

    from mskquant.models import sha256_of

    src = work / "knee-joint-localiser.pt"
    dst = ROOT / "Resources" / "Models" / "knee-joint-localiser.pt"
    shutil.copyfile(src, dst)
    reg_path = ROOT / "Resources" / "Models.json"
    reg = json.loads(reg_path.read_text())
    for m in reg["models"]:
        if m["id"] == "knee-joint-localiser":
            m["files"][0].update(sha256=sha256_of(dst), size_bytes=dst.stat().st_size)
    reg_path.write_text(json.dumps(reg, indent=2) + "\n")
    print(f"bundled {dst} ({dst.stat().st_size} bytes, sha256 {sha256_of(dst)})")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labelmaps", default=str(ROOT.parent / "shared" / "data" / "knee_labelmaps"))
    ap.add_argument("--work", required=True)
    ap.add_argument("--knees", type=int, default=12, help="randomised knees per training label map")
    ap.add_argument("--validation-knees", type=int, default=6)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bundle", action="store_true", help="bundle WORK/knee-joint-localiser.pt and stop")
    a = ap.parse_args(argv)
    work = Path(a.work)
    if a.bundle:
        return bundle(work)
    import numpy as np
    import torch

    from SiamesePainCAMLib import localiser_training as lt
    from SiamesePainCAMLib import simulator as sim

    work.mkdir(parents=True, exist_ok=True)
    files = [f for f in sim.label_map_files(Path(a.labelmaps)) if sim.subject_of(f) not in HELD_OUT]
    train_files = [f for f in files if sim.subject_of(f) not in VALIDATION]
    val_files = [f for f in files if sim.subject_of(f) in VALIDATION]
    t0 = time.time()
    print(f"rendering: {len(train_files)} training maps x {a.knees}, {len(val_files)} validation maps", flush=True)
    train = build(train_files, a.knees, a.seed, a.workers, work / "samples_train.npz")
    val = build(val_files, a.validation_knees, a.seed + 1000, a.workers, work / "samples_validation.npz")
    print(f"samples: {len(train.targets)} training, {len(val.targets)} validation slices ({time.time() - t0:.0f} s)",
          flush=True)
    torch.set_num_threads(a.threads)
    t1 = time.time()

    def report(frac, msg):
        print(f"  {msg}", flush=True)

    net = lt.train(train, a.steps, lr=a.lr, seed=a.seed, progress=report)
    err = lt.errors_mm(net, val)
    torch.save(net.state_dict(), str(work / "knee-joint-localiser.pt"))
    summary = {"training_slices": int(len(train.targets)), "training_knees": int(train.knee.max() + 1),
               "steps": a.steps, "train_s": round(time.time() - t1, 1),
               "validation_knees": int(len(err)), "validation_error_mm": {
                   "median": float(np.median(err)), "p90": float(np.percentile(err, 90)), "max": float(err.max())}}
    (work / "training.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
