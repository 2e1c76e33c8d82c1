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
  ``t2_loglinear.nii.gz`` (log-linear T2 for comparison). Without ``--mask`` the femoral
  cartilage is segmented automatically (``--model``, default the bundled model; its
  thresholds and the slices it emptied are in ``knee_t2.json`` under ``segmentation``).
* ``mskquant knee-change --baseline DIR1 --followup DIR2 --out DIR`` (knee-t2 result folders)
  writes ``change.csv``, ``clusters.json`` (``percent_area``, ``n_clusters``) and ``change.png``.
* ``mskquant knee-compare --mese M --a A.nii.gz [--b B.nii.gz] --out DIR`` (one scan; without
  ``--b`` B is the automatic segmentation) writes ``agreement.csv`` (per region: mean T2 from A
  and B), ``agreement.json`` (Dice, Jaccard, volumes), ``agreement.png``, ``overlay.png``;
  ``mskquant knee-compare --pairs scans.csv --out DIR`` (columns ``scan,mese,a[,b][,te][,laterality]``)
  writes ``scans.csv``, ``agreement.csv`` (per region over the scans: Spearman, MAE, bias,
  Bland-Altman limits), ``agreement.json`` and ``bland_altman_{all,deep,superficial}.png``.
* ``mskquant knee-train --labelmaps DIR --out DIR [--resume]`` trains the cartilage U-Net on MESE
  simulated from label maps (``best.pt``, ``last.pt``, ``history.csv``, ``training.json``);
  ``mskquant knee-calibrate --model best.pt --labelmaps DIR --out DIR`` (or ``--cases scans.csv``
  of real validation scans) grid-searches its two thresholds and writes ``model.pt`` (the
  calibrated checkpoint), ``calibration.csv``, ``calibration.json`` and ``calibration.png``.

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
COMPARE_OUTPUTS = ("agreement.csv", "agreement.json", "agreement.png", "overlay.png")
COMPARE_SET_OUTPUTS = ("scans.csv", "agreement.csv", "agreement.json", "bland_altman_all.png", "bland_altman_deep.png",
                       "bland_altman_superficial.png")
CALIBRATE_OUTPUTS = ("model.pt", "calibration.csv", "calibration.json", "calibration.png")
FOLLOWUP_FOLDER = "followup"
DEFAULT_MODEL = "knee-femoral-cartilage-mese"


