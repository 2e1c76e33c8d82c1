"""``mskquant knee-morph`` (contract in the README; kept stable).

``mskquant knee-morph --image DESS.nii.gz [--labels L.nii.gz] [--mese MESE [--te ...]] --out DIR``
segments femur, tibia, patella and their cartilages (unless ``--labels`` gives a segmentation),
measures cartilage thickness per plate and region, builds the bone surfaces with thickness (and
T2, from ``--mese``) on their articular vertices and writes the files of :mod:`.export`.
Every input is read and checked before anything is written; outputs appear together or not at
all (``--overwrite`` to replace).
"""

from __future__ import annotations

import sys

from .pipeline import DEFAULT_MODEL


def register(sub) -> None:
    from mskquant.cli.common import add_common_options

    p = sub.add_parser("knee-morph", help="bone and cartilage segmentation of a 3D knee MRI, cartilage thickness, "
                                          "thickness and T2 on the articular bone surface")
    p.add_argument("--image", help="3D knee MRI (DESS-like, slices <= 1.5 mm; any orientation)")
    p.add_argument("--labels", help="label map on the image's grid instead of the automatic segmentation "
                                    "(1 femur, 2 femoral cartilage, 3 tibia, 4 tibial cartilage, 5 patella, "
                                    "6 patellar cartilage)")
    p.add_argument("--mese", help="MESE series of the same knee and session (4D file or DICOM folder): adds T2")
    p.add_argument("--te", help="echo times of --mese in ms, e.g. 10,20,30,40,50,60,70 (default: te.json/sidecar)")
    p.add_argument("--laterality", default="auto", choices=("auto", "left", "right"),
                   help="knee side (auto: from the tibial cartilage / metadata)")
    p.add_argument("--no-registration", action="store_true",
                   help="carry the cartilage to --mese in scanner coordinates (no rigid registration)")
    p.add_argument("--super-resolve", action="store_true",
                   help="thick-sliced --image: restore 3x thinner slices with the super-resolution network before "
                        "segmenting (trained on simulated images; not validated on real scans)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"segmentation ensemble (registered id; {DEFAULT_MODEL})")
    add_common_options(p)
    p.set_defaults(handler=cmd_knee_morph)


def morph_params(args):
    from .pipeline import MorphParameters

    return MorphParameters(model_id=args.model, device=args.device, laterality=args.laterality,
                           register_mese=not args.no_registration, super_resolve=args.super_resolve).validate()


def read_inputs(args, progress=None) -> dict:
    """Read and check one case's inputs (no output folder touched)."""
    from mskquant.errors import InputError
    from mskquant.imageio import read_image
    from mskquant.progress import as_progress

    from .labels import tissue_labels
    from .pipeline import check_3d_image

    progress = as_progress(progress)
    if not args.image and not args.labels:
        raise InputError("Give the 3D knee image (--image) or a label map of the knee (--labels).")
    image = read_image(args.image, "3D knee image") if args.image else None
    if image is not None and not args.super_resolve:
        check_3d_image(image)
    labels = None
    if args.labels:
        labels = read_image(args.labels, "Label map")
        labels = labels.with_array(tissue_labels(labels.array))
    series = None
    if args.mese:
        from ..cli import _echo_times
        from ..mese import read_mese

        series = read_mese(args.mese, _echo_times(args), progress)
    return {"image": image, "labels": labels, "series": series}


def knee_morph_into_folder(args, inputs: dict, progress=None, out=None):
    """One case from read inputs into ``args.out`` (all outputs or none): the command and the batch call this."""
    from mskquant.atomic import OutputFolder
    from mskquant.progress import as_progress

    from ..parameters import KneeT2Parameters
    from .export import possible_outputs, write_outputs
    from .pipeline import run

    progress = as_progress(progress)
    params = morph_params(args)
    out = out or OutputFolder(args.out, possible_outputs(), overwrite=args.overwrite)
    t2_params = KneeT2Parameters(laterality=args.laterality).validate()
    result = run(inputs["image"], inputs["labels"], inputs["series"], params, t2_params, progress.sub(0.0, 0.95))
    with out:
        write_outputs(result, out.stage)
    return result


def cmd_knee_morph(args) -> int:
    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import progress_for

    from .export import possible_outputs

    morph_params(args)
    out = OutputFolder(args.out, possible_outputs(), overwrite=args.overwrite)
    progress = progress_for(args)
    inputs = read_inputs(args, progress.sub(0.0, 0.05))
    result = knee_morph_into_folder(args, inputs, progress.sub(0.05, 1.0), out=out)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    rows = {(r["plate"], r["region"]): r for r in result.thickness.rows()}
    parts = []
    for plate in ("femoral", "medial tibial", "lateral tibial", "patellar"):
        r = rows.get((plate, "all"))
        if r and r.get("n_points"):
            parts.append(f"{plate} {r['mean_mm']:.2f}")
    print(f"cartilage thickness (mm): {', '.join(parts) or 'none'}; bones: {', '.join(result.surfaces) or 'none'}"
          + ("; T2 on the surfaces" if result.t2 is not None else "") + f" -> {args.out}")
    return 0


def demo(ctx) -> None:
    """``mskquant demo``: knee-morph on a DESS-like volume of a knee the ensemble never saw (9002817 of
    ../shared, else the analytic knee), with a MESE phantom of the same anatomy for T2: the ensemble's
    femoral cartilage against the truth, thickness from its labels and from the true ones, and the surface
    T2 per subregion against the volumetric means; the knee-morph files in ``knee_morph/``."""
    import numpy as np

    from mskquant.atomic import OutputFolder
    from mskquant.imageio import read_image

    from .. import anatomy as an
    from .. import dess
    from .. import simulator as sm
    from ..parameters import KneeT2Parameters
    from .export import possible_outputs, write_outputs
    from .pipeline import MorphParameters, run

    prog = ctx.progress
    path = ctx.shared / "knee_labelmaps" / "9002817.nii.gz" if ctx.shared is not None else None
    if path is not None and path.is_file():
        labels, dataset = read_image(path), "OAI anatomy 9002817 (held out from the ensemble's training)"
    else:
        labels, dataset = an.analytic_knee(), "analytic knee (no ../shared)"
    vol = dess.native_grid_dess(labels, np.random.default_rng(0), snr=30.0)
    ph = sm.simulate(an.prepare_anatomy(labels, "right", "demo", dataset), sm.PhantomParameters(snr=40.0, seed=3),
                     progress=prog.sub(0.0, 0.2))
    result = run(vol.image, None, ph.series, MorphParameters(laterality="right"), KneeT2Parameters(laterality="right"),
                 prog.sub(0.2, 0.95))
    with OutputFolder(ctx.folder("knee_morph"), possible_outputs()) as out:
        write_outputs(result, out.stage)
    seg, truth = result.labels.array == 2, vol.labels.array == 2
    dice = 2.0 * np.count_nonzero(seg & truth) / max(1, np.count_nonzero(seg) + np.count_nonzero(truth))
    ctx.result("KneeT2Segment", dataset, "morphometry femoral cartilage Dice vs truth", round(float(dice), 4), "",
               f"ensemble {result.segmentation.get('model', '')}, simulated DESS, SNR 30")
    rows = {(r["plate"], r["region"]): r for r in result.thickness.rows()}
    ctx.result("KneeT2Segment", dataset, "mean femoral cartilage thickness (network labels)",
               round(float(rows[("femoral", "all")]["mean_mm"]), 3), "mm", "normal-based")
    from .thickness import measure_thickness

    true_rows = {(r["plate"], r["region"]): r for r in measure_thickness(vol.labels, "right").rows()}
    ctx.result("KneeT2Segment", dataset, "mean femoral cartilage thickness (true labels)",
               round(float(true_rows[("femoral", "all")]["mean_mm"]), 3), "mm", "normal-based")
    t2 = result.surface_t2_regions()
    worst = max(abs(r["surface_mean_t2_ms"] - r["volumetric_mean_t2_ms"]) for r in t2) if t2 else float("nan")
    ctx.result("KneeT2Segment", dataset, "surface vs volumetric subregion T2, largest difference", round(worst, 3),
               "ms", "12 femoral subregions, MESE phantom of the same anatomy")
    prog(1.0, "knee morphometry demo done")
