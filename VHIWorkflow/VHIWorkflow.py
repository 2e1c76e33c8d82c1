"""VHIWorkflow: volume of hyperintense inflammation (V_HI) in sacroiliac-joint MRI.

Thin Slicer module file: metadata, the panel (built in ``VHIWorkflowLib.widget``), a thin
Logic wrapper around ``VHIWorkflowLib.logic.VHILogic`` and the self-test. Everything that
computes lives in ``VHIWorkflowLib`` and runs without the GUI.
"""

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from mskquant.panel import LazyLogic


class VHIWorkflow(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "VHI Workflow"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["MSKQuant developers"]
        self.parent.helpText = (
            "Semi-automated volume of hyperintense inflammation (V<sub>HI</sub>) on sacroiliac-joint MRI: a U-Net "
            "finds the 'disease region' on the T1-weighted image, a normal-bone ROI you draw on the STIR image sets "
            "a sensitive and a conservative threshold, islands smaller than 4 pixels are removed, you clean the "
            "result in Segment Editor and V<sub>HI</sub> is recomputed from your edits and exported.<br>"
            "Method: Hepburn C, Jones A, Bainbridge A, Ciurtin C, Iglesias JE, Zhang H, Hall-Craggs MA, Bray TJP. "
            "<i>Volume of hyperintense inflammation (V<sub>HI</sub>): a deep learning-enabled quantitative imaging "
            "biomarker of inflammation load in spondyloarthritis</i> (section 2.5).<br>"
            "Research use only; not a medical device.<br>"
            'Documentation: <a href="https://github.com/MSKQuant/SlicerMSKQuant#vhiworkflow--volume-of-hyperintense-inflammation-v_hi">VHIWorkflow in the MSKQuant README</a>.'
        )
        self.parent.acknowledgementText = (
            "The disease-region network weights and the validation data are those published by Hepburn et al. "
            "(University College London) with their paper. Built on 3D Slicer, PyTorch, SciPy and SimpleITK."
        )


class VHIWorkflowWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from VHIWorkflowLib.widget import VHIWorkflowPanel

        self.logic = VHIWorkflowLogic()  # what slicer.util.getModuleLogic("VHIWorkflow") returns
        self.panel = VHIWorkflowPanel(self.resourcePath("UI/VHIWorkflow.ui"), self.logic)
        self.layout.addWidget(self.panel.widget)
        self.layout.addStretch(1)

    def cleanup(self):
        if getattr(self, "panel", None) is not None:
            self.panel.cleanup()

    def enter(self):
        if getattr(self, "panel", None) is not None:
            self.panel.enter()


class VHIWorkflowLogic(ScriptedLoadableModuleLogic, LazyLogic):
    """Slicer-facing wrapper: ``VHIWorkflowLib.logic.VHILogic`` on the application's scene."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

        def make():
            from VHIWorkflowLib.logic import VHILogic

            return VHILogic()

        LazyLogic.__init__(self, make)

    def run(self, *args, **kwargs):
        return self.impl.run(*args, **kwargs)

    def recompute(self, segmentationNode):
        return self.impl.recompute(segmentationNode)


class VHIWorkflowTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Reload and Test): the synthetic case with a V_HI known by construction."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_synthetic_case()
        self.test_cleaning_and_recompute()

    def _run_synthetic(self):
        from mskquant import mrml
        from mskquant.headless import current_runtime
        from VHIWorkflowLib.synthetic import EXPECTED, make_case

        rt = current_runtime()
        case = make_case()
        stir = mrml.volume_from_image(rt, case.stir, "STIR")
        roi = mrml.volume_from_image(rt, case.normal_roi, "normal bone", labelmap=True)
        region = mrml.volume_from_image(rt, case.disease_region, "disease region", labelmap=True)
        result = VHIWorkflowLogic().run(stir, roi, disease_region=region)
        return result, EXPECTED

    def test_synthetic_case(self):
        self.delayDisplay("V_HI on the synthetic case")
        result, expected = self._run_synthetic()
        self.assertEqual(result.vhi["sensitive"].voxels, expected["sensitive_voxels"])
        self.assertEqual(result.vhi["conservative"].voxels, expected["conservative_voxels"])
        self.assertAlmostEqual(result.thresholds.n, expected["n"], places=6)
        self.delayDisplay("Synthetic case passed")

    def test_cleaning_and_recompute(self):
        self.delayDisplay("Cleaning a lesion and recomputing V_HI")
        import numpy as np
        from mskquant import mrml
        from VHIWorkflowLib.logic import SEG_SENSITIVE

        result, expected = self._run_synthetic()
        g = result.geometry
        mask = mrml.segment_mask(result.segmentation, SEG_SENSITIVE, g)
        mask[4] = False  # the radiologist removes lesion B's slice
        mrml.set_segment(result.segmentation, mrml.SegmentSpec(SEG_SENSITIVE, mask, (1, 0.85, 0.1)), g)
        vhi = VHIWorkflowLogic().recompute(result.segmentation)
        self.assertEqual(vhi["sensitive"].voxels, int(mask.sum()))
        self.assertLess(vhi["sensitive"].voxels, expected["sensitive_voxels"])
        self.delayDisplay("Recompute passed")
