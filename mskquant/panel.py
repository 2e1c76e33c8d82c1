"""What the three module panels share (GUI layer: runs only inside the Slicer application).

* :class:`RunControls`: one task at a time per panel, with a progress bar, a status label and
  one Cancel button for that task. While a task runs every button of the panel that could
  conflict with it is disabled (and given back its state afterwards). A task is split the way
  SlicerMONAIAuto3DSeg and TotalSegmentator keep Slicer responsive: ``prepare`` reads the MRML
  inputs on the GUI thread, ``compute`` runs in a worker thread and touches neither Qt nor MRML
  (it gets a :class:`mskquant.progress.Progress` whose reports the GUI polls with a QTimer),
  ``finish`` writes the MRML results on the GUI thread. A task whose logic is not split yet
  runs on the GUI thread, still behind the same gate.
* :func:`guarded`: a failure becomes exactly one readable dialog
  (``slicer.util.tryWithErrorDisplay`` shows it and re-raises; the exception stops here so no
  traceback reaches the Qt slot).
* :class:`SceneObserver`: the Slicer template's StartClose / EndClose / EndImport handling.
* helpers to fill segment pickers and to show results in the slice views.

No computation happens here: panels call the MRML logic of their module.
"""

from __future__ import annotations

import logging
import threading
import time

from .errors import MSKQuantError
from .progress import CancelToken, Cancelled, Progress


