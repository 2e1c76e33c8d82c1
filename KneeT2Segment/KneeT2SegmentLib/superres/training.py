"""Training the residual SR-CNN on DESS-like knee volumes simulated from label maps.

Chaudhari et al. (Methods) train on 32^3 patches (stride 16) of real OAI DESS pairs with an
L2 loss on ``high - TCI`` and a static learning rate of 1e-4 for 20 epochs. Here:

* data: high-resolution volumes rendered by the project's DESS simulator on each label map's own
  grid (:func:`..dess.native_grid_dess`, domain-randomised looks; 0.7 mm slices, 0.365 mm pixels),
  degraded the paper's way (:mod:`.degrade`: rectangular slice profile, 3x thicker slices, TCI);
* patches: a fixed cache (``.npy``, float16, built once by :func:`build_patch_cache`) of patch pairs
  (TCI, truth) with the slice axis first, normalised per volume as at inference (TCI / its 99.5th
  percentile); three quarters centred where TCI is most wrong (tissue edges across slices), a quarter
  anywhere in the body;
* subjects: split by subject (:data:`TEST_SUBJECTS` held out, :data:`VALIDATION_SUBJECTS` choose the
  checkpoint, :data:`EXCLUDED_SUBJECTS` left out for other evaluations);
* L2 loss on the residual, Adam, learning rate ``lr`` with cosine decay to 5 % (the paper's static
  1e-4 converges too slowly for the CPU budget), random flips of the in-plane axes and of the slice axis;
* resumable (``last.pt`` = the model file plus optimiser and step), progress with an ETA, the
  checkpoint with the lowest validation loss kept as ``best.pt``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mskquant.progress import as_progress

from ..training import _format_eta, _save, label_maps_in, subject_of
from . import degrade as dg
from .model import SCALE_PERCENTILE, default_input_spec, make_checkpoint
from .network import ResidualSRNet

TEST_SUBJECTS = ("9002817", "9004175", "9005132")
VALIDATION_SUBJECTS = ("9003430", "9006723")
EXCLUDED_SUBJECTS = ("9055361", "9057479")  # kept out of training and testing alike


def split_label_maps(folder) -> Dict[str, List[Path]]:
    """{"train", "validation", "test"}: label-map files by the fixed subject split."""
    out: Dict[str, List[Path]] = {"train": [], "validation": [], "test": []}
    for p in label_maps_in(folder):
        s = subject_of(p)
        if s in EXCLUDED_SUBJECTS:
            continue
        out["test" if s in TEST_SUBJECTS else "validation" if s in VALIDATION_SUBJECTS else "train"].append(p)
    return out


def training_pair(high, factor: int = 3) -> Tuple[np.ndarray, np.ndarray]:
    """(TCI, truth) of a fine-sliced Image, slice axis first, both divided by TCI's 99.5th percentile."""
    truth, _, tci = dg.simulate_thick_acquisition(high, factor)
    a = dg.array_axis(dg.slice_axis_ijk(high.geometry))
    x = np.moveaxis(tci.array, a, 0)
    y = np.moveaxis(truth.array, a, 0)
    scale = float(np.percentile(x, SCALE_PERCENTILE)) or 1.0
    return (x / scale).astype(np.float32), (y / scale).astype(np.float32)


