"""SiamesePainCAM weight files: the state dict with the architecture it was trained with.

``mskquant pain-train`` saves ``{"state_dict": ..., "architecture": ...}`` so that options that
add no parameters (``pooling``, ``lse_sharpness``) travel with the weights: a state dict alone
loads into a network of either pooling and would silently run with the wrong one.
:func:`mskquant.unet.load_weights` reads both this format and a bare state dict (the bundled
demo model, average pooling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch

from mskquant.errors import ModelError

from .network import ARCHITECTURE_NAME, SiamesePainNet, build_network


def save_model(model: SiamesePainNet, path: Path) -> None:
    torch.save({"state_dict": model.state_dict(), "architecture": model.architecture()}, str(path))


def saved_architecture(path: Path) -> Optional[Dict]:
    """The architecture stored in a weight file, or None for a bare state dict."""
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise ModelError(f"Weights {path} cannot be read ({type(exc).__name__}): the file is corrupt or not a "
                         f"PyTorch file; export it again.") from exc
    arch = data.get("architecture") if isinstance(data, dict) else None
    if arch is not None and arch.get("name") != ARCHITECTURE_NAME:
        raise ModelError(f"Weights {path} are a {arch.get('name')!r} network, not {ARCHITECTURE_NAME!r}.")
    return arch


def registry_extra(file, like) -> Dict[str, object]:
    """Registry fields for ``mskquant models add FILE --like <pain model>``: the architecture saved
    with the weights (checked by building it), else the ``--like`` model's (bare state dicts)."""
    arch = saved_architecture(Path(file))
    if arch is None:
        return {}
    build_network(arch.get("params", {}))
    return {"architecture": arch}
