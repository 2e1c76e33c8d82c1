"""MRML node <-> numpy adapters that keep geometry.

Volumes, echo-series sequences, segmentations (segment <-> mask), tables (<-> CSV),
colour tables and plot charts, built on real Slicer nodes. Arrays are ``[k, j, i]`` and
geometry is the node's IJK->RAS matrix (with a linear parent transform applied), exactly
as :mod:`mskquant.image` defines them, so numeric results land back on the voxels they
came from.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .atomic import atomic_path, native_stderr_captured, write_failure
from .csvio import write_rows_csv  # re-exported: the MRML-layer callers write CSVs through mrml
from .errors import InputError, OutputError
from .headless import SlicerRuntime, import_slicer
from .image import Geometry, Image
from . import raster

slicer = import_slicer()
from . import vtklite as vtk  # noqa: E402
from .vtklite import numpy_support  # noqa: E402


# --- matrices -----------------------------------------------------------------------------
def _np_from_vtk_matrix(m: "vtk.vtkMatrix4x4") -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtk_matrix(a: np.ndarray) -> "vtk.vtkMatrix4x4":
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def _parent_to_world(node) -> np.ndarray:
    parent = node.GetParentTransformNode() if hasattr(node, "GetParentTransformNode") else None
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise InputError(f"'{node.GetName()}' is under a non-linear transform: harden the transform "
                         f"(Data module, right-click > Harden transform) before running MSKQuant.")
    m = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(m)
    return _np_from_vtk_matrix(m)


# --- volumes ------------------------------------------------------------------------------
def geometry_of(volume_node) -> Geometry:
    """World geometry of a volume node (its IJK->RAS with any linear parent transform)."""
    image_data = volume_node.GetImageData()
    if image_data is None:
        raise InputError(f"Volume '{volume_node.GetName()}' holds no image data: load or select another volume.")
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return Geometry(tuple(image_data.GetDimensions()), _parent_to_world(volume_node) @ _np_from_vtk_matrix(m))


def image_from_volume(volume_node, dtype=None) -> Image:
    """A copy of a scalar volume's voxels with its world geometry."""
    geometry = geometry_of(volume_node)
    scalars = volume_node.GetImageData().GetPointData().GetScalars()
    if scalars is None:
        raise InputError(f"Volume '{volume_node.GetName()}' holds no voxel values: load or select another volume.")
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(f"Volume '{volume_node.GetName()}' has {scalars.GetNumberOfComponents()} components per "
                         f"voxel: a scalar (grey-level) volume is needed.")
    arr = numpy_support.vtk_to_numpy(scalars).reshape(geometry.shape_kji).copy()
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return Image(arr, geometry)


