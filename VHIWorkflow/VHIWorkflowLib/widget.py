"""The VHIWorkflow panel (GUI layer): reads the form, calls :class:`.logic.VHILogic`, shows results.

Only inside the Slicer application. Run reads the inputs on the GUI thread, computes in a
worker thread (thresholds, U-Net, masks) and writes the result nodes back on the GUI thread;
while it runs every other action is disabled and Cancel stops it. Results stay on the STIR grid.
"Clean in Segment Editor" hands the segmentation to Segment Editor with settings that keep the
V_HI segments nested (:class:`.editing.NestedEditing`) and gives the user's settings back when
they come back or recompute; "Recompute V_HI" reads the segments as edited, "Restore automatic
result" undoes all cleaning, "Export" writes CSV, segmentation, label map and an overlay
picture. Clean and Export use the STIR the run used, not the selector's current choice.
"""

from __future__ import annotations

import slicer

from mskquant.panel import (BatchSection, RunControls, SceneObserver, export_outputs, fill_segment_combo, guarded,
                            module_parameter_node, open_segment_editor, show_volume)

from .parameters import VHIParameters


class VHIWorkflowPanel:
    def __init__(self, ui_path: str, logic) -> None:
        self.widget = slicer.util.loadUI(ui_path)
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.widget.setMRMLScene(slicer.mrmlScene)
        self.logic = logic  # the module's thin Logic wrapper; .impl is the VHILogic
        self.result = None
        self.cleaning = None  # the Segment Editor hand-off while it lasts
        ui = self.ui
        self.result_buttons = (ui.cleanButton, ui.recomputeButton, ui.restoreButton, ui.exportButton)
        self.controls = RunControls(ui.cancelButton, ui.progressBar, ui.statusLabel, buttons=(
            ui.runButton, ui.placeRoiBoxButton, ui.drawCurveButton, ui.compareButton) + self.result_buttons)
        ui.runButton.connect("clicked(bool)", self.onRun)
        self.batch = BatchSection("vhi", ui.batchManifestPathLineEdit, ui.batchOutputPathLineEdit, ui.batchRunButton,
                                  ui.batchCancelButton, ui.batchProgressBar, ui.batchStatusLabel)
        for selector, combo in ((ui.roiSelector, ui.roiSegmentComboBox), (ui.diseaseRegionSelector, ui.diseaseSegmentComboBox),
                                (ui.compareASelector, ui.compareASegmentComboBox),
                                (ui.compareBSelector, ui.compareBSegmentComboBox)):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", lambda n, c=combo: fill_segment_combo(c, n))
        ui.placeRoiBoxButton.connect("clicked(bool)", lambda *_: self.onPlace("vtkMRMLMarkupsROINode"))
        ui.drawCurveButton.connect("clicked(bool)", lambda *_: self.onPlace("vtkMRMLMarkupsClosedCurveNode"))
        ui.cleanButton.connect("clicked(bool)", self.onClean)
        ui.recomputeButton.connect("clicked(bool)", self.onRecompute)
        ui.restoreButton.connect("clicked(bool)", self.onRestore)
        ui.exportButton.connect("clicked(bool)", self.onExport)
        ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.scene_observer = SceneObserver(slicer.mrmlScene, self.onSceneClose, self._load_parameters)
        self._set_result_buttons(False)
        self._load_parameters()

    # --- plumbing ---------------------------------------------------------------------------
    def _parameter_node(self):
        return module_parameter_node("VHIWorkflow")

    def _load_parameters(self) -> None:
        p = VHIParameters.load_from_node(self._parameter_node())
        self.ui.minIslandSpinBox.value = p.min_island_pixels
        self.ui.primaryComboBox.currentText = p.primary
        self.ui.deviceComboBox.currentText = p.device

    def parameters(self) -> VHIParameters:
        p = VHIParameters(min_island_pixels=int(self.ui.minIslandSpinBox.value),
                          primary=self.ui.primaryComboBox.currentText, device=self.ui.deviceComboBox.currentText)
        p.validate().save_to_node(self._parameter_node())
        return p

    def enter(self) -> None:
        """Back in the module (e.g. from Segment Editor): the user's editor settings come back and
        the parameters are read again (another module or a loaded scene may have changed them)."""
        self._end_cleaning()
        self._load_parameters()

    def cleanup(self) -> None:
        self.scene_observer.remove()
        self.controls.discard()
        self.batch.discard()
        self._end_cleaning()

    def onSceneClose(self) -> None:
        """The scene is closing: its nodes go, so the result, the hand-off and their buttons go too."""
        self.controls.discard()
        self._end_cleaning()
        self.result = None
        self._set_result_buttons(False)
        self.ui.thresholdsLabel.text = self.ui.vhiLabel.text = ""

    def _set_result_buttons(self, enabled: bool) -> None:
        for b in self.result_buttons:
            b.enabled = enabled

    def _end_cleaning(self) -> None:
        if self.cleaning is not None:
            self.cleaning.end()
            self.cleaning = None

    # --- actions ----------------------------------------------------------------------------
    def onPlace(self, class_name: str) -> None:
        name = "Normal bone box" if class_name.endswith("ROINode") else "Normal bone curve"
        node = slicer.mrmlScene.AddNewNodeByClass(class_name, slicer.mrmlScene.GenerateUniqueName(name))
        node.CreateDefaultDisplayNodes()
        self.ui.roiSelector.setCurrentNode(node)
        markups_logic = slicer.modules.markups.logic()
        markups_logic.SetActiveList(node)
        markups_logic.StartPlaceMode(class_name.endswith("ClosedCurveNode"))
        self.ui.statusLabel.text = ("Click on the STIR image to place the box, then drag its handles."
                                    if class_name.endswith("ROINode") else
                                    "Click points around normal marrow on one STIR slice; right-click to finish.")

    def onRun(self, *_):
        ui = self.ui

        def prepare():  # GUI thread: the form and the input nodes into arrays
            params = self.parameters()
            stir = ui.stirSelector.currentNode()
            name = slicer.mrmlScene.GenerateUniqueName(f"{stir.GetName() if stir else ''} V_HI")
            return self.logic.impl.gather(
                stir, ui.roiSelector.currentNode(), ui.t1Selector.currentNode(), ui.diseaseRegionSelector.currentNode(),
                params, ui.roiSegmentComboBox.currentText or None, ui.diseaseSegmentComboBox.currentText or None, name)

        def compute(inputs, progress):  # worker thread: numbers only
            return inputs, self.logic.impl.compute(inputs, progress)

        def finish(value):  # GUI thread: the result nodes
            inputs, computed = value
            self.result = self.logic.impl.make_result(inputs, computed)
            show_volume(background=inputs.stir_volume)
            self._show_result()
            for w in self.result.warnings:
                slicer.util.warningDisplay(w, windowTitle="VHIWorkflow")

        self.controls.start("V_HI computation failed.", prepare, compute, finish)

    def _show_result(self) -> None:
        r = self.result
        th = r.thresholds
        self.ui.thresholdsLabel.text = (
            f"Normal bone ({th.n_voxels} voxels): Q1 {th.q1:.4g}, Q3 {th.q3:.4g}, IQR {th.iqr:.4g}, n {th.n:.2f}<br>"
            f"L<sub>lower</sub> (sensitive) {th.lower:.4g}; L<sub>upper</sub> (conservative) {th.upper:.4g}")
        primary = self.ui.primaryComboBox.currentText
        lines = []
        for key in ("sensitive", "conservative"):
            v = r.vhi[key]
            tag = " <b>(primary)</b>" if key == primary else ""
            lines.append(f"V<sub>HI</sub> {key}{tag}: {v.volume_ml:.3f} mL = {v.volume_mm3:.1f} mm³ ({v.voxels} voxels)")
        self.ui.vhiLabel.text = "<br>".join(lines)
        self._set_result_buttons(True)

    def onClean(self, *_):
        if self.result is None:
            return
        from .editing import NestedEditing

        def hand_off():
            seg = self.result.segmentation
            editor_node = open_segment_editor(seg, self.logic.impl.source_volume(seg))
            self._end_cleaning()
            self.cleaning = NestedEditing(editor_node, seg)
            self.cleaning.begin()

        guarded("Could not open Segment Editor.", hand_off)

    def _recompute(self) -> None:
        self._end_cleaning()
        logic = self.logic.impl
        self.result.vhi = logic.recompute(self.result.segmentation)
        self._show_result()
        edited = logic.is_edited(self.result.segmentation)
        self.ui.statusLabel.text = "V_HI recomputed from the " + ("cleaned" if edited else "automatic") + " segments."

    def onRecompute(self, *_):
        if self.result is not None:
            guarded("Could not recompute V_HI.", self._recompute)

    def onRestore(self, *_):
        if self.result is None or not slicer.util.confirmOkCancelDisplay(
                "Discard all cleaning and restore the automatic segments?"):
            return

        def restore():
            self._end_cleaning()
            self.logic.impl.restore_automatic(self.result.segmentation)
            self._recompute()

        guarded("Could not restore the automatic result.", restore)

    def onExport(self, *_):
        folder = self.ui.exportDirectoryLineEdit.currentPath
        if not folder or self.result is None:
            slicer.util.errorDisplay("Run V_HI and choose an export folder first.")
            return
        from .cli import VHI_OUTPUTS
        from .demo import overlay_png
        from .logic import SEG_CONSERVATIVE, SEG_DISEASE, SEG_SENSITIVE
        from mskquant import mrml

        result, logic = self.result, self.logic.impl

        def write(out):
            result.vhi = logic.recompute(result.segmentation)
            logic.export(result, out.stage)
            g = result.geometry
            stir = logic.source_volume(result.segmentation)  # the run's STIR, not the selector's
            overlay_png(mrml.image_from_volume(stir),
                        *(mrml.segment_mask(result.segmentation, s, g) for s in (SEG_DISEASE, SEG_SENSITIVE,
                                                                                   SEG_CONSERVATIVE)),
                        out.path("overlay.png"), "V_HI")

        if export_outputs(folder, list(VHI_OUTPUTS) + ["overlay.png"], write):
            self.ui.statusLabel.text = f"Exported to {folder}."

    def onCompare(self, *_):
        from mskquant import mrml

        from .comparison import compare_masks

        a, b = self.ui.compareASelector.currentNode(), self.ui.compareBSelector.currentNode()

        def compare():
            if a is None or b is None:
                raise ValueError("Select two segmentations to compare.")
            stir = self.ui.stirSelector.currentNode()
            if stir is None and self.result is None:
                raise ValueError("Select the STIR image the segmentations were drawn on.")
            g = mrml.geometry_of(stir) if stir is not None else self.result.geometry
            ma = mrml.segment_mask(a, self.ui.compareASegmentComboBox.currentText, g)
            mb = mrml.segment_mask(b, self.ui.compareBSegmentComboBox.currentText, g)
            c = compare_masks(ma, mb, g)
            self.ui.compareLabel.text = (f"Dice {c.dice:.3f}, Jaccard {c.jaccard:.3f}, volume similarity "
                                         f"{c.volume_similarity:.3f}<br>A {c.volume_a_ml:.3f} mL, B {c.volume_b_ml:.3f} mL")

        guarded("Comparison failed.", compare)
