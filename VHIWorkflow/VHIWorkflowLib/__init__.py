"""VHIWorkflow library: volume of hyperintense inflammation (V_HI) on sacroiliac-joint MRI.

Implements Hepburn et al., "Volume of hyperintense inflammation (V_HI)", section 2.5:
numeric core in ``thresholds``, ``inflammation``, ``disease_region``, ``comparison``;
MRML logic in ``logic``; the panel in ``widget``; the command line in ``cli``.
"""
