"""KneeT2Segment MRML logic on real (headless) Slicer nodes: sequences in; T2 map, segments, tables, plots out."""

import json
from dataclasses import replace

import numpy as np
import pytest

from mskquant import mrml
from mskquant.atomic import OutputFolder
from mskquant.errors import InputError
from mskquant.image import Geometry, Image

from KneeT2SegmentLib import anatomy as an
from KneeT2SegmentLib import simulator as sm
from KneeT2SegmentLib.logic import CARTILAGE_SEGMENT, T2_COLOR_NODE, KneeT2Logic
from KneeT2SegmentLib.parameters import KneeT2Parameters
from KneeT2SegmentLib.subregions import CSV_COLUMNS, SUBREGION_NAMES

from conftest import ROOT

needs_bundled = pytest.mark.skipif(not (ROOT / "Resources" / "Models" / "knee-femoral-cartilage-mese.pt").is_file(),
                                   reason="bundled cartilage model not present")


@pytest.fixture(scope="module")
def phantoms():
    """Baseline and follow-up (prescribed change + lesion) of the analytic knee, a small FOV around it."""
    anat = an.prepare_anatomy(an.analytic_knee(), None, "analytic", "analytic knee")
    params = sm.PhantomParameters(snr=40.0, matrix=(224, 144), fov_mm=(70.0, 64.2))
    base = sm.simulate(anat, params)
    follow = sm.simulate(anat, replace(params, seed=1, delta_t2_ms=dict(sm.DEFAULT_DELTA_T2),
                                       lesions=[sm.default_lesion(anat)]), follow_up=True)
    return base, follow


def params_for(ph):
    return KneeT2Parameters(noise_sigma=ph.sigma)  # the small FOV holds little air


def test_sequence_in_nodes_out(runtime, phantoms):
    base, _ = phantoms
    logic = KneeT2Logic(runtime)
    seq, browser = logic.add_mese(base.series, "MESE")
    assert [float(seq.GetNthIndexValue(n)) for n in range(seq.GetNumberOfDataNodes())] == list(sm.OAI_ECHO_TIMES_MS)
    assert seq.GetIndexUnit() == "ms" and seq.GetAttribute("MSKQuant.Laterality") == "right"
    mask = mrml.volume_from_image(runtime, base.cartilage_mask, "cartilage", labelmap=True)
    res = logic.run(seq, mask, params=params_for(base), name="T2 test")
    g = base.series.geometry
    t2 = mrml.image_from_volume(res.t2_volume)
    assert t2.geometry.same_grid(g)
    assert np.isnan(t2.array[~base.cartilage_mask.array]).all()
    assert np.isfinite(t2.array[base.cartilage_mask.array]).mean() > 0.95
    display = res.t2_volume.GetDisplayNode()
    color = display.GetColorNode()
    assert color.GetName() == T2_COLOR_NODE and color.IsA("vtkMRMLProceduralColorNode")
    assert tuple(color.GetColorTransferFunction().GetRange()) == (0.0, 100.0)
    assert (display.GetWindow(), display.GetLevel()) == (100.0, 50.0)
    r2 = mrml.image_from_volume(res.fit_volumes["r2"]).array
    amp = mrml.image_from_volume(res.fit_volumes["amplitude"]).array
    finite = np.isfinite(t2.array)
    np.testing.assert_array_equal(np.isfinite(r2), finite)
    assert np.nanmedian(r2) > 0.95 and np.nanmin(amp) > 0
    assert sorted(mrml.segment_names(res.segmentation)) == sorted(SUBREGION_NAMES.values())
    for lab in (2, 11):
        np.testing.assert_array_equal(mrml.segment_mask(res.segmentation, SUBREGION_NAMES[lab], g),
                                      res.quant.subregions.labels == lab)
    cols = mrml.columns_from_table(res.table)
    assert tuple(cols) == CSV_COLUMNS and len(cols["region"]) == 36 and cols["region"][0] == "All"
    assert cols["n_voxels"][0] == int(res.quant.refined.sum())
    series = res.plot.GetNthPlotSeriesNode(0)
    assert series.GetPlotType() == series.PlotTypeBar and series.GetYColumnName() == "mean_t2_ms"
    summary = json.loads(res.table.GetAttribute("MSKQuant.KneeT2Summary"))
    assert summary["laterality"] == "right" and len(summary["regions"]) == 36
    logic.run(seq, mask, params=params_for(base), name="T2 again")
    assert runtime.scene.GetNodesByName(T2_COLOR_NODE).GetNumberOfItems() == 1  # one colour map, reused


