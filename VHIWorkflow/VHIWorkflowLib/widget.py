"""The VHIWorkflow panel (GUI layer): reads the form, calls :class:`.logic.VHILogic`, shows results.

Only inside the Slicer application. Run is guarded by the shared progress/cancel controls;
results stay on the STIR grid; "Clean in Segment Editor" hands the segmentation to
Segment Editor, "Recompute V_HI" reads the segments as edited, "Restore automatic result"
undoes all cleaning, "Export" writes CSV, segmentation, label map and an overlay picture.
"""

from __future__ import annotations

import slicer

from mskquant.panel import (RunControls, export_outputs, fill_segment_combo, module_parameter_node, open_segment_editor,
                            show_volume)

from .parameters import VHIParameters


class VHIWorkflowPanel:
    def __init__(self, ui_path: str) -> None:
        self.widget = slicer.util.loadUI(ui_path)
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.widget.setMRMLScene(slicer.mrmlScene)
        self._logic = None
        self.result = None
        self.controls = RunControls(self.ui.runButton, self.ui.cancelButton, self.ui.progressBar, self.ui.statusLabel)
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                    lambda n: fill_segment_combo(self.ui.roiSegmentComboBox, n))
        self.ui.diseaseRegionSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                              lambda n: fill_segment_combo(self.ui.diseaseSegmentComboBox, n))
        self.ui.compareASelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                         lambda n: fill_segment_combo(self.ui.compareASegmentComboBox, n))
        self.ui.compareBSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                         lambda n: fill_segment_combo(self.ui.compareBSegmentComboBox, n))
        self.ui.placeRoiBoxButton.connect("clicked(bool)", lambda *_: self.onPlace("vtkMRMLMarkupsROINode"))
        self.ui.drawCurveButton.connect("clicked(bool)", lambda *_: self.onPlace("vtkMRMLMarkupsClosedCurveNode"))
        self.ui.cleanButton.connect("clicked(bool)", self.onClean)
        self.ui.recomputeButton.connect("clicked(bool)", self.onRecompute)
        self.ui.restoreButton.connect("clicked(bool)", self.onRestore)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self._load_parameters()

    # --- plumbing ---------------------------------------------------------------------------
    def logic(self):
        if self._logic is None:
            from mskquant.dependencies import ensure_dependencies

            ensure_dependencies()
            from .logic import VHILogic

            self._logic = VHILogic()
        return self._logic

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
        pass

    def cleanup(self) -> None:
        self.controls.cancel()

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
        stir = self.ui.stirSelector.currentNode()
        roi = self.ui.roiSelector.currentNode()
        region = self.ui.diseaseRegionSelector.currentNode()
        params = self.parameters()

        def task(progress):
            return self.logic().run(
                stir, roi, self.ui.t1Selector.currentNode(), region, params,
                normal_roi_segment=self.ui.roiSegmentComboBox.currentText or None,
                disease_region_segment=self.ui.diseaseSegmentComboBox.currentText or None,
                progress=progress, name=slicer.mrmlScene.GenerateUniqueName(f"{stir.GetName() if stir else ''} V_HI"))

        result = self.controls.run(task, "V_HI computation failed.")
        if result is None:
            return
        self.result = result
        show_volume(background=stir)
        self._show_result()
        for w in result.warnings:
            slicer.util.warningDisplay(w, windowTitle="VHIWorkflow")

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
        for b in (self.ui.cleanButton, self.ui.recomputeButton, self.ui.restoreButton, self.ui.exportButton):
            b.enabled = True

    def onClean(self, *_):
        if self.result is not None:
            open_segment_editor(self.result.segmentation, self.ui.stirSelector.currentNode())

    def onRecompute(self, *_):
        with slicer.util.tryWithErrorDisplay("Could not recompute V_HI.", waitCursor=True):
            self.result.vhi = self.logic().recompute(self.result.segmentation)
            self._show_result()
            edited = self.logic().is_edited(self.result.segmentation)
            self.ui.statusLabel.text = "V_HI recomputed from the " + ("cleaned" if edited else "automatic") + " segments."

    def onRestore(self, *_):
        if not slicer.util.confirmOkCancelDisplay("Discard all cleaning and restore the automatic segments?"):
            return
        with slicer.util.tryWithErrorDisplay("Could not restore the automatic result.", waitCursor=True):
            self.logic().restore_automatic(self.result.segmentation)
            self.onRecompute()

    def onExport(self, *_):
        folder = self.ui.exportDirectoryLineEdit.currentPath
        if not folder:
            slicer.util.errorDisplay("Choose an export folder first.")
            return
        from .cli import VHI_OUTPUTS
        from .demo import overlay_png
        from .logic import SEG_CONSERVATIVE, SEG_DISEASE, SEG_SENSITIVE
        from mskquant import mrml

        def write(out):
            self.result.vhi = self.logic().recompute(self.result.segmentation)
            self.logic().export(self.result, out.stage)
            g = self.result.geometry
            overlay_png(mrml.image_from_volume(self.ui.stirSelector.currentNode()),
                        mrml.segment_mask(self.result.segmentation, SEG_DISEASE, g),
                        mrml.segment_mask(self.result.segmentation, SEG_SENSITIVE, g),
                        mrml.segment_mask(self.result.segmentation, SEG_CONSERVATIVE, g),
                        out.path("overlay.png"), "V_HI")

        if export_outputs(folder, list(VHI_OUTPUTS) + ["overlay.png"], write):
            self.ui.statusLabel.text = f"Exported to {folder}."

    def onCompare(self, *_):
        from mskquant import mrml

        from .comparison import compare_masks

        a, b = self.ui.compareASelector.currentNode(), self.ui.compareBSelector.currentNode()
        with slicer.util.tryWithErrorDisplay("Comparison failed.", waitCursor=True):
            if a is None or b is None:
                raise ValueError("Select two segmentations to compare.")
            stir = self.ui.stirSelector.currentNode()
            g = mrml.geometry_of(stir) if stir is not None else self.result.geometry
            ma = mrml.segment_mask(a, self.ui.compareASegmentComboBox.currentText, g)
            mb = mrml.segment_mask(b, self.ui.compareBSegmentComboBox.currentText, g)
            c = compare_masks(ma, mb, g)
            self.ui.compareLabel.text = (f"Dice {c.dice:.3f}, Jaccard {c.jaccard:.3f}, volume similarity "
                                         f"{c.volume_similarity:.3f}<br>A {c.volume_a_ml:.3f} mL, B {c.volume_b_ml:.3f} mL")
