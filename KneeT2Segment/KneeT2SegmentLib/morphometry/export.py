"""The files of one knee's morphometry (``mskquant knee-morph``; contract in the README).

``labels.nii.gz`` (0-6, the shared label maps' numbering) with ``labels.ctbl`` (its Slicer colour
table), ``thickness.csv`` (plate, region, mean_mm, sd_mm, p5_mm, p95_mm, n_points),
``thickness.nii.gz`` (thickness in mm at the cartilage voxels, 0 elsewhere),
``bone_surface_<bone>.vtp`` (point data ``thickness_mm``, ``t2_ms``, ``articular``, ``region``) for
each bone present, ``maps/<bone>_<measure>.png`` and ``.npy``, and ``morph.json``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import List

import numpy as np

from . import labels as lb
from .regions import CSV_COLUMNS as THICKNESS_COLUMNS  # plate, region, mean_mm, sd_mm, p5_mm, p95_mm, n_points

CORE_OUTPUTS = ("labels.nii.gz", "labels.ctbl", "thickness.csv", "thickness.nii.gz", "morph.json")


def surface_name(bone: str) -> str:
    return f"bone_surface_{bone}.vtp"


def map_names(bone: str, measure: str) -> List[str]:
    return [f"maps/{bone}_{measure}.png", f"maps/{bone}_{measure}.npy"]


def possible_outputs() -> List[str]:
    """Every file a knee-morph run may write (what an existing results folder is checked for)."""
    names = list(CORE_OUTPUTS)
    for bone in lb.BONES:
        names.append(surface_name(bone))
        for m in ("thickness_mm", "t2_ms"):
            names += map_names(bone, m)
    return names


def _fmt(v):
    if isinstance(v, float):
        return "" if not np.isfinite(v) else f"{v:.4f}"
    return v


def write_thickness_csv(rows, path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(THICKNESS_COLUMNS)
        for r in rows:
            w.writerow([_fmt(r.get(c)) for c in THICKNESS_COLUMNS])
    return path


def write_outputs(result, folder: Path) -> List[Path]:
    """All files of ``result`` (a :class:`.pipeline.MorphResult`) into an open (staging) ``folder``."""
    from mskquant.cli.common import write_json
    from mskquant.image import Image
    from mskquant.imageio import write_image

    from .maps import write_map_npy, write_map_png
    from .projection import write_vtp

    folder = Path(folder)
    paths = [write_image(Image(result.labels.array.astype(np.uint8), result.labels.geometry), folder / "labels.nii.gz")]
    (folder / "labels.ctbl").write_text(lb.colour_table_lines(), encoding="utf-8")
    paths.append(folder / "labels.ctbl")
    paths.append(write_thickness_csv(result.thickness.rows(), folder / "thickness.csv"))
    paths.append(write_image(result.thickness.map, folder / "thickness.nii.gz"))
    for bone, surf in result.surfaces.items():
        paths.append(write_vtp(surf.polydata, folder / surface_name(bone)))
    (folder / "maps").mkdir(exist_ok=True)
    for bone, measures in result.maps.items():
        for measure, m in measures.items():
            png, npy = (folder / n for n in map_names(bone, measure))
            paths += [write_map_png(m, png), write_map_npy(m, npy)]
    paths.append(write_json(result.summary(), folder / "morph.json"))
    return paths
