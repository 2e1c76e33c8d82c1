"""SiamesePainCAM library: which knee hurts, from left/right sagittal MRI, with CAM overlays.

Implements Chang et al. (Siamese CNN for unilateral knee pain with class activation maps).
"""
