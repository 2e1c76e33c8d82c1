"""The panels' "Batch" section driven like a user would (stand-ins for Qt: panel_standins.py):
Run starts ``mskquant batch`` in a background process and its progress lines fill the bar and
the label, a missing manifest is one dialog, Cancel ends the process."""

from __future__ import annotations

import csv
import sys
import time

import pytest

from conftest import write_vhi_case_files
from panel_standins import install, module_widget

pytest.importorskip("distributed")


def _wait(panel, seconds=180):
    deadline = time.monotonic() + seconds
    while panel.batch.process.running and time.monotonic() < deadline:
        time.sleep(0.1)
    panel.batch.process.wait(30)
    panel.batch.poll()  # the GUI timer's last tick


@pytest.fixture
def vhi_panel(monkeypatch, runtime):
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the batch process finds the code where this process did
    rec = install(monkeypatch, runtime)
    mod, widget = module_widget("VHIWorkflow")
    yield rec, widget.panel
    widget.cleanup()


def test_batch_section_runs_a_cohort_in_the_background(vhi_panel, tmp_path):
    rec, panel = vhi_panel
    ui = panel.ui
    write_vhi_case_files(tmp_path / "s1")
    with open(tmp_path / "cohort.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["case", "stir", "normal_roi", "disease_region"],
                                  ["s1", "s1/STIR.nii.gz", "s1/ROI.nii.gz", "s1/DR.nii.gz"]])
    ui.batchRunButton.click()  # nothing chosen yet: one dialog, no process
    assert len(rec.dialogs) == 1 and "manifest" in rec.dialogs[0] and panel.batch.process is None
    ui.batchManifestPathLineEdit.currentPath = str(tmp_path / "cohort.csv")
    ui.batchOutputPathLineEdit.currentPath = str(tmp_path / "out")
    ui.batchRunButton.click()
    assert panel.batch.process.command[:5] == [sys.executable, "-m", "mskquant.cli", "batch", "vhi"]
    assert not ui.batchRunButton.enabled and ui.batchCancelButton.enabled
    _wait(panel)
    assert panel.batch.process.state().returncode == 0, panel.batch.process.state().lines
    assert ui.batchProgressBar.value == 1000 and ui.batchRunButton.enabled and not ui.batchCancelButton.enabled
    assert "1 cases: 1 ok, 0 failed" in ui.batchStatusLabel.text
    assert (tmp_path / "out" / "cases" / "s1" / "vhi.json").is_file() and (tmp_path / "out" / "cohort.csv").is_file()


def test_batch_cancel_ends_the_process(vhi_panel, tmp_path):
    rec, panel = vhi_panel
    ui = panel.ui
    (tmp_path / "cohort.csv").write_text("case,stir,normal_roi\na,a.nii.gz,r.nii.gz\n")
    ui.batchManifestPathLineEdit.currentPath = str(tmp_path / "cohort.csv")
    ui.batchOutputPathLineEdit.currentPath = str(tmp_path / "out")
    ui.batchRunButton.click()
    ui.batchCancelButton.click()
    assert "Cancelling" in ui.batchStatusLabel.text
    _wait(panel, 60)
    assert panel.batch.process.state().returncode != 0 and ui.batchRunButton.enabled


def test_knee_panel_batch_pipeline_choice(monkeypatch, runtime, tmp_path):
    install(monkeypatch, runtime)
    mod, widget = module_widget("KneeT2Segment")
    ui = widget.panel.ui
    ui.batchManifestPathLineEdit.currentPath = "m.csv"
    ui.batchOutputPathLineEdit.currentPath = "out"
    assert widget.panel.batch.command()[4] == "knee-t2"
    ui.batchPipelineComboBox.currentText = "knee-change"
    assert widget.panel.batch.command()[4:9] == ["knee-change", "--manifest", "m.csv", "--out", "out"]
    widget.cleanup()
