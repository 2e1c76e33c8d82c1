"""Cartilage thickness per plate and region (Morales et al.: thickness maps projected on the bone).

Definition used here (normal-based, from the bone): every point of the bone-cartilage
interface is measured along the bone surface's outward normal to the articular surface.

* Surfaces are sub-voxel (:mod:`.mesh`): the interface points are the vertices of the 0.5
  iso-surface of the Gaussian-blurred bone mask that lie under cartilage (blurred cartilage
  indicator >= 0.3 there: 0.5 under a cartilage layer, ~0 on bare bone); the articular
  surface is the 0.5 level of the blurred union of that bone and its cartilage, so a ray
  from the bone crosses the level exactly once, where the cartilage ends (against joint
  fluid, the other plates' cartilage or anything else not this plate's tissue).
* Background enclosed by the bone and its cartilage (label-map gaps between them, marrow
  holes) is filled first: such cavities would otherwise be "articular" surfaces inside the
  plate (on 9002817 they pulled the femoral nearest-point mean from 2.04 to 1.78 mm).
* Normal: minus the gradient of the bone mask blurred by ``NORMAL_SIGMA_VOX`` voxels (the
  0.6-voxel blur still follows the voxel staircase: 10 deg mean error on a 10 mm ball, +2.5 %
  thickness), mapped to RAS - the true normal on any grid, anisotropic or oblique. Thickness: distance along it to the first crossing of the
  union's 0.5 level (trilinear samples every quarter of the smallest voxel size, crossing
  interpolated linearly); rays not leaving the cartilage within ``MAX_MM`` are left out.
* The nearest-point thickness (pyKNEEr: the distance from each point of the subchondral
  cartilage contour to the closest point of the articular contour; a symmetric closest-point
  distance is also common) is reported beside it for every point (``nearest_mm``): the
  distance from the interface point to the closest vertex of the articular part of the union
  surface. Where the surfaces are parallel both agree; where they are not (plate edges,
  curved condyles, uneven cartilage) the closest point is never farther, and on voxel
  surfaces it picks the nearest bump, so its means are lower: 2.0 mm shell 1.994 (normal)
  vs 1.963 mm (nearest) at 0.3 mm voxels, 1.999 vs 1.943 mm at 0.365 x 0.365 x 0.7 mm; on
  OAI label maps 5-10 % lower per plate (``scripts/compare_thickness_methods.py``).

The normal-based value was chosen because it is a property of a point of the bone (what
the articular bone-surface projection carries) and does not jump to a neighbouring, thinner
part of the plate the way the closest point does at the edges of a lesion or of the plate.

Plates: femoral; medial and lateral tibial (the tibial cartilage measured as one, its points
split by :func:`.regions.tibial_side`); patellar. Each plate's points carry a region code
(:mod:`.regions`). A plate without cartilage (or bone) is reported missing - no points,
``n_points`` 0 and NaN statistics - with a message, never an error. The thickness map holds,
for every cartilage voxel, the thickness of its nearest interface point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Image
from mskquant.progress import Progress, as_progress

from . import labels as L
from . import mesh, regions

DEFINITION = ("normal-based: from each point of the bone-cartilage interface along the bone surface's outward "
              "normal to the articular surface (nearest-point thickness reported beside it)")
MAX_MM = 10.0
INTERFACE_MIN = 0.3
MIN_CARTILAGE_VOXELS = 20
ARTICULAR_MIN = 0.2
NORMAL_SIGMA_VOX = 1.5


@dataclass
class InterfaceThickness:
    """Interface points of one bone and its cartilage, with both thickness definitions."""

    points_ras: np.ndarray  # (N, 3) mm
    normals_ras: np.ndarray  # (N, 3) unit, out of the bone
    thickness_mm: np.ndarray  # (N,) normal-based; NaN where the ray found no articular surface
    nearest_mm: np.ndarray  # (N,) nearest-point


def _empty(n: int = 0) -> InterfaceThickness:
    return InterfaceThickness(np.zeros((n, 3)), np.zeros((n, 3)), np.zeros(n), np.zeros(n))


def _march(union: np.ndarray, start_ijk: np.ndarray, step_ijk: np.ndarray, step_mm: float, max_mm: float,
           progress: Progress) -> np.ndarray:
    """Distance (mm) from each start along its step to where ``union`` first drops below 0.5."""
    n = len(start_ijk)
    out = np.full(n, np.nan)
    active = np.arange(n)
    prev = mesh.sample(union, start_ijk)
    n_steps = int(np.ceil(max_mm / step_mm))
    for s in range(1, n_steps + 1):
        if active.size == 0:
            break
        if s % 16 == 0:
            progress.check()
        cur = mesh.sample(union, start_ijk[active] + s * step_ijk[active])
        crossed = cur < 0.5
        if crossed.any():
            p, c = prev[crossed], cur[crossed]
            frac = np.clip((p - 0.5) / np.maximum(p - c, 1e-9), 0.0, 1.0)
            out[active[crossed]] = (s - 1 + frac) * step_mm
        active, prev = active[~crossed], cur[~crossed]
    return out


def interface_thickness(bone: np.ndarray, cartilage: np.ndarray, geometry, max_mm: float = MAX_MM,
                        progress: "Progress | None" = None) -> InterfaceThickness:
    """Thickness at the sub-voxel bone-cartilage interface of one bone (masks ``[k, j, i]`` on ``geometry``)."""
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree

    progress = as_progress(progress)
    cartilage = np.asarray(cartilage, bool)
    bone = np.asarray(bone, bool)
    if not cartilage.any() or not bone.any():
        return _empty()
    box = mesh.bounding_box(cartilage, mesh.margin_voxels(geometry, 1.0))
    offset = mesh.box_offset_ijk(box)
    b, c = bone[box], cartilage[box]
    progress(0.05, "Smoothing the masks")
    # background enclosed by bone and cartilage (label-map gaps at the interface, marrow holes)
    # would make inner "articular" surfaces: fill them
    union = ndi.binary_fill_holes(b | c)
    sb, sc, su = mesh.smoothed(ndi.binary_fill_holes(b)), mesh.smoothed(c), mesh.smoothed(union)
    progress(0.2, "Bone and articular surfaces")
    verts = mesh.points_of(mesh.isosurface(sb, 0.5)) if sb.max() > 0.5 else np.zeros((0, 3))
    at_interface = mesh.sample(sc, verts) >= INTERFACE_MIN
    p = verts[at_interface]
    if p.size == 0:
        return _empty()
    # the normal from a wider blur: the 0.6-voxel one still follows the voxel staircase (10 deg mean
    # error on a 10 mm sphere at 0.3 mm voxels, +2.5 % thickness); 1.5 voxels: 1.5 deg, +0.05 %
    normals = mesh.ras_normals(geometry, mesh.gradient_ijk(mesh.smoothed(b, NORMAL_SIGMA_VOX), p, 1.0))
    m_inv = geometry.ras_to_ijk[:3, :3]
    step_mm = 0.25 * float(geometry.spacing.min())
    progress(0.35, "Normal-based thickness")
    thick = _march(su, p, (normals @ m_inv.T) * step_mm, step_mm, max_mm, progress)
    progress(0.8, "Nearest-point thickness")
    outer = mesh.points_of(mesh.isosurface(su, 0.5))
    articular = outer[mesh.sample(sc, outer) >= ARTICULAR_MIN]
    p_ras = mesh.ijk_to_ras(geometry, p + offset)
    if len(articular):
        nearest, _ = cKDTree(mesh.ijk_to_ras(geometry, articular + offset)).query(p_ras)
    else:
        nearest = np.full(len(p), np.nan)
    progress(1.0, "Thickness measured")
    return InterfaceThickness(p_ras, normals, thick, np.asarray(nearest, float))


@dataclass
class PlateThickness:
    """One plate's interface points: RAS mm, thickness (normal-based and nearest-point), region code."""

    plate: str
    points_ras: np.ndarray
    normals_ras: np.ndarray
    thickness_mm: np.ndarray
    nearest_mm: np.ndarray
    region: np.ndarray  # uint8 codes of :mod:`.regions`
    message: str = ""

    @property
    def missing(self) -> bool:
        return len(self.points_ras) == 0

    def values(self, method: str = "normal") -> np.ndarray:
        if method not in ("normal", "nearest"):
            raise ValueError(f"unknown thickness method {method!r}: 'normal' or 'nearest'")
        return self.thickness_mm if method == "normal" else self.nearest_mm

    def rows(self, method: str = "normal") -> List[dict]:
        return regions.summary_rows(self.plate, self.region, self.values(method), self.missing)


