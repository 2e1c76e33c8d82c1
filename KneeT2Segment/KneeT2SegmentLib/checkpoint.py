"""The femoral cartilage model file: checkpoint format, loading with clear errors, registry entries.

Thomas et al. 2.4-2.5 store a trained U-Net plus two post-processing thresholds chosen on
validation data; here both travel in one PyTorch file so that weights trained elsewhere (for
example on real OAI MESE with a reader's masks) can be registered with
``mskquant models add FILE --id ID --like knee-femoral-cartilage-mese`` and used by every
front end. The file is a ``dict`` that ``torch.load(..., weights_only=True)`` reads (only
tensors, numbers, strings, lists and dicts)::

    {
      "format": "mskquant.knee-cartilage-unet",   # FORMAT
      "format_version": 1,
      "architecture": {"name": "unet2d", "params": {"in_channels": 1, "out_channels": 1,
                       "features": [16, 32, 64, 128, 256], "kernel_size": 3,
                       "batch_norm": true, "up_mode": "transpose", "final_activation": "sigmoid"}},
      "input": {"echo": 2,                        # 1-based echo fed to the network
                "network_size": [384, 384],       # rows, columns after pad/crop
                "layout": "sagittal slices; rows superior->inferior, columns anterior->posterior",
                "normalisation": "per volume: 25th percentile -> -1, 75th -> +1, clip to 3rd-97th"},
      "postprocessing": {"probability_threshold": 0.5,      # binarise at p >= this
                         "min_slice_area_mm2": 41.5,        # drop slices with less cartilage
                         "fit_probability": 0.01,           # voxels with p > this get a T2 fit
                         "t2_range_ms": [0.0, 100.0],       # T2 outside is dropped
                         "calibrated": true, "calibration": {...}},
      "state_dict": {...},                        # mskquant.unet.UNet2D parameter names
      "training": {...}                           # data, recipe, split, metrics (free form)
    }

``postprocessing`` may be absent while a model is being trained (``calibrated`` false); a
model without calibrated thresholds is refused for segmentation and registration
(``mskquant knee-calibrate`` adds them). A resumable training checkpoint (``last.pt`` of
``mskquant knee-train``) has the same keys plus ``optimizer`` and ``resume``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from mskquant.errors import ModelError

FORMAT = "mskquant.knee-cartilage-unet"
FORMAT_VERSION = 1
MODULE = "KneeT2Segment"
TASK = "femoral-cartilage-segmentation"
DEFAULT_MODEL_ID = "knee-femoral-cartilage-mese"
LAYOUT = "sagittal slices; rows superior->inferior, columns anterior->posterior"
NORMALISATION = ("per volume: linear map with the 25th percentile -> -1 and the 75th -> +1 (median ~0), "
                 "then clipped to the mapped 3rd-97th percentile values")
FIT_PROBABILITY = 0.01  # Thomas et al. 2.5: voxels with p > .01 are candidates and get a T2 fit
T2_RANGE_MS = (0.0, 100.0)


@dataclass(frozen=True)
class Thresholds:
    """Post-processing of Thomas et al. 2.5 (the two calibrated values plus the fixed ones)."""

    probability: float  # binarise at p >= this
    min_slice_area_mm2: float  # slices with less cartilage (area in the slice plane) are dropped
    fit_probability: float = FIT_PROBABILITY
    t2_range_ms: Tuple[float, float] = T2_RANGE_MS

    def min_slice_voxels(self, pixel_area_mm2: float) -> int:
        """The slice minimum in voxels of a grid whose in-plane pixels cover ``pixel_area_mm2``."""
        return int(math.ceil(self.min_slice_area_mm2 / pixel_area_mm2 - 1e-9))

    def as_dict(self) -> dict:
        return {"probability_threshold": float(self.probability), "min_slice_area_mm2": float(self.min_slice_area_mm2),
                "fit_probability": float(self.fit_probability), "t2_range_ms": [float(v) for v in self.t2_range_ms]}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "Thresholds":
        try:
            p = float(d["probability_threshold"])
            area = float(d["min_slice_area_mm2"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{where} has no calibrated post-processing thresholds (probability_threshold, "
                             f"min_slice_area_mm2): run 'mskquant knee-calibrate' on the model and register the "
                             f"calibrated file.") from None
        if not (0.0 < p < 1.0) or not (area >= 0.0) or not math.isfinite(area):
            raise ModelError(f"{where} has invalid thresholds (p >= {p}, {area} mm2): the probability threshold must "
                             f"lie in (0, 1) and the slice area be >= 0; calibrate the model again.")
        rng = d.get("t2_range_ms", T2_RANGE_MS)
        return cls(p, area, float(d.get("fit_probability", FIT_PROBABILITY)), (float(rng[0]), float(rng[1])))


@dataclass
class Checkpoint:
    """A model file's content, checked."""

    path: Path
    architecture: dict
    input: dict
    state_dict: dict
    postprocessing: Optional[dict]
    training: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def echo(self) -> int:
        return int(self.input.get("echo", 2))

    @property
    def network_size(self) -> Tuple[int, int]:
        size = self.input.get("network_size", [384, 384])
        return int(size[0]), int(size[1])

    def thresholds(self) -> Thresholds:
        if not self.postprocessing or not self.postprocessing.get("calibrated", True):
            raise ModelError(f"Model file {self.path} has no calibrated post-processing thresholds: run 'mskquant "
                             f"knee-calibrate --model {self.path} ...' and use the calibrated file.")
        return Thresholds.from_dict(self.postprocessing, f"Model file {self.path}")