def test_segment_input_equals_labelmap_input(runtime, phantoms):
    base, _ = phantoms
    logic = KneeT2Logic(runtime)
    seq, _ = logic.add_mese(base.series, "MESE")
    g = base.series.geometry
    seg = mrml.segmentation_from_masks(runtime, "drawn", [
        mrml.SegmentSpec("Femoral cartilage", base.cartilage_mask.array, (0.2, 0.8, 0.2)),
        mrml.SegmentSpec("Tibial cartilage", base.labels.array == an.TIBIAL_CARTILAGE, (0.8, 0.2, 0.2))], g)
    with pytest.raises(InputError, match="2 segments"):
        logic.run(seq, seg, params=params_for(base))
    by_segment = logic.run(seq, seg, "Femoral cartilage", params_for(base))
    label = mrml.volume_from_image(runtime, base.cartilage_mask, "cartilage", labelmap=True)
    by_label = logic.run(seq, label, params=params_for(base))
    np.testing.assert_array_equal(mrml.image_from_volume(by_segment.t2_volume).array,
                                  mrml.image_from_volume(by_label.t2_volume).array)


def test_bad_masks_and_series_give_one_clear_error(runtime, phantoms):
    base, _ = phantoms
    logic = KneeT2Logic(runtime)
    seq, _ = logic.add_mese(base.series, "MESE")
    g = base.series.geometry
    other = Geometry.from_spacing(g.shape_ijk, g.spacing * 1.1, g.origin, g.directions)
    off_grid = mrml.volume_from_image(runtime, Image(base.cartilage_mask.array, other), "off grid", labelmap=True)
    with pytest.raises(InputError, match="not on the MESE grid"):
        logic.run(seq, off_grid, params=params_for(base))
    empty = mrml.volume_from_image(runtime, Image(np.zeros(g.shape_kji, np.uint8), g), "empty", labelmap=True)
    with pytest.raises(InputError, match="empty"):
        logic.run(seq, empty, params=params_for(base))
    volume = mrml.volume_from_image(runtime, Image(base.series.echoes.array[1], g), "echo 2")
    with pytest.raises(InputError, match="3D volume without echoes"):
        logic.run(volume, empty, params=params_for(base))
    images = [Image(a, g) for a in base.series.echoes.array]
    images[2] = Image(images[2].array, other)
    bad_seq, _ = mrml.sequence_from_images(runtime, images, sm.OAI_ECHO_TIMES_MS, "mixed grids")
    with pytest.raises(InputError, match="Echo 3 .* different geometry"):
        logic.mese_from_node(bad_seq)
    seconds, _ = mrml.sequence_from_images(runtime, [Image(a, g) for a in base.series.echoes.array],
                                           [t / 1000 for t in sm.OAI_ECHO_TIMES_MS], "in seconds", index_unit="s")
    np.testing.assert_allclose(logic.mese_from_node(seconds).echo_times_ms, sm.OAI_ECHO_TIMES_MS)
    frames, _ = mrml.sequence_from_images(runtime, [Image(a, g) for a in base.series.echoes.array],
                                          range(1, 8), "4D file as frames", index_name="time", index_unit="")
    with pytest.raises(InputError, match="not the echo time"):
        logic.mese_from_node(frames)
    np.testing.assert_allclose(logic.mese_from_node(frames, sm.OAI_ECHO_TIMES_MS).echo_times_ms, sm.OAI_ECHO_TIMES_MS)
    with pytest.raises(InputError, match="laterality"):
        logic.run(replace(base.series, laterality=None), mask=base.cartilage_mask, params=params_for(base))


def test_automatic_segmentation_hook(runtime, phantoms):
    base, _ = phantoms
    seq, _ = KneeT2Logic(runtime).add_mese(base.series, "MESE")
    calls = []

    def segmenter(series, progress):
        calls.append(series.n_echoes)
        progress(1.0, "segmented")
        return base.cartilage_mask.array

    res = KneeT2Logic(runtime, segmenter=segmenter).run(seq, params=params_for(base))
    assert calls == [7] and res.mask_source == "automatic"
    assert res.quant.mask.sum() == base.cartilage_mask.array.sum()


