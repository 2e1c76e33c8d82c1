"""VHIWorkflow parameters as a dataclass, stored in the scene's parameter node.

Defaults follow Hepburn et al. 2.5: n from 1.5 in steps of 0.05, islands < 4 pixels
removed, ensemble probability >= 0.5, and the sensitive (lower) threshold as the primary
V_HI (the paper's primary analyses used it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

from mskquant.errors import InputError

from .thresholds import N_START, N_STEP

Primary = Literal["sensitive", "conservative"]


@dataclass
class VHIParameters:
    n_start: float = N_START
    n_step: float = N_STEP
    min_island_pixels: int = 4
    probability_threshold: float = 0.5
    primary: Primary = "sensitive"
    model_id: str = "sij-disease-region"
    device: str = "auto"

    def validate(self) -> "VHIParameters":
        if self.n_step <= 0:
            raise InputError(f"The n step must be positive (got {self.n_step}).")
        if self.min_island_pixels < 1:
            raise InputError(f"The minimum island size must be at least 1 pixel (got {self.min_island_pixels}): use 1 or "
                             f"more (the paper's 4 is the default).")
        if not 0 < self.probability_threshold < 1:
            raise InputError(f"The probability threshold must be between 0 and 1 (got {self.probability_threshold}).")
        if self.primary not in ("sensitive", "conservative"):
            raise InputError(f"Primary V_HI must be 'sensitive' or 'conservative' (got {self.primary!r}).")
        return self

    # --- persistence in a vtkMRMLScriptedModuleNode (saved with the scene) ----------------
    def save_to_node(self, node) -> None:
        for k, v in asdict(self).items():
            node.SetParameter(k, str(v))

    @classmethod
    def load_from_node(cls, node) -> "VHIParameters":
        values = {}
        for f in fields(cls):
            raw = node.GetParameter(f.name)
            if raw:
                typ = type(getattr(cls(), f.name))
                values[f.name] = typ(raw) if typ is not str else raw
        return cls(**values)