def update_volume(volume_node, image: Image) -> None:
    """Replace a volume node's voxels and geometry with ``image`` (3D)."""
    if image.is_series:
        raise ValueError("update_volume takes a 3D image; use sequence_from_images for a series")
    arr = np.ascontiguousarray(image.array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    data = vtk.vtkImageData()
    data.SetDimensions(*image.geometry.shape_ijk)
    vtk_arr = numpy_support.numpy_to_vtk(arr.ravel(), deep=True)
    data.GetPointData().SetScalars(vtk_arr)
    volume_node.SetIJKToRASMatrix(_vtk_matrix(image.geometry.ijk_to_ras))
    volume_node.SetAndObserveImageData(data)


def volume_from_image(rt: SlicerRuntime, image: Image, name: str, labelmap: bool = False,
                      color_node=None, window_level: Optional[Tuple[float, float]] = None):
    """A new scalar (or labelmap) volume node holding ``image``, with display nodes."""
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = rt.scene.AddNewNodeByClass(cls, name)
    update_volume(node, image)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        if color_node is not None:
            display.SetAndObserveColorNodeID(color_node.GetID())
        if window_level is not None and hasattr(display, "SetAutoWindowLevel"):
            display.SetAutoWindowLevel(False)
            display.SetWindowLevel(*window_level)
    return node


# --- series (MESE echoes) ----------------------------------------------------------------
def sequence_from_images(rt: SlicerRuntime, images: Sequence[Image], index_values: Sequence[float],
                         name: str, index_name: str = "echo time", index_unit: str = "ms"):
    """A sequence node of volumes (one per index value) plus a browser to step through them."""
    seq = rt.scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    seq.SetIndexName(index_name)
    seq.SetIndexUnit(index_unit)
    seq.SetIndexType(seq.NumericIndex)
    for image, value in zip(images, index_values):
        tmp = slicer.vtkMRMLScalarVolumeNode()
        update_volume(tmp, image)
        seq.SetDataNodeAtValue(tmp, f"{float(value):g}")
    browser = rt.scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    rt.sequences.UpdateProxyNodesFromSequences(browser)
    return seq, browser


def images_from_sequence(seq_node) -> Tuple[List[Image], List[float]]:
    """The volumes of a sequence node and their numeric index values (e.g. echo times)."""
    images, values = [], []
    for n in range(seq_node.GetNumberOfDataNodes()):
        value = seq_node.GetNthIndexValue(n)
        try:
            values.append(float(value))
        except ValueError:
            raise InputError(f"Sequence '{seq_node.GetName()}' has a non-numeric index value '{value}': "
                             f"its index must be the echo time in ms.") from None
        node = seq_node.GetNthDataNode(n)
        if not node.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError(f"Item {n + 1} of sequence '{seq_node.GetName()}' is a {node.GetClassName()}, "
                             f"not a volume.")
        images.append(image_from_volume(node))
    return images, values


# --- segmentations ------------------------------------------------------------------------
@dataclass
class SegmentSpec:
    name: str
    mask: np.ndarray
    color: Tuple[float, float, float]
    terminology: Optional[str] = None


def terminology_entry(category: Tuple[str, str, str], seg_type: Tuple[str, str, str],
                      region: Optional[Tuple[str, str, str]] = None, modifier: Optional[Tuple[str, str, str]] = None) -> str:
    """A segment terminology tag (DICOM-style coded category/type/anatomic region).

    Codes are ``(scheme, value, meaning)``, e.g. ``("SCT", "85756007", "Tissue")``.
    """
    def code(c):
        return "^".join(c) if c else "^^"
    return "~".join([
        "Segmentation category and type - 3D Slicer General Anatomy list",
        code(category), code(seg_type), code(modifier),
        "Anatomic codes - DICOM master list", code(region), "^^",
    ])


def set_terminology(segment, entry: str) -> None:
    """Store a terminology entry on a segment through the tag API, which every supported Slicer
    has (``vtkSegment.SetTerminology`` first ships in 5.10)."""
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)


def terminology_of(segment) -> str:
    """The terminology entry stored on a segment ("" when none)."""
    import vtk

    value = vtk.reference("")
    found = segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), value)
    return str(value) if found else ""


def _oriented_image(mask: np.ndarray, geometry: Geometry):
    oi = slicer.vtkOrientedImageData()
    oi.SetDimensions(*geometry.shape_ijk)
    oi.SetImageToWorldMatrix(_vtk_matrix(geometry.ijk_to_ras))
    arr = np.ascontiguousarray(mask.astype(np.uint8))
    oi.GetPointData().SetScalars(numpy_support.numpy_to_vtk(arr.ravel(), deep=True,
                                                            array_type=vtk.VTK_UNSIGNED_CHAR))
    return oi


def new_segmentation(rt: SlicerRuntime, name: str, reference_volume=None, geometry: Optional[Geometry] = None):
    seg = rt.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    seg.CreateDefaultDisplayNodes()
    if reference_volume is not None:
        seg.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    elif geometry is not None:
        seg.GetSegmentation().SetConversionParameter(
            "Reference image geometry", _geometry_string(geometry))
    return seg


def _geometry_string(geometry: Geometry) -> str:
    oi = _oriented_image(np.zeros(geometry.shape_kji, np.uint8), geometry)
    return slicer.vtkSegmentationConverter.SerializeImageGeometry(oi)


def set_segment(seg_node, spec: SegmentSpec, geometry: Geometry, segment_id: Optional[str] = None) -> str:
    """Create or replace a segment from a mask on ``geometry``; returns the segment id."""
    if spec.mask.shape != geometry.shape_kji:
        raise ValueError(f"mask shape {spec.mask.shape} does not match geometry {geometry.shape_kji}")
    segmentation = seg_node.GetSegmentation()
    if segment_id is None:
        segment_id = segmentation.GetSegmentIdBySegmentName(spec.name) or None
    if segment_id is None or segmentation.GetSegment(segment_id) is None:
        segment_id = segmentation.AddEmptySegment(segment_id or "", spec.name, list(spec.color))
    segment = segmentation.GetSegment(segment_id)
    segment.SetName(spec.name)
    segment.SetColor(*spec.color)
    if spec.terminology:
        set_terminology(segment, spec.terminology)
    oi = _oriented_image(spec.mask, geometry)
    ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        oi, seg_node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE, oi.GetExtent())
    if not ok:
        raise RuntimeError(f"could not write segment '{spec.name}'")
    return segment_id


