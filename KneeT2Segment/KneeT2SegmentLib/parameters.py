"""KneeT2Segment parameters as a dataclass, stored in the scene's parameter node.

Defaults follow Thomas et al. 2.5: the first echo is excluded, valid T2 range [0, 100] ms,
sigma estimated from the background air unless given; the knee's laterality comes from the
image metadata unless the user gives it. Without a cartilage mask the registered cartilage
model ``model_id`` segments automatically, on ``device``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

from mskquant.device import PRECISIONS
from mskquant.errors import InputError

from .checkpoint import DEFAULT_MODEL_ID


@dataclass
class KneeT2Parameters:
    skip_echoes: int = 1
    t2_min_ms: float = 0.0
    t2_max_ms: float = 100.0
    noise_sigma: Optional[float] = None  # None: estimated from the background
    laterality: str = "auto"  # auto (from the images) | left | right
    whole_volume: bool = False  # fit every voxel (the T2 map is then not masked)
    loglinear: bool = True  # also keep the log-linear T2 for comparison
    model_id: str = DEFAULT_MODEL_ID  # automatic segmentation model (registered id or .pt file)
    device: str = "auto"  # where the segmentation network runs: auto | cpu | cuda
    precision: str = "float32"  # the network's arithmetic: float32 | bfloat16 | auto (bfloat16 where supported)

    def validate(self) -> "KneeT2Parameters":
        from .mese import normalize_laterality

        if int(self.skip_echoes) != self.skip_echoes or self.skip_echoes < 0:
            raise InputError(f"The number of first echoes to skip must be 0 or more (got {self.skip_echoes}): use 1 "
                             f"(the default, the stimulated first echo) or 0.")
        if not (0 <= self.t2_min_ms < self.t2_max_ms):
            raise InputError(f"The valid T2 range must satisfy 0 <= min < max (got {self.t2_min_ms:g}, "
                             f"{self.t2_max_ms:g} ms): use a maximum above the minimum (default 100 ms).")
        if self.noise_sigma is not None and not (self.noise_sigma >= 0):
            raise InputError(f"The noise SD must be 0 or more (got {self.noise_sigma}): give the noise SD per channel, "
                             f"or leave it out to estimate it from the background air.")
        normalize_laterality(self.laterality)
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"Unknown device '{self.device}': use auto, cpu or cuda.")
        if self.precision not in PRECISIONS:
            raise InputError(f"Unknown precision '{self.precision}': use {', '.join(PRECISIONS)} (default float32).")
        if not str(self.model_id).strip():
            raise InputError("No segmentation model given: use a registered id ('mskquant models list') or a .pt file.")
        return self

    def fit_settings(self):
        from .t2fit import FitSettings

        return FitSettings(skip_echoes=int(self.skip_echoes), t2_range_ms=(float(self.t2_min_ms), float(self.t2_max_ms)),
                           noise_sigma=self.noise_sigma, loglinear=self.loglinear)

    # --- persistence in a vtkMRMLScriptedModuleNode (saved with the scene) ----------------
    def save_to_node(self, node) -> None:
        for k, v in asdict(self).items():
            node.SetParameter(k, "" if v is None else str(v))

    @classmethod
    def load_from_node(cls, node) -> "KneeT2Parameters":
        values = {}
        defaults = cls()
        for f in fields(cls):
            raw = node.GetParameter(f.name)
            if not raw:
                continue
            default = getattr(defaults, f.name)
            if isinstance(default, bool):
                values[f.name] = raw == "True"
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float) or f.name == "noise_sigma":
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        return cls(**values)
