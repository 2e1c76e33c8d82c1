"""``mskquant knee-phantom``, ``knee-t2`` and ``knee-change`` (contract in the README; kept stable).

* ``mskquant knee-phantom --labelmap L.nii.gz --out DIR [--snr 40] [--seed 0] [--followup L2.nii.gz]``
  writes ``mese.nii.gz`` (4D, echoes as the 4th dimension), ``te.json`` (echo times, ms),
  ``truth_t2.nii.gz``, ``truth_cartilage.nii.gz`` plus ``mese.json`` (sidecar: laterality,
  subject), ``truth_t2_noise_free.nii.gz``, ``truth_labels.nii.gz`` and ``truth.json``; with
  ``--followup`` the same files for the follow-up in ``DIR/followup/`` (prescribed T2 change
  per subregion and a planted lesion, listed in its ``truth.json``).
* ``mskquant knee-t2 --mese FILE_OR_FOLDER [--te 10,20,...] [--mask M.nii.gz] --out DIR`` writes
  ``t2.nii.gz`` (ms, NaN outside the mask or valid range, MESE geometry), ``subregions.nii.gz``
  (0 background, 1-12), ``subregions.csv`` (region, layer, side, zone, mean_t2_ms, sd_t2_ms,
  median_t2_ms, n_voxels), ``projection.png`` plus ``knee_t2.json`` (everything knee-change
  needs), ``t2_fit_r2.nii.gz`` (goodness of fit), ``t2_fit_amplitude.nii.gz`` and
  ``t2_loglinear.nii.gz`` (log-linear T2 for comparison). Without ``--mask`` it uses the
  automatic segmentation once that exists, and until then says so (exit 2).
* ``mskquant knee-change --baseline DIR1 --followup DIR2 --out DIR`` (knee-t2 result folders)
  writes ``change.csv``, ``clusters.json`` (``percent_area``, ``n_clusters``) and ``change.png``.

Every input is read and checked before anything is written; outputs appear together or not
at all (``--overwrite`` to replace).
"""

from __future__ import annotations

import sys
from pathlib import Path

PHANTOM_OUTPUTS = ("mese.nii.gz", "te.json", "mese.json", "truth_t2.nii.gz", "truth_cartilage.nii.gz",
                   "truth_t2_noise_free.nii.gz", "truth_labels.nii.gz", "truth.json")
KNEE_T2_OUTPUTS = ("t2.nii.gz", "subregions.nii.gz", "subregions.csv", "projection.png", "knee_t2.json",
                   "t2_fit_r2.nii.gz", "t2_fit_amplitude.nii.gz", "t2_loglinear.nii.gz")
CHANGE_OUTPUTS = ("change.csv", "clusters.json", "change.png")
FOLLOWUP_FOLDER = "followup"


