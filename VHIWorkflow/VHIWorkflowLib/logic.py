"""VHIWorkflow MRML logic: inputs as Slicer nodes, results as segmentation and table nodes.

Runs the same way inside Slicer, in the ``mskquant vhi`` command and in the tests: it only
needs a :class:`mskquant.headless.SlicerRuntime`. Steps (Hepburn et al. 2.5.1):

1. normal-bone ROI (segment, labelmap, markups ROI box or closed curve(s)) -> mask on the
   STIR grid -> thresholds (:mod:`.thresholds`);
2. disease region: the user's segment/labelmap, else the U-Net ensemble on T1W, mapped
   onto the STIR grid by nearest neighbour when the grids differ;
3. STIR >= thresholds inside the disease region, islands < 4 px removed per slice;
4. one segmentation node with "Disease region", "Normal bone", "Inflammation (sensitive)"
   and "Inflammation (conservative)", plus a hidden copy of the automatic result so the
   radiologist's cleaning in Segment Editor can always be compared or undone;
5. V_HI recomputed from the segments as edited, into a table node (and CSV).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from mskquant import mrml
from mskquant.errors import InputError
from mskquant.headless import SlicerRuntime, current_runtime
from mskquant.image import Geometry, Image, resample_nearest
from mskquant.progress import Progress, as_progress

from .editing import apply_nesting
from .inflammation import (NESTED_IN, SEG_CONSERVATIVE, SEG_DISEASE, SEG_NORMAL, SEG_SENSITIVE, VHI,  # noqa: F401
                           InflammationMasks, segment_inflammation, vhi_of)
from .parameters import VHIParameters
from .tables import ComparisonTables
from .thresholds import Thresholds, thresholds_from_normal_bone

AUTOMATIC_REFERENCE = "MSKQuantAutomaticResult"
STIR_REFERENCE = "MSKQuantSTIR"

_TISSUE = ("SCT", "85756007", "Tissue")
_ALTERED = ("SCT", "49755003", "Morphologically Altered Structure")
_SIJ = ("SCT", "39723000", "Sacroiliac joint")
SEGMENT_STYLE = {
    SEG_DISEASE: ((0.35, 0.55, 0.85), mrml.terminology_entry(_TISSUE, ("SCT", "272673000", "Bone"), _SIJ)),
    SEG_NORMAL: ((0.2, 0.75, 0.3), mrml.terminology_entry(_TISSUE, ("SCT", "14016003", "Bone marrow"),
                                                          ("SCT", "54735007", "Sacrum"))),
    SEG_SENSITIVE: ((1.0, 0.85, 0.1), mrml.terminology_entry(_ALTERED, ("SCT", "79654002", "Edema"), _SIJ)),
    SEG_CONSERVATIVE: ((0.9, 0.1, 0.1), mrml.terminology_entry(_ALTERED, ("SCT", "79654002", "Edema"), _SIJ)),
}


@dataclass
class VHIResult:
    segmentation: object  # vtkMRMLSegmentationNode being cleaned
    automatic: object  # hidden copy of the automatic segmentation
    table: object  # vtkMRMLTableNode with thresholds and V_HI
    thresholds: Thresholds
    vhi: Dict[str, VHI]
    disease_region_source: str  # "model" or "input"
    geometry: Geometry
    timings_s: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)


@dataclass
class VHIInputs:
    """A run's inputs read out of the scene: plain arrays a worker thread may use."""
    stir_volume: object  # the STIR node the run used (the result references it)
    stir: Image
    roi: np.ndarray
    region: Optional[np.ndarray]  # the given disease region, or None: the U-Net predicts it from t1
    t1: Optional[Image]
    params: VHIParameters
    name: str


_describe = mrml.describe_node


