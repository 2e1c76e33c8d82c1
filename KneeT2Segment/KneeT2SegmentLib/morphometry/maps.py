"""2D maps of a measure on each bone's articular surface (thickness, T2), as NumPy arrays and PNG.

Morales et al. encode the articular bone surface in spherical coordinates for their
networks; for reading by eye and for regional comparison this module uses the flattenings
of the cartilage literature instead (pyKNEEr's cylinder for the femur, plateau projections
for the tibia), one documented parameterisation per bone:

* **Femur - cylinder.** A cylinder is fitted (least squares on the distance to the axis,
  Gauss-Newton via ``scipy.optimize.least_squares``) to the articular vertices, starting from
  the world left-right axis and a circle fitted in the sagittal plane; its axis is the
  condyles' medial-lateral axis. Columns: position along the axis, 1 mm cells, running
  medial -> lateral when the laterality is known (else towards +R). Rows: angle about the
  axis, 2 deg cells, 0 deg inferior (world -S projected on the plane normal to the axis),
  positive towards posterior - as the femoral subregions' angle (anterior zone <= -35 deg,
  posterior > 25 deg) - so the trochlea is at the top and the posterior condyles at the bottom.
* **Tibia - plateau plane.** Plane fitted (principal axes) to the articular vertices, normal
  towards +S. Columns: world R projected on the plane, 1 mm (medial -> lateral when the
  laterality is known); rows: the in-plane anterior direction, 1 mm, anterior at the top.
* **Patella - plane of its articular surface.** Plane fitted the same way, normal towards
  posterior (the femur). Columns: world R projected (medial -> lateral when known); rows:
  the in-plane superior direction, superior at the top.

A cell holds the mean of the articular vertices falling in it (count-weighted by
``<measure>_count`` when the projection kept counts, so a cell's T2 is the mean of its
voxels), NaN where empty. The grid covers the articular vertices' extent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from mskquant.atomic import atomic_path

from .surface import BoneSurface

CELL_MM = 1.0
CELL_DEG = 2.0
SCALES = {"thickness_mm": ("thickness (mm)", 0.0, 5.0), "t2_ms": ("T2 (ms)", 20.0, 70.0)}
MIN_VERTICES = 10


@dataclass
class BoneMap:
    bone: str
    measure: str
    values: np.ndarray  # (rows, columns), NaN where empty
    count: np.ndarray  # vertices per cell
    weight: np.ndarray  # summed weights per cell: voxels for a projection with counts, else vertices
    rows: Tuple[str, float, float, str]  # (what, centre of row 0, step, unit)
    columns: Tuple[str, float, float, str]
    parameterisation: Dict[str, object] = field(default_factory=dict)

    def info(self) -> dict:
        """What a reader needs besides the array (for morph.json)."""
        keys = ("axis", "first_centre", "step", "unit")
        return {"bone": self.bone, "measure": self.measure, "shape": list(self.values.shape),
                "rows": dict(zip(keys, self.rows)), "columns": dict(zip(keys, self.columns)),
                "parameterisation": {k: (np.round(v, 4).tolist() if isinstance(v, np.ndarray) else v)
                                     for k, v in self.parameterisation.items()}}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _in_plane(v: np.ndarray, normal: np.ndarray) -> np.ndarray:
    return _unit(v - normal * float(v @ normal))


def fit_plane(points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(centroid, unit normal) of the least-squares plane."""
    c = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - c, full_matrices=False)
    return c, vt[2]


def fit_cylinder(points: np.ndarray, direction0=(1.0, 0.0, 0.0)) -> Tuple[np.ndarray, np.ndarray, float]:
    """(point on the axis, unit axis direction, radius) of the least-squares cylinder through ``points``."""
    from scipy.optimize import least_squares

    from ..subregions import fit_circle

    d0 = _unit(np.asarray(direction0, float))
    e1 = _in_plane(np.array([0.0, 0.0, 1.0]) if abs(d0[2]) < 0.9 else np.array([0.0, 1.0, 0.0]), d0)
    e2 = np.cross(d0, e1)
    c0 = points.mean(axis=0)
    q = points - c0
    cx, cy, r0 = fit_circle(q @ e1, q @ e2)

    def geometry(p):
        d = _unit(d0 + p[0] * e1 + p[1] * e2)
        return c0 + p[2] * e1 + p[3] * e2, d

    def residual(p):
        c, d = geometry(p)
        v = points - c
        return np.linalg.norm(v - np.outer(v @ d, d), axis=1) - p[4]

    fit = least_squares(residual, np.array([0.0, 0.0, cx, cy, r0]), method="lm")
    c, d = geometry(fit.x)
    return c, d, float(abs(fit.x[4]))


def _lateral_sign(laterality: Optional[str]) -> float:
    """+1 when +R is lateral (right knee, or unknown: columns run towards +R), -1 for a left knee."""
    return -1.0 if laterality == "left" else 1.0