def make_checkpoint(architecture: dict, state_dict: dict, input_spec: dict, postprocessing: Optional[dict] = None,
                    training: Optional[dict] = None, **extra) -> dict:
    """The dict saved with ``torch.save`` (tensors moved to the CPU)."""
    state = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": copy.deepcopy(architecture),
            "input": dict(input_spec), "state_dict": state, "training": copy.deepcopy(training or {})}
    if postprocessing is not None:
        ckpt["postprocessing"] = copy.deepcopy(postprocessing)
    ckpt.update(extra)
    return ckpt


def default_input_spec(echo: int = 2, network_size=(384, 384)) -> dict:
    return {"echo": int(echo), "network_size": [int(network_size[0]), int(network_size[1])], "layout": LAYOUT,
            "normalisation": NORMALISATION, "plane": "sagittal", "modality": "MESE (multi-echo spin echo)"}


def read_checkpoint(path, what: str = "Knee cartilage model") -> Checkpoint:
    """Load and check a model file: readable, our format, an architecture and a state dict."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"{what} file {path} does not exist: check the path, or 'mskquant models list' for the "
                         f"registered models.")
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise ModelError(f"{what} file {path} cannot be read ({type(exc).__name__}): the file is corrupt or not a "
                         f"PyTorch file; train, download or copy it again.") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        kind = "a bare state dict" if isinstance(raw, dict) and raw and all(
            hasattr(v, "shape") for v in raw.values()) else f"a {type(raw).__name__} of another format"
        raise ModelError(f"{what} file {path} is {kind}, not a '{FORMAT}' checkpoint: save it with the documented "
                         f"checkpoint format (KneeT2SegmentLib/checkpoint.py; 'mskquant knee-train' writes it).")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(f"{what} file {path} has checkpoint format version {version}; this MSKQuant reads version "
                         f"{FORMAT_VERSION}: update MSKQuant or export the model again.")
    arch, state = raw.get("architecture"), raw.get("state_dict")
    if not isinstance(arch, dict) or arch.get("name") != "unet2d" or not isinstance(state, dict):
        raise ModelError(f"{what} file {path} lacks a 'unet2d' architecture or its state_dict: export it again with "
                         f"the documented checkpoint format.")
    inp = raw.get("input") or {}
    return Checkpoint(path, arch, dict(inp), state, raw.get("postprocessing"), dict(raw.get("training") or {}), raw)


def build_network(architecture: dict, state_dict: dict, where: str):
    """The U-Net of ``architecture`` with ``state_dict`` loaded; every tensor must fit exactly."""
    import torch

    from mskquant.unet import build_unet, state_dict_mismatch

    params = dict(architecture.get("params") or {})
    try:
        net = build_unet(params)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where} describes an invalid U-Net ({exc}): fix its architecture parameters.") from None
    mismatch = state_dict_mismatch(net.state_dict(), state_dict)
    if mismatch:
        raise ModelError(f"{where} weights do not fit its architecture ({mismatch}): the file is damaged or "
                         f"was saved with another network; export it again.")
    net.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state_dict.items()})
    return net.eval()


def registry_extra(file, like) -> Dict[str, object]:
    """Registry fields for ``mskquant models add FILE --like <knee model>`` read from the file itself.

    Refuses files that are not checkpoints of this format, whose weights do not fit their
    architecture, or that carry no calibrated thresholds.
    """
    ckpt = read_checkpoint(file, "Model")
    build_network(ckpt.architecture, ckpt.state_dict, f"Model file {ckpt.path}")
    ckpt.thresholds()  # refuses uncalibrated models with one clear error
    base_input = dict(like.raw.get("input") or {})
    base_input.update(ckpt.input)
    training = ckpt.training
    data = training.get("data") or "user data"
    return {
        "architecture": copy.deepcopy(ckpt.architecture),
        "input": base_input,
        "output": {"kind": "probability"},
        "postprocessing": copy.deepcopy(ckpt.postprocessing),
        "description": f"Femoral cartilage U-Net registered from {ckpt.path.name} (trained on: {data}).",
    }
