"""Training the knee morphometry ensemble on domain-randomised DESS-like slices (numeric core).

Data (:mod:`..dess`): per training knee, random sagittal 3D DESS-like grids (0.3-0.45 mm
pixels, 0.6-0.9 mm slices, +-15/8 deg rotations); of each grid only every n-th slice is
sampled (a "slab" of ``slices_per_slab`` slices across the knee: the networks are 2D), and the
partial-volume counts are kept in a bank and re-rendered with a new random appearance (DESS
prior or the generator's random/physical priors), noise and patch position at every use; a
few slabs are replaced every ``refresh_every`` steps. Labels: the largest partial-volume fraction.

Networks: ``members`` 2D U-Nets of :data:`.segment.DEFAULT_ARCHITECTURE`, different seeds,
each trained on its own patches of the same rendered slab (the rendering is shared). Loss:
cross-entropy + soft Dice of the six tissues. Adam, cosine decay to 5 %. Validation: mean
Dice of the six tissues on fixed rendered slabs of the validation knees, whole slices, each
member and the softmax-averaged ensemble; each member's best weights are kept and written
together as the ensemble model file (``best.pt``). Resumable (``last.pt``: weights,
optimisers, step), progress with an ETA.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Geometry
from mskquant.progress import Progress, as_progress

from .. import anatomy as an
from .. import dess
from ..segmentation import sagittal_layout
from ..training import _format_eta, _save, subject_of
from . import segment as sg
from .labels import N_LABELS, PATELLA, PATELLAR_CARTILAGE

# Subjects kept out of training (the model card states them)
TEST_SUBJECTS = ("9002817", "9004175", "9005132")
VALIDATION_SUBJECTS = ("9003430", "9006723")
HELD_OUT_SUBJECTS = ("9055361", "9057479")  # the pain analyses' held-out knees


def split_label_maps(paths: Sequence[Path]) -> Dict[str, List[Path]]:
    """train / validation / test / held_out label maps by subject (fixed lists above)."""
    out: Dict[str, List[Path]] = {"train": [], "validation": [], "test": [], "held_out": []}
    for p in sorted(Path(x) for x in paths):
        s = subject_of(p)
        part = ("test" if s in TEST_SUBJECTS else "validation" if s in VALIDATION_SUBJECTS else
                "held_out" if s in HELD_OUT_SUBJECTS else "train")
        out[part].append(p)
    return out


@dataclass
class MorphTrainingConfig:
    members: int = 3
    features: Tuple[int, ...] = (8, 16, 32, 64, 128)
    steps: int = 3000
    batch_size: int = 4
    patch: int = 192
    learning_rate: float = 2e-3
    bank_size: int = 24
    slices_per_slab: int = 12
    refresh_every: int = 30
    refresh_count: int = 2
    validate_every: int = 250
    validation_slabs_per_subject: int = 2
    cartilage_centre_fraction: float = 0.6
    # Patches centred on the patella or its cartilage: the patella has the femur's and tibia's tissue
    # contrast, only its place tells it apart, and unforced it is in ~25 % of patches - the first
    # ensemble (no such patches, 1,400 steps) never labelled it.
    patella_centre_fraction: float = 0.25
    seed: int = 0
    threads: int = 1

    def architecture(self) -> dict:
        arch = json.loads(json.dumps(sg.DEFAULT_ARCHITECTURE))
        arch["params"]["features"] = list(self.features)
        return arch


# --- data -----------------------------------------------------------------------------------------
@dataclass
class Slab:
    counts: np.ndarray  # uint8 [slices, rows, cols, 14] in the network layout
    n_points: int
    spacing_kji: Tuple[float, float, float]
    labels: np.ndarray  # uint8 [slices, rows, cols]
    subject: str


def strided_geometry(geometry: Geometry, stride: int, start: int) -> Geometry:
    """Every ``stride``-th slice (k) of ``geometry`` from ``start``."""
    m = geometry.ijk_to_ras.copy()
    m[:3, 3] = m[:3, 3] + m[:3, 2] * start
    m[:3, 2] *= stride
    nk = (geometry.shape_ijk[2] - start + stride - 1) // stride
    return Geometry((geometry.shape_ijk[0], geometry.shape_ijk[1], nk), m)


def sample_slab(anat: an.KneeAnatomy, rng: np.random.Generator, n_slices: int, orientation: str = "sagittal"
                ) -> Slab:
    """Counts of ``n_slices`` slices spread over a random sagittal grid, in the network layout."""
    g, thick = dess.random_dess_geometry(anat.femoral_centroid_ras(), rng, orientation)
    work, _ = dess._slices_last(g, dess.slice_axis_of(g, thick))
    nk = work.shape_ijk[2]
    stride = max(1, nk // n_slices)
    slab_g = strided_geometry(work, stride, int(rng.integers(0, stride)))
    counts, n_points = dess.sample_counts(anat, slab_g, thick, rng)  # profile in the strided grid's own units
    layout = sagittal_layout(slab_g)
    c = np.ascontiguousarray(layout.to_canonical(np.moveaxis(counts, -1, 0)).transpose(1, 2, 3, 0))
    sp = slab_g.spacing
    sp_kji = (float(sp[2]), float(sp[1]), float(sp[0]))
    sp_c = tuple(sp_kji[a] for a in layout.axes)
    return Slab(c, n_points, sp_c, dess.labels_from_counts(c), anat.subject_id or "")


def render_slab(slab: Slab, rng: np.random.Generator) -> np.ndarray:
    """A new random look of a slab, normalised as at inference: float32 [slices, rows, cols]."""
    img, _, _, _ = dess.render_counts(slab.counts, slab.n_points, slab.spacing_kji, rng, randomise=True)
    return sg.normalise_volume(img, rng=rng)


def patch_batch(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, n: int, size: int,
                cartilage_fraction: float, patella_fraction: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` random patches ``[n, 1, size, size]`` and their labels: centred on the patella or
    (half of them) its cartilage with ``patella_fraction`` (where the slab has them), else on
    cartilage with ``cartilage_fraction``, else on any tissue."""
    xs = np.zeros((n, 1, size, size), np.float32)
    ys = np.zeros((n, size, size), np.int64)
    ns, nr, nc = image.shape
    cart = np.isin(labels, (2, 4, 6))
    patella = np.isin(labels, (PATELLA, PATELLAR_CARTILAGE))
    patella_slices = np.flatnonzero(patella.any(axis=(1, 2))) if patella_fraction > 0 else np.zeros(0, int)
    patellar_cartilage = labels == PATELLAR_CARTILAGE
    fg = labels > 0
    for b in range(n):
        if patella_slices.size and rng.random() < patella_fraction:
            s = int(patella_slices[rng.integers(patella_slices.size)])
            # half of them on the thin cartilage itself: centred on the bone it stays a sliver at the edge
            pool = patellar_cartilage[s] if rng.random() < 0.5 and patellar_cartilage[s].any() else patella[s]
        else:
            s = int(rng.integers(ns))
            pool = cart[s] if rng.random() < cartilage_fraction and cart[s].any() else fg[s]
        if pool.any():
            rr, cc = np.nonzero(pool)
            q = int(rng.integers(rr.size))
            r0, c0 = int(rr[q]) - size // 2 + int(rng.integers(-size // 4, size // 4 + 1)), \
                int(cc[q]) - size // 2 + int(rng.integers(-size // 4, size // 4 + 1))
        else:
            r0, c0 = int(rng.integers(0, max(1, nr - size))), int(rng.integers(0, max(1, nc - size)))
        r0 = int(np.clip(r0, min(0, nr - size), max(0, nr - size)))
        c0 = int(np.clip(c0, min(0, nc - size), max(0, nc - size)))
        rs, cs = slice(max(r0, 0), min(r0 + size, nr)), slice(max(c0, 0), min(c0 + size, nc))
        tr, tc = slice(rs.start - r0, rs.stop - r0), slice(cs.start - c0, cs.stop - c0)
        xs[b, 0, tr, tc] = image[s, rs, cs]
        ys[b, tr, tc] = labels[s, rs, cs]
    return xs, ys


