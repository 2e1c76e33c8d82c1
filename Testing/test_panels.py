"""The module panels driven like a user would, with stand-ins only for what cannot run here
(Qt widgets, dialogs, the Segment Editor GUI: Testing/panel_standins.py) and everything else
real: slicer-core's scene and nodes, the MRML logic, Segment Editor's node and logic.

VHIWorkflow: Run -> Clean -> Recompute -> Export with the buttons' enabled states at each step,
one dialog per failure, the run's own STIR used after the selector changed, scene close and
scene load re-reading the parameters; every module widget holds its Logic (getModuleLogic).
"""

from __future__ import annotations

import numpy as np
import pytest

from mskquant import mrml
from panel_standins import get_module_logic, install, module_widget
from VHIWorkflowLib.logic import SEG_CONSERVATIVE, SEG_DISEASE, SEG_SENSITIVE
from VHIWorkflowLib.synthetic import EXPECTED, make_case


@pytest.fixture
def vhi(monkeypatch, runtime):
    rec = install(monkeypatch, runtime)
    mod, widget = module_widget("VHIWorkflow")
    case = make_case()
    nodes = {"stir": mrml.volume_from_image(runtime, case.stir, "STIR"),
             "roi": mrml.volume_from_image(runtime, case.normal_roi, "normal bone", labelmap=True),
             "region": mrml.volume_from_image(runtime, case.disease_region, "disease region", labelmap=True)}
    yield rec, mod, widget, widget.panel, nodes
    widget.cleanup()  # the scene observers go before the runtime's scene is cleared


def select_inputs(ui, nodes):
    ui.stirSelector.setCurrentNode(nodes["stir"])
    ui.roiSelector.setCurrentNode(nodes["roi"])
    ui.diseaseRegionSelector.setCurrentNode(nodes["region"])


def state(panel):
    ui = panel.ui
    names = ("runButton", "cancelButton", "cleanButton", "recomputeButton", "restoreButton", "exportButton",
             "compareButton", "placeRoiBoxButton", "drawCurveButton")
    return {n: getattr(ui, n).enabled for n in names}


def test_every_widget_holds_its_logic(monkeypatch, runtime):
    install(monkeypatch, runtime)
    for name in ("VHIWorkflow", "KneeT2Segment", "SiamesePainCAM"):
        mod, widget = module_widget(name)
        logic = get_module_logic(widget)
        assert isinstance(logic, getattr(mod, f"{name}Logic")) and widget.panel.logic is logic
        assert logic._impl is None  # nothing installed or loaded until first use
        widget.cleanup()


