"""A Slicer scene and application logic without the Slicer GUI (PyPI ``slicer-core``).

Every module Logic takes a :class:`SlicerRuntime` — the scene plus the module logics it
needs — so the same code runs in the Slicer application, in the ``mskquant`` CLI, in batch
scripts and in the tests. Inside Slicer, :func:`current_runtime` wraps ``slicer.mrmlScene``
and the application logic; elsewhere it builds a headless one the way the application does
at start-up: create the scene, the application logic, the built-in module logics, and
register each logic under its module name (``vtkSlicerApplicationLogic.SetModuleLogic``).
"""

from __future__ import annotations

import threading
from typing import Optional

_LOCK = threading.Lock()
_HEADLESS: Optional["SlicerRuntime"] = None

# (module name, logic class name) registered in a headless runtime; order matters:
# Colors first (volume display nodes look it up), Sequences after Volumes.
BUILTIN_LOGICS = (
    ("Colors", "vtkMRMLColorLogic"),  # vtkSlicerColorLogic needs the application home for its files
    ("Volumes", "vtkSlicerVolumesLogic"),
    ("Segmentations", "vtkSlicerSegmentationsModuleLogic"),
    ("SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
    ("Tables", "vtkSlicerTablesLogic"),
    ("Plots", "vtkSlicerPlotsLogic"),
    ("Markups", "vtkSlicerMarkupsLogic"),
    ("Sequences", "vtkSlicerSequencesLogic"),
    ("Transforms", "vtkSlicerTransformLogic"),
)


def import_slicer():
    """Import ``slicer`` with an actionable message when slicer-core is missing."""
    try:
        import slicer  # noqa: F401
    except ImportError as exc:
        from .errors import MSKQuantError

        raise MSKQuantError(
            "The Slicer libraries are not installed: run MSKQuant inside 3D Slicer, or run "
            "'bash scripts/setup_env.sh' (installs PyPI slicer-core into .venv)."
        ) from exc
    return slicer


def in_slicer_application() -> bool:
    """True inside the Slicer desktop application (``slicer.app`` exists)."""
    import sys

    slicer = sys.modules.get("slicer")
    return slicer is not None and getattr(slicer, "app", None) is not None


class SlicerRuntime:
    """A MRML scene and the application logic that holds the module logics."""

    def __init__(self, scene, app_logic, headless: bool, owned_logics=None) -> None:
        self.scene = scene
        self.app_logic = app_logic
        self.headless = headless
        # The application logic keeps only weak references to module logics (in Slicer the
        # modules own them): a headless runtime must own its logics itself.
        self._owned_logics = dict(owned_logics or {})

    def logic(self, module_name: str):
        logic = self.app_logic.GetModuleLogic(module_name)
        if logic is None:
            raise RuntimeError(f"module logic '{module_name}' is not registered with the application logic")
        return logic

    @property
    def volumes(self):
        return self.logic("Volumes")

    @property
    def segmentations(self):
        return self.logic("Segmentations")

    @property
    def sequences(self):
        return self.logic("Sequences")

    @property
    def tables(self):
        return self.logic("Tables")

    @property
    def markups(self):
        return self.logic("Markups")

    def clear(self) -> None:
        """Remove all user nodes (keeps default colour tables and singletons)."""
        self.scene.Clear(False)


def create_headless_runtime() -> SlicerRuntime:
    """A fresh scene + application logic with the built-in module logics registered."""
    slicer = import_slicer()
    from . import vtklite as vtk

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    # Slice/view logic collections must exist even without views (as in the application).
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetViewLogics(vtk.vtkCollection())
    return SlicerRuntime(scene, app_logic, headless=True, owned_logics=_add_logics(slicer, scene, app_logic))


def _add_logics(slicer, scene, app_logic) -> dict:
    """Create and register the built-in module logics the application logic does not have yet."""
    owned = {}
    for module_name, class_name in BUILTIN_LOGICS:
        if app_logic.GetModuleLogic(module_name) is not None:
            continue
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(module_name, logic)
        owned[module_name] = logic
    return owned


def runtime_on(scene, app_logic) -> SlicerRuntime:
    """A runtime on a scene and application logic made elsewhere (a viewer application that renders
    this scene): the built-in module logics it lacks are added, so the module Logics and the views
    share one scene."""
    return SlicerRuntime(scene, app_logic, headless=True, owned_logics=_add_logics(import_slicer(), scene, app_logic))


def current_runtime() -> SlicerRuntime:
    """The application's scene inside Slicer; otherwise one process-wide headless runtime."""
    global _HEADLESS
    if in_slicer_application():
        import slicer

        return SlicerRuntime(slicer.mrmlScene, slicer.app.applicationLogic(), headless=False)
    with _LOCK:
        if _HEADLESS is None:
            _HEADLESS = create_headless_runtime()
        return _HEADLESS
