"""Training the femoral cartilage U-Net on MESE simulated from knee label maps.

The recipe of Thomas et al. 2.3-2.4 and supplement SM.2-SM.3:

* per slice and per epoch the network's input is echo 1, 2 or 3 with probability 20, 60 and
  20 % (validation always uses echo 2);
* per volume and per epoch 90 % of the slices without cartilage are left out (validation keeps
  every slice);
* soft Dice loss per slice, ``1 - (2 sum(p y) + 1) / (sum p + sum y + 1)`` (the authors'
  ``dice_loss`` with a smoothing of 1 instead of 1e-7, so an empty slice pushes its
  probabilities down smoothly), averaged over the batch;
* Adam with beta1 = 0.99 and beta2 = 0.995 (learning rate 1e-3, cosine decay to 5 %);
* subjects split into training, validation and test sets (both time points of a knee stay in
  one set); the checkpoint with the best mean validation Dice (p >= 0.5, whole volumes,
  the inference code path) is kept;
* resumable (``last.pt`` holds the optimiser and the epoch), progress with an ETA, CPU or CUDA.

Data. No real MESE images are available, so every volume is simulated on the fly by the
project's MESE simulator (:mod:`.simulator`) from the knee label maps, and varied widely
because the model will meet MESE made by other simulators (and, one day, scanners):
tissue PD and T2 (+-30 % and more), cartilage T2 profile and texture, a body outline or
none (air, or soft tissue filling the field of view), with or without a dark cortical shell,
menisci/capsule tissue and joint fluid, partial-volume sampling from none (nearest label) to
5 points through the slab, in-plane resolution 0.28-0.45 mm, field of view, 18-30 slices of
2.5-3.5 mm with 0-1 mm gaps, rotations of ~6 degrees about each axis, centre offsets, echo
times, stimulated-echo deficit, receive bias and tissue texture. A bank of noise-free
volumes is simulated once and partly replaced every epoch; noise (Rician or Gaussian, SNR
10-100), a random affine + elastic in-plane deformation and the patch position are drawn
anew for every use, so a volume is never seen twice the same way. Patches (default 256 x 256
around the cartilage, or anywhere for slices without it) keep the CPU cost down; the network
is fully convolutional and is validated on whole 384 x 384 slices.

Network: the shared :class:`mskquant.unet.UNet2D` with transposed-convolution up-sampling and
a sigmoid output. Default 5 levels, 16 -> 256 feature maps (1.9 M parameters, 7.8 MB) instead
of the paper's 6 levels, 32 -> 1024 (31 M): segmentation, T2 and subregions of an OAI volume
must take <= 6 s on 2 CPU cores (the paper: 6 s on a K80 GPU).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mskquant.device import autocast, bf16_supported
from mskquant.errors import InputError, ModelError
from mskquant.progress import Progress, as_progress

from . import anatomy as an
from . import simulator as sm
from .checkpoint import (FIT_PROBABILITY, T2_RANGE_MS, default_input_spec, make_checkpoint, read_checkpoint)
from .segmentation import (Normalisation, normalisation_of, predict_probability, sagittal_layout, KneeModel)
from .checkpoint import Thresholds

ECHO_PROBABILITIES = (0.2, 0.6, 0.2)  # echoes 1, 2, 3 (Thomas et al. 2.3)
KEEP_EMPTY_FRACTION = 0.1  # 90 % of the slices without cartilage are dropped per epoch
BETAS = (0.99, 0.995)  # Thomas et al. SM.3
GENERATORS = ("mese", "randomised")
LABEL_MAP_PATTERN = re.compile(r"^(\d+)(_\d+m)?\.(nii\.gz|nii|nrrd)$")


@dataclass
class TrainingConfig:
    features: Tuple[int, ...] = (16, 32, 64, 128, 256)
    network_size: Tuple[int, int] = (384, 384)
    patch: int = 256  # training patch size; 0 = the whole network input
    batch_size: int = 8
    learning_rate: float = 1e-3
    epochs: int = 40
    max_minutes: float = 0.0  # stop (after an epoch) once this much time has passed; 0 = no limit
    bank_size: int = 40  # noise-free simulated volumes kept in memory
    bank_refresh: int = 5  # of them replaced after every epoch
    validation_volumes: int = 3  # per validation subject
    validate_every: int = 1
    n_test_subjects: int = 3
    n_validation_subjects: int = 2
    seed: int = 0
    bf16: bool = True  # bfloat16 autocast where the CPU/GPU supports it (weights stay float32)
    threads: int = 1  # torch threads (1: robust on shared cores)
    vary_geometry: bool = True  # False: every phantom on the base grid (tests)
    base_phantom: Optional[dict] = None  # PhantomParameters overrides for the base grid (tests)
    generator: str = "mese"  # "mese": the MESE phantom; "randomised": domain randomisation (.synthetic)
    appearance_refresh: int = 10  # randomised: bank volumes given a new random appearance per epoch
    init_from: str = ""  # start from these weights (a knee checkpoint file or registered model id)
    workers: int = 0  # >0: samples made by this many worker processes (.training_stream), the bank shared out
    epoch_samples: int = 0  # with workers: samples per epoch (0: 25 per bank volume, about a serial epoch)
    vary_joint_shell: bool = True  # randomised: redraw the tissue beside the cartilage per volume (synthetic.vary_joint_shell)

    def validate(self) -> "TrainingConfig":
        if len(self.features) < 2 or any(int(f) < 1 for f in self.features):
            raise InputError(f"--features needs at least 2 positive feature counts (got {self.features}).")
        div = 2 ** (len(self.features) - 1)
        if any(int(s) % div for s in self.network_size) or (self.patch and self.patch % div):
            raise InputError(f"The network size {self.network_size} and patch {self.patch} must be multiples of "
                             f"{div} for a {len(self.features)}-level U-Net.")
        if self.patch and self.patch > min(self.network_size):
            raise InputError(f"The training patch ({self.patch}) cannot exceed the network size {self.network_size}.")
        for name in ("batch_size", "epochs", "bank_size", "validation_volumes", "validate_every", "threads"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name.replace('_', ' ')} must be at least 1.")
        if not 0 <= self.bank_refresh <= self.bank_size:
            raise InputError("The bank refresh must lie between 0 and the bank size.")
        if not self.learning_rate > 0:
            raise InputError("The learning rate must be positive.")
        if self.generator not in GENERATORS:
            raise InputError(f"Unknown training data generator {self.generator!r}: choose one of {', '.join(GENERATORS)}.")
        if self.appearance_refresh < 0:
            raise InputError("The appearance refresh must not be negative.")
        if self.workers < 0 or self.epoch_samples < 0:
            raise InputError("The number of data workers and the samples per epoch must not be negative.")
        return self

    @property
    def architecture(self) -> dict:
        return {"name": "unet2d", "params": {"in_channels": 1, "out_channels": 1,
                                            "features": [int(f) for f in self.features], "kernel_size": 3,
                                            "batch_norm": True, "up_mode": "transpose",
                                            "final_activation": "sigmoid"}}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        d["network_size"] = list(self.network_size)
        return d


# --- subjects ----------------------------------------------------------------------------------------
@dataclass
class Split:
    train: List[Path]
    validation: List[Path]
    test: List[Path]

    def subjects(self, part: str) -> List[str]:
        return sorted({subject_of(p) for p in getattr(self, part)})

    def as_dict(self) -> dict:
        return {k: [p.name for p in getattr(self, k)] for k in ("train", "validation", "test")}


def subject_of(path) -> str:
    m = LABEL_MAP_PATTERN.match(Path(path).name)
    return m.group(1) if m else Path(path).name


def label_maps_in(folder) -> List[Path]:
    """Knee label maps named like OAI subjects (``9001104.nii.gz``, ``9014797_72m.nii.gz``)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"Label-map folder {folder} does not exist: give the folder of knee label maps "
                         f"(e.g. ../shared/data/knee_labelmaps).")
    maps = sorted(p for p in folder.iterdir() if p.is_file() and LABEL_MAP_PATTERN.match(p.name))
    if not maps:
        raise InputError(f"{folder} holds no knee label maps named <subject>[_<NN>m].nii.gz: give the folder of "
                         f"OAI-style label maps (1 femur, 2 femoral cartilage, 3 tibia, ...).")
    return maps


