"""What the three module panels share (GUI layer: runs only inside the Slicer application).

* :class:`RunControls` wires a Run button, a Cancel button, a progress bar and a status
  label to the progress/cancel protocol of :mod:`mskquant.progress`: long steps report
  through it, the bar moves, GUI events are processed so Cancel is seen, and failures
  become readable dialogs (``slicer.util.tryWithErrorDisplay``).
* helpers to fill segment pickers and to show results in the slice views.

No computation happens here: panels call the MRML logic of their module.
"""

from __future__ import annotations

import logging
import time

from .errors import MSKQuantError
from .progress import CancelToken, Cancelled, Progress


class RunControls:
    def __init__(self, run_button, cancel_button, progress_bar, status_label) -> None:
        self.run_button = run_button
        self.cancel_button = cancel_button
        self.progress_bar = progress_bar
        self.status_label = status_label
        self.token = None
        self._last_events = 0.0
        cancel_button.connect("clicked(bool)", self.cancel)
        progress_bar.setRange(0, 1000)

    def cancel(self, *_):
        if self.token is not None:
            self.token.cancel()
            self.status_label.text = "Cancelling..."

    def _report(self, fraction: float, message: str) -> None:
        import slicer

        self.progress_bar.setValue(int(fraction * 1000))
        self.status_label.text = message
        now = time.monotonic()
        if now - self._last_events > 0.05:  # keep the GUI (and Cancel) responsive
            self._last_events = now
            slicer.app.processEvents()

    def run(self, task, error_title: str):
        """Run ``task(progress)``; returns its result, or None if it failed or was cancelled."""
        import slicer

        self.token = CancelToken()
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress_bar.setValue(0)
        started = time.monotonic()
        result = None
        try:
            with slicer.util.tryWithErrorDisplay(error_title, waitCursor=True):
                try:
                    result = task(Progress(self._report, self.token))
                    self.status_label.text = f"Done in {time.monotonic() - started:.1f} s."
                except Cancelled:
                    self.status_label.text = "Cancelled: nothing was changed."
                except MSKQuantError as exc:
                    self.status_label.text = str(exc)
                    raise
        except Exception:  # already shown to the user by tryWithErrorDisplay
            logging.exception(error_title)
        finally:
            self.token = None
            self.run_button.enabled = True
            self.cancel_button.enabled = False
        return result


def module_parameter_node(module_name: str, scene=None):
    """The module's singleton parameter node (created on first use) in ``scene``
    (default: the application's scene). Parameters dataclasses save to and load from it.
    Created the way ``ScriptedLoadableModuleLogic.getParameterNode`` does (singleton tag and the
    ``ModuleName`` attribute), so ``getAllParameterNodes`` and the Slicer template find it."""
    import slicer

    scene = scene if scene is not None else slicer.mrmlScene
    node = scene.GetSingletonNode(module_name, "vtkMRMLScriptedModuleNode")
    if node is None:
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetSingletonTag(module_name)
        node.SetName(f"{module_name} parameters")
        node.SetAttribute("ModuleName", module_name)
        node = scene.AddNode(node)
    return node


def export_outputs(folder: str, names, write, what: str = "Export") -> bool:
    """Write the files ``names`` into ``folder`` through ``write(output_folder)``, all of them or
    none (:class:`mskquant.atomic.OutputFolder`), asking before replacing earlier results.
    Errors become a dialog. True when the files were written."""
    from pathlib import Path

    import slicer

    from .atomic import OutputFolder

    with slicer.util.tryWithErrorDisplay(f"{what} failed.", waitCursor=True):
        existing = [n for n in names if (Path(folder) / n).exists()]
        if existing and not slicer.util.confirmYesNoDisplay(
                f"{folder} already holds {', '.join(existing[:4])}. Replace them?"):
            return False
        with OutputFolder(folder, names, overwrite=bool(existing)) as out:
            write(out)
        return True
    return False


def fill_segment_combo(combo, node) -> None:
    """List the segments of a segmentation node in a QComboBox (empty for other node types)."""
    current = combo.currentText
    combo.clear()
    if node is not None and node.IsA("vtkMRMLSegmentationNode"):
        seg = node.GetSegmentation()
        for n in range(seg.GetNumberOfSegments()):
            combo.addItem(seg.GetNthSegment(n).GetName())
        idx = combo.findText(current)
        if idx >= 0:
            combo.setCurrentIndex(idx)
    combo.enabled = combo.count > 0


def show_volume(background=None, foreground=None, foreground_opacity=None, label=None, fit=True) -> None:
    import slicer

    kwargs = {}
    if background is not None:
        kwargs["background"] = background
    if foreground is not None:
        kwargs["foreground"] = foreground
    if foreground_opacity is not None:
        kwargs["foregroundOpacity"] = foreground_opacity
    if label is not None:
        kwargs["label"] = label
    slicer.util.setSliceViewerLayers(fit=fit, **kwargs)


def open_segment_editor(segmentation_node, source_volume) -> None:
    """Switch to Segment Editor with the segmentation and its source volume selected."""
    import slicer

    slicer.util.selectModule("SegmentEditor")
    editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
    editor.setSegmentationNode(segmentation_node)
    if hasattr(editor, "setSourceVolumeNode"):
        editor.setSourceVolumeNode(source_volume)
    else:  # Slicer < 5.4
        editor.setMasterVolumeNode(source_volume)
