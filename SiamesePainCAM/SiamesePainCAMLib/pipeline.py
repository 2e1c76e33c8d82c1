"""Which knee hurts, end to end for one subject (numeric core: no Slicer).

Chang et al., Methods, in order: pre-processing of each knee (:mod:`.preprocessing`), the
Siamese network on the 23 slice pairs with fusion (:mod:`.network`), and class activation
maps (:mod:`.cam`) — here also mapped back onto each input volume's own voxel grid, and
with the input checks the paper's manual quality control stood for:

* each volume must be sagittal (slices stacked left-right) with at least 23 slices, and a
  given centre slice must leave 11 slices on each side (one clear error otherwise);
* left and right may differ in size or spacing: each knee is resampled onto the model's
  grid on its own, and a warning says so;
* swapped knees (the right knee given as the left and vice versa) are refused when the file
  or node names say so ("...RIGHT..." given as the left knee), when both volumes share one
  scanner frame and the "left" one lies to the patient's right, or when *both* knees match
  the template better with their slice order reversed (a knee's lateral-to-medial profile
  is asymmetric); when only one knee looks reversed it is a warning.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from mskquant.errors import InputError, ModelError
from mskquant.image import Geometry, Image
from mskquant.progress import Progress, as_progress

from .cam import PainPrediction, predict, prepare_model_for_inference
from .localiser import JointLocaliser, default_localiser
from .network import ARCHITECTURE_NAME, SiamesePainNet, build_network
from .preprocessing import PreparedKnee, Template, map_planes_to_volume, plane_of_slice, prepare_knee

SIDES = ("left", "right")
# Laterality evidence of the template profile: mean NCC of a knee's 23 slices with the slice
# order as given minus reversed. Measured on correctly labelled pairs of knees never trained on
# (scripts/evaluate_pain_generalisation.py --families project independent --pairs 12): the
# project's pair simulator +0.014 +- 0.006 (min +0.0045), the independent test family +0.003 +-
# 0.005 (min -0.009), another simulator (issue 15) down to -0.012. Exchanged knees give the same
# values with the sign flipped, so the evidence is weak: it refuses only when both knees are
# reversed far outside the correct spread (below -0.04, 8 SD under the independent family's
# mean) and otherwise warns; the name and scanner-frame checks (check_pair) refuse swapped knees
# on strong evidence.
LATERALITY_WARN_MARGIN = 0.005
LATERALITY_REFUSE_MARGIN = 0.04
SAME_FRAME_MIN_SEPARATION_MM = 100.0


@dataclass
class PainModel:
    network: SiamesePainNet  # prepared for inference (batch norm folded)
    template: Template
    device: torch.device
    model_id: str = ""
    version: str = ""
    sha256: str = ""
    localiser: Optional[JointLocaliser] = None  # keeps the template alignment at the joint


def load_pain_model(weights_path, architecture: Dict, device: torch.device, model_id: str = "", version: str = "",
                    sha256: str = "", localiser: "JointLocaliser | str | None" = "default") -> PainModel:
    """A trained network (its template inside) ready for inference on ``device``, with the
    registered joint localiser (``localiser="default"``), a given one, or none (``None``: the
    alignment follows the template alone, as before the localiser)."""
    from mskquant.unet import load_weights

    if architecture.get("name") != ARCHITECTURE_NAME:
        raise ModelError(f"Model '{model_id}' is a {architecture.get('name')!r} network, not {ARCHITECTURE_NAME!r}: "
                         f"choose a SiamesePainCAM model.")
    net = build_network(architecture.get("params", {}))
    load_weights(net, weights_path, f"Siamese pain model '{model_id or weights_path}'")
    template = net.template.detach().cpu().numpy()
    if not np.any(template):
        raise ModelError(f"Model '{model_id or weights_path}' carries no alignment template: train it with "
                         f"'mskquant pain-train', which stores the template with the weights.")
    net.eval()
    if isinstance(localiser, str):
        if localiser != "default":
            raise ValueError(f"localiser must be 'default', a JointLocaliser or None, not {localiser!r}")
        localiser = default_localiser(device)
    return PainModel(prepare_model_for_inference(net, device), Template(template), device, model_id, version, sha256,
                     localiser)


@dataclass
class PainResult:
    prediction: PainPrediction
    prepared: Dict[str, PreparedKnee]
    cam: Dict[str, np.ndarray]  # (k, j, i) on each input grid, 0..1 (common scale)
    geometry: Dict[str, Geometry]
    max_cam_plane: Dict[str, int]
    max_cam_slice: Dict[str, int]
    warnings: List[str] = field(default_factory=list)
    timings_s: Dict[str, float] = field(default_factory=dict)

    @property
    def p_right_painful(self) -> float:
        return self.prediction.p_right_painful

    @property
    def painful_side(self) -> str:
        return self.prediction.painful_side

    def summary(self) -> Dict:
        """The contract fields of ``pain.json`` first, then the details."""
        return {
            "p_right_painful": self.p_right_painful,
            "painful_side": self.painful_side,
            "max_cam_slice": dict(self.max_cam_slice),
            "max_cam_plane_offset": {s: self.max_cam_plane[s] - 11 for s in SIDES},
            "centre_slice": {s: self.prepared[s].centre_slice for s in SIDES},
            "centre_source": {s: self.prepared[s].centre_source for s in SIDES},
            "mean_cam_per_plane": {s: [float(v) for v in self.prediction.evidence[k]] for k, s in enumerate(SIDES)},
            "cam_scale_logit_per_pixel": float(max(self.prediction.cams.max(), 0.0)),
            "preprocessing": {s: self.prepared[s].summary() for s in SIDES},
            "warnings": list(self.warnings),
            "timings_s": dict(self.timings_s),
        }


_SIDE_WORD = re.compile(r"[a-z]+")


def side_named(name: Optional[str]) -> Optional[str]:
    """'left' or 'right' when a file/node name says so (whole words only), else None."""
    if not name:
        return None
    words = set(_SIDE_WORD.findall(str(name).lower().replace("\\", "/").split("/")[-1]))
    said = {s for s in SIDES if s in words}
    return said.pop() if len(said) == 1 else None


def check_pair(left: Image, right: Image, names: Tuple[Optional[str], Optional[str]] = (None, None)) -> List[str]:
    """Checks that need both knees (before any work); returns warnings, raises on swapped knees."""
    warnings = []
    for given, name in zip(SIDES, names):
        said = side_named(name)
        if said is not None and said != given:
            other = "right" if given == "left" else "left"
            raise InputError(f"The {given}-knee input '{name}' is named as a {said} knee: the knees look swapped; "
                             f"give the {other} knee's volume as --{other} and this one as --{said}.")
    c_left = left.geometry.ijk_to_ras @ np.r_[(np.asarray(left.geometry.shape_ijk) - 1) / 2, 1.0]
    c_right = right.geometry.ijk_to_ras @ np.r_[(np.asarray(right.geometry.shape_ijk) - 1) / 2, 1.0]
    if abs(c_left[0] - c_right[0]) >= SAME_FRAME_MIN_SEPARATION_MM and c_left[0] > c_right[0]:
        raise InputError(f"The 'left' knee volume lies {c_left[0] - c_right[0]:.0f} mm to the patient's right of the "
                         f"'right' one in the scanner frame: the knees look swapped; exchange --left and --right.")
    gl, gr = left.geometry, right.geometry
    if gl.shape_ijk != gr.shape_ijk or not np.allclose(gl.spacing, gr.spacing, rtol=1e-3):
        warnings.append(f"The left ({gl.describe()}) and right ({gr.describe()}) volumes differ in size or spacing: "
                        f"each knee was resampled onto the model's 224 x 224 grid (0.47 mm pixels, 23 slices 3 mm "
                        f"apart) on its own, and each CAM is on its own knee's grid.")
    return warnings


def laterality_decision(margins: Dict[str, float]) -> Tuple[Optional[str], List[str]]:
    """(refusal message or None, warnings) from the two knees' laterality margins (see the constants)."""
    reversed_ = [s for s in SIDES if margins[s] < -LATERALITY_WARN_MARGIN]
    if all(margins[s] < -LATERALITY_REFUSE_MARGIN for s in SIDES):
        return ("Both knees match the model's template far better with their slice order reversed (laterality margins "
                f"{margins['left']:.3f} left, {margins['right']:.3f} right; correctly labelled knees stay above "
                f"{-LATERALITY_REFUSE_MARGIN:g}): the knees look swapped; exchange --left and --right (or check the "
                "volumes' orientation)."), []
    return None, [f"The {s} knee matches the template better with its slice order reversed (laterality margin "
                  f"{margins[s]:.3f}, weak evidence: correct knees reach -0.012): check that it is really the {s} knee "
                  f"and that its orientation is right." for s in reversed_]


