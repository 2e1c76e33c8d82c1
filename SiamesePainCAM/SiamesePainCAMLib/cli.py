"""``mskquant pain-cam``, ``pain-phantom`` and ``pain-train`` (contract in README; kept stable).

``mskquant pain-cam --left L.nii.gz --right R.nii.gz [--center-left K] [--center-right K]
--out DIR`` writes ``pain.json`` (``p_right_painful``, ``painful_side``, ``max_cam_slice``
{left, right}, then details), ``cam_left.nii.gz`` / ``cam_right.nii.gz`` on each input's own
grid (same size, spacing, origin, direction), ``cam_overlay.png`` and ``pain.csv``. Slice
indices are 0-based along each volume's sagittal slice axis. Both inputs are read and checked
and the model verified before anything is written; the outputs appear together or not at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .parameters import OUTPUT_FILES, POOLINGS

PHANTOM_README = "pairs.csv"
GENERATORS = ("project", "randomised")  # pair simulators: the fixed look; a random look per knee
TRAIN_OUTPUTS = ("best_model.pt", "model_entry.json", "cv.json", "folds.csv", "predictions.csv", "history.csv",
                 "roc.png")


def variation_of(generator: str):
    """The simulator's variation for a ``--generator`` choice (None: the simulator's default)."""
    from .simulator import Variation

    return Variation.randomised() if generator == "randomised" else None


def _widths(text: str):
    from mskquant.errors import InputError

    try:
        w = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--widths takes 6 comma-separated numbers of filters, e.g. 8,16,32,32,64,64 "
                         f"(got {text!r}).") from None
    if len(w) != 6 or min(w) < 1:
        raise InputError(f"--widths takes 6 positive numbers of filters, one per convolution (got {text!r}).")
    return w


def register(sub) -> None:
    from mskquant.cli.common import add_common_options

    p = sub.add_parser("pain-cam", help="which knee hurts: Siamese CNN on left/right sagittal knee MRI, with CAMs")
    p.add_argument("--left", required=True, help="left knee sagittal volume (intermediate-weighted TSE)")
    p.add_argument("--right", required=True, help="right knee sagittal volume")
    p.add_argument("--center-left", type=int, metavar="K",
                   help="centre (PCL) slice of the left knee, 0-based along its sagittal axis (default: estimated)")
    p.add_argument("--center-right", type=int, metavar="K", help="centre slice of the right knee (default: estimated)")
    p.add_argument("--model", default="siamese-pain-demo", help="registered model id (default: the bundled demo model)")
    add_common_options(p)
    p.set_defaults(handler=cmd_pain_cam)

    s = sub.add_parser("pain-phantom", help="simulated left/right knee pairs with a planted pain-associated lesion")
    s.add_argument("--out", required=True, help="folder for the NIfTI pairs, lesion masks and pairs.csv")
    s.add_argument("--pairs", type=int, default=4, help="number of subjects (pairs) to simulate (4)")
    s.add_argument("--label-maps", help="folder of knee label maps (labels 1-6) for the anatomy "
                                        "(default: ../shared/data/knee_labelmaps when present, else an analytic knee)")
    s.add_argument("--analytic", action="store_true", help="use the analytic knee even when label maps are present")
    s.add_argument("--lesion", default="mixed", choices=("mixed", "effusion", "bml"),
                   help="pain-associated lesion planted in one knee (mixed: 60 %% effusion, 40 %% bone-marrow lesion)")
    s.add_argument("--generator", default="project", choices=GENERATORS,
                   help="project: the fixed fat-suppressed IW look (default); randomised: a random look, acquisition "
                        "and wider pose per knee (domain randomisation, the demo model's training data)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(handler=cmd_pain_phantom)

    t = sub.add_parser("pain-train", help="train the Siamese pain network: k-fold cross-validation by subject, AUC, ROC")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="CSV: subject,left,right,painful_side[,center_left,center_right,group,role]; "
                                     "paths relative to the CSV")
    src.add_argument("--simulate", type=int, metavar="N", help="simulate N pairs per knee anatomy instead")
    t.add_argument("--label-maps", help="with --simulate: folder of knee label maps (default ../shared/data/knee_labelmaps)")
    t.add_argument("--analytic", action="store_true", help="with --simulate: add the analytic knee as one more anatomy")
    t.add_argument("--exclude-subjects", default=",".join(("9055361", "9057479")),
                   help="with --simulate: label-map subjects kept out of training and the template (held out for "
                        "testing; default 9055361,9057479; '' for none)")
    t.add_argument("--data-cache", help="with --simulate: keep the pre-processed pairs here and reuse them")
    t.add_argument("--lesion-free-every", type=int, default=0, metavar="K",
                   help="with --simulate: every K-th pair of each anatomy has no lesion, trained towards p = 0.5 "
                        "(default 0: every pair has a lesion)")
    t.add_argument("--generator", default="project", choices=GENERATORS,
                   help="with --simulate: project (the fixed fat-suppressed IW look) or randomised (a random look, "
                        "acquisition and wider pose per knee: domain randomisation)")
    t.add_argument("--template-subject", help="with --pairs: subject whose right knee is the alignment template "
                                              "(default: the role=template row, else the first row)")
    t.add_argument("--folds", type=int, default=10, help="cross-validation folds by subject (10; 1 = one training "
                                                        "with a validation split)")
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--lr", type=float, default=1e-4, help="initial learning rate (paper 1e-4)")
    t.add_argument("--lr-step", type=int, default=20, help="epochs between learning-rate decays (paper 20)")
    t.add_argument("--lr-gamma", type=float, default=0.1, help="learning-rate decay factor (paper 0.1)")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (paper 0.9)")
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--batch-size", type=int, default=8, help="subjects per step (46 slices each)")
    t.add_argument("--widths", default="8,16,32,32,64,64",
                   help="filters of the 6 convolutions (paper 64,128,256,256,512,512)")
    t.add_argument("--branch-per-location", action="store_true",
                   help="a separate convolutional branch per slice location, as the paper's 23 2D models")
    t.add_argument("--validation-fraction", type=float, default=0.1, help="share of training subjects that picks the best epoch")
    t.add_argument("--pooling", default="average", choices=POOLINGS,
                   help="pooling of each slice's map: average (paper, the demo model) or lse, a smooth maximum "
                        "that lets small lesions count")
    t.add_argument("--lse-sharpness", type=float, default=5.0, help="r of the LSE pooling (5)")
    t.add_argument("--quiet-painless-cam", type=float, default=0.0, metavar="WEIGHT",
                   help="penalise positive CAM in the knee that does not hurt (0 = the paper's loss alone; the demo "
                        "model used 5), so CAMs point at what differs between the knees")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    add_common_options(t)
    t.set_defaults(handler=cmd_pain_train)


# --- pain-cam ---------------------------------------------------------------------------------------
def pain_cam_into_folder(args, logic=None, progress=None):
    """One ``pain-cam`` case into ``args.out`` (all outputs or none); returns the result. The single-case
    command and ``mskquant batch`` both call this (``logic`` kept by a batch worker)."""
    from mskquant import mrml
    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import progress_for
    from mskquant.headless import create_headless_runtime

    from .logic import PainCAMLogic
    from .parameters import AUTO, PainCAMParameters

    params = PainCAMParameters(model_id=args.model, device=args.device,
                               centre_left=AUTO if args.center_left is None else args.center_left,
                               centre_right=AUTO if args.center_right is None else args.center_right)
    for side in ("left", "right"):
        v = getattr(args, f"center_{side}")
        if v is not None and v < 0:
            from mskquant.errors import InputError

            raise InputError(f"--center-{side} {v} is out of range: slice indices start at 0.")
    params.validate()
    progress = progress if progress is not None else progress_for(args)
    out = OutputFolder(args.out, OUTPUT_FILES, overwrite=args.overwrite)  # checked before any work
    logic = logic if logic is not None else PainCAMLogic(create_headless_runtime())
    rt = logic.rt
    left = mrml.load_volume(rt, args.left, Path(args.left).name.split(".")[0], what="Left knee")
    right = mrml.load_volume(rt, args.right, Path(args.right).name.split(".")[0], what="Right knee")
    logic.model(params, progress.sub(0.0, 0.05))
    result = logic.run(left, right, params, progress.sub(0.05, 0.95), name="Pain CAM")
    with out:
        logic.export(result, out.stage, extra={"inputs": {"left": args.left, "right": args.right}})
    return result


def cmd_pain_cam(args) -> int:
    result = pain_cam_into_folder(args)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    a = result.analysis
    print(f"{a.painful_side} knee painful: p(right painful) = {a.p_right_painful:.3f}; most pain-relevant slice "
          f"left {a.max_cam_slice['left']}, right {a.max_cam_slice['right']} -> {Path(args.out)}")
    return 0


# --- pain-phantom ------------------------------------------------------------------------------------
def cmd_pain_phantom(args) -> int:
    import numpy as np

    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import progress_for, write_json
    from mskquant.errors import InputError
    from mskquant.imageio import write_image
    from mskquant.csvio import write_rows_csv
    from mskquant.paths import shared_data_dir

    from . import simulator as sim
    from .datasets import load_anatomies

    if args.pairs < 1:
        raise InputError(f"--pairs must be at least 1 (got {args.pairs}).")
    progress = progress_for(args)
    label_maps = None
    if not args.analytic:
        if args.label_maps:
            label_maps = Path(args.label_maps)
            if not label_maps.is_dir():
                raise InputError(f"Label-map folder {label_maps} does not exist: check the path.")
        elif shared_data_dir() is not None and (shared_data_dir() / "knee_labelmaps").is_dir():
            label_maps = shared_data_dir() / "knee_labelmaps"
    names = [f"pain_{n:03d}" for n in range(args.pairs)]
    expected = [PHANTOM_README, "truth.json"] + [f"{s}_{k}.nii.gz" for s in names for k in
                                                  ("left", "right", "left_lesion", "right_lesion")]
    out = OutputFolder(args.out, expected, overwrite=args.overwrite)
    anatomies = load_anatomies(label_maps, include_analytic=label_maps is None, progress=progress.sub(0, 0.2))
    rows, truth = [], []
    with out:
        for n, name in enumerate(names):
            progress(0.2 + 0.8 * n / len(names), f"Simulating {name}")
            anatomy = anatomies[n % len(anatomies)]
            rng = np.random.default_rng([args.seed, n])
            pair = sim.simulate_pair(anatomy, rng, name, painful_side="right" if n % 2 == 0 else "left",
                                     lesion_kind=None if args.lesion == "mixed" else args.lesion,
                                     variation=variation_of(args.generator))
            for side, knee in (("left", pair.left), ("right", pair.right)):
                write_image(knee.image, out.path(f"{name}_{side}.nii.gz"))
                write_image(knee.lesion_mask.with_array(knee.lesion_mask.array.astype(np.uint8)),
                            out.path(f"{name}_{side}_lesion.nii.gz"))
            rows.append([name, f"{name}_left.nii.gz", f"{name}_right.nii.gz", pair.painful_side,
                         pair.left.centre_slice, pair.right.centre_slice, pair.anatomy, "", pair.lesion_kind,
                         pair.painful.lesion_site])
            truth.append({"subject": name, "anatomy": pair.anatomy, "painful_side": pair.painful_side,
                          "lesion_kind": pair.lesion_kind, "lesion_site": pair.painful.lesion_site,
                          "centre_slice": {"left": pair.left.centre_slice, "right": pair.right.centre_slice},
                          "joint_centre_ras": {"left": pair.left.joint_centre_ras.tolist(),
                                               "right": pair.right.joint_centre_ras.tolist()},
                          "pose": {"left": pair.left.pose, "right": pair.right.pose}})
        write_rows_csv(out.path(PHANTOM_README), ["subject", "left", "right", "painful_side", "center_left",
                                                  "center_right", "group", "role", "lesion_kind", "lesion_site"], rows)
        write_json(truth, out.path("truth.json"))
    print(f"{len(names)} simulated pairs ({'label maps ' + str(label_maps) if label_maps else 'analytic knee'}) "
          f"-> {Path(args.out)}")
    return 0


# --- pain-train ---------------------------------------------------------------------------------------
def cmd_pain_train(args) -> int:
    import hashlib
    import json

    import numpy as np

    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import progress_for, write_json
    from mskquant.errors import InputError
    from mskquant.models import sha256_of
    from mskquant.paths import shared_data_dir

    import torch

    from . import datasets as ds
    from .checkpoint import save_model
    from .localiser import default_localiser
    from .training import PairData, TrainingConfig, cross_validate, read_pairs_csv, write_reports

    cfg = TrainingConfig(epochs=args.epochs, learning_rate=args.lr, lr_step_epochs=args.lr_step, lr_gamma=args.lr_gamma,
                         momentum=args.momentum, weight_decay=args.weight_decay, batch_size=args.batch_size,
                         folds=args.folds, validation_fraction=args.validation_fraction, widths=_widths(args.widths),
                         branch_per_location=args.branch_per_location, pooling=args.pooling,
                         lse_sharpness=args.lse_sharpness, quiet_painless_cam=args.quiet_painless_cam,
                         seed=args.seed, device=args.device).validate()
    progress = progress_for(args)
    out_dir = Path(args.out)
    out = OutputFolder(out_dir, TRAIN_OUTPUTS, overwrite=args.overwrite or args.resume)
    localiser = default_localiser(torch.device("cpu"))  # the pre-processing of inference
    if args.pairs:
        rows = read_pairs_csv(Path(args.pairs))
        base = Path(args.pairs).parent
        template = ds.template_from_table(rows, base, args.template_subject)
        data = ds.dataset_from_table(rows, base, template, progress.sub(0.0, 0.2), localiser)
        source = {"pairs": str(args.pairs)}
    else:
        if args.simulate < 1:
            raise InputError(f"--simulate must be at least 1 pair per anatomy (got {args.simulate}).")
        label_maps = Path(args.label_maps) if args.label_maps else (
            shared_data_dir() / "knee_labelmaps" if shared_data_dir() is not None else None)
        if label_maps is None and not args.analytic:
            raise InputError("No knee label maps found: give --label-maps DIR or --analytic.")
        exclude = tuple(s for s in args.exclude_subjects.split(",") if s)
        recipe = {"label_maps": sorted(str(p.name) for p in ds.sim.label_map_files(label_maps)) if label_maps else [],
                  "exclude": exclude, "analytic": args.analytic, "pairs_per_anatomy": args.simulate,
                  "seed": args.seed, "data_version": ds.DATA_VERSION}
        if args.generator != "project":  # project recipes keep the keys of the pairs they cached before
            recipe["generator"] = args.generator
        if args.lesion_free_every < 0:
            raise InputError(f"--lesion-free-every must be 0 or more (got {args.lesion_free_every}).")
        if args.lesion_free_every:
            recipe["lesion_free_every"] = args.lesion_free_every
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
        cache = Path(args.data_cache) / key if args.data_cache else None
        if cache is not None and (cache / "pairs.json").is_file() and (cache / "template.npy").is_file():
            data = PairData.load(cache)
            template = np.load(cache / "template.npy")
        else:
            anatomies = ds.load_anatomies(label_maps, exclude=exclude, include_analytic=args.analytic,
                                          progress=progress.sub(0.0, 0.03))
            template = ds.simulated_template(anatomies, progress.sub(0.03, 0.04))
            data, _ = ds.simulate_dataset(anatomies, args.simulate, template, args.seed, cache,
                                          ds.subject_of_anatomy, progress.sub(0.04, 0.3),
                                          variation=variation_of(args.generator), localiser=localiser,
                                          lesion_free_every=args.lesion_free_every)
            if cache is not None:
                np.save(cache / "template.npy", template)
                (cache / "recipe.json").write_text(json.dumps(recipe, indent=2))
        source = {"simulated": recipe}
    work = out_dir / "checkpoints"
    cv, best_state = cross_validate(data, cfg, template, work, progress.sub(0.3, 0.98), resume=args.resume)
    with out:
        summary = write_reports(cv, data, out, cfg)
        model = cfg.network()
        model.load_state_dict(best_state)
        save_model(model, out.path("best_model.pt"))
        digest = sha256_of(out.path("best_model.pt"))
        entry = {"architecture": model.architecture(),
                 "files": [{"name": "best_model.pt", "sha256": digest,
                            "size_bytes": out.path("best_model.pt").stat().st_size}],
                 "training": {**summary, "source": source}}
        write_json(entry, out.path("model_entry.json"))
    per_fold = ", ".join(f"{a:.3f}" for a in summary["auc_per_fold"])
    print(f"AUC {summary['auc_overall']:.3f} over {summary['n_pairs']} pairs ({len(cv.folds)} fold(s): {per_fold}); "
          f"best model from fold {cv.best_fold} -> {out_dir / 'best_model.pt'}")
    return 0


def demo(ctx) -> None:
    """Simulated pairs with a known painful side and lesion: AUC and CAM pointing accuracy."""
    from .demo import run_demo

    run_demo(ctx)
