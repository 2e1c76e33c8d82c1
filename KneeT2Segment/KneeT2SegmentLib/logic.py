"""KneeT2Segment MRML logic: MESE sequences and cartilage segments in, T2 maps, subregion
segments, tables and plots out.

Runs the same way inside Slicer, in the ``mskquant knee-*`` commands and in the tests: it
only needs a :class:`mskquant.headless.SlicerRuntime`. Steps (Thomas et al. 2.5-2.6):

1. the MESE series: a sequence node whose index values are the echo times (what Slicer makes
   of a multi-echo DICOM series or a 4D file), validated by :mod:`.mese`;
2. the femoral cartilage mask: the user's segment (resampled onto the MESE grid) or labelmap
   (which must be on the MESE grid); without one, the automatic segmentation
   (:mod:`.segmentation`, Thomas et al. 2.3-2.5) through :meth:`KneeT2Logic.segment_cartilage`.
   :meth:`KneeT2Logic.segment` makes it a segmentation node ("Femoral cartilage") the user can
   edit in Segment Editor before quantifying, with a hidden unedited copy: running again never
   overwrites it, and results record whether the segment was edited;
3. :func:`.quantify.quantify`: noise-corrected T2 fit, refinement, 12 subregions, statistics;
4. nodes: a T2 map volume with a 0-100 ms colour map, a segmentation with the 12 named
   subregions, a table (the CSV contract's columns) and a bar plot of the subregion means;
   the result summary (incl. projection maps) rides on the table node so that two results in
   a saved scene can be compared later;
5. change over time between two results: a table and plot of Delta T2 per subregion and the
   focal clusters of the aligned projection maps (:mod:`.change`);
6. agreement between two segmentations (model vs reader, reader vs reader; :mod:`.agreement`,
   Thomas et al. 2.6): Dice, Jaccard and per-region mean T2 of one scan, and Spearman, MAE,
   bias and Bland-Altman limits over a set of scans, as table and plot nodes.
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

from .agreement import SCAN_COLUMNS, SET_COLUMNS, ScanAgreement, SetAgreement, agreement_over_scans, compare_scan
from .change import CHANGE_COLUMNS, ChangeResult, TimePoint, compare
from .mese import MeseSeries, make_series, normalize_laterality, read_mese, validate_echo_times
from .parameters import KneeT2Parameters
from .quantify import Quantification, quantify, resolve_laterality
from .subregions import CSV_COLUMNS, SUBREGION_ABBREVIATIONS, SUBREGION_COLORS, SUBREGION_NAMES

T2_COLOR_NODE = "MSKQuant T2 (0-100 ms)"
RESULT_ATTRIBUTE = "MSKQuant.KneeT2Result"
SUMMARY_ATTRIBUTE = "MSKQuant.KneeT2Summary"
LATERALITY_ATTRIBUTE = "MSKQuant.Laterality"
MODULE_ATTRIBUTE = "MSKQuant.Module"

CARTILAGE_SEGMENT = "Femoral cartilage"
CARTILAGE_COLOR = (0.2, 0.75, 0.95)
AUTOMATIC_REFERENCE = "MSKQuantAutomaticCartilage"
SEGMENTATION_ATTRIBUTE = "MSKQuant.KneeCartilageSegmentation"


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
class KneeSegmentation:
    """The automatic cartilage segmentation as nodes: an editable segmentation and its hidden original."""

    segmentation: object  # vtkMRMLSegmentationNode with the "Femoral cartilage" segment (edit this one)
    automatic: object  # hidden copy, never edited
    result: object  # segmentation.CartilageSegmentation
    summary: dict


@dataclass
class KneeAgreement:
    scan: ScanAgreement
    table: object  # per-region mean T2 from A and B (SCAN_COLUMNS); Dice/Jaccard as attributes
    plot: object


@dataclass
class KneeT2Change:
    change: ChangeResult
    table: object
    plot: object
    baseline: TimePoint
    followup: TimePoint


_describe = mrml.describe_node


def t2_color_points(vmax: float = 100.0):
    return [(p * vmax, rgb) for p, rgb in render.colormap_points("t2")]


class KneeT2Logic:
    """Knee cartilage T2 quantification on MRML nodes."""

    def __init__(self, runtime: Optional[SlicerRuntime] = None,
                 segmenter: Optional[Callable[[MeseSeries, Progress], np.ndarray]] = None, model_store=None) -> None:
        self.rt = runtime or current_runtime()
        self.segmenter = segmenter
        self._model_store = model_store

    @property
    def model_store(self):
        if self._model_store is None:
            from mskquant.models import ModelStore

            self._model_store = ModelStore()
        return self._model_store

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

    def segmentation_model(self, params: Optional[KneeT2Parameters] = None, progress: "Progress | None" = None):
        """The cartilage network of ``params.model_id``, fetched, verified and loaded (cached)."""
        from .segmentation import load_model

        params = (params or KneeT2Parameters()).validate()
        return load_model(params.model_id, params.device, store=self.model_store, progress=progress)

    def auto_segment(self, series: MeseSeries, params: Optional[KneeT2Parameters] = None,
                     progress: "Progress | None" = None):
        """:func:`.segmentation.segment` with the parameters' model and T2 fit settings."""
        from .segmentation import segment

        params = (params or KneeT2Parameters()).validate()
        progress = as_progress(progress)
        model = self.segmentation_model(params, progress.sub(0.0, 0.02))
        settings = params.fit_settings()
        return segment(series, model, settings, progress.sub(0.02, 1.0), params.precision)

    def segment_cartilage(self, series: MeseSeries, progress: "Progress | None" = None,
                          params: Optional[KneeT2Parameters] = None) -> np.ndarray:
        """Automatic femoral cartilage segmentation as a mask on the MESE grid.

        ``segmenter(series, progress) -> bool mask`` given to the constructor replaces the
        network (tests, other methods).
        """
        if self.segmenter is not None:
            return np.asarray(self.segmenter(series, as_progress(progress)), bool)
        return self.auto_segment(series, params, progress).mask

    def segment(self, mese, params: Optional[KneeT2Parameters] = None, progress: "Progress | None" = None,
                name: str = "Knee cartilage") -> KneeSegmentation:
        """Segment the femoral cartilage into a new, editable segmentation node (never reusing one).

        The segment "Femoral cartilage" can be edited in Segment Editor and then quantified with
        :meth:`run` (``mask_node`` = this node); a hidden copy keeps the automatic result.
        """
        params = (params or KneeT2Parameters()).validate()
        progress = as_progress(progress)
        series = mese if isinstance(mese, MeseSeries) else self.mese_from_node(mese)
        res = self.auto_segment(series, params, progress.sub(0.0, 0.95))  # numbers only (a worker may run it)
        progress(0.96, "Creating the cartilage segmentation")
        seg = self.segmentation_nodes(series, res, name, None if isinstance(mese, MeseSeries) else mese)
        progress(1.0, "Cartilage segmented")
        return seg

    def segmentation_nodes(self, series: MeseSeries, res, name: str, mese_node=None) -> KneeSegmentation:
        """The editable segmentation and its hidden automatic copy from a segmentation result."""
        g = series.geometry
        spec = mrml.SegmentSpec(CARTILAGE_SEGMENT, res.mask, CARTILAGE_COLOR)
        name = self.rt.scene.GenerateUniqueName(name)
        seg = mrml.segmentation_from_masks(self.rt, name, [spec], g)
        automatic = mrml.segmentation_from_masks(self.rt, f"{name} (automatic)", [spec], g)
        automatic.SetAttribute("MSKQuant.Role", "automatic cartilage segmentation (kept unedited)")
        if automatic.GetDisplayNode() is not None:
            automatic.GetDisplayNode().SetVisibility(False)
        summary = {**res.summary(), "source": series.source,
                   "grid": {"shape_ijk": list(g.shape_ijk), "ijk_to_ras": g.ijk_to_ras.tolist()}}
        for node in (seg, automatic):
            node.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
            node.SetAttribute(SEGMENTATION_ATTRIBUTE, _to_json(summary))
        seg.SetNodeReferenceID(AUTOMATIC_REFERENCE, automatic.GetID())
        if mese_node is not None:
            seg.SetNodeReferenceID("MSKQuantMESE", mese_node.GetID())
        return KneeSegmentation(seg, automatic, res, summary)

    @staticmethod
    def automatic_of(seg_node):
        return seg_node.GetNodeReference(AUTOMATIC_REFERENCE) if seg_node is not None else None

    def is_edited(self, seg_node, geometry=None) -> bool:
        """Whether the cartilage segment differs from the automatic result it started from."""
        automatic = self.automatic_of(seg_node)
        if automatic is None:
            return False
        g = geometry or self._segment_geometry(automatic)
        return not np.array_equal(mrml.segment_mask(seg_node, CARTILAGE_SEGMENT, g),
                                  mrml.segment_mask(automatic, CARTILAGE_SEGMENT, g))

    @staticmethod
    def _segment_geometry(seg_node):
        summary = json.loads(seg_node.GetAttribute(SEGMENTATION_ATTRIBUTE) or "{}")
        grid = summary.get("grid")
        if grid:
            from mskquant.image import Geometry

            return Geometry(tuple(grid["shape_ijk"]), np.asarray(grid["ijk_to_ras"]))
        raise InputError(f"Segmentation {_describe(seg_node)} was not made by KneeT2Segment's Segment step.")

    def restore_automatic(self, seg_node) -> None:
        """Undo all editing: copy the automatic cartilage segment back."""
        automatic = self.automatic_of(seg_node)
        if automatic is None:
            raise InputError(f"Segmentation {_describe(seg_node)} has no automatic result to restore.")
        g = self._segment_geometry(automatic)
        mask = mrml.segment_mask(automatic, CARTILAGE_SEGMENT, g)
        mrml.set_segment(seg_node, mrml.SegmentSpec(CARTILAGE_SEGMENT, mask, CARTILAGE_COLOR), g,
                         mrml.find_segment_id(seg_node, CARTILAGE_SEGMENT))

    # --- the workflow ---------------------------------------------------------------------------
    def run(self, mese, mask_node=None, segment: Optional[str] = None, params: Optional[KneeT2Parameters] = None,
            progress: "Progress | None" = None, name: str = "Knee T2", mask: Optional[np.ndarray] = None
            ) -> KneeT2Result:
        """Quantify one MESE series (a sequence node or a :class:`MeseSeries`).

        The cartilage comes from ``mask_node`` (+ ``segment``), else ``mask``, else the automatic
        segmentation hook. Three steps, so a panel can run the middle one in a worker thread:
        :meth:`gather` (MRML reads), :meth:`compute` (numbers only), :meth:`make_result` (MRML writes).
        """
        progress = as_progress(progress)
        inputs = self.gather(mese, mask_node, segment, params, name, mask)
        return self.make_result(inputs, self.compute(inputs, progress.sub(0.0, 0.92)), progress)

    def gather(self, mese, mask_node=None, segment: Optional[str] = None, params: Optional[KneeT2Parameters] = None,
               name: str = "Knee T2", mask: Optional[np.ndarray] = None) -> dict:
        params = (params or KneeT2Parameters()).validate()
        series = mese if isinstance(mese, MeseSeries) else self.mese_from_node(mese)
        resolve_laterality(series, params.laterality)  # before any long step: medial/lateral needs it
        inputs = {"series": series, "params": params, "name": name, "cart": None, "source": "",
                  "segmentation_info": None, "t0": time.monotonic()}
        if mask_node is not None:
            inputs["cart"], inputs["source"] = self.cartilage_mask(mask_node, segment, series), _describe(mask_node)
            raw = mask_node.GetAttribute(SEGMENTATION_ATTRIBUTE) if mask_node.IsA("vtkMRMLSegmentationNode") else None
            if raw:  # made by segment(): say whether the user edited it
                edited = self.is_edited(mask_node, series.geometry)
                inputs["segmentation_info"] = {**json.loads(raw), "edited": edited}
                inputs["source"] += " (automatic, edited)" if edited else " (automatic, not edited)"
        elif mask is not None:  # an Image (checked against the MESE grid) or an array on it
            inputs["cart"], inputs["source"] = mask, "given mask"
        return inputs

    def compute(self, inputs: dict, progress: "Progress | None" = None) -> dict:
        """Automatic segmentation when no cartilage was given, T2 fit and subregions: no MRML."""
        progress = as_progress(progress)
        series, params = inputs["series"], inputs["params"]
        cart, source, info, auto = inputs["cart"], inputs["source"], inputs["segmentation_info"], None
        if cart is None and self.segmenter is not None:
            cart, source = self.segment_cartilage(series, progress.sub(0.0, 0.3), params), "automatic"
        elif cart is None:
            auto = self.auto_segment(series, params, progress.sub(0.0, 0.5))
            cart, source = auto.mask, f"automatic ({auto.model_id})"
            info = {**auto.summary(), "edited": False}
        if auto is not None:  # the segmentation fitted its candidate voxels already
            fitted = auto.probability > auto.thresholds.fit_probability
            quant = quantify(series, cart, params, progress.sub(0.5, 1.0), fit=auto.fit, fitted=fitted)
            quant.warnings[:0] = auto.warnings
        else:
            quant = quantify(series, cart, params, progress.sub(0.0 if inputs["cart"] is not None else 0.3, 1.0))
        return {"quant": quant, "source": source, "segmentation_info": info,
                "segmentation_s": auto.timings_s["total"] if auto else None}

    def make_result(self, inputs: dict, c: dict, progress: "Progress | None" = None) -> KneeT2Result:
        progress = as_progress(progress)
        progress(0.92, "Creating nodes")
        quant = c["quant"]
        result = self._make_nodes(quant, inputs["name"], c["source"])
        if c["segmentation_info"] is not None:
            result.summary["segmentation"] = c["segmentation_info"]
            result.table.SetAttribute(SUMMARY_ATTRIBUTE, _to_json(result.summary))
        result.timings_s = {**quant.timings_s, **({"segmentation": c["segmentation_s"]} if c["segmentation_s"] else {}),
                            "total": time.monotonic() - inputs["t0"]}
        progress(1.0, "Knee T2 done")
        return result

    def t2_color_node(self):
        """The 0-100 ms T2 colour map (one node per scene)."""
        return self._t2_color_node()

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
        table = mrml.table_from_rows(self.rt, f"{name} table", CSV_COLUMNS, (r.as_row() for r in quant.rows))
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


    # --- agreement between two segmentations (Thomas et al. 2.6) ----------------------------------
    def compare_segmentations(self, mese, node_a=None, node_b=None, segment_a: Optional[str] = None,
                              segment_b: Optional[str] = None, params: Optional[KneeT2Parameters] = None,
                              name: str = "Cartilage agreement", progress: "Progress | None" = None,
                              mask_a=None, mask_b=None) -> KneeAgreement:
        """Segmentation A (the reference, e.g. Reader 1) against B (a reader, or the model when B is not given).

        :meth:`gather_agreement` (MRML reads), :meth:`compute_agreement` (numbers only),
        :meth:`agreement_nodes` (MRML writes), so a panel can run the middle step in a worker thread."""
        progress = as_progress(progress)
        inputs = self.gather_agreement(mese, node_a, node_b, segment_a, segment_b, params, mask_a, mask_b)
        scan = self.compute_agreement(inputs, name, progress.sub(0.0, 0.95))
        agreement = self.agreement_nodes(scan, inputs["b_name"], name)
        progress(1.0, f"Agreement: Dice {scan.dice:.3f}")
        return agreement

    def gather_agreement(self, mese, node_a=None, node_b=None, segment_a=None, segment_b=None, params=None,
                         mask_a=None, mask_b=None) -> dict:
        params = (params or KneeT2Parameters()).validate()
        series = mese if isinstance(mese, MeseSeries) else self.mese_from_node(mese)
        if node_a is None and mask_a is None:
            raise InputError("No reference segmentation (A) selected: select the reader's femoral cartilage segment or "
                             "labelmap.")
        a = mask_a if mask_a is not None else self.cartilage_mask(node_a, segment_a, series)
        if node_b is not None:
            b, b_name = self.cartilage_mask(node_b, segment_b, series), node_b.GetName()
        elif mask_b is not None:
            b, b_name = mask_b, "B"
        else:
            b, b_name = None, f"model {params.model_id}"
        return {"series": series, "params": params, "a": a, "b": b, "b_name": b_name}

    def compute_agreement(self, inputs: dict, name: str, progress: "Progress | None" = None) -> ScanAgreement:
        progress = as_progress(progress)
        series, params, b = inputs["series"], inputs["params"], inputs["b"]
        if b is None:  # the model is B
            b = self.segment_cartilage(series, progress.sub(0.0, 0.5), params)
        return compare_scan(series, inputs["a"], b, params, name, progress.sub(0.5, 1.0))

    def agreement_nodes(self, scan: ScanAgreement, b_name: str, name: str) -> KneeAgreement:
        table = mrml.table_from_rows(self.rt, f"{name} table", SCAN_COLUMNS, scan.rows())
        table.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
        for key in ("dice", "jaccard", "voxels_a", "voxels_b", "volume_a_ml", "volume_b_ml"):
            table.SetAttribute(f"MSKQuant.Agreement.{key}", repr(float(getattr(scan, key))))
        table.SetAttribute("MSKQuant.Agreement.b", b_name)
        labels = sorted(SUBREGION_NAMES)
        plot_table = self.rt.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} per subregion")
        mrml.table_from_columns(self.rt, plot_table.GetName(), {
            "subregion": [float(l) for l in labels],
            "abbreviation": [SUBREGION_ABBREVIATIONS[l] for l in labels],
            "mean_t2_a_ms": [scan.mean_t2_a[SUBREGION_NAMES[l]] for l in labels],
            "mean_t2_b_ms": [scan.mean_t2_b[SUBREGION_NAMES[l]] for l in labels]}, node=plot_table)
        chart = mrml.plot_chart(self.rt, plot_table, "subregion", ["mean_t2_a_ms", "mean_t2_b_ms"],
                                f"{name}: mean T2 per subregion (Dice {scan.dice:.3f})", "subregion (1 DMA ... 12 SLP)",
                                "mean T2 (ms)")
        _bars(chart)
        return KneeAgreement(scan, table, chart)

    def agreement_table(self, scans: Sequence[ScanAgreement], name: str = "Cartilage agreement over scans",
                        region: str = "All"):
        """Per region over the scans (Spearman, MAE, bias, limits) -> (statistics, table node, Bland-Altman chart)."""
        agreement = agreement_over_scans(scans)
        table = mrml.table_from_rows(self.rt, f"{name} table", SET_COLUMNS, (r.as_row() for r in agreement.regions))
        table.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
        table.SetAttribute("MSKQuant.Agreement.mean_dice", repr(agreement.mean_dice))
        table.SetAttribute("MSKQuant.Agreement.mean_jaccard", repr(agreement.mean_jaccard))
        reg = agreement.region(region)
        n = reg.n_scans
        ba = self.rt.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} Bland-Altman {region}")
        mrml.table_from_columns(self.rt, ba.GetName(), {
            "scan": reg.scan_names, "mean_ms": list(map(float, (reg.a + reg.b) / 2.0)),
            "difference_ms": list(map(float, reg.b - reg.a)), "bias_ms": [reg.bias_ms] * n,
            "lower_limit_ms": [reg.lower_limit_ms] * n, "upper_limit_ms": [reg.upper_limit_ms] * n}, node=ba)
        chart = mrml.plot_chart(self.rt, ba, "mean_ms", ["difference_ms"], f"{name}: Bland-Altman, {region}",
                                "mean T2 of A and B (ms)", "B - A (ms)", kind="scatter")
        mrml.add_plot_series(self.rt, chart, ba, "mean_ms", ["bias_ms", "lower_limit_ms", "upper_limit_ms"], name,
                             kind="line")
        return agreement, table, chart

    def export_agreement(self, agreement: KneeAgreement, folder: Path) -> List[Path]:
        """agreement.csv, agreement.json, agreement.png and overlay.png of one scan (into an open folder)."""
        from mskquant.cli.common import write_json

        from .pictures import agreement_png, segmentation_overlay_png

        folder = Path(folder)
        scan = agreement.scan
        q = scan.quant_a
        return [mrml.write_table_csv(agreement.table, folder / "agreement.csv"),
                write_json(scan.as_dict(), folder / "agreement.json"),
                agreement_png(scan, folder / "agreement.png"),
                segmentation_overlay_png(q.series.echoes.array[min(1, q.series.n_echoes - 1)],
                                         [scan.quant_a.refined, scan.quant_b.refined], q.series.geometry,
                                         folder / "overlay.png",
                                         title=f"A (blue) vs B (orange outline): Dice {scan.dice:.3f}")]

    def export_agreement_set(self, agreement: SetAgreement, table, folder: Path) -> List[Path]:
        """scans.csv, agreement.csv, agreement.json and Bland-Altman PNGs (all, deep, superficial)."""
        from mskquant.cli.common import write_json

        from .pictures import bland_altman_png

        folder = Path(folder)
        header = ["scan", "dice", "jaccard", "voxels_a", "voxels_b"]
        header += [f"{r} {side}" for r in SUBREGION_NAMES.values() for side in ("a_ms", "b_ms")]
        rows = ([s.name, s.dice, s.jaccard, s.voxels_a, s.voxels_b]
                + [v for r in SUBREGION_NAMES.values() for v in (s.mean_t2_a[r], s.mean_t2_b[r])]
                for s in agreement.scans)
        paths = [mrml.write_rows_csv(folder / "scans.csv", header, rows),
                 mrml.write_table_csv(table, folder / "agreement.csv"),
                 write_json(agreement.as_dict(), folder / "agreement.json")]
        for region in ("All", "Deep", "Superficial"):
            paths.append(bland_altman_png(agreement.region(region), folder / f"bland_altman_{region.lower()}.png"))
        return paths


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