def test_run_clean_recompute_export_buttons_inputs_and_dialogs(vhi, tmp_path, runtime):
    import slicer

    rec, mod, widget, panel, nodes = vhi
    ui = panel.ui
    before = state(panel)
    assert before["runButton"] and not before["cancelButton"]
    assert not any(before[n] for n in ("cleanButton", "recomputeButton", "restoreButton", "exportButton"))
    select_inputs(ui, nodes)

    # Run: the inputs are read, the worker computes; meanwhile everything but Cancel is locked
    ui.runButton.click()
    assert panel.controls.busy
    running = state(panel)
    assert running["cancelButton"] and not any(v for k, v in running.items() if k != "cancelButton")
    assert not panel.controls.start("another", lambda p: 1)  # a second task is refused while one runs
    panel.controls.wait()
    after = state(panel)
    assert not panel.controls.busy and rec.dialogs == []
    assert after == {**before, "cleanButton": True, "recomputeButton": True, "restoreButton": True,
                     "exportButton": True}
    result = panel.result
    assert result.vhi["sensitive"].voxels == EXPECTED["sensitive_voxels"]
    assert f"({EXPECTED['sensitive_voxels']} voxels)" in ui.vhiLabel.text

    # the user changes the STIR selector (another series, then none): Clean and Export keep the run's STIR
    other = mrml.volume_from_image(runtime, make_case(origin=(40.0, 0.0, 0.0)).stir, "another STIR")
    ui.stirSelector.setCurrentNode(other)
    ui.cleanButton.click()
    assert rec.modules == ["SegmentEditor"] and rec.editor.source is nodes["stir"]
    assert rec.editor.segmentation is result.segmentation
    editor_node = rec.editor.node
    assert editor_node.GetOverwriteMode() == slicer.vtkMRMLSegmentEditorNode.OverwriteNone
    # the radiologist paints conservative over everything, through Segment Editor's logic
    g = result.geometry
    logic = slicer.vtkSlicerSegmentEditorLogic()
    logic.SetMRMLScene(runtime.scene)
    logic.SetSegmentEditorNode(editor_node)
    editor_node.SetAndObserveSegmentationNode(result.segmentation)
    editor_node.SetAndObserveSourceVolumeNode(nodes["stir"])
    cons_id = mrml.find_segment_id(result.segmentation, SEG_CONSERVATIVE)
    editor_node.SetSelectedSegmentID(cons_id)
    sensitive = mrml.segment_mask(result.segmentation, SEG_SENSITIVE, g)
    logic.ModifySegmentByLabelmap(result.segmentation, cons_id, mrml._oriented_image(np.ones(g.shape_kji, bool), g),
                                  logic.ModificationModeAdd, False, False)
    widget.enter()  # back in VHIWorkflow: the user's editor settings return
    assert editor_node.GetOverwriteMode() == slicer.vtkMRMLSegmentEditorNode.OverwriteAllSegments
    ui.stirSelector.setCurrentNode(None)
    ui.recomputeButton.click()
    assert rec.dialogs == []
    np.testing.assert_array_equal(mrml.segment_mask(result.segmentation, SEG_SENSITIVE, g), sensitive)
    assert panel.result.vhi["conservative"].voxels == int(sensitive.sum()) == EXPECTED["sensitive_voxels"]
    assert "cleaned" in ui.statusLabel.text

    # Export with no STIR selected: the overlay comes from the run's STIR
    ui.exportDirectoryLineEdit.currentPath = str(tmp_path / "out")
    ui.exportButton.click()
    assert rec.dialogs == [] and ui.statusLabel.text.startswith("Exported")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "overlay.png" in written and "vhi.csv" in written
    assert state(panel) == after

    # failures: exactly one dialog each, nothing raised into the slot, buttons as before
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    ui.exportDirectoryLineEdit.currentPath = str(blocker / "out")
    ui.exportButton.click()
    assert len(rec.dialogs) == 1 and rec.dialogs[0].startswith("Export failed.")
    result.segmentation.RemoveNodeReferenceIDs("MSKQuantAutomaticResult")
    ui.restoreButton.click()
    assert len(rec.dialogs) == 2 and rec.dialogs[1].startswith("Could not restore")
    ui.stirSelector.setCurrentNode(None)
    ui.runButton.click()  # no STIR: refused in prepare, on the GUI thread
    assert len(rec.dialogs) == 3 and "STIR" in rec.dialogs[2] and not panel.controls.busy
    assert state(panel) == after


def test_a_failure_in_the_worker_is_one_dialog_and_cancel_stops_it(vhi, monkeypatch):
    from mskquant.progress import Cancelled

    rec, mod, widget, panel, nodes = vhi
    ui = panel.ui
    select_inputs(ui, nodes)
    impl = panel.logic.impl

    def broken(inputs, progress):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(impl, "compute", broken)
    ui.runButton.click()
    panel.controls.wait()
    assert len(rec.dialogs) == 1 and "out of memory" in rec.dialogs[0] and panel.result is None
    assert ui.runButton.enabled and not ui.cleanButton.enabled and not ui.cancelButton.enabled

    def slow(inputs, progress):
        import time

        for i in range(200):
            progress(i / 200, "working")
            time.sleep(0.01)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(impl, "compute", slow)
    ui.runButton.click()
    ui.cancelButton.click()
    panel.controls.wait()
    assert len(rec.dialogs) == 1 and ui.statusLabel.text.startswith("Cancelled") and panel.result is None
    assert ui.runButton.enabled and not ui.cancelButton.enabled
    assert Cancelled  # the worker stopped at its next progress report