class VHILogic(ComparisonTables):
    """V_HI workflow on MRML nodes (the comparison tools come from :class:`.tables.ComparisonTables`)."""

    def __init__(self, runtime: Optional[SlicerRuntime] = None, model_store=None) -> None:
        self.rt = runtime or current_runtime()
        self._model_store = model_store
        self._models_cache: Dict[tuple, list] = {}

    # --- inputs -----------------------------------------------------------------------------
    def stir_image(self, stir_volume) -> Image:
        if stir_volume is None:
            raise InputError("No STIR volume selected: select the STIR image.")
        img = mrml.image_from_volume(stir_volume, dtype=np.float32)
        bad = int((~np.isfinite(img.array)).sum())
        if bad:
            raise InputError(f"The STIR image has {bad} NaN/infinite voxel(s): thresholds and masks would be "
                             f"undefined there; fix or re-export the image.")
        return img

    def region_mask(self, node, geometry: Geometry, segment: Optional[str] = None, what: str = "ROI") -> np.ndarray:
        """A drawn region (segment, labelmap, markups ROI box or closed curve(s)) as a mask on the STIR grid."""
        return mrml.region_mask(node, geometry, segment, what, image_name="STIR")

    # --- disease region ------------------------------------------------------------------
    @property
    def model_store(self):
        if self._model_store is None:
            from mskquant.models import ModelStore

            self._model_store = ModelStore()
        return self._model_store

    def _ensemble(self, params: VHIParameters, progress: Progress):
        from mskquant.device import select_device

        from .disease_region import load_ensemble

        spec = self.model_store.registry.get(params.model_id)
        device = select_device(params.device)
        key = (spec.id, spec.version, str(device))
        if key not in self._models_cache:
            paths = self.model_store.ensure(spec.id, progress)
            self._models_cache[key] = load_ensemble(paths, spec.architecture, device)
        return spec, self._models_cache[key], device

    def check_t1(self, t1_volume, stir_geometry: Geometry) -> Image:
        if t1_volume is None:
            raise InputError("No T1W volume selected: select the T1-weighted image (or give a disease region).")
        t1 = mrml.image_from_volume(t1_volume, dtype=np.float32)
        bad = int((~np.isfinite(t1.array)).sum())
        if bad:
            raise InputError(f"The T1W image has {bad} NaN/infinite voxel(s): the network cannot run on it; "
                             f"fix or re-export the image.")
        if not t1.geometry.same_grid(stir_geometry) and not stir_geometry.overlaps(t1.geometry):
            raise InputError(f"The T1W ({t1.geometry.describe()}) and STIR ({stir_geometry.describe()}) images do not "
                             f"overlap in space: select the T1W and STIR of the same examination.")
        return t1

    def predict_disease_region(self, t1_volume, stir_geometry: Geometry, params: VHIParameters,
                               progress: "Progress | None" = None) -> np.ndarray:
        return self.predict_region_from_image(self.check_t1(t1_volume, stir_geometry), stir_geometry, params, progress)

    def predict_region_from_image(self, t1: Image, stir_geometry: Geometry, params: VHIParameters,
                                  progress: "Progress | None" = None) -> np.ndarray:
        from .disease_region import predict_probability

        progress = as_progress(progress)
        spec, models, device = self._ensemble(params, progress.sub(0.0, 0.05))
        prob = predict_probability(t1.array, t1.geometry, models, device, progress.sub(0.05, 1.0),
                                   divisor=2 ** (len(spec.architecture["params"]["features"]) - 1))
        mask = prob >= params.probability_threshold
        if not t1.geometry.same_grid(stir_geometry):
            mask = resample_nearest(mask, t1.geometry, stir_geometry, fill=False)
        return mask

    # --- the workflow: MRML in (GUI thread), numbers (any thread), MRML out (GUI thread) ---------
    def run(self, stir_volume, normal_roi, t1_volume=None, disease_region=None, params: Optional[VHIParameters] = None,
            normal_roi_segment: Optional[str] = None, disease_region_segment: Optional[str] = None,
            progress: "Progress | None" = None, name: str = "V_HI") -> VHIResult:
        inputs = self.gather(stir_volume, normal_roi, t1_volume, disease_region, params, normal_roi_segment,
                             disease_region_segment, name)
        progress = as_progress(progress)
        result = self.make_result(inputs, self.compute(inputs, progress.sub(0.0, 0.94)))
        progress(1.0, "V_HI done")
        return result

    def gather(self, stir_volume, normal_roi, t1_volume=None, disease_region=None, params=None,
               normal_roi_segment=None, disease_region_segment=None, name: str = "V_HI") -> "VHIInputs":
        """Read every input node into arrays (the only MRML reads of a run)."""
        params = (params or VHIParameters()).validate()
        stir = self.stir_image(stir_volume)
        g = stir.geometry
        roi = self.region_mask(normal_roi, g, normal_roi_segment, "normal-bone ROI")
        region = t1 = None
        if disease_region is not None:
            region = self.region_mask(disease_region, g, disease_region_segment, "disease region")
        else:
            t1 = self.check_t1(t1_volume, g)
        return VHIInputs(stir_volume, stir, roi, region, t1, params, name)

    def compute(self, inputs: "VHIInputs", progress: "Progress | None" = None) -> dict:
        """Thresholds, disease region (the U-Net when none was given) and masks: no MRML, no Qt, so
        the panel runs it in a worker thread."""
        progress = as_progress(progress)
        params, stir, g = inputs.params, inputs.stir, inputs.stir.geometry
        t0 = time.monotonic()
        progress(0.02, "Normal-bone ROI and thresholds")
        thresholds = thresholds_from_normal_bone(stir.array[inputs.roi], params.n_start, params.n_step)
        timings = {"thresholds": time.monotonic() - t0}
        region, source = inputs.region, "input"
        if region is None:
            t1 = time.monotonic()
            region = self.predict_region_from_image(inputs.t1, g, params, progress.sub(0.05, 0.85))
            timings["disease_region"], source = time.monotonic() - t1, "model"
        progress(0.88, "Thresholding and island removal")
        masks = segment_inflammation(stir.array, region, thresholds, g, params.min_island_pixels)
        timings["compute"] = time.monotonic() - t0
        return {"thresholds": thresholds, "region": region, "source": source, "masks": masks, "timings": timings}

    def make_result(self, inputs: "VHIInputs", c: dict) -> VHIResult:
        """The segmentation (and its unedited copy) and the table node (the only MRML writes)."""
        t0 = time.monotonic()
        g, masks, thresholds = inputs.stir.geometry, c["masks"], c["thresholds"]
        warnings = [] if c["region"].any() else [
            "The disease region is empty: V_HI is 0. Check the T1W input or give a disease region."]
        seg, automatic = self._make_segmentations(inputs.name, inputs.stir_volume, g, c["region"], inputs.roi, masks)
        vhi = {"sensitive": vhi_of(masks.sensitive, g), "conservative": vhi_of(masks.conservative, g)}
        table = self.rt.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{inputs.name} table")
        self._fill_table(table, thresholds, vhi, edited=False)
        seg.SetNodeReferenceID("MSKQuantTable", table.GetID())
        timings = dict(c["timings"], total=c["timings"]["compute"] + time.monotonic() - t0)
        return VHIResult(seg, automatic, table, thresholds, vhi, c["source"], g, timings, warnings)

    def _make_segmentations(self, name, stir_volume, g, region, roi, masks: InflammationMasks):
        specs = [mrml.SegmentSpec(n, m, *SEGMENT_STYLE[n]) for n, m in (
            (SEG_DISEASE, region), (SEG_NORMAL, roi), (SEG_SENSITIVE, masks.sensitive),
            (SEG_CONSERVATIVE, masks.conservative))]
        seg = mrml.segmentation_from_masks(self.rt, name, specs, g, stir_volume)
        automatic = mrml.segmentation_from_masks(self.rt, f"{name} (automatic)", specs, g, stir_volume)
        automatic.SetAttribute("MSKQuant.Role", "automatic V_HI result (kept unedited)")
        if automatic.GetDisplayNode() is not None:
            automatic.GetDisplayNode().SetVisibility(False)
        seg.SetNodeReferenceID(AUTOMATIC_REFERENCE, automatic.GetID())
        seg.SetNodeReferenceID(STIR_REFERENCE, stir_volume.GetID())
        # Keep the thresholds with the result (scene save/restore, recompute, export).
        seg.SetAttribute("MSKQuant.Module", "VHIWorkflow")
        return seg, automatic

    # --- after cleaning ---------------------------------------------------------------------
    def recompute(self, seg_node, thresholds: Optional[Thresholds] = None, table=None) -> Dict[str, VHI]:
        """V_HI from the segments as they are now (after cleaning, with the nesting rule applied);
        updates the table node."""
        g = mrml.geometry_of(self.source_volume(seg_node))
        apply_nesting(seg_node, g, SEGMENT_STYLE)
        vhi = {}
        for key, seg_name in (("sensitive", SEG_SENSITIVE), ("conservative", SEG_CONSERVATIVE)):
            vhi[key] = vhi_of(mrml.segment_mask(seg_node, seg_name, g), g)
        table = table or seg_node.GetNodeReference("MSKQuantTable")
        if table is not None:
            if thresholds is None:
                thresholds = self.thresholds_from_table(table)
            self._fill_table(table, thresholds, vhi, edited=self.is_edited(seg_node))
        return vhi

    def source_volume(self, seg_node):
        """The STIR volume the run used (referenced from its segmentation), not what a selector shows now."""
        stir = seg_node.GetNodeReference(STIR_REFERENCE) if seg_node is not None else None
        if stir is None:
            raise InputError(f"Segmentation {_describe(seg_node)} was not made by VHIWorkflow (no STIR reference): "
                             f"run the workflow first.")
        return stir

    def is_edited(self, seg_node) -> bool:
        automatic = seg_node.GetNodeReference(AUTOMATIC_REFERENCE)
        stir = seg_node.GetNodeReference(STIR_REFERENCE)
        if automatic is None or stir is None:
            return False
        g = mrml.geometry_of(stir)
        return any(not np.array_equal(mrml.segment_mask(seg_node, s, g), mrml.segment_mask(automatic, s, g))
                   for s in (SEG_SENSITIVE, SEG_CONSERVATIVE))

    def restore_automatic(self, seg_node) -> None:
        """Undo all cleaning: copy the automatic inflammation segments back."""
        automatic = seg_node.GetNodeReference(AUTOMATIC_REFERENCE)
        stir = seg_node.GetNodeReference(STIR_REFERENCE)
        if automatic is None or stir is None:
            raise InputError(f"Segmentation {_describe(seg_node)} has no automatic result to restore.")
        g = mrml.geometry_of(stir)
        for s in (SEG_DISEASE, SEG_NORMAL, SEG_SENSITIVE, SEG_CONSERVATIVE):
            mrml.set_segment(seg_node, mrml.SegmentSpec(s, mrml.segment_mask(automatic, s, g), *SEGMENT_STYLE[s]), g)

    # --- tables ----------------------------------------------------------------------------
    TABLE_COLUMNS = ("mask", "voxels", "volume_mm3", "volume_ml", "threshold", "threshold_value", "n", "q1", "q3",
                     "iqr", "roi_voxels", "edited")

    def _fill_table(self, table, th: Thresholds, vhi: Dict[str, VHI], edited: bool) -> None:
        rows = [("sensitive", vhi["sensitive"], "L_lower", th.lower), ("conservative", vhi["conservative"], "L_upper",
                                                                        th.upper)]
        cols = {c: [] for c in self.TABLE_COLUMNS}
        for mask, v, tname, tval in rows:
            for c, val in zip(self.TABLE_COLUMNS, (mask, v.voxels, v.volume_mm3, v.volume_ml, tname, tval, th.n, th.q1,
                                                   th.q3, th.iqr, th.n_voxels, int(edited))):
                cols[c].append(val)
        mrml.table_from_columns(self.rt, table.GetName(), cols, node=table)
        for k, v in th.as_dict().items():
            table.SetAttribute(f"MSKQuant.thresholds.{k}", repr(v))

    @staticmethod
    def thresholds_from_table(table) -> Thresholds:
        values = {}
        for f in Thresholds.__dataclass_fields__:
            raw = table.GetAttribute(f"MSKQuant.thresholds.{f}")
            if raw is None:
                raise InputError(f"Table {_describe(table)} holds no VHIWorkflow thresholds: run the workflow first.")
            values[f] = float(raw) if f not in ("n_voxels", "steps") else int(raw)
        return Thresholds(**values)

    def export(self, result: VHIResult, folder: Path) -> List[Path]:
        """Write the (possibly edited) result: CSV table, segmentation, label map (inside an open folder)."""
        from mskquant.imageio import write_image

        g = result.geometry
        s = mrml.segment_mask(result.segmentation, SEG_SENSITIVE, g)
        c = mrml.segment_mask(result.segmentation, SEG_CONSERVATIVE, g)
        label = InflammationMasks(s, c).label_map
        paths = [mrml.write_table_csv(result.table, folder / "vhi.csv"),
                 mrml.save_segmentation(result.segmentation, folder / "inflammation.seg.nrrd"),
                 write_image(Image(label, g), folder / "inflammation.nii.gz")]
        return paths
