"""SiamesePainCAM parameters as a dataclass, stored in the scene's parameter node.

Centre slices: -1 means "estimate automatically" (the slice whose neighbourhood best matches
the model's template, :func:`preprocessing.estimate_centre`); otherwise a 0-based index along
the volume's sagittal slice axis, as Slicer shows it in IJK coordinates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

from mskquant.errors import InputError

AUTO = -1
DEFAULT_MODEL = "siamese-pain-demo"
PAIN_TASK = "painful-knee-classification"  # the registry task of pain models (not the joint localiser)
# Kept here (no torch, no Slicer) so the command line can list them without loading either.
POOLINGS = ("average", "lse")
OUTPUT_FILES = ("pain.json", "pain.csv", "cam_left.nii.gz", "cam_right.nii.gz", "cam_overlay.png")


@dataclass
class PainCAMParameters:
    model_id: str = DEFAULT_MODEL
    device: str = "auto"
    centre_left: int = AUTO
    centre_right: int = AUTO
    overlay_opacity: float = 0.5

    def validate(self) -> "PainCAMParameters":
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"Compute device must be auto, cpu or cuda (got {self.device!r}).")
        for side in ("left", "right"):
            v = getattr(self, f"centre_{side}")
            if not isinstance(v, int) or isinstance(v, bool) or v < AUTO:
                raise InputError(f"The {side} centre slice must be a slice index (0 or more) or -1 for automatic "
                                 f"(got {v!r}).")
        if not 0.0 <= self.overlay_opacity <= 1.0:
            raise InputError(f"The overlay opacity must be between 0 and 1 (got {self.overlay_opacity}).")
        return self

    def centre(self, side: str) -> Optional[int]:
        v = getattr(self, f"centre_{side}")
        return None if v == AUTO else int(v)

    # --- persistence in a vtkMRMLScriptedModuleNode (saved with the scene) ----------------
    def save_to_node(self, node) -> None:
        for k, v in asdict(self).items():
            node.SetParameter(k, str(v))

    @classmethod
    def load_from_node(cls, node) -> "PainCAMParameters":
        values = {}
        for f in fields(cls):
            raw = node.GetParameter(f.name)
            if raw:
                typ = type(getattr(cls(), f.name))
                try:
                    values[f.name] = typ(raw) if typ is not str else raw
                except ValueError:
                    continue  # a hand-edited scene: keep the default
        return cls(**values)