def register(sub) -> None:
    from mskquant.cli.common import add_common_options
    from mskquant.device import PRECISIONS

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
    t.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"cartilage model for the automatic segmentation: registered id or .pt file ({DEFAULT_MODEL})")
    t.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="arithmetic of the segmentation network: float32 (default, the same numbers on every machine), "
                        "bfloat16 (~2x faster on CPUs with AVX-512 BF16; a few voxels at the threshold differ) or auto "
                        "(bfloat16 where supported)")
    add_common_options(t)  # --device is for the automatic segmentation network (the T2 fit runs on the CPU)
    t.set_defaults(handler=cmd_knee_t2)

    c = sub.add_parser("knee-change", help="T2 change per subregion and focal clusters between two knee-t2 results")
    c.add_argument("--baseline", required=True, help="knee-t2 output folder of the baseline")
    c.add_argument("--followup", required=True, help="knee-t2 output folder of the follow-up")
    c.add_argument("--out", required=True)
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("-q", "--quiet", action="store_true")
    c.set_defaults(handler=cmd_change)

    k = sub.add_parser("knee-compare", help="agreement of two femoral cartilage segmentations (Dice, Jaccard, subregion "
                                            "T2; Spearman, MAE, bias, Bland-Altman over scans)")
    k.add_argument("--mese", help="MESE series of the scan (4D file or DICOM folder)")
    k.add_argument("--a", help="reference segmentation A on the MESE grid (e.g. reader 1)")
    k.add_argument("--b", help="segmentation B on the MESE grid (e.g. reader 2); default: the automatic segmentation")
    k.add_argument("--pairs", help="CSV of several scans: scan,mese,a[,b][,te][,laterality] (instead of --mese/--a/--b)")
    k.add_argument("--te", help="echo times in ms (default: te.json/sidecar/DICOM)")
    k.add_argument("--laterality", default="auto", choices=("auto", "left", "right"))
    k.add_argument("--noise-sigma", type=float, help="noise SD per channel (default: from the background air)")
    k.add_argument("--model", default=DEFAULT_MODEL, help="cartilage model when B is automatic")
    add_common_options(k)
    k.set_defaults(handler=cmd_compare_segmentations)

    cal = sub.add_parser("knee-calibrate", help="grid-search the probability threshold and slice minimum of a "
                                                "cartilage model on validation scans (Thomas et al. 2.5)")
    cal.add_argument("--model", required=True, help="model checkpoint (.pt, e.g. best.pt of knee-train)")
    cal.add_argument("--labelmaps", help="label-map folder: simulate the model's validation subjects")
    cal.add_argument("--cases", help="CSV of real validation scans with reference masks: mese,mask[,te][,laterality]")
    cal.add_argument("--volumes-per-subject", type=int, default=4, help="simulated scans per validation subject (4)")
    cal.add_argument("--seed", type=int, default=1)
    cal.add_argument("--noise-sigma", type=float, help="noise SD of the --cases scans (default: from the background)")
    add_common_options(cal)
    cal.set_defaults(handler=cmd_calibrate)

    tr = sub.add_parser("knee-train", help="train the femoral cartilage U-Net on MESE simulated from knee label maps")
    tr.add_argument("--labelmaps", required=True, help="folder of knee label maps <subject>[_<NN>m].nii.gz "
                                                       "(e.g. ../shared/data/knee_labelmaps)")
    tr.add_argument("--out", required=True, help="training folder: best.pt, last.pt, history.csv, training.json")
    tr.add_argument("--resume", action="store_true", help="continue the training in --out (its last.pt)")
    tr.add_argument("--overwrite", action="store_true", help="start over in a folder that holds a training")
    tr.add_argument("--epochs", type=int, default=40)
    tr.add_argument("--max-minutes", type=float, default=0.0, help="stop after the epoch that passes this (0: no limit)")
    tr.add_argument("--features", default="16,32,64,128,256", help="feature maps per U-Net level (16,32,64,128,256)")
    tr.add_argument("--network-size", type=int, default=384, help="network input rows = columns (384)")
    tr.add_argument("--patch", type=int, default=256, help="training patch size (0: whole network input)")
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--learning-rate", type=float, default=1e-3)
    tr.add_argument("--bank-size", type=int, default=40, help="simulated noise-free volumes kept in memory (40)")
    tr.add_argument("--bank-refresh", type=int, default=5, help="of them re-simulated after every epoch (5)")
    tr.add_argument("--validation-volumes", type=int, default=3, help="simulated volumes per validation subject (3)")
    tr.add_argument("--test-subjects", type=int, default=3)
    tr.add_argument("--validation-subjects", type=int, default=2)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    tr.add_argument("--no-bf16", action="store_true", help="train in float32 (default: bfloat16 autocast if supported)")
    tr.add_argument("--generator", default="mese", choices=("mese", "randomised"),
                    help="training images: the MESE phantom, or domain-randomised looks (SynthSeg-style; default mese)")
    tr.add_argument("--appearance-refresh", type=int, default=10,
                    help="randomised: volumes given a new random appearance per epoch (10)")
    tr.add_argument("--init-from", default="", help="start from these weights (knee checkpoint file or model id)")
    tr.add_argument("--workers", type=int, default=0,
                    help="make the training samples in this many worker processes (0: in the training process; "
                         "use them when a GPU or many cores train faster than one process simulates)")
    tr.add_argument("--epoch-samples", type=int, default=0,
                    help="with --workers: samples per epoch (0: 25 per bank volume, about one serial epoch)")
    tr.add_argument("--fixed-joint-shell", action="store_true",
                    help="randomised: keep the anatomy's 2 mm joint soft-tissue layer on every cartilage (as the "
                         "bundled 0.2 was trained) instead of redrawing the tissue beside the cartilage per volume")
    tr.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    tr.add_argument("-q", "--quiet", action="store_true")
    tr.set_defaults(handler=cmd_train)


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
def knee_t2_params(args):
    from .parameters import KneeT2Parameters

    return KneeT2Parameters(skip_echoes=args.skip_echoes, t2_max_ms=args.t2_max, noise_sigma=args.noise_sigma,
                            laterality=args.laterality, whole_volume=args.whole_volume, model_id=args.model,
                            device=args.device, precision=args.precision).validate()


def _echo_times(args):
    from .mese import parse_echo_times, validate_echo_times

    return list(validate_echo_times(parse_echo_times(args.te), None, "--te")) if args.te is not None else None


