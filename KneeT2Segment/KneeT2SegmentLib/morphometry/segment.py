"""Multi-tissue knee segmentation by an ensemble of small 2D U-Nets (Morales et al.: ensembles, softmax averaging).

Morales et al. segment bone and cartilage of 3D knee MRI with ensembles of networks whose
softmax outputs are averaged before the arg-max. Here the ensemble is 2-3 small 2D U-Nets
(:class:`mskquant.unet.UNet2D`, 7 outputs: background and the labels of :mod:`.labels`)
trained with different seeds on domain-randomised DESS-like images (:mod:`..dess`), each
segmenting sagittal slices:

* **Orientation.** A sagittal 3D series (slice axis within 40 deg of left-right, pixels
  0.25-0.5 mm) is only transposed and flipped into the networks' layout (slices towards the
  left, rows superior -> inferior, columns anterior -> posterior; read from the direction
  matrix) and back, so any voxel ordering gives the same labels. Any other 3D series
  (coronal, axial, other pixel sizes) is resampled (linear) to a sagittal working grid of
  0.4 x 0.4 x 0.7 mm; the averaged probabilities are resampled back to the input grid
  and the arg-max taken there.
* **Refused:** 2D images, series, and slices thicker than 1.5 mm (the networks learned
  0.6-0.9 mm 3D acquisitions; thick-slice 2D sequences lose the cartilage's partial volume).
* **Normalisation:** per volume, intensities divided by their 99th percentile, clipped to [0, 2].
* **Speed:** batch normalisation folded, channels-last, one slice per thread
  (:mod:`mskquant.inference`); progress per slice, cancel between slices; CUDA when present.

The model file (one PyTorch dict, ``torch.load(weights_only=True)``)::

    {"format": FORMAT, "format_version": 1,
     "members": [{"architecture": {"name": "unet2d", "params": {...}}, "state_dict": {...}}, ...],
     "input": {...}, "labels": [...], "training": {...}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mskquant.errors import InputError, ModelError
from mskquant.image import Geometry, Image
from mskquant.progress import Progress, as_progress

from .labels import BONES, N_LABELS, NAMES

FORMAT = "mskquant.knee-morphometry-ensemble"
FORMAT_VERSION = 1
MODULE = "KneeT2Segment"
TASK = "knee-multi-tissue-segmentation"
DEFAULT_MODEL_ID = "knee-morphometry-dess"
MAX_SLICE_MM = 1.5
PIXEL_RANGE_MM = (0.25, 0.5)
WORKING_PIXEL_MM = 0.4
WORKING_SLICE_MM = 0.7
MIN_SIZE = 8  # voxels along every axis
NORMALISATION = "per volume: divide by the 99th percentile, clip to [0, 2]"
LAYOUT = "sagittal slices towards the left; rows superior->inferior, columns anterior->posterior"
DEFAULT_ARCHITECTURE = {"name": "unet2d", "params": {"in_channels": 1, "out_channels": N_LABELS,
                                                     "features": [8, 16, 32, 64, 128], "kernel_size": 3,
                                                     "batch_norm": True, "up_mode": "transpose",
                                                     "final_activation": "none"}}


# --- model file -----------------------------------------------------------------------------------------
def input_spec() -> dict:
    return {"modality": "3D DESS-like (any contrast of the randomised training)", "layout": LAYOUT,
            "normalisation": NORMALISATION, "pixel_range_mm": list(PIXEL_RANGE_MM),
            "working_grid_mm": [WORKING_PIXEL_MM, WORKING_PIXEL_MM, WORKING_SLICE_MM],
            "max_slice_mm": MAX_SLICE_MM}


def make_ensemble_file(members: Sequence[Tuple[dict, dict]], training: Optional[dict] = None) -> dict:
    """The model file's dict from ``(architecture, state_dict)`` pairs."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "members": [{"architecture": a, "state_dict": s} for a, s in members],
            "input": input_spec(), "labels": list(NAMES), "training": training or {}}


def build_member(architecture: dict, state_dict: Optional[dict] = None, where: str = "model"):
    """A member network (logits out) with its weights checked against the architecture."""
    from mskquant.unet import build_unet, state_dict_mismatch

    if architecture.get("name") != "unet2d":
        raise ModelError(f"{where}: unknown architecture {architecture.get('name')!r} (expected unet2d).")
    net = build_unet(dict(architecture.get("params", {})))
    if state_dict is not None:
        mismatch = state_dict_mismatch(net.state_dict(), state_dict)
        if mismatch:
            raise ModelError(f"{where}: weights do not fit the architecture ({mismatch}): retrain or re-export.")
        net.load_state_dict(state_dict)
    return net


