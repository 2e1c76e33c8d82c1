"""Training and cross-validation of the Siamese pain network (numeric core, PyTorch).

Chang et al., Methods: *Neural network architecture* (stochastic gradient descent with
momentum 0.9, cross-entropy for the binary label, learning rate 1e-4 decayed by 0.1 every
20 epochs, batch size 64, images normalised to [0, 1]) and *Model performance and statistical
analysis* (10-fold cross-validation in which every subject is tested exactly once; AUC of
the ROC curve).

Here: folds are made **by subject** (a subject's pairs — or every pair simulated from one
knee anatomy — never straddle training and testing); within each fold a validation share of
the training subjects picks the best epoch (highest validation AUC, then lowest loss), that
checkpoint is tested on the fold, and the predictions of all folds give the overall AUC and
ROC. The best model saved is the fold model with the best validation AUC. Every default of
the paper is a parameter (the bundled demo model's recipe is in its model card). Training
reports progress, can be cancelled, and resumes from the last finished epoch.

Swapping the knees of a pair and its label is a free, exact augmentation for this symmetric
network (both knees are already indexed alike), used with probability 1/2 per sample.

Optional, beyond the paper: ``quiet_painless_cam`` adds a penalty on positive CAM in the knee
that does not hurt (:func:`painless_cam_penalty`). Per-knee CAMs of a Siamese network that
compares the knees also light up anatomy both knees share (its evidence cancels in the
comparison, so cross-entropy never corrects it); the penalty removes that, so CAM maxima fall
on what differs. It uses only the pair's label, no lesion location.

Also beyond the paper: pairs **without a lesion** (label ``NO_LESION`` = 0.5: neither knee
hurts more) can be trained on with the soft target P(right painful) = 0.5
(:func:`soft_cross_entropy`), and the CAM penalty then applies to both knees; they take no
part in AUCs and ROC curves (there is no side to rank). A network that never sees such pairs
has no reason to say 0.5 when the knees look alike (issue 15: calibration).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from mskquant.atomic import atomic_path
from mskquant.errors import InputError
from mskquant.metrics import roc_auc, roc_curve
from mskquant.progress import Progress, as_progress

from .network import DEMO_WIDTHS, POOLINGS, SiamesePainNet
from .preprocessing import INPUT_PX, N_PLANES


@dataclass
class TrainingConfig:
    epochs: int = 60
    learning_rate: float = 1e-4  # paper
    lr_step_epochs: int = 20  # paper: x0.1 every 20 epochs
    lr_gamma: float = 0.1
    momentum: float = 0.9  # paper
    weight_decay: float = 1e-4
    batch_size: int = 8  # subjects (46 slices each) per step
    folds: int = 10  # paper; 1 = a single training with a validation split
    validation_fraction: float = 0.1
    widths: Tuple[int, ...] = DEMO_WIDTHS
    branch_per_location: bool = False
    pooling: str = "average"  # paper; "lse" for the smooth maximum (see network.py)
    lse_sharpness: float = 5.0
    swap_augmentation: bool = True
    quiet_painless_cam: float = 0.0  # weight of the painless-knee CAM penalty (0 = the paper's loss alone)
    seed: int = 0
    device: str = "auto"

    def validate(self) -> "TrainingConfig":
        if self.epochs < 1:
            raise InputError(f"Train for at least 1 epoch (got {self.epochs}).")
        if self.learning_rate <= 0 or self.lr_gamma <= 0 or self.lr_step_epochs < 1:
            raise InputError("The learning rate, its decay factor and its step (epochs) must be positive.")
        if not 0 <= self.momentum < 1:
            raise InputError(f"The momentum must be in [0, 1) (got {self.momentum}).")
        if self.batch_size < 1:
            raise InputError(f"The batch size must be at least 1 subject (got {self.batch_size}).")
        if self.folds < 1:
            raise InputError(f"Use at least 1 fold (got {self.folds}).")
        if self.pooling not in POOLINGS or self.lse_sharpness <= 0:
            raise InputError(f"Pooling must be one of {', '.join(POOLINGS)} with a positive sharpness (got "
                             f"{self.pooling!r}, {self.lse_sharpness}).")
        if self.quiet_painless_cam < 0:
            raise InputError(f"The painless-knee CAM weight must be 0 or more (got {self.quiet_painless_cam}).")
        if not 0 < self.validation_fraction < 1:
            raise InputError(f"The validation fraction must be between 0 and 1 (got {self.validation_fraction}).")
        return self

    def network(self) -> SiamesePainNet:
        """A new network of this configuration (the one pain-train trains and saves)."""
        return SiamesePainNet(self.widths, N_PLANES, self.branch_per_location, INPUT_PX, self.pooling, self.lse_sharpness)


NO_LESION = 0.5  # the label of a pair without a lesion: P(right painful) = 0.5
PAIN_LABELS = {"left": 0.0, "right": 1.0, "none": NO_LESION}  # a pairs table's painful_side -> label


@dataclass
class PairData:
    """Pre-processed pairs: planes ``(N, 2, 23, 224, 224)`` (knee 0 left, 1 right), labels
    (1 = right knee painful, 0 = left, ``NO_LESION`` = neither), subject groups (folds never
    split a group) and ids."""

    planes: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    ids: List[str]

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.planes.shape[0] != n or self.planes.shape[1:] != (2, N_PLANES, INPUT_PX, INPUT_PX):
            raise ValueError(f"planes must be (N, 2, {N_PLANES}, {INPUT_PX}, {INPUT_PX}); got {self.planes.shape}")
        if len(self.groups) != n or len(self.ids) != n:
            raise ValueError("labels, groups and ids must have one entry per pair")

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.asarray(self.planes[np.sort(np.asarray(idx))], dtype=np.float32))
        order = np.argsort(np.argsort(np.asarray(idx)))  # back to the requested order
        return x[torch.from_numpy(order)], torch.from_numpy(self.labels[np.asarray(idx)].astype(np.float32))

    @classmethod
    def load(cls, folder: Path) -> "PairData":
        folder = Path(folder)
        meta = json.loads((folder / "pairs.json").read_text())
        return cls(np.load(folder / "planes.npy", mmap_mode="r"), np.load(folder / "labels.npy"),
                   np.asarray(meta["groups"]), list(meta["ids"]))


# --- folds -------------------------------------------------------------------------------------
def subject_folds(groups: Sequence, k: int, seed: int = 0) -> List[np.ndarray]:
    """Indices of the test pairs of each of ``k`` folds; every subject in exactly one fold."""
    groups = np.asarray(groups)
    subjects = np.unique(groups)
    if k > len(subjects):
        raise InputError(f"{k}-fold cross-validation by subject needs at least {k} subjects; the data has "
                         f"{len(subjects)}: use fewer folds.")
    rng = np.random.default_rng(seed)
    rng.shuffle(subjects)
    # greedy: the largest remaining subject goes to the fold with the fewest pairs
    counts = {s: int((groups == s).sum()) for s in subjects}
    fold_subjects: List[List] = [[] for _ in range(k)]
    sizes = np.zeros(k, int)
    for s in sorted(subjects, key=lambda s: -counts[s]):
        f = int(np.argmin(sizes))
        fold_subjects[f].append(s)
        sizes[f] += counts[s]
    return [np.nonzero(np.isin(groups, fs))[0] for fs in fold_subjects]


def validation_split(groups: np.ndarray, idx: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` by subject into training and validation (at least one subject each)."""
    subjects = np.unique(groups[idx])
    if len(subjects) < 2:
        raise InputError("Training needs at least 2 subjects (one to train on, one to pick the best epoch).")
    rng = np.random.default_rng(seed + 1)
    rng.shuffle(subjects)
    n_val = min(max(1, int(round(fraction * len(subjects)))), len(subjects) - 1)
    val_subjects = subjects[:n_val]
    is_val = np.isin(groups[idx], val_subjects)
    return idx[~is_val], idx[is_val]