def read_knee_t2_inputs(args, progress=None) -> dict:
    """Read and check the inputs of one ``knee-t2`` case (no MRML, no output folder): the MESE
    series and the mask. ``mskquant batch`` runs this while the worker computes the previous case."""
    from mskquant.imageio import read_image
    from mskquant.progress import as_progress

    from .mese import read_mese

    progress = as_progress(progress)
    params = knee_t2_params(args)
    series = read_mese(args.mese, _echo_times(args), progress)
    params.fit_settings().validate(series.n_echoes)
    mask = read_image(args.mask, "Cartilage mask") if args.mask else None  # checked against the MESE grid by run()
    return {"series": series, "mask": mask}


def knee_t2_into_folder(args, inputs: dict, logic=None, progress=None, out=None):
    """One ``knee-t2`` case from read inputs into ``args.out`` (all outputs or none); returns the result.

    The single-case command and ``mskquant batch`` both call this (``logic`` kept by a batch worker;
    ``out``: the command's :class:`OutputFolder`, opened before the inputs were read)."""
    from mskquant.atomic import OutputFolder
    from mskquant.headless import create_headless_runtime
    from mskquant.progress import as_progress

    from .logic import KneeT2Logic

    progress = as_progress(progress)
    params = knee_t2_params(args)
    out = out or OutputFolder(args.out, KNEE_T2_OUTPUTS, overwrite=args.overwrite)
    logic = logic if logic is not None else KneeT2Logic(create_headless_runtime())
    if inputs["mask"] is None:  # fetch, verify and load the network before any work
        logic.segmentation_model(params, progress.sub(0.0, 0.02))
    # the series read from the file goes straight in: its source and metadata stay with it
    result = logic.run(inputs["series"], None, None, params, progress.sub(0.02, 0.95), name="Knee T2",
                       mask=inputs["mask"])
    with out:
        logic.export(result, out.stage)
    return result


