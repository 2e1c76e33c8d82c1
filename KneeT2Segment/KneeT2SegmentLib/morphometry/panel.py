"""The KneeT2Segment panel's Morphometry section (GUI layer): 3D image -> Segment (progress and
cancel) -> edit in Segment Editor -> Measure -> tables, bone surface models coloured by
thickness (or T2), 2D map volumes -> Export (the knee-morph files).

Only inside the Slicer application. It shares the panel's run controls (one task at a time,
one Cancel button). Segment reads the image on the GUI thread, runs the ensemble in the worker
and makes a new segmentation on the GUI thread (never replacing an earlier, possibly edited,
one); Measure reads the selected segmentation as it is now (edits included).
"""

from __future__ import annotations

import slicer

from mskquant.panel import export_outputs, guarded, open_segment_editor, show_volume


class KneeMorphSection:
    def __init__(self, ui, logic_factory, controls, mese_reader) -> None:
        self.ui = ui
        self._logic_factory = logic_factory  # -> KneeMorphLogic (created on first use)
        self._logic = None
        self.controls = controls
        self.mese_reader = mese_reader  # () -> MeseSeries of the panel's MESE input, or None
        self.nodes = None
        ui.morphSegmentButton.connect("clicked(bool)", self.onSegment)
        ui.morphEditButton.connect("clicked(bool)", self.onEdit)
        ui.morphMeasureButton.connect("clicked(bool)", self.onMeasure)
        ui.morphExportButton.connect("clicked(bool)", self.onExport)
        ui.morphSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                             lambda n: setattr(ui.morphEditButton, "enabled", n is not None))
        ui.morphEditButton.enabled = False
        self.clear()

    @property
    def buttons(self):
        ui = self.ui
        return (ui.morphSegmentButton, ui.morphMeasureButton)

    @property
    def logic(self):
        if self._logic is None:
            self._logic = self._logic_factory()
        return self._logic

    def clear(self) -> None:
        self.nodes = None
        self.ui.morphExportButton.enabled = False
        self.ui.morphResultLabel.text = ""

    def parameters(self):
        from .pipeline import MorphParameters

        return MorphParameters(super_resolve=bool(self.ui.morphSuperResolveCheckBox.checked)).validate()

    def _image(self):
        from mskquant import mrml

        node = self.ui.morphImageSelector.currentNode()
        if node is None:
            raise ValueError("Select the 3D knee image first.")
        return node, mrml.image_from_volume(node)

    # --- actions --------------------------------------------------------------------------------
    def onSegment(self, *_):
        def prepare():
            node, image = self._image()
            return node, image, self.parameters()

        def compute(value, progress):
            node, image, params = value
            used, labels, info, warnings = self.logic.segment(image, params, progress)
            return node, used if used is not image else None, labels, info, warnings

        def finish(value):
            node, sr_image, labels, info, warnings = value
            if sr_image is not None:  # segmented on the super-resolved image: it becomes the image to measure on
                node = self.logic.super_resolved_node(sr_image, slicer.mrmlScene.GenerateUniqueName(
                    f"{node.GetName()} super-resolved"))
                self.ui.morphImageSelector.setCurrentNode(node)
                self.ui.morphSuperResolveCheckBox.checked = False
            for w in warnings:
                slicer.util.warningDisplay(w, windowTitle="KneeT2Segment")
            name = slicer.mrmlScene.GenerateUniqueName(f"{node.GetName()} knee")
            seg = self.logic.segmentation_node(labels, name, node if labels.geometry.same_grid(
                _geometry(node)) else None, info)
            seg.CreateClosedSurfaceRepresentation()
            self.ui.morphSegmentationSelector.setCurrentNode(seg)
            self.ui.morphEditButton.enabled = True
            self.ui.morphResultLabel.text = (f"Segmented by {info.get('model', '')}: edit the segments if needed, then "
                                             f"press Measure.")
            show_volume(background=node, fit=False)

        self.controls.start("Knee segmentation failed.", prepare, compute, finish)

    def onEdit(self, *_):
        node = self.ui.morphSegmentationSelector.currentNode()
        if node is None:
            slicer.util.errorDisplay("Select (or make with Segment) the knee segmentation first.")
            return
        guarded("Could not open Segment Editor.", open_segment_editor, node, self.ui.morphImageSelector.currentNode())

    def onMeasure(self, *_):
        def prepare():
            node, image = self._image()
            labels = self.logic.labels_from_segmentation(self.ui.morphSegmentationSelector.currentNode(),
                                                         image.geometry)
            series = self.mese_reader() if self.ui.morphUseMeseCheckBox.checked else None
            if self.ui.morphUseMeseCheckBox.checked and series is None:
                raise ValueError("Select (or load) the MESE series in Inputs, or untick 'T2 from the MESE series'.")
            name = slicer.mrmlScene.GenerateUniqueName(f"{node.GetName()} morphometry")
            return node, image, labels, series, self.parameters(), name

        def compute(value, progress):
            node, image, labels, series, params, name = value
            return node, name, self.logic.compute(image, labels, series, params, None, progress)

        def finish(value):
            node, name, result = value
            self.nodes = self.logic.make_nodes(result, name)
            self._show(node)

        self.controls.start("Knee morphometry failed.", prepare, compute, finish)

    def _show(self, image_node) -> None:
        n = self.nodes
        rows = {(r["plate"], r["region"]): r for r in n.result.thickness.rows()}
        parts = [f"{p} {rows[(p, 'all')]['mean_mm']:.2f} mm" for p in ("femoral", "medial tibial", "lateral tibial",
                                                                         "patellar")
                 if (p, "all") in rows and rows[(p, "all")].get("n_points")]
        self.ui.morphResultLabel.text = ("Mean cartilage thickness: " + (", ".join(parts) or "none") +
                                         f"<br>bones: {', '.join(n.models) or 'none'}")
        show_volume(background=image_node, foreground=n.thickness_volume, foreground_opacity=0.7, fit=False)
        app_logic = slicer.app.applicationLogic()
        app_logic.GetSelectionNode().SetActiveTableID(n.thickness_table.GetID())
        app_logic.PropagateTableSelection()
        self.ui.morphExportButton.enabled = True
        for w in n.result.warnings:
            slicer.util.warningDisplay(w, windowTitle="KneeT2Segment")

    def onExport(self, *_):
        folder = self.ui.morphExportDirectoryLineEdit.currentPath
        if not folder or self.nodes is None:
            slicer.util.errorDisplay("Measure first and choose an export folder.")
            return
        from .export import possible_outputs

        if export_outputs(folder, possible_outputs(), lambda out: self.logic.export(self.nodes, out.stage)):
            self.ui.morphResultLabel.text += f"<br>Exported to {folder}."


def _geometry(node):
    from mskquant import mrml

    return mrml.geometry_of(node)
