"""Synthetic images from label maps: the one generator every training and test set uses.

The project has no real knee images with labels, only label maps (``../shared``). Models
trained on images of one simulator learn that simulator's look and fail on another (the
first cartilage model: Dice 0.95 on its own simulator, 0.63-0.70 on an independent one).
This package follows the idea of SynthSeg (Billot et al., *SynthSeg: segmentation of brain
MRI scans of any contrast and resolution without retraining*, Medical Image Analysis 2023):
draw every image's appearance at random - intensities per tissue class, contrast swaps,
texture inside tissues, bias field, blur, slice profile and thickness, resolution, field of
view, pose, gamma, noise - so that the only thing constant across training images is the
anatomy, and the network must learn shape, not look.

* :mod:`.sampling` - tissue fractions of every voxel of an arbitrary (oblique, thick-slice)
  target grid from a fine label map: partial volume from sample points inside the voxel and
  through the slice profile.
* :mod:`.appearance` - random appearance: proton density and T2 per tissue (so a multi-echo
  series decays as MESE does), texture fields, bias, blur, gamma; rendered from fractions.

The independent test family (:mod:`mskquant.testfamily`) is built differently on purpose and
is never used for training or for tuning thresholds.
"""
