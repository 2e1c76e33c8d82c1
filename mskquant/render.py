"""Report pictures: colour-mapped slices, overlays, labelled panels and charts as PNG.

Images are composed in numpy (RGB uint8) and written with VTK's PNG writer; text is drawn
with VTK's FreeType renderer; charts (Bland-Altman, ROC, scatter) are VTK charts rendered
off-screen (EGL with Mesa's software OpenGL on a machine without a display or GPU).
No matplotlib: the same code runs inside Slicer's Python.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .atomic import atomic_path, native_stderr_captured, write_failure

RGB = Tuple[float, float, float]

# Colour maps as (position 0..1, RGB 0..1) control points.
COLORMAPS = {
    "gray": [(0.0, (0, 0, 0)), (1.0, (1, 1, 1))],
    # heat: black-red-yellow-white, for class-activation maps
    "heat": [(0.0, (0, 0, 0)), (0.35, (0.8, 0, 0)), (0.7, (1, 0.8, 0)), (1.0, (1, 1, 1))],
    # T2 maps: blue (short T2) through green/yellow to red (long T2)
    "t2": [(0.0, (0.0, 0.0, 0.5)), (0.25, (0.0, 0.3, 1.0)), (0.5, (0.0, 0.9, 0.4)),
           (0.75, (1.0, 0.85, 0.0)), (1.0, (0.85, 0.0, 0.0))],
    # signed change maps: blue (decrease) - white - red (increase)
    "diverging": [(0.0, (0.1, 0.2, 0.8)), (0.5, (1, 1, 1)), (1.0, (0.8, 0.1, 0.1))],
}


def colormap_points(name: str):
    return COLORMAPS[name]


def colorize(values: np.ndarray, cmap: str = "gray", vmin: Optional[float] = None, vmax: Optional[float] = None,
             nan_rgb: RGB = (0, 0, 0)) -> np.ndarray:
    """Map a 2D array to RGB uint8 with a named colour map; NaN gets ``nan_rgb``."""
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    if vmin is None:
        vmin = float(np.nanpercentile(v, 1)) if finite.any() else 0.0
    if vmax is None:
        vmax = float(np.nanpercentile(v, 99)) if finite.any() else 1.0
    t = np.clip((np.where(finite, v, vmin) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    pts = COLORMAPS[cmap]
    pos = np.array([p for p, _ in pts])
    rgb = np.stack([np.interp(t, pos, [c[ch] for _, c in pts]) for ch in range(3)], axis=-1)
    rgb[~finite] = nan_rgb
    return (rgb * 255 + 0.5).astype(np.uint8)


def overlay(base_rgb: np.ndarray, color_rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend ``color_rgb`` over ``base_rgb`` with per-pixel opacity ``alpha`` (0..1)."""
    a = np.clip(np.asarray(alpha, dtype=float), 0, 1)[..., None]
    out = base_rgb.astype(float) * (1 - a) + color_rgb.astype(float) * a
    return (out + 0.5).astype(np.uint8)


def mask_overlay(base_rgb: np.ndarray, mask: np.ndarray, color: RGB, opacity: float = 0.5,
                 outline: bool = False) -> np.ndarray:
    m = np.asarray(mask, bool)
    if outline:
        from scipy.ndimage import binary_erosion

        m = m & ~binary_erosion(m)
        opacity = 1.0
    col = np.zeros_like(base_rgb)
    col[...] = (np.asarray(color) * 255).astype(np.uint8)
    return overlay(base_rgb, col, m * opacity)


def upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1) if factor > 1 else rgb