class SlabBank:
    """Training slabs of all training knees, a few replaced every so often."""

    def __init__(self, anatomies: Sequence[an.KneeAnatomy], size: int, n_slices: int, rng: np.random.Generator,
                 progress: "Progress | None" = None) -> None:
        self.anatomies = list(anatomies)
        self.n_slices = n_slices
        progress = as_progress(progress)
        self.slabs: List[Slab] = []
        for n in range(size):
            progress(n / size, f"Sampling training slabs ({n + 1}/{size})")
            self.slabs.append(self._new(rng))

    def _new(self, rng: np.random.Generator) -> Slab:
        return sample_slab(self.anatomies[int(rng.integers(len(self.anatomies)))], rng, self.n_slices)

    def refresh(self, rng: np.random.Generator, count: int) -> None:
        for _ in range(count):
            self.slabs[int(rng.integers(len(self.slabs)))] = self._new(rng)


# --- loss and metrics ---------------------------------------------------------------------------------
def segmentation_loss(logits, target):
    """Cross-entropy + (1 - mean soft Dice of the six tissues over the batch)."""
    import torch
    from torch.nn import functional as F

    ce = F.cross_entropy(logits, target)
    p = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, N_LABELS).permute(0, 3, 1, 2).float()
    inter = (p * onehot).sum(dim=(0, 2, 3))
    denom = p.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2.0 * inter + 1.0) / (denom + 1.0)
    return ce + (1.0 - dice[1:].mean())


