"""The KneeT2Segment part of ``mskquant demo``: simulated MESE of a knee, T2, subregions, change.

With ``../shared`` the anatomy is a real OAI knee at two time points (``9014797_00m`` and
``_72m``); without it, the analytic knee of :func:`anatomy.analytic_knee` for both. The
answers are known by construction: T2 in pure cartilage voxels against the phantom's
cartilage T2 (with the log-linear fit for comparison), subregion means against the
noise-free truth, T2 change per subregion against the prescribed change and the planted
lesion's area against its footprint on the projection map. Then the automatic segmentation
(bundled model) of a knee held out from the model's training (its first test subject; the
analytic knee without ../shared): Dice against the simulation's truth and the subregional
mean T2 from the model's mask against the truth mask's (Thomas et al. 2.6), with a picture.
"""

from __future__ import annotations

import numpy as np

from mskquant import mrml
from mskquant.headless import create_headless_runtime

from . import anatomy as an
from . import simulator as sm
from .change import follow_map_on_baseline
from .logic import KneeT2Logic
from .parameters import KneeT2Parameters
from .pictures import t2_overlay_png
from .subregions import SUBREGION_NAMES, projection_maps

PAIR = ("9014797_00m", "9014797_72m")


def _region_truth(quant, truth_map: np.ndarray):
    """Mean of a truth map over each of the 12 subregions (voxels of the refined mask)."""
    out = {}
    for lab, name in SUBREGION_NAMES.items():
        m = (quant.subregions.labels == lab) & np.isfinite(truth_map)
        out[name] = float(truth_map[m].mean()) if m.any() else float("nan")
    return out


def lesion_area(phantom, quant, base_quant, change):
    """The planted lesion's area on the aligned projection map (sum of per-cell lesion fractions)."""
    frac = np.where(quant.refined, phantom.lesion_fraction, np.nan)
    footprint = projection_maps(frac, quant.subregions).all
    on_base = follow_map_on_baseline(base_quant.projection, quant.projection, footprint, change.row_shift,
                                     change.bin_shift)
    return float(np.nansum(on_base)), np.nan_to_num(on_base) >= 0.5


def run_demo(ctx) -> None:
    out = ctx.folder("knee_t2")
    prog = ctx.progress
    maps = ctx.shared / "knee_labelmaps" if ctx.shared is not None else None
    if maps is not None and all((maps / f"{p}.nii.gz").is_file() for p in PAIR):
        dataset = f"OAI anatomy {PAIR[0]} -> {PAIR[1]}"
        base_anat = an.load_anatomy(maps / f"{PAIR[0]}.nii.gz", progress=prog.sub(0.0, 0.15))
        follow_anat = an.load_anatomy(maps / f"{PAIR[1]}.nii.gz", base_anat.laterality, progress=prog.sub(0.15, 0.3))
    else:
        dataset = "analytic knee (no ../shared)"
        base_anat = an.prepare_anatomy(an.analytic_knee(), None, "analytic", "analytic knee", progress=prog.sub(0.0, 0.3))
        follow_anat = base_anat
    params = sm.PhantomParameters(snr=40.0, seed=0)
    base, follow = sm.simulate_pair(base_anat, follow_anat, params, progress=prog.sub(0.3, 0.6))
    rt = create_headless_runtime()
    logic = KneeT2Logic(rt)
    results = []
    for n, (ph, label) in enumerate(((base, "baseline"), (follow, "follow-up"))):
        seq, _ = logic.add_mese(ph.series, f"MESE {label}")
        mask = mrml.volume_from_image(rt, ph.cartilage_mask, f"cartilage {label}", labelmap=True)
        res = logic.run(seq, mask, progress=prog.sub(0.6 + 0.15 * n, 0.75 + 0.15 * n), name=f"Knee T2 {label}")
        results.append(res)
        tag = "baseline" if n == 0 else "followup"
        mrml.write_table_csv(res.table, out / f"{tag}_subregions.csv")
        from .pictures import projection_png

        projection_png(res.quant.projection, out / f"{tag}_projection.png", f"T2 projection, {label}")
        t2_overlay_png(ph.series.echoes.array[1], res.quant.t2_map, ph.series.geometry, out / f"{tag}_t2_overlay.png",
                       title=f"{label}: echo 2 (TE {ph.series.echo_times_ms[1]:g} ms) with cartilage T2")
    change = logic.compare(results[0], results[1])
    logic.export_change(change, out)
    prog(0.95, "KneeT2Segment demo summary")

    # --- known answers -----------------------------------------------------------------------
    q0, q1 = results[0].quant, results[1].quant
    pure = base.femoral_fraction >= 1.0
    d = q0.fit.t2_ms[pure & q0.refined] - base.t2_true.array[pure & q0.refined]
    ll = q0.fit.t2_loglinear_ms[pure] - base.t2_true.array[pure]
    ctx.result("KneeT2Segment", dataset, "T2 bias, pure cartilage voxels (noise-corrected)", round(float(d.mean()), 3),
               "ms", f"SNR 40, {d.size} voxels; MAE {np.abs(d).mean():.2f} ms")
    ctx.result("KneeT2Segment", dataset, "T2 bias, pure cartilage voxels (log-linear)",
               round(float(np.nanmean(ll)), 3), "ms", "same voxels, no noise correction")
    measured = {r.region: r.mean_t2_ms for r in q0.rows}
    nf = _region_truth(q0, base.t2_noise_free.array)
    tissue = _region_truth(q0, base.t2_true.array)
    err_nf = max(abs(measured[k] - nf[k]) for k in nf)
    err_tissue = max(abs(measured[k] - tissue[k]) for k in tissue)
    ctx.result("KneeT2Segment", dataset, "subregion mean T2, max error vs noise-free truth", round(err_nf, 3), "ms",
               "12 subregions, true mask")
    ctx.result("KneeT2Segment", dataset, "subregion mean T2, max error vs cartilage T2", round(err_tissue, 3), "ms",
               "includes partial volume of boundary voxels")
    rows = {r["region"]: r for r in change.change.rows}
    inc = follow.lesion_t2_increment
    nf1 = _region_truth(q1, follow.t2_noise_free.array)
    errs, errs_nf = [], []
    for lab, name in SUBREGION_NAMES.items():
        sel = (q1.subregions.labels == lab) & q1.refined
        expected = sm.DEFAULT_DELTA_T2[lab] + (float(inc[sel].mean()) if sel.any() else 0.0)
        errs.append(abs(rows[name]["delta_t2_ms"] - expected))
        errs_nf.append(abs(rows[name]["delta_t2_ms"] - (nf1[name] - nf[name])))
    ctx.result("KneeT2Segment", dataset, "T2 change per subregion, max error vs noise-free change",
               round(max(errs_nf), 3), "ms", "what the images hold")
    ctx.result("KneeT2Segment", dataset, "T2 change per subregion, max error vs prescribed", round(max(errs), 3), "ms",
               "prescribed change + lesion share; cartilage shape and partial volume differ between the time points"
               if follow_anat is not base_anat else "prescribed change + lesion share")
    area, footprint = lesion_area(follow, q1, q0, change.change)
    labels = change.change.cluster_labels
    hit = [lab for lab in range(1, labels.max() + 1) if (footprint & (labels == lab)).any()]
    found = float(sum((labels == lab).sum() for lab in hit))
    ctx.result("KneeT2Segment", dataset, "planted lesion area found / true", round(found / area, 3) if area else "",
               "", f"{found:.0f} vs {area:.1f} projection pixels")
    ctx.result("KneeT2Segment", dataset, "focal clusters (% of plate)", round(change.change.percent_area, 2), "%",
               f"{change.change.n_clusters} cluster(s)")
    mrml.write_rows_csv(out / "truth_vs_measured.csv", ["subregion", "measured_mean_t2_ms", "noise_free_truth_ms",
                                                        "cartilage_t2_truth_ms"],
                        ([k, measured[k], nf[k], tissue[k]] for k in SUBREGION_NAMES.values()))
    segmentation_demo(ctx, logic, out)


