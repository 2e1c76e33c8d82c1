"""The KneeT2Segment panel (GUI layer): reads the form, calls :class:`.logic.KneeT2Logic`, shows results.

Only inside the Slicer application. Run is guarded by the shared progress/cancel controls;
the T2 map is shown over the MESE series with the 0-100 ms colour map, the 12 subregions as
segments, the table and the bar plot in the layout; "Export" writes the knee-t2 files (CSV,
PNG, NIfTI, JSON); "Change over time" compares two results (tables of earlier runs, also
from a saved scene) and exports change.csv, clusters.json and change.png.
"""

from __future__ import annotations

from pathlib import Path

import slicer

from mskquant.panel import RunControls, fill_segment_combo, show_volume

from .parameters import KneeT2Parameters

LATERALITY_ITEMS = {"From image": "auto", "Right": "right", "Left": "left"}


class KneeT2SegmentPanel:
    def __init__(self, ui_path: str) -> None:
        self.widget = slicer.util.loadUI(ui_path)
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.widget.setMRMLScene(slicer.mrmlScene)
        self._logic = None
        self.result = None
        self.change = None
        self.controls = RunControls(self.ui.runButton, self.ui.cancelButton, self.ui.progressBar, self.ui.statusLabel)
        for selector in (self.ui.baselineSelector, self.ui.followupSelector):
            selector.addAttribute("vtkMRMLTableNode", "MSKQuant.KneeT2Result", "1")
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.loadMeseButton.connect("clicked(bool)", self.onLoadMese)
        self.ui.maskSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                     lambda n: fill_segment_combo(self.ui.maskSegmentComboBox, n))
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.exportChangeButton.connect("clicked(bool)", self.onExportChange)
        self._load_parameters()

    # --- plumbing ---------------------------------------------------------------------------
    def logic(self):
        if self._logic is None:
            from mskquant.dependencies import ensure_dependencies

            ensure_dependencies()
            from .logic import KneeT2Logic

            self._logic = KneeT2Logic()
        return self._logic

    def _parameter_node(self):
        node = slicer.mrmlScene.GetSingletonNode("KneeT2Segment", "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag("KneeT2Segment")
            node.SetName("KneeT2Segment parameters")
            node = slicer.mrmlScene.AddNode(node)
        return node

    def _load_parameters(self) -> None:
        p = KneeT2Parameters.load_from_node(self._parameter_node())
        self.ui.skipEchoesSpinBox.value = p.skip_echoes
        self.ui.t2MaxSpinBox.value = p.t2_max_ms
        self.ui.noiseSigmaSpinBox.value = p.noise_sigma or 0.0
        self.ui.wholeVolumeCheckBox.checked = p.whole_volume
        for text, value in LATERALITY_ITEMS.items():
            if value == p.laterality:
                self.ui.lateralityComboBox.currentText = text

    def parameters(self) -> KneeT2Parameters:
        sigma = float(self.ui.noiseSigmaSpinBox.value)
        p = KneeT2Parameters(skip_echoes=int(self.ui.skipEchoesSpinBox.value), t2_max_ms=float(self.ui.t2MaxSpinBox.value),
                             noise_sigma=sigma if sigma > 0 else None,
                             laterality=LATERALITY_ITEMS.get(self.ui.lateralityComboBox.currentText, "auto"),
                             whole_volume=bool(self.ui.wholeVolumeCheckBox.checked))
        p.validate().save_to_node(self._parameter_node())
        return p

    def enter(self) -> None:
        pass

    def cleanup(self) -> None:
        self.controls.cancel()

    # --- actions ----------------------------------------------------------------------------
    def onLoadMese(self, *_):
        path = self.ui.meseFilePathLineEdit.currentPath
        if not path:
            slicer.util.errorDisplay("Choose a 4D NIfTI/NRRD file or a DICOM folder of the MESE series first.")
            return
        from .logic import validate_te_text

        def task(progress):
            te = validate_te_text(self.ui.echoTimesLineEdit.text)
            return self.logic().load_mese(path, te, progress=progress)

        loaded = self.controls.run(task, "Could not load the MESE series.")
        if loaded is None:
            return
        seq, series = loaded
        self.ui.meseSelector.setCurrentNode(seq)
        lat = f", {series.laterality} knee ({series.laterality_source})" if series.laterality else \
            ", laterality unknown: choose it below"
        self.ui.statusLabel.text = (f"Loaded {series.n_echoes} echoes (TE {', '.join(f'{t:g}' for t in series.echo_times_ms)}"
                                    f" ms){lat}.")
        browser = slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(seq)
        if browser is not None:
            show_volume(background=browser.GetProxyNode(seq))

    def onRun(self, *_):
        from .logic import validate_te_text

        mese_node = self.ui.meseSelector.currentNode()
        mask_node = self.ui.maskSelector.currentNode()
        params = self.parameters()

        def task(progress):
            logic = self.logic()
            te = validate_te_text(self.ui.echoTimesLineEdit.text)
            series = logic.mese_from_node(mese_node, te)
            name = slicer.mrmlScene.GenerateUniqueName(f"{mese_node.GetName()} T2")
            return logic.run(series, mask_node, self.ui.maskSegmentComboBox.currentText or None, params,
                             progress=progress, name=name)

        result = self.controls.run(task, "T2 quantification failed.")
        if result is None:
            return
        self.result = result
        self._show_result(mese_node)
        for w in result.warnings:
            slicer.util.warningDisplay(w, windowTitle="KneeT2Segment")

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

    def _overwrite_ok(self, folder: str, names) -> "bool | None":
        existing = [n for n in names if (Path(folder) / n).exists()]
        if not existing:
            return False
        if slicer.util.confirmYesNoDisplay(f"{folder} already holds {', '.join(existing[:4])}. Replace them?"):
            return True
        return None

    def onExport(self, *_):
        folder = self.ui.exportDirectoryLineEdit.currentPath
        if not folder or self.result is None:
            slicer.util.errorDisplay("Run the quantification and choose an export folder first.")
            return
        from mskquant.atomic import OutputFolder

        from .cli import KNEE_T2_OUTPUTS

        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            overwrite = self._overwrite_ok(folder, KNEE_T2_OUTPUTS)
            if overwrite is None:
                return
            with OutputFolder(folder, KNEE_T2_OUTPUTS, overwrite=overwrite) as out:
                self.logic().export(self.result, out.stage)
            self.ui.statusLabel.text = f"Exported to {folder}."

    def onCompare(self, *_):
        base, follow = self.ui.baselineSelector.currentNode(), self.ui.followupSelector.currentNode()

        def task(progress):
            name = slicer.mrmlScene.GenerateUniqueName("Knee T2 change")
            return self.logic().compare(base, follow, name, progress)

        change = self.controls.run(task, "Comparison failed.")
        if change is None:
            return
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
        from mskquant.atomic import OutputFolder

        from .cli import CHANGE_OUTPUTS

        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            overwrite = self._overwrite_ok(folder, CHANGE_OUTPUTS)
            if overwrite is None:
                return
            with OutputFolder(folder, CHANGE_OUTPUTS, overwrite=overwrite) as out:
                self.logic().export_change(self.change, out.stage)
            self.ui.statusLabel.text = f"Exported the change to {folder}."