def split_subjects(paths: Sequence[Path], n_test: int = 3, n_validation: int = 2, seed: int = 0) -> Split:
    """Training/validation/test by subject: every time point of a knee stays in one set.

    Knees with several time points train (more anatomy per subject); the single-time-point
    knees are shuffled with ``seed`` and the first ``n_test`` are the test set, the next
    ``n_validation`` the validation set.
    """
    by_subject: Dict[str, List[Path]] = {}
    for p in sorted(Path(x) for x in paths):
        by_subject.setdefault(subject_of(p), []).append(p)
    singles = sorted(s for s, ps in by_subject.items() if len(ps) == 1)
    multi = sorted(s for s, ps in by_subject.items() if len(ps) > 1)
    if len(singles) < n_test + n_validation or len(by_subject) < n_test + n_validation + 1:
        raise InputError(f"{len(by_subject)} subjects ({len(singles)} with one time point) cannot give {n_test} test, "
                         f"{n_validation} validation subjects and training data: add label maps or lower the counts.")
    order = list(np.random.default_rng(seed).permutation(singles))
    test, val, train = order[:n_test], order[n_test:n_test + n_validation], order[n_test + n_validation:] + multi

    def files(subjects):
        return [p for s in sorted(subjects) for p in by_subject[s]]

    return Split(files(train), files(val), files(test))


