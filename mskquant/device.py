"""Compute-device choice: CUDA when available, else CPU; CPU can be forced.

``MSKQUANT_DEVICE=cpu`` (or ``cuda``) in the environment overrides the automatic choice,
e.g. to keep a shared GPU free or to reproduce CPU timings.
"""

from __future__ import annotations

import os

from .errors import InputError, MSKQuantError

ENV_DEVICE = "MSKQUANT_DEVICE"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the platform tells it)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def omp_threads() -> int:
    """``OMP_NUM_THREADS`` as a positive count, or 0 when it is unset or not a positive whole number."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def select_device(preference: str = "auto"):
    """Return the ``torch.device`` to run on.

    ``preference`` is ``"auto"``, ``"cpu"`` or ``"cuda"``; the environment variable
    ``MSKQUANT_DEVICE`` takes precedence over ``"auto"``.
    """
    import torch

    pref = (preference or "auto").lower()
    if pref == "auto":
        pref = os.environ.get(ENV_DEVICE, "auto").lower() or "auto"
    if pref not in ("auto", "cpu", "cuda"):
        raise MSKQuantError(f"Unknown device '{pref}': use auto, cpu or cuda.")
    if pref == "cpu":
        return torch.device("cpu")
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise MSKQuantError(
                "CUDA was requested but PyTorch sees no CUDA GPU: install a CUDA build of "
                "PyTorch (PyTorch extension in Slicer) or run on the CPU."
            )
        return torch.device("cuda")
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


PRECISIONS = ("float32", "bfloat16", "auto")


def bf16_supported(device) -> bool:
    """Whether ``device`` runs bfloat16 arithmetic natively (AVX-512 BF16/AMX CPUs, recent GPUs)."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(precision: str, device) -> bool:
    """``precision`` ("float32", "bfloat16" or "auto": bfloat16 where the device supports it) -> bf16 on/off."""
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision '{precision}': use {', '.join(PRECISIONS)}.")
    return precision == "bfloat16" or (precision == "auto" and bf16_supported(device))


def autocast(device, enabled: bool):
    """bfloat16 autocast on ``device`` when ``enabled`` (thread-local: enter it in the thread that runs the network)."""
    import contextlib

    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def describe_device_without_loading(preference: str = "auto") -> str:
    """What :func:`select_device` would choose, told without importing torch (for ``mskquant info``).

    Importing torch takes seconds; ``info`` must answer at once. The choice is CUDA only when
    the environment allows it, the installed torch is a CUDA build (its ``version.py``) and
    the NVIDIA driver shows a GPU; when torch is already loaded it is asked directly.
    """
    import sys

    if "torch" in sys.modules:
        return describe_device(select_device(preference))
    import importlib.util

    cores = usable_cores()
    pref = (preference or "auto").lower()
    if pref == "auto":
        pref = os.environ.get(ENV_DEVICE, "auto").lower() or "auto"
    if pref == "cpu":
        return f"cpu ({cores} cores; {ENV_DEVICE}=cpu)" if preference == "auto" else f"cpu ({cores} cores)"
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        raise MSKQuantError("PyTorch is not installed: install it (the PyTorch extension in Slicer, or pip).")
    version_py = os.path.join(list(spec.submodule_search_locations)[0], "version.py")
    try:
        with open(version_py, encoding="utf-8") as fh:
            cuda_build = any(line.startswith("cuda") and "None" not in line for line in fh)
    except OSError:
        cuda_build = False
    gpus = sorted(os.listdir("/proc/driver/nvidia/gpus")) if os.path.isdir("/proc/driver/nvidia/gpus") else []
    if cuda_build and gpus:
        name = "NVIDIA GPU"
        try:
            with open(f"/proc/driver/nvidia/gpus/{gpus[0]}/information", encoding="utf-8") as fh:
                name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("Model:")), name)
        except OSError:
            pass
        return f"cuda ({name})"
    if pref == "cuda":
        raise MSKQuantError("CUDA was requested but " + ("this PyTorch is a CPU-only build" if not cuda_build else
                                                         "no NVIDIA GPU is visible") +
                            ": install a CUDA build of PyTorch (PyTorch extension in Slicer) or run on the CPU.")
    return f"cpu ({cores} cores; {'no CUDA GPU visible' if cuda_build else 'CPU-only PyTorch build'})"
