"""KneeT2Segment library: femoral cartilage T2 mapping from multi-echo spin-echo knee MRI.

Implements Thomas et al. (MESE U-Net segmentation and T2 quantification): see each file's
docstring for the section it follows.
"""