def read_ensemble_file(path) -> dict:
    import torch

    try:
        d = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise ModelError(f"Knee morphometry model {path} cannot be read ({type(exc).__name__}): the file is corrupt "
                         f"or not a model file; download or export it again.") from exc
    if not isinstance(d, dict) or d.get("format") != FORMAT or not d.get("members"):
        raise ModelError(f"{path} is not a knee morphometry ensemble (format {FORMAT!r} with members): give a "
                         f"model trained by scripts/train_knee_morph.py.")
    return d


@dataclass
class MorphometryModel:
    model_id: str
    networks: list  # inference-ready members, each ending in a softmax
    device: object
    divisor: int
    digest: str = ""
    training: dict = field(default_factory=dict)


_CACHE: Dict[tuple, MorphometryModel] = {}


def load_morphometry_model(model: str = DEFAULT_MODEL_ID, device=None, store=None,
                           progress: "Progress | None" = None) -> MorphometryModel:
    """A registered model (id) or a model file, on ``device`` (``None``/"auto": CUDA when present)."""
    from pathlib import Path

    import torch

    from mskquant.device import select_device
    from mskquant.inference import prepare_for_inference
    from mskquant.models import ModelStore, sha256_of

    dev = device if isinstance(device, torch.device) else select_device(device or "auto")
    path = Path(str(model)).expanduser()
    if path.suffix == ".pt" or path.exists():
        if not path.is_file():
            raise ModelError(f"Knee morphometry model file {path} does not exist: check the path or give a "
                             f"registered model id ('mskquant models list').")
        model_id, digest = path.name, sha256_of(path)
    else:
        store = store or ModelStore()
        spec = store.registry.get(str(model))
        if spec.module != MODULE or spec.task != TASK:
            raise ModelError(f"Model '{spec.id}' is a {spec.module} {spec.task} model, not a knee multi-tissue "
                             f"segmentation model: choose '{DEFAULT_MODEL_ID}'.")
        path = store.ensure(spec.id, progress)[0]
        model_id, digest = spec.id, spec.files[0].sha256
    key = (model_id, digest, str(dev))
    if key not in _CACHE:
        d = read_ensemble_file(path)
        nets, divisor = [], 1
        for n, m in enumerate(d["members"]):
            net = build_member(m["architecture"], m["state_dict"], f"{model_id} member {n + 1}")
            divisor = max(divisor, 2 ** (len(net.features) - 1))
            nets.append(torch.nn.Sequential(prepare_for_inference(net, dev), torch.nn.Softmax(dim=1)))
        _CACHE[key] = MorphometryModel(model_id, nets, dev, divisor, digest, d.get("training", {}))
    return _CACHE[key]


# --- input ----------------------------------------------------------------------------------------------
def check_input(image: Image, what: str = "The knee image",
                thick_fix: str = "give a 3D acquisition with thin slices (e.g. sagittal 3D DESS, 0.7 mm)") -> None:
    """Refuse what the networks cannot segment, or the morphometry measure, with the reason and the fix."""
    a = np.asarray(image.array)
    if image.is_series or a.ndim != 3:
        raise InputError(f"{what} is {a.ndim}D{' (a series of volumes)' if image.is_series else ''}: give one "
                         f"3D volume (e.g. the DESS or 3D water-excitation image).")
    if min(a.shape) < MIN_SIZE:
        raise InputError(f"{what} is 2D or nearly so ({'x'.join(map(str, a.shape[::-1]))} voxels): the "
                         f"morphometry needs a 3D volume covering the knee, with at least {MIN_SIZE} voxels along "
                         f"every axis.")
    sp = image.geometry.spacing
    if float(sp.max()) > MAX_SLICE_MM:
        raise InputError(f"{what} has {float(sp.max()):.2f} mm voxels along one axis ({image.geometry.describe()}): "
                         f"segmentation and cartilage thickness need slices of at most {MAX_SLICE_MM:g} mm; "
                         f"{thick_fix}.")
    if a.dtype.kind == "f" and not np.isfinite(a).any():
        raise InputError(f"{what} holds no finite values: check the image.")


