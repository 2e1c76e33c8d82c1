"""How well a cartilage model generalises: the same knees imaged by differently built generators.

Three families of MESE series with the femoral cartilage truth, from knee label maps:

* ``phantom`` - the project's MESE phantom (:mod:`.simulator`) on the OAI protocol, the data
  the first bundled model was made from;
* ``randomised`` - the training generator of the domain-randomised model (:mod:`.synthetic`,
  random grid and look, SNR 15-60);
* ``independent`` - the independent test family (:mod:`mskquant.testfamily`: other anatomy
  rules, EPG signal, k-space acquisition with coils and ghosts), used only to test.

Each case is segmented by the model through the inference path (:func:`.segmentation.segment`)
and compared with its truth as Thomas et al. 2.6 compare two readers (:mod:`.agreement`):
volumetric Dice and the 12 subregional mean T2 values of the model's mask against the true
mask's, both from the same T2 fit. ``conditions`` vary one acquisition property of the
independent family at a time (the README's robustness table).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from mskquant.errors import InputError

from .mese import MeseSeries

FAMILIES = ("phantom", "randomised", "independent")
# one acquisition property changed at a time on the independent family
CONDITIONS: Dict[str, dict] = {
    "snr 10": {"snr": 10.0}, "snr 30": {"snr": 30.0}, "snr 100": {"snr": 100.0},
    "slice 1 mm": {"thickness_mm": 1.0, "gap_mm": 0.0}, "slice 2 mm": {"thickness_mm": 2.0, "gap_mm": 0.0},
    "slice 4 mm": {"thickness_mm": 4.0, "gap_mm": 0.0},
    "bias 0.0": {"bias_sd": 0.0}, "bias 0.3": {"bias_sd": 0.3}, "bias 0.6": {"bias_sd": 0.6},
    "contrast inverted": {"inverted": True},
    "rotation 0 deg": {"rotation_deg": (0.0, 0.0, 0.0)}, "rotation 10 deg": {"rotation_deg": (10.0, 0.0, 0.0)},
    "rotation 20 deg": {"rotation_deg": (20.0, 0.0, 0.0)},
    # no motion ghosts, one receive coil (Rician floor), no Fourier truncation (no Gibbs ringing)
    "clean acquisition": {"ghost_fraction": 0.0, "n_coils": 1, "oversample": 1.0},
}


@dataclass
class FamilyCase:
    name: str
    family: str
    series: MeseSeries
    truth: np.ndarray  # bool femoral cartilage on the series grid
    sigma: Optional[float] = None  # noise SD when the generator knows it


def family_cases(paths: Sequence[Path], family: str, per_subject: int = 1, seed: int = 0,
                 condition: Optional[str] = None) -> Iterator[FamilyCase]:
    """Cases of one family for each label map (the label maps' knees are right knees)."""
    if family not in FAMILIES:
        raise InputError(f"Unknown family {family!r}: choose one of {', '.join(FAMILIES)}.")
    rng = np.random.default_rng(seed)
    for path in paths:
        path = Path(path)
        subject = path.name.split(".")[0]
        if family == "independent":
            from mskquant.imageio import read_image
            from mskquant.testfamily import cases as tf

            labels = read_image(path, "Knee label map")
            for n in range(per_subject):
                protocol = tf.random_mese_protocol(rng)
                inverted = False
                if condition:
                    over = dict(CONDITIONS[condition])
                    inverted = bool(over.pop("inverted", False))
                    protocol = replace(protocol, **over)
                    if "thickness_mm" in over:  # keep the covered width
                        protocol = replace(protocol, n_slices=int(round(85.0 / (protocol.thickness_mm + protocol.gap_mm))))
                case = tf.mese_case(labels, rng, protocol, "right", inverted=inverted)
                series = MeseSeries(case.echoes, case.echo_times_ms, "right", "given", subject,
                                    f"independent test family: {subject}")
                # the family's multi-coil noise floor is not Rician: the background estimator refuses it
                # (a finding of its own), so the known effective noise SD is given, as a user would
                yield FamilyCase(f"{subject} independent #{n}{' ' + condition if condition else ''}", family, series,
                                 case.cartilage_truth.array, case.noise_sigma)
            continue
        from . import anatomy as an

        anat = an.load_anatomy(path)
        if family == "phantom":
            from . import simulator as sm

            for n in range(per_subject):
                ph = sm.simulate(anat, sm.PhantomParameters(snr=30.0, seed=int(rng.integers(2 ** 31)),
                                                            texture_seed=int(rng.integers(2 ** 31))))
                yield FamilyCase(f"{subject} phantom #{n}", family, ph.series, ph.cartilage_mask.array, ph.sigma)
        else:
            from . import synthetic

            codes = synthetic.class_map(anat)
            for n in range(per_subject):
                vol = synthetic.sample_volume(anat, codes, rng)
                series, sigma = synthetic.noisy_series(vol, rng, float(rng.uniform(15.0, 60.0)), True, 7)
                series = replace(series, laterality=anat.laterality, laterality_source="given")
                yield FamilyCase(f"{subject} randomised #{n}", family, series, synthetic.femoral_truth(vol), sigma)


@dataclass
class CaseResult:
    name: str
    family: str
    dice: float
    scan: object  # agreement.ScanAgreement (None when the model found nothing)
    error: str = ""


def evaluate(model, cases, progress=None, precision: str = "float32") -> List[CaseResult]:
    """Segment every case and compare it with its truth (Dice 0 when the model finds nothing)."""
    from .agreement import compare_scan
    from .parameters import KneeT2Parameters
    from .segmentation import segment

    out = []
    for case in cases:
        params = KneeT2Parameters(noise_sigma=case.sigma)
        try:
            seg = segment(case.series, model, params.fit_settings(), precision=precision)
        except InputError as exc:
            out.append(CaseResult(case.name, case.family, 0.0, None, str(exc)))
            continue
        scan = compare_scan(case.series, case.truth, seg.mask, params, case.name)
        out.append(CaseResult(case.name, case.family, float(scan.dice), scan))
    return out


def summary(results: Sequence[CaseResult]) -> dict:
    """Mean / min Dice and the subregional mean-T2 MAE (model mask vs true mask) over the cases."""
    from .agreement import agreement_over_scans

    dices = [r.dice for r in results]
    scans = [r.scan for r in results if r.scan is not None]
    mae = agreement_over_scans(scans).subregion_mae_ms() if len(scans) else float("nan")
    return {"n": len(results), "mean_dice": float(np.mean(dices)) if dices else float("nan"),
            "min_dice": float(np.min(dices)) if dices else float("nan"), "subregion_t2_mae_ms": float(mae),
            "failed": sum(r.scan is None for r in results)}