def segmentation_from_masks(rt: SlicerRuntime, name: str, segments: Iterable[SegmentSpec], geometry: Geometry,
                            reference_volume=None):
    """A segmentation node with one segment per mask, on the reference grid."""
    seg = new_segmentation(rt, name, reference_volume, geometry)
    for spec in segments:
        set_segment(seg, spec, geometry)
    return seg


def find_segment_id(seg_node, name_or_id: str) -> str:
    segmentation = seg_node.GetSegmentation()
    if segmentation.GetSegment(name_or_id) is not None:
        return name_or_id
    sid = segmentation.GetSegmentIdBySegmentName(name_or_id)
    if not sid:
        names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
        raise InputError(f"Segmentation '{seg_node.GetName()}' has no segment '{name_or_id}' "
                         f"(it has: {', '.join(names) or 'none'}): pick one of those.")
    return sid


def segment_mask(seg_node, name_or_id: str, geometry: Geometry) -> np.ndarray:
    """A segment as a boolean ``[k, j, i]`` mask on ``geometry`` (nearest-neighbour resampling)."""
    sid = find_segment_id(seg_node, name_or_id)
    seg_node.CreateBinaryLabelmapRepresentation()  # no-op when it exists (e.g. drawn in Segment Editor)
    oi = slicer.vtkOrientedImageData()
    seg_node.GetBinaryLabelmapRepresentation(sid, oi)
    ref = _oriented_image(np.zeros(geometry.shape_kji, np.uint8), geometry)
    transform = _parent_to_world(seg_node)
    if not np.allclose(transform, np.eye(4)):
        m = vtk.vtkMatrix4x4()
        oi.GetImageToWorldMatrix(m)
        oi.SetImageToWorldMatrix(_vtk_matrix(transform @ _np_from_vtk_matrix(m)))
    out = slicer.vtkOrientedImageData()
    if oi.IsEmpty():
        return np.zeros(geometry.shape_kji, bool)
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(oi, ref, out, False, True)
    scalars = out.GetPointData().GetScalars()
    arr = numpy_support.vtk_to_numpy(scalars).reshape(geometry.shape_kji)
    return arr != 0


def segment_names(seg_node) -> List[str]:
    s = seg_node.GetSegmentation()
    return [s.GetNthSegment(n).GetName() for n in range(s.GetNumberOfSegments())]


def labelmap_mask(labelmap_node, geometry: Optional[Geometry] = None) -> np.ndarray:
    """Non-zero voxels of a labelmap (or scalar) volume, mapped onto ``geometry`` if given."""
    from .image import resample_nearest

    img = image_from_volume(labelmap_node)
    mask = img.array != 0
    if geometry is not None and not img.geometry.same_grid(geometry):
        mask = resample_nearest(mask, img.geometry, geometry, fill=False)
    return mask


def roi_mask(roi_node, geometry: Geometry) -> np.ndarray:
    """Voxels of ``geometry`` inside a markups ROI box."""
    object_to_world = _np_from_vtk_matrix(roi_node.GetObjectToWorldMatrix())
    size = np.asarray(roi_node.GetSize(), dtype=float)
    return raster.box_mask(geometry, object_to_world, size)


def closed_curve_mask(curve_node, geometry: Geometry) -> np.ndarray:
    """Voxels of ``geometry`` inside a closed curve drawn on one slice."""
    if curve_node.GetNumberOfControlPoints() < 3:
        raise InputError(f"Closed curve '{curve_node.GetName()}' has fewer than 3 points: draw the region again.")
    # The interpolated curve (what the user sees), not just the clicked control points.
    pts = curve_node.GetCurvePointsWorld()
    points = numpy_support.vtk_to_numpy(pts.GetData()).astype(float)
    try:
        return raster.curve_mask(geometry, points)
    except ValueError as exc:
        raise InputError(f"Closed curve '{curve_node.GetName()}' is not drawn on one slice of the image ({exc}): "
                         f"draw it in a slice view aligned with the image slices.") from None


def describe_node(node) -> str:
    return f"'{node.GetName()}' ({node.GetClassName().replace('vtkMRML', '').replace('Node', '')})"


