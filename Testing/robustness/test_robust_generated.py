"""Issue 9 item 1: the robustness suite, generated from a table of mutators applied to real inputs.

Every command is run in-process (``mskquant.cli.main``, output captured at the file-descriptor
level so native libraries' chatter counts too) on its good inputs with one of them mutated
(:mod:`robust_inputs`), or with one option or the output location made bad. Each case asserts:

* refused: exit code 2, exactly one line on stderr, ``mskquant: error: ...`` naming the problem
  (a keyword per mutator) and the fix (a colon, then what to do), no traceback, nothing written,
  and earlier results in the output folder untouched (half the refusal cases run with
  ``--overwrite`` on a folder that holds earlier results, byte for byte and modification time);
* legitimate input: exit code 0 and the same result as the unmutated inputs (same V_HI voxel
  counts, same T2 statistics, same pain probability), or, where the mutation changes what is
  measured (another grid, another pixel type), a complete result.

Inputs: the real SIJ case 1007 of ``../shared`` (the synthetic SIJ case without it), an
analytic-knee MESE phantom (``knee-phantom``) and an analytic left/right pair
(``pain-phantom``), all made once per session.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pytest

import robust_inputs as mi
from conftest import SHARED

TE = "10,20,30,40,50,60,70"


# --- the session's good inputs and their results ----------------------------------------------------
@dataclass
class Bases:
    root: Path
    files: dict = field(default_factory=dict)  # name -> good input path
    results: dict = field(default_factory=dict)  # command -> good result folder


def _main(argv) -> int:
    from mskquant.cli import main

    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors (the console script exits with this code)
        return exc.code


@pytest.fixture(scope="session")
def bases(tmp_path_factory) -> Bases:
    from mskquant.imageio import write_image
    from KneeT2SegmentLib.anatomy import analytic_knee

    root = tmp_path_factory.mktemp("robust_bases")
    b = Bases(root)
    f = b.files
    sij = SHARED / "sij" / "1007"
    if (sij / "STIR.nii.gz").is_file():
        import SimpleITK as sitk

        # the real scans, cropped in-plane around the normal-bone ROI (all 25 slices) to keep the suite fast
        for name, stem in (("stir", "STIR"), ("roi", "normal_marrow"), ("dr", "disease_region"), ("t1", "T1W")):
            sitk.WriteImage(sitk.ReadImage(str(sij / f"{stem}.nii.gz"))[100:240, 110:255, :], str(root / f"{stem}.nii.gz"))
            f[name] = root / f"{stem}.nii.gz"
    else:  # the synthetic case with its known answer
        from VHIWorkflowLib.synthetic import make_case

        case = make_case()
        for name, img in (("stir", case.stir), ("t1", case.t1), ("roi", case.normal_roi), ("dr", case.disease_region)):
            arr = img.array.astype(np.uint8) if img.array.dtype == bool else img.array
            write_image(img.with_array(arr), root / f"{name}.nii.gz")
            f[name] = root / f"{name}.nii.gz"
    assert _main(["vhi", "-q", "--stir", f["stir"], "--normal-roi", f["roi"], "--disease-region", f["dr"],
                  "--out", root / "vhi"]) == 0
    b.results["vhi"] = root / "vhi"
    write_image(analytic_knee(), root / "knee_labels.nii.gz")
    f["knee_labels"] = root / "knee_labels.nii.gz"
    assert _main(["knee-morph", "-q", "--labels", f["knee_labels"], "--laterality", "right",
                  "--out", root / "morph"]) == 0
    b.results["knee-morph"] = root / "morph"
    assert _main(["vhi-compare", "--a", f["dr"], "--b", f["dr"], "--out", root / "compare"]) == 0
    b.results["vhi-compare"] = root / "compare"
    assert _main(["knee-phantom", "-q", "--labelmap", root / "knee_labels.nii.gz", "--snr", "40",
                  "--out", root / "knee"]) == 0
    f.update(mese=root / "knee" / "mese.nii.gz", knee_mask=root / "knee" / "truth_cartilage.nii.gz")
    f["laterality"] = json.loads((root / "knee" / "mese.json").read_text())["Laterality"]
    assert _main(["knee-t2", "-q", "--mese", f["mese"], "--mask", f["knee_mask"], "--out", root / "t0"]) == 0
    # the follow-up: the same result under another name (a change of zero; its summary is what cases mutate)
    shutil.copytree(root / "t0", root / "t1")
    b.results.update({"knee-t2": root / "t0", "knee-t2-followup": root / "t1"})
    assert _main(["knee-change", "-q", "--baseline", root / "t0", "--followup", root / "t1",
                  "--out", root / "change"]) == 0
    b.results["knee-change"] = root / "change"
    assert _main(["pain-phantom", "-q", "--pairs", "1", "--analytic", "--seed", "5", "--out", root / "pain"]) == 0
    f.update(left=root / "pain" / "pain_000_left.nii.gz", right=root / "pain" / "pain_000_right.nii.gz")
    assert _main(["pain-cam", "-q", "--left", f["left"], "--right", f["right"], "--out", root / "cam"]) == 0
    b.results["pain-cam"] = root / "cam"
    return b


# --- a case and its checks ----------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    command: str  # the result it is compared with
    argv: Callable[[Bases, Path], list]  # (bases, scratch folder) -> arguments; "{out}" = the output folder
    expect: str  # regex the one error line must match (case-insensitive), or "same" / "complete"
    earlier: bool = False  # refusal run with --overwrite on a folder holding earlier results


OUTPUTS = {
    "vhi": ("vhi.json", "vhi.csv", "disease_region.nii.gz", "inflammation.nii.gz", "inflammation.seg.nrrd"),
    "vhi-compare": ("compare.json", "compare.csv"),
    "vhi-agreement": ("agreement.csv", "agreement.json", "bland_altman.png"),
    "knee-t2": ("t2.nii.gz", "subregions.nii.gz", "subregions.csv", "projection.png", "knee_t2.json",
                "t2_fit_r2.nii.gz", "t2_fit_amplitude.nii.gz", "t2_loglinear.nii.gz"),
    "knee-change": ("change.csv", "clusters.json", "change.png"),
    "knee-compare": ("agreement.csv", "agreement.json", "agreement.png", "overlay.png"),
    "pain-cam": ("pain.json", "pain.csv", "cam_left.nii.gz", "cam_right.nii.gz", "cam_overlay.png"),
    "knee-morph": ("labels.nii.gz", "labels.ctbl", "thickness.csv", "thickness.nii.gz", "morph.json", "maps",
                   "bone_surface_femur.vtp", "bone_surface_tibia.vtp", "bone_surface_patella.vtp"),
}


def _key_result(command: str, out: Path):
    """The numbers a legitimate variant of the input must reproduce."""
    if command == "vhi":
        return json.loads((out / "vhi.json").read_text())["voxels"]
    if command == "knee-t2":
        rows = json.loads((out / "knee_t2.json").read_text())["regions"]
        return {r["region"]: (r["n_voxels"], round(r["mean_t2_ms"], 3)) for r in rows}
    if command == "pain-cam":
        return round(json.loads((out / "pain.json").read_text())["p_right_painful"], 4)
    if command == "knee-morph":
        rows = json.loads((out / "morph.json").read_text())["thickness"]["plates"]
        return {(r["plate"], r["region"]): (r["n_points"], round(r["mean_mm"] or 0.0, 4)) for r in rows}
    if command == "vhi-compare":
        return round(json.loads((out / "compare.json").read_text())["dice"], 6)
    raise AssertionError(command)


def _snapshot(folder: Path):
    if not folder.exists():
        return None
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
                  for p in folder.rglob("*"))


def run_case(case: Case, bases: Bases, scratch: Path, capfd):
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / "out"
    argv = case.argv(bases, scratch)
    refusal = case.expect not in ("same", "complete")
    if refusal and case.earlier and "{out}" in argv and case.command in bases.results:
        shutil.copytree(bases.results[case.command], out)
        argv = argv + ["--overwrite"]
    argv = [str(out) if a == "{out}" else str(a) for a in argv]
    before = _snapshot(out)
    capfd.readouterr()
    rc = _main(argv)
    stdout, stderr = capfd.readouterr()
    assert "Traceback" not in stdout + stderr, stderr
    if refusal:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        assert rc == 2, (rc, stderr)
        assert len(lines) == 1, lines
        line = lines[0]
        assert line.startswith("mskquant: error: "), line
        assert re.search(case.expect, line, re.IGNORECASE), (case.expect, line)
        assert re.search(r": |\b(give|use|choose|check|pass|run|set|select|fix|remove|wait|free|save|order)\b",
                         line[len("mskquant: error: "):], re.IGNORECASE), f"no fix named: {line}"
        assert _snapshot(out) == before, "the refused run changed the output folder"
        assert not list(scratch.glob("**/.mskquant-staging-*"))
        return line
    assert rc == 0, stderr
    expected = OUTPUTS.get(case.command)
    if expected:
        assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    if case.expect == "same":
        assert _key_result(case.command, out) == _key_result(case.command, bases.results[case.command])
    return stderr


# --- the table ---------------------------------------------------------------------------------------------
CASES: List[Case] = []


def add(id_, command, argv, expect, earlier=None):
    earlier = len(CASES) % 2 == 1 if earlier is None else earlier
    CASES.append(Case(id_, command, argv, expect, earlier))


def _args(template: dict, slot: Optional[str] = None, mutate=None, extra=()):
    """Build an argv function: ``template`` maps options to base-file names (or literal strings)."""
    def build(b: Bases, scratch: Path):
        argv = []
        for opt, value in template.items():
            if opt.startswith("_"):
                argv.append(value)
                continue
            path = b.files.get(value, value) if isinstance(value, str) else value
            if opt == slot:
                path = mutate(Path(path), scratch)
            argv += [opt, path]
        return argv + list(extra)
    return build


VHI = {"_c": "vhi", "_q": "-q", "--stir": "stir", "--normal-roi": "roi", "--disease-region": "dr", "--out": "{out}"}
VHI_T1 = {"_c": "vhi", "_q": "-q", "--stir": "stir", "--normal-roi": "roi", "--t1": "t1", "--out": "{out}"}
COMPARE = {"_c": "vhi-compare", "--a": "dr", "--b": "dr", "--out": "{out}"}
KNEE = {"_c": "knee-t2", "_q": "-q", "--mese": "mese", "--mask": "knee_mask", "--out": "{out}"}
# a MESE file rewritten elsewhere loses its te.json and sidecar: echo times and side given instead
KNEE_MOVED = {**KNEE, "--te": TE, "--laterality": "laterality"}
KCMP = {"_c": "knee-compare", "_q": "-q", "--mese": "mese", "--a": "knee_mask", "--b": "knee_mask", "--out": "{out}"}
PAIN = {"_c": "pain-cam", "_q": "-q", "--left": "left", "--right": "right", "--out": "{out}"}
MORPH = {"_c": "knee-morph", "_q": "-q", "--labels": "knee_labels", "_l": "--laterality", "_side": "right",
         "--out": "{out}"}  # "_": literal arguments ("right" also names a base file)

# 1. unusable files, every image input of every command
for cmd, template, slots in (("vhi", VHI, ("--stir", "--normal-roi", "--disease-region")), ("vhi", VHI_T1, ("--t1",)),
                             ("vhi-compare", COMPARE, ("--a", "--b")), ("knee-t2", KNEE, ("--mese", "--mask")),
                             ("knee-compare", KCMP, ("--a", "--b")), ("pain-cam", PAIN, ("--left", "--right")),
                             ("knee-morph", MORPH, ("--labels",))):
    for slot in slots:
        for name, (mutate, keyword) in mi.FILE_REFUSALS.items():
            if cmd == "knee-t2" and slot == "--mese" and name == "directory":
                continue  # a folder is a DICOM series there: its own case below
            add(f"{cmd}{slot}-{name}", cmd, _args(template, slot, mutate), keyword)
        for name, (mutate, keyword) in mi.SHAPE_REFUSALS.items():
            if cmd == "knee-t2" and slot == "--mese" and name == "complex":
                continue  # ITK cannot make a complex 4D image (nor read one)
            add(f"{cmd}{slot}-{name}", cmd, _args(template, slot, mutate), keyword)
        if not (cmd == "knee-t2" and slot == "--mese"):
            add(f"{cmd}{slot}-4d", cmd, _args(template, slot, mi.four_d), "4d")

# 2. STIR values and geometry
add("vhi--stir-nan", "vhi", _args(VHI, "--stir", mi.NAN), "nan")
add("vhi--stir-inf", "vhi", _args(VHI, "--stir", mi.INF), "nan|inf|finite")
add("vhi--stir-constant", "vhi", _args(VHI, "--stir", mi.CONSTANT), "iqr")
add("vhi--stir-zeros", "vhi", _args(VHI, "--stir", mi.ZEROS), "iqr")
add("vhi--stir-far", "vhi", _args(VHI, "--stir", mi.SHIFTED_FAR), "overlap|outside")
add("vhi--stir-negative", "vhi", _args(VHI, "--stir", mi.values("negative", lambda a: a - 5000.0, np.float64)),
    "complete")
add("vhi--stir-huge", "vhi", _args(VHI, "--stir", mi.values("huge", lambda a: a * 1e20, np.float64)), "same")
add("vhi--stir-tiny", "vhi", _args(VHI, "--stir", mi.values("tiny", lambda a: a * 1e-20, np.float64)), "same")
add("vhi--stir-flipped", "vhi", _args(VHI, "--stir", mi.flipped_voxel_order), "same")
add("vhi--stir-nrrd", "vhi", _args(VHI, "--stir", mi.as_nrrd), "same")
add("vhi--stir-unicode", "vhi", _args(VHI, "--stir", mi.unicode_path), "same")
for name, kind in mi.PIXEL_TYPES.items():
    add(f"vhi--stir-{name}", "vhi", _args(VHI, "--stir", mi.pixel_type(kind, name)),
        "same" if name in ("float32", "float64") else "complete")

# 3. masks: labels, pixel types, geometry
MASK_SAME = {"label255": mi.LABEL_255, "labelmixed": mi.LABEL_MIXED, "floatmask": mi.FLOAT_MASK,
             "neglabel": mi.NEGATIVE_LABEL, "flipped": mi.flipped_voxel_order, "unicode": mi.unicode_path}
for slot in ("--normal-roi", "--disease-region"):
    for name, mutate in MASK_SAME.items():
        add(f"vhi{slot}-{name}", "vhi", _args(VHI, slot, mutate), "same")
    for name, kind in mi.PIXEL_TYPES.items():
        if slot == "--normal-roi" or name in ("int8", "uint16", "float64"):
            add(f"vhi{slot}-{name}", "vhi", _args(VHI, slot, mi.pixel_type(kind, name)), "same")
    add(f"vhi{slot}-empty-mask", "vhi", _args(VHI, slot, mi.EMPTY_MASK), "empty|no voxel")
    add(f"vhi{slot}-far", "vhi", _args(VHI, slot, mi.SHIFTED_FAR), "overlap|outside")
    for name, mutate in (("spacing", mi.DOUBLE_SPACING), ("oblique", mi.OBLIQUE), ("cropped", mi.cropped),
                         ("half-voxel", mi.HALF_VOXEL)):
        add(f"vhi{slot}-{name}", "vhi", _args(VHI, slot, mutate), "complete")

# 4. options and output locations
for value, keyword in (("-1", "at least 1"), ("0", "at least 1"), ("four", "invalid int")):
    add(f"vhi-min-island-{value}", "vhi", _args(VHI, extra=["--min-island-pixels", value]), keyword)
add("vhi-no-t1-no-region", "vhi", lambda b, s: ["vhi", "--stir", b.files["stir"], "--normal-roi", b.files["roi"],
                                                 "--out", "{out}"], "--t1")
add("vhi-unknown-option", "vhi", _args(VHI, extra=["--threshold", "3"]), "unrecognized arguments")

# 5. vhi-compare specifics
for name, mutate in (("label255", mi.LABEL_255), ("floatmask", mi.FLOAT_MASK), ("flipped", mi.flipped_voxel_order),
                     ("unicode", mi.unicode_path), ("uint64", mi.pixel_type(mi.PIXEL_TYPES["uint64"], "uint64"))):
    add(f"vhi-compare--b-{name}", "vhi-compare", _args(COMPARE, "--b", mutate), "same")
add("vhi-compare--b-far", "vhi-compare", _args(COMPARE, "--b", mi.SHIFTED_FAR), "do not overlap")
add("vhi-compare--b-spacing", "vhi-compare", _args(COMPARE, "--b", mi.DOUBLE_SPACING), "complete")


# 6. vhi-agreement: the pairs table
def _agreement(text: Optional[str], name="pairs.csv", encoding="utf-8"):
    def build(b: Bases, scratch: Path):
        p = scratch / name
        if text is not None:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text.replace("{dr}", str(b.files["dr"])), encoding=encoding)
        return ["vhi-agreement", "-q", "--pairs", p, "--out", "{out}"]
    return build


GOOD_PAIRS = "subject,a,b\ns1,1.0,1.2\ns2,2.0,1.9\ns3,3.5,3.1\n"
for id_, text, keyword in (
        ("missing", None, "does not exist"), ("empty", "", "header|no rows|subject,a,b"),
        ("header-only", "subject,a,b\n", "no rows|at least|header"), ("wrong-columns", "id,x,y\n1,2,3\n", "subject,a,b"),
        ("not-numbers-nor-files", "subject,a,b\ns1,one,two\ns2,1,2\n", "does not exist|not a number"),
        ("nan", "subject,a,b\ns1,nan,1\ns2,1,2\ns3,2,2\n", "nan|not a number|finite"),
        ("inf", "subject,a,b\ns1,inf,1\ns2,1,2\ns3,2,2\n", "nan|not a number|finite"),
        ("one-subject", "subject,a,b\ns1,1,2\n", "at least 2|two"),
        ("missing-value", "subject,a,b\ns1,1,\ns2,1,2\n", "empty|missing|does not exist"),
        ("missing-mask-file", "subject,a,b\ns1,nowhere_a.nii.gz,nowhere_b.nii.gz\ns2,1,2\n", "does not exist"),
        ("semicolons", "subject;a;b\ns1;1;2\ns2;2;3\n", "subject,a,b"),
        ("binary", "\x00\x01\x02garbage", "subject,a,b|not a text|csv")):
    add(f"vhi-agreement-{id_}", "vhi-agreement", _agreement(text), keyword)
add("vhi-agreement-folder", "vhi-agreement", lambda b, s: ["vhi-agreement", "--pairs", s, "--out", "{out}"],
    "does not exist|folder|csv")
add("vhi-agreement-bom", "vhi-agreement", _agreement(GOOD_PAIRS, encoding="utf-8-sig"), "complete")
add("vhi-agreement-unicode", "vhi-agreement", _agreement(GOOD_PAIRS, name="Paare ü ß/pairs 1.csv"), "complete")
add("vhi-agreement-latin1", "vhi-agreement", _agreement("subject,a,b\nM\u00fcller,1,2\nS2,2,2.5\n", encoding="latin-1"),
    "utf-8|encoding|text")
add("vhi-agreement-mask-paths", "vhi-agreement",
    _agreement("subject,a,b\ns1,{dr},{dr}\ns2,1,2\ns3,2,2.5\n"), "complete")

# 7. knee-t2: MESE series, echo times, masks, options
add("knee-t2--mese-3d", "knee-t2", _args(KNEE_MOVED, "--mese", mi.two_d), "2d|without echoes")
add("knee-t2--mese-folder-empty", "knee-t2", _args(KNEE, "--mese", mi.directory), "no dicom|no 4d|holds no")
add("knee-t2--mese-constant", "knee-t2", _args(KNEE_MOVED, "--mese", mi.CONSTANT),
    "noise|decay|sigma|constant|--noise-sigma")
add("knee-t2--mese-zeros", "knee-t2", _args(KNEE_MOVED, "--mese", mi.ZEROS), "zero|noise|sigma|empty")
add("knee-t2--mese-unicode", "knee-t2", _args(KNEE_MOVED, "--mese", mi.unicode_path), "same")
add("knee-t2--mese-nrrd", "knee-t2", _args(KNEE_MOVED, "--mese", mi.as_nrrd), "same")
add("knee-t2--mese-nan", "knee-t2", _args(KNEE_MOVED, "--mese", mi.NAN), "complete")  # reported, not fatal
for id_, te, keyword in (("unsorted", "10,20,30,40,50,70,60", "not increasing"),
                         ("duplicated", "10,10,20,30,40,50,60", "more than once"),
                         ("negative", "-10,20,30,40,50,60,70", "expected one argument"),
                         ("zero", "0,20,30,40,50,60,70", "positive"),
                         ("too-few", "10,20,30", "3 echo times"), ("too-many", TE + ",80", "8 echo times"),
                         ("words", "ten,twenty", "cannot read echo times"), ("empty", "", "no echo times|cannot read"),
                         ("nan", "nan,20,30,40,50,60,70", "not numbers|positive|finite|cannot read"),
                         ("inf", "10,20,30,40,50,60,inf", "not numbers|positive|finite|cannot read"),
                         ("semicolons", "10;20;30;40;50;60;70", "same"),
                         ("seconds", "0.01,0.02,0.03,0.04,0.05,0.06,0.07", "seconds")):
    add(f"knee-t2--te-{id_}", "knee-t2", _args({**KNEE, "--te": te}), keyword)


def _te_json(text):
    def build(b: Bases, scratch: Path):
        d = scratch / "series"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(b.files["mese"], d / "mese.nii.gz")
        (d / "te.json").write_text(text)
        return ["knee-t2", "-q", "--mese", d / "mese.nii.gz", "--mask", b.files["knee_mask"], "--out", "{out}"]
    return build


for id_, text, keyword in (("invalid-json", "[10, 20,", "not valid json"),
                           ("wrong-count", "[10, 20, 30]", "3 echo times"),
                           ("strings", '["a", "b", "c", "d", "e", "f", "g"]', "not numbers"),
                           ("object", '{"te": 5}', "no echo times|echo times")):
    add(f"knee-t2-te.json-{id_}", "knee-t2", _te_json(text), keyword)
for name, mutate in (("label255", mi.LABEL_255), ("floatmask", mi.FLOAT_MASK), ("unicode", mi.unicode_path),
                     ("int64", mi.pixel_type(mi.PIXEL_TYPES["int64"], "int64"))):
    add(f"knee-t2--mask-{name}", "knee-t2", _args(KNEE, "--mask", mutate), "same")
add("knee-t2--mask-empty-mask", "knee-t2", _args(KNEE, "--mask", mi.EMPTY_MASK), "empty")
add("knee-t2--mask-cropped", "knee-t2", _args(KNEE, "--mask", mi.cropped), "differs from the mese grid")
add("knee-t2--mask-far", "knee-t2", _args(KNEE, "--mask", mi.SHIFTED_FAR), "differs from the mese grid")
add("knee-t2--mask-oblique", "knee-t2", _args(KNEE, "--mask", mi.OBLIQUE), "differs from the mese grid")
for opt, value, keyword in (("--noise-sigma", "-1", "0 or more"), ("--noise-sigma", "nan", "0 or more|finite"),
                            ("--noise-sigma", "inf", "finite|too large"), ("--t2-max", "0", "0 <= min < max"),
                            ("--t2-max", "nan", "0 <= min < max|finite"), ("--t2-max", "-5", "0 <= min < max"),
                            ("--skip-echoes", "-1", "0 or more"), ("--skip-echoes", "7", "echo|at least"),
                            ("--skip-echoes", "1.5", "invalid int"), ("--laterality", "up", "invalid choice"),
                            ("--model", "no-such-model", "same")):  # with --mask no model is needed
    add(f"knee-t2{opt}-{value}", "knee-t2", _args(KNEE, extra=[opt, value]), keyword)

# 8. knee-change: result folders


def _change(mutate_summary=None, baseline="knee-t2", followup="knee-t2-followup", raw=None):
    def build(b: Bases, scratch: Path):
        base = b.results[baseline] if baseline in b.results else scratch / baseline
        follow = b.results[followup]
        if mutate_summary is not None or raw is not None:
            follow = scratch / "followup"
            shutil.copytree(b.results[followup], follow)
            if raw is not None:
                (follow / "knee_t2.json").write_text(raw)
            else:
                s = json.loads((follow / "knee_t2.json").read_text())
                mutate_summary(s)
                (follow / "knee_t2.json").write_text(json.dumps(s))
        return ["knee-change", "-q", "--baseline", base, "--followup", follow, "--out", "{out}"]
    return build


add("knee-change-missing-folder", "knee-change", _change(baseline="nowhere"), "does not exist")
add("knee-change-invalid-json", "knee-change", _change(raw="{"), "not valid json")
add("knee-change-empty-json", "knee-change", _change(raw=""), "not valid json")
add("knee-change-json-list", "knee-change", _change(raw="[1, 2]"), "knee-t2|not a|result")
add("knee-change-no-regions", "knee-change", _change(lambda s: s.pop("regions")), "knee-t2|missing|result")
add("knee-change-other-side", "knee-change", _change(lambda s: s.update(laterality="left")), "different knees")
add("knee-change-other-subject", "knee-change", _change(lambda s: s.update(subject_id="9999999")),
    "different subjects")
add("knee-change-not-a-result", "knee-change",
    lambda b, s: ["knee-change", "--baseline", b.files["mese"].parent, "--followup", b.results["knee-t2"],
                  "--out", "{out}"], "not a knee-t2 result folder")
add("knee-change-same-folder-twice", "knee-change",
    lambda b, s: ["knee-change", "-q", "--baseline", b.results["knee-t2"], "--followup", b.results["knee-t2"],
                  "--out", "{out}"], "complete")

# 9. knee-compare
add("knee-compare-pairs-and-mese", "knee-compare", _args({**KCMP, "--pairs": "x.csv"}), "either --pairs")
add("knee-compare-nothing", "knee-compare", lambda b, s: ["knee-compare", "--out", "{out}"], "give --mese")
add("knee-compare--b-cropped", "knee-compare", _args(KCMP, "--b", mi.cropped), "differs from the mese grid|grid")


def _knee_pairs(text: Optional[str]):
    def build(b: Bases, scratch: Path):
        p = scratch / "scans.csv"
        if text is not None:
            p.write_text(text.replace("{mese}", str(b.files["mese"])).replace("{mask}", str(b.files["knee_mask"])))
        return ["knee-compare", "-q", "--pairs", p, "--out", "{out}"]
    return build


for id_, text, keyword in (("missing", None, "does not exist"), ("empty", "", "columns"),
                           ("wrong-columns", "scan,file\n1,2\n", "columns"),
                           ("missing-file", "scan,mese,a\ns1,{mese},nowhere.nii.gz\n", "does not exist"),
                           ("bad-te", "scan,mese,a,b,te\ns1,{mese},{mask},{mask},abc\n", "cannot read echo times")):
    add(f"knee-compare-pairs-{id_}", "knee-compare", _knee_pairs(text), keyword)

# 10. pain-cam
def _same_image_twice(b, scratch):
    copy = scratch / "knee_b.nii.gz"  # a name that says no side: the images themselves must be compared
    shutil.copy(b.files["left"], copy)
    return ["pain-cam", "-q", "--left", b.files["left"], "--right", copy, "--out", "{out}"]


add("pain-cam-same-image-twice", "pain-cam", _same_image_twice, "same image")
for slot in ("--left", "--right"):
    add(f"pain-cam{slot}-constant", "pain-cam", _args(PAIN, slot, mi.CONSTANT), "one intensity|blank")
    add(f"pain-cam{slot}-zeros", "pain-cam", _args(PAIN, slot, mi.ZEROS), "one intensity|blank")
    add(f"pain-cam{slot}-nan", "pain-cam", _args(PAIN, slot, mi.NAN), "nan|finite")
add("pain-cam--left-unicode", "pain-cam", _args(PAIN, "--left", mi.unicode_path), "same")
add("pain-cam--right-nrrd", "pain-cam", _args(PAIN, "--right", mi.as_nrrd), "same")
for opt, value, keyword in (("--center-left", "-1", "out of range"), ("--center-left", "999", "out of range|valid"),
                            ("--center-right", "2", "fewer than 11 slices.*choose a centre"), ("--center-right", "x", "invalid int"),
                            ("--model", "no-such-model", "unknown model"),
                            ("--model", "knee-femoral-cartilage-mese", "not a|pain|siamese|architecture")):
    add(f"pain-cam{opt}-{value}", "pain-cam", _args(PAIN, extra=[opt, value]), keyword)


# 11. output locations, for every command that writes a folder
def _out_is_file(template):
    def build(b, scratch):
        f = scratch / "a_file"
        f.write_text("keep me")
        return [f if v == "{out}" else v for v in _args(template)(b, scratch)]
    return build


def _out_under_file(template):
    def build(b, scratch):
        f = scratch / "a_file"
        f.write_text("keep me")
        return [f / "sub" if v == "{out}" else v for v in _args(template)(b, scratch)]
    return build


for cmd, template in (("vhi", VHI), ("vhi-compare", COMPARE), ("knee-t2", KNEE), ("knee-compare", KCMP),
                      ("pain-cam", PAIN), ("knee-morph", MORPH)):
    add(f"{cmd}-out-is-a-file", cmd, _out_is_file(template), "is a file")
    add(f"{cmd}-out-under-a-file", cmd, _out_under_file(template), "is a file")
# knee-morph: the label map in another file format or path, the network's input checks
add("knee-morph--labels-nrrd", "knee-morph", _args(MORPH, "--labels", mi.as_nrrd), "same")
add("knee-morph--labels-unicode", "knee-morph", _args(MORPH, "--labels", mi.unicode_path), "same")
add("knee-morph--labels-empty-mask", "knee-morph", _args(MORPH, "--labels", mi.EMPTY_MASK), "no cartilage")
add("knee-morph--labels-spacing", "knee-morph", _args(MORPH, "--labels", mi.DOUBLE_SPACING), "at most 1.5 mm")
add("knee-morph--image-thick", "knee-morph",
    lambda b, s: ["knee-morph", "-q", "--image", b.files["mese"], "--out", "{out}"], "4d|series")
add("knee-morph-nothing", "knee-morph", lambda b, s: ["knee-morph", "-q", "--out", "{out}"], "--image")
for cmd, template in (("vhi", VHI), ("knee-t2", KNEE), ("pain-cam", PAIN), ("knee-morph", MORPH)):
    add(f"{cmd}-out-holds-results", cmd,
        lambda b, s, c=cmd, t=template: [b.results[c] if v == "{out}" else v for v in _args(t)(b, s)],
        "already holds results.*--overwrite", earlier=False)


# 12. models
def _models(*argv, setup=None):
    def build(b, scratch):
        extra = setup(b, scratch) if setup else {}
        return ["models", *[extra.get(a, a) for a in argv]]
    return build


def _files(b, scratch):
    from mskquant.models import ModelStore

    (scratch / "text.pt").write_text("not a model")
    demo = ModelStore().ensure("siamese-pain-demo")[0]
    return {"TEXT": scratch / "text.pt", "MISSING": scratch / "missing.pt", "DIR": scratch, "DEMO": demo}


for id_, argv, keyword in (
        ("path-unknown", ("path", "no-such-model"), "unknown model"),
        ("verify-unknown", ("verify", "no-such-model"), "unknown model"),
        ("download-unknown", ("download", "no-such-model"), "unknown model"),
        ("clear-unknown", ("clear", "no-such-model"), "unknown model"),
        ("add-missing", ("add", "MISSING", "--id", "my-model", "--like", "siamese-pain-demo"), "does not exist"),
        ("add-folder", ("add", "DIR", "--id", "my-model", "--like", "siamese-pain-demo"), "folder|not a file"),
        ("add-not-a-model", ("add", "TEXT", "--id", "my-model", "--like", "siamese-pain-demo"),
         "cannot be read|not a|weights"),
        ("add-bad-id", ("add", "TEXT", "--id", "My Model!", "--like", "siamese-pain-demo"), "id|lower case"),
        ("add-unknown-like", ("add", "TEXT", "--id", "my-model", "--like", "no-such-model"), "unknown model"),
        ("add-existing-id", ("add", "DEMO", "--id", "siamese-pain-demo", "--like", "siamese-pain-demo"),
         "built-in model.*choose another id"),
        ("unknown-action", ("rename",), "invalid choice")):
    add(f"models-{id_}", "models", _models(*argv, setup=_files), keyword)

CASE_IDS = [c.id for c in CASES]
DUPLICATE_IDS = sorted({i for i in CASE_IDS if CASE_IDS.count(i) > 1})
assert not DUPLICATE_IDS, DUPLICATE_IDS


@pytest.fixture
def isolated_models(tmp_path, monkeypatch):
    """An empty, offline user model folder (bundled models stay available)."""
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("MSKQUANT_MODEL_DIR", str(d))
    monkeypatch.setenv("MSKQUANT_OFFLINE", "1")
    return d


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_case(case, bases, tmp_path, capfd, isolated_models):
    run_case(case, bases, tmp_path / "case", capfd)


def test_the_suite_is_large_and_covers_every_command():
    commands = {c.command for c in CASES}
    assert len(CASES) >= 150, len(CASES)
    assert {"vhi", "vhi-compare", "vhi-agreement", "knee-t2", "knee-change", "knee-compare", "pain-cam",
            "knee-morph", "models"} <= commands


def test_a_full_output_location_is_one_line_and_leaves_nothing(bases, tmp_path, capfd, isolated_models):
    """A results folder on a tiny tmpfs (mounted here when running as root, else skipped)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; run as root to check a full output location")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): needs CAP_SYS_ADMIN")
    try:
        (mnt / "earlier").mkdir()
        (mnt / "earlier" / "notes.txt").write_text("earlier results")
        st = os.statvfs(mnt)  # fill it up to the last 8 KiB: less than any set of results
        (mnt / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 8192))
        for out in (mnt / "new", mnt / "earlier"):
            case = Case(f"full-{out.name}", "vhi", lambda b, s, o=out: [
                "vhi", "-q", "--stir", b.files["stir"], "--normal-roi", b.files["roi"], "--disease-region",
                b.files["dr"], "--out", o], "no space left|full|cannot write")
            before = _snapshot(out)
            line = run_case(case, bases, tmp_path / out.name, capfd)
            assert _snapshot(out) == before and "another output folder" in line, line
        assert sorted(p.name for p in mnt.iterdir()) == ["earlier", "filler"]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