# --- simulated data ------------------------------------------------------------------------------------
def _scaled(value: Tuple[float, float], rng, pd=(0.7, 1.3), t2=(0.7, 1.4)) -> Tuple[float, float]:
    return value[0] * rng.uniform(*pd), value[1] * rng.uniform(*t2)


def training_phantom_parameters(rng: np.random.Generator, base: Optional[sm.PhantomParameters] = None,
                                vary_geometry: bool = True, snr: Optional[float] = None) -> sm.PhantomParameters:
    """One widely varied MESE acquisition (see the module docstring); ``snr`` None = noise-free."""
    base = base or sm.PhantomParameters()
    p = base.randomized(rng) if vary_geometry else replace(base, seed=int(rng.integers(0, 2 ** 31)),
                                                             texture_seed=int(rng.integers(0, 2 ** 31)))
    if vary_geometry and rng.random() < 0.35:  # the OAI grid itself, often
        p = replace(p, matrix=base.matrix, fov_mm=base.fov_mm, n_slices=base.n_slices,
                    slice_thickness_mm=base.slice_thickness_mm, slice_gap_mm=base.slice_gap_mm)
    t = {c: _scaled(v, rng) for c, v in sm.DEFAULT_TISSUES.items()}
    t[an.AIR] = (0.0, 1.0)
    marrow_like = lambda: (rng.uniform(0.7, 1.0), rng.uniform(40, 90))  # noqa: E731
    soft_like = lambda: (rng.uniform(0.4, 0.8), rng.uniform(25, 50))  # noqa: E731
    if rng.random() < 0.25:  # no dark cortical shell / subchondral plate
        for code in (an.FEMUR_CORTEX, an.TIBIA_CORTEX, an.PATELLA_CORTEX):
            t[code] = marrow_like()
    if rng.random() < 0.25:  # menisci and capsule not modelled apart from muscle
        t[an.JOINT] = soft_like()
    if rng.random() < 0.25:  # no joint fluid
        t[an.FLUID] = soft_like()
    background = rng.random()
    if background < 0.15:  # bones and cartilage in air (no body outline)
        t[an.MUSCLE] = t[an.FAT] = t[an.JOINT] = t[an.FLUID] = (0.0, 1.0)
    elif background < 0.30:  # soft tissue everywhere, no air
        t[an.AIR] = soft_like()
        t[an.MUSCLE] = t[an.FAT] = t[an.AIR]
    deep = rng.uniform(25.0, 45.0)
    cart = replace(p.cartilage, pd=rng.uniform(0.5, 0.95), femoral_deep_ms=deep,
                   femoral_superficial_ms=deep + rng.uniform(0.0, 25.0), depth_exponent=rng.uniform(0.6, 1.6),
                   texture_sd_ms=rng.uniform(0.0, 3.0), tibial_deep_ms=rng.uniform(25.0, 45.0),
                   tibial_superficial_ms=rng.uniform(40.0, 65.0), patellar_deep_ms=rng.uniform(25.0, 45.0),
                   patellar_superficial_ms=rng.uniform(40.0, 65.0))
    sub = [(1, 1, 1), (2, 2, 3), (2, 2, 5)][int(rng.choice(3, p=[0.2, 0.3, 0.5]))]
    te = base.echo_times_ms
    if rng.random() < 0.3:
        te1, dte = rng.uniform(8.0, 12.0), rng.uniform(8.0, 12.0)
        te = tuple(float(te1 + n * dte) for n in range(len(base.echo_times_ms)))
    p = replace(p, tissues=t, cartilage=cart, subsamples=sub, echo_times_ms=te,
                tissue_texture=float(rng.uniform(0.0, 0.15)), snr=1e6 if snr is None else float(snr))
    if vary_geometry:
        p = replace(p, rotation_deg=tuple(float(v) for v in rng.normal(0.0, 6.0, 3)),
                    centre_offset_mm=tuple(float(v) for v in rng.normal(0.0, 8.0, 3)))
    return p.validate()


@dataclass
class BankVolume:
    """A noise-free simulated volume in the network layout: echoes 1-3, femoral fraction, truth."""

    echoes: np.ndarray  # float16 [3, slices, rows, cols]
    fraction: np.ndarray  # float16 [slices, rows, cols] femoral cartilage fraction per voxel
    cartilage_slices: np.ndarray  # slice indices holding truth cartilage (fraction >= 0.5)
    empty_slices: np.ndarray
    reference_signal: float
    anatomy: str

    @property
    def nbytes(self) -> int:
        return int(self.echoes.nbytes + self.fraction.nbytes)


