"""Train the knee through-plane super-resolution CNN (KneeT2SegmentLib.superres) on simulated DESS.

    python scripts/train_superres.py --labelmaps ../shared/data/knee_labelmaps --work /work/runs/superres \
        [--steps 3000] [--max-minutes 60] [--resume] [--threads 1]

Builds the patch caches once (``WORK/cache_train``, ``WORK/cache_validation``; never in the
repository), then trains into ``WORK/train`` (``best.pt``, ``last.pt``, ``history.csv``,
``training.json``); ``--resume`` continues from ``last.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "KneeT2Segment")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labelmaps", default=str(ROOT.parent / "shared" / "data" / "knee_labelmaps"))
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--max-minutes", type=float, default=0.0)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--looks", type=int, default=2, help="randomised volumes per training label map")
    ap.add_argument("--per-volume", type=int, default=80, help="patches per volume")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)

    import torch

    from KneeT2SegmentLib.superres import training as tr

    torch.set_num_threads(a.threads)
    work = Path(a.work)
    split = tr.split_label_maps(a.labelmaps)
    print("split:", {k: [p.name for p in v] for k, v in split.items()}, flush=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    tr.build_patch_cache(split["validation"], work / "cache_validation", looks=2, per_volume=30, seed=1, log=log)
    tr.build_patch_cache(split["train"], work / "cache_train", looks=a.looks, per_volume=a.per_volume, seed=0, log=log)
    config = tr.SRTrainingConfig(depth=a.depth, width=a.width, lr=a.lr, steps=a.steps, max_minutes=a.max_minutes)
    meta = {"data": "DESS-like volumes simulated from OAI knee label maps (KneeT2SegmentLib.dess.native_grid_dess, "
                    "randomised looks), 3x rect slice profile + TCI",
            "split": {k: sorted({tr.subject_of(p) for p in v}) for k, v in split.items()},
            "excluded_subjects": list(tr.EXCLUDED_SUBJECTS), "cache": {"looks": a.looks, "per_volume": a.per_volume,
                                                                        "patch": [24, 32, 32]}}
    summary = tr.train(work / "cache_train", work / "cache_validation", work / "train", config, resume=a.resume,
                       metadata=meta, log=log)
    print(summary, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