@dataclass
class ThicknessResult:
    plates: Dict[str, PlateThickness]
    map: Image  # float32 thickness (mm) at the cartilage voxels, 0 elsewhere
    laterality: Optional[str]
    messages: List[str] = field(default_factory=list)

    @property
    def points(self) -> Dict[str, PlateThickness]:
        return self.plates

    def rows(self, method: str = "normal") -> List[dict]:
        """Rows of thickness.csv (columns :data:`.regions.CSV_COLUMNS`), plates in :data:`.labels.PLATES` order."""
        return [row for plate in L.PLATES for row in self.plates[plate].rows(method)]


def _plate(name: str, it: InterfaceThickness, sel: np.ndarray, codes: np.ndarray, message: str = "") -> PlateThickness:
    return PlateThickness(name, it.points_ras[sel], it.normals_ras[sel], it.thickness_mm[sel], it.nearest_mm[sel],
                          np.asarray(codes, np.uint8)[sel], message)


def _missing(name: str, message: str) -> PlateThickness:
    it = _empty()
    return _plate(name, it, np.zeros(0, bool), np.zeros(0), message)


def _laterality(tissue: np.ndarray, geometry, laterality) -> Optional[str]:
    from ..anatomy import estimate_label_map_laterality
    from ..mese import normalize_laterality

    lat = normalize_laterality(laterality)
    if lat is None:
        lat, _ = estimate_label_map_laterality(tissue, geometry)
    return lat


