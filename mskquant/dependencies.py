"""Python dependencies inside a user's Slicer, installed once with the user's consent.

torch comes through the PyTorch extension (``PyTorchUtils``, which picks the CUDA or CPU
build that fits the machine); the other packages through ``slicer.packaging.pip_ensure``
(a submodule that first ships in Slicer 5.12 and exists only once imported) or
``slicer.util.pip_install`` on 5.10/5.11. Minimum versions come from ``requirements.txt``
beside this file. The user is asked once per session, by this module; the installers are
then called with their own prompts off, so nobody is asked twice. Declining leaves the
module usable for browsing but stops processing with a clear message.

The minimum Slicer version is decided here, once: 5.10 (its Python is 3.12.10,
``SuperBuild/External_python.cmake`` at tag v5.10.0). The top-level ``CMakeLists.txt``,
the README and ``pyproject.toml`` say the same; ``Testing/test_dependencies.py`` checks it.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from .errors import MSKQuantError

REQUIREMENTS_FILE = Path(__file__).with_name("requirements.txt")
MINIMUM_SLICER_VERSION = "5.10"
MINIMUM_SLICER_PYTHON = "3.12"  # the Python that Slicer MINIMUM_SLICER_VERSION ships
_declined = False
_checked = False


def read_requirements(path: Path = REQUIREMENTS_FILE) -> List[Tuple[str, str]]:
    """``[(distribution name, minimum version or "")]`` from a requirements file (``name>=x`` lines)."""
    reqs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?", line)
        if not m:
            raise ValueError(f"unsupported requirement line {line!r} in {path} (use 'name' or 'name>=version')")
        reqs.append((m.group(1), m.group(2) or ""))
    return reqs


def _version_tuple(v: str) -> Tuple[int, ...]:
    parts = []
    for p in re.split(r"[.+]", v):
        m = re.match(r"\d+", p)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def missing_requirements(requirements: List[Tuple[str, str]],
                         version_of: Callable[[str], Optional[str]] = None) -> List[str]:
    """Requirements not satisfied, as ``name>=min`` strings (pip syntax)."""
    def installed(name: str) -> Optional[str]:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    version_of = version_of or installed
    missing = []
    for name, minimum in requirements:
        have = version_of(name)
        if have is None or (minimum and _version_tuple(have) < _version_tuple(minimum)):
            missing.append(f"{name}>={minimum}" if minimum else name)
    return missing


def ensure_dependencies(ask: bool = True) -> None:
    """Inside Slicer: make sure torch and the other requirements are importable.

    Raises :class:`MSKQuantError` if the user declines or installation fails.
    """
    global _declined, _checked
    if _checked:
        return
    reqs = read_requirements()
    missing = missing_requirements(reqs)
    if not missing:
        _checked = True
        return
    if _declined:
        raise MSKQuantError(f"MSKQuant needs {', '.join(missing)}; installation was declined. "
                            f"Restart Slicer and accept the installation to process data.")
    import slicer

    check_slicer_version(slicer.app)
    torch_req = next((f">={m}" if m else "" for n, m in reqs if n == "torch"), "")
    others = [m for m in missing if not m.startswith("torch")]
    if ask and not slicer.app.commandOptions().testingEnabled:
        if not slicer.util.confirmOkCancelDisplay(
            "MSKQuant needs these Python packages, which are not installed yet:\n  "
            + "\n  ".join(missing)
            + "\n\nInstall them now? PyTorch is large (CPU build ~200 MB, CUDA build several GB) and may take "
              "several minutes to download.", "MSKQuant: install dependencies"):
            _declined = True
            raise MSKQuantError("Dependency installation declined: MSKQuant cannot process data without "
                                + ", ".join(missing) + ".")
    if any(m.startswith("torch") for m in missing):
        try:
            import PyTorchUtils
        except ImportError:
            raise MSKQuantError("The PyTorch extension is not installed: install 'PyTorch' from the Extensions "
                                "Manager, restart Slicer and try again.") from None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=torch_req)
        if torch is None:
            raise MSKQuantError("PyTorch could not be installed: use the PyTorch Utils module to install it.")
    if others:
        install_packages(others)
    still = missing_requirements(reqs)
    if still:
        raise MSKQuantError(f"Could not install {', '.join(still)}: see the Python console for pip's output.")
    _checked = True


def check_slicer_version(app) -> None:
    """Refuse to run on a Slicer older than :data:`MINIMUM_SLICER_VERSION`."""
    have = (int(app.majorVersion), int(app.minorVersion))
    if have < _version_tuple(MINIMUM_SLICER_VERSION):
        raise MSKQuantError(f"MSKQuant needs 3D Slicer {MINIMUM_SLICER_VERSION} or later; this is "
                            f"{have[0]}.{have[1]}. Install a newer Slicer from download.slicer.org.")


def install_packages(requirements: List[str]) -> None:
    """pip-install ``requirements`` (the user has already agreed): ``slicer.packaging.pip_ensure``
    where it exists (5.12+), with its prompt off and not skipped in testing mode, else
    ``slicer.util.pip_install``."""
    import slicer

    try:
        import slicer.packaging as packaging  # a submodule: not an attribute until imported
    except ImportError:
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(requirements, prompt_install=False, requester="MSKQuant", skip_in_testing=False)
    else:
        slicer.util.pip_install(requirements)
