"""Training samples made by worker processes (``knee-train --workers N``).

On a machine with many cores, or a GPU that trains faster than one process can simulate,
the serial loop of :mod:`.training` leaves the network waiting for data. Here every worker
process keeps its own share of the bank (:class:`.training.TrainingBank`: the same
simulation, appearance, noise, deformation and echo choice per sample as the serial path)
and streams samples without end; the training loop takes ``epoch_samples`` of them per
epoch. Each worker starts its bank at another knee so that together they cover every
training knee, and draws from its own random stream (seed, epoch at start, worker), so a
run is reproducible for a given number of workers.

Workers are started by fork where the platform has it (the knee anatomies are shared, not
copied), else by spawn. Numeric core: numpy, scipy, torch's data loader; no Slicer.
"""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import replace
from typing import Iterator, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from . import anatomy as an


def worker_config(config, n_workers: int):
    """One worker's share of the bank, its refresh and its new appearances per pass (at least 1 each)."""
    share = max(1, int(round(config.bank_size / n_workers)))
    scale = share / float(config.bank_size)
    return replace(config, bank_size=share,
                   bank_refresh=min(share, max(1, int(math.ceil(config.bank_refresh * scale)))),
                   appearance_refresh=max(1, int(math.ceil(config.appearance_refresh * scale))))


def samples_per_epoch(config) -> int:
    """``epoch_samples``, or about what one serial epoch uses (25 slices per bank volume)."""
    return int(config.epoch_samples or 25 * config.bank_size)


def sample_stream(anatomies: Sequence[an.KneeAnatomy], config, seed: Tuple[int, ...], worker: int,
                  n_workers: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Endless (input, target) patches of one worker (numpy float32 [size, size] each)."""
    from .training import TrainingBank, draw_noise, epoch_plan, training_sample, volume_normalisation

    rng = np.random.default_rng(list(seed) + [worker])
    local = worker_config(config, n_workers)
    start = (worker * local.bank_size) % len(anatomies)
    rotated = list(anatomies[start:]) + list(anatomies[:start])
    bank = TrainingBank(rotated, local, rng)
    size = int(config.patch or min(config.network_size))
    while True:
        volumes = bank.volumes(rng)
        noises = [draw_noise(rng, v.reference_signal) for v in volumes]
        norms = {}
        for v, s, e in epoch_plan(volumes, rng):
            if (v, e) not in norms:
                norms[(v, e)] = volume_normalisation(volumes[v].echoes[e - 1], noises[v], rng)
            yield training_sample(volumes[v], s, e, norms[(v, e)], noises[v], rng, size)
        bank.refresh(rng)


class SampleStream(IterableDataset):
    """Every worker's :func:`sample_stream` as torch tensors ``[1, S, S]``."""

    def __init__(self, anatomies: Sequence[an.KneeAnatomy], config, seed: Tuple[int, ...]) -> None:
        self.anatomies, self.config, self.seed = list(anatomies), config, tuple(seed)

    def __iter__(self):
        info = get_worker_info()
        worker, n = (info.id, info.num_workers) if info is not None else (0, 1)
        for x, y in sample_stream(self.anatomies, self.config, self.seed, worker, n):
            yield torch.from_numpy(np.ascontiguousarray(x)[None]), torch.from_numpy(y[None])


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def sample_loader(anatomies: Sequence[an.KneeAnatomy], config, start_epoch: int, pin_memory: bool = False
                  ) -> DataLoader:
    """Batches ``(x [B, 1, S, S], y [B, 1, S, S])`` from ``config.workers`` processes."""
    stream = SampleStream(anatomies, config, (int(config.seed), int(start_epoch)))
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return DataLoader(stream, batch_size=int(config.batch_size), num_workers=int(config.workers),
                      worker_init_fn=_worker_init, multiprocessing_context=context, persistent_workers=True,
                      prefetch_factor=4, pin_memory=pin_memory)
