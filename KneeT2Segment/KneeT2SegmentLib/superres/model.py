"""The super-resolution model file and its loading (registered id or ``.pt`` file).

A ``torch.save`` dict that ``torch.load(..., weights_only=True)`` reads::

    {"format": "mskquant.knee-superres", "format_version": 1,
     "architecture": {"name": "residual-sr-cnn", "params": {"depth": 8, "width": 32, "separable": true}},
     "input": {"factor": 3,                       # thick slice = factor x the output slice
               "thick_slice_mm": [1.5, 3.0],      # thick slice spacings the model accepts
               "min_anisotropy": 2.0,             # thick spacing / finest in-plane spacing
               "normalisation": "..."},
     "state_dict": {...}, "training": {...}}      # training: data, split, recipe, metrics

A resumable training checkpoint (``last.pt``) has the same keys plus ``optimizer`` and ``resume``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from mskquant.errors import ModelError

FORMAT = "mskquant.knee-superres"
FORMAT_VERSION = 1
MODULE = "KneeT2Segment"
TASK = "through-plane-super-resolution"
DEFAULT_MODEL_ID = "knee-superres-3x"
NORMALISATION = "per volume: TCI divided by its 99.5th percentile (output multiplied back)"
SCALE_PERCENTILE = 99.5


def default_input_spec(factor: int = 3) -> dict:
    return {"factor": int(factor), "thick_slice_mm": [1.5, 3.0], "min_anisotropy": 2.0,
            "normalisation": NORMALISATION, "layout": "slice axis = the image axis of the largest spacing"}


def make_checkpoint(net, input_spec: dict, training: dict, **extra) -> dict:
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": net.architecture(),
            "input": dict(input_spec), "state_dict": state, "training": copy.deepcopy(training)}
    ckpt.update(extra)
    return ckpt


@dataclass
class SuperResModel:
    net: "object"  # .network.ResidualSRNet (torch is imported only when a model is loaded)
    input: dict
    name: str
    training: dict = field(default_factory=dict)

    @property
    def factor(self) -> int:
        return int(self.input.get("factor", 3))


def read_model_file(path, what: str = "Super-resolution model") -> SuperResModel:
    import torch

    from .network import build_network

    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"{what} file {path} does not exist: check the path, or 'mskquant models list'.")
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise ModelError(f"{what} file {path} cannot be read ({type(exc).__name__}): copy or train it again.") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{what} file {path} is not a '{FORMAT}' version {FORMAT_VERSION} file: give a model "
                         f"written by scripts/train_superres.py.")
    arch = raw.get("architecture") or {}
    if arch.get("name") != "residual-sr-cnn":
        raise ModelError(f"{what} file {path} has architecture '{arch.get('name')}', not 'residual-sr-cnn'.")
    net = build_network(arch.get("params") or {})
    try:
        net.load_state_dict({k: v.float() for k, v in raw["state_dict"].items()})
    except (KeyError, RuntimeError) as exc:
        raise ModelError(f"{what} file {path}: the weights do not fit the architecture ({exc}).") from None
    return SuperResModel(net.eval(), dict(raw.get("input") or default_input_spec()), path.name,
                         dict(raw.get("training") or {}))


def load_model(model: str = DEFAULT_MODEL_ID, store=None, progress=None) -> SuperResModel:
    """A registered super-resolution model (by id) or a model file."""
    path = Path(str(model)).expanduser()
    if path.suffix == ".pt" or path.exists():
        return read_model_file(path)
    from mskquant.models import ModelStore

    store = store or ModelStore()
    spec = store.registry.get(str(model))
    if spec.module != MODULE or spec.task != TASK:
        raise ModelError(f"Model '{spec.id}' is a {spec.module} {spec.task} model, not a {TASK} model: choose e.g. "
                         f"'{DEFAULT_MODEL_ID}' ('mskquant models list').")
    loaded = read_model_file(store.ensure(spec.id, progress)[0], f"Model '{spec.id}'")
    loaded.name = spec.id
    return loaded
