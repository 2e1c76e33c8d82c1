"""The KneeT2Segment panel (GUI layer): reads the form, calls :class:`.logic.KneeT2Logic`, shows results.

Only inside the Slicer application. Run and Segment are guarded by the shared progress/cancel
controls. "Segment" runs the cartilage model (Thomas et al. 2.3-2.5) into a new segmentation
"Femoral cartilage" (never overwriting an earlier, possibly edited one), selects it as the
cartilage input; "Edit in Segment Editor" opens it over the MESE series, "Restore automatic"
undoes edits, and Run (re)computes T2 and subregions from the segment as it is. The T2 map
is shown over the MESE series with the 0-100 ms colour map, the 12 subregions as segments,
the table and the bar plot in the layout; "Export" writes the knee-t2 files (CSV, PNG,
NIfTI, JSON); "Change over time" compares two results (tables of earlier runs, also from a
saved scene) and exports change.csv, clusters.json and change.png; "Agreement" compares two
segmentations of a scan (Dice, Jaccard, subregion T2) and, over the compared scans,
Spearman, MAE, bias and Bland-Altman limits (Thomas et al. 2.6).

Load, Segment, Run, Compare and Agreement share one set of run controls: while one runs every
other action is disabled and the one Cancel button stops that task. Run reads its inputs on the
GUI thread, fits in a worker thread and writes the nodes on the GUI thread, and so do Segment,
Agreement and Load (files read in the worker); Compare (two result tables, quick) and the
statistics over scans run on the GUI thread. "DICOM folder..." picks a folder for the MESE input.
"""

from __future__ import annotations

import logging

import slicer

from mskquant.panel import (BatchSection, RunControls, SceneObserver, export_outputs, fill_segment_combo, guarded,
                            module_parameter_node, show_volume)

from .morphometry.panel import KneeMorphSection
from .parameters import KneeT2Parameters

LATERALITY_ITEMS = {"From image": "auto", "Right": "right", "Left": "left"}