def guarded(title: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; a failure is shown once (``tryWithErrorDisplay``) and returns None."""
    import slicer

    try:
        with slicer.util.tryWithErrorDisplay(title, waitCursor=True):
            return fn(*args, **kwargs)
    except Exception:  # already shown to the user, once
        logging.info(title, exc_info=True)
        return None


class RunControls:
    """One task at a time: gate, progress, Cancel, worker thread (see the module docstring)."""

    POLL_MS = 100

    def __init__(self, cancel_button, progress_bar, status_label, buttons=()) -> None:
        import qt

        self.cancel_button = cancel_button
        self.progress_bar = progress_bar
        self.status_label = status_label
        self.buttons = list(buttons)  # every button a running task must lock
        self.token = None
        self._task = None
        self._last_events = 0.0
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self._poll)
        cancel_button.connect("clicked(bool)", self.cancel)
        cancel_button.enabled = False
        progress_bar.setRange(0, 1000)

    @property
    def busy(self) -> bool:
        return self._task is not None

    def cancel(self, *_):
        if self.token is not None:
            self.token.cancel()
            self.status_label.text = "Cancelling..."

    def _lock(self) -> None:
        self._saved = [(b, b.enabled) for b in self.buttons]
        for b in self.buttons:
            b.enabled = False
        self.cancel_button.enabled = True
        self.progress_bar.setValue(0)

    def _unlock(self) -> None:
        for b, was in self._saved:
            b.enabled = was
        self.cancel_button.enabled = False
        self.token = self._task = None

    def start(self, title: str, prepare, compute=None, finish=None) -> bool:
        """Run a task: ``prepare()`` (GUI thread) -> ``compute(data, progress)`` (worker thread,
        when given; else ``prepare(progress)`` is the whole task on the GUI thread) ->
        ``finish(value)`` (GUI thread). False when another task is running."""
        if self.busy:
            self.status_label.text = "Another task is running: wait for it or cancel it."
            return False
        self.token = CancelToken()
        self._task = {"title": title, "finish": finish, "started": time.monotonic(), "report": (0.0, "")}
        self._lock()
        progress = Progress(self._report, self.token)
        if compute is None:  # not split yet: the GUI thread does it, events processed for Cancel
            ok, value = self._guard(title, lambda: prepare(progress))
            self._done(ok, value)
            return True
        ok, data = self._guard(title, prepare)
        if not ok:
            self._done(False, None)
            return True
        task = self._task

        def work():
            try:
                task["value"] = compute(data, Progress(lambda f, m: task.update(report=(f, m)), self.token))
            except BaseException as exc:  # handed to the GUI thread
                task["error"] = exc

        task["thread"] = threading.Thread(target=work, name=f"MSKQuant {title}", daemon=True)
        task["thread"].start()
        self._timer.start()
        return True

    def _poll(self) -> None:
        task = self._task
        if task is None or "thread" not in task:
            self._timer.stop()
            return
        f, m = task["report"]
        self.progress_bar.setValue(int(f * 1000))
        if m:
            self.status_label.text = m
        if task["thread"].is_alive():
            return
        self._timer.stop()
        if task.get("discard"):  # the scene closed under the task: its results have nowhere to go
            self._unlock()
            return

        def result():
            if "error" in task:
                raise task["error"]
            return task.get("value")

        ok, value = self._guard(task["title"], result)
        self._done(ok, value)

    def wait(self, timeout_s: float = 600.0) -> None:
        """Block until the worker ends and deliver its result (tests; closing the application)."""
        task = self._task
        if task is not None and "thread" in task:
            task["thread"].join(timeout_s)
            self._poll()

    def discard(self) -> None:
        """The scene is closing: cancel the task and drop its result."""
        if self._task is not None:
            self._task["discard"] = True
            self.cancel()
            if "thread" not in self._task:
                self._unlock()

    def _guard(self, title, fn):
        """(True, value), or (False, None) after exactly one dialog; Cancelled is not an error."""
        import slicer

        try:
            with slicer.util.tryWithErrorDisplay(title, waitCursor=True):
                try:
                    return True, fn()
                except Cancelled:
                    self.status_label.text = "Cancelled: nothing was changed."
                    return False, None
                except MSKQuantError as exc:
                    self.status_label.text = str(exc)
                    raise
        except Exception:  # already shown to the user, once
            logging.info(title, exc_info=True)
            return False, None

    def _done(self, ok: bool, value) -> None:
        task = self._task
        self._unlock()
        if ok and value is not None:
            self.status_label.text = f"Done in {time.monotonic() - task['started']:.1f} s."
            self.progress_bar.setValue(1000)
            if task["finish"] is not None:
                guarded(task["title"], task["finish"], value)

    def _report(self, fraction: float, message: str) -> None:
        import slicer

        self.progress_bar.setValue(int(fraction * 1000))
        self.status_label.text = message
        now = time.monotonic()
        if now - self._last_events > 0.05:  # keep the GUI (and Cancel) responsive
            self._last_events = now
            slicer.app.processEvents()


class SceneObserver:
    """The Slicer module template's scene handling: ``on_close`` when a scene starts closing
    (drop results, cancel the task), ``on_reload`` after it closed or a scene was loaded
    (re-read the parameter node)."""

    EVENTS = ("StartCloseEvent", "EndCloseEvent", "EndImportEvent")

    def __init__(self, scene, on_close, on_reload) -> None:
        import slicer

        self.scene = scene
        handlers = {"StartCloseEvent": on_close, "EndCloseEvent": on_reload, "EndImportEvent": on_reload}
        self._tags = [scene.AddObserver(getattr(slicer.vtkMRMLScene, e), self._callback(handlers[e]))
                      for e in self.EVENTS]

    @staticmethod
    def _callback(handler):
        return lambda caller, event: handler()

    def remove(self) -> None:
        for tag in self._tags:
            self.scene.RemoveObserver(tag)
        self._tags = []


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
    A failure is one dialog. True when the files were written."""
    from pathlib import Path

    import slicer

    from .atomic import OutputFolder

    existing = [n for n in names if (Path(folder) / n).exists()]
    if existing and not slicer.util.confirmYesNoDisplay(
            f"{folder} already holds {', '.join(existing[:4])}. Replace them?"):
        return False

    def export():
        with OutputFolder(folder, names, overwrite=bool(existing)) as out:
            write(out)
        return True

    return bool(guarded(f"{what} failed.", export))


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


def open_segment_editor(segmentation_node, source_volume):
    """Switch to Segment Editor with the segmentation and its source volume selected; returns
    the editor's ``vtkMRMLSegmentEditorNode`` (its overwrite and masking settings)."""
    import slicer

    slicer.util.selectModule("SegmentEditor")
    editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
    editor.setSegmentationNode(segmentation_node)
    editor.setSourceVolumeNode(source_volume)
    return editor.mrmlSegmentEditorNode()


class LazyLogic:
    """What a module's thin Logic wrapper holds (``widget.logic``, so ``slicer.util.getModuleLogic``
    works): the MRML logic, made on first use after the dependency check (asked once)."""

    def __init__(self, factory) -> None:
        self._factory = factory
        self._impl = None

    @property
    def impl(self):
        if self._impl is None:
            from .dependencies import ensure_dependencies

            ensure_dependencies()
            self._impl = self._factory()
        return self._impl


class BatchSection:
    """A panel's "Batch" section: ``mskquant batch`` over a manifest in a background process.

    Run starts the command (:func:`mskquant.batchlauncher.batch_command`, Slicer's own Python)
    with :class:`mskquant.batchlauncher.BatchProcess`; a QTimer polls the per-case progress lines
    into the progress bar and the status label, so Slicer stays responsive; Cancel ends the
    process (a second Cancel kills it). The cohort itself never enters the scene.
    """

    POLL_MS = 500

    def __init__(self, pipeline, manifest_edit, output_edit, run_button, cancel_button, progress_bar,
                 status_label, pipeline_combo=None) -> None:
        import qt

        self.pipeline = pipeline
        self.pipeline_combo = pipeline_combo
        self.manifest_edit, self.output_edit = manifest_edit, output_edit
        self.run_button, self.cancel_button = run_button, cancel_button
        self.progress_bar, self.status_label = progress_bar, status_label
        self.process = None
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self.poll)
        run_button.connect("clicked(bool)", lambda *_: self.run())
        cancel_button.connect("clicked(bool)", lambda *_: self.cancel())
        cancel_button.enabled = False
        progress_bar.setRange(0, 1000)

    def command(self):
        from .batchlauncher import batch_command
        from .errors import InputError

        manifest, out = self.manifest_edit.currentPath.strip(), self.output_edit.currentPath.strip()
        if not manifest or not out:
            raise InputError("Choose the cohort manifest (CSV) and an output folder for the batch.")
        pipeline = self.pipeline_combo.currentText if self.pipeline_combo is not None else self.pipeline
        return batch_command(pipeline, manifest, out)

    def run(self) -> None:
        from .batchlauncher import BatchProcess

        if self.process is not None and self.process.running:
            return
        command = guarded("Batch", self.command)
        if command is None:
            return
        self.process = BatchProcess(command)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.progress_bar.setValue(0)
        self.status_label.text = "Starting the workers..."
        self._timer.start()

    def poll(self) -> None:
        if self.process is None:
            self._timer.stop()
            return
        state = self.process.state()
        p = state.progress
        if p is not None:
            self.progress_bar.setValue(int(p.fraction * 1000))
            self.status_label.text = (f"{p.index}/{p.total} cases, {p.failed} failed"
                                      + (f", ETA {p.eta}" if p.eta else "") + f" (last: {p.case} {p.state})")
        if state.returncode is None:
            return
        self._timer.stop()
        self.run_button.enabled, self.cancel_button.enabled = True, False
        closing = [ln for ln in state.lines if ln.strip()][-3:]
        self.status_label.text = "\n".join(closing) if closing else f"batch ended (exit code {state.returncode})"
        if state.returncode == 0:
            self.progress_bar.setValue(1000)

    def cancel(self) -> None:
        if self.process is not None:
            self.process.cancel()
            self.status_label.text = "Cancelling (the finished cases stay recorded)..."

    def discard(self) -> None:
        """The module is closing: stop the batch process."""
        if self.process is not None and self.process.running:
            self.process.cancel()
        self._timer.stop()