def register(sub) -> None:
    from mskquant.cli.common import add_common_options

    p = sub.add_parser("knee-phantom", help="simulate an OAI-like knee MESE series (and its truth) from a label map")
    p.add_argument("--labelmap", required=True, help="knee label map (1 femur, 2 femoral cartilage, 3 tibia, "
                                                     "4 tibial cartilage, 5 patella, 6 patellar cartilage)")
    p.add_argument("--snr", type=float, default=40.0, help="femoral cartilage first-echo signal / noise SD (40)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (the follow-up uses seed + 1)")
    p.add_argument("--followup", help="label map of the same knee later: adds a follow-up with a prescribed T2 change "
                                      "per subregion and a planted lesion (give --labelmap again for the same anatomy)")
    p.add_argument("--laterality", default="auto", choices=("auto", "left", "right"),
                   help="knee side of the label map (auto: estimated from the tibial cartilage)")
    p.add_argument("--stimulated-echo", type=float, default=1.0, metavar="FACTOR",
                   help="scale echo 1 by FACTOR (< 1: stimulated-echo deficit; default 1 = none)")
    p.add_argument("--bias-field", type=float, default=0.0, metavar="SD", help="smooth receive bias (SD of its log)")
    p.add_argument("--fluid-film", type=float, default=0.0, metavar="MM", help="joint fluid film on the cartilage (mm)")
    p.add_argument("--out", required=True, help="results folder (created if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.set_defaults(handler=cmd_phantom)

    t = sub.add_parser("knee-t2", help="femoral cartilage T2 map, 12 subregions and projection maps from a MESE series")
    t.add_argument("--mese", required=True, help="4D NIfTI/NRRD (echoes as 4th dimension) or a DICOM folder")
    t.add_argument("--te", help="echo times in ms, e.g. 10,20,30,40,50,60,70 (default: te.json/sidecar/DICOM)")
    t.add_argument("--mask", help="femoral cartilage mask on the MESE grid (non-zero = cartilage)")
    t.add_argument("--laterality", default="auto", choices=("auto", "left", "right"),
                   help="knee side (auto: from DICOM/sidecar metadata)")
    t.add_argument("--noise-sigma", type=float, help="noise SD per channel (default: from the background air)")
    t.add_argument("--skip-echoes", type=int, default=1, help="leading echoes left out of the fit (1)")
    t.add_argument("--t2-max", type=float, default=100.0, help="T2 above this (ms) is discarded (100)")
    t.add_argument("--whole-volume", action="store_true", help="fit every voxel (t2.nii.gz is then not masked)")
    add_common_options(t)  # --device is for the automatic segmentation network (the T2 fit runs on the CPU)
    t.set_defaults(handler=cmd_knee_t2)

    c = sub.add_parser("knee-change", help="T2 change per subregion and focal clusters between two knee-t2 results")
    c.add_argument("--baseline", required=True, help="knee-t2 output folder of the baseline")
    c.add_argument("--followup", required=True, help="knee-t2 output folder of the follow-up")
    c.add_argument("--out", required=True)
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("-q", "--quiet", action="store_true")
    c.set_defaults(handler=cmd_change)


# --- knee-phantom ---------------------------------------------------------------------------------
def write_phantom(phantom, folder: Path) -> None:
    """The phantom's files (see module docstring) into ``folder``."""
    import numpy as np

    from mskquant.cli.common import write_json
    from mskquant.image import Image
    from mskquant.imageio import write_image

    s = phantom.series
    write_image(s.echoes, folder / "mese.nii.gz")
    write_json([float(t) for t in s.echo_times_ms], folder / "te.json")
    write_json({"EchoTime_ms": [float(t) for t in s.echo_times_ms], "Laterality": s.laterality,
                "SubjectID": s.subject_id, "MRAcquisitionType": "2D", "ScanningSequence": "SE (multi-echo)",
                "SliceThickness_mm": phantom.params.slice_thickness_mm,
                "SpacingBetweenSlices_mm": phantom.params.slice_thickness_mm + phantom.params.slice_gap_mm,
                "Source": s.source}, folder / "mese.json")
    g = s.geometry
    write_image(phantom.t2_true, folder / "truth_t2.nii.gz")
    write_image(phantom.t2_noise_free, folder / "truth_t2_noise_free.nii.gz")
    write_image(Image(phantom.cartilage_mask.array.astype(np.uint8), g), folder / "truth_cartilage.nii.gz")
    write_image(phantom.labels, folder / "truth_labels.nii.gz")
    write_json(phantom.truth, folder / "truth.json")


def cmd_phantom(args) -> int:
    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import progress_for

    from .anatomy import load_anatomy
    from .simulator import PhantomParameters, simulate, simulate_pair

    expected = list(PHANTOM_OUTPUTS)
    if args.followup:
        expected += [f"{FOLLOWUP_FOLDER}/{n}" for n in PHANTOM_OUTPUTS]
    out = OutputFolder(args.out, expected, overwrite=args.overwrite)
    progress = progress_for(args)
    lat = None if args.laterality == "auto" else args.laterality
    params = PhantomParameters(snr=args.snr, seed=args.seed, first_echo_factor=args.stimulated_echo,
                               bias_field=args.bias_field).validate()
    base_anat = load_anatomy(args.labelmap, lat, args.fluid_film, progress.sub(0.0, 0.25))
    if args.followup:
        same = Path(args.followup).resolve() == Path(args.labelmap).resolve()
        follow_anat = base_anat if same else load_anatomy(args.followup, lat or base_anat.laterality, args.fluid_film,
                                                          progress.sub(0.25, 0.5))
        base, follow = simulate_pair(base_anat, follow_anat, params, progress=progress.sub(0.5, 0.95))
    else:
        base, follow = simulate(base_anat, params, progress=progress.sub(0.25, 0.95)), None
    with out:
        write_phantom(base, out.stage)
        if follow is not None:
            (out.stage / FOLLOWUP_FOLDER).mkdir()
            write_phantom(follow, out.stage / FOLLOWUP_FOLDER)
    for w in base_anat.warnings:
        print(f"warning: {w}", file=sys.stderr)
    g = base.series.geometry
    print(f"MESE phantom {g.describe()}, {len(base.series.echo_times_ms)} echoes, SNR {args.snr:g} "
          f"(sigma {base.sigma:.3g}), {base.series.laterality} knee ({base_anat.laterality_source}), "
          f"{base.truth['femoral_cartilage_voxels']} femoral cartilage voxels"
          + (f"; follow-up with {len(follow.truth['lesions'])} lesion(s) in {FOLLOWUP_FOLDER}/" if follow else "")
          + f" -> {args.out}")
    return 0


# --- knee-t2 -----------------------------------------------------------------------------------------
def cmd_knee_t2(args) -> int:
    from mskquant import mrml
    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import progress_for
    from mskquant.headless import create_headless_runtime
    from mskquant.imageio import read_image

    from .logic import KneeT2Logic
    from .mese import parse_echo_times, read_mese, validate_echo_times
    from .parameters import KneeT2Parameters

    params = KneeT2Parameters(skip_echoes=args.skip_echoes, t2_max_ms=args.t2_max, noise_sigma=args.noise_sigma,
                              laterality=args.laterality, whole_volume=args.whole_volume).validate()
    te = list(validate_echo_times(parse_echo_times(args.te), None, "--te")) if args.te else None
    out = OutputFolder(args.out, KNEE_T2_OUTPUTS, overwrite=args.overwrite)
    progress = progress_for(args)
    # Read and check everything before touching the output folder.
    series = read_mese(args.mese, te, progress.sub(0.0, 0.1))
    params.fit_settings().validate(series.n_echoes)
    rt = create_headless_runtime()
    logic = KneeT2Logic(rt)
    seq, _ = logic.add_mese(series, "MESE")
    mask_node = None
    if args.mask:
        mask_img = read_image(args.mask, "Cartilage mask")
        if mask_img.is_series:
            from mskquant.errors import InputError

            raise InputError(f"Cartilage mask {args.mask} is 4D: give a 3D mask on the MESE grid.")
        mask_node = mrml.volume_from_image(rt, mask_img, "cartilage mask", labelmap=True)
    result = logic.run(seq, mask_node, None, params, progress.sub(0.1, 0.95), name="Knee T2")
    with out:
        logic.export(result, out.stage)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    s = result.summary
    rows = {r["region"]: r for r in s["regions"]}
    a, d, sp = rows["All"], rows["Deep"], rows["Superficial"]
    print(f"T2 {a['mean_t2_ms']:.2f} ms (SD {a['sd_t2_ms']:.2f}, {a['n_voxels']} voxels; deep {d['mean_t2_ms']:.2f}, "
          f"superficial {sp['mean_t2_ms']:.2f}); noise SD {s['noise']['sigma']:.4g} ({s['noise']['source']}); "
          f"{s['laterality']} knee ({s['laterality_source']}) -> {args.out}")
    return 0


# --- knee-change ---------------------------------------------------------------------------------------
def _summary(folder: str, what: str) -> dict:
    import json

    from mskquant.errors import InputError

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InputError(f"The {what} folder {path} does not exist: give a 'mskquant knee-t2' output folder.")
    f = path / "knee_t2.json"
    if not f.is_file():
        raise InputError(f"{path} is not a knee-t2 result folder (no knee_t2.json): run 'mskquant knee-t2' for the "
                         f"{what} first.")
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{f} is not valid JSON ({exc}): run 'mskquant knee-t2' for the {what} again.") from None


def cmd_change(args) -> int:
    from mskquant.atomic import OutputFolder
    from mskquant.headless import create_headless_runtime

    from .logic import KneeT2Logic

    out = OutputFolder(args.out, CHANGE_OUTPUTS, overwrite=args.overwrite)
    base = _summary(args.baseline, "baseline")
    follow = _summary(args.followup, "follow-up")
    logic = KneeT2Logic(create_headless_runtime())
    change = logic.compare(base, follow)
    with out:
        logic.export_change(change, out.stage)
    for w in change.change.warnings:
        print(f"warning: {w}", file=sys.stderr)
    c = change.change
    rows = {r["region"]: r for r in c.rows}
    print(f"T2 change (all) {rows['All']['delta_t2_ms']:+.2f} ms; {c.n_clusters} focal cluster(s) covering "
          f"{c.percent_area:.1f} % of the plate (threshold {c.threshold_ms:.2f} ms) -> {args.out}")
    return 0


def demo(ctx) -> None:
    """Simulated knee (real anatomy from ../shared when present, else an analytic knee): T2, subregions, change."""
    from .demo import run_demo

    run_demo(ctx)
