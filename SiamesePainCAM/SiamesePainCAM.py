"""SiamesePainCAM: which knee hurts, from left and right sagittal knee MRI, with class-activation maps.

Thin Slicer module file: metadata, the panel (built in ``SiamesePainCAMLib.widget``), a thin
Logic wrapper around ``SiamesePainCAMLib.logic.PainCAMLogic`` and the self-test. Everything
that computes lives in ``SiamesePainCAMLib`` and runs without the GUI.
"""

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from mskquant.panel import LazyLogic


class SiamesePainCAM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Siamese Pain CAM"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["MSKQuant developers"]
        self.parent.helpText = (
            "Which knee hurts: a convolutional Siamese network reads 23 sagittal slices of each knee (centre slice "
            "&plusmn; 11, the left knee mirrored so both are indexed alike), each slice aligned to a template, "
            "cropped to 105 mm at the joint and resized to 224 x 224, and gives the probability that the right (vs "
            "the left) knee is the painful one. Class-activation maps (fully connected weights x final feature maps) "
            "show where the evidence lies: one CAM volume per knee on the input grid, shown over the knee, and the "
            "slice views jump to the slice with the highest mean CAM.<br>"
            "Method: Chang GH, Felson DT, Qiu S, Guermazi A, Capellini TD, Kolachalama VB. <i>Pairwise learning of MRI "
            "scans using a convolutional Siamese network for prediction of knee pain</i> (Methods: image registration, "
            "neural network architecture, class activation mapping).<br>"
            "The bundled demo model was trained on simulated pairs and is <b>not validated on real scans</b>. "
            "Research use only; not a medical device.<br>"
            'Documentation: <a href="https://github.com/MSKQuant/SlicerMSKQuant#siamesepaincam--which-knee-hurts-chang-et-al">SiamesePainCAM in the MSKQuant README</a>.'
        )
        self.parent.acknowledgementText = (
            "Simulated knees are built from OAI-derived knee label maps (OAI-ZIB / Anomaly-Aware 3D Segmentation "
            "repository) when present. Built on 3D Slicer, PyTorch, SciPy and SimpleITK."
        )


class SiamesePainCAMWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from SiamesePainCAMLib.widget import SiamesePainCAMPanel

        self.logic = SiamesePainCAMLogic()  # what slicer.util.getModuleLogic("SiamesePainCAM") returns
        self.panel = SiamesePainCAMPanel(self.resourcePath("UI/SiamesePainCAM.ui"), self.logic)
        self.layout.addWidget(self.panel.widget)
        self.layout.addStretch(1)

    def cleanup(self):
        if getattr(self, "panel", None) is not None:
            self.panel.cleanup()

    def enter(self):
        if getattr(self, "panel", None) is not None:
            self.panel.enter()


class SiamesePainCAMLogic(ScriptedLoadableModuleLogic, LazyLogic):
    """Slicer-facing wrapper: ``SiamesePainCAMLib.logic.PainCAMLogic`` on the application's scene."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

        def make():
            from SiamesePainCAMLib.logic import PainCAMLogic

            return PainCAMLogic()

        LazyLogic.__init__(self, make)

    def run(self, leftVolumeNode, rightVolumeNode, parameters=None, progress=None):
        return self.impl.run(leftVolumeNode, rightVolumeNode, parameters, progress=progress)


class SiamesePainCAMTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Reload and Test): a simulated pair from the analytic knee."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_simulated_pair()

    def test_simulated_pair(self):
        self.delayDisplay("Which knee hurts on a simulated pair")
        import numpy as np
        from mskquant import mrml
        from mskquant.headless import current_runtime
        from SiamesePainCAMLib import simulator as sim

        rt = current_runtime()
        anatomy = sim.build_anatomy(sim.analytic_knee_labels(), "analytic", seed=99)
        pair = sim.simulate_pair(anatomy, np.random.default_rng(3), "selftest", painful_side="right",
                                 lesion_kind="effusion")
        left = mrml.volume_from_image(rt, pair.left.image, "left knee")
        right = mrml.volume_from_image(rt, pair.right.image, "right knee")
        result = SiamesePainCAMLogic().run(left, right)
        self.assertTrue(0.0 <= result.p_right_painful <= 1.0)
        for side, node in (("left", left), ("right", right)):
            cam_geometry = mrml.geometry_of(result.cam_volumes[side])
            self.assertTrue(cam_geometry.same_grid(mrml.geometry_of(node)))
        self.assertEqual(result.table.GetNumberOfRows(), 2)
        self.delayDisplay(f"Painful side {result.painful_side} (p right {result.p_right_painful:.2f}); test passed")
