"""Scenes as Medical Reality Bundles (``.mrb``): the whole scene in one file, as Slicer saves it.

Slicer's own path (``vtkMRMLApplicationLogic``): every storable node is written into a
``Data/`` folder beside the ``.mrml`` scene file, the folder is zipped; reading unpacks it
and loads the scene. It works the same in the application and on the headless runtime, so a
result made by the command line or a test opens in Slicer with its parameter node, volumes,
segmentations (the edited one and its hidden automatic copy), tables and colour tables.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .atomic import atomic_path, native_stderr_captured
from .errors import InputError, OutputError
from .headless import SlicerRuntime


def save_scene_bundle(rt: SlicerRuntime, path: "str | os.PathLike") -> Path:
    """Write the scene of ``rt`` as one ``.mrb`` file (atomically)."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".mrb":
        raise OutputError(f"Scene file {path} must end with .mrb.")
    work = Path(tempfile.mkdtemp(prefix=".mskquant-mrb-", dir=path.parent if path.parent.is_dir() else None))
    try:
        bundle = work / path.stem
        bundle.mkdir()
        with native_stderr_captured() as native:
            saved = rt.app_logic.SaveSceneToSlicerDataBundleDirectory(str(bundle), None)
            with atomic_path(path) as tmp:
                if not saved or not rt.app_logic.Zip(str(tmp), str(bundle)):
                    said = native.text().strip().splitlines()
                    raise OutputError(f"Cannot save the scene as {path} ({said[-1][-160:] if said else 'unknown reason'}"
                                      f"): choose another folder with free space.")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Slicer's Sequences module refreshes the proxy nodes when a scene is imported; the headless
    # runtime has no module to do it, so each browser shows its selected item here.
    for n in range(rt.scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        rt.sequences.UpdateProxyNodesFromSequences(rt.scene.GetNthNodeByClass(n, "vtkMRMLSequenceBrowserNode"))
    return path


def load_scene_bundle(rt: SlicerRuntime, path: "str | os.PathLike") -> None:
    """Add the nodes of a ``.mrb`` scene file to the scene of ``rt``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"Scene file {path} does not exist: check the path.")
    work = Path(tempfile.mkdtemp(prefix="mskquant-mrb-"))
    try:
        with native_stderr_captured() as native:
            if not rt.app_logic.OpenSlicerDataBundle(str(path), str(work)):
                said = native.text().strip().splitlines()
                raise InputError(f"{path} cannot be opened as a Slicer scene bundle "
                                 f"({said[-1][-160:] if said else 'unknown reason'}): give a .mrb file saved by Slicer.")
    finally:
        shutil.rmtree(work, ignore_errors=True)