def simulate_bank_volume(anat: an.KneeAnatomy, rng: np.random.Generator, config: TrainingConfig) -> BankVolume:
    base = sm.PhantomParameters(**(config.base_phantom or {}))
    for _ in range(5):
        params = training_phantom_parameters(rng, base, config.vary_geometry)
        try:
            ph = sm.simulate(anat, params)
            break
        except InputError:  # an offset pushed the knee out of the field of view: draw again
            continue
    else:
        raise InputError(f"Could not place a field of view on the femoral cartilage of {anat.source}.")
    layout = sagittal_layout(ph.series.geometry)
    echoes = layout.to_canonical(ph.series.echoes.array[:3]).astype(np.float16)
    fraction = layout.to_canonical(ph.femoral_fraction).astype(np.float16)
    has = (fraction >= 0.5).any(axis=(1, 2))
    return BankVolume(np.ascontiguousarray(echoes), np.ascontiguousarray(fraction), np.nonzero(has)[0],
                      np.nonzero(~has)[0], sm.REFERENCE_SIGNAL, anat.subject_id or anat.source)


class TrainingBank:
    """The volumes the network learns from, a few replaced after every epoch.

    ``mese``: noise-free MESE phantoms (:func:`simulate_bank_volume`). ``randomised``: class
    fractions of random grids (:mod:`.synthetic`), each rendered with a new random appearance
    every few epochs (``appearance_refresh`` of them per epoch), so the network meets a
    volume's anatomy under many looks.
    """

    def __init__(self, anatomies: Sequence[an.KneeAnatomy], config: TrainingConfig, rng: np.random.Generator,
                 progress: "Progress | None" = None) -> None:
        progress = as_progress(progress)
        self.anatomies = list(anatomies)
        self.config = config
        self.randomised = config.generator == "randomised"
        self._codes: Dict[int, np.ndarray] = {}
        self._shells: Dict[int, object] = {}
        self.sources: list = []
        self.looks: List[Optional[BankVolume]] = []
        for n in range(config.bank_size):
            progress(n / config.bank_size, f"Simulating training volumes ({n + 1}/{config.bank_size})")
            self.sources.append(self._new(n % len(self.anatomies), rng))
            self.looks.append(None)
        self._fresh = set(range(len(self.sources)))

    def _new(self, index: int, rng: np.random.Generator):
        anat = self.anatomies[index]
        if not self.randomised:
            return simulate_bank_volume(anat, rng, self.config)
        from . import synthetic

        if index not in self._codes:
            self._codes[index] = synthetic.class_map(anat)
            if self.config.vary_joint_shell:
                self._shells[index] = synthetic.joint_shell(anat)
        return synthetic.sample_volume(anat, self._codes[index], rng, shell=self._shells.get(index))

    def volumes(self, rng: np.random.Generator) -> List[BankVolume]:
        """This epoch's volumes (randomised: some re-rendered with a new appearance)."""
        if not self.randomised:
            return list(self.sources)
        stale = [n for n, v in enumerate(self.looks) if v is None]
        others = [n for n in range(len(self.looks)) if n not in stale]
        extra = max(0, self.config.appearance_refresh - len(stale))
        redo = stale + [int(v) for v in rng.permutation(others)[:extra]]
        for n in redo:
            self.looks[n] = rendered_bank_volume(self.sources[n], rng)
        return list(self.looks)  # type: ignore[arg-type]

    def refresh(self, rng: np.random.Generator) -> None:
        for _ in range(self.config.bank_refresh):
            k = int(rng.integers(len(self.sources)))
            self.sources[k] = self._new(int(rng.integers(len(self.anatomies))), rng)
            self.looks[k] = None

    def describe(self) -> str:
        mb = sum(v.nbytes for v in self.sources) / 1e6
        return f"{len(self.sources)} {self.config.generator} volumes, {mb:.0f} MB"


def rendered_bank_volume(vol, rng: np.random.Generator) -> BankVolume:
    """A :class:`.synthetic.FractionVolume` with a random appearance, in the network layout."""
    from . import synthetic

    echoes, _, reference, _ = synthetic.render_volume(vol, rng, 3)
    layout = sagittal_layout(vol.geometry)
    has = (vol.fraction >= 0.5).any(axis=(1, 2))
    return BankVolume(np.ascontiguousarray(layout.to_canonical(echoes).astype(np.float16)), vol.fraction,
                      np.nonzero(has)[0], np.nonzero(~has)[0], reference, vol.anatomy)


def initial_weights(config: TrainingConfig) -> dict:
    """The state dict to start from: a knee checkpoint file or a registered model id."""
    path = Path(config.init_from).expanduser()
    if not path.is_file():
        from mskquant.models import ModelStore

        store = ModelStore()
        spec = store.registry.get(config.init_from)
        path = store.ensure(spec.id)[0]
    ckpt = read_checkpoint(path, "Initial weights")
    if ckpt.architecture != config.architecture:
        raise ModelError(f"{config.init_from} has another architecture ({ckpt.architecture.get('params')}) than "
                         f"this training ({config.architecture['params']}): give matching --features.")
    return ckpt.state_dict


