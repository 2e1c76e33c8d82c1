"""KneeT2Segment's Morphometry section driven like a user would (Qt stand-ins only, real scene and
nodes): a knee segmentation selected, Measure in the worker, result nodes (thickness table, bone
models coloured by thickness, thickness map, map volumes), Export writes the knee-morph files; an
edit of the segmentation changes what Measure measures."""

from __future__ import annotations

import json

import numpy as np

from mskquant import mrml
from panel_standins import install, module_widget


def test_morphometry_measure_edit_and_export(monkeypatch, runtime, tmp_path):
    from KneeT2SegmentLib import anatomy as an
    from KneeT2SegmentLib.morphometry.logic import KneeMorphLogic
    from mskquant.image import Image

    rec = install(monkeypatch, runtime)
    mod, widget = module_widget("KneeT2Segment")
    panel, ui = widget.panel, widget.panel.ui
    labels = an.analytic_knee()
    lut = np.array([0.05, 0.3, 1.0, 0.35, 0.95, 0.3, 0.9], np.float32)
    image = mrml.volume_from_image(runtime, Image(lut[labels.array], labels.geometry), "knee DESS")
    seg = KneeMorphLogic(runtime).segmentation_node(labels, "knee (reader)", image)
    ui.morphImageSelector.setCurrentNode(image)
    ui.morphSegmentationSelector.setCurrentNode(seg)
    assert ui.morphEditButton.enabled and not ui.morphExportButton.enabled
    ui.morphMeasureButton.click()
    assert rec.dialogs == [], rec.dialogs
    assert panel.controls.busy and not ui.morphSegmentButton.enabled and not ui.runButton.enabled
    panel.controls.wait()
    assert rec.dialogs == [] and panel.morph.nodes is not None, rec.dialogs
    n = panel.morph.nodes
    assert "Mean cartilage thickness: femoral" in ui.morphResultLabel.text and ui.morphExportButton.enabled
    assert set(n.models) == {"femur", "tibia", "patella"}
    for model in n.models.values():
        assert model.GetScene() is runtime.scene and model.GetPolyData().GetNumberOfPoints() > 1000
        d = model.GetDisplayNode()
        assert d.GetActiveScalarName() == "thickness_mm" and d.GetScalarVisibility()
    rows = mrml.columns_from_table(n.thickness_table)
    femoral_all = [m for p, r, m in zip(rows["plate"], rows["region"], rows["mean_mm"]) if (p, r) == ("femoral", "all")]
    assert len(femoral_all) == 1 and 0.5 < float(femoral_all[0]) < 5.0
    assert "femur thickness_mm" in n.map_volumes and n.thickness_volume.GetImageData() is not None
    summary = json.loads(n.thickness_table.GetAttribute("MSKQuant.KneeMorphSummary"))
    assert summary["missing_bones"] == []
    # the reader erases the patellar cartilage in Segment Editor: Measure measures the segmentation as it is now
    pc = np.zeros(labels.array.shape, bool)
    mrml.set_segment(seg, mrml.SegmentSpec("Patellar cartilage", pc, (0.7, 0.6, 0.86)), labels.geometry,
                     mrml.find_segment_id(seg, "Patellar cartilage"))
    ui.morphMeasureButton.click()
    panel.controls.wait()
    rows = mrml.columns_from_table(panel.morph.nodes.thickness_table)
    patellar = [int(c) for p, r, c in zip(rows["plate"], rows["region"], rows["n_points"]) if (p, r) == ("patellar", "all")]
    assert patellar == [0], rec.dialogs
    assert not rec.dialogs and any("patellar" in w.lower() for w in rec.warnings), rec.warnings  # said, not a crash
    ui.morphExportDirectoryLineEdit.currentPath = str(tmp_path / "out")
    n_dialogs = len(rec.dialogs)
    ui.morphExportButton.click()
    assert len(rec.dialogs) == n_dialogs
    for name in ("labels.nii.gz", "thickness.csv", "morph.json", "bone_surface_femur.vtp", "maps/femur_thickness_mm.png"):
        assert (tmp_path / "out" / name).is_file(), name
    widget.cleanup()


def test_morphometry_segment_makes_a_new_editable_segmentation(monkeypatch, runtime):
    """Segment: the bundled ensemble in the worker, a new segmentation (one segment per tissue found)
    selected for Measure; a second Segment makes another one, the first (possibly edited) is kept."""
    from KneeT2SegmentLib import anatomy as an
    from KneeT2SegmentLib import dess

    rec = install(monkeypatch, runtime)
    mod, widget = module_widget("KneeT2Segment")
    panel, ui = widget.panel, widget.panel.ui
    vol = dess.native_grid_dess(an.analytic_knee(), np.random.default_rng(3), snr=40.0)
    image = mrml.volume_from_image(runtime, vol.image, "knee DESS")
    ui.morphImageSelector.setCurrentNode(image)
    ui.morphSegmentButton.click()
    assert panel.controls.busy and not ui.morphMeasureButton.enabled
    panel.controls.wait()
    assert rec.dialogs == [], rec.dialogs
    first = ui.morphSegmentationSelector.currentNode()
    assert first is not None and first.IsA("vtkMRMLSegmentationNode") and ui.morphEditButton.enabled
    names = mrml.segment_names(first)
    assert "Femur" in names and "Femoral cartilage" in names
    femur = mrml.segment_mask(first, "Femur", vol.image.geometry)
    truth = vol.labels.array == 1
    assert 2.0 * (femur & truth).sum() / (femur.sum() + truth.sum()) > 0.7  # the network's femur, roughly right
    ui.morphSegmentButton.click()
    panel.controls.wait()
    second = ui.morphSegmentationSelector.currentNode()
    assert second is not first and first.GetScene() is runtime.scene
    widget.cleanup()