def dice_per_label(pred: np.ndarray, truth: np.ndarray) -> List[float]:
    """Dice of labels 1-6 (NaN where both are empty)."""
    out = []
    for c in range(1, N_LABELS):
        a, b = pred == c, truth == c
        s = int(a.sum()) + int(b.sum())
        out.append(float(2.0 * np.logical_and(a, b).sum() / s) if s else float("nan"))
    return out


@dataclass
class ValidationSet:
    images: List[np.ndarray]  # normalised [slices, rows, cols]
    labels: List[np.ndarray]


def validation_set(anatomies: Sequence[an.KneeAnatomy], per_subject: int, n_slices: int, seed: int) -> ValidationSet:
    rng = np.random.default_rng(seed + 7919)
    images, labels = [], []
    for anat in anatomies:
        for _ in range(per_subject):
            slab = sample_slab(anat, rng, n_slices)
            images.append(render_slab(slab, rng))
            labels.append(slab.labels)
    return ValidationSet(images, labels)


def validate(nets, vset: ValidationSet) -> Tuple[List[float], float, List[float]]:
    """(mean tissue Dice of each member, of the ensemble, ensemble Dice per tissue)."""
    import torch

    from mskquant.inference import predict_ensemble

    member_scores = [[] for _ in nets]
    ens_pred, truths = [], []
    for img, lab in zip(vset.images, vset.labels):
        probs = []
        for m, net in enumerate(nets):
            net.eval()
            seq = torch.nn.Sequential(net, torch.nn.Softmax(dim=1))
            p = predict_ensemble([seq], img[:, None], torch.device("cpu"), batch_size=4, divisor=16)
            probs.append(p)
            member_scores[m].append(np.nanmean(dice_per_label(np.argmax(p, 1), lab)))
            net.train()
        ens_pred.append(np.argmax(np.mean(probs, axis=0), 1))
        truths.append(lab)
    per = dice_per_label(np.concatenate([e.ravel() for e in ens_pred]), np.concatenate([t.ravel() for t in truths]))
    return [float(np.mean(s)) for s in member_scores], float(np.nanmean(per)), per


# --- training loop -----------------------------------------------------------------------------------------
@dataclass
class MorphTrainingResult:
    best_path: Path
    last_path: Path
    best_member_dice: List[float]
    steps: int
    history: List[dict] = field(default_factory=list)


