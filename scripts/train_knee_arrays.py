"""knee-train's randomised training on a machine that cannot read the label-map files (a lent GPU machine).

Three steps. Where SimpleITK is installed (the project's environment), write the training and
validation knees of knee-train's split (seed 0: test subjects held out, never written) as
compressed arrays; on the training machine (numpy, scipy and torch only), train from them with
the same library code as ``mskquant knee-train --generator randomised``, the samples made by
worker processes (``--workers``):

    .venv/bin/python scripts/train_knee_arrays.py convert --labelmaps ../shared/data/knee_labelmaps --out .dev/labels
    python3 scripts/train_knee_arrays.py train --arrays .dev/labels --out /tmp/run --minutes 6.4 --workers 14 \\
        --init-from Resources/Models/knee-femoral-cartilage-mese.pt --fixed-joint-shell

Then, back in the project's environment, record the split and calibrate the thresholds:

    .venv/bin/python scripts/train_knee_arrays.py finish --model /tmp/run/best.pt --labelmaps ../shared/data/knee_labelmaps --out model.pt
    .venv/bin/mskquant knee-calibrate --model model.pt --labelmaps ../shared/data/knee_labelmaps --out cal
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "KneeT2Segment"):
    sys.path.insert(0, str(p))

SPLIT = dict(n_test=3, n_validation=2, seed=0)  # knee-train's defaults


def convert(args) -> None:
    import numpy as np

    from mskquant.imageio import read_image
    from KneeT2SegmentLib import training as tr

    split = tr.split_subjects(tr.label_maps_in(args.labelmaps), **SPLIT)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for part in ("train", "validation"):
        for path in getattr(split, part):
            image = read_image(path, "Knee label map")
            np.savez_compressed(out / f"{part}__{path.name.split('.')[0]}.npz", array=image.array.astype(np.uint8),
                                ijk_to_ras=image.geometry.ijk_to_ras, shape_ijk=np.array(image.geometry.shape_ijk))
    print(f"train {split.subjects('train')}, validation {split.subjects('validation')} -> {out} "
          f"(test {split.subjects('test')} not written)")


def load_array(path: str):
    import numpy as np

    from mskquant.image import Geometry, Image
    from KneeT2SegmentLib import anatomy as an

    d = np.load(path)
    subject = os.path.basename(path).split("__")[1].split("_")[0].split(".")[0]
    geometry = Geometry(tuple(int(v) for v in d["shape_ijk"]), d["ijk_to_ras"])
    return an.prepare_anatomy(Image(d["array"], geometry), None, subject, os.path.basename(path))


def train(args) -> None:
    import json
    from multiprocessing import get_context

    import torch

    from KneeT2SegmentLib import training as tr

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.time()
    folder = Path(args.arrays)
    train_paths = sorted(str(p) for p in folder.glob("train__*.npz"))
    val_paths = sorted(str(p) for p in folder.glob("validation__*.npz"))
    with get_context("fork").Pool(max(1, min(os.cpu_count() or 1, len(train_paths) + len(val_paths)))) as pool:
        anatomies = pool.map(load_array, train_paths + val_paths, chunksize=1)
    anat_train, anat_val = anatomies[:len(train_paths)], anatomies[len(train_paths):]
    print(f"{len(anat_train)} training and {len(anat_val)} validation knees in {time.time() - t0:.0f} s on {device}",
          flush=True)
    validation = tr.randomised_validation_volumes(anat_val, args.validation_volumes, 0)
    config = tr.TrainingConfig(generator="randomised", epochs=args.epochs, max_minutes=args.minutes,
                               bank_size=args.bank_size, bank_refresh=max(1, args.bank_size // 4),
                               appearance_refresh=max(1, args.bank_size // 2), batch_size=args.batch_size,
                               learning_rate=args.learning_rate, init_from=args.init_from, workers=args.workers,
                               epoch_samples=args.epoch_samples, validation_volumes=args.validation_volumes,
                               seed=args.seed, threads=args.threads,
                               vary_joint_shell=not args.fixed_joint_shell)
    meta = {"trained_from": "label arrays written by scripts/train_knee_arrays.py convert"}
    result = tr.train(anat_train, validation, Path(args.out), config, device, metadata=meta,
                      log=lambda s: print(s, flush=True))
    print(json.dumps({"best_validation_dice": result.best_dice, "best_epoch": result.best_epoch,
                      "epochs": result.epochs_run, "total_s": round(time.time() - t0, 1)}), flush=True)


def finish(args) -> None:
    """Record knee-train's split and recipe in the checkpoint (knee-calibrate reads its validation subjects)."""
    import torch

    from mskquant.atomic import atomic_path
    from KneeT2SegmentLib import training as tr

    ckpt = torch.load(args.model, map_location="cpu", weights_only=False)
    split = tr.split_subjects(tr.label_maps_in(args.labelmaps), **SPLIT)
    raw = ckpt["training"]["config"]
    config = tr.TrainingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    ckpt["training"] = {**ckpt["training"], **tr.training_metadata(split, config)}
    with atomic_path(Path(args.out)) as tmp:
        torch.save(ckpt, str(tmp))
    print(f"{args.out}: validation subjects {split.subjects('validation')}; now run knee-calibrate on it")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--labelmaps", required=True)
    c.add_argument("--out", required=True)
    t = sub.add_parser("train")
    t.add_argument("--arrays", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--minutes", type=float, default=6.0)
    t.add_argument("--epochs", type=int, default=400)
    t.add_argument("--workers", type=int, default=14)
    t.add_argument("--bank-size", type=int, default=64)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--epoch-samples", type=int, default=6400)
    t.add_argument("--learning-rate", type=float, default=1e-3)
    t.add_argument("--validation-volumes", type=int, default=3)
    t.add_argument("--init-from", default="")
    t.add_argument("--seed", type=int, default=22)
    t.add_argument("--threads", type=int, default=4)
    t.add_argument("--fixed-joint-shell", action="store_true", help="as knee-train --fixed-joint-shell")
    f = sub.add_parser("finish")
    f.add_argument("--model", required=True)
    f.add_argument("--labelmaps", required=True)
    f.add_argument("--out", required=True)
    args = ap.parse_args()
    {"convert": convert, "train": train, "finish": finish}[args.step](args)


if __name__ == "__main__":
    main()
