"""Through-plane super-resolution of thick-slice knee MRI (SR-CNN of Chaudhari et al.), numeric core.

* :mod:`.degrade` - slice-profile FIR filter, 3x thicker slices, tricubic interpolation (TCI)
  back to the fine grid, and the geometry of both grids;
* :mod:`.network` - the residual CNN (``SR = TCI + f(TCI)``);
* :mod:`.model` - the model file and its loading (registry id ``knee-superres-3x``);
* :mod:`.infer` - input checks and slab-wise inference (:func:`.infer.super_resolve`);
* :mod:`.training` - patch cache from simulated DESS and resumable training;
* :mod:`.cli` - ``mskquant super-resolve`` (also a ``mskquant batch`` pipeline).
"""