class KneeT2SegmentPanel:
    def __init__(self, ui_path: str, logic) -> None:
        self.widget = slicer.util.loadUI(ui_path)
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.widget.setMRMLScene(slicer.mrmlScene)
        self.logic = logic  # the module's thin Logic wrapper; .impl is the KneeT2Logic
        self._clear_results()
        ui = self.ui
        self.result_buttons = (ui.editSegmentationButton, ui.restoreSegmentationButton, ui.exportButton,
                               ui.exportChangeButton, ui.agreementSetButton, ui.agreementExportButton)
        self.controls = RunControls(ui.cancelButton, ui.progressBar, ui.statusLabel, buttons=(
            ui.runButton, ui.loadMeseButton, ui.meseFolderButton, ui.segmentButton, ui.agreementButton,
            ui.agreementClearButton, ui.compareButton, ui.morphSegmentButton, ui.morphMeasureButton)
            + self.result_buttons)
        self.morph = KneeMorphSection(ui, self._morph_logic, self.controls, self._mese_for_morphometry)
        ui.meseFolderButton.connect("clicked(bool)", self.onPickMeseFolder)
        for name in ("knee-t2", "knee-change", "knee-morph"):
            ui.batchPipelineComboBox.addItem(name)
        self.batch = BatchSection("knee-t2", ui.batchManifestPathLineEdit, ui.batchOutputPathLineEdit, ui.batchRunButton,
                                  ui.batchCancelButton, ui.batchProgressBar, ui.batchStatusLabel,
                                  pipeline_combo=ui.batchPipelineComboBox)
        for selector in (self.ui.baselineSelector, self.ui.followupSelector):
            selector.addAttribute("vtkMRMLTableNode", "MSKQuant.KneeT2Result", "1")
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.loadMeseButton.connect("clicked(bool)", self.onLoadMese)
        self.ui.maskSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                     lambda n: fill_segment_combo(self.ui.maskSegmentComboBox, n))
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.editSegmentationButton.connect("clicked(bool)", self.onEditSegmentation)
        self.ui.restoreSegmentationButton.connect("clicked(bool)", self.onRestoreSegmentation)
        self.ui.agreementASelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                           lambda n: fill_segment_combo(self.ui.agreementASegmentComboBox, n))
        self.ui.agreementBSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                           lambda n: fill_segment_combo(self.ui.agreementBSegmentComboBox, n))
        self.ui.agreementButton.connect("clicked(bool)", self.onCompareSegmentations)
        self.ui.agreementSetButton.connect("clicked(bool)", self.onAgreementOverScans)
        self.ui.agreementClearButton.connect("clicked(bool)", self.onClearAgreement)
        self.ui.agreementExportButton.connect("clicked(bool)", self.onExportAgreement)
        self._fill_models()
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.exportChangeButton.connect("clicked(bool)", self.onExportChange)
        self.scene_observer = SceneObserver(slicer.mrmlScene, self.onSceneClose, self._load_parameters)
        self._set_result_buttons(False)
        self._load_parameters()

    # --- plumbing ---------------------------------------------------------------------------
    def _morph_logic(self):
        from .morphometry.logic import KneeMorphLogic

        return KneeMorphLogic(self.logic.impl.rt)

    def _mese_for_morphometry(self):
        from .logic import validate_te_text

        node = self.ui.meseSelector.currentNode()
        return None if node is None else self.logic.impl.mese_from_node(node, validate_te_text(
            self.ui.echoTimesLineEdit.text))

    def _clear_results(self) -> None:
        self.result = self.change = self.segmentation = None
        self.agreement = self.agreement_set = None
        self.agreement_scans = []

    def _set_result_buttons(self, enabled: bool) -> None:
        for b in self.result_buttons:
            b.enabled = enabled

    def _parameter_node(self):
        return module_parameter_node("KneeT2Segment")

    def _load_parameters(self) -> None:
        p = KneeT2Parameters.load_from_node(self._parameter_node())
        self.ui.skipEchoesSpinBox.value = p.skip_echoes
        self.ui.t2MaxSpinBox.value = p.t2_max_ms
        self.ui.noiseSigmaSpinBox.value = p.noise_sigma or 0.0
        self.ui.wholeVolumeCheckBox.checked = p.whole_volume
        for text, value in LATERALITY_ITEMS.items():
            if value == p.laterality:
                self.ui.lateralityComboBox.currentText = text

    def _fill_models(self) -> None:
        """The registered femoral cartilage models (bundled first, then the user's)."""
        combo = self.ui.modelComboBox
        combo.clear()
        try:
            from mskquant.models import ModelRegistry

            specs = [sp for sp in ModelRegistry().specs()
                     if sp.module == "KneeT2Segment" and sp.task == "femoral-cartilage-segmentation"]
        except Exception as exc:  # a broken user registry must not break the panel
            logging.warning(f"Cannot list the cartilage models: {exc}")
            specs = []
        for sp in specs:
            combo.addItem(f"{sp.id}{' [user]' if sp.user else ''}", sp.id)
        saved = KneeT2Parameters.load_from_node(self._parameter_node()).model_id
        idx = combo.findData(saved)
        if idx >= 0:
            combo.setCurrentIndex(idx)

    def _model_id(self) -> str:
        data = self.ui.modelComboBox.currentData
        return data if data else KneeT2Parameters().model_id

    def parameters(self) -> KneeT2Parameters:
        sigma = float(self.ui.noiseSigmaSpinBox.value)
        p = KneeT2Parameters(skip_echoes=int(self.ui.skipEchoesSpinBox.value), t2_max_ms=float(self.ui.t2MaxSpinBox.value),
                             noise_sigma=sigma if sigma > 0 else None,
                             laterality=LATERALITY_ITEMS.get(self.ui.lateralityComboBox.currentText, "auto"),
                             whole_volume=bool(self.ui.wholeVolumeCheckBox.checked), model_id=self._model_id())
        p.validate().save_to_node(self._parameter_node())
        return p

    def enter(self) -> None:
        self._load_parameters()  # another module or a loaded scene may have changed them

    def cleanup(self) -> None:
        self.scene_observer.remove()
        self.controls.discard()
        self.batch.discard()

    def onSceneClose(self) -> None:
        """The scene is closing: results and their buttons go with its nodes."""
        self.controls.discard()
        self._clear_results()
        self._set_result_buttons(False)
        self.morph.clear()
        for label in (self.ui.resultLabel, self.ui.changeLabel, self.ui.agreementResultLabel, self.ui.segmentationLabel):
            label.text = ""

    # --- actions ----------------------------------------------------------------------------
    def onPickMeseFolder(self, *_):
        """A DICOM folder of the MESE series (the path field's dialog picks files)."""
        import qt

        folder = qt.QFileDialog.getExistingDirectory(self.widget, "DICOM folder of the MESE series",
                                                     self.ui.meseFilePathLineEdit.currentPath or "")
        if folder:
            self.ui.meseFilePathLineEdit.currentPath = folder

    def onLoadMese(self, *_):
        path = self.ui.meseFilePathLineEdit.currentPath
        if not path:
            slicer.util.errorDisplay("Choose a 4D NIfTI/NRRD file or a DICOM folder of the MESE series first.")
            return
        from .logic import validate_te_text

        from pathlib import Path

        from .mese import read_mese

        def prepare():
            _ = self.logic.impl  # the dependency check (and its one question) on the GUI thread
            return validate_te_text(self.ui.echoTimesLineEdit.text)

        def compute(te, progress):  # worker thread: files (4D NIfTI/NRRD or DICOM) into arrays
            return read_mese(path, te, progress)

        def finish(series):  # GUI thread: the sequence node
            seq, _ = self.logic.impl.add_mese(series, Path(path).name.split(".")[0])
            self._show_loaded((seq, series))

        self.controls.start("Could not load the MESE series.", prepare, compute, finish)

    def _show_loaded(self, loaded) -> None:
        seq, series = loaded
        self.ui.meseSelector.setCurrentNode(seq)
        lat = f", {series.laterality} knee ({series.laterality_source})" if series.laterality else \
            ", laterality unknown: choose it below"
        self.ui.statusLabel.text = (f"Loaded {series.n_echoes} echoes (TE {', '.join(f'{t:g}' for t in series.echo_times_ms)}"
                                    f" ms){lat}.")
        show_volume(background=self._mese_proxy(seq))

    def onRun(self, *_):
        from .logic import validate_te_text

        ui = self.ui

        def prepare():  # GUI thread: the form, the MESE series and the cartilage into arrays
            mese_node = ui.meseSelector.currentNode()
            if mese_node is None:
                raise ValueError("Select (or load) the MESE series first.")
            logic = self.logic.impl
            series = logic.mese_from_node(mese_node, validate_te_text(ui.echoTimesLineEdit.text))
            name = slicer.mrmlScene.GenerateUniqueName(f"{mese_node.GetName()} T2")
            return mese_node, logic.gather(series, ui.maskSelector.currentNode(),
                                           ui.maskSegmentComboBox.currentText or None, self.parameters(), name)

        def compute(value, progress):  # worker thread: segmentation if needed, T2 fit, subregions
            mese_node, inputs = value
            return mese_node, inputs, self.logic.impl.compute(inputs, progress)

        def finish(value):  # GUI thread: the result nodes
            mese_node, inputs, computed = value
            self._finish_run((self.logic.impl.make_result(inputs, computed), mese_node))

        self.controls.start("T2 quantification failed.", prepare, compute, finish)

    def _finish_run(self, value) -> None:
        self.result, mese_node = value
        self._show_result(mese_node)
        for w in self.result.warnings:
            slicer.util.warningDisplay(w, windowTitle="KneeT2Segment")

    def _mese_proxy(self, mese_node):
        """The echo volume Slicer shows for a MESE sequence (Segment Editor's source volume)."""
        if mese_node is None or not mese_node.IsA("vtkMRMLSequenceNode"):
            return None
        browser = slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(mese_node)
        return browser.GetProxyNode(mese_node) if browser is not None else None

    def onSegment(self, *_):
        from .logic import validate_te_text

        mese_node = self.ui.meseSelector.currentNode()
        if mese_node is None:
            slicer.util.errorDisplay("Select (or load) the MESE series first.")
            return

        def prepare():  # GUI thread: the form and the MESE series into arrays
            series = self.logic.impl.mese_from_node(mese_node, validate_te_text(self.ui.echoTimesLineEdit.text))
            return series, self.parameters()

        def compute(value, progress):  # worker thread: the network and the T2 fit of its candidates
            series, params = value
            return series, self.logic.impl.auto_segment(series, params, progress)

        def finish(value):  # GUI thread: the segmentation nodes
            series, res = value
            seg = self.logic.impl.segmentation_nodes(series, res, slicer.mrmlScene.GenerateUniqueName(
                f"{mese_node.GetName()} cartilage"), mese_node)
            self._finish_segment((seg, mese_node))

        self.controls.start("Automatic cartilage segmentation failed.", prepare, compute, finish)

    def _finish_segment(self, value) -> None:
        from .logic import CARTILAGE_SEGMENT

        seg, mese_node = value
        self.segmentation = seg
        background = self._mese_proxy(mese_node)
        if background is not None:
            seg.segmentation.SetReferenceImageGeometryParameterFromVolumeNode(background)
        seg.segmentation.CreateClosedSurfaceRepresentation()
        self.ui.maskSelector.setCurrentNode(seg.segmentation)
        fill_segment_combo(self.ui.maskSegmentComboBox, seg.segmentation)
        self.ui.maskSegmentComboBox.setCurrentIndex(self.ui.maskSegmentComboBox.findText(CARTILAGE_SEGMENT))
        self.ui.editSegmentationButton.enabled = True
        self.ui.restoreSegmentationButton.enabled = True
        s = seg.summary
        dropped = s["dropped_slices"]
        self.ui.segmentationLabel.text = (
            f"{s['counts']['final']} cartilage voxels by {s['model']} (p >= {s['thresholds']['probability_threshold']:g}, "
            f"at least {s['min_slice_voxels']} voxels per slice{'; emptied slices ' + ', '.join(map(str, dropped)) if dropped else ''})."
            f" Edit it if needed, then press Run.")
        show_volume(background=background, fit=False)
        for w in seg.result.warnings:
            slicer.util.warningDisplay(w, windowTitle="KneeT2Segment")

    def _selected_segmentation(self):
        node = self.ui.maskSelector.currentNode()
        if node is None or not node.IsA("vtkMRMLSegmentationNode") or self.logic.impl.automatic_of(node) is None:
            slicer.util.errorDisplay("Select a cartilage segmentation made by Segment (Femoral cartilage) first.")
            return None
        return node

    def onEditSegmentation(self, *_):
        from mskquant.panel import open_segment_editor

        node = self._selected_segmentation()
        if node is None:
            return
        # the MESE the segmentation was made from (referenced by Segment), not the selector's current one
        mese = node.GetNodeReference("MSKQuantMESE") or self.ui.meseSelector.currentNode()
        guarded("Could not open Segment Editor.", open_segment_editor, node, self._mese_proxy(mese))

    def onRestoreSegmentation(self, *_):
        node = self._selected_segmentation()
        if node is None:
            return
        if not slicer.util.confirmYesNoDisplay("Undo every edit of the cartilage segment?"):
            return
        if guarded("Restoring failed.", lambda: self.logic.impl.restore_automatic(node) or True):
            self.ui.statusLabel.text = "Automatic cartilage segmentation restored: press Run to recompute."

    # --- agreement --------------------------------------------------------------------------------
    def onCompareSegmentations(self, *_):
        from .logic import validate_te_text

        mese_node = self.ui.meseSelector.currentNode()
        ui = self.ui

        def prepare():  # GUI thread: the series and both segmentations into arrays
            if mese_node is None:
                raise ValueError("Select (or load) the MESE series first.")
            logic = self.logic.impl
            series = logic.mese_from_node(mese_node, validate_te_text(ui.echoTimesLineEdit.text))
            name = slicer.mrmlScene.GenerateUniqueName(f"{mese_node.GetName()} agreement")
            return name, logic.gather_agreement(
                series, ui.agreementASelector.currentNode(), ui.agreementBSelector.currentNode(),
                ui.agreementASegmentComboBox.currentText or None, ui.agreementBSegmentComboBox.currentText or None,
                self.parameters())

        def compute(value, progress):  # worker thread: the model (when B is the model), T2, statistics
            name, inputs = value
            return name, inputs, self.logic.impl.compute_agreement(inputs, name, progress)

        def finish(value):  # GUI thread: the table and plot nodes
            name, inputs, scan = value
            self._finish_agreement(self.logic.impl.agreement_nodes(scan, inputs["b_name"], name))

        self.controls.start("Comparing the segmentations failed.", prepare, compute, finish)

    def _finish_agreement(self, agreement) -> None:
        self.agreement, self.agreement_set = agreement, None
        self.agreement_scans.append(agreement.scan)
        s = agreement.scan
        self.ui.agreementResultLabel.text = (
            f"Dice {s.dice:.3f}, Jaccard {s.jaccard:.3f} ({s.voxels_a} vs {s.voxels_b} voxels); mean T2 (all) "
            f"{s.mean_t2_a['All']:.1f} vs {s.mean_t2_b['All']:.1f} ms. {len(self.agreement_scans)} scan(s) compared.")
        slicer.modules.plots.logic().ShowChartInLayout(agreement.plot)
        self.ui.agreementSetButton.enabled = len(self.agreement_scans) >= 2
        self.ui.agreementExportButton.enabled = True

    def onAgreementOverScans(self, *_):
        def statistics():
            stats, table, chart = self.logic.impl.agreement_table(self.agreement_scans)
            self.agreement_set = (stats, table)
            al = stats.region("All")
            self.ui.agreementResultLabel.text = (
                f"{len(self.agreement_scans)} scans: Dice {stats.mean_dice:.3f}, Jaccard {stats.mean_jaccard:.3f}; mean T2 "
                f"(all) Spearman {al.spearman:.2f}, MAE {al.mae_ms:.2f} ms, bias {al.bias_ms:+.2f} ms "
                f"[{al.lower_limit_ms:+.2f}, {al.upper_limit_ms:+.2f}]; subregion MAE {stats.subregion_mae_ms():.2f} ms")
            slicer.modules.plots.logic().ShowChartInLayout(chart)
            app_logic = slicer.app.applicationLogic()
            app_logic.GetSelectionNode().SetActiveTableID(table.GetID())
            app_logic.PropagateTableSelection()

        guarded("Agreement statistics failed.", statistics)

    def onClearAgreement(self, *_):
        self.agreement_scans = []
        self.agreement, self.agreement_set = None, None
        self.ui.agreementSetButton.enabled = False
        self.ui.agreementExportButton.enabled = False
        self.ui.agreementResultLabel.text = ""

    def onExportAgreement(self, *_):
        folder = self.ui.agreementExportDirectoryLineEdit.currentPath
        if not folder or (self.agreement is None and self.agreement_set is None):
            slicer.util.errorDisplay("Compare two segmentations and choose an export folder first.")
            return
        from .cli import COMPARE_OUTPUTS, COMPARE_SET_OUTPUTS

        if self.agreement_set is not None:
            names = COMPARE_SET_OUTPUTS
            write = lambda out: self.logic.impl.export_agreement_set(*self.agreement_set, out.stage)  # noqa: E731
        else:
            names = COMPARE_OUTPUTS
            write = lambda out: self.logic.impl.export_agreement(self.agreement, out.stage)  # noqa: E731
        if export_outputs(folder, names, write):
            self.ui.statusLabel.text = f"Exported the agreement to {folder}."

    def _show_result(self, mese_node) -> None:
        r = self.result
        s = r.summary
        rows = {x["region"]: x for x in s["regions"]}
        a, d, sp = rows["All"], rows["Deep"], rows["Superficial"]
        self.ui.resultLabel.text = (
            f"Femoral cartilage T2 {a['mean_t2_ms']:.1f} ms (SD {a['sd_t2_ms']:.1f}, {a['n_voxels']} voxels)<br>"
            f"deep {d['mean_t2_ms']:.1f} ms, superficial {sp['mean_t2_ms']:.1f} ms; medial "
            f"{rows['Medial']['mean_t2_ms']:.1f}, lateral {rows['Lateral']['mean_t2_ms']:.1f} ms<br>"
            f"{s['laterality']} knee ({s['laterality_source']}); noise SD {s['noise']['sigma']:.4g} ({s['noise']['source']})")
        background = None
        if mese_node is not None and mese_node.IsA("vtkMRMLSequenceNode"):
            browser = slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(mese_node)
            background = browser.GetProxyNode(mese_node) if browser is not None else None
        show_volume(background=background, foreground=r.t2_volume, foreground_opacity=0.8)
        app_logic = slicer.app.applicationLogic()
        app_logic.GetSelectionNode().SetActiveTableID(r.table.GetID())
        app_logic.PropagateTableSelection()
        slicer.modules.plots.logic().ShowChartInLayout(r.plot)
        self.ui.exportButton.enabled = True

    def onExport(self, *_):
        folder = self.ui.exportDirectoryLineEdit.currentPath
        if not folder or self.result is None:
            slicer.util.errorDisplay("Run the quantification and choose an export folder first.")
            return
        from .cli import KNEE_T2_OUTPUTS

        if export_outputs(folder, KNEE_T2_OUTPUTS, lambda out: self.logic.impl.export(self.result, out.stage)):
            self.ui.statusLabel.text = f"Exported to {folder}."

    def onCompare(self, *_):
        base, follow = self.ui.baselineSelector.currentNode(), self.ui.followupSelector.currentNode()

        def task(progress):
            name = slicer.mrmlScene.GenerateUniqueName("Knee T2 change")
            return self.logic.impl.compare(base, follow, name, progress)

        self.controls.start("Comparison failed.", task, finish=self._finish_change)

    def _finish_change(self, change) -> None:
        self.change = change
        c = change.change
        rows = {r["region"]: r for r in c.rows}
        self.ui.changeLabel.text = (
            f"T2 change (all) {rows['All']['delta_t2_ms']:+.2f} ms; deep {rows['Deep']['delta_t2_ms']:+.2f}, "
            f"superficial {rows['Superficial']['delta_t2_ms']:+.2f} ms<br>{c.n_clusters} focal cluster(s) covering "
            f"{c.percent_area:.1f} % of the plate (threshold {c.threshold_ms:.2f} ms)")
        slicer.modules.plots.logic().ShowChartInLayout(change.plot)
        self.ui.exportChangeButton.enabled = True
        for w in c.warnings:
            slicer.util.warningDisplay(w, windowTitle="KneeT2Segment")

    def onExportChange(self, *_):
        folder = self.ui.changeExportDirectoryLineEdit.currentPath
        if not folder or self.change is None:
            slicer.util.errorDisplay("Compare two results and choose an export folder first.")
            return
        from .cli import CHANGE_OUTPUTS

        if export_outputs(folder, CHANGE_OUTPUTS, lambda out: self.logic.impl.export_change(self.change, out.stage)):
            self.ui.statusLabel.text = f"Exported the change to {folder}."
