"""KneeT2Segment: femoral cartilage T2 from multi-echo spin-echo knee MRI.

Thin Slicer module file: metadata, the panel (built in ``KneeT2SegmentLib.widget``), a thin
Logic wrapper around ``KneeT2SegmentLib.logic.KneeT2Logic`` and the self-test. Everything
that computes lives in ``KneeT2SegmentLib`` and runs without the GUI.
"""

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from mskquant.panel import LazyLogic


class KneeT2Segment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Knee T2 Segment"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["MSKQuant developers"]
        self.parent.helpText = (
            "Femoral cartilage T2 relaxometry from a sagittal multi-echo spin-echo (MESE) series: a noise-corrected "
            "mono-exponential T2 fit (first echo excluded, T2 outside 0-100 ms discarded), the cartilage projected "
            "onto a 2D map and split into 12 subregions (deep/superficial, medial/lateral, anterior/central/posterior), "
            "statistics per subregion and aggregate, and the change between two time points with focal clusters of "
            "increased T2. The cartilage comes from your segment or labelmap, or from the automatic segmentation: a 2D "
            "U-Net on the second echo of each sagittal slice (volume normalised to its quartiles), voxels with p > 0.01 "
            "T2-fitted and kept within 0-100 ms, binarised at the model's calibrated probability threshold, slices with "
            "too little cartilage emptied. Segment, edit the result in Segment Editor, then Run to (re)compute T2 and "
            "subregions. Agreement tools compare two segmentations (Dice, Jaccard, subregion T2; Spearman, MAE, bias "
            "and Bland-Altman over scans). The bundled model was trained on simulated MESE, not validated on real "
            "scans; register weights trained on real data with 'mskquant models add'.<br>"
            "Method: Thomas KA, Krzemi&#324;ski D, Kidzi&#324;ski &#321;, Paul R, Rubin EB, Halilaj E, Black MS, "
            "Chaudhari A, Gold GE, Delp SL. <i>Open source software for automatic subregional assessment of knee "
            "cartilage degradation using quantitative T2 relaxometry and deep learning</i> (sections 2.3-2.6).<br>"
            "Research use only; not a medical device.<br>"
            'Documentation: <a href="https://github.com/MSKQuant/SlicerMSKQuant#kneet2segment--femoral-cartilage-t2-from-multi-echo-spin-echo-knee-mri">KneeT2Segment in the MSKQuant README</a>.'
        )
        self.parent.acknowledgementText = (
            "Subregion conventions follow the authors' public reference code and DOSMA (Desai et al.). Phantoms are "
            "simulated from OAI knee label maps. Built on 3D Slicer, PyTorch, SciPy and SimpleITK."
        )


class KneeT2SegmentWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from KneeT2SegmentLib.widget import KneeT2SegmentPanel

        self.logic = KneeT2SegmentLogic()  # what slicer.util.getModuleLogic("KneeT2Segment") returns
        self.panel = KneeT2SegmentPanel(self.resourcePath("UI/KneeT2Segment.ui"), self.logic)
        self.layout.addWidget(self.panel.widget)
        self.layout.addStretch(1)

    def cleanup(self):
        if getattr(self, "panel", None) is not None:
            self.panel.cleanup()

    def enter(self):
        if getattr(self, "panel", None) is not None:
            self.panel.enter()


class KneeT2SegmentLogic(ScriptedLoadableModuleLogic, LazyLogic):
    """Slicer-facing wrapper: ``KneeT2SegmentLib.logic.KneeT2Logic`` on the application's scene."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

        def make():
            from KneeT2SegmentLib.logic import KneeT2Logic

            return KneeT2Logic()

        LazyLogic.__init__(self, make)

    def run(self, *args, **kwargs):
        return self.impl.run(*args, **kwargs)

    def compare(self, baseline, followup, *args, **kwargs):
        return self.impl.compare(baseline, followup, *args, **kwargs)

    def segment(self, mese, *args, **kwargs):
        return self.impl.segment(mese, *args, **kwargs)


class KneeT2SegmentTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Reload and Test): an analytic-knee MESE phantom whose T2 is known by construction."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_phantom_t2_and_subregions()
        self.setUp()
        self.test_automatic_segmentation_then_edit_and_recompute()

    def test_phantom_t2_and_subregions(self):
        self.delayDisplay("T2 and subregions of an analytic knee phantom")
        import numpy as np
        from mskquant import mrml
        from mskquant.headless import current_runtime
        from KneeT2SegmentLib import anatomy, simulator
        from KneeT2SegmentLib.subregions import SUBREGION_NAMES

        anat = anatomy.prepare_anatomy(anatomy.analytic_knee(), None, "analytic", "analytic knee")
        phantom = simulator.simulate(anat, simulator.PhantomParameters(snr=40.0))
        logic = KneeT2SegmentLogic().impl
        seq, _ = logic.add_mese(phantom.series, "MESE phantom")
        mask = mrml.volume_from_image(current_runtime(), phantom.cartilage_mask, "cartilage", labelmap=True)
        result = logic.run(seq, mask, name="Phantom T2")
        self.assertEqual(sorted(mrml.segment_names(result.segmentation)), sorted(SUBREGION_NAMES.values()))
        q = result.quant
        truth = phantom.t2_noise_free.array
        for lab, name in SUBREGION_NAMES.items():
            sel = (q.subregions.labels == lab) & np.isfinite(truth)
            measured = next(r.mean_t2_ms for r in q.rows if r.region == name)
            self.assertLess(abs(measured - float(truth[sel].mean())), 0.5, name)
        self.delayDisplay("Phantom test passed")

    def test_automatic_segmentation_then_edit_and_recompute(self):
        self.delayDisplay("Automatic segmentation, an edit, recomputed T2")
        import numpy as np
        from mskquant import mrml
        from mskquant.metrics import dice
        from KneeT2SegmentLib import anatomy, simulator
        from KneeT2SegmentLib.logic import CARTILAGE_SEGMENT

        anat = anatomy.prepare_anatomy(anatomy.analytic_knee(), None, "analytic", "analytic knee")
        phantom = simulator.simulate(anat, simulator.PhantomParameters(snr=40.0))
        logic = KneeT2SegmentLogic().impl
        seq, _ = logic.add_mese(phantom.series, "MESE phantom")
        seg = logic.segment(seq)
        g = phantom.series.geometry
        auto = mrml.segment_mask(seg.segmentation, CARTILAGE_SEGMENT, g)
        self.assertGreater(dice(auto, phantom.cartilage_mask.array), 0.5)
        self.assertFalse(logic.is_edited(seg.segmentation, g))
        edited = auto.copy()
        edited[:, : g.shape_kji[1] // 2] = False  # remove the upper half, as a reader might
        mrml.set_segment(seg.segmentation, mrml.SegmentSpec(CARTILAGE_SEGMENT, edited, (0.2, 0.75, 0.95)), g,
                         mrml.find_segment_id(seg.segmentation, CARTILAGE_SEGMENT))
        result = logic.run(seq, seg.segmentation, CARTILAGE_SEGMENT)
        self.assertTrue(result.summary["segmentation"]["edited"])
        self.assertLessEqual(int(result.quant.refined.sum()), int(edited.sum()))
        self.delayDisplay("Segmentation test passed")
