"""Render the Extensions Index screenshots (Resources/Screenshots/*.png) from the modules' own output.

Each picture is read back from the MRML nodes a module made on a headless slicer-core scene
(the same logic the panels call), and drawn offscreen with mskquant.render (VTK's PNG writer):

* VHIWorkflow.png: V_HI before cleaning (disease region outlined blue, sensitive yellow,
  conservative red) on the synthetic SIJ case;
* KneeT2Segment.png: cartilage T2 over echo 2 and the 12-subregion T2 projection of a MESE
  series simulated on the analytic knee;

The committed pictures never show ``../shared`` data (real scans and OAI label maps may not be
redistributed); ``--shared DIR`` renders the real SIJ subject / OAI anatomy for a local look.
* SiamesePainCAM.png: both knees of a simulated pair with their class-activation maps.

Run from the repository root: ``.venv/bin/python scripts/make_screenshots.py [--shared DIR]``.
The Slicer GUI (panels, slice views) is not in these pictures: it cannot run here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "VHIWorkflow", ROOT / "KneeT2Segment", ROOT / "SiamesePainCAM"):
    sys.path.insert(0, str(p))
os.environ.setdefault("MSKQUANT_DEVICE", "cpu")

from mskquant import mrml, render  # noqa: E402
from mskquant.headless import create_headless_runtime  # noqa: E402

OUT = ROOT / "Resources" / "Screenshots"
WIDTH = 640


def fit_width(rgb: np.ndarray, width: int = WIDTH) -> np.ndarray:
    h = int(round(rgb.shape[0] * width / rgb.shape[1]))
    return render.resize_nearest(rgb, h, width)


def same_height(*panels: np.ndarray) -> list:
    h = max(p.shape[0] for p in panels)
    return [render.resize_nearest(p, h, int(round(p.shape[1] * h / p.shape[0]))) for p in panels]


def vhi_picture(shared: Path) -> np.ndarray:
    """A real SIJ subject when ../shared has one with STIR and normal-marrow ROI, else the SIJ phantom."""
    from mskquant.models import ModelStore
    from VHIWorkflowLib.demo import overlay_png
    from VHIWorkflowLib.logic import SEG_CONSERVATIVE, SEG_DISEASE, SEG_SENSITIVE, VHILogic
    from VHIWorkflowLib.sij_phantom import make_sij_phantom

    rt = create_headless_runtime()
    subjects = sorted(p for p in (shared / "sij").glob("*") if (p / "STIR.nii.gz").is_file()
                      and (p / "normal_marrow.nii.gz").is_file()) if (shared / "sij").is_dir() else []
    if subjects and (shared / "sij_models" / "model_1.pt").is_file():
        folder = subjects[0]
        logic = VHILogic(rt, ModelStore(model_dir=shared / "sij_models"))
        stir = mrml.load_volume(rt, folder / "STIR.nii.gz", "STIR")
        t1 = mrml.load_volume(rt, folder / "T1W.nii.gz", "T1W")
        roi = mrml.load_volume(rt, folder / "normal_marrow.nii.gz", "normal bone", labelmap=True)
        res = logic.run(stir, roi, t1, name=f"{folder.name} V_HI")  # disease region by the U-Net ensemble
        title = f"SIJ {folder.name} (real STIR): V_HI {res.vhi['sensitive'].volume_ml:.2f} mL before cleaning"
    else:
        case = make_sij_phantom()
        stir = mrml.volume_from_image(rt, case.stir, "STIR")
        roi = mrml.volume_from_image(rt, case.normal_roi, "normal bone", labelmap=True)
        dr = mrml.volume_from_image(rt, case.disease_region, "disease region", labelmap=True)
        res = VHILogic(rt).run(stir, roi, disease_region=dr)
        title = (f"SIJ phantom: V_HI {res.vhi['sensitive'].volume_ml:.2f} mL "
                 f"(true oedema {case.oedema_ml:.2f} mL)")
    # read back from the nodes the panel shows: the STIR volume and the result's segments
    masks = [mrml.segment_mask(res.segmentation, s, res.geometry) for s in (SEG_DISEASE, SEG_SENSITIVE,
                                                                              SEG_CONSERVATIVE)]
    with tempfile.TemporaryDirectory() as tmp:
        overlay_png(mrml.image_from_volume(stir), *masks, Path(tmp) / "vhi.png", title)
        return fit_width(render.read_png(Path(tmp) / "vhi.png"), 560)


def knee_picture(shared: Path) -> np.ndarray:
    from KneeT2SegmentLib import anatomy as an
    from KneeT2SegmentLib import simulator as sm
    from KneeT2SegmentLib.demo import PAIR
    from KneeT2SegmentLib.logic import KneeT2Logic
    from KneeT2SegmentLib.pictures import projection_image, t2_overlay_png

    label_map = shared / "knee_labelmaps" / f"{PAIR[0]}.nii.gz"
    if label_map.is_file():  # an OAI knee's anatomy, as in ``mskquant demo``
        anat, knee = an.load_anatomy(label_map), "OAI knee anatomy"
    else:
        anat, knee = an.prepare_anatomy(an.analytic_knee(), None, "analytic", "analytic knee"), "analytic knee"
    base, _ = sm.simulate_pair(anat, anat, sm.PhantomParameters(snr=40.0, seed=0))
    rt = create_headless_runtime()
    logic = KneeT2Logic(rt)
    seq, _ = logic.add_mese(base.series, "MESE")
    mask = mrml.volume_from_image(rt, base.cartilage_mask, "cartilage", labelmap=True)
    res = logic.run(seq, mask, name="Knee T2")
    t2 = mrml.image_from_volume(res.t2_volume)  # the T2 map node the panel shows
    echoes, _ = mrml.images_from_sequence(seq)
    with tempfile.TemporaryDirectory() as tmp:
        t2_overlay_png(echoes[1].array, t2.array, t2.geometry, Path(tmp) / "t2.png",
                       title="Cartilage T2, simulated MESE")
        left = render.read_png(Path(tmp) / "t2.png")
    right = projection_image(res.quant.projection, "T2 projection, 12 subregions")
    return fit_width(render.grid(same_height(left, right), columns=2), 800)


def pain_picture() -> np.ndarray:
    from SiamesePainCAMLib import simulator as sim
    from SiamesePainCAMLib.figures import overlay_picture
    from SiamesePainCAMLib.logic import PainCAMLogic

    rt = create_headless_runtime()
    anatomy = sim.build_anatomy(sim.analytic_knee_labels(), "analytic", seed=99)
    pair = sim.simulate_pair(anatomy, np.random.default_rng([7, 0, 0]), "screenshot", painful_side="right")
    left = mrml.volume_from_image(rt, pair.left.image, "left knee")
    right = mrml.volume_from_image(rt, pair.right.image, "right knee")
    res = PainCAMLogic(rt).run(left, right, name="Pain CAM")
    return fit_width(overlay_picture(res.analysis))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("/nonexistent"),
                    help="validation data folder for a local look (never for the committed pictures)")
    ap.add_argument("--only", choices=("VHIWorkflow", "KneeT2Segment", "SiamesePainCAM"))
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    makers = {"VHIWorkflow": lambda: vhi_picture(args.shared), "KneeT2Segment": lambda: knee_picture(args.shared),
              "SiamesePainCAM": pain_picture}
    for name, make in makers.items():
        if args.only and name != args.only:
            continue
        path = render.write_png(make(), OUT / f"{name}.png")
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
