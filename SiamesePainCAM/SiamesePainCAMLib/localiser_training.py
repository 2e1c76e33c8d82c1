"""Training data and loop of the femorotibial joint localiser (numeric core, no Slicer).

SynthSeg's recipe (Billot et al.) for a localiser: each training knee is rendered from a label
map by the pain simulator with the domain-randomised variation (:meth:`simulator.Variation.randomised`)
and a wider tissue-contrast draw than the pain network's (``LOCALISER_LOOK``: per-tissue gains of
exp(N(0, 0.6)), so tissues often swap order, fat anywhere from suppressed to bright), a random
acquisition (pixel, field of view, slice thickness and direction), pose, blur, bias, Gaussian or
Rician noise and gamma. Slices within 25 mm of the joint are put on the localiser's canvas with
a random shift of the canvas (±20 mm), a random narrow field of view on some (a crop such as a
model's template), and a random gamma at each step. The target is the tibial cartilage
centroid, the femorotibial joint, in the slice plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch

from mskquant.progress import Progress, as_progress

from . import randomise as rz
from . import simulator as sim
from .localiser import (CANVAS_MM, CANVAS_PX, build_localiser, canvas_of_slice, heatmap_loss,
                        normalise_volume, peak_of, pixel_to_uv, uv_to_pixel)
from .preprocessing import knee_frame, take_plane

LOCALISER_LOOK = rz.Look(tissue_log_sd=0.6, fat_suppression=(0.2, 4.0), gamma=(0.6, 1.6), blur_mm=(0.0, 1.0),
                         fov_mm=(120.0, 190.0))
JOINT_REACH_MM = 25.0  # slices within this distance of the joint's centroid (medial-lateral) are used
CANVAS_SHIFT_MM = 20.0
NARROW_FOV_PROBABILITY = 0.3
NARROW_FOV_MM = (95.0, 140.0)


def localiser_variation() -> sim.Variation:
    var = sim.Variation.randomised()
    var.look = LOCALISER_LOOK
    return var


@dataclass
class Samples:
    canvases: np.ndarray  # (n, CANVAS_PX, CANVAS_PX) float16
    targets: np.ndarray  # (n, 2) float32 canvas (row, column) of the joint
    knee: np.ndarray  # (n,) int: which rendered knee each sample comes from

    @staticmethod
    def concatenate(parts: Sequence["Samples"]) -> "Samples":
        offset, knees = 0, []
        for p in parts:
            knees.append(p.knee + offset)
            offset += int(p.knee.max()) + 1 if p.knee.size else 0
        return Samples(np.concatenate([p.canvases for p in parts]), np.concatenate([p.targets for p in parts]),
                       np.concatenate(knees))


def _narrow_field(canvas: np.ndarray, target_yx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zero the canvas outside a square field of 95-140 mm that holds the joint."""
    side_px = rng.uniform(*NARROW_FOV_MM) / CANVAS_MM
    centre = target_yx + rng.uniform(-0.25, 0.25, 2) * side_px
    lo = np.floor(centre - side_px / 2).astype(int)
    hi = np.ceil(centre + side_px / 2).astype(int)
    out = np.zeros_like(canvas)
    sl = tuple(slice(max(a, 0), max(min(b, CANVAS_PX), 0)) for a, b in zip(lo, hi))
    out[sl] = canvas[sl]
    return out


def knee_samples(knee: sim.SimulatedKnee, rng: np.random.Generator, per_knee: int = 8) -> Samples:
    """Canvases of up to ``per_knee`` slices within JOINT_REACH_MM of the joint, with their targets."""
    image = knee.image
    frame = knee_frame(image.geometry, knee.side)
    vol = normalise_volume(image.array)
    ijk = np.linalg.inv(image.geometry.ijk_to_ras) @ np.r_[knee.tibial_cartilage_ras, 1.0]
    joint_index = float(ijk[2 - frame.slice_axis])
    reach = JOINT_REACH_MM / frame.slice_spacing_mm
    near = [n for n in range(frame.n_slices) if abs(n - joint_index) <= reach]
    chosen = rng.permutation(near)[:per_knee]
    joint_uv = np.array([-knee.tibial_cartilage_ras[2], -knee.tibial_cartilage_ras[1]])
    canvases, targets = [], []
    for n in chosen:
        A, c = frame.slice_affine(float(n))
        centre = frame.field_centre_uv(n) + rng.uniform(-CANVAS_SHIFT_MM, CANVAS_SHIFT_MM, 2)
        target = uv_to_pixel(centre, joint_uv)
        canvas = canvas_of_slice(take_plane(vol, frame, float(n)), A, c, centre)
        if rng.random() < NARROW_FOV_PROBABILITY:
            canvas = _narrow_field(canvas, target, rng)
        canvases.append(canvas)
        targets.append(target)
    return Samples(np.asarray(canvases, np.float16).reshape(-1, CANVAS_PX, CANVAS_PX),
                   np.asarray(targets, np.float32).reshape(-1, 2), np.zeros(len(canvases), int))


def anatomy_samples(anatomy: sim.Anatomy, knees: int, seed: int, per_knee: int = 8) -> Samples:
    """``knees`` randomised renderings of one anatomy (random side and lesion) and their slices."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(knees):
        side = "right" if rng.random() < 0.5 else "left"
        lesion = rng.choice([None, "effusion", "bml"], p=[0.4, 0.35, 0.25])
        knee = sim.render_knee(anatomy, side, rng, lesion, None, localiser_variation(),
                               rng.uniform(-10, 10, size=3))
        parts.append(knee_samples(knee, rng, per_knee))
    return Samples.concatenate(parts)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random gamma per canvas (intensities stay in [0, 1.5])."""
    g = torch.exp(torch.empty(x.shape[0], 1, 1, 1).uniform_(math.log(0.6), math.log(1.6), generator=gen))
    return torch.clamp(x, 0.0, 1.5) ** g


def train(samples: Samples, steps: int, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
          network: Optional[torch.nn.Module] = None, progress: "Progress | None" = None) -> torch.nn.Module:
    """Adam with a cosine learning-rate decay; returns the network in eval mode."""
    progress = as_progress(progress)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = network if network is not None else build_localiser()
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    X = torch.from_numpy(samples.canvases.astype(np.float32))
    Y = torch.from_numpy(samples.targets)
    n = X.shape[0]
    for step in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        loss = heatmap_loss(net(_augment(X[idx, None], gen)), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            progress((step + 1) / steps, f"Joint localiser step {step + 1}/{steps}: loss {loss.item():.3f}")
    return net.eval()


@torch.no_grad()
def errors_mm(network: torch.nn.Module, samples: Samples) -> np.ndarray:
    """Distance (mm) from each knee's estimate (its slices' probabilities averaged) to the truth."""
    network.eval()
    out: List[float] = []
    for k in np.unique(samples.knee):
        sel = samples.knee == k
        x = torch.from_numpy(samples.canvases[sel].astype(np.float32))[:, None]
        logits = network(x)
        prob = torch.softmax(logits.view(x.shape[0], -1), 1).view(-1, CANVAS_PX, CANVAS_PX).numpy()
        # each slice has its own canvas centre: compare per slice, then take the knee's median
        d = [np.linalg.norm(pixel_to_uv((0, 0), peak_of(p)[0]) - pixel_to_uv((0, 0), t))
             for p, t in zip(prob, samples.targets[sel])]
        out.append(float(np.median(d)))
    return np.asarray(out)