# --- training ----------------------------------------------------------------------------------
@torch.no_grad()
def predict_probabilities(model: SiamesePainNet, data: PairData, idx: np.ndarray, device: torch.device,
                          batch_size: int = 4, progress: Optional[Progress] = None) -> Tuple[np.ndarray, float]:
    """P(right painful) for pairs ``idx`` and the mean cross-entropy."""
    model.eval()
    probs = np.zeros(len(idx))
    loss = 0.0
    for s in range(0, len(idx), batch_size):
        if progress is not None:
            progress.check()
        x, y = data.batch(idx[s:s + batch_size])
        logits = model(x.to(device))
        loss += float(soft_cross_entropy(logits, y.to(device), reduction="sum"))
        probs[s:s + len(y)] = F.softmax(logits, -1)[:, 1].cpu().numpy()
    return probs, loss / max(len(idx), 1)


def lesion_pairs(labels) -> np.ndarray:
    """Pairs with a painful side (label 0 or 1), not the lesion-free ones (``NO_LESION``)."""
    labels = np.asarray(labels, float)
    return (labels == 0.0) | (labels == 1.0)


def _safe_auc(labels, scores) -> float:
    """AUC over the pairs with a painful side (lesion-free pairs have no side to rank)."""
    sel = lesion_pairs(labels)
    labels = np.asarray(labels, float)[sel].astype(int)
    if labels.size == 0 or labels.min() == labels.max():
        return float("nan")
    return roc_auc(labels, np.asarray(scores)[sel])


