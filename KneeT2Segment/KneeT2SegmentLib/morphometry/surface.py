"""Bone surfaces and the articular bone surface that thickness and T2 are projected onto (Morales et al.).

Per bone (femur, tibia, patella):

* **Mesh**: the 0.5 iso-surface (VTK flying edges) of the bone mask blurred by
  :data:`.mesh.SIGMA_VOX` voxels (marrow holes filled), then windowed-sinc smoothing
  (``SMOOTHING_ITERATIONS``, pass band ``PASS_BAND``, normalised coordinates: removes the
  remaining staircase without shrinking), point normals pointing out of the bone. Points in
  RAS mm. The crop is padded, so a bone cut by the field of view gets a closed cap there.
* **Articular flag**: a vertex is articular when the centre of one of its bone's cartilage
  voxels lies within ``articular_mm`` of it - by default half the voxel diagonal + 0.25 mm
  (0.7 mm on the OAI DESS grid): every vertex under the cartilage, at most a fraction of a
  millimetre of bare bone beyond the cartilage's edge.
* **Volume**: ``volume_mm3`` is the bone label's voxel count x voxel volume (the label
  map's own volume, independent of the smoothing); ``mesh_volume_mm3`` the closed mesh's
  (vtkMassProperties), which agrees within about 1 % on smooth shapes. Areas are the mesh's:
  ``area_mm2`` the whole surface, ``articular_area_mm2`` the area owned by articular vertices
  (a third of each triangle per vertex).

Point-data arrays: ``Normals``, ``articular`` (0/1), ``region`` (codes of :mod:`.regions`),
``vertex_area_mm2``, then what the projections add: ``thickness_mm`` and, from
:func:`project_voxel_measure`, e.g. ``t2_ms`` with ``t2_ms_count`` (NaN / 0 where no voxel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from mskquant import vtklite as vtk
from mskquant.image import Image
from mskquant.progress import Progress, as_progress
from mskquant.vtklite import numpy_support

from . import labels as L
from . import mesh

SMOOTHING_ITERATIONS = 15
PASS_BAND = 0.1


@dataclass
class BoneSurface:
    bone: str
    polydata: object  # vtkPolyData in RAS mm
    articular: np.ndarray  # bool per vertex
    vertex_area_mm2: np.ndarray
    volume_mm3: float
    mesh_volume_mm3: float
    area_mm2: float
    articular_area_mm2: float
    message: str = ""

    @property
    def missing(self) -> bool:
        return self.polydata.GetNumberOfPoints() == 0

    @property
    def points(self) -> np.ndarray:
        return mesh.points_of(self.polydata)

    @property
    def normals(self) -> np.ndarray:
        arr = self.polydata.GetPointData().GetArray("Normals")
        return numpy_support.vtk_to_numpy(arr).astype(float) if arr is not None else np.zeros((0, 3))

    def array(self, name: str) -> Optional[np.ndarray]:
        arr = self.polydata.GetPointData().GetArray(name)
        return None if arr is None else numpy_support.vtk_to_numpy(arr)

    def set_array(self, name: str, values: np.ndarray) -> None:
        v = np.ascontiguousarray(values)
        if v.dtype == np.float64:
            v = v.astype(np.float32)
        arr = numpy_support.numpy_to_vtk(v, deep=True)
        arr.SetName(name)
        pd = self.polydata.GetPointData()
        pd.RemoveArray(name)
        pd.AddArray(arr)


def default_articular_mm(geometry) -> float:
    return 0.5 * float(np.linalg.norm(geometry.spacing)) + 0.25


def _smooth_and_normals(polydata):
    ws = vtk.vtkWindowedSincPolyDataFilter()
    ws.SetInputData(polydata)
    ws.SetNumberOfIterations(SMOOTHING_ITERATIONS)
    ws.SetPassBand(PASS_BAND)
    ws.NormalizeCoordinatesOn()
    ws.BoundarySmoothingOff()
    ws.FeatureEdgeSmoothingOff()
    ws.NonManifoldSmoothingOn()
    nr = vtk.vtkPolyDataNormals()
    nr.SetInputConnection(ws.GetOutputPort())
    nr.ComputePointNormalsOn()
    nr.ComputeCellNormalsOff()
    nr.SplittingOff()
    nr.ConsistencyOn()
    nr.AutoOrientNormalsOff()
    nr.Update()
    out = vtk.vtkPolyData()
    out.DeepCopy(nr.GetOutput())
    return out


def _outward(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Triangles wound so their normals point out of the closed surface (positive signed volume)."""
    if len(triangles) == 0:
        return triangles
    p = points[triangles]
    signed = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0
    return triangles if signed >= 0 else triangles[:, ::-1]


