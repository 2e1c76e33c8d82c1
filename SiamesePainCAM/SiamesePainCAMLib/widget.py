"""SiamesePainCAM panel (GUI layer: runs only inside the Slicer application).

Select the left and right sagittal knee volumes, optionally their centre (PCL) slices
(-1 = estimate), and Run: the table gives the probability and the painful side; "Show left" /
"Show right" put that knee in the background, its CAM in the foreground (heat colours,
opacity from the slider) and jump every slice view to the CAM hot spot on the most
pain-relevant slice; "Export" writes the command-line files and the overlay PNG.
No computation happens here: the panel calls :class:`SiamesePainCAMLib.logic.PainCAMLogic`.
Run reads the volumes on the GUI thread, computes in a worker thread and writes the CAM volumes
back on the GUI thread; meanwhile every other action is disabled. Closing the scene drops the result.
"""

from __future__ import annotations


import slicer

from mskquant.panel import BatchSection, RunControls, SceneObserver, export_outputs, module_parameter_node, show_volume

from .parameters import AUTO, DEFAULT_MODEL, PAIN_TASK, PainCAMParameters


class SiamesePainCAMPanel:
    def __init__(self, ui_path: str, logic) -> None:
        self.widget = slicer.util.loadUI(ui_path)
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.widget.setMRMLScene(slicer.mrmlScene)
        self.logic = logic  # the module's thin Logic wrapper; .impl is the PainCAMLogic
        self.result = None
        self.result_buttons = (self.ui.showLeftButton, self.ui.showRightButton, self.ui.exportButton)
        self.controls = RunControls(self.ui.cancelButton, self.ui.progressBar, self.ui.statusLabel,
                                    buttons=(self.ui.runButton,) + self.result_buttons)
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        ui = self.ui
        self.batch = BatchSection("pain-cam", ui.batchManifestPathLineEdit, ui.batchOutputPathLineEdit, ui.batchRunButton,
                                  ui.batchCancelButton, ui.batchProgressBar, ui.batchStatusLabel)
        self.ui.showLeftButton.connect("clicked(bool)", lambda *_: self.showKnee("left"))
        self.ui.showRightButton.connect("clicked(bool)", lambda *_: self.showKnee("right"))
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacity)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self._fill_models()
        self.scene_observer = SceneObserver(slicer.mrmlScene, self.onSceneClose, self._load_parameters)
        self._set_result_buttons(False)
        self._load_parameters()

    # --- plumbing ---------------------------------------------------------------------------
    def _set_result_buttons(self, enabled: bool) -> None:
        for b in self.result_buttons:
            b.enabled = enabled

    def _fill_models(self) -> None:
        combo = self.ui.modelComboBox
        combo.clear()
        try:
            from mskquant.models import ModelRegistry

            ids = [s.id for s in ModelRegistry().specs() if s.module == "SiamesePainCAM" and s.task == PAIN_TASK]
        except Exception:  # a broken user registry must not break the panel; Run reports it
            ids = []
        for model_id in ids or [DEFAULT_MODEL]:
            combo.addItem(model_id)

    def _parameter_node(self):
        return module_parameter_node("SiamesePainCAM")

    def _load_parameters(self) -> None:
        p = PainCAMParameters.load_from_node(self._parameter_node())
        self.ui.leftCentreSpinBox.value = p.centre_left
        self.ui.rightCentreSpinBox.value = p.centre_right
        self.ui.deviceComboBox.currentText = p.device
        idx = self.ui.modelComboBox.findText(p.model_id)
        if idx >= 0:
            self.ui.modelComboBox.setCurrentIndex(idx)
        self.ui.opacitySlider.value = p.overlay_opacity

    def parameters(self) -> PainCAMParameters:
        p = PainCAMParameters(model_id=self.ui.modelComboBox.currentText or DEFAULT_MODEL,
                              device=self.ui.deviceComboBox.currentText,
                              centre_left=int(self.ui.leftCentreSpinBox.value),
                              centre_right=int(self.ui.rightCentreSpinBox.value),
                              overlay_opacity=float(self.ui.opacitySlider.value))
        p.validate().save_to_node(self._parameter_node())
        return p

    def enter(self) -> None:
        self._load_parameters()  # another module or a loaded scene may have changed them

    def cleanup(self) -> None:
        self.scene_observer.remove()
        self.controls.discard()
        self.batch.discard()

    def onSceneClose(self) -> None:
        self.controls.discard()
        self.result = None
        self._set_result_buttons(False)
        self.ui.resultLabel.text = ""

    # --- actions ----------------------------------------------------------------------------
    def onRun(self, *_):
        ui = self.ui

        def prepare():  # GUI thread: the form and both knee volumes into arrays
            return self.logic.impl.gather(ui.leftSelector.currentNode(), ui.rightSelector.currentNode(),
                                          self.parameters(), slicer.mrmlScene.GenerateUniqueName("Pain CAM"))

        def compute(inputs, progress):  # worker thread: model and CAMs, numbers only
            return inputs, self.logic.impl.compute(inputs, progress)

        def finish(value):  # GUI thread: CAM volumes and table
            self._finish_run(self.logic.impl.make_result(*value))

        self.controls.start("Knee-pain CAM failed.", prepare, compute, finish)

    def _finish_run(self, result) -> None:
        self.result = result
        self._show_result()
        self.showKnee(result.painful_side)
        for w in result.warnings:
            slicer.util.warningDisplay(w, windowTitle="SiamesePainCAM")

    def _show_result(self) -> None:
        r = self.result
        a = r.analysis
        lines = [f"<b>{a.painful_side.capitalize()} knee painful</b>: P(right painful) = {a.p_right_painful:.3f}"]
        for side in ("left", "right"):
            pk = a.prepared[side]
            centre = f"{pk.centre_slice} ({pk.centre_source})"
            lines.append(f"{side.capitalize()}: centre slice {centre}, most pain-relevant slice {a.max_cam_slice[side]}")
        lines.append("Trained on simulated pairs; not validated on real scans." if r.model.get("id") == DEFAULT_MODEL
                     else f"Model {r.model.get('id')} {r.model.get('version')}")
        self.ui.resultLabel.text = "<br>".join(lines)
        self.ui.resultTableView.setMRMLTableNode(r.table)
        self._set_result_buttons(True)
        if self.ui.leftCentreSpinBox.value == AUTO:
            self.ui.statusLabel.text += f" Estimated centre slices: left {a.prepared['left'].centre_slice}, right " \
                                        f"{a.prepared['right'].centre_slice}."

    def showKnee(self, side: str) -> None:
        """That knee with its CAM overlaid; every slice view jumps to the CAM hot spot."""
        if self.result is None:
            return
        r = self.result
        show_volume(background=r.inputs[side], foreground=r.cam_volumes[side],
                    foreground_opacity=float(self.ui.opacitySlider.value), fit=True)
        ras = r.hot_spot_ras[side]
        slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, ras[0], ras[1], ras[2],
                                              slicer.vtkMRMLSliceNode.CenteredJumpSlice)
        self.ui.statusLabel.text = (f"{side.capitalize()} knee, slice {r.analysis.max_cam_slice[side]} "
                                    f"(highest mean CAM).")

    def onOpacity(self, value) -> None:
        if self.result is not None:
            slicer.util.setSliceViewerLayers(foregroundOpacity=float(value))

    def onExport(self, *_):
        folder = self.ui.exportDirectoryLineEdit.currentPath
        if not folder or self.result is None:
            slicer.util.errorDisplay("Run and choose an export folder first.")
            return
        from .logic import OUTPUT_FILES

        opacity = float(self.ui.opacitySlider.value)
        if export_outputs(folder, OUTPUT_FILES, lambda out: self.logic.impl.export(self.result, out.stage, opacity=opacity)):
            self.ui.statusLabel.text = f"Exported to {folder}."