def soft_cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against P(right painful) = ``y``: the paper's loss for labels 0 and 1, and for a
    pair without a lesion (``NO_LESION`` = 0.5) the network is asked for 0.5 (neither knee)."""
    y = y.to(logits.dtype)
    return F.cross_entropy(logits, torch.stack([1.0 - y, y], dim=1), reduction=reduction)


def painless_cam_penalty(cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared positive CAM of the knee that does not hurt.

    The label says which knee is painless; any "this knee hurts" evidence the network finds in
    it must come from anatomy both knees share. Penalising it keeps shared anatomy at or below
    zero in every CAM, so the CAM of the painful knee is positive only where the knees differ —
    which is what a CAM should point at. No lesion location is used.
    """
    labels = labels.to(cams.dtype)
    # label 1 = right painful -> knee 0 (left) is painless; 0 -> knee 1; NO_LESION (0.5) -> both
    weight = torch.stack([(labels >= 0.5), (labels <= 0.5)], dim=1).to(cams.dtype)  # (N, 2)
    per_knee = F.relu(cams).pow(2).flatten(2).mean(dim=2)  # (N, 2)
    return (weight * per_knee).sum() / cams.shape[0]


@dataclass
class FoldResult:
    fold: int
    test_idx: List[int]
    probabilities: List[float]
    auc: float
    best_epoch: int
    validation_auc: float
    history: List[Dict] = field(default_factory=list)


def _save_checkpoint(path: Path, state: Dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_fold(data: PairData, train_idx: np.ndarray, val_idx: np.ndarray, cfg: TrainingConfig,
               template: np.ndarray, device: torch.device, progress: Optional[Progress] = None,
               checkpoint: Optional[Path] = None, resume: bool = False) -> Tuple[SiamesePainNet, Dict, List[Dict]]:
    """Train one model; returns it with the best epoch's weights loaded, that state and the history."""
    progress = as_progress(progress)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = cfg.network()
    model.template.copy_(torch.from_numpy(np.asarray(template, np.float32)))
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    history: List[Dict] = []
    best = {"auc": -math.inf, "loss": math.inf, "epoch": -1, "state": None}
    start_epoch = 0
    if resume and checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        history = saved["history"]
        best = saved["best"]
        start_epoch = saved["epoch"] + 1
        rng = np.random.default_rng(cfg.seed + start_epoch)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / cfg.batch_size))
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = rng.permutation(train_idx)
        total, seen = 0.0, 0
        t0 = time.monotonic()
        for step in range(steps_per_epoch):
            done = (epoch + step / steps_per_epoch) / cfg.epochs
            progress(done, f"Epoch {epoch + 1}/{cfg.epochs}")
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            if len(idx) == 0:
                continue
            x, y = data.batch(idx)
            if cfg.swap_augmentation:
                swap = torch.from_numpy(rng.random(len(y)) < 0.5)
                x[swap] = x[swap].flip(1)  # left <-> right
                y[swap] = 1 - y[swap]
            x, y = x.to(device), y.to(device)
            if cfg.quiet_painless_cam > 0:
                logits, cams, _ = model.forward_with_cam(x)
                loss = soft_cross_entropy(logits, y) + cfg.quiet_painless_cam * painless_cam_penalty(cams, y)
            else:
                loss = soft_cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            seen += len(y)
        lr_used = opt.param_groups[0]["lr"]
        sched.step()
        val_p, val_loss = predict_probabilities(model, data, val_idx, device, progress=progress)
        val_auc = _safe_auc(data.labels[val_idx], val_p)
        record = {"epoch": epoch + 1, "lr": lr_used, "train_loss": total / max(seen, 1),
                  "val_loss": val_loss, "val_auc": val_auc, "seconds": time.monotonic() - t0}
        history.append(record)
        auc_key = -1.0 if math.isnan(val_auc) else val_auc
        if auc_key > best["auc"] or (auc_key == best["auc"] and val_loss < best["loss"]):
            best = {"auc": auc_key, "loss": val_loss, "epoch": epoch + 1,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                          "scheduler": sched.state_dict(), "epoch": epoch, "history": history,
                                          "best": best, "config": asdict(cfg)})
    progress(1.0, "Training done")
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return model, best, history