def test_scene_close_and_load_re_read_the_parameters(vhi, runtime, tmp_path):
    from mskquant.panel import module_parameter_node
    from VHIWorkflowLib.parameters import VHIParameters

    rec, mod, widget, panel, nodes = vhi
    ui = panel.ui
    select_inputs(ui, nodes)
    ui.runButton.click()
    panel.controls.wait()
    assert ui.exportButton.enabled
    # another module (or the Python console) changes the parameters: enter() shows them
    VHIParameters(min_island_pixels=6).save_to_node(module_parameter_node("VHIWorkflow", runtime.scene))
    widget.enter()
    assert ui.minIslandSpinBox.value == 6
    # save a scene whose parameters say 7
    VHIParameters(min_island_pixels=7).save_to_node(module_parameter_node("VHIWorkflow", runtime.scene))
    scene_file = tmp_path / "saved.mrml"
    runtime.scene.SetRootDirectory(str(tmp_path))
    runtime.scene.SetURL(str(scene_file))
    assert runtime.scene.Commit(str(scene_file))
    # Close Scene: the result and its buttons go; the parameters are the new scene's (defaults)
    runtime.scene.Clear(False)
    assert panel.result is None and not ui.exportButton.enabled and not ui.cleanButton.enabled
    assert ui.vhiLabel.text == "" and ui.runButton.enabled
    assert ui.minIslandSpinBox.value == VHIParameters().min_island_pixels
    # Load the saved scene: its parameters are shown (and the next Run will use them)
    runtime.scene.SetURL(str(scene_file))
    assert runtime.scene.Import()
    assert ui.minIslandSpinBox.value == 7
    assert panel.parameters().min_island_pixels == 7


def test_knee_dicom_folder_picker_and_gate(monkeypatch, runtime, tmp_path):
    rec = install(monkeypatch, runtime)
    mod, widget = module_widget("KneeT2Segment")
    ui = widget.panel.ui
    rec.folder = str(tmp_path)
    ui.meseFolderButton.click()
    assert ui.meseFilePathLineEdit.currentPath == str(tmp_path)
    # one gate for Load, Segment, Run, Compare and Agreement: a nested task cannot free Cancel early
    controls = widget.panel.controls
    for name in ("runButton", "segmentButton", "agreementButton", "loadMeseButton", "meseFolderButton"):
        assert getattr(ui, name) in controls.buttons
    seen = {}

    def task(progress):
        seen["during"] = {n: getattr(ui, n).enabled for n in ("runButton", "segmentButton", "cancelButton")}
        return None

    controls.start("x", task)
    assert seen["during"] == {"runButton": False, "segmentButton": False, "cancelButton": True}
    assert ui.runButton.enabled and not ui.cancelButton.enabled
    ui.loadMeseButton.click()  # a folder that is no MESE series: one dialog, from the worker
    controls.wait()
    assert len(rec.dialogs) == 1 and not controls.busy
    widget.cleanup()


def test_pain_cam_run_in_a_worker_then_export(monkeypatch, runtime, tmp_path):
    """SiamesePainCAM's Run: volumes read on the GUI thread, model and CAMs in the worker, CAM
    volumes written back; the buttons follow; one dialog for a run without inputs."""
    from SiamesePainCAMLib import simulator as sim

    rec = install(monkeypatch, runtime)
    mod, widget = module_widget("SiamesePainCAM")
    panel, ui = widget.panel, widget.panel.ui
    ui.runButton.click()  # nothing selected
    assert len(rec.dialogs) == 1 and "left knee" in rec.dialogs[0] and not panel.controls.busy
    anatomy = sim.build_anatomy(sim.analytic_knee_labels(), "analytic", seed=99)
    pair = sim.simulate_pair(anatomy, np.random.default_rng(21), "panel", painful_side="right")
    left = mrml.volume_from_image(runtime, pair.left.image, "L knee")
    right = mrml.volume_from_image(runtime, pair.right.image, "R knee")
    ui.leftSelector.setCurrentNode(left)
    ui.rightSelector.setCurrentNode(right)
    ui.runButton.click()
    assert panel.controls.busy and not ui.runButton.enabled and ui.cancelButton.enabled
    assert not ui.exportButton.enabled
    panel.controls.wait()
    assert len(rec.dialogs) == 1 and panel.result is not None
    assert ui.exportButton.enabled and ui.showLeftButton.enabled and ui.runButton.enabled
    assert panel.result.cam_volumes["left"].GetScene() is runtime.scene
    ui.exportDirectoryLineEdit.currentPath = str(tmp_path / "out")
    ui.exportButton.click()
    assert len(rec.dialogs) == 1 and (tmp_path / "out" / "pain.json").is_file()
    widget.cleanup()