def train_ensemble(train_anatomies: Sequence[an.KneeAnatomy], vset: Optional[ValidationSet], out: Path,
                   config: MorphTrainingConfig, metadata: Optional[dict] = None, resume: bool = True,
                   progress: "Progress | None" = None, log=print, init_from: Optional[Path] = None
                   ) -> MorphTrainingResult:
    """Train (or resume) the ensemble; ``best.pt`` is the model file, ``last.pt`` the resumable state.

    ``init_from``: an ensemble model file (e.g. the bundled one) whose members start the training
    (fine-tuning; fresh optimisers, ``config.steps`` more steps); ignored when resuming."""
    import torch

    progress = as_progress(progress)
    if not train_anatomies:
        raise InputError("No training knees: give label maps of the training subjects.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.pt"
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(config.threads)))
    try:
        arch = config.architecture()
        nets, opts = [], []
        for m in range(config.members):
            torch.manual_seed(config.seed * 100 + m)
            net = sg.build_member(arch)
            nets.append(net)
            opts.append(torch.optim.Adam(net.parameters(), lr=config.learning_rate))
        step, history = 0, []
        best = [-1.0] * config.members
        best_states = [None] * config.members
        if resume and last_path.is_file():
            state = torch.load(str(last_path), map_location="cpu", weights_only=True)
            for m in range(config.members):
                nets[m].load_state_dict(state["members"][m])
                opts[m].load_state_dict(state["optimizers"][m])
            step, best, history = int(state["step"]), list(state["best"]), list(state["history"])
            best_states = list(state.get("best_states") or [None] * config.members)
            log(f"Resumed at step {step} (best member Dice {best})")
        elif init_from is not None:
            start = sg.read_ensemble_file(init_from)["members"]
            if len(start) != config.members:
                raise InputError(f"{init_from} has {len(start)} members, the training {config.members}: give "
                                 f"--members {len(start)}.")
            for m, member in enumerate(start):
                if member["architecture"] != arch:
                    raise InputError(f"{init_from}: member {m}'s architecture differs from the training's "
                                     f"(features {member['architecture'].get('params', {}).get('features')}): give "
                                     f"the same --features.")
                nets[m].load_state_dict(member["state_dict"])
            log(f"Starting from the members of {init_from}")
        rng = np.random.default_rng(config.seed * 1000 + step)
        bank = SlabBank(train_anatomies, config.bank_size, config.slices_per_slab, rng, progress.sub(0.0, 0.05))
        sched = [lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps))]
        for net in nets:
            net.train()
        t_start, step0, losses = time.perf_counter(), step, []
        while step < config.steps:
            lr = config.learning_rate * sched[0](step)
            slab = bank.slabs[int(rng.integers(len(bank.slabs)))]
            image = render_slab(slab, rng)
            for m, (net, opt) in enumerate(zip(nets, opts)):
                for g in opt.param_groups:
                    g["lr"] = lr
                x, y = patch_batch(image, slab.labels, rng, config.batch_size, config.patch,
                                   config.cartilage_centre_fraction, config.patella_centre_fraction)
                loss = segmentation_loss(net(torch.from_numpy(x)), torch.from_numpy(y))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            step += 1
            if step % config.refresh_every == 0:
                bank.refresh(rng, config.refresh_count)
            if step % 20 == 0:
                rate = (time.perf_counter() - t_start) / max(1, step - step0)
                msg = (f"step {step}/{config.steps} loss {np.mean(losses[-20 * config.members:]):.4f} lr {lr:.2e} "
                       f"{rate:.2f} s/step ETA {_format_eta(rate * (config.steps - step))}")
                log(msg)
                progress(0.05 + 0.95 * step / config.steps, msg)
            if step % config.validate_every == 0 or step == config.steps:
                row = {"step": step, "loss": float(np.mean(losses[-config.validate_every * config.members:]))}
                if vset is not None and vset.images:
                    scores, ens, per = validate(nets, vset)
                    row.update({"member_dice": scores, "ensemble_dice": ens, "ensemble_dice_per_label": per})
                    for m, s in enumerate(scores):
                        if s > best[m]:
                            best[m] = s
                            best_states[m] = {k: v.detach().clone() for k, v in nets[m].state_dict().items()}
                    log(f"validation step {step}: members {[round(s, 4) for s in scores]} ensemble {ens:.4f} "
                        f"per label {[round(v, 3) for v in per]}")
                else:
                    best_states = [{k: v.detach().clone() for k, v in n.state_dict().items()} for n in nets]
                history.append(row)
                _save({"members": [n.state_dict() for n in nets], "optimizers": [o.state_dict() for o in opts],
                       "step": step, "best": best, "history": history, "best_states": best_states,
                       "config": asdict(config)}, last_path)
                meta = dict(metadata or {}, config=asdict(config), steps=step, best_member_dice=best,
                            history=history)
                _save(sg.make_ensemble_file([(arch, s) for s in best_states], meta), best_path)
        return MorphTrainingResult(best_path, last_path, best, step, history)
    finally:
        torch.set_num_threads(previous_threads)