def direct_layout(geometry: Geometry):
    """The sagittal layout when the grid can be fed by transposing (else ``None``: resample)."""
    from ..segmentation import sagittal_layout

    try:
        layout = sagittal_layout(geometry)
    except InputError:
        return None
    if not all(PIXEL_RANGE_MM[0] <= p <= PIXEL_RANGE_MM[1] for p in layout.pixel_mm):
        return None
    if layout.slice_mm < 0.9 * max(layout.pixel_mm):  # slices thinner than pixels: a reformat
        return None
    return layout


def working_geometry(geometry: Geometry) -> Geometry:
    """A sagittal grid (axes R, A, S; 0.4 x 0.4 x 0.7 mm) covering the input's bounding box."""
    corners = geometry.corners_ras()
    lo, hi = corners.min(0), corners.max(0)
    # i -> A, j -> S, k -> R (slices): the sagittal layout then needs no resampling
    d = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    sp = np.array([WORKING_PIXEL_MM, WORKING_PIXEL_MM, WORKING_SLICE_MM])
    ext = np.array([hi[1] - lo[1], hi[2] - lo[2], hi[0] - lo[0]])
    shape = np.maximum(1, np.ceil(ext / sp)).astype(int)
    origin = np.array([lo[0], lo[1], lo[2]]) + d @ (sp / 2.0)
    return Geometry.from_spacing(tuple(int(s) for s in shape), sp, origin, d)


def resample_linear(array: np.ndarray, source: Geometry, target: Geometry, fill: float = 0.0) -> np.ndarray:
    """``array`` (on ``source``) at the voxel centres of ``target``, trilinear, float32 ``[k, j, i]``."""
    from scipy import ndimage as ndi

    m = source.ras_to_ijk @ target.ijk_to_ras  # target ijk -> source ijk
    # in [k, j, i] order: source kji = P m P^-1 target kji
    p = np.zeros((4, 4))
    p[0, 2] = p[1, 1] = p[2, 0] = p[3, 3] = 1.0
    mk = p @ m @ p
    return ndi.affine_transform(np.asarray(array, np.float32), mk[:3, :3], offset=mk[:3, 3],
                                output_shape=target.shape_kji, order=1, mode="constant", cval=fill).astype(np.float32)


def normalise_volume(volume: np.ndarray, max_samples: int = 2_000_000, rng=None) -> np.ndarray:
    """Per-volume normalisation of the networks' input (:data:`NORMALISATION`)."""
    v = np.asarray(volume, np.float32)
    flat = v.ravel()
    if flat.size > max_samples:
        flat = flat[(rng or np.random.default_rng(0)).integers(0, flat.size, max_samples)]
    flat = flat[np.isfinite(flat)]
    ref = float(np.percentile(flat, 99)) if flat.size else 0.0
    if not ref > 0:
        raise InputError("The knee image has no signal (99th percentile <= 0): check the image.")
    out = np.nan_to_num(v / np.float32(ref), nan=0.0, posinf=2.0, neginf=0.0)
    return np.clip(out, 0.0, 2.0, out=out)


# --- segmentation ----------------------------------------------------------------------------------------
@dataclass
class SegmentationResult:
    labels: Image  # uint8 0-6 on the input grid
    probabilities: Optional[np.ndarray]  # float16 [7, k, j, i] (when asked for; before the bone-island rule)
    model_id: str
    resampled: bool  # the input went through the sagittal working grid
    seconds: float
    device: str
    islands_removed: Dict[str, int] = field(default_factory=dict)  # bone voxels outside each bone's largest piece

    def volumes_ml(self) -> Dict[str, float]:
        counts = np.bincount(self.labels.array.ravel(), minlength=N_LABELS)
        v = self.labels.geometry.voxel_volume_mm3 / 1000.0
        return {NAMES[n]: float(counts[n] * v) for n in range(1, N_LABELS)}


# Chosen on the validation knees (9003430, 9006723; project DESS and independent family) by the
# lowest mean bone surface distance, criterion fixed before the run: keep only the largest piece
# 3.5 mm, pieces >= 25 % of it 8.3 mm, no rule 12.0 mm (scripts/evaluate_knee_morph.py --subjects
# 9003430 9006723 --bone-piece-min-fraction 1 0.25 0).
BONE_PIECE_MIN_FRACTION = 1.0


