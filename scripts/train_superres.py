"""Train the knee through-plane super-resolution CNN (KneeT2SegmentLib.superres) on simulated DESS.

    python scripts/train_superres.py --labelmaps ../shared/data/knee_labelmaps --work /work/runs/superres \
        [--steps 2400] [--lr 1e-3] [--max-minutes 60] [--resume] [--threads 1]

Builds the patch caches once (``WORK/cache_train``, ``WORK/cache_validation``; never in the
repository), then trains into ``WORK/train`` (``best.pt``, ``last.pt``, ``history.csv``,
``training.json``); ``--resume`` continues from ``last.pt``. ``--bundle CKPT`` instead copies a
checkpoint (without optimiser state) to ``Resources/Models/knee-superres-3x.pt`` and updates its
size and SHA-256 in ``Resources/Models.json``.
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
    ap.add_argument("--work")
    ap.add_argument("--bundle", metavar="CKPT", help="bundle this checkpoint as the registered model and stop")
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--max-minutes", type=float, default=0.0)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--looks", type=int, default=2, help="randomised volumes per training label map")
    ap.add_argument("--per-volume", type=int, default=80, help="patches per volume")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)

    import torch

    from KneeT2SegmentLib.superres import training as tr

    torch.set_num_threads(a.threads)
    if a.bundle:
        return bundle(Path(a.bundle))
    if not a.work:
        ap.error("--work is required for training")
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


def bundle(ckpt: Path, model_id: str = "knee-superres-3x") -> int:
    import json

    import torch

    from KneeT2SegmentLib.superres.model import read_model_file
    from mskquant.atomic import atomic_path
    from mskquant.models import sha256_of

    raw = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    keep = {k: v for k, v in raw.items() if k not in ("optimizer", "resume")}
    target = ROOT / "Resources" / "Models" / f"{model_id}.pt"
    with atomic_path(target) as tmp:
        torch.save(keep, str(tmp))
    read_model_file(target)  # loads and fits
    reg_path = ROOT / "Resources" / "Models.json"
    reg = json.loads(reg_path.read_text(encoding="utf-8"))
    entry = next(m for m in reg["models"] if m["id"] == model_id)
    entry["files"] = [{"name": target.name, "bundled": target.name, "sha256": sha256_of(target),
                       "size_bytes": target.stat().st_size}]
    entry["architecture"] = keep["architecture"]
    entry["input"] = keep["input"]
    reg_path.write_text(json.dumps(reg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"bundled {ckpt} -> {target} ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
