"""``mskquant super-resolve``: a thick-sliced knee volume onto the 3x finer slice grid (SR-CNN).

* ``mskquant super-resolve --image THICK.nii.gz [--factor 3] --out SR.nii.gz`` writes the
  super-resolved image (float32) on the fine slice grid (:func:`.degrade.fine_geometry`:
  spacing / factor along the slice axis, slice centres tiling the thick slabs; in-plane grid
  and directions unchanged); ``--tci TCI.nii.gz`` also writes the tricubic interpolation;
* ``--out DIR`` (no image suffix; what ``mskquant batch`` gives) writes ``sr.nii.gz``,
  ``tci.nii.gz``, ``superres.csv`` (one row: geometry, timings) and ``superres.json``.

Inputs whose slice axis, slice spacing or factor do not fit the model are refused with the
reason before anything is written; an already fine-sliced image is refused, not passed
through. Outputs appear whole or not at all (``--overwrite`` to replace).
"""

from __future__ import annotations

import sys
from pathlib import Path

FOLDER_OUTPUTS = ("sr.nii.gz", "tci.nii.gz", "superres.csv", "superres.json")
CASE_TABLE = "superres.csv"
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr")


def register(sub) -> None:
    from mskquant.cli.common import add_common_options
    from mskquant.device import PRECISIONS

    from .model import DEFAULT_MODEL_ID

    p = sub.add_parser("super-resolve", help="through-plane super-resolution of a thick-sliced knee volume "
                                             "(residual 3D CNN on the tricubic interpolation)")
    p.add_argument("--image", required=True, help="thick-sliced 3D volume (NIfTI/NRRD); its slice axis is the axis "
                                                  "of the largest spacing")
    p.add_argument("--factor", type=float, help="slice thickness / output slice spacing (default: the model's, 3)")
    p.add_argument("--model", default=DEFAULT_MODEL_ID, help=f"registered model id or .pt file ({DEFAULT_MODEL_ID})")
    p.add_argument("--tci", help="also write the tricubic interpolation to this file (file --out only)")
    p.add_argument("--slab", type=int, default=48, help="rows per network pass (memory; default 48)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="network arithmetic (auto: bfloat16 where the CPU/GPU supports it, ~3x faster)")
    add_common_options(p)
    p.set_defaults(handler=cmd_super_resolve)


def _is_image_path(out: str) -> bool:
    return any(str(out).lower().endswith(s) for s in IMAGE_SUFFIXES)


def _summary(args, result, model) -> dict:
    thick_sp = result.image.geometry.spacing[result.slice_axis_ijk] * result.factor
    return {"image": str(args.image), "model": model.name, "factor": result.factor,
            "slice_axis": "ijk"[result.slice_axis_ijk], "thick_spacing_mm": round(float(thick_sp), 6),
            "fine_spacing_mm": round(float(result.image.geometry.spacing[result.slice_axis_ijk]), 6),
            "shape_ijk": "x".join(str(s) for s in result.image.geometry.shape_ijk), "precision": result.precision,
            **{k: round(v, 3) for k, v in result.seconds.items()}}


def super_resolve_into(args, progress=None, model=None):
    """One case: read, check, super-resolve, write (whole or nothing). Returns (result, summary).

    ``model`` (a loaded :class:`.model.SuperResModel`) is kept by a batch worker across cases.
    """
    from mskquant.atomic import OutputFolder
    from mskquant.cli.common import progress_for, write_json
    from mskquant.errors import OutputError
    from mskquant.imageio import read_image, write_image

    from .infer import check_input, super_resolve
    from .model import load_model

    progress = progress or progress_for(args)
    file_mode = _is_image_path(args.out)
    out = Path(args.out).expanduser()
    targets = [out] + ([Path(args.tci).expanduser()] if file_mode and args.tci else [])
    if file_mode:
        for t in targets:
            if t.exists() and not args.overwrite:
                raise OutputError(f"{t} already exists: choose another file or pass --overwrite.")
            if not t.parent.is_dir():
                raise OutputError(f"Cannot write {t}: the folder {t.parent} does not exist.")
        folder = None
    else:
        folder = OutputFolder(out, FOLDER_OUTPUTS, overwrite=args.overwrite)
    thick = read_image(args.image, "Thick-slice image")
    model = model or load_model(args.model, progress=progress.sub(0.0, 0.02))
    check_input(thick, model.input, args.factor)  # refuse before the long step
    result = super_resolve(thick, model, args.factor, args.device, progress.sub(0.02, 0.95), slab=args.slab,
                           precision=getattr(args, "precision", "auto"))
    summary = _summary(args, result, model)
    if file_mode:
        write_image(result.image, targets[0])
        if len(targets) > 1:
            write_image(result.tci, targets[1])
    else:
        import csv

        with folder:
            write_image(result.image, folder.path("sr.nii.gz"))
            write_image(result.tci, folder.path("tci.nii.gz"))
            with open(folder.path(CASE_TABLE), "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=list(summary))
                w.writeheader()
                w.writerow(summary)
            write_json({**summary, "warnings": result.warnings, "geometry_convention":
                        "fine slice centres tile the thick slabs: fine spacing = thick spacing / factor, fine origin ="
                        " thick origin - (factor-1)/2 x fine spacing along the slice direction"},
                       folder.path("superres.json"))
    progress(1.0, "done")
    return result, summary


def cmd_super_resolve(args) -> int:
    result, s = super_resolve_into(args)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"super-resolved {s['factor']}x along {s['slice_axis']}: {s['thick_spacing_mm']:.3g} -> "
          f"{s['fine_spacing_mm']:.3g} mm slices, {s['shape_ijk']} voxels in {s['total_s']:.1f} s -> {args.out}")
    return 0


class SuperResolveWorker:
    """What a ``mskquant batch`` worker keeps between super-resolve cases: the loaded model."""

    class _NoScene:
        def clear(self) -> None:  # the batch clears a pipeline's scene after each case; there is none
            pass

    def __init__(self) -> None:
        self.rt = self._NoScene()
        self._models: dict = {}

    def run(self, args, progress=None):
        from .model import load_model

        if args.model not in self._models:
            self._models[args.model] = load_model(args.model)
        return super_resolve_into(args, progress, self._models[args.model])[0]