def _missing(bone: str, message: str) -> BoneSurface:
    return BoneSurface(bone, vtk.vtkPolyData(), np.zeros(0, bool), np.zeros(0), 0.0, 0.0, 0.0, 0.0, message)


def bone_surface(tissue: np.ndarray, geometry, bone: str, articular_mm: Optional[float] = None,
                 progress: "Progress | None" = None) -> BoneSurface:
    """The surface of one bone (``"femur"``, ``"tibia"``, ``"patella"``) of a 0-6 tissue label array."""
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree

    progress = as_progress(progress)
    mask = tissue == L.BONES[bone]
    if not mask.any():
        return _missing(bone, f"No {bone} in the label map: its surface is not built.")
    box = mesh.bounding_box(mask, mesh.margin_voxels(geometry, 0.0))
    progress(0.1, f"{bone.capitalize()} surface")
    blurred = mesh.smoothed(ndi.binary_fill_holes(mask[box]))
    raw = mesh.isosurface(blurred, 0.5, mesh.box_offset_ijk(box))
    ras = mesh.ijk_to_ras(geometry, mesh.points_of(raw))
    progress(0.4, f"Smoothing the {bone} surface")
    pd = _smooth_and_normals(mesh.polydata_from(ras, _outward(ras, mesh.triangles_of(raw))))
    points, triangles = mesh.points_of(pd), mesh.triangles_of(pd)
    props = vtk.vtkMassProperties()
    props.SetInputData(pd)
    props.Update()
    progress(0.7, f"Articular surface of the {bone}")
    cart = tissue == L.CARTILAGE_OF[bone]
    limit = default_articular_mm(geometry) if articular_mm is None else float(articular_mm)
    articular = np.zeros(len(points), bool)
    if cart.any():
        _, cart_ras = mesh.voxel_positions_ras(geometry, cart)
        d, _ = cKDTree(cart_ras).query(points, distance_upper_bound=limit)
        articular = np.isfinite(d)
    areas = mesh.vertex_areas(points, triangles)
    surf = BoneSurface(bone, pd, articular, areas, float(mask.sum() * geometry.voxel_volume_mm3),
                       float(props.GetVolume()), float(areas.sum()), float(areas[articular].sum()))
    surf.set_array("articular", articular.astype(np.uint8))
    surf.set_array("region", np.zeros(len(points), np.int32))
    surf.set_array("vertex_area_mm2", areas)
    if not cart.any():
        surf.message = f"No {L.NAMES[L.CARTILAGE_OF[bone]]}: the {bone} has no articular surface."
    progress(1.0, f"{bone.capitalize()} surface built")
    return surf


def bone_surfaces(labels: Image, progress: "Progress | None" = None,
                  articular_mm: Optional[float] = None) -> Dict[str, BoneSurface]:
    """Surfaces of the femur, tibia and patella of a knee label map (a missing bone: empty, with a message)."""
    progress = as_progress(progress)
    tissue = L.tissue_labels(labels.array)
    out = {}
    for n, bone in enumerate(L.BONES):
        out[bone] = bone_surface(tissue, labels.geometry, bone, articular_mm, progress.sub(n / 3, (n + 1) / 3))
    return out