def _femoral_codes(points_ras, mask, geometry, laterality, messages) -> np.ndarray:
    from scipy.spatial import cKDTree

    from ..subregions import femoral_subregions

    if laterality is None:
        messages.append("The knee's laterality is unknown (no tibial cartilage to estimate it from): femoral "
                        "thickness is reported for the whole plate only; give the laterality for its regions.")
        return np.zeros(len(points_ras), np.uint8)
    try:
        sub = femoral_subregions(mask, geometry, laterality)
    except InputError as error:  # e.g. a non-sagittal grid: thickness stands, only the regions are lost
        messages.append(f"Femoral regions not defined ({error}): femoral thickness is reported for the whole "
                        f"plate only.")
        return np.zeros(len(points_ras), np.uint8)
    messages.extend(sub.warnings)
    kji, ras = mesh.voxel_positions_ras(geometry, mask)
    _, nearest = cKDTree(ras).query(points_ras)
    return regions.femoral_region_of_subregion(sub.labels[kji][nearest])


def _tibial_plates(it: InterfaceThickness, cart: np.ndarray, geometry, laterality: Optional[str],
                   messages: List[str]) -> Dict[str, PlateThickness]:
    if laterality is None:
        raise InputError("The knee's laterality cannot be estimated from this label map: give it (laterality "
                         "'left' or 'right') so the medial and lateral tibial plates can be told apart.")
    _, cart_ras = mesh.voxel_positions_ras(geometry, cart)
    side = regions.tibial_side(it.points_ras[:, 0], regions.tibial_boundary_r(cart_ras[:, 0]), laterality)
    out = {}
    for s, name in enumerate(regions.BONE_PLATES["tibia"]):
        sel = side == s
        if not sel.any():
            out[name] = _missing(name, f"No {name} cartilage was found: its thickness is not measured.")
            messages.append(out[name].message)
            continue
        zone = np.zeros(len(side), np.int64)
        zone[sel] = regions.thirds(it.points_ras[sel, 1])
        out[name] = _plate(name, it, sel, regions.region_code(side, zone))
    return out


def _bone_plates(bone: str, it: InterfaceThickness, cart: np.ndarray, geometry, laterality: Optional[str],
                 messages: List[str]) -> Dict[str, PlateThickness]:
    """The plates of one bone's interface points, with their region codes."""
    every = np.ones(len(it.points_ras), bool)
    if bone == "femur":
        return {"femoral": _plate("femoral", it, every, _femoral_codes(it.points_ras, cart, geometry, laterality,
                                                                        messages))}
    if bone == "tibia":
        return _tibial_plates(it, cart, geometry, laterality, messages)
    return {"patellar": _plate("patellar", it, every, np.zeros(len(every)))}


def measure_thickness(labels: Image, laterality: Optional[str] = None, progress: "Progress | None" = None,
                      max_mm: float = MAX_MM) -> ThicknessResult:
    """Cartilage thickness of every plate of a knee label map (0-6, lesion labels 7-9 read as bone).

    ``laterality`` 'left' / 'right', or None to estimate it from the tibial cartilage.
    """
    from scipy.spatial import cKDTree

    progress = as_progress(progress)
    if labels.is_series:
        raise InputError("The knee label map is 4D: give a 3D label map (1 femur ... 6 patellar cartilage).")
    g = labels.geometry
    tissue = L.tissue_labels(labels.array)
    lat = _laterality(tissue, g, laterality)
    messages: List[str] = []
    plates: Dict[str, PlateThickness] = {}
    tmap = np.zeros(tissue.shape, np.float32)
    for n, (bone, names) in enumerate(regions.BONE_PLATES.items()):
        step = progress.sub(n / 3, (n + 1) / 3)
        cart = tissue == L.CARTILAGE_OF[bone]
        what = L.NAMES[L.CARTILAGE_OF[bone]]
        lack = what if cart.sum() < MIN_CARTILAGE_VOXELS else bone if not np.any(tissue == L.BONES[bone]) else ""
        it = _empty() if lack else interface_thickness(tissue == L.BONES[bone], cart, g, max_mm, step.sub(0.0, 0.85))
        step(0.85, f"Regions of the {what}")
        if len(it.points_ras) == 0:
            why = f"No {lack} in the label map" if lack else f"The {what} does not touch the {bone}"
            plates.update({name: _missing(name, f"{why}: {name} thickness is not measured.") for name in names})
            messages.append(f"{why}: {', '.join(names)} thickness not measured.")
            continue
        plates.update(_bone_plates(bone, it, cart, g, lat, messages))
        ok = np.isfinite(it.thickness_mm)
        if ok.any():
            kji, ras = mesh.voxel_positions_ras(g, cart)
            _, idx = cKDTree(it.points_ras[ok]).query(ras)
            tmap[kji] = it.thickness_mm[ok][idx]
        step(1.0, f"{what.capitalize()} thickness measured")
    return ThicknessResult(plates, labels.with_array(tmap), lat, messages)