def region_mask(node, geometry: Geometry, segment: Optional[str] = None, what: str = "region",
                image_name: str = "image") -> np.ndarray:
    """A region the user drew — segment, labelmap/scalar volume, markups ROI box or closed
    curve, or a list of them (united) — as a boolean mask on ``geometry``.

    Regions on another grid are mapped by nearest neighbour. An empty region, or one that
    covers no voxel of ``geometry``, is an :class:`InputError` that says which and what to do.
    """
    if node is None:
        raise InputError(f"No {what} selected: select or draw it.")
    mask = np.zeros(geometry.shape_kji, bool)
    for n in (node if isinstance(node, (list, tuple)) else [node]):
        outside = (f"The {what} {describe_node(n)} lies outside the {image_name} field of view (or covers no "
                   f"voxel of it): draw it on the {image_name} image.")
        if n.IsA("vtkMRMLSegmentationNode"):
            names = segment_names(n)
            name = segment
            if name is None:
                if len(names) != 1:
                    raise InputError(f"Segmentation {describe_node(n)} has {len(names)} segments: say which one is "
                                     f"the {what}.")
                name = names[0]
            own = segment_mask(n, name, geometry)
            if not own.any():
                raise InputError(f"The {what} segment '{name}' of {describe_node(n)} is empty or lies outside the "
                                 f"{image_name} field of view: draw it on the {image_name} image.")
        elif n.IsA("vtkMRMLVolumeNode"):
            img = image_from_volume(n)
            own = img.array != 0
            if not own.any():
                raise InputError(f"The {what} {describe_node(n)} is empty (no non-zero voxel): draw the region.")
            if not img.geometry.same_grid(geometry):
                from .image import resample_nearest

                if not geometry.overlaps(img.geometry):
                    raise InputError(outside)
                own = resample_nearest(own, img.geometry, geometry, fill=False)
        elif n.IsA("vtkMRMLMarkupsROINode"):
            own = roi_mask(n, geometry)
        elif n.IsA("vtkMRMLMarkupsClosedCurveNode"):
            own = closed_curve_mask(n, geometry)
        else:
            raise InputError(f"{describe_node(n)} cannot define a {what}: use a segmentation, labelmap, markups "
                             f"ROI box or closed curve.")
        if not own.any():
            raise InputError(outside)
        mask |= own
    return mask


# --- tables -------------------------------------------------------------------------------
def table_from_columns(rt: SlicerRuntime, name: str, columns: Dict[str, Sequence], node=None):
    """A table node whose columns are numbers or strings (one list per column)."""
    table_node = node or rt.scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = vtk.vtkTable()
    for col_name, values in columns.items():
        values = list(values)
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values) and values:
            is_int = all(isinstance(v, (int, np.integer)) for v in values)
            arr = vtk.vtkIntArray() if is_int else vtk.vtkDoubleArray()
            for v in values:
                arr.InsertNextValue(int(v) if is_int else float(v))
        else:
            arr = vtk.vtkStringArray()
            for v in values:
                arr.InsertNextValue("" if v is None else str(v))
        arr.SetName(col_name)
        table.AddColumn(arr)
    table_node.SetAndObserveTable(table)
    table_node.SetUseColumnTitleAsColumnHeader(True) if hasattr(table_node, "SetUseColumnTitleAsColumnHeader") else None
    return table_node


def table_from_rows(rt: SlicerRuntime, name: str, header: Sequence[str], rows: Iterable[Sequence], node=None):
    """A table node from rows of values in ``header`` order (see :func:`table_from_columns`)."""
    rows = [list(r) for r in rows]
    return table_from_columns(rt, name, {h: [r[i] for r in rows] for i, h in enumerate(header)}, node=node)


def columns_from_table(table_node) -> Dict[str, list]:
    table = table_node.GetTable()
    out: Dict[str, list] = {}
    for c in range(table.GetNumberOfColumns()):
        col = table.GetColumn(c)
        values = [col.GetValue(r) for r in range(table.GetNumberOfRows())]
        out[col.GetName()] = values
    return out


def write_table_csv(table_node, path: "str | os.PathLike") -> Path:
    cols = columns_from_table(table_node)
    header = list(cols)
    n = len(next(iter(cols.values()))) if cols else 0
    return write_rows_csv(path, header, ([cols[h][r] for h in header] for r in range(n)))


