"""KneeT2Segment MRML logic: MESE sequences and cartilage segments in, T2 maps, subregion
segments, tables and plots out.

Runs the same way inside Slicer, in the ``mskquant knee-*`` commands and in the tests: it
only needs a :class:`mskquant.headless.SlicerRuntime`. Steps (Thomas et al. 2.5-2.6):

1. the MESE series: a sequence node whose index values are the echo times (what Slicer makes
   of a multi-echo DICOM series or a 4D file), validated by :mod:`.mese`;
2. the femoral cartilage mask: the user's segment (resampled onto the MESE grid) or labelmap
   (which must be on the MESE grid); without one, :meth:`KneeT2Logic.segment_cartilage` is
   the hook for the automatic segmentation (a later release) and says clearly that it is not
   available yet;
3. :func:`.quantify.quantify`: noise-corrected T2 fit, refinement, 12 subregions, statistics;
4. nodes: a T2 map volume with a 0-100 ms colour map, a segmentation with the 12 named
   subregions, a table (the CSV contract's columns) and a bar plot of the subregion means;
   the result summary (incl. projection maps) rides on the table node so that two results in
   a saved scene can be compared later;
5. change over time between two results: a table and plot of Delta T2 per subregion and the
   focal clusters of the aligned projection maps (:mod:`.change`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

from mskquant import mrml, render
from mskquant.errors import InputError
from mskquant.headless import SlicerRuntime, current_runtime
from mskquant.image import Image
from mskquant.progress import Progress, as_progress

from .change import CHANGE_COLUMNS, ChangeResult, TimePoint, compare
from .mese import MeseSeries, make_series, normalize_laterality, read_mese, validate_echo_times
from .parameters import KneeT2Parameters
from .quantify import Quantification, quantify
from .subregions import CSV_COLUMNS, SUBREGION_ABBREVIATIONS, SUBREGION_COLORS, SUBREGION_NAMES

T2_COLOR_NODE = "MSKQuant T2 (0-100 ms)"
RESULT_ATTRIBUTE = "MSKQuant.KneeT2Result"
SUMMARY_ATTRIBUTE = "MSKQuant.KneeT2Summary"
LATERALITY_ATTRIBUTE = "MSKQuant.Laterality"
MODULE_ATTRIBUTE = "MSKQuant.Module"

AUTOMATIC_SEGMENTATION_MISSING = (
    "Automatic femoral cartilage segmentation is not available yet (it comes with the KneeT2Segment "
    "segmentation model in a later release): select a femoral cartilage segment or labelmap drawn on the MESE "
    "images (command line: --mask M.nii.gz).")


@dataclass
class KneeT2Result:
    quant: Quantification
    t2_volume: object  # vtkMRMLScalarVolumeNode (ms)
    segmentation: object  # vtkMRMLSegmentationNode with the 12 subregions
    table: object  # vtkMRMLTableNode: all regions (CSV contract columns)
    plot: object  # vtkMRMLPlotChartNode: mean T2 of the 12 subregions
    summary: dict
    mask_source: str
    fit_volumes: dict = field(default_factory=dict)  # "amplitude", "r2": goodness of fit (same voxels as T2)
    timings_s: dict = field(default_factory=dict)

    @property
    def warnings(self) -> List[str]:
        return self.quant.warnings


@dataclass
class KneeT2Change:
    change: ChangeResult
    table: object
    plot: object
    baseline: TimePoint
    followup: TimePoint


def _describe(node) -> str:
    return f"'{node.GetName()}' ({node.GetClassName().replace('vtkMRML', '').replace('Node', '')})"


def t2_color_points(vmax: float = 100.0):
    return [(p * vmax, rgb) for p, rgb in render.colormap_points("t2")]


class KneeT2Logic:
    """Knee cartilage T2 quantification on MRML nodes."""

    def __init__(self, runtime: Optional[SlicerRuntime] = None,
                 segmenter: Optional[Callable[[MeseSeries, Progress], np.ndarray]] = None) -> None:
        self.rt = runtime or current_runtime()
        self.segmenter = segmenter

    # --- inputs --------------------------------------------------------------------------------
    def mese_from_node(self, node, echo_times_ms: Optional[Sequence[float]] = None,
                       laterality: Optional[str] = None) -> MeseSeries:
        """The MESE series of a sequence node (or a sequence browser's master sequence)."""
        if node is None:
            raise InputError("No MESE series selected: load the multi-echo series (all echoes) and select it.")
        if node.IsA("vtkMRMLSequenceBrowserNode"):
            node = node.GetMasterSequenceNode()
            if node is None:
                raise InputError("The selected sequence browser has no sequence: select the MESE sequence.")
        if node.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError(f"{_describe(node)} is a 3D volume without echoes: select the MESE sequence (all echoes, "
                             f"echo times as index values).")
        if not node.IsA("vtkMRMLSequenceNode"):
            raise InputError(f"{_describe(node)} is not a MESE series: select a sequence of echo volumes.")
        if echo_times_ms is None:
            index = (node.GetIndexName() or "").strip().lower().replace("_", " ")
            if "echo" not in index and index not in ("te", "te (ms)"):
                raise InputError(f"The index of sequence '{node.GetName()}' is '{node.GetIndexName()}', not the echo "
                                 f"time: type the echo times in ms (panel: Echo times; e.g. 10,20,30,40,50,60,70).")
            images, values = mrml.images_from_sequence(node)
            if (node.GetIndexUnit() or "").strip().lower() == "s":
                values = [v * 1000.0 for v in values]
        else:
            images = [mrml.image_from_volume(node.GetNthDataNode(n)) for n in range(node.GetNumberOfDataNodes())]
            values = list(echo_times_ms)
        lat = normalize_laterality(laterality) or normalize_laterality(node.GetAttribute(LATERALITY_ATTRIBUTE))
        lat_source = "given" if normalize_laterality(laterality) else \
            (node.GetAttribute(LATERALITY_ATTRIBUTE + "Source") or "sequence attribute")
        series = make_series(images, values, f"sequence '{node.GetName()}'",
                             laterality=lat, laterality_source=lat_source if lat else "",
                             subject_id=node.GetAttribute("MSKQuant.SubjectID"), source=node.GetName())
        return series

    def add_mese(self, series: MeseSeries, name: str = "MESE"):
        """A sequence node (+ browser) holding the echoes, echo times as index values (ms)."""
        images = [Image(a, series.geometry) for a in series.echoes.array]
        seq, browser = mrml.sequence_from_images(self.rt, images, series.echo_times_ms, name)
        if series.laterality:
            seq.SetAttribute(LATERALITY_ATTRIBUTE, series.laterality)
            seq.SetAttribute(LATERALITY_ATTRIBUTE + "Source", series.laterality_source or "image metadata")
        if series.subject_id:
            seq.SetAttribute("MSKQuant.SubjectID", str(series.subject_id))
        return seq, browser

    def load_mese(self, path, echo_times_ms: Optional[Sequence[float]] = None, name: Optional[str] = None,
                  progress: "Progress | None" = None):
        """Read a 4D file or DICOM folder into a sequence node; returns (sequence node, series)."""
        series = read_mese(path, echo_times_ms, progress)
        seq, _ = self.add_mese(series, name or Path(path).name.split(".")[0])
        return seq, series

    def cartilage_mask(self, node, segment: Optional[str], series: MeseSeries) -> np.ndarray:
        """The femoral cartilage as a mask on the MESE grid (segment resampled; labelmap must match)."""
        g = series.geometry
        if node.IsA("vtkMRMLSegmentationNode"):
            names = mrml.segment_names(node)
            if not segment:
                if len(names) != 1:
                    raise InputError(f"Segmentation {_describe(node)} has {len(names)} segments: say which one is the "
                                     f"femoral cartilage.")
                segment = names[0]
            mask = mrml.segment_mask(node, segment, g)
            if not mask.any():
                raise InputError(f"The cartilage segment '{segment}' of {_describe(node)} is empty or lies outside the "
                                 f"MESE field of view: draw it on the MESE images.")
            return mask
        if node.IsA("vtkMRMLVolumeNode"):
            img = mrml.image_from_volume(node)
            if not img.geometry.same_grid(g):
                raise InputError(f"The cartilage labelmap {_describe(node)} ({img.geometry.describe()}) is not on the MESE "
                                 f"grid ({g.describe()}): give a mask drawn on the MESE images, or a segmentation.")
            mask = np.nan_to_num(img.array.astype(np.float64)) != 0
            if not mask.any():
                raise InputError(f"The cartilage labelmap {_describe(node)} is empty: draw the femoral cartilage.")
            return mask
        raise InputError(f"{_describe(node)} cannot define the cartilage: use a segmentation or a labelmap.")

    def segment_cartilage(self, series: MeseSeries, progress: "Progress | None" = None) -> np.ndarray:
        """Automatic femoral cartilage segmentation (the hook the segmentation model plugs into).

        ``segmenter(series, progress) -> bool mask on the MESE grid``: given to the constructor,
        or ``segment_femoral_cartilage`` of a ``KneeT2SegmentLib.segmentation`` module.
        """
        segmenter = self.segmenter
        if segmenter is None:
            import importlib

            name = f"{__package__}.segmentation"
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:  # the module exists but one of its own imports failed
                    raise
                raise InputError(AUTOMATIC_SEGMENTATION_MISSING) from None
            segmenter = module.segment_femoral_cartilage
        return np.asarray(segmenter(series, as_progress(progress)), bool)

    # --- the workflow ---------------------------------------------------------------------------
    def run(self, mese, mask_node=None, segment: Optional[str] = None, params: Optional[KneeT2Parameters] = None,
            progress: "Progress | None" = None, name: str = "Knee T2", mask: Optional[np.ndarray] = None
            ) -> KneeT2Result:
        """Quantify one MESE series (a sequence node or a :class:`MeseSeries`).

        The cartilage comes from ``mask_node`` (+ ``segment``), else ``mask``, else the automatic
        segmentation hook.
        """
        params = (params or KneeT2Parameters()).validate()
        progress = as_progress(progress)
        t0 = time.monotonic()
        series = mese if isinstance(mese, MeseSeries) else self.mese_from_node(mese)
        if mask_node is not None:
            cart, source = self.cartilage_mask(mask_node, segment, series), f"{_describe(mask_node)}"
        elif mask is not None:  # an Image (checked against the MESE grid) or an array on it
            cart, source = mask, "given mask"
        else:
            cart, source = self.segment_cartilage(series, progress.sub(0.0, 0.3)), "automatic"
        quant = quantify(series, cart, params, progress.sub(0.0 if source != "automatic" else 0.3, 0.9))
        progress(0.92, "Creating nodes")
        result = self._make_nodes(quant, name, source)
        result.timings_s = {**quant.timings_s, "total": time.monotonic() - t0}
        progress(1.0, "Knee T2 done")
        return result

    def _t2_color_node(self):
        node = self.rt.scene.GetFirstNodeByName(T2_COLOR_NODE)
        if node is None or not node.IsA("vtkMRMLProceduralColorNode"):
            node = mrml.continuous_color_node(self.rt, T2_COLOR_NODE, t2_color_points(100.0))
        return node

    def _make_nodes(self, quant: Quantification, name: str, mask_source: str) -> KneeT2Result:
        g = quant.geometry
        t2 = mrml.volume_from_image(self.rt, Image(quant.t2_map, g), f"{name} T2 (ms)",
                                    color_node=self._t2_color_node(), window_level=(100.0, 50.0))
        t2.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
        t2.SetAttribute("MSKQuant.Quantity", "T2 (ms)")
        shown = np.isfinite(quant.t2_map)
        fit_volumes = {}
        for key, values, label in (("amplitude", quant.fit.amplitude, "amplitude (signal at TE 0)"),
                                   ("r2", quant.fit.r2, "fit R2")):
            node = mrml.volume_from_image(self.rt, Image(np.where(shown, values, np.nan).astype(np.float32), g),
                                          f"{name} {label}")
            node.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
            t2.SetNodeReferenceID(f"MSKQuantFit{key}", node.GetID())
            fit_volumes[key] = node
        specs = [mrml.SegmentSpec(SUBREGION_NAMES[lab], quant.subregions.labels == lab, SUBREGION_COLORS[lab])
                 for lab in sorted(SUBREGION_NAMES)]
        seg = mrml.segmentation_from_masks(self.rt, f"{name} subregions", specs, g)
        seg.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
        summary = quant.summary()
        summary["mask_source"] = mask_source
        table = self.rt.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
        cols = {c: [] for c in CSV_COLUMNS}
        for r in quant.rows:
            for c, v in zip(CSV_COLUMNS, r.as_row()):
                cols[c].append(v)
        mrml.table_from_columns(self.rt, table.GetName(), cols, node=table)
        table.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
        table.SetAttribute(RESULT_ATTRIBUTE, "1")
        table.SetAttribute(SUMMARY_ATTRIBUTE, _to_json(summary))
        table.SetNodeReferenceID("MSKQuantT2Map", t2.GetID())
        table.SetNodeReferenceID("MSKQuantSubregions", seg.GetID())
        plot = self._subregion_plot(quant, name)
        return KneeT2Result(quant, t2, seg, table, plot, summary, mask_source, fit_volumes)

    def _subregion_plot(self, quant: Quantification, name: str):
        by_name = {r.region: r for r in quant.rows}
        labels = sorted(SUBREGION_NAMES)
        plot_table = self.rt.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} subregion means")
        mrml.table_from_columns(self.rt, plot_table.GetName(), {
            "subregion": [float(l) for l in labels],
            "abbreviation": [SUBREGION_ABBREVIATIONS[l] for l in labels],
            "mean_t2_ms": [by_name[SUBREGION_NAMES[l]].mean_t2_ms for l in labels],
            "sd_t2_ms": [by_name[SUBREGION_NAMES[l]].sd_t2_ms for l in labels],
        }, node=plot_table)
        chart = mrml.plot_chart(self.rt, plot_table, "subregion", ["mean_t2_ms"], f"{name}: mean T2 per subregion",
                                "subregion (1 DMA ... 12 SLP)", "mean T2 (ms)")
        _bars(chart)
        return chart

    # --- change over time ------------------------------------------------------------------------
    @staticmethod
    def time_point(result_or_table, label: str = "") -> TimePoint:
        """A time point from a result, its table node, or a ``knee_t2.json`` summary dict."""
        if isinstance(result_or_table, KneeT2Result):
            return TimePoint.from_summary(result_or_table.summary, label)
        if isinstance(result_or_table, dict):
            return TimePoint.from_summary(result_or_table, label)
        table = result_or_table
        if table is None:
            raise InputError(f"No {label or 'result'} selected: select a KneeT2Segment result table.")
        raw = table.GetAttribute(SUMMARY_ATTRIBUTE)
        if not raw:
            raise InputError(f"Table {_describe(table)} is not a KneeT2Segment result: run the T2 quantification first.")
        return TimePoint.from_summary(json.loads(raw), label)

    def compare(self, baseline, followup, name: str = "Knee T2 change",
                progress: "Progress | None" = None) -> KneeT2Change:
        progress = as_progress(progress)
        progress(0.0, "Comparing time points")
        base = self.time_point(baseline, "baseline")
        follow = self.time_point(followup, "follow-up")
        change = compare(base, follow)
        table = self.rt.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
        cols = {c: [r[c] for r in change.rows] for c in CHANGE_COLUMNS}
        mrml.table_from_columns(self.rt, table.GetName(), cols, node=table)
        table.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
        table.SetAttribute("MSKQuant.KneeT2Clusters", _to_json(change.clusters_json()))
        by_name = {r["region"]: r for r in change.rows}
        labels = sorted(SUBREGION_NAMES)
        plot_table = self.rt.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} per subregion")
        mrml.table_from_columns(self.rt, plot_table.GetName(), {
            "subregion": [float(l) for l in labels],
            "abbreviation": [SUBREGION_ABBREVIATIONS[l] for l in labels],
            "delta_t2_ms": [by_name[SUBREGION_NAMES[l]]["delta_t2_ms"] for l in labels]}, node=plot_table)
        chart = mrml.plot_chart(self.rt, plot_table, "subregion", ["delta_t2_ms"], f"{name}: T2 change per subregion",
                                "subregion (1 DMA ... 12 SLP)", "change in mean T2 (ms)")
        _bars(chart)
        progress(1.0, "Change done")
        return KneeT2Change(change, table, chart, base, follow)

    # --- export ----------------------------------------------------------------------------------
    def export(self, result: KneeT2Result, folder: Path) -> List[Path]:
        """t2.nii.gz, subregions.nii.gz, subregions.csv, projection.png (the contract) plus knee_t2.json,
        t2_fit_r2.nii.gz, t2_fit_amplitude.nii.gz and t2_loglinear.nii.gz, into an open (staging) folder."""
        from mskquant.cli.common import write_json
        from mskquant.imageio import write_image

        from .pictures import projection_png

        folder = Path(folder)
        q = result.quant
        g = q.geometry
        t2 = mrml.image_from_volume(result.t2_volume, dtype=np.float32)
        shown = np.isfinite(t2.array)
        paths = [
            write_image(t2, folder / "t2.nii.gz"),
            write_image(Image(np.where(shown, q.fit.r2, np.nan).astype(np.float32), g), folder / "t2_fit_r2.nii.gz"),
            write_image(Image(np.where(shown, q.fit.amplitude, np.nan).astype(np.float32), g),
                        folder / "t2_fit_amplitude.nii.gz"),
            write_image(Image(q.subregions.labels.astype(np.uint8), g), folder / "subregions.nii.gz"),
            mrml.write_table_csv(result.table, folder / "subregions.csv"),
            projection_png(q.projection, folder / "projection.png", "T2 projection"),
            write_json(result.summary, folder / "knee_t2.json"),
        ]
        if q.fit.t2_loglinear_ms is not None:
            ll = np.where(q.mask if not q.params.whole_volume else True, q.fit.t2_loglinear_ms, np.nan)
            paths.append(write_image(Image(ll.astype(np.float32), g), folder / "t2_loglinear.nii.gz"))
        return paths

    def export_change(self, change: KneeT2Change, folder: Path) -> List[Path]:
        """change.csv, clusters.json, change.png (into an open folder)."""
        from mskquant.cli.common import write_json

        from .pictures import change_png

        folder = Path(folder)
        return [
            mrml.write_table_csv(change.table, folder / "change.csv"),
            write_json(change.change.clusters_json(), folder / "clusters.json"),
            change_png(change.change, folder / "change.png"),
        ]


def _bars(chart) -> None:
    """Show a chart's series as bars (a bar plot of per-subregion values reads best)."""
    for n in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(n)
        series.SetPlotType(series.PlotTypeBar)


def _to_json(obj) -> str:
    """JSON text for a node attribute (numpy scalars as numbers; NaN kept, json.loads reads it)."""
    return json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o))


def validate_te_text(text: str) -> Optional[List[float]]:
    """Echo times typed in the panel ('' -> None: use the sequence's index values)."""
    from .mese import parse_echo_times

    if not text or not text.strip():
        return None
    return list(validate_echo_times(parse_echo_times(text)))
