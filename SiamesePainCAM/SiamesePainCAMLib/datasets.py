"""Training data for the Siamese pain network: simulated pairs or a table of real pairs
(numeric core).

* :func:`simulated_template` — the alignment template: the mean of noise-free reference
  knees (no positioning variation, the joint centred, the PCL slice in the middle), each
  cropped at its true joint centre. Chang et al. picked one subject's scan as the template;
  a mean of several anatomies registers other anatomies more evenly.
* :func:`simulate_dataset` — pairs simulated from knee anatomies, pre-processed exactly as at
  inference (centre-slice estimate, alignment to the template, crop, [0, 1]), stored as a
  float16 memory map so hundreds of pairs fit on disk rather than in memory.
* :func:`dataset_from_table` — real (or exported) pairs listed in a CSV
  (``subject,left,right,painful_side[,center_left,center_right,group]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mskquant.errors import InputError
from mskquant.progress import Progress, as_progress

from . import simulator as sim
from .preprocessing import INPUT_PX, N_PLANES, Template, prepare_knee
from .training import PAIN_LABELS, PairData


def simulated_template(anatomies: Sequence[sim.Anatomy], progress: "Progress | None" = None) -> np.ndarray:
    progress = as_progress(progress)
    planes = []
    for n, anatomy in enumerate(anatomies):
        progress(n / len(anatomies), f"Template from {anatomy.name}")
        ref = sim.reference_knee(anatomy)
        pk = prepare_knee(ref.image, "right", None, centre=ref.centre_slice, joint_centre_uv=sim.joint_centre_uv(ref))
        planes.append(pk.planes)
    progress(1.0, "Template ready")
    return np.mean(planes, axis=0).astype(np.float32)


@dataclass
class PairTruth:
    pair: str
    subject: str
    anatomy: str
    painful_side: str
    lesion_kind: str
    lesion_site: str
    centre_left_true: int
    centre_right_true: int
    centre_left_used: int
    centre_right_used: int


def simulate_dataset(anatomies: Sequence[sim.Anatomy], pairs_per_anatomy: int, template: np.ndarray, seed: int,
                     folder: Optional[Path] = None, subject_of=None, progress: "Progress | None" = None,
                     variation: Optional[sim.Variation] = None, kind_weights: Sequence[float] = (0.6, 0.4),
                     localiser=None, lesion_free_every: int = 0):
    """Simulate and pre-process ``pairs_per_anatomy`` pairs of each anatomy.

    Painful sides alternate per anatomy (balanced classes); the lesion kind is drawn with
    ``kind_weights`` (effusion, bone-marrow lesion): 60 % / 40 % by default (the demo model's
    data; the paper's CAM hot spots were mostly effusion-synovitis). Returns the :class:`PairData` (memory-mapped in
    ``folder`` when given) and the ground truth of every pair. ``localiser``: the joint localiser
    the pre-processing uses at inference (:func:`.localiser.default_localiser`).
    ``lesion_free_every`` k > 0: every k-th pair of each anatomy has no lesion in either knee
    (label ``training.NO_LESION``).
    """
    progress = as_progress(progress)
    n = len(anatomies) * pairs_per_anatomy
    shape = (n, 2, N_PLANES, INPUT_PX, INPUT_PX)
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        planes = np.lib.format.open_memmap(folder / "planes.npy", mode="w+", dtype=np.float16, shape=shape)
    else:
        planes = np.zeros(shape, np.float16)
    tmpl = Template(template)
    labels = np.zeros(n, np.float32)
    groups, ids, truth = [], [], []
    i = 0
    for a, anatomy in enumerate(anatomies):
        subject = subject_of(anatomy.name) if subject_of else anatomy.name
        for p in range(pairs_per_anatomy):
            progress(i / n, f"Simulating pair {i + 1}/{n} ({anatomy.name})")
            rng = np.random.default_rng([seed, a, p])
            side = "right" if (p + a) % 2 == 0 else "left"
            no_lesion = lesion_free_every > 0 and p % lesion_free_every == lesion_free_every - 1
            pair = sim.simulate_pair(anatomy, rng, f"{anatomy.name}-{p:03d}", painful_side=side, variation=variation,
                                     kind_weights=kind_weights, no_lesion=no_lesion)
            prepared = [prepare_knee(k.image, k.side, tmpl, localiser=localiser) for k in (pair.left, pair.right)]
            planes[i, 0] = prepared[0].planes
            planes[i, 1] = prepared[1].planes
            labels[i] = pair.label
            groups.append(subject)
            ids.append(pair.subject)
            truth.append(PairTruth(pair.subject, subject, anatomy.name, pair.painful_side or "none",
                                   pair.lesion_kind or "none", pair.painful.lesion_site if pair.painful else "",
                                   pair.left.centre_slice, pair.right.centre_slice,
                                   prepared[0].centre_slice, prepared[1].centre_slice))
            i += 1
    if folder is not None:
        planes.flush()
        np.save(folder / "labels.npy", labels)
        import json

        (folder / "pairs.json").write_text(json.dumps({"ids": ids, "groups": groups}))
        (folder / "truth.json").write_text(json.dumps([t.__dict__ for t in truth]))
    progress(1.0, f"{n} simulated pairs ready")
    return PairData(planes, labels, np.asarray(groups), ids), truth


def dataset_from_table(rows: List[Dict[str, str]], base: Path, template: np.ndarray,
                       progress: "Progress | None" = None, localiser=None) -> PairData:
    """Read, pre-process and stack the pairs listed in a table (paths relative to ``base``)."""
    from mskquant.imageio import read_image

    progress = as_progress(progress)
    rows = [r for r in rows if (r.get("role") or "").strip().lower() != "template"]
    if not rows:
        raise InputError("The pairs table lists no training pairs.")
    tmpl = Template(template)
    n = len(rows)
    planes = np.zeros((n, 2, N_PLANES, INPUT_PX, INPUT_PX), np.float16)
    labels = np.zeros(n, np.float32)
    groups, ids = [], []
    for i, r in enumerate(rows):
        progress(i / n, f"Pre-processing {r['subject']} ({i + 1}/{n})")
        for k, side in enumerate(("left", "right")):
            centre = (r.get(f"center_{side}") or "").strip()
            img = read_image(Path(base) / r[side], f"{r['subject']} {side} knee")
            planes[i, k] = prepare_knee(img, side, tmpl, int(centre) if centre else None,
                                        what=f"{r['subject']} {side} knee", localiser=localiser).planes
        labels[i] = PAIN_LABELS[r["painful_side"]]
        groups.append((r.get("group") or "").strip() or r["subject"])
        ids.append(r["subject"])
    progress(1.0, f"{n} pairs pre-processed")
    return PairData(planes, labels, np.asarray(groups), ids)


def template_from_table(rows: List[Dict[str, str]], base: Path, subject: Optional[str] = None) -> np.ndarray:
    """The paper's way: one subject's knee as the template (the ``role=template`` row, else
    ``subject``, else the first row): its right knee at its centre slice, cropped at the
    middle of the field of view, without registration."""
    from mskquant.imageio import read_image

    pick = None
    for r in rows:
        if (r.get("role") or "").strip().lower() == "template" or (subject and r["subject"] == subject):
            pick = r
            break
    if subject and pick is None:
        raise InputError(f"The pairs table has no subject {subject!r} to make the template from.")
    pick = pick or rows[0]
    centre = (pick.get("center_right") or "").strip()
    img = read_image(Path(base) / pick["right"], f"template ({pick['subject']} right knee)")
    return prepare_knee(img, "right", None, int(centre) if centre else None).planes


# --- the recipe of the bundled demo model -----------------------------------------------------------
# Version of what the simulator and the pre-processing make of a recipe: part of the pain-train data cache
# key, so pairs cached by older code are simulated again. Raise it when either changes its output.
DATA_VERSION = 3  # 3: the joint localiser bounds the template alignment
HELD_OUT_SUBJECTS = ("9055361", "9057479")  # never used for the template or training: acceptance tests


def load_anatomies(label_maps: Optional[Path], subjects: Optional[Sequence[str]] = None, exclude: Sequence[str] = (),
                   include_analytic: bool = False, progress: "Progress | None" = None) -> List[sim.Anatomy]:
    """Anatomies from the label maps in ``label_maps`` (by subject id filter) and/or the analytic knee."""
    from mskquant.imageio import read_image

    progress = as_progress(progress)
    files = []
    if label_maps is not None:
        files = [f for f in sim.label_map_files(label_maps)
                 if (subjects is None or sim.subject_of(f) in subjects) and sim.subject_of(f) not in exclude]
        if not files and not include_analytic:
            raise InputError(f"No knee label maps (NNNNNNN[_NNm].nii.gz) selected in {label_maps}.")
    out = []
    total = len(files) + int(include_analytic)
    for n, f in enumerate(files):
        out.append(sim.build_anatomy(read_image(f, "Knee label map"), f.name.split(".")[0], seed=n,
                                     progress=progress.sub(n / total, (n + 1) / total)))
    if include_analytic:
        out.append(sim.build_anatomy(sim.analytic_knee_labels(), "analytic", seed=99,
                                     progress=progress.sub(len(files) / total, 1.0)))
    return out


def subject_of_anatomy(name: str) -> str:
    return name.split("_")[0]
