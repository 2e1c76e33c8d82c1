"""``mskquant vhi``, ``vhi-compare`` and ``vhi-agreement`` (contract in README; kept stable).

``mskquant vhi --t1 T1W.nii.gz --stir STIR.nii.gz --normal-roi ROI.nii.gz
[--disease-region DR.nii.gz] --out DIR`` writes, on the STIR grid and geometry:
``vhi.json``, ``vhi.csv``, ``disease_region.nii.gz`` (0/1), ``inflammation.nii.gz``
(0 none, 1 sensitive only, 2 conservative) and ``inflammation.seg.nrrd``. Every input is
read and checked, and the models verified, before anything is written; the outputs appear
together or not at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

VHI_OUTPUTS = ("vhi.json", "vhi.csv", "disease_region.nii.gz", "inflammation.nii.gz", "inflammation.seg.nrrd")


def register(sub) -> None:
    from mskquant.cli.common import add_common_options

    p = sub.add_parser("vhi", help="V_HI (volume of hyperintense inflammation) on sacroiliac-joint MRI")
    p.add_argument("--t1", help="T1-weighted volume (input of the disease-region network)")
    p.add_argument("--stir", required=True, help="STIR volume (thresholded)")
    p.add_argument("--normal-roi", required=True, help="normal-bone ROI mask (non-zero = ROI), any grid overlapping STIR")
    p.add_argument("--disease-region", help="disease-region mask; skips the network")
    p.add_argument("--min-island-pixels", type=int, default=4, help="remove smaller 8-connected regions per slice (4)")
    p.add_argument("--model", default="sij-disease-region",
                   help="registered disease-region model id (default: the published ensemble)")
    add_common_options(p)
    p.set_defaults(handler=cmd_vhi)

    c = sub.add_parser("vhi-compare", help="Dice, volume similarity and volumes of two masks of one scan")
    c.add_argument("--a", required=True, help="first mask (e.g. reader 1)")
    c.add_argument("--b", required=True, help="second mask (e.g. reader 2 or the workflow)")
    c.add_argument("--out", help="folder for compare.json and compare.csv")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(handler=cmd_compare)

    a = sub.add_parser("vhi-agreement", help="Bland-Altman agreement of V_HI across subjects (CSV in, CSV + PNG out)")
    a.add_argument("--pairs", required=True,
                   help="CSV with columns subject,a,b: V_HI values (mL) or paths of mask files")
    a.add_argument("--out", required=True)
    a.add_argument("--overwrite", action="store_true")
    a.add_argument("-q", "--quiet", action="store_true")
    a.set_defaults(handler=cmd_agreement)


def vhi_into_folder(args, logic=None, progress=None):
    """One ``vhi`` case into ``args.out`` (all outputs or none); returns the result. The single-case
    command and ``mskquant batch`` both call this (``logic`` kept by a batch worker)."""
    from mskquant import mrml
    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import progress_for, write_json
    from mskquant.errors import InputError
    from mskquant.headless import create_headless_runtime

    from .logic import VHILogic
    from .parameters import VHIParameters

    if args.t1 is None and args.disease_region is None:
        raise InputError("Give --t1 (the network finds the disease region) or --disease-region.")
    params = VHIParameters(min_island_pixels=args.min_island_pixels, device=args.device,
                           model_id=args.model).validate()
    progress = progress if progress is not None else progress_for(args)
    logic = logic if logic is not None else VHILogic(create_headless_runtime())
    rt = logic.rt
    # Read and check everything before touching the output folder.
    out = OutputFolder(args.out, VHI_OUTPUTS, overwrite=args.overwrite)
    stir = mrml.load_volume(rt, args.stir, "STIR", what="STIR")
    roi = mrml.load_volume(rt, args.normal_roi, "normal-bone ROI", labelmap=True, what="Normal-bone ROI")
    t1 = mrml.load_volume(rt, args.t1, "T1W", what="T1W") if args.t1 else None
    dr = mrml.load_volume(rt, args.disease_region, "disease region", labelmap=True, what="Disease region") \
        if args.disease_region else None
    # Inputs are validated first, then the models are verified and loaded: nothing is written
    # until every check has passed and the computation has finished.
    result = logic.run(stir, roi, t1, dr, params, progress=progress.sub(0.0, 0.95), name="V_HI")
    spec = logic.model_store.registry.get(params.model_id) if result.disease_region_source == "model" else None
    with out:
        logic.export(result, out.stage)  # vhi.csv, inflammation.seg.nrrd, inflammation.nii.gz
        from mskquant.imageio import write_image
        from mskquant.image import Image
        from .logic import SEG_DISEASE

        region = mrml.segment_mask(result.segmentation, SEG_DISEASE, result.geometry)
        write_image(Image(region.astype("uint8"), result.geometry), out.path("disease_region.nii.gz"))
        th = result.thresholds
        summary = {
            "vhi_ml": {k: v.volume_ml for k, v in result.vhi.items()},
            "vhi_mm3": {k: v.volume_mm3 for k, v in result.vhi.items()},
            "voxels": {k: v.voxels for k, v in result.vhi.items()},
            "voxel_volume_mm3": result.geometry.voxel_volume_mm3,
            "thresholds": {"lower": th.lower, "upper": th.upper, "n": th.n, "q1": th.q1, "q3": th.q3,
                           "iqr": th.iqr, "median": th.median, "roi_voxels": th.n_voxels},
            "disease_region_source": result.disease_region_source,
            "disease_region_voxels": int(region.sum()),
            "primary": params.primary,
            "min_island_pixels": params.min_island_pixels,
            "model": None if spec is None else {"id": spec.id, "version": spec.version,
                                                "sha256": [f.sha256 for f in spec.files]},
            "inputs": {"t1": args.t1, "stir": args.stir, "normal_roi": args.normal_roi,
                       "disease_region": args.disease_region},
            "grid": {"shape_ijk": list(result.geometry.shape_ijk), "spacing_mm": list(result.geometry.spacing)},
            "warnings": result.warnings,
            "timings_s": result.timings_s,
            "software": f"mskquant {__import__('mskquant').__version__}",
        }
        write_json(summary, out.path("vhi.json"))
    return result


def cmd_vhi(args) -> int:
    result = vhi_into_folder(args)
    th = result.thresholds
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    v = result.vhi
    print(f"V_HI sensitive {v['sensitive'].volume_ml:.3f} mL ({v['sensitive'].voxels} voxels), conservative "
          f"{v['conservative'].volume_ml:.3f} mL ({v['conservative'].voxels} voxels); thresholds "
          f"L_lower {th.lower:.4g} (n {th.n:.2f}), L_upper {th.upper:.4g} -> {Path(args.out)}")
    return 0


def _load_mask_pair(path_a: str, path_b: str):
    from mskquant.errors import InputError
    from mskquant.image import resample_nearest
    from mskquant.imageio import read_mask

    a = read_mask(path_a, "Mask A")
    b = read_mask(path_b, "Mask B")
    note = ""
    if not a.geometry.same_grid(b.geometry):
        if not a.geometry.overlaps(b.geometry):
            raise InputError(f"Masks {path_a} and {path_b} do not overlap in space: compare masks of the same scan.")
        b = b.with_array(resample_nearest(b.array, b.geometry, a.geometry, fill=False))
        b = type(b)(b.array, a.geometry)
        note = "mask B resampled onto the grid of mask A (nearest neighbour)"
    return a, b, note


def cmd_compare(args) -> int:
    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import write_json
    from mskquant.csvio import write_rows_csv

    from .comparison import compare_masks

    out = OutputFolder(args.out, ("compare.json", "compare.csv"), args.overwrite) if args.out else None
    a, b, note = _load_mask_pair(args.a, args.b)
    cmp_ = compare_masks(a.array, b.array, a.geometry)
    d = cmp_.as_dict()
    if note:
        print(f"note: {note}", file=sys.stderr)
    print(f"Dice {d['dice']:.4f}  volume similarity {d['volume_similarity']:.4f}  "
          f"A {d['volume_a_ml']:.3f} mL ({d['voxels_a']} voxels)  B {d['volume_b_ml']:.3f} mL ({d['voxels_b']} voxels)")
    if out is not None:
        with out:
            write_json({**d, "a": args.a, "b": args.b, "note": note}, out.path("compare.json"))
            write_rows_csv(out.path("compare.csv"), list(d), [list(d.values())])
    return 0


def cmd_agreement(args) -> int:
    import csv
    import math

    from mskquant import render
    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import write_json
    from mskquant.errors import InputError
    from mskquant.csvio import write_rows_csv

    from .comparison import agreement, compare_masks

    out = OutputFolder(args.out, ("agreement.csv", "agreement.json", "bland_altman.png"), args.overwrite)
    pairs = Path(args.pairs).expanduser()
    if not pairs.is_file():
        raise InputError(f"Pairs file {pairs} does not exist: give a CSV with columns subject,a,b.")
    try:
        with open(pairs, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets write a byte-order mark
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{pairs} is not a UTF-8 CSV text file ({exc}): save it as CSV (UTF-8) with columns "
                         f"subject,a,b.") from None
    if not rows or not {"subject", "a", "b"} <= set(rows[0]):
        raise InputError(f"{pairs} needs a header with columns subject,a,b and one row per subject: fix the file.")
    subjects, va, vb = [], [], []
    for n, r in enumerate(rows, start=2):
        if not (r["a"] or "").strip() or not (r["b"] or "").strip():
            raise InputError(f"Row {n} of {pairs} has an empty a or b: give a V_HI (mL) or a mask file for both.")
        try:
            x, y = float(r["a"]), float(r["b"])
            if not (math.isfinite(x) and math.isfinite(y)):
                raise InputError(f"Row {n} of {pairs} holds a value that is not a finite number ({r['a']}, {r['b']}): "
                                 f"give V_HI in mL.")
        except ValueError:
            base = pairs.parent
            a, b, _ = _load_mask_pair(str(base / r["a"]), str(base / r["b"]))
            c = compare_masks(a.array, b.array, a.geometry)
            x, y = c.volume_a_ml, c.volume_b_ml
        subjects.append(r["subject"])
        va.append(x)
        vb.append(y)
    ba = agreement(va, vb)
    with out:
        write_rows_csv(out.path("agreement.csv"), ["subject", "a_ml", "b_ml", "mean_ml", "difference_ml"],
                       zip(subjects, va, vb, ba.means, ba.differences))
        write_json({"n": ba.n, "mean_difference_ml": ba.mean_difference, "sd_difference_ml": ba.sd_difference,
                    "lower_limit_ml": ba.lower_limit, "upper_limit_ml": ba.upper_limit}, out.path("agreement.json"))
        render.chart_png(bland_altman_chart(ba, "V_HI (mL)"), out.path("bland_altman.png"))
    print(f"Bland-Altman over {ba.n} subjects: mean difference {ba.mean_difference:.3f} mL, 95% limits "
          f"{ba.lower_limit:.3f} to {ba.upper_limit:.3f} mL")
    return 0


def bland_altman_chart(ba, unit_label: str):
    from mskquant import render

    return render.Chart(
        "Bland-Altman agreement", f"mean of the two {unit_label}", f"difference B - A {unit_label}",
        [render.Series(ba.means, ba.differences, "subjects")],
        [render.HLine(ba.mean_difference, f"mean {ba.mean_difference:.3g}", (0.2, 0.2, 0.2)),
         render.HLine(ba.upper_limit, f"+1.96 SD {ba.upper_limit:.3g}", (0.8, 0.2, 0.2)),
         render.HLine(ba.lower_limit, f"-1.96 SD {ba.lower_limit:.3g}", (0.8, 0.2, 0.2))])


def demo(ctx) -> None:
    """Synthetic case (known answer) and, with ../shared, real subjects with the published model."""
    from .demo import run_demo

    run_demo(ctx)
