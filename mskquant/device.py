"""Compute-device choice: CUDA when available, else CPU; CPU can be forced.

``MSKQUANT_DEVICE=cpu`` (or ``cuda``) in the environment overrides the automatic choice,
e.g. to keep a shared GPU free or to reproduce CPU timings.
"""

from __future__ import annotations

import os

from .errors import MSKQuantError

ENV_DEVICE = "MSKQUANT_DEVICE"


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


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
