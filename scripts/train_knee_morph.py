"""Train the knee morphometry ensemble (KneeT2SegmentLib.morphometry.training) on DESS-like simulation.

Resumable: run the same command again to continue from OUT/last.pt. OUT/best.pt is the model
file (each member's best validation weights); copy it to Resources/Models/ and register it.

    .venv/bin/python scripts/train_knee_morph.py --out /tmp/knee-morph --steps 3000
    .venv/bin/python scripts/train_knee_morph.py --out /tmp/knee-morph-ft --steps 800 --learning-rate 1e-3 \
        --init-from Resources/Models/knee-morphometry-dess.pt      (fine-tune the bundled ensemble)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "KneeT2Segment"):
    sys.path.insert(0, str(p))


def tr_default(name: str):
    from dataclasses import fields

    from KneeT2SegmentLib.morphometry.training import MorphTrainingConfig

    return next(f.default for f in fields(MorphTrainingConfig) if f.name == name)


def main(argv=None) -> int:
    from mskquant.paths import shared_data_dir

    shared = shared_data_dir()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labelmaps", default=str(shared / "knee_labelmaps") if shared else "")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--patch", type=int, default=192)
    ap.add_argument("--features", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--validate-every", type=int, default=250)
    ap.add_argument("--max-train-maps", type=int, default=0, help="use only the first N training maps (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--init-from", help="ensemble model file whose members start the training (fine-tuning), e.g. "
                                        "Resources/Models/knee-morphometry-dess.pt")
    ap.add_argument("--patella-fraction", type=float, default=tr_default("patella_centre_fraction"),
                    help="share of patches centred on the patella or its cartilage")
    ap.add_argument("--learning-rate", type=float, default=tr_default("learning_rate"))
    args = ap.parse_args(argv)

    from KneeT2SegmentLib import dess
    from KneeT2SegmentLib.morphometry import training as tr
    from KneeT2SegmentLib.training import label_maps_in

    split = tr.split_label_maps(label_maps_in(args.labelmaps))
    train_maps = split["train"][:args.max_train_maps] if args.max_train_maps else split["train"]
    print(f"train {len(train_maps)} maps, validation {[p.name for p in split['validation']]}, "
          f"test {[p.name for p in split['test']]}, held out {[p.name for p in split['held_out']]}", flush=True)
    t0 = time.time()
    anatomies = [dess.load_dess_anatomy(p) for p in train_maps]
    val = [dess.load_dess_anatomy(p) for p in split["validation"]]
    print(f"anatomies ready in {time.time() - t0:.0f} s", flush=True)
    config = tr.MorphTrainingConfig(members=args.members, features=tuple(args.features), steps=args.steps,
                                    batch_size=args.batch_size, patch=args.patch, validate_every=args.validate_every,
                                    threads=args.threads, seed=args.seed, patella_centre_fraction=args.patella_fraction,
                                    learning_rate=args.learning_rate)
    vset = tr.validation_set(val, config.validation_slabs_per_subject, config.slices_per_slab, config.seed)
    meta = {"data": "domain-randomised DESS-like slices (KneeT2SegmentLib.dess via mskquant.synth) simulated from "
                    "OAI knee label maps - no real images",
            "split": {k: [p.name for p in v] for k, v in split.items()},
            "train_maps_used": [p.name for p in train_maps]}
    if args.init_from:
        from mskquant.models import sha256_of

        meta["initialised_from"] = {"file": Path(args.init_from).name, "sha256": sha256_of(Path(args.init_from))}
    res = tr.train_ensemble(anatomies, vset, Path(args.out), config, meta, resume=not args.no_resume,
                            log=lambda m: print(time.strftime("%H:%M:%S"), m, flush=True),
                            init_from=Path(args.init_from) if args.init_from else None)
    print(f"done: {res.steps} steps, best member validation Dice {res.best_member_dice}, model {res.best_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