def segmentation_demo(ctx, logic: KneeT2Logic, out) -> None:
    """The bundled model on a held-out knee: agreement with the simulation's truth."""
    from .checkpoint import read_checkpoint
    from .pictures import segmentation_overlay_png

    prog = ctx.progress.sub(0.95, 1.0)
    spec = logic.model_store.registry.get(KneeT2Parameters().model_id)
    path = logic.model_store.ensure(spec.id)[0]
    test = (read_checkpoint(path).training.get("split") or {}).get("test") or []
    maps = ctx.shared / "knee_labelmaps" if ctx.shared is not None else None
    if maps is not None and test and (maps / test[0]).is_file():
        anat = an.load_anatomy(maps / test[0], progress=prog.sub(0.0, 0.4))
        dataset = f"OAI anatomy {test[0].split('.')[0]} (held out from the model's training)"
    else:
        anat = an.prepare_anatomy(an.analytic_knee(), None, "analytic", "analytic knee", progress=prog.sub(0.0, 0.4))
        dataset = "analytic knee (no ../shared)"
    ph = sm.simulate(anat, sm.PhantomParameters(snr=30.0, seed=7), progress=prog.sub(0.4, 0.6))
    agreement = logic.compare_segmentations(ph.series, mask_a=ph.cartilage_mask.array, name="Model vs truth",
                                            progress=prog.sub(0.6, 1.0))
    scan = agreement.scan
    mae = float(np.mean([abs(scan.mean_t2_b[n] - scan.mean_t2_a[n]) for n in SUBREGION_NAMES.values()]))
    ctx.result("KneeT2Segment", dataset, "automatic segmentation Dice vs truth", round(scan.dice, 4), "",
               f"bundled model {spec.id}, OAI protocol, SNR 30")
    ctx.result("KneeT2Segment", dataset, "subregion mean T2, MAE model mask vs true mask", round(mae, 3), "ms",
               "12 subregions")
    mrml.write_table_csv(agreement.table, out / "segmentation_agreement.csv")
    segmentation_overlay_png(ph.series.echoes.array[1], [ph.cartilage_mask.array, scan.quant_b.refined],
                             ph.series.geometry, out / "segmentation_overlay.png",
                             title=f"truth (blue) vs model (orange outline): Dice {scan.dice:.3f}")