def remove_bone_islands(labels: np.ndarray, min_fraction: float = BONE_PIECE_MIN_FRACTION) -> Dict[str, int]:
    """Stray bone islands become background, in place; returns how many voxels per bone.

    A bone is one piece, so the pieces (26-connected) of a bone label smaller than
    ``min_fraction`` of its largest piece are errors - a patch of marrow elsewhere called femur -
    and would otherwise enter the bone's surface, area and surface distances. The default (1)
    keeps only the largest piece (pieces of exactly equal size all stay); a bone the network
    split in two (a band of wrong labels across it) then loses its smaller part, which a lower
    fraction would keep.
    """
    from scipy import ndimage

    removed = {}
    structure = np.ones((3, 3, 3), bool)
    for bone, c in BONES.items():
        mask = labels == c
        comp, n = ndimage.label(mask, structure)
        if n <= 1:
            removed[bone] = 0
            continue
        sizes = np.bincount(comp.ravel())
        small = sizes < min_fraction * sizes[1:].max()  # per piece; 0 is the background
        small[0] = False
        stray = small[comp]
        removed[bone] = int(stray.sum())
        labels[stray] = 0
    return removed


def predict_canonical(model: MorphometryModel, canonical: np.ndarray, progress: "Progress | None" = None
                      ) -> np.ndarray:
    """Mean softmax ``float32 [slices, 7, rows, cols]`` of normalised canonical slices."""
    from mskquant.inference import predict_threaded

    return predict_threaded(model.networks, canonical[:, None], model.device, progress, divisor=model.divisor,
                            message="Segmenting knee tissues")


def segment_knee(image: Image, progress: "Progress | None" = None, device=None, model_id: str = DEFAULT_MODEL_ID,
                 keep_probabilities: bool = False, model: Optional[MorphometryModel] = None,
                 bone_piece_min_fraction: float = BONE_PIECE_MIN_FRACTION) -> SegmentationResult:
    """Labels 0-6 (:mod:`.labels`) of a 3D knee volume on its own grid (softmax-averaged ensemble,
    arg-max, stray bone islands removed: :func:`remove_bone_islands`)."""
    import time

    progress = as_progress(progress)
    t0 = time.perf_counter()
    check_input(image)
    model = model or load_morphometry_model(model_id, device, progress=progress.sub(0.0, 0.02))
    layout = direct_layout(image.geometry)
    if layout is not None:
        x = normalise_volume(layout.to_canonical(np.asarray(image.array, np.float32)))
        prob = predict_canonical(model, x, progress.sub(0.02, 0.98))
        labels_c = np.argmax(prob, axis=1).astype(np.uint8)
        labels = layout.from_canonical(labels_c)
        probs = None
        if keep_probabilities:
            probs = np.stack([layout.from_canonical(prob[:, c]) for c in range(N_LABELS)]).astype(np.float16)
        resampled = False
    else:
        from ..segmentation import sagittal_layout

        work = working_geometry(image.geometry)
        progress(0.02, "Resampling to the sagittal working grid")
        x = resample_linear(image.array, image.geometry, work)
        wl = sagittal_layout(work)
        prob = predict_canonical(model, normalise_volume(wl.to_canonical(x)), progress.sub(0.05, 0.85))
        best = np.full(image.array.shape, -1.0, np.float32)
        labels = np.zeros(image.array.shape, np.uint8)
        probs = np.zeros((N_LABELS,) + image.array.shape, np.float16) if keep_probabilities else None
        for c in range(N_LABELS):
            progress(0.85 + 0.15 * c / N_LABELS, f"Resampling probabilities back ({NAMES[c]})")
            p = resample_linear(wl.from_canonical(prob[:, c]), work, image.geometry, fill=1.0 if c == 0 else 0.0)
            better = p > best
            labels[better] = c
            best[better] = p[better]
            if probs is not None:
                probs[c] = p
        resampled = True
    labels = np.ascontiguousarray(labels, np.uint8)
    removed = remove_bone_islands(labels, bone_piece_min_fraction)
    progress(1.0, "Knee tissues segmented")
    return SegmentationResult(Image(labels, image.geometry), probs, model.model_id, resampled,
                              time.perf_counter() - t0, str(model.device), removed)