def test_knee_run_in_a_worker_with_the_cartilage_labelmap(monkeypatch, runtime, tmp_path):
    """KneeT2Segment's Run: series and cartilage read on the GUI thread, T2 fit in the worker,
    nodes written back; Export then writes the files; the shared gate frees Cancel only at the end."""
    from dataclasses import replace

    from KneeT2SegmentLib import anatomy as an
    from KneeT2SegmentLib import simulator as sm
    from mskquant.imageio import write_image

    rec = install(monkeypatch, runtime)
    mod, widget = module_widget("KneeT2Segment")
    panel, ui = widget.panel, widget.panel.ui
    anat = an.prepare_anatomy(an.analytic_knee(), None, "analytic", "analytic knee")
    ph = sm.simulate(anat, replace(sm.PhantomParameters(snr=40.0, matrix=(224, 144), fov_mm=(70.0, 64.2))))
    # Load: a 4D NIfTI read in the worker, the sequence node made on the GUI thread
    write_image(ph.series.echoes, tmp_path / "mese.nii.gz")
    ui.meseFilePathLineEdit.currentPath = str(tmp_path / "mese.nii.gz")
    ui.echoTimesLineEdit.text = ",".join(f"{t:g}" for t in ph.series.echo_times_ms)
    ui.loadMeseButton.click()
    assert panel.controls.busy and not ui.runButton.enabled
    panel.controls.wait()
    seq = ui.meseSelector.currentNode()
    assert rec.dialogs == [] and seq is not None and seq.IsA("vtkMRMLSequenceNode")
    assert seq.GetNumberOfDataNodes() == len(ph.series.echo_times_ms)
    mask = mrml.volume_from_image(runtime, ph.cartilage_mask, "cartilage", labelmap=True)
    ui.maskSelector.setCurrentNode(mask)
    ui.noiseSigmaSpinBox.value = ph.sigma
    ui.lateralityComboBox.currentText = "Right"  # a NIfTI does not record it; the analytic knee is a right knee
    ui.runButton.click()
    assert rec.dialogs == [], rec.dialogs
    assert panel.controls.busy and not ui.segmentButton.enabled and ui.cancelButton.enabled
    panel.controls.wait()
    assert rec.dialogs == [] and panel.result is not None and "Femoral cartilage T2" in ui.resultLabel.text
    assert ui.exportButton.enabled and ui.runButton.enabled and not ui.cancelButton.enabled
    assert panel.result.t2_volume.GetScene() is runtime.scene
    ui.exportDirectoryLineEdit.currentPath = str(tmp_path / "out")
    ui.exportButton.click()
    assert rec.dialogs == [] and any((tmp_path / "out").iterdir())
    # Segment: the network in the worker, a new editable segmentation referencing this MESE
    assert not ui.editSegmentationButton.enabled
    ui.segmentButton.click()
    assert panel.controls.busy and not ui.runButton.enabled and not ui.exportButton.enabled
    panel.controls.wait()
    assert rec.dialogs == [] and panel.segmentation is not None
    node = panel.segmentation.segmentation
    assert ui.maskSelector.currentNode() is node and node.GetNodeReference("MSKQuantMESE") is seq
    assert ui.editSegmentationButton.enabled and ui.exportButton.enabled and not ui.cancelButton.enabled
    # Agreement: the phantom's cartilage (A) against the model's segmentation (B), statistics in the worker
    ui.agreementASelector.setCurrentNode(mask)
    ui.agreementBSelector.setCurrentNode(node)
    ui.agreementButton.click()
    assert panel.controls.busy and not ui.segmentButton.enabled
    panel.controls.wait()
    assert rec.dialogs == [] and ui.agreementResultLabel.text.startswith("Dice ")
    assert ui.agreementExportButton.enabled and not ui.agreementSetButton.enabled  # one scan so far
    widget.cleanup()


def test_vhi_self_test_passes_through_the_logic_wrapper(monkeypatch, runtime):
    """What "Reload and Test" runs: the module file's own self-test, on the real scene through the thin Logic."""
    install(monkeypatch, runtime)
    from panel_standins import load_module_file

    mod = load_module_file("VHIWorkflow")
    test = mod.VHIWorkflowTest("runTest")
    test.runTest()
