"""KneeT2Segment training: the paper's recipe (split by subject, echo 1/2/3 at 20/60/20 %, 90 % of
empty slices dropped, soft Dice, Adam 0.99/0.995), training patches built exactly like the
inference input, and a tiny network trained for a few epochs (loss falls, checkpoints, resume).

Runs on the analytic knee (no ../shared needed).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from mskquant.errors import InputError, OutputError

from KneeT2SegmentLib import anatomy as an
from KneeT2SegmentLib import simulator as sm
from KneeT2SegmentLib import training as tr
from KneeT2SegmentLib.checkpoint import read_checkpoint
from KneeT2SegmentLib.mese import MeseSeries
from KneeT2SegmentLib.segmentation import load_model, network_input

SMALL = dict(matrix=(128, 96), fov_mm=(64.0, 48.0), n_slices=8, subsamples=(1, 1, 2))


@pytest.fixture(scope="module")
def knee():
    return an.prepare_anatomy(an.analytic_knee(), None, "analytic", "analytic knee")


def test_split_keeps_every_time_point_of_a_knee_in_one_set():
    names = [f"90000{n:02d}.nii.gz" for n in range(8)] + ["9100000_00m.nii.gz", "9100000_48m.nii.gz",
                                                           "9200000_00m.nii.gz", "9200000_24m.nii.gz",
                                                           "atlas_fc.nii.gz"]
    paths = [Path("/data") / n for n in names if tr.LABEL_MAP_PATTERN.match(n)]
    split = tr.split_subjects(paths, 3, 2, seed=0)
    sets = [set(split.subjects(k)) for k in ("train", "validation", "test")]
    assert [len(s) for s in sets] == [5, 2, 3]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert {"9100000", "9200000"} <= sets[0] and len(split.train) == 7  # both time points train
    assert split.as_dict() == tr.split_subjects(paths, 3, 2, seed=0).as_dict()  # deterministic
    assert split.as_dict() != tr.split_subjects(paths, 3, 2, seed=1).as_dict()
    with pytest.raises(InputError, match="cannot give 3 test, 6 validation"):
        tr.split_subjects(paths, 3, 6)


def test_epoch_plan_follows_the_paper():
    rng = np.random.default_rng(0)
    vols = [tr.BankVolume(np.zeros((3, 40, 4, 4), np.float16), np.zeros((40, 4, 4), np.float16), np.arange(20),
                          np.arange(20, 40), 1000.0, f"v{n}") for n in range(100)]
    plan = tr.epoch_plan(vols, rng)
    slices = np.array([s for _, s, _ in plan])
    echoes = np.array([e for _, _, e in plan])
    assert (slices < 20).sum() == 2000  # every cartilage slice
    assert (slices >= 20).sum() / 2000 == pytest.approx(0.10, abs=0.02)  # 90 % of the others dropped
    freq = np.bincount(echoes, minlength=4)[1:] / len(echoes)
    np.testing.assert_allclose(freq, [0.2, 0.6, 0.2], atol=0.02)


def test_soft_dice_loss():
    y = torch.zeros(2, 1, 8, 8)
    y[:, :, 2:6, 2:6] = 1
    assert float(tr.soft_dice_loss(y, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(tr.soft_dice_loss(1 - y, y)) == pytest.approx(1 - 1 / 65, abs=1e-6)
    empty = torch.zeros(1, 1, 8, 8)
    assert float(tr.soft_dice_loss(empty, empty)) == pytest.approx(0.0, abs=1e-6)  # empty slice, nothing predicted


def test_a_training_patch_is_the_inference_input(knee):
    """Without augmentation and noise, the training input equals what the network sees at inference."""
    cfg = tr.TrainingConfig(base_phantom=dict(SMALL), vary_geometry=False)
    rng = np.random.default_rng(3)
    params = sm.PhantomParameters(**SMALL, snr=1e9, seed=5)
    ph = sm.simulate(knee, params)
    vol = tr.BankVolume(ph.series.echoes.array[:3].astype(np.float16), ph.femoral_fraction.astype(np.float16),
                        np.nonzero((ph.femoral_fraction >= 0.5).any(axis=(1, 2)))[0], np.zeros(0, int), 1000.0, "k")
    noise = tr.NoiseModel(0.0, True)
    s = int(vol.cartilage_slices[len(vol.cartilage_slices) // 2])
    clean = MeseSeries(ph.series.echoes.with_array(np.stack([vol.echoes[0].astype(np.float32),
                                                            vol.echoes[1].astype(np.float32),
                                                            vol.echoes[2].astype(np.float32)])),
                       ph.series.echo_times_ms[:3], "right")
    expected, w, _ = network_input(clean, 2, (128, 128))
    norm = tr.normalisation_of(vol.echoes[1].astype(np.float32))
    x, y = tr.training_sample(vol, s, 2, norm, noise, rng, 128, augment=False)
    # the patch is centred on the slice centre like the pad/crop window (odd sizes differ by half a pixel)
    (r0, r1), (c0, c1) = w.dst
    np.testing.assert_allclose(x[r0:r1, c0:c1], expected[s, 0, r0:r1, c0:c1], atol=2e-3)
    truth = ph.cartilage_mask.array[s]
    np.testing.assert_array_equal(y[r0:r1, c0:c1] > 0, truth)
    assert cfg.validate().patch == 256


def tiny_config(**kw):
    base = dict(features=(4, 8, 16), network_size=(128, 128), patch=64, batch_size=4, epochs=3, bank_size=4,
                bank_refresh=1, validation_volumes=1, vary_geometry=False, base_phantom=dict(SMALL), learning_rate=1e-2)
    base.update(kw)
    return tr.TrainingConfig(**base)


def test_tiny_network_trains_checkpoints_and_resumes(knee, tmp_path):
    val = tr.validation_volumes([knee], 1, 0, tiny_config())
    out = tmp_path / "run"
    first = tr.train([knee], val, out, tiny_config(epochs=5), torch.device("cpu"), metadata={"data": "analytic knee"})
    losses = [h["loss"] for h in first.history]
    assert len(losses) == 5 and np.mean(losses[-2:]) < losses[0] - 0.01, losses
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file() and (out / "history.csv").is_file()
    best = read_checkpoint(out / "best.pt")
    assert best.training["data"] == "analytic knee" and best.training["best_epoch"] == first.best_epoch
    assert best.postprocessing["calibrated"] is False and "optimizer" not in best.raw
    assert load_model(str(out / "best.pt"), require_thresholds=False).network_size == (128, 128)
    last = read_checkpoint(out / "last.pt").raw
    steps = last["optimizer"]["state"][0]["step"]
    assert last["resume"]["epoch"] == 5
    resumed = tr.train([knee], val, out, tiny_config(epochs=6), torch.device("cpu"), resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    last2 = read_checkpoint(out / "last.pt").raw
    assert last2["optimizer"]["state"][0]["step"] > steps  # Adam's state carried on
    with pytest.raises(InputError, match="already ran 6 epochs"):
        tr.train([knee], val, out, tiny_config(epochs=6), torch.device("cpu"), resume=True)
    with pytest.raises(InputError, match="Nothing to resume"):
        tr.train([knee], val, tmp_path / "empty", tiny_config(), torch.device("cpu"), resume=True)


def test_knee_train_refuses_a_used_folder_and_bad_options(tmp_path, cli):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"x")
    rc, _, err = cli("knee-train", "--labelmaps", tmp_path, "--out", tmp_path / "run", "-q")
    assert rc == 2 and "already holds a training" in err and "--resume" in err
    rc, _, err = cli("knee-train", "--labelmaps", tmp_path / "none", "--out", tmp_path / "new", "-q")
    assert rc == 2 and "does not exist" in err and not (tmp_path / "new").exists()
    rc, _, err = cli("knee-train", "--labelmaps", tmp_path, "--out", tmp_path / "new", "--features", "16,32,x")
    assert rc == 2 and "Cannot read --features" in err
    rc, _, err = cli("knee-train", "--labelmaps", tmp_path, "--out", tmp_path / "new", "--patch", "100")
    assert rc == 2 and "multiples of 16" in err
    rc, _, err = cli("knee-train", "--labelmaps", tmp_path, "--out", tmp_path / "new", "-q")
    assert rc == 2 and "no knee label maps" in err
    assert not (tmp_path / "new").exists()


def test_worker_processes_share_the_bank_and_stream_samples(knee, tmp_path):
    from KneeT2SegmentLib import training_stream as ts

    config = tiny_config(bank_size=5, bank_refresh=2, appearance_refresh=3, workers=2, epoch_samples=12)
    share = ts.worker_config(config, 2)
    assert (share.bank_size, share.bank_refresh, share.appearance_refresh) == (2, 1, 2)
    # one worker's stream is reproducible and gives inference-like patches with cartilage targets
    a = ts.sample_stream([knee], config, (0, 0), 1, 2)
    b = ts.sample_stream([knee], config, (0, 0), 1, 2)
    c = ts.sample_stream([knee], config, (0, 0), 0, 2)
    xa, ya = zip(*(next(a) for _ in range(6)))
    xb, _ = zip(*(next(b) for _ in range(6)))
    xc, _ = zip(*(next(c) for _ in range(6)))
    assert all(np.array_equal(p, q) for p, q in zip(xa, xb))
    assert not all(np.array_equal(p, q) for p, q in zip(xa, xc))  # another worker, another stream
    assert xa[0].shape == (64, 64) and xa[0].dtype == np.float32 and any(y.any() for y in ya)
    # the training loop takes epoch_samples per epoch from the worker processes, checkpoints and resumes
    val = tr.validation_volumes([knee], 1, 0, config)
    out = tmp_path / "workers"
    first = tr.train([knee], val, out, replace_config(config, epochs=2), torch.device("cpu"))
    assert [h["samples"] for h in first.history] == [12, 12] and (out / "best.pt").is_file()
    resumed = tr.train([knee], val, out, replace_config(config, epochs=3), torch.device("cpu"), resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    with pytest.raises(InputError, match="must not be negative"):
        tiny_config(workers=-1).validate()


def replace_config(config, **kw):
    from dataclasses import replace

    return replace(config, **kw)