@needs_bundled
def test_segment_edit_recompute_restore(runtime, phantoms):
    """Segment -> editable node + hidden original; an edit is quantified as edited; restore undoes it."""
    from mskquant.metrics import dice

    base, _ = phantoms
    logic = KneeT2Logic(runtime)
    seq, _ = logic.add_mese(base.series, "MESE")
    g = base.series.geometry
    seg = logic.segment(seq, params_for(base), name="cartilage")
    first = logic.segment(seq, params_for(base), name="cartilage")  # a second run never reuses the first node
    assert first.segmentation.GetID() != seg.segmentation.GetID()
    assert mrml.segment_names(seg.segmentation) == [CARTILAGE_SEGMENT]
    auto = mrml.segment_mask(seg.segmentation, CARTILAGE_SEGMENT, g)
    np.testing.assert_array_equal(auto, seg.result.mask)
    assert dice(auto, base.cartilage_mask.array) > 0.6
    assert not seg.automatic.GetDisplayNode().GetVisibility() and not logic.is_edited(seg.segmentation)
    unedited = logic.run(seq, seg.segmentation, CARTILAGE_SEGMENT, params_for(base), name="auto")
    assert unedited.summary["segmentation"]["edited"] is False and "not edited" in unedited.mask_source
    edited = auto.copy()
    k = int(np.argmax(auto.sum(axis=(1, 2))))
    edited[k] = False  # the reader removes one slice
    mrml.set_segment(seg.segmentation, mrml.SegmentSpec(CARTILAGE_SEGMENT, edited, (0.2, 0.75, 0.95)), g,
                     mrml.find_segment_id(seg.segmentation, CARTILAGE_SEGMENT))
    assert logic.is_edited(seg.segmentation)
    res = logic.run(seq, seg.segmentation, CARTILAGE_SEGMENT, params_for(base), name="edited")
    assert res.summary["segmentation"]["edited"] is True and "(automatic, edited)" in res.mask_source
    assert not res.quant.refined[k].any() and res.quant.refined.sum() < unedited.quant.refined.sum()
    np.testing.assert_array_equal(mrml.segment_mask(seg.automatic, CARTILAGE_SEGMENT, g), auto)  # original kept
    logic.restore_automatic(seg.segmentation)
    assert not logic.is_edited(seg.segmentation)
    np.testing.assert_array_equal(mrml.segment_mask(seg.segmentation, CARTILAGE_SEGMENT, g), auto)


@needs_bundled
def test_run_without_a_mask_segments_and_reuses_the_fit(runtime, phantoms):
    base, _ = phantoms
    logic = KneeT2Logic(runtime)
    seq, _ = logic.add_mese(base.series, "MESE")
    res = logic.run(seq, params=params_for(base), name="automatic")
    seg = res.summary["segmentation"]
    assert res.mask_source == "automatic (knee-femoral-cartilage-mese)" and seg["edited"] is False
    assert seg["counts"]["final"] == int(res.quant.mask.sum())
    # the shared fit gives exactly what a fresh fit of the final mask gives
    again = logic.run(seq, mask=res.quant.mask, params=params_for(base), name="same mask")
    np.testing.assert_array_equal(np.isfinite(res.quant.t2_map), np.isfinite(again.quant.t2_map))
    np.testing.assert_allclose(res.quant.t2_map, again.quant.t2_map, rtol=1e-6, equal_nan=True)
    assert [r.as_row() for r in res.quant.rows] == [r.as_row() for r in again.quant.rows]


def test_change_between_two_results_and_export(runtime, phantoms, tmp_path):
    base, follow = phantoms
    logic = KneeT2Logic(runtime)
    tables = []
    for ph, label in ((base, "baseline"), (follow, "follow-up")):
        seq, _ = logic.add_mese(ph.series, f"MESE {label}")
        mask = mrml.volume_from_image(runtime, ph.cartilage_mask, f"cartilage {label}", labelmap=True)
        res = logic.run(seq, mask, params=params_for(ph), name=label)
        tables.append(res.table)
        with OutputFolder(tmp_path / label, ["t2.nii.gz"]) as out:
            written = logic.export(res, out.stage)
        assert {p.name for p in written} == {"t2.nii.gz", "subregions.nii.gz", "subregions.csv", "projection.png",
                                             "knee_t2.json", "t2_fit_r2.nii.gz", "t2_fit_amplitude.nii.gz",
                                             "t2_loglinear.nii.gz"}
    change = logic.compare(tables[0], tables[1])  # from the table nodes, as after reloading a scene
    cols = mrml.columns_from_table(change.table)
    rows = {r: d for r, d in zip(cols["region"], cols["delta_t2_ms"])}
    assert rows["Superficial lateral posterior"] == pytest.approx(sm.DEFAULT_DELTA_T2[12], abs=0.6)
    clusters = json.loads(change.table.GetAttribute("MSKQuant.KneeT2Clusters"))
    assert clusters["n_clusters"] >= 1 and clusters["percent_area"] > 1.0
    assert change.plot.GetNthPlotSeriesNode(0).GetYColumnName() == "delta_t2_ms"
    with OutputFolder(tmp_path / "change", ["change.csv"]) as out:
        names = {p.name for p in logic.export_change(change, out.stage)}
    assert names == {"change.csv", "clusters.json", "change.png"}
    with pytest.raises(InputError, match="not a KneeT2Segment result"):
        logic.compare(mrml.table_from_columns(runtime, "other", {"a": [1]}), tables[1])