def table_from_csv(rt: SlicerRuntime, path: "str | os.PathLike", name: Optional[str] = None):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Table file {path} does not exist: check the path.")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise InputError(f"Table file {path} is empty.")
    header, body = rows[0], rows[1:]
    columns: Dict[str, list] = {}
    for c, h in enumerate(header):
        raw = [r[c] if c < len(r) else "" for r in body]
        try:
            vals = [float(v) if v != "" else float("nan") for v in raw]
            if all(v.lstrip("-").isdigit() for v in raw if v != "") and all(v != "" for v in raw):
                vals = [int(v) for v in raw]
            columns[h] = vals
        except ValueError:
            columns[h] = raw
    return table_from_columns(rt, name or path.stem, columns)


# --- colours and plots -------------------------------------------------------------------
def color_table(rt: SlicerRuntime, name: str, entries: Sequence[Tuple[int, str, Tuple[float, float, float]]]):
    """A discrete colour table (label value, name, RGB 0..1); value 0 is transparent background."""
    node = rt.scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    n = max(v for v, _, _ in entries) + 1
    node.SetNumberOfColors(n)
    node.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
    for v, label, rgb in entries:
        node.SetColor(int(v), label, float(rgb[0]), float(rgb[1]), float(rgb[2]), 1.0)
    return node


def continuous_color_node(rt: SlicerRuntime, name: str, points: Sequence[Tuple[float, Tuple[float, float, float]]]):
    """A procedural colour map (value -> RGB), e.g. T2 0-100 ms or a CAM heat scale."""
    node = rt.scene.AddNewNodeByClass("vtkMRMLProceduralColorNode", name)
    ctf = vtk.vtkColorTransferFunction()
    for value, rgb in points:
        ctf.AddRGBPoint(float(value), *[float(c) for c in rgb])
    node.SetAndObserveColorTransferFunction(ctf)
    node.SetAttribute("Category", "MSKQuant")
    return node


def add_plot_series(rt: SlicerRuntime, chart, table_node, x_column: str, y_columns: Sequence[str],
                    name: str, kind: str = "scatter") -> None:
    """Add one plot series per column of ``table_node`` to ``chart`` (scatter, or lines without markers)."""
    for y in y_columns:
        series = rt.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name}: {y}")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName(x_column)
        series.SetYColumnName(y)
        series.SetPlotType(series.PlotTypeScatter if kind == "scatter" else series.PlotTypeLine)
        if kind == "line":
            series.SetMarkerStyle(series.MarkerStyleNone)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())


def plot_chart(rt: SlicerRuntime, table_node, x_column: str, y_columns: Sequence[str], title: str,
               x_title: str = "", y_title: str = "", kind: str = "scatter"):
    """A plot chart node showing columns of a table node (Slicer's plot view draws it)."""
    chart = rt.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", title)
    chart.SetTitle(title)
    chart.SetXAxisTitle(x_title or x_column)
    chart.SetYAxisTitle(y_title or ", ".join(y_columns))
    add_plot_series(rt, chart, table_node, x_column, y_columns, title, kind)
    return chart


# --- files --------------------------------------------------------------------------------
def save_segmentation(seg_node, path: "str | os.PathLike") -> Path:
    """Write a segmentation node as ``.seg.nrrd`` (segment names, colours, terminology kept)."""
    path = Path(path)
    if not str(path).endswith(".seg.nrrd"):
        raise OutputError(f"Segmentation file {path} must end with .seg.nrrd.")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    with atomic_path(path) as tmp, native_stderr_captured() as native:
        storage.SetFileName(str(tmp))
        if not storage.WriteData(seg_node):
            raise write_failure(path, native.text())
    return path


def load_segmentation(rt: SlicerRuntime, path: "str | os.PathLike", name: Optional[str] = None):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Segmentation file {path} does not exist: check the path.")
    seg = rt.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or path.name.split(".")[0])
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(seg):
        rt.scene.RemoveNode(seg)
        raise InputError(f"{path} cannot be read as a segmentation: give a .seg.nrrd file written by Slicer.")
    seg.CreateDefaultDisplayNodes()
    return seg


def load_volume(rt: SlicerRuntime, path: "str | os.PathLike", name: Optional[str] = None, labelmap: bool = False,
                what: str = "Image"):
    """Read a NIfTI/NRRD file (the one image-file path, :mod:`mskquant.imageio`) into a volume node."""
    from .imageio import read_image

    img = read_image(path, what)
    if img.is_series:
        raise InputError(f"{what} file {path} is 4D: a 3D volume is needed here.")
    stem = Path(path).name.split(".")[0]
    return volume_from_image(rt, img, name or stem, labelmap=labelmap)


def save_volume(volume_node, path: "str | os.PathLike") -> Path:
    from .imageio import write_image

    return write_image(image_from_volume(volume_node), path)