def _coordinates(bone: str, p: np.ndarray, laterality: Optional[str]):
    """Map coordinates (row value, column value), axis descriptions, cell sizes and the parameterisation."""
    side = _lateral_sign(laterality)
    towards = "medial -> lateral" if laterality else "towards +R"
    R, A, S = np.eye(3)
    if bone == "femur":
        c, d, r = fit_cylinder(p)
        d = d if d @ R * side >= 0 else -d
        inferior = _in_plane(-S, d)
        posterior = np.cross(d, inferior) if np.cross(d, inferior) @ -A >= 0 else -np.cross(d, inferior)
        v = p - c
        angle = np.degrees(np.arctan2(v @ posterior, v @ inferior))
        return (angle, v @ d, ("angle about the axis, 0 inferior, + posterior", CELL_DEG, "deg"),
                (f"position along the axis ({towards})", CELL_MM, "mm"),
                {"kind": "cylinder", "axis_point_ras": c, "axis_direction_ras": d, "radius_mm": r})
    c, normal = fit_plane(p)
    up = S if bone == "tibia" else -A
    normal = normal if normal @ up >= 0 else -normal
    col = _in_plane(R * side, normal)
    row_dir = _in_plane(A if bone == "tibia" else S, normal)
    v = p - c
    what = "anterior -> posterior" if bone == "tibia" else "superior -> inferior"
    return (-(v @ row_dir), v @ col, (f"in-plane {what}", CELL_MM, "mm"), (f"in-plane {towards}", CELL_MM, "mm"),
            {"kind": "plane", "origin_ras": c, "normal_ras": normal, "column_direction_ras": col,
             "row_direction_ras": -row_dir})


def bone_map(surface: BoneSurface, measure: str, laterality: Optional[str] = None) -> Optional[BoneMap]:
    """The map of one bone, or None when it has too few articular vertices carrying the measure."""
    values = surface.array(measure)
    if values is None or surface.missing:
        return None
    counts = surface.array(f"{measure}_count")
    weight = np.ones(len(values)) if counts is None else counts.astype(float)
    keep = surface.articular & np.isfinite(values) & (weight > 0)
    if keep.sum() < MIN_VERTICES:
        return None
    rv, cv, rows, cols, param = _coordinates(surface.bone, surface.points[keep], laterality)
    r0, c0 = np.floor(rv.min() / rows[1]) * rows[1], np.floor(cv.min() / cols[1]) * cols[1]
    ri = ((rv - r0) / rows[1]).astype(np.int64)
    ci = ((cv - c0) / cols[1]).astype(np.int64)
    shape = (int(ri.max()) + 1, int(ci.max()) + 1)
    cell = ri * shape[1] + ci
    w = weight[keep]
    total = np.bincount(cell, weights=values[keep].astype(float) * w, minlength=shape[0] * shape[1])
    wsum = np.bincount(cell, weights=w, minlength=shape[0] * shape[1])
    n = np.bincount(cell, minlength=shape[0] * shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(wsum > 0, total / np.maximum(wsum, 1e-12), np.nan)
    return BoneMap(surface.bone, measure, grid.reshape(shape), n.reshape(shape), wsum.reshape(shape),
                   (rows[0], float(r0 + 0.5 * rows[1]), rows[1], rows[2]),
                   (cols[0], float(c0 + 0.5 * cols[1]), cols[1], cols[2]), param)


def bone_maps(surfaces: Dict[str, BoneSurface], measure: str, laterality: Optional[str] = None) -> Dict[str, BoneMap]:
    """Maps of every bone that carries ``measure`` on enough articular vertices."""
    out = {}
    for bone, surf in surfaces.items():
        m = bone_map(surf, measure, laterality)
        if m is not None:
            out[bone] = m
    return out


def map_picture(m: BoneMap, scale: int = 4, vmin: Optional[float] = None, vmax: Optional[float] = None) -> np.ndarray:
    """RGB picture of a map: cells ``scale`` pixels, colour bar, title and axes' descriptions."""
    from mskquant import render

    label, lo, hi = SCALES.get(m.measure, (m.measure, None, None))
    vmin = lo if vmin is None else vmin
    vmax = hi if vmax is None else vmax
    if vmin is None or vmax is None:
        finite = m.values[np.isfinite(m.values)]
        vmin = float(np.percentile(finite, 1)) if vmin is None else vmin
        vmax = float(np.percentile(finite, 99)) if vmax is None else vmax
    body = render.upscale(render.colorize(m.values, "t2", vmin, vmax, nan_rgb=(0.15, 0.15, 0.15)), scale)
    bar = render.colorbar("t2", vmin, vmax, label, height=max(body.shape[0] - 40, 60))
    h = max(body.shape[0], bar.shape[0])
    canvas = np.zeros((h, body.shape[1] + bar.shape[1] + 6, 3), np.uint8)
    canvas[:body.shape[0], :body.shape[1]] = body
    canvas[:bar.shape[0], body.shape[1] + 6:] = bar
    foot = np.zeros((36, canvas.shape[1], 3), np.uint8)
    foot = render.put_text(foot, f"rows: {m.rows[0]} ({m.rows[2]:g} {m.rows[3]}/cell)", 2, 4, 11)
    foot = render.put_text(foot, f"columns: {m.columns[0]} ({m.columns[2]:g} {m.columns[3]}/cell)", 18, 4, 11)
    return render.titled(np.concatenate([canvas, foot], axis=0), f"{m.bone} {label}")


def write_map_png(m: BoneMap, path, **kwargs) -> Path:
    from mskquant import render

    return render.write_png(map_picture(m, **kwargs), path)


def write_map_npy(m: BoneMap, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        np.save(tmp, m.values.astype(np.float32))
    return path


def write_maps(maps: Dict[str, BoneMap], folder) -> list:
    """``<folder>/<bone>_<measure>.png`` and ``.npy`` for every map; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for bone, m in maps.items():
        out.append(write_map_png(m, folder / f"{bone}_{m.measure}.png"))
        out.append(write_map_npy(m, folder / f"{bone}_{m.measure}.npy"))
    return out