def cmd_knee_t2(args) -> int:
    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import progress_for

    knee_t2_params(args)
    _echo_times(args)
    out = OutputFolder(args.out, KNEE_T2_OUTPUTS, overwrite=args.overwrite)
    progress = progress_for(args)
    # Read and check everything before touching the output folder.
    inputs = read_knee_t2_inputs(args, progress.sub(0.0, 0.1))
    result = knee_t2_into_folder(args, inputs, None, progress.sub(0.1, 1.0), out=out)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    s = result.summary
    rows = {r["region"]: r for r in s["regions"]}
    a, d, sp = rows["All"], rows["Deep"], rows["Superficial"]
    if "segmentation" in s:
        seg = s["segmentation"]
        print(f"cartilage segmented by {seg['model']}: {seg['counts']['final']} voxels (p >= "
              f"{seg['thresholds']['probability_threshold']:g}, slice minimum {seg['min_slice_voxels']} voxels)",
              file=sys.stderr if args.quiet else sys.stdout)
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
        summary = json.loads(f.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{f} is not valid JSON ({exc}): run 'mskquant knee-t2' for the {what} again.") from None
    missing = [k for k in ("regions", "laterality") if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise InputError(f"{f} is not a knee-t2 result (no {', '.join(missing)}): run 'mskquant knee-t2' for the "
                         f"{what} again.")
    return summary


def knee_change_into_folder(args, logic=None, progress=None):
    """One ``knee-change`` case into ``args.out`` (all outputs or none): the single-case command and
    ``mskquant batch`` both call this (``logic`` kept by a batch worker)."""
    from mskquant.atomic import OutputFolder
    from mskquant.headless import create_headless_runtime

    from .logic import KneeT2Logic

    out = OutputFolder(args.out, CHANGE_OUTPUTS, overwrite=args.overwrite)
    base = _summary(args.baseline, "baseline")
    follow = _summary(args.followup, "follow-up")
    logic = logic if logic is not None else KneeT2Logic(create_headless_runtime())
    change = logic.compare(base, follow)
    with out:
        logic.export_change(change, out.stage)
    return change


def cmd_change(args) -> int:
    change = knee_change_into_folder(args)
    for w in change.change.warnings:
        print(f"warning: {w}", file=sys.stderr)
    c = change.change
    rows = {r["region"]: r for r in c.rows}
    print(f"T2 change (all) {rows['All']['delta_t2_ms']:+.2f} ms; {c.n_clusters} focal cluster(s) covering "
          f"{c.percent_area:.1f} % of the plate (threshold {c.threshold_ms:.2f} ms) -> {args.out}")
    return 0


# --- knee-compare ----------------------------------------------------------------------------------------
def _read_pairs(path: str):
    import csv

    from mskquant.errors import InputError

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"Pairs file {p} does not exist: give a CSV with columns scan,mese,a[,b][,te][,laterality].")
    with open(p, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    need = {"scan", "mese", "a"}
    if not rows or not need <= set(rows[0]):
        raise InputError(f"{p} needs the columns scan, mese and a (optional b, te, laterality): it has "
                         f"{sorted(rows[0]) if rows else 'no rows'}.")
    base = p.parent

    def resolve(v):
        q = Path(v).expanduser()
        return q if q.is_absolute() else base / q

    return [{"scan": r["scan"], "mese": resolve(r["mese"]), "a": resolve(r["a"]),
             "b": resolve(r["b"]) if r.get("b") else None, "te": r.get("te") or None,
             "laterality": r.get("laterality") or None} for r in rows]


def cmd_compare_segmentations(args) -> int:
    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import progress_for
    from mskquant.errors import InputError
    from mskquant.headless import create_headless_runtime
    from mskquant.imageio import read_image

    from .logic import KneeT2Logic
    from .mese import parse_echo_times, read_mese, validate_echo_times
    from .parameters import KneeT2Parameters

    if args.pairs and (args.mese or args.a or args.b):
        raise InputError("Give either --pairs (several scans) or --mese with --a [--b] (one scan), not both.")
    if not args.pairs and not (args.mese and args.a):
        raise InputError("Give --mese and --a (and --b, or leave it out to compare with the automatic segmentation), "
                         "or --pairs scans.csv.")
    progress = progress_for(args)
    rt = create_headless_runtime()
    logic = KneeT2Logic(rt)

    def params_for(laterality):
        return KneeT2Parameters(noise_sigma=args.noise_sigma, laterality=laterality or args.laterality,
                                model_id=args.model, device=args.device).validate()

    def one(mese, a, b, te, laterality, name, prog):
        te_list = list(validate_echo_times(parse_echo_times(te), None, "--te")) if te else None
        series = read_mese(mese, te_list, prog.sub(0.0, 0.1))
        mask_a = read_image(a, "Segmentation A")
        mask_b = read_image(b, "Segmentation B") if b else None
        params = params_for(laterality)
        if mask_b is None:
            logic.segmentation_model(params)
        return logic.compare_segmentations(series, params=params, name=name, progress=prog.sub(0.1, 1.0),
                                           mask_a=mask_a, mask_b=mask_b)

    if not args.pairs:
        out = OutputFolder(args.out, COMPARE_OUTPUTS, overwrite=args.overwrite)
        agreement = one(args.mese, args.a, args.b, args.te, None, Path(args.mese).name, progress)
        with out:
            logic.export_agreement(agreement, out.stage)
        s = agreement.scan
        print(f"Dice {s.dice:.4f}, Jaccard {s.jaccard:.4f} ({s.voxels_a} vs {s.voxels_b} voxels); mean T2 all "
              f"{s.mean_t2_a['All']:.2f} vs {s.mean_t2_b['All']:.2f} ms -> {args.out}")
        return 0
    pairs = _read_pairs(args.pairs)
    out = OutputFolder(args.out, COMPARE_SET_OUTPUTS, overwrite=args.overwrite)
    for row in pairs:  # every file must exist before the long part starts
        for key in ("mese", "a", "b"):
            if row[key] is not None and not row[key].exists():
                raise InputError(f"{key} of scan '{row['scan']}' ({row[key]}) does not exist: fix {args.pairs}.")
    scans = []
    for n, row in enumerate(pairs):
        prog = progress.sub(n / len(pairs), (n + 1) / len(pairs))
        scans.append(one(row["mese"], row["a"], row["b"], row["te"], row["laterality"], row["scan"], prog).scan)
    agreement, table, _ = logic.agreement_table(scans)
    with out:
        logic.export_agreement_set(agreement, table, out.stage)
    for w in agreement.warnings:
        print(f"warning: {w}", file=sys.stderr)
    al = agreement.region("All")
    print(f"{len(scans)} scans: Dice {agreement.mean_dice:.4f}, Jaccard {agreement.mean_jaccard:.4f}; mean T2 (all) "
          f"Spearman {al.spearman:.3f}, MAE {al.mae_ms:.2f} ms, bias {al.bias_ms:+.2f} ms; subregion MAE "
          f"{agreement.subregion_mae_ms():.2f} ms -> {args.out}")
    return 0


# --- knee-calibrate ------------------------------------------------------------------------------------------
def cmd_calibrate(args) -> int:
    import numpy as np
    import torch

    from mskquant import render
    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import progress_for, write_json
    from mskquant.errors import InputError
    from mskquant.imageio import read_image
    from mskquant.csvio import write_rows_csv

    from . import training as tr
    from .calibration import CalibrationCase, calibrate
    from .checkpoint import read_checkpoint
    from .mese import parse_echo_times, read_mese, validate_echo_times
    from .quantify import check_mask
    from .segmentation import load_model

    if bool(args.labelmaps) == bool(args.cases):
        raise InputError("Give --labelmaps (simulate the model's validation subjects) or --cases (real validation scans "
                         "with reference masks), one of them.")
    out = OutputFolder(args.out, CALIBRATE_OUTPUTS, overwrite=args.overwrite)
    progress = progress_for(args)
    ckpt = read_checkpoint(args.model)
    model = load_model(args.model, args.device, require_thresholds=False)
    cases = []
    if args.labelmaps:
        names = (ckpt.training.get("split") or {}).get("validation")
        if not names:
            raise InputError(f"{args.model} records no validation subjects (training split): calibrate it on real "
                             f"validation scans with --cases.")
        folder = Path(args.labelmaps).expanduser()
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise InputError(f"The model's validation label maps {missing} are not in {folder}: give the label-map "
                             f"folder the model was trained from.")
        anatomies = tr.load_anatomies([folder / n for n in names], progress.sub(0.0, 0.1))
        if ckpt.training.get("generator") == "randomised":  # calibrate on images like the ones it learnt from
            volumes = tr.randomised_validation_volumes(anatomies, args.volumes_per_subject, args.seed,
                                                       progress.sub(0.1, 0.25))
        else:
            volumes = tr.validation_volumes(anatomies, args.volumes_per_subject, args.seed, tr.TrainingConfig(),
                                            progress.sub(0.1, 0.25))
        cases = [CalibrationCase(v.series, v.truth, v.name, v.sigma) for v in volumes]
    else:
        import csv

        path = Path(args.cases).expanduser()
        if not path.is_file():
            raise InputError(f"Cases file {path} does not exist: give a CSV with columns mese,mask[,te][,laterality].")
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or not {"mese", "mask"} <= set(rows[0]):
            raise InputError(f"{path} needs the columns mese and mask (optional te): one validation scan per row.")
        for n, r in enumerate(rows):
            mese = Path(r["mese"]).expanduser()
            mese = mese if mese.is_absolute() else path.parent / mese
            mask = Path(r["mask"]).expanduser()
            mask = mask if mask.is_absolute() else path.parent / mask
            te = list(validate_echo_times(parse_echo_times(r["te"]), None, "te")) if r.get("te") else None
            series = read_mese(mese, te, progress.sub(0.25 * n / len(rows), 0.25 * (n + 1) / len(rows)))
            ref = check_mask(read_image(mask, "Reference mask"), series)
            cases.append(CalibrationCase(series, ref, mese.name, args.noise_sigma))
    result = calibrate(model, cases, progress=progress.sub(0.25, 0.98))
    post = {**result.thresholds.as_dict(), "calibrated": True, "calibration": result.as_dict(),
            "min_slice_voxels_oai_mese_grid": result.thresholds.min_slice_voxels(120.0 / 384 * 120.0 / 269),
            "paper": "p >= 0.501 and 425 voxels on the OAI grid (Thomas et al. 2.5)"}
    raw = dict(ckpt.raw)
    raw["postprocessing"] = post
    for key in ("optimizer", "resume"):
        raw.pop(key, None)
    raw["training"] = {**ckpt.training, "calibration_cases": [c.name for c in cases]}
    grid_rows = ([p, a, result.grid[i, j]] for i, p in enumerate(result.probability_grid)
                 for j, a in enumerate(result.area_grid_mm2))
    j_best = list(result.area_grid_mm2).index(result.thresholds.min_slice_area_mm2)
    chart = render.Chart(f"Calibration: mean Dice over {len(cases)} validation scans", "probability threshold",
                         "mean Dice", [render.Series(result.probability_grid, result.grid[:, 0], "no slice minimum",
                                                     "line", (0.5, 0.5, 0.5)),
                                       render.Series(result.probability_grid, result.grid[:, j_best],
                                                     f"slice minimum {result.thresholds.min_slice_area_mm2:g} mm2",
                                                     "line", (0.1, 0.3, 0.8))])
    with out:
        with open(out.path("model.pt"), "wb") as fh:
            torch.save(raw, fh)
        write_rows_csv(out.path("calibration.csv"), ["probability_threshold", "min_slice_area_mm2", "mean_dice"],
                       grid_rows)
        write_json({**post, "model": str(args.model)}, out.path("calibration.json"))
        render.chart_png(chart, out.path("calibration.png"))
    th = result.thresholds
    print(f"p >= {th.probability:g}, slice minimum {th.min_slice_area_mm2:g} mm2 "
          f"({post['min_slice_voxels_oai_mese_grid']} voxels on the OAI MESE grid): mean Dice {result.mean_dice:.4f} "
          f"over {len(cases)} scans (at p >= 0.5 without a minimum {np.mean(result.dice_at_defaults):.4f}) -> "
          f"{Path(args.out) / 'model.pt'}")
    return 0


# --- knee-train ------------------------------------------------------------------------------------------
def _features(text: str):
    from mskquant.errors import InputError

    try:
        return tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise InputError(f"Cannot read --features {text!r}: give feature counts separated by commas, "
                         f"e.g. 16,32,64,128,256.") from None


def cmd_train(args) -> int:
    from mskquant.cli.common import progress_for, write_json
    from mskquant.device import describe_device, select_device
    from mskquant.errors import OutputError
    from mskquant.outputlock import FolderLock

    from . import training as tr

    config = tr.TrainingConfig(features=_features(args.features), network_size=(args.network_size, args.network_size),
                               patch=args.patch, batch_size=args.batch_size, learning_rate=args.learning_rate,
                               epochs=args.epochs, max_minutes=args.max_minutes, bank_size=args.bank_size,
                               bank_refresh=args.bank_refresh, validation_volumes=args.validation_volumes,
                               n_test_subjects=args.test_subjects, n_validation_subjects=args.validation_subjects,
                               seed=args.seed, bf16=not args.no_bf16, threads=args.threads,
                               generator=args.generator, appearance_refresh=args.appearance_refresh,
                               init_from=args.init_from, workers=args.workers,
                               epoch_samples=args.epoch_samples,
                               vary_joint_shell=not args.fixed_joint_shell).validate()
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputError(f"Training output {out} is a file: give a folder.")
    if (out / "last.pt").exists() and not (args.resume or args.overwrite):
        raise OutputError(f"{out} already holds a training (last.pt): pass --resume to continue it or --overwrite to "
                          f"start over.")
    if args.resume and args.overwrite:
        raise OutputError("Give either --resume or --overwrite, not both.")
    lock = FolderLock(out)  # noqa: F841  (held until the command ends: one training per folder)
    device = select_device(args.device)
    progress = progress_for(args)
    maps = tr.label_maps_in(args.labelmaps)
    split = tr.split_subjects(maps, config.n_test_subjects, config.n_validation_subjects, config.seed)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    log(f"subjects: train {split.subjects('train')}, validation {split.subjects('validation')}, "
        f"test {split.subjects('test')} (held out); device {describe_device(device)}")
    anat_train = tr.load_anatomies(split.train, progress.sub(0.0, 0.06))
    anat_val = tr.load_anatomies(split.validation, progress.sub(0.06, 0.08))
    if config.generator == "randomised":
        validation = tr.randomised_validation_volumes(anat_val, config.validation_volumes, config.seed,
                                                      progress.sub(0.08, 0.1))
    else:
        validation = tr.validation_volumes(anat_val, config.validation_volumes, config.seed, config,
                                           progress.sub(0.08, 0.1))
    out.mkdir(parents=True, exist_ok=True)
    meta = tr.training_metadata(split, config)
    write_json({**meta, "config": config.as_dict(), "labelmaps": str(Path(args.labelmaps))}, out / "training.json")
    result = tr.train(anat_train, validation, out, config, device, progress.sub(0.1, 1.0), resume=args.resume,
                      metadata=meta, log=log)
    print(f"best validation Dice {result.best_dice:.4f} at epoch {result.best_epoch} of {result.epochs_run} -> "
          f"{result.best_path} (calibrate it with 'mskquant knee-calibrate --model {result.best_path} ...')")
    return 0


def demo(ctx) -> None:
    """Simulated knee (real anatomy from ../shared when present, else an analytic knee): T2, subregions, change."""
    from .demo import run_demo

    run_demo(ctx)
