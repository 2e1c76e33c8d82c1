"""Where the extension's resources are, in the source tree and once installed in Slicer."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """The top-level ``Resources/`` folder (Models.json, bundled weights, icons)."""
    for candidate in (_PACKAGE / "Resources", _PACKAGE.parent / "Resources"):
        if (candidate / "Models.json").is_file():
            return candidate
    raise FileNotFoundError(
        "MSKQuant resources (Models.json) not found next to the mskquant package: reinstall the extension."
    )


def repository_root() -> Path | None:
    """The source checkout's root when running from one (None inside an installed Slicer)."""
    root = _PACKAGE.parent
    return root if (root / "CMakeLists.txt").is_file() and (root / "VHIWorkflow").is_dir() else None


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the checkout (real validation data), when present."""
    import os

    env = os.environ.get("MSKQUANT_SHARED_DATA")
    if env:
        p = Path(env)
        return p if p.is_dir() else None
    root = repository_root()
    if root is None:
        return None
    p = root.parent / "shared" / "data"
    return p if p.is_dir() else None


def recorded_input(folder: Path, recorded: "str | None") -> "Path | None":
    """An input file a run recorded in its summary (``vhi.json``, ``pain.json``...): absolute, or relative to
    where the run was started (tried from the result folder and its parents, then the current folder)."""
    if not recorded:
        return None
    p = Path(recorded).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (Path(folder), *Path(folder).resolve().parents, Path.cwd()):
        if (base / p).is_file():
            return base / p
    return None


def read_run_summary(folder: Path, file_name: str, command: str) -> dict:
    """The JSON summary a single-case command wrote into its output folder, or one clear error."""
    import json

    from .errors import InputError

    path = Path(folder) / file_name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read ({exc}): give a 'mskquant {command}' output folder.") from None