# --- augmentation -----------------------------------------------------------------------------------------
@dataclass
class NoiseModel:
    sigma: float
    rician: bool

    def apply(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        clean = clean.astype(np.float32)
        n1 = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(self.sigma)
        if not self.rician:
            return clean + n1
        n2 = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(self.sigma)
        return np.sqrt((clean + n1) ** 2 + n2 ** 2)


def draw_noise(rng: np.random.Generator, reference_signal: float) -> NoiseModel:
    snr = math.exp(rng.uniform(math.log(10.0), math.log(100.0)))
    return NoiseModel(reference_signal / snr, bool(rng.random() < 0.75))


def volume_normalisation(clean: np.ndarray, noise: NoiseModel, rng: np.random.Generator,
                         samples: int = 200_000) -> Normalisation:
    """The inference normalisation of the noisy volume, from a random subsample of its voxels."""
    flat = clean.reshape(-1)
    idx = rng.integers(0, flat.size, min(samples, flat.size))
    return normalisation_of(noise.apply(flat[idx], rng))


def _warp_coordinates(rng: np.random.Generator, size: int, centre: Tuple[float, float], elastic: bool
                      ) -> np.ndarray:
    """Source (row, col) coordinates of a ``size`` x ``size`` patch: random affine + smooth displacement."""
    from scipy import ndimage as ndi

    angle = math.radians(rng.uniform(-10.0, 10.0))
    scale = rng.uniform(0.9, 1.1, 2)
    shear = rng.uniform(-0.05, 0.05)
    c, s = math.cos(angle), math.sin(angle)
    a = np.array([[c, -s], [s, c]]) @ np.array([[scale[0], shear], [0.0, scale[1]]])
    g = np.mgrid[0:size, 0:size].reshape(2, -1).astype(np.float64) - (size - 1) / 2.0
    coords = a @ g + np.asarray(centre, float)[:, None]
    if elastic:
        for axis in range(2):
            coarse = rng.normal(0.0, rng.uniform(0.0, 3.0), (5, 5))
            coords[axis] += ndi.zoom(coarse, size / 5.0, order=3)[:size, :size].reshape(-1)
    return coords


def training_sample(vol: BankVolume, slice_index: int, echo: int, norm: Normalisation, noise: NoiseModel,
                    rng: np.random.Generator, size: int, augment: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """(input, target) patches of one slice: deformed, noised, normalised as at inference."""
    from scipy import ndimage as ndi

    clean = vol.echoes[echo - 1, slice_index].astype(np.float32)
    frac = vol.fraction[slice_index].astype(np.float32)
    rows, cols = clean.shape
    cart = np.argwhere(frac >= 0.5)
    if cart.size and augment and rng.random() < 0.85:  # mostly around the cartilage, sometimes anywhere
        centre = cart[rng.integers(len(cart))] + rng.normal(0.0, size / 6.0, 2)
    elif augment:
        centre = np.array([rng.uniform(0, rows - 1), rng.uniform(0, cols - 1)])
    else:
        centre = np.array([(rows - 1) / 2.0, (cols - 1) / 2.0])
    if augment:
        coords = _warp_coordinates(rng, size, (float(centre[0]), float(centre[1])), bool(rng.random() < 0.7))
    else:
        g = np.mgrid[0:size, 0:size].reshape(2, -1).astype(np.float64) - (size - 1) / 2.0
        coords = g + centre[:, None]
    # Outside the slice is "padding" at inference: the lowest normalised value, no noise.
    image = ndi.map_coordinates(clean, coords, order=1, cval=np.nan).reshape(size, size)
    target = ndi.map_coordinates(frac, coords, order=1, cval=0.0).reshape(size, size) >= 0.5
    outside = ~np.isfinite(image)
    x = norm.apply(noise.apply(np.nan_to_num(image), rng))
    x[outside] = norm.low
    return x, target.astype(np.float32)


def epoch_plan(bank: Sequence[BankVolume], rng: np.random.Generator) -> List[Tuple[int, int, int]]:
    """(volume, slice, echo) for one epoch: every cartilage slice, 10 % of the others, echo 1/2/3 at 20/60/20 %."""
    plan = []
    for v, vol in enumerate(bank):
        empty = vol.empty_slices[rng.random(vol.empty_slices.size) < KEEP_EMPTY_FRACTION]
        for s in np.concatenate([vol.cartilage_slices, empty]):
            plan.append((v, int(s), int(rng.choice(3, p=ECHO_PROBABILITIES)) + 1))
    order = rng.permutation(len(plan))
    return [plan[i] for i in order]


def serial_batches(data: "TrainingBank", rng: np.random.Generator, config: TrainingConfig
                   ) -> Tuple[int, Iterator[Tuple[np.ndarray, np.ndarray]]]:
    """One serial epoch: (number of batches, batches of (x, y) [B, 1, S, S]); the bank is refreshed at its end."""
    size = int(config.patch or min(config.network_size))
    bank = data.volumes(rng)
    plan = epoch_plan(bank, rng)
    noises = {v: draw_noise(rng, bank[v].reference_signal) for v in range(len(bank))}
    n_batches = int(math.ceil(len(plan) / config.batch_size))

    def batches():
        norms: Dict[Tuple[int, int], Normalisation] = {}
        for b in range(n_batches):
            xs, ys = [], []
            for v, s, e in plan[b * config.batch_size:(b + 1) * config.batch_size]:
                if (v, e) not in norms:
                    norms[(v, e)] = volume_normalisation(bank[v].echoes[e - 1], noises[v], rng)
                x, y = training_sample(bank[v], s, e, norms[(v, e)], noises[v], rng, size)
                xs.append(x)
                ys.append(y)
            yield np.stack(xs)[:, None], np.stack(ys)[:, None]
        data.refresh(rng)  # replace part of the bank for the next epoch

    return n_batches, batches()


# --- loss and validation -------------------------------------------------------------------------------------
def soft_dice_loss(probability, target, smooth: float = 1.0):
    """1 - soft Dice per slice, averaged over the batch (Thomas et al. SM.2)."""
    p = probability.float().flatten(1)
    y = target.float().flatten(1)
    dice = (2.0 * (p * y).sum(1) + smooth) / (p.sum(1) + y.sum(1) + smooth)
    return 1.0 - dice.mean()


@dataclass
class ValidationVolume:
    series: object  # MeseSeries with noise
    truth: np.ndarray  # bool femoral cartilage mask
    name: str
    sigma: Optional[float] = None  # the noise SD it was simulated with


def validation_volumes(anatomies: Sequence[an.KneeAnatomy], per_subject: int, seed: int, config: TrainingConfig,
                       progress: "Progress | None" = None) -> List[ValidationVolume]:
    """Per anatomy: one OAI-protocol phantom (SNR 30) and ``per_subject - 1`` varied ones (SNR 15-60)."""
    progress = as_progress(progress)
    rng = np.random.default_rng(seed + 7919)
    base = sm.PhantomParameters(**(config.base_phantom or {}))
    out = []
    total = len(anatomies) * per_subject
    for a in anatomies:
        for n in range(per_subject):
            progress(len(out) / total, f"Simulating validation volumes ({len(out) + 1}/{total})")
            if n == 0:
                params = replace(base, snr=30.0, seed=int(rng.integers(0, 2 ** 31)))
            else:
                params = training_phantom_parameters(rng, base, config.vary_geometry, snr=rng.uniform(15.0, 60.0))
            ph = sm.simulate(a, params)
            out.append(ValidationVolume(ph.series, ph.cartilage_mask.array, f"{a.subject_id or a.source} #{n}",
                                        float(ph.sigma)))
    progress(1.0, "Validation volumes ready")
    return out


def randomised_validation_volumes(anatomies: Sequence[an.KneeAnatomy], per_subject: int, seed: int,
                                  progress: "Progress | None" = None) -> List[ValidationVolume]:
    """Per anatomy: one volume on the OAI grid and ``per_subject - 1`` on random grids, random looks, SNR 15-60."""
    from . import synthetic

    progress = as_progress(progress)
    rng = np.random.default_rng(seed + 7919)
    out: List[ValidationVolume] = []
    total = len(anatomies) * per_subject
    for a in anatomies:
        codes = synthetic.class_map(a)
        for n in range(per_subject):
            progress(len(out) / total, f"Simulating validation volumes ({len(out) + 1}/{total})")
            vol = synthetic.sample_volume(a, codes, rng, params=sm.PhantomParameters() if n == 0 else None)
            series, sigma = synthetic.noisy_series(vol, rng, float(rng.uniform(15.0, 60.0)), bool(rng.random() < 0.75))
            out.append(ValidationVolume(series, synthetic.femoral_truth(vol), f"{a.subject_id or a.source} #{n}", sigma))
    progress(1.0, "Validation volumes ready")
    return out


def validation_dice(net, volumes: Sequence[ValidationVolume], config: TrainingConfig, device,
                    progress: "Progress | None" = None) -> List[float]:
    """Dice (p >= 0.5) of every validation volume through the inference code path."""
    from mskquant.inference import prepare_for_inference
    from mskquant.metrics import dice

    progress = as_progress(progress)
    model = KneeModel("training", prepare_for_inference(net, device), device, 2, tuple(config.network_size),
                      Thresholds(0.5, 0.0), config.architecture)
    out = []
    for n, v in enumerate(volumes):
        prob = predict_probability(model, v.series, progress.sub(n / len(volumes), (n + 1) / len(volumes)))
        out.append(dice(prob >= 0.5, v.truth))
    return out


# --- the loop ----------------------------------------------------------------------------------------------
@dataclass
class TrainingResult:
    best_path: Path
    last_path: Path
    best_dice: float
    best_epoch: int
    epochs_run: int
    history: List[dict] = field(default_factory=list)


UNCALIBRATED = {"probability_threshold": 0.5, "min_slice_area_mm2": 0.0, "fit_probability": FIT_PROBABILITY,
                "t2_range_ms": list(T2_RANGE_MS), "calibrated": False,
                "note": "not calibrated yet: run 'mskquant knee-calibrate'"}


def _format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _save(obj: dict, path: Path) -> None:
    import torch

    from mskquant.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, str(tmp))


def train(train_anatomies: Sequence[an.KneeAnatomy], validation: Sequence[ValidationVolume], out: Path,
          config: TrainingConfig, device, progress: "Progress | None" = None, resume: bool = False,
          metadata: Optional[dict] = None, log: Optional[Callable[[str], None]] = None) -> TrainingResult:
    """Train (or resume) into folder ``out``: ``best.pt`` (best validation Dice), ``last.pt``, ``history.csv``."""
    import torch

    from mskquant.unet import build_unet

    config = config.validate()
    progress = as_progress(progress)
    log = log or (lambda s: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    best_path, last_path = out / "best.pt", out / "last.pt"
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(config.threads))
    try:
        torch.manual_seed(config.seed)
        net = build_unet(config.architecture["params"]).to(device)
        if config.init_from and not resume:
            net.load_state_dict(initial_weights(config))
            log(f"starting from the weights of {config.init_from}")
        opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate, betas=BETAS)
        start_epoch, best_dice, best_epoch, history, elapsed_before = 0, -1.0, -1, [], 0.0
        if resume:
            if not last_path.is_file():
                raise InputError(f"Nothing to resume in {out} (no last.pt): start a new training without --resume.")
            state = read_checkpoint(last_path, "Training checkpoint").raw
            if state.get("architecture") != config.architecture:
                raise ModelError(f"{last_path} was trained with another architecture "
                                 f"({state.get('architecture', {}).get('params')}): resume with the same --features.")
            net.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
            r = state["resume"]
            start_epoch, best_dice, best_epoch = int(r["epoch"]), float(r["best_dice"]), int(r["best_epoch"])
            history, elapsed_before = list(r["history"]), float(r.get("elapsed_s", 0.0))
            log(f"resuming after epoch {start_epoch} (best validation Dice {best_dice:.4f} at epoch {best_epoch})")
        if start_epoch >= config.epochs:
            raise InputError(f"{last_path} already ran {start_epoch} epochs: give more --epochs to continue.")
        use_bf16 = bool(config.bf16 and bf16_supported(device))
        rng = np.random.default_rng([config.seed, start_epoch])
        t_start = time.monotonic()
        deadline = config.max_minutes * 60.0 - elapsed_before if config.max_minutes else math.inf

        def elapsed() -> float:
            return time.monotonic() - t_start

        # The bank: noise-free volumes, a few replaced after every epoch (with workers: shared out among them).
        if config.workers:
            from .training_stream import sample_loader, samples_per_epoch

            stream = iter(sample_loader(train_anatomies, config, start_epoch, pin_memory=device.type == "cuda"))
            data = None
            log(f"bank: {config.bank_size} {config.generator} volumes shared by {config.workers} worker processes, "
                f"{samples_per_epoch(config)} samples per epoch; bf16 {use_bf16}")
        else:
            data = TrainingBank(train_anatomies, config, rng, progress.sub(0.0, 0.05))
            log(f"bank: {data.describe()}; bf16 {use_bf16}")
        train_progress = progress.sub(0.05, 1.0)
        epochs_left = config.epochs - start_epoch
        epoch = start_epoch
        epoch_times: List[float] = []
        while epoch < config.epochs:
            t_epoch = time.monotonic()
            frac_done = max((epoch - start_epoch) / max(epochs_left, 1),
                            elapsed() / deadline if math.isfinite(deadline) else 0.0)
            global_frac = max(epoch / config.epochs, (elapsed_before + elapsed()) / (config.max_minutes * 60.0)
                              if config.max_minutes else 0.0)
            lr = config.learning_rate * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(global_frac, 1.0))))
            for g in opt.param_groups:
                g["lr"] = lr
            if data is not None:
                n_batches, batches = serial_batches(data, rng, config)
            else:
                n_batches = int(math.ceil(samples_per_epoch(config) / config.batch_size))
                batches = (next(stream) for _ in range(n_batches))
            net.train()
            losses, n_seen = [], 0
            for b, (xb, yb) in enumerate(batches):
                n_seen += int(xb.shape[0])
                x = torch.as_tensor(xb).to(device, non_blocking=True)
                y = torch.as_tensor(yb).to(device, non_blocking=True)
                if device.type == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
                opt.zero_grad(set_to_none=True)
                with autocast(device, use_bf16):
                    p = net(x)
                loss = soft_dice_loss(p, y)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                done = (epoch - start_epoch + (b + 1) / n_batches) / max(epochs_left, 1)
                if b == 0 or not epoch_times and b == min(10, n_batches - 1):
                    # the ETA is refreshed once per epoch so that terminal progress prints one line per epoch
                    per_epoch = (np.mean(epoch_times) if epoch_times else
                                 (time.monotonic() - t_epoch) * n_batches / (b + 1))
                    eta = per_epoch * (config.epochs - epoch - (b + 1) / n_batches)
                    if math.isfinite(deadline):
                        eta = min(eta, deadline - elapsed())
                    last = history[-1] if history else None
                    status = (f", last loss {last['loss']:.3f}, validation Dice {last['validation_dice']:.3f}"
                              if last else "")
                    head = f"Epoch {epoch + 1}/{config.epochs}{status}, ETA {_format_eta(eta)}"
                train_progress(min(done, 1.0), f"{head} (batch {b + 1}/{n_batches}, loss {np.mean(losses[-20:]):.3f})")
            epoch += 1
            row = {"epoch": epoch, "loss": float(np.mean(losses)), "learning_rate": lr,
                   "samples": n_seen,
                   "validation_dice": float("nan"), "seconds": 0.0}
            if epoch % config.validate_every == 0 or epoch == config.epochs:
                dices = validation_dice(net, validation, config, device)
                row["validation_dice"] = float(np.mean(dices))
                row["validation_dice_min"] = float(np.min(dices))
            row["seconds"] = time.monotonic() - t_epoch
            epoch_times.append(row["seconds"])
            history.append(row)
            improved = row["validation_dice"] > best_dice
            if improved:
                best_dice, best_epoch = row["validation_dice"], epoch
            training_meta = {**(metadata or {}), "config": config.as_dict(), "epochs": epoch,
                             "best_epoch": best_epoch, "best_validation_dice": best_dice,
                             "elapsed_s": elapsed_before + elapsed(), "bf16_autocast": use_bf16,
                             "device": str(device), "history": history}
            if improved:
                _save(make_checkpoint(config.architecture, net.state_dict(), default_input_spec(2, config.network_size),
                                      UNCALIBRATED, training_meta), best_path)
            _save(make_checkpoint(config.architecture, net.state_dict(), default_input_spec(2, config.network_size),
                                  UNCALIBRATED, training_meta, optimizer=opt.state_dict(),
                                  resume={"epoch": epoch, "best_dice": best_dice, "best_epoch": best_epoch,
                                          "history": history, "elapsed_s": elapsed_before + elapsed()}), last_path)
            _write_history(history, out / "history.csv")
            log(f"epoch {epoch}: loss {row['loss']:.4f}, validation Dice {row['validation_dice']:.4f}"
                f"{' (best)' if improved else ''}, lr {lr:.2e}, {row['seconds']:.0f} s")
            if elapsed() + (np.mean(epoch_times) if epoch_times else 0.0) > deadline:
                log(f"time limit reached after epoch {epoch}")
                break
        train_progress(1.0, f"Training done: best validation Dice {best_dice:.4f} (epoch {best_epoch})")
        return TrainingResult(best_path, last_path, best_dice, best_epoch, epoch, history)
    finally:
        torch.set_num_threads(previous_threads)


