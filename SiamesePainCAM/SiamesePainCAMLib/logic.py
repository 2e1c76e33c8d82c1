"""SiamesePainCAM MRML logic: two knee volumes in, a table and two CAM volumes out.

Runs the same way inside Slicer, in ``mskquant pain-cam`` and in the tests; it needs only a
:class:`mskquant.headless.SlicerRuntime`. Chang et al., Methods and Figure 3, on Slicer nodes:

* inputs: the left and right sagittal knee volumes (never modified) and optional centre
  slices;
* a table node with one row per knee: probability that it is the painful one, the verdict,
  the centre slice used (and whether it was given or estimated) and the most pain-relevant
  (max mean CAM) slice;
* one CAM volume per knee on that knee's own grid (same size, spacing, origin, direction),
  values 0..1 on one scale for both knees, with a heat colour map and values below 0.05
  transparent, meant to be shown as the foreground layer over the knee;
* the RAS position of each knee's CAM hot spot on its max-CAM slice, for jumping the slice
  views there; an overlay picture (PNG) and the files of the command line contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from mskquant import mrml, render
from mskquant.errors import InputError
from mskquant.headless import SlicerRuntime, current_runtime
from mskquant.image import Image
from mskquant.progress import Progress, as_progress

from .parameters import DEFAULT_MODEL, OUTPUT_FILES, PAIN_TASK, PainCAMParameters  # noqa: F401  (OUTPUT_FILES: the export's files)
from .pipeline import SIDES, PainModel, PainResult, analyse_pair, load_pain_model

HEAT_COLOR_NODE = "MSKQuant CAM heat"
CAM_THRESHOLD = 0.05
TABLE_COLUMNS = ("knee", "p_painful", "painful", "centre_slice", "centre_source", "max_cam_slice", "max_mean_cam")


@dataclass
class PainCAMResult:
    analysis: PainResult
    table: object  # vtkMRMLTableNode
    cam_volumes: Dict[str, object]  # side -> vtkMRMLScalarVolumeNode
    inputs: Dict[str, object]  # side -> the input volume nodes
    hot_spot_ras: Dict[str, List[float]]
    model: Dict[str, str] = field(default_factory=dict)

    @property
    def p_right_painful(self) -> float:
        return self.analysis.p_right_painful

    @property
    def painful_side(self) -> str:
        return self.analysis.painful_side

    @property
    def warnings(self) -> List[str]:
        return self.analysis.warnings


_describe = mrml.describe_node


class PainCAMLogic:
    """Which knee hurts, on MRML nodes."""

    def __init__(self, runtime: Optional[SlicerRuntime] = None, model_store=None) -> None:
        self.rt = runtime or current_runtime()
        self._model_store = model_store
        self._models: Dict[tuple, PainModel] = {}

    # --- model -------------------------------------------------------------------------------
    @property
    def model_store(self):
        if self._model_store is None:
            from mskquant.models import ModelStore

            self._model_store = ModelStore()
        return self._model_store

    def model(self, params: PainCAMParameters, progress: "Progress | None" = None) -> PainModel:
        """Fetch, verify (SHA-256) and load the model once per id and device."""
        from mskquant.device import select_device

        spec = self.model_store.registry.get(params.model_id)
        if spec.module != "SiamesePainCAM" or spec.task != PAIN_TASK:
            raise InputError(f"Model '{spec.id}' is a {spec.module} {spec.task} model, not a SiamesePainCAM "
                             f"{PAIN_TASK} model: choose a pain model (e.g. {DEFAULT_MODEL}).")
        device = select_device(params.device)
        key = (spec.id, spec.version, str(device))
        if key not in self._models:
            paths = self.model_store.ensure(spec.id, progress)
            self._models[key] = load_pain_model(paths[0], spec.architecture, device, spec.id, spec.version,
                                                spec.files[0].sha256)
        return self._models[key]

    # --- inputs ------------------------------------------------------------------------------
    @staticmethod
    def knee_image(volume, side: str) -> Image:
        if volume is None:
            raise InputError(f"No {side} knee volume selected: select the {side} knee's sagittal series.")
        if not volume.IsA("vtkMRMLScalarVolumeNode") or volume.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError(f"The {side} knee input {_describe(volume)} is not a grey-level volume: select the "
                             f"sagittal MRI series.")
        image = mrml.image_from_volume(volume, dtype=np.float32)
        bad = int(np.count_nonzero(~np.isfinite(image.array)))
        if bad:
            raise InputError(f"The {side} knee input {_describe(volume)} holds {bad} NaN/infinite voxel(s): give the "
                             f"scan as acquired (no NaN or infinite values).")
        if image.array.size and image.array.min() == image.array.max():
            raise InputError(f"The {side} knee input {_describe(volume)} has one intensity everywhere (blank or "
                             f"constant): give the knee's sagittal MRI series.")
        return image

    # --- the workflow: MRML in (GUI thread), numbers (any thread), MRML out (GUI thread) ---------
    def run(self, left_volume, right_volume, params: Optional[PainCAMParameters] = None,
            progress: "Progress | None" = None, name: str = "Pain CAM") -> PainCAMResult:
        progress = as_progress(progress)
        inputs = self.gather(left_volume, right_volume, params, name)
        return self.make_result(inputs, self.compute(inputs, progress.sub(0.0, 0.96)), progress)

    def gather(self, left_volume, right_volume, params: Optional[PainCAMParameters] = None,
               name: str = "Pain CAM") -> dict:
        """Read both knee volumes into arrays (the only MRML reads of a run)."""
        params = (params or PainCAMParameters()).validate()
        if left_volume is not None and left_volume is right_volume:
            raise InputError("The same volume is selected as the left and the right knee: select one series per knee.")
        images = {"left": self.knee_image(left_volume, "left"), "right": self.knee_image(right_volume, "right")}
        if images["left"].geometry.same_grid(images["right"].geometry) and \
                np.array_equal(images["left"].array, images["right"].array):
            raise InputError("The left and the right knee inputs hold the same image: give one scan per knee.")
        return {"volumes": {"left": left_volume, "right": right_volume}, "images": images, "params": params,
                "names": (left_volume.GetName(), right_volume.GetName()), "name": name}

    def compute(self, inputs: dict, progress: "Progress | None" = None):
        """The model and the analysis: no MRML, no Qt, so the panel runs it in a worker thread."""
        progress = as_progress(progress)
        params, images = inputs["params"], inputs["images"]
        model = self.model(params, progress.sub(0.0, 0.05))
        analysis = analyse_pair(model, images["left"], images["right"], params.centre("left"), params.centre("right"),
                                progress.sub(0.05, 1.0), inputs["names"])
        return model, analysis

    def make_result(self, gathered: dict, computed, progress: "Progress | None" = None) -> PainCAMResult:
        """CAM volumes and the table (the only MRML writes)."""
        progress = as_progress(progress)
        model, analysis = computed
        name, inputs = gathered["name"], gathered["volumes"]
        progress(0.96, "Creating the CAM volumes and the table")
        heat = self.heat_color_node()
        cams, hot = {}, {}
        for side in SIDES:
            node = mrml.volume_from_image(self.rt, Image(analysis.cam[side], analysis.geometry[side]),
                                          f"{name} CAM {side}")
            self.show_as_cam(node, heat)
            node.SetAttribute("MSKQuant.Module", "SiamesePainCAM")
            node.SetAttribute("MSKQuant.Knee", side)
            node.SetAttribute("MSKQuant.MaxCamSlice", str(analysis.max_cam_slice[side]))
            node.SetNodeReferenceID("MSKQuantInput", inputs[side].GetID())
            cams[side] = node
            hot[side] = self.hot_spot(analysis, side)
        table = self.rt.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
        self._fill_table(table, analysis)
        table.SetAttribute("MSKQuant.p_right_painful", repr(analysis.p_right_painful))
        table.SetAttribute("MSKQuant.painful_side", analysis.painful_side)
        table.SetAttribute("MSKQuant.model", f"{model.model_id} {model.version}")
        for side in SIDES:
            cams[side].SetNodeReferenceID("MSKQuantTable", table.GetID())
        progress(1.0, f"{analysis.painful_side.capitalize()} knee painful (p right = {analysis.p_right_painful:.3f})")
        return PainCAMResult(analysis, table, cams, inputs, hot,
                             {"id": model.model_id, "version": model.version, "sha256": model.sha256})

    def show_as_cam(self, node, heat=None) -> None:
        """Heat colours on the 0..1 CAM scale; CAM below the floor transparent over the knee."""
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID((heat or self.heat_color_node()).GetID())
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(1.0, 0.5)
        display.SetAutoThreshold(False)
        display.SetLowerThreshold(CAM_THRESHOLD)
        display.SetUpperThreshold(1.0)
        display.SetApplyThreshold(True)

    def heat_color_node(self):
        node = self.rt.scene.GetFirstNodeByName(HEAT_COLOR_NODE)
        if node is None or not node.IsA("vtkMRMLProceduralColorNode"):
            node = mrml.continuous_color_node(self.rt, HEAT_COLOR_NODE, render.colormap_points("heat"))
        return node

    @staticmethod
    def hot_spot(analysis: PainResult, side: str) -> List[float]:
        """RAS (mm) of the CAM maximum on the knee's max-CAM slice (where to jump the views)."""
        return PainCAMLogic.hot_spot_of(analysis.cam[side], analysis.geometry[side],
                                        analysis.prepared[side].frame.slice_axis, analysis.max_cam_slice[side])

    @staticmethod
    def hot_spot_of(cam: np.ndarray, geometry, axis: int, n: int) -> List[float]:
        """RAS (mm) of the maximum of ``cam`` (``[k, j, i]``) on slice ``n`` along array ``axis``."""
        sl = np.take(cam, n, axis=axis)
        a, b = np.unravel_index(int(np.argmax(sl)), sl.shape)
        kji = [0, 0, 0]
        kji[axis] = n
        others = [ax for ax in range(3) if ax != axis]
        kji[others[0]], kji[others[1]] = int(a), int(b)
        ijk = np.array([kji[2], kji[1], kji[0], 1.0])
        return [float(v) for v in (geometry.ijk_to_ras @ ijk)[:3]]

    def _fill_table(self, table, analysis: PainResult) -> None:
        rows = []
        for k, side in enumerate(SIDES):
            p = analysis.p_right_painful if side == "right" else 1.0 - analysis.p_right_painful
            rows.append((side, p, "yes" if analysis.painful_side == side else "no", analysis.prepared[side].centre_slice,
                         analysis.prepared[side].centre_source, analysis.max_cam_slice[side],
                         float(analysis.prediction.evidence[k].max())))
        mrml.table_from_rows(self.rt, table.GetName(), TABLE_COLUMNS, rows, node=table)

    # --- outputs ---------------------------------------------------------------------------------
    def summary(self, result: PainCAMResult) -> Dict:
        out = result.analysis.summary()
        out["model"] = dict(result.model)
        out["software"] = f"mskquant {__import__('mskquant').__version__}"
        return out

    def export(self, result: PainCAMResult, folder: Path, opacity: float = 0.6, extra: Optional[Dict] = None) -> List[Path]:
        """pain.json, pain.csv, cam_left/right.nii.gz (input geometry) and cam_overlay.png in ``folder``
        (an :class:`mskquant.atomic.OutputFolder` stage, so they appear together or not at all)."""
        from mskquant.cli.common import write_json
        from mskquant.imageio import write_image

        from .figures import write_overlay_png

        folder = Path(folder)
        summary = self.summary(result)
        if extra:
            summary.update(extra)
        paths = [write_json(summary, folder / "pain.json"), mrml.write_table_csv(result.table, folder / "pain.csv")]
        for side in SIDES:
            geometry = mrml.geometry_of(result.cam_volumes[side])
            cam = mrml.image_from_volume(result.cam_volumes[side], dtype=np.float32)
            paths.append(write_image(Image(cam.array, geometry), folder / f"cam_{side}.nii.gz"))
        paths.append(write_overlay_png(result.analysis, folder / "cam_overlay.png", opacity))
        return paths