@dataclass
class CrossValidation:
    folds: List[FoldResult]
    labels: np.ndarray
    probabilities: np.ndarray  # pooled out-of-fold predictions
    fold_of: np.ndarray
    best_fold: int

    @property
    def auc(self) -> float:
        return _safe_auc(self.labels, self.probabilities)

    def roc(self):
        """(fpr, tpr, thresholds) over the pairs with a painful side, or None without both sides."""
        sel = lesion_pairs(self.labels)
        y = self.labels[sel].astype(int)
        if y.size == 0 or y.min() == y.max():
            return None
        return roc_curve(y, self.probabilities[sel])


def cross_validate(data: PairData, cfg: TrainingConfig, template: np.ndarray, work_dir: Path,
                   progress: "Progress | None" = None, resume: bool = False) -> Tuple[CrossValidation, Dict]:
    """k-fold cross-validation by subject (or one training with ``folds == 1``).

    Writes ``fold_<n>/last.pt`` (resumable state) and ``fold_<n>/result.json`` +
    ``fold_<n>/best.pt`` as each fold finishes. Returns the results and the best fold's state.
    """
    from mskquant.device import select_device

    cfg.validate()
    progress = as_progress(progress)
    device = select_device(cfg.device)
    work_dir = Path(work_dir)
    all_idx = np.arange(len(data))
    if cfg.folds == 1:
        train_idx, test_idx = validation_split(data.groups, all_idx, cfg.validation_fraction, cfg.seed + 100)
        splits = [test_idx]
    else:
        splits = subject_folds(data.groups, cfg.folds, cfg.seed)
    results: List[FoldResult] = []
    states = {}
    for f, test_idx in enumerate(splits):
        fold_dir = work_dir / f"fold_{f + 1}"
        sub = progress.sub(f / len(splits), (f + 1) / len(splits))
        result_file = fold_dir / "result.json"
        if resume and result_file.is_file() and (fold_dir / "best.pt").is_file():
            saved = json.loads(result_file.read_text())
            results.append(FoldResult(**saved))
            states[f] = None
            continue
        rest = np.setdiff1d(all_idx, test_idx)
        train_idx, val_idx = validation_split(data.groups, rest, cfg.validation_fraction, cfg.seed + f)
        model, best, history = train_fold(data, train_idx, val_idx, cfg, template, device, sub.sub(0, 0.95),
                                          fold_dir / "last.pt", resume)
        probs, _ = predict_probabilities(model, data, test_idx, device, progress=sub)
        res = FoldResult(f + 1, [int(i) for i in test_idx], [float(p) for p in probs],
                         _safe_auc(data.labels[test_idx], probs), int(best["epoch"]), float(best["auc"]), history)
        _save_checkpoint(fold_dir / "best.pt", model.state_dict())
        with atomic_path(result_file) as tmp:
            tmp.write_text(json.dumps(asdict(res), allow_nan=True))
        results.append(res)
        states[f] = model.state_dict()
    pooled = np.full(len(data), np.nan)
    fold_of = np.zeros(len(data), int)
    for r in results:
        pooled[r.test_idx] = r.probabilities
        fold_of[r.test_idx] = r.fold
    tested = ~np.isnan(pooled)
    best_fold = max(range(len(results)), key=lambda i: (results[i].validation_auc, -i))  # AUC across folds
    best_state = states.get(best_fold)
    if best_state is None:
        best_state = torch.load(work_dir / f"fold_{best_fold + 1}" / "best.pt", map_location="cpu", weights_only=True)
    cv = CrossValidation(results, data.labels[tested], pooled[tested], fold_of[tested], best_fold + 1)
    return cv, best_state


