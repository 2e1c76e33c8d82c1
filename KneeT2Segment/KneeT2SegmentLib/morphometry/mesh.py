"""Sub-voxel surfaces of label-map masks, in RAS mm: what thickness and the bone surfaces share.

A binary mask is blurred with a Gaussian of ``SIGMA_VOX`` voxels along each grid axis and its
0.5 iso-surface extracted (VTK flying edges). For a flat boundary the 0.5 level lies exactly
half-way between the last voxel centre inside and the first outside, and the blur removes
the staircase of oblique boundaries, so distances between two such surfaces are unbiased to
well below a voxel (shrinkage of a convex surface is about sigma^2 / radius: 0.002 mm for a
10 mm radius at 0.3 mm voxels). All work is in voxel index coordinates of a crop around the
tissue and the result is mapped to RAS with the grid's IJK->RAS matrix, so any spacing,
direction or anisotropy (OAI DESS 0.7 x 0.365 x 0.365 mm) is handled the same way.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np

from mskquant import vtklite as vtk
from mskquant.image import Geometry
from mskquant.vtklite import numpy_support

SIGMA_VOX = 0.6

Box = Tuple[slice, slice, slice]


def bounding_box(mask: np.ndarray, margin_vox: Sequence[int]) -> Box:
    """Slices ``[k, j, i]`` around the mask's voxels, ``margin_vox`` wider on each side (clipped to the grid)."""
    idx = [np.nonzero(np.any(mask, axis=tuple(b for b in range(3) if b != a)))[0] for a in range(3)]
    return tuple(slice(max(0, int(ix[0]) - m), min(n, int(ix[-1]) + m + 1))  # type: ignore[return-value]
                 for ix, m, n in zip(idx, margin_vox, mask.shape))


def box_offset_ijk(box: Box) -> np.ndarray:
    return np.array([box[2].start, box[1].start, box[0].start], float)


def margin_voxels(geometry: Geometry, mm: float, extra: int = 3) -> Tuple[int, int, int]:
    """Voxels along array axes ``[k, j, i]`` covering ``mm`` plus ``extra`` voxels (blur support)."""
    sp = geometry.spacing  # i, j, k
    return tuple(int(math.ceil(mm / s)) + extra for s in (sp[2], sp[1], sp[0]))  # type: ignore[return-value]


def smoothed(mask: np.ndarray, sigma_vox: float = SIGMA_VOX) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(np.asarray(mask, np.float32), sigma_vox, mode="constant", truncate=3.0)


def sample(volume: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Trilinear values of a ``[k, j, i]`` volume at float voxel positions ``(N, 3)`` in i, j, k; 0 outside."""
    from scipy import ndimage as ndi

    p = np.asarray(ijk, float)
    return ndi.map_coordinates(volume, [p[:, 2], p[:, 1], p[:, 0]], order=1, mode="constant", cval=0.0,
                               prefilter=False)


def gradient_ijk(volume: np.ndarray, ijk: np.ndarray, h: float = 0.5) -> np.ndarray:
    """Central-difference gradient (per voxel step) of the trilinear volume at ``ijk``, shape (N, 3)."""
    out = np.empty((len(ijk), 3))
    for a in range(3):
        e = np.zeros(3)
        e[a] = h
        out[:, a] = (sample(volume, ijk + e) - sample(volume, ijk - e)) / (2 * h)
    return out


def ijk_to_ras(geometry: Geometry, ijk: np.ndarray) -> np.ndarray:
    m = geometry.ijk_to_ras
    return np.asarray(ijk, float) @ m[:3, :3].T + m[:3, 3]


def ras_to_ijk(geometry: Geometry, ras: np.ndarray) -> np.ndarray:
    m = geometry.ras_to_ijk
    return np.asarray(ras, float) @ m[:3, :3].T + m[:3, 3]


def ras_normals(geometry: Geometry, gradient: np.ndarray) -> np.ndarray:
    """Unit RAS normals from index-space gradients (grad_ras = M^-T grad_ijk), pointing down the gradient."""
    m = geometry.ijk_to_ras[:3, :3]
    g = gradient @ np.linalg.inv(m)  # rows: (M^-T g)^T = g^T M^-1
    n = -g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return n


def voxel_positions_ras(geometry: Geometry, mask: np.ndarray) -> Tuple[Tuple[np.ndarray, ...], np.ndarray]:
    """Indices ``(k, j, i)`` of the mask's voxels and their centres in RAS."""
    kji = np.nonzero(mask)
    ijk = np.stack([kji[2], kji[1], kji[0]], axis=1).astype(float)
    return kji, ijk_to_ras(geometry, ijk)


def isosurface(volume: np.ndarray, level: float, offset_ijk=(0.0, 0.0, 0.0)):
    """The ``level`` iso-surface of a ``[k, j, i]`` float volume as vtkPolyData, points in (offset) voxel ijk.

    The volume is padded by one voxel of zeros so surfaces touching the crop's border close.
    """
    v = np.pad(np.asarray(volume, np.float32), 1)
    nk, nj, ni = v.shape
    img = vtk.vtkImageData()
    img.SetDimensions(ni, nj, nk)
    img.SetOrigin(*(np.asarray(offset_ijk, float) - 1.0))
    img.GetPointData().SetScalars(numpy_support.numpy_to_vtk(v.ravel(), deep=True))
    fe = vtk.vtkFlyingEdges3D()
    fe.SetInputData(img)
    fe.SetValue(0, float(level))
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOff()
    fe.Update()
    out = vtk.vtkPolyData()
    out.DeepCopy(fe.GetOutput())
    return out


def points_of(polydata) -> np.ndarray:
    pts = polydata.GetPoints()
    if pts is None or polydata.GetNumberOfPoints() == 0:
        return np.zeros((0, 3))
    return numpy_support.vtk_to_numpy(pts.GetData()).astype(float)


def triangles_of(polydata) -> np.ndarray:
    polys = polydata.GetPolys()
    if polys is None or polys.GetNumberOfCells() == 0:
        return np.zeros((0, 3), np.int64)
    conn = numpy_support.vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64)
    return conn.reshape(-1, 3)


def polydata_from(points: np.ndarray, triangles: np.ndarray):
    pd = vtk.vtkPolyData()
    pts = vtk.vtkPoints()
    pts.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(points, np.float64), deep=True))
    pd.SetPoints(pts)
    cells = vtk.vtkCellArray()
    tri = np.ascontiguousarray(triangles, np.int64)
    offsets = np.arange(0, 3 * len(tri) + 1, 3, dtype=np.int64)
    cells.SetData(numpy_support.numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_support.numpy_to_vtkIdTypeArray(tri.ravel(), deep=True))
    pd.SetPolys(cells)
    return pd


def to_ras(polydata, geometry: Geometry):
    """A copy with points mapped from voxel ijk to RAS; triangles re-wound when the matrix mirrors."""
    tri = triangles_of(polydata)
    if np.linalg.det(geometry.ijk_to_ras[:3, :3]) < 0:
        tri = tri[:, ::-1]
    return polydata_from(ijk_to_ras(geometry, points_of(polydata)), tri)


def vertex_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area (mm^2) owned by each vertex: a third of each triangle it belongs to (sums to the mesh area)."""
    if len(triangles) == 0:
        return np.zeros(len(points))
    p = points[triangles]
    a = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    out = np.zeros(len(points))
    for c in range(3):
        np.add.at(out, triangles[:, c], a / 3.0)
    return out