def resize_nearest(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = (np.arange(height) * rgb.shape[0] / height).astype(int)
    cols = (np.arange(width) * rgb.shape[1] / width).astype(int)
    return rgb[rows][:, cols]


def text_image(text: str, font_size: int = 16, color: RGB = (1, 1, 1)) -> np.ndarray:
    """RGBA uint8 image of a line of text (VTK FreeType, no OpenGL needed)."""
    from . import vtklite as vtk
    from .vtklite import numpy_support

    renderer = vtk.vtkTextRenderer.GetInstance()
    prop = vtk.vtkTextProperty()
    prop.SetFontSize(font_size)
    prop.SetColor(*color)
    prop.SetFontFamilyToArial()
    data = vtk.vtkImageData()
    dims = [0, 0]
    if not renderer.RenderString(prop, text, data, dims, 72):
        return np.zeros((font_size, 1, 4), np.uint8)
    w, h, _ = data.GetDimensions()
    arr = numpy_support.vtk_to_numpy(data.GetPointData().GetScalars()).reshape(h, w, 4)
    return arr[::-1][: dims[1] + 2, : dims[0] + 2]  # VTK rows go bottom-up


def put_text(rgb: np.ndarray, text: str, row: int, col: int, font_size: int = 14, color: RGB = (1, 1, 1)) -> np.ndarray:
    """Draw text onto an RGB image (top-left corner at ``row, col``), clipped at the edges."""
    t = text_image(text, font_size, color)
    out = rgb.copy()
    h = min(t.shape[0], out.shape[0] - row)
    w = min(t.shape[1], out.shape[1] - col)
    if h <= 0 or w <= 0:
        return out
    a = t[:h, :w, 3:4].astype(float) / 255
    region = out[row:row + h, col:col + w].astype(float)
    out[row:row + h, col:col + w] = (region * (1 - a) + t[:h, :w, :3] * a + 0.5).astype(np.uint8)
    return out


def titled(rgb: np.ndarray, title: str, font_size: int = 14) -> np.ndarray:
    """Add a dark title bar above an image."""
    bar = np.full((font_size + 10, rgb.shape[1], 3), 30, np.uint8)
    bar = put_text(bar, title, 4, 4, font_size)
    return np.concatenate([bar, rgb], axis=0)


def grid(panels: Sequence[np.ndarray], columns: int, gap: int = 4, background: int = 0) -> np.ndarray:
    """Tile RGB panels (padded to a common size) into ``columns`` columns."""
    h = max(p.shape[0] for p in panels)
    w = max(p.shape[1] for p in panels)
    rows = (len(panels) + columns - 1) // columns
    out = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), background, np.uint8)
    for n, p in enumerate(panels):
        r, c = divmod(n, columns)
        out[r * (h + gap): r * (h + gap) + p.shape[0], c * (w + gap): c * (w + gap) + p.shape[1]] = p
    return out


def colorbar(cmap: str, vmin: float, vmax: float, label: str, height: int = 200, width: int = 18) -> np.ndarray:
    ramp = np.linspace(vmax, vmin, height)[:, None].repeat(width, axis=1)
    bar = colorize(ramp, cmap, vmin, vmax)
    panel = np.full((height + 40, width + 70, 3), 0, np.uint8)
    panel[20:20 + height, 4:4 + width] = bar
    panel = put_text(panel, f"{vmax:g}", 14, width + 8, 12)
    panel = put_text(panel, f"{vmin:g}", height + 8, width + 8, 12)
    panel = put_text(panel, label, 0, 2, 12)
    return panel


def write_png(rgb: np.ndarray, path: "str | os.PathLike") -> Path:
    """Write an RGB (or grey) uint8 image, row 0 at the top, atomically."""
    from . import vtklite as vtk
    from .vtklite import numpy_support

    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = np.ascontiguousarray(arr[::-1].astype(np.uint8))  # VTK images start at the bottom row
    h, w, c = arr.shape
    data = vtk.vtkImageData()
    data.SetDimensions(w, h, 1)
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(arr.reshape(-1, c), deep=True,
                                                              array_type=vtk.VTK_UNSIGNED_CHAR))
    path = Path(path)
    with atomic_path(path) as tmp, native_stderr_captured() as native:
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(tmp))
        writer.SetInputData(data)
        writer.Write()
        if writer.GetErrorCode():
            raise write_failure(path, f"{vtk.vtkErrorCode.GetStringFromErrorCode(writer.GetErrorCode())}\n"
                                      f"{native.text()}")
    return path


@dataclass
class Series:
    x: Sequence[float]
    y: Sequence[float]
    label: str
    kind: str = "points"  # "points" or "line"
    color: RGB = (0.1, 0.3, 0.8)
    width: float = 2.0


@dataclass
class HLine:
    y: float
    label: str
    color: RGB = (0.5, 0.5, 0.5)


@dataclass
class Chart:
    title: str
    x_title: str
    y_title: str
    series: List[Series] = field(default_factory=list)
    hlines: List[HLine] = field(default_factory=list)
    x_range: Optional[Tuple[float, float]] = None
    y_range: Optional[Tuple[float, float]] = None