def sample_patches(x: np.ndarray, y: np.ndarray, n: int, size: Tuple[int, int, int], rng: np.random.Generator,
                   edge_fraction: float = 0.75) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` patch pairs; ``edge_fraction`` centred on the voxels where TCI errs most."""
    half = np.asarray(size) // 2
    lo = half
    hi = np.asarray(x.shape) - (np.asarray(size) - half)
    err = np.abs(y - x)[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
    body = x[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] > 0.1
    n_edge = int(round(n * edge_fraction))
    flat_err = err.ravel()
    strong = np.flatnonzero(flat_err >= np.quantile(flat_err, 0.99))
    inside = np.flatnonzero(body.ravel())
    picks = np.concatenate([rng.choice(strong, n_edge), rng.choice(inside if inside.size else np.arange(err.size),
                                                                    n - n_edge)])
    centres = np.stack(np.unravel_index(picks, err.shape), 1) + lo
    px = np.empty((n,) + tuple(size), np.float16)
    py = np.empty_like(px)
    for i, c in enumerate(centres):
        s = tuple(slice(int(c[d] - half[d]), int(c[d] - half[d] + size[d])) for d in range(3))
        px[i], py[i] = x[s], y[s]
    return px, py


def build_patch_cache(files: Sequence[Path], out: Path, looks: int = 2, per_volume: int = 80,
                      size=(24, 32, 32), seed: int = 0, factor: int = 3, log: Callable[[str], None] = print) -> Path:
    """Simulate ``looks`` randomised volumes per label map and save their patch pairs as ``out/{x,y}.npy``."""
    from .. import dess

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "x.npy").is_file() and (out / "y.npy").is_file():
        return out
    rng = np.random.default_rng(seed)
    xs, ys, t0 = [], [], time.time()
    for i, f in enumerate(files):
        anat = dess.load_dess_anatomy(f)
        for _ in range(looks):
            vol = dess.native_grid_dess(anat, rng, randomise=True)
            x, y = training_pair(vol.image, factor)
            px, py = sample_patches(x, y, per_volume, tuple(size), rng)
            xs.append(px)
            ys.append(py)
        log(f"patches: {i + 1}/{len(files)} label maps, {time.time() - t0:.0f} s")
    np.save(out / "y.npy", np.concatenate(ys))
    np.save(out / "x.npy", np.concatenate(xs))
    return out


@dataclass
class SRTrainingConfig:
    depth: int = 8
    width: int = 24
    separable: bool = True
    factor: int = 3
    batch_size: int = 4
    lr: float = 1e-3
    steps: int = 2400
    validate_every: int = 200
    max_minutes: float = 0.0  # stop after this long (0: no limit); the best checkpoint stays
    seed: int = 0


def _augment(x, y, rng: np.random.Generator):
    for d in (2, 3, 4):
        if rng.random() < 0.5:
            x, y = x.flip(d), y.flip(d)
    return x, y


def _loss(net, x, y):
    return ((net(x) - y) ** 2).mean()  # L2 on the output = L2 on the residual (SR - TCI vs high - TCI)


def validation_loss(net, vx: np.ndarray, vy: np.ndarray, batch: int = 8) -> float:
    import torch

    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(vx), batch):
            x = torch.from_numpy(vx[s:s + batch].astype(np.float32))[:, None]
            y = torch.from_numpy(vy[s:s + batch].astype(np.float32))[:, None]
            total += float(((net(x) - y) ** 2).sum())
    return total / float(vx.size)


def train(train_cache: Path, validation_cache: Path, out: Path, config: SRTrainingConfig, resume: bool = False,
          metadata: Optional[dict] = None, progress=None, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) into ``out``: ``last.pt``, ``best.pt``, ``history.csv``; returns the summary."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = as_progress(progress)
    tx = np.load(Path(train_cache) / "x.npy", mmap_mode="r")
    ty = np.load(Path(train_cache) / "y.npy", mmap_mode="r")
    vx, vy = np.load(Path(validation_cache) / "x.npy"), np.load(Path(validation_cache) / "y.npy")
    torch.manual_seed(config.seed)
    net = ResidualSRNet(config.depth, config.width, config.separable)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    step, best, elapsed_before = 0, math.inf, 0.0
    tci_loss = float(((vx.astype(np.float32) - vy.astype(np.float32)) ** 2).mean())
    if resume and (out / "last.pt").is_file():
        raw = torch.load(str(out / "last.pt"), map_location="cpu", weights_only=True)
        net.load_state_dict(raw["state_dict"])
        opt.load_state_dict(raw["optimizer"])
        step, best, elapsed_before = int(raw["resume"]["step"]), float(raw["resume"]["best"]), \
            float(raw["resume"]["elapsed_s"])
        log(f"resumed at step {step} (best validation loss {best:.3g})")
    rng = np.random.default_rng(config.seed + step)
    meta = {**(metadata or {}), "config": asdict(config), "validation_loss_tci": tci_loss}
    spec = default_input_spec(config.factor)
    t0 = time.time()
    history = out / "history.csv"
    if step == 0 or not history.is_file():
        history.write_text("step,train_loss,validation_loss,validation_loss_tci,elapsed_s\n")
    running: List[float] = []
    while step < config.steps:
        for g in opt.param_groups:
            g["lr"] = config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / config.steps)))
        idx = np.sort(rng.choice(len(tx), config.batch_size, replace=False))
        x = torch.from_numpy(tx[idx].astype(np.float32))[:, None]
        y = torch.from_numpy(ty[idx].astype(np.float32))[:, None]
        x, y = _augment(x, y, rng)
        net.train()
        loss = _loss(net, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running.append(float(loss.detach()))
        step += 1
        elapsed = elapsed_before + time.time() - t0
        if step % config.validate_every == 0 or step == config.steps:
            net.eval()
            v = validation_loss(net, vx, vy)
            eta = (config.steps - step) * (elapsed / step)
            with history.open("a") as fh:
                fh.write(f"{step},{np.mean(running):.6g},{v:.6g},{tci_loss:.6g},{elapsed:.0f}\n")
            ckpt = make_checkpoint(net, spec, {**meta, "step": step, "validation_loss": v})
            if v < best:
                best = v
                _save(ckpt, out / "best.pt")
            _save({**ckpt, "optimizer": opt.state_dict(),
                   "resume": {"step": step, "best": best, "elapsed_s": elapsed}}, out / "last.pt")
            msg = (f"step {step}/{config.steps}: train {np.mean(running):.4g}, validation {v:.4g} (TCI {tci_loss:.4g},"
                   f" best {best:.4g}), ETA {_format_eta(eta)}")
            log(msg)
            progress(step / config.steps, msg)
            running = []
            if config.max_minutes and elapsed > config.max_minutes * 60:
                log(f"time limit of {config.max_minutes:g} min reached at step {step}")
                break
    summary = {"steps": step, "best_validation_loss": best, "validation_loss_tci": tci_loss}
    (out / "training.json").write_text(json.dumps({**meta, **summary}, indent=2))
    return summary