def _write_history(history: List[dict], path: Path) -> None:
    from mskquant.csvio import write_rows_csv

    cols = ["epoch", "loss", "validation_dice", "validation_dice_min", "learning_rate", "samples", "seconds"]
    write_rows_csv(path, cols, ([row.get(c, "") for c in cols] for row in history))


def training_metadata(split: Split, config: TrainingConfig) -> dict:
    """What a model card needs to say about the data and the recipe."""
    return {
        "data": ("MESE simulated by the MSKQuant phantom from OAI knee label maps (not real MESE images)"
                 if config.generator == "mese" else
                 "domain-randomised MESE-like volumes (mskquant.synth via KneeT2SegmentLib.synthetic) from OAI knee "
                 "label maps: random grids, tissue PD/T2, texture, bias, blur, gamma, noise (not real MESE images)"),
        "generator": config.generator,
        "init_from": config.init_from,
        "split": split.as_dict(),
        "split_subjects": {k: split.subjects(k) for k in ("train", "validation", "test")},
        "recipe": {"echo_probabilities": list(ECHO_PROBABILITIES), "keep_empty_fraction": KEEP_EMPTY_FRACTION,
                   "loss": "soft Dice per slice (smooth 1)", "optimizer": "Adam", "betas": list(BETAS),
                   "learning_rate": config.learning_rate, "schedule": "cosine to 5 %", "batch_size": config.batch_size,
                   "patch": config.patch, "selection": "best mean validation Dice (p >= 0.5, whole volumes, echo 2)"},
    }


def load_anatomies(paths: Sequence[Path], progress: "Progress | None" = None) -> List[an.KneeAnatomy]:
    progress = as_progress(progress)
    out = []
    for n, p in enumerate(paths):
        out.append(an.load_anatomy(p, progress=progress.sub(n / len(paths), (n + 1) / len(paths))))
    return out