# --- reports ---------------------------------------------------------------------------------------
def write_reports(cv: CrossValidation, data: PairData, out, cfg: TrainingConfig) -> Dict:
    """folds.csv, predictions.csv, history.csv, cv.json and roc.png in an open OutputFolder."""
    from mskquant import render
    from mskquant.csvio import write_rows_csv

    write_rows_csv(out.path("folds.csv"), ["fold", "n_test", "auc", "best_epoch", "validation_auc"],
                   [[r.fold, len(r.test_idx), r.auc, r.best_epoch, r.validation_auc] for r in cv.folds])
    rows = []
    for r in cv.folds:
        for i, p in zip(r.test_idx, r.probabilities):
            rows.append([data.ids[i], str(data.groups[i]), r.fold, f"{float(data.labels[i]):g}", p])
    write_rows_csv(out.path("predictions.csv"), ["pair", "subject", "fold", "label_right_painful", "p_right_painful"],
                   rows)
    write_rows_csv(out.path("history.csv"), ["fold", "epoch", "lr", "train_loss", "val_loss", "val_auc", "seconds"],
                   [[r.fold] + [h[k] for k in ("epoch", "lr", "train_loss", "val_loss", "val_auc", "seconds")]
                    for r in cv.folds for h in r.history])
    roc = cv.roc()
    n_sided = int(lesion_pairs(cv.labels).sum())
    series = [render.Series([0, 1], [0, 1], "chance", "line", (0.6, 0.6, 0.6), 1.0)]
    if roc is not None:
        series.insert(0, render.Series(roc[0], roc[1], f"pooled, n={n_sided}", "line", (0.8, 0.1, 0.1)))
    title = (f"ROC, {len(cv.folds)}-fold cross-validation by subject (AUC {cv.auc:.3f})" if roc is not None else
             "ROC: the tested pairs do not include both painful sides")
    chart = render.Chart(title, "1 - specificity", "sensitivity", series, x_range=(0, 1), y_range=(0, 1))
    render.chart_png(chart, out.path("roc.png"))
    summary = {"auc_overall": cv.auc, "auc_per_fold": [r.auc for r in cv.folds],
               "n_pairs": int(len(cv.labels)), "n_lesion_free_pairs": int((~lesion_pairs(cv.labels)).sum()),
               "n_subjects": int(len(np.unique(data.groups))),
               "best_fold": cv.best_fold, "config": asdict(cfg)}
    from mskquant.cli.common import write_json

    write_json(summary, out.path("cv.json"))
    return summary


def read_pairs_csv(path: Path) -> List[Dict[str, str]]:
    """Rows of a pairs table: subject, left, right, painful_side [, center_left, center_right, group, role]."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Pairs table {path} does not exist: give a CSV with columns subject,left,right,painful_side.")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = {"subject", "left", "right", "painful_side"}
    if not rows or not need <= set(rows[0]):
        raise InputError(f"{path} needs a header with columns {', '.join(sorted(need))} "
                         f"(optional: center_left, center_right, group, role).")
    for n, r in enumerate(rows, start=2):
        if r["painful_side"] not in PAIN_LABELS:
            raise InputError(f"{path} line {n}: painful_side must be 'left', 'right' or 'none' (neither knee "
                             f"painful), not {r['painful_side']!r}.")
    return rows
