"""The VHIWorkflow part of ``mskquant demo``: a synthetic case with a known answer, and —
when ``../shared`` is present — the real SIJ subjects with the published models."""

from __future__ import annotations

import numpy as np

from mskquant import mrml, render
from mskquant.headless import create_headless_runtime
from mskquant.image import Image
from mskquant.imageio import write_image

from .comparison import agreement, compare_masks
from .logic import SEG_CONSERVATIVE, SEG_DISEASE, SEG_SENSITIVE, VHILogic
from .parameters import VHIParameters
from .synthetic import make_case


def overlay_png(stir: Image, region, sensitive, conservative, path, title: str) -> None:
    """STIR slice with most inflammation; disease region outline, sensitive yellow, conservative red."""
    k = int(np.argmax(sensitive.sum(axis=(1, 2)))) if sensitive.any() else stir.array.shape[0] // 2
    g = stir.geometry

    def sl(a):
        return render.display_slice(a, g, k)

    base = render.colorize(sl(stir.array), "gray")
    rgb = render.mask_overlay(base, sl(region), (0.35, 0.55, 0.95), outline=True)
    rgb = render.mask_overlay(rgb, sl(sensitive) & ~sl(conservative), (1.0, 0.85, 0.1), 0.8)
    rgb = render.mask_overlay(rgb, sl(conservative), (0.95, 0.1, 0.1), 0.9)
    scale = max(1, 480 // max(rgb.shape))
    render.write_png(render.titled(render.upscale(rgb, scale), f"{title} (slice {k + 1})"), path)


def run_demo(ctx) -> None:
    out = ctx.folder("vhi")
    rt = create_headless_runtime()
    logic = VHILogic(rt)
    # 1. synthetic case: the answer is known by construction
    case = make_case()
    stir = mrml.volume_from_image(rt, case.stir, "STIR")
    roi = mrml.volume_from_image(rt, case.normal_roi, "normal ROI", labelmap=True)
    dr = mrml.volume_from_image(rt, case.disease_region, "disease region", labelmap=True)
    res = logic.run(stir, roi, disease_region=dr, progress=ctx.progress.sub(0.0, 0.1), name="synthetic V_HI")
    for key in ("sensitive", "conservative"):
        expected = int(getattr(case, f"expected_{key}").sum())
        ctx.result("VHIWorkflow", "synthetic", f"V_HI {key} (voxels)", res.vhi[key].voxels, "voxels",
                   f"expected {expected} by construction")
    mrml.write_table_csv(res.table, out / "synthetic_vhi.csv")
    overlay_png(case.stir, case.disease_region.array, mrml.segment_mask(res.segmentation, SEG_SENSITIVE, res.geometry),
                mrml.segment_mask(res.segmentation, SEG_CONSERVATIVE, res.geometry), out / "synthetic_overlay.png",
                "Synthetic SIJ")
    # 2. real subjects with expert masks
    if ctx.shared is None or not (ctx.shared / "sij").is_dir():
        return
    from mskquant.models import ModelStore
    import os

    model_dir = ctx.shared / "sij_models"
    if "MSKQUANT_MODEL_DIR" not in os.environ and model_dir.is_dir():
        logic = VHILogic(rt, ModelStore(model_dir=model_dir))
    subjects = sorted(p.name for p in (ctx.shared / "sij").iterdir() if (p / "T1W.nii.gz").is_file())
    rows, readers = [], {"R11": [], "R21": [], "workflow": []}
    for n, subject in enumerate(subjects):
        folder = ctx.shared / "sij" / subject
        prog = ctx.progress.sub(0.1 + 0.85 * n / len(subjects), 0.1 + 0.85 * (n + 1) / len(subjects))
        rt.clear()
        if not (folder / "STIR.nii.gz").is_file():  # T1W + expert disease region only: Dice of the network
            t1 = mrml.load_volume(rt, folder / "T1W.nii.gz", "T1W")
            g = mrml.geometry_of(t1)
            model_dr = logic.predict_disease_region(t1, g, VHIParameters(), prog)
            manual_dr = mrml.labelmap_mask(mrml.load_volume(rt, folder / "disease_region.nii.gz", "DR", labelmap=True), g)
            d = compare_masks(model_dr, manual_dr, g).dice
            rows.append({"subject": subject, "disease_region_dice": d})
            ctx.result("VHIWorkflow", f"SIJ {subject}", "disease-region Dice vs expert", round(d, 4), "",
                       "published 3-model ensemble (T1W only)")
            continue
        stir = mrml.load_volume(rt, folder / "STIR.nii.gz", "STIR")
        t1 = mrml.load_volume(rt, folder / "T1W.nii.gz", "T1W")
        roi = mrml.load_volume(rt, folder / "normal_marrow.nii.gz", "normal bone", labelmap=True)
        res = logic.run(stir, roi, t1, params=None, progress=prog, name=f"{subject} V_HI")
        g = res.geometry
        manual_dr = mrml.labelmap_mask(mrml.load_volume(rt, folder / "disease_region.nii.gz", "DR", labelmap=True), g)
        model_dr = mrml.segment_mask(res.segmentation, SEG_DISEASE, g)
        sens = mrml.segment_mask(res.segmentation, SEG_SENSITIVE, g)
        cons = mrml.segment_mask(res.segmentation, SEG_CONSERVATIVE, g)
        d = compare_masks(model_dr, manual_dr, g).dice
        row = {"subject": subject, "disease_region_dice": d, "vhi_sensitive_ml": res.vhi["sensitive"].volume_ml,
               "vhi_conservative_ml": res.vhi["conservative"].volume_ml, "n": res.thresholds.n,
               "L_lower": res.thresholds.lower, "L_upper": res.thresholds.upper}
        for r in ("R11", "R21"):
            f = folder / f"inflammation_{r}.nii.gz"
            if f.is_file():
                m = mrml.labelmap_mask(mrml.load_volume(rt, f, r, labelmap=True), g)
                c = compare_masks(sens, m, g)
                row[f"dice_vs_{r}"] = c.dice
                row[f"{r}_ml"] = c.volume_b_ml
        if "R11_ml" in row and "R21_ml" in row:
            readers["R11"].append(row["R11_ml"])
            readers["R21"].append(row["R21_ml"])
            readers["workflow"].append(row["vhi_sensitive_ml"])
        rows.append(row)
        ctx.result("VHIWorkflow", f"SIJ {subject}", "disease-region Dice vs expert", round(d, 4), "",
                   "published 3-model ensemble")
        ctx.result("VHIWorkflow", f"SIJ {subject}", "V_HI sensitive (uncleaned)", round(res.vhi["sensitive"].volume_ml, 3),
                   "mL", f"n={res.thresholds.n:.2f}")
        overlay_png(mrml.image_from_volume(stir), model_dr, sens, cons, out / f"sij_{subject}_overlay.png",
                    f"SIJ {subject}: V_HI before cleaning")
        write_image(Image(sens.astype(np.uint8) + cons.astype(np.uint8), g),
                    out / f"sij_{subject}_inflammation.nii.gz")
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "subject", k))
    mrml.write_rows_csv(out / "sij_subjects.csv", keys, ([r.get(k, "") for k in keys] for r in rows))
    if len(readers["R11"]) >= 2:
        from .cli import bland_altman_chart

        ba = agreement(readers["R11"], readers["R21"])
        render.chart_png(bland_altman_chart(ba, "V_HI (mL), manual reader 1 vs 2"), out / "bland_altman_readers.png")
        ctx.result("VHIWorkflow", "SIJ readers (manual)", "Bland-Altman mean difference R21-R11",
                   round(ba.mean_difference, 3), "mL", f"95% LoA {ba.lower_limit:.2f} to {ba.upper_limit:.2f}")