def analyse_pair(model: PainModel, left: Image, right: Image, centre_left: Optional[int] = None,
                 centre_right: Optional[int] = None, progress: "Progress | None" = None,
                 names: Tuple[Optional[str], Optional[str]] = (None, None)) -> PainResult:
    """Pre-process both knees, run the network, and put the CAMs back on the input grids."""
    progress = as_progress(progress)
    t0 = time.monotonic()
    warnings = check_pair(left, right, names)
    prepared = {}
    centres = {"left": centre_left, "right": centre_right}
    images = {"left": left, "right": right}
    for n, side in enumerate(SIDES):
        prepared[side] = prepare_knee(images[side], side, model.template, centres[side],
                                      progress=progress.sub(0.4 * n, 0.4 * (n + 1)), what=f"{side} knee",
                                      localiser=model.localiser)
        warnings.extend(prepared[side].warnings)
    t1 = time.monotonic()
    margins = {s: prepared[s].centre_estimate.laterality_margin for s in SIDES}
    refuse, notes = laterality_decision(margins)
    if refuse:
        raise InputError(refuse)
    warnings.extend(notes)
    progress(0.8, "Running the Siamese network")
    prediction = predict(model.network, prepared["left"].planes, prepared["right"].planes, model.device)
    t2 = time.monotonic()
    progress(0.9, "Mapping the CAMs onto the input volumes")
    scaled = prediction.scaled_cams()
    cam, max_plane, max_slice, geometry = {}, {}, {}, {}
    for k, side in enumerate(SIDES):
        cam[side] = map_planes_to_volume(prepared[side], scaled[k], images[side].geometry.shape_kji,
                                         model.network.feature_grid())
        max_plane[side] = prediction.max_cam_plane(side)
        max_slice[side] = plane_of_slice(prepared[side], max_plane[side])
        geometry[side] = images[side].geometry
    t3 = time.monotonic()
    progress(1.0, f"{prediction.painful_side.capitalize()} knee painful (p = {prediction.p_right_painful:.3f} right)")
    timings = {"preprocessing": t1 - t0, "network_and_cam": t2 - t1, "cam_to_input_grid": t3 - t2, "total": t3 - t0}
    return PainResult(prediction, prepared, cam, geometry, max_plane, max_slice, warnings, timings)