def chart_png(chart: Chart, path: "str | os.PathLike", size: Tuple[int, int] = (640, 480)) -> Path:
    """Render a chart off-screen with VTK and write it as PNG."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    from . import vtklite as vtk

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    view = vtk.vtkContextView()
    view.SetRenderWindow(window)
    view.GetRenderer().SetBackground(1, 1, 1)
    xy = vtk.vtkChartXY()
    view.GetScene().AddItem(xy)
    xy.SetTitle(chart.title)
    xy.GetTitleProperties().SetFontSize(16)
    xy.GetAxis(vtk.vtkAxis.BOTTOM).SetTitle(chart.x_title)
    xy.GetAxis(vtk.vtkAxis.LEFT).SetTitle(chart.y_title)
    xy.SetShowLegend(True)
    all_x = [float(v) for s in chart.series for v in s.x]
    x_lo, x_hi = (min(all_x), max(all_x)) if all_x else (0.0, 1.0)
    lines = [Series([x_lo, x_hi], [h.y, h.y], h.label, "line", h.color, 1.5) for h in chart.hlines]
    for s in list(chart.series) + lines:
        table = vtk.vtkTable()
        xa = vtk.vtkDoubleArray()
        xa.SetName("x")
        ya = vtk.vtkDoubleArray()
        ya.SetName(s.label)
        for xv, yv in zip(s.x, s.y):
            xa.InsertNextValue(float(xv))
            ya.InsertNextValue(float(yv))
        table.AddColumn(xa)
        table.AddColumn(ya)
        plot = xy.AddPlot(vtk.vtkChart.POINTS if s.kind == "points" else vtk.vtkChart.LINE)
        plot.SetInputData(table, 0, 1)
        plot.SetColor(*(int(c * 255) for c in s.color), 255)
        plot.SetWidth(s.width)
        if s.kind == "points":
            plot.SetMarkerSize(8)
    for axis_id, rng in ((vtk.vtkAxis.BOTTOM, chart.x_range), (vtk.vtkAxis.LEFT, chart.y_range)):
        if rng is not None:
            ax = xy.GetAxis(axis_id)
            ax.SetBehavior(vtk.vtkAxis.FIXED)
            ax.SetRange(*rng)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    path = Path(path)
    try:
        with atomic_path(path) as tmp, native_stderr_captured() as native:
            writer = vtk.vtkPNGWriter()
            writer.SetFileName(str(tmp))
            writer.SetInputConnection(grab.GetOutputPort())
            writer.Write()
            if writer.GetErrorCode():
                raise write_failure(path, f"{vtk.vtkErrorCode.GetStringFromErrorCode(writer.GetErrorCode())}\n"
                                          f"{native.text()}")
    finally:
        window.Finalize()
    return path


def display_slice(array_kji: np.ndarray, geometry, index: int, axis: int = 0) -> np.ndarray:
    """A 2D slice oriented for display: radiological left-right, superior (or anterior) up.

    ``axis`` is the array axis sliced (0 = k). Rows and columns are flipped (never
    transposed) so the picture matches what Slicer shows in the slice plane.
    """
    sl = np.take(array_kji, index, axis=axis)
    in_plane = [a for a in range(3) if a != axis]  # array axes of rows, columns
    d_kji = geometry.directions[:, ::-1]
    row_dir, col_dir = d_kji[:, in_plane[0]], d_kji[:, in_plane[1]]
    # columns: patient right on the viewer's left -> increasing column should point to L (-R)
    lr_col = col_dir[0]
    if abs(lr_col) >= abs(row_dir[0]) and lr_col > 0:
        sl = sl[:, ::-1]
    # rows: superior (else anterior) at the top -> row index should decrease towards S/A
    up = row_dir[2] if abs(row_dir[2]) >= abs(row_dir[1]) else row_dir[1]
    if up > 0:
        sl = sl[::-1, :]
    return np.ascontiguousarray(sl)


def read_png(path: "str | os.PathLike") -> np.ndarray:
    """An RGB uint8 array (row 0 at the top) from a PNG file."""
    from . import vtklite as vtk
    from .vtklite import numpy_support

    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    data = reader.GetOutput()
    w, h, _ = data.GetDimensions()
    arr = numpy_support.vtk_to_numpy(data.GetPointData().GetScalars()).reshape(h, w, -1)
    return np.ascontiguousarray(arr[::-1, :, :3])
