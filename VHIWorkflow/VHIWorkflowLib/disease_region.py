"""Disease-region segmentation on T1W (Hepburn et al., section 2.5.3) with the published weights.

The network is the shared 2D U-Net (:mod:`mskquant.unet`) built from the registry entry
``sij-disease-region``: three models whose mean probability is thresholded at 0.5.
Pre-processing, as in training: the whole T1W volume divided by three times its standard
deviation; each acquired slice fed in the in-plane orientation the models were trained
on. That orientation is defined on the published data's voxel grid (NIfTI ``x`` towards
the patient's left, ``y`` towards superior; slice = ``rot90(vol[:, :, k], 1)``), so other
voxel orderings of the same anatomy are first permuted/flipped to it using the image's
direction matrix, and the prediction is mapped back — the result is the same whichever
way a scanner or converter stored the voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from mskquant.errors import InputError, ModelError
from mskquant.image import Geometry
from mskquant.progress import Progress, as_progress

MODEL_ID = "sij-disease-region"

# RAS directions of the training grid's axes (array order i, j): i towards the patient's
# left, j mostly superior (oblique semi-coronal plane parallel to the sacrum).
_TRAIN_I = np.array([-1.0, 0.0, 0.0])
_TRAIN_J = np.array([0.0, 0.666, 0.748])


@dataclass(frozen=True)
class Orientation:
    """How an array ``[k, j, i]`` maps to the training layout: axis order then flips."""

    axes: Tuple[int, int, int]  # new (slice, row, column) taken from these array axes
    flips: Tuple[bool, bool, bool]

    def to_training(self, a: np.ndarray) -> np.ndarray:
        b = np.transpose(a, self.axes)
        for ax, f in enumerate(self.flips):
            if f:
                b = np.flip(b, axis=ax)
        return b

    def from_training(self, b: np.ndarray) -> np.ndarray:
        for ax, f in enumerate(self.flips):
            if f:
                b = np.flip(b, axis=ax)
        return np.transpose(b, np.argsort(self.axes))


def training_orientation(geometry: Geometry) -> Orientation:
    """Find the axis permutation/flips that bring this grid to the training voxel layout."""
    d_kji = geometry.directions[:, ::-1]  # columns: RAS direction of array axes k, j, i
    spacing_kji = geometry.spacing[::-1]
    slice_ax = int(np.argmax(spacing_kji)) if not np.allclose(spacing_kji, spacing_kji[0]) else 0
    in_plane = [a for a in range(3) if a != slice_ax]
    # column axis (training i): the in-plane axis most aligned with left-right
    col_ax = max(in_plane, key=lambda a: abs(d_kji[:, a] @ _TRAIN_I))
    row_ax = in_plane[0] if in_plane[1] == col_ax else in_plane[1]
    flip_col = bool(d_kji[:, col_ax] @ _TRAIN_I < 0)
    flip_row = bool(d_kji[:, row_ax] @ _TRAIN_J < 0)
    return Orientation((slice_ax, row_ax, col_ax), (False, flip_row, flip_col))


def normalise(t1: np.ndarray) -> np.ndarray:
    """T1W / (3 * standard deviation of the whole volume), as the models were trained."""
    t1 = np.asarray(t1, dtype=np.float32)
    if not np.all(np.isfinite(t1)):
        raise InputError(f"The T1W image has {int((~np.isfinite(t1)).sum())} NaN/infinite voxel(s): "
                         f"the network cannot run on it; fix or re-export the image.")
    sd = float(t1.std(dtype=np.float64))
    if sd == 0:
        raise InputError("The T1W image is constant (standard deviation 0): load the T1-weighted scan.")
    return t1 / np.float32(3.0 * sd)


def network_slices(t1_training_layout: np.ndarray) -> np.ndarray:
    """(slices, 1, H, W) inputs: ``rot90(x_y_slice, 1)`` of the training layout, i.e. rows reversed."""
    return np.ascontiguousarray(t1_training_layout[:, ::-1, :])[:, None]


def load_ensemble(paths: Sequence, architecture: dict, device) -> List:
    from mskquant.inference import prepare_for_inference
    from mskquant.unet import build_unet, load_weights

    if architecture.get("name") != "unet2d":
        raise ModelError(f"Model architecture '{architecture.get('name')}' is not supported by VHIWorkflow: "
                         f"register the weights as a 'unet2d'.")
    models = []
    for p in paths:
        net = build_unet(architecture.get("params", {}))
        load_weights(net, p, what="Disease-region")
        models.append(prepare_for_inference(net, device))
    return models


def predict_probability(t1: np.ndarray, geometry: Geometry, models: Sequence, device,
                        progress: "Progress | None" = None, divisor: int = 8) -> np.ndarray:
    """Ensemble-mean probability ``[k, j, i]`` of the disease region on the T1W grid."""
    progress = as_progress(progress)
    orient = training_orientation(geometry)
    x = orient.to_training(normalise(t1))
    from mskquant.inference import predict_ensemble

    prob = predict_ensemble(models, network_slices(x), device, progress, divisor=divisor,
                            message="Disease region (U-Net ensemble)")[:, 0]
    prob = prob[:, ::-1, :]  # rotate back (rot90 with k=3)
    return np.ascontiguousarray(orient.from_training(prob))


def segment_disease_region(t1: np.ndarray, geometry: Geometry, models: Sequence, device,
                           threshold: float = 0.5, progress: "Progress | None" = None) -> np.ndarray:
    return predict_probability(t1, geometry, models, device, progress) >= threshold
