"""MSKQuant shared library: what the KneeT2Segment, VHIWorkflow and SiamesePainCAM modules share.

Layers (imports go one way only):

* numeric core — ``image``, ``progress``, ``metrics``, ``unet``, ``inference``, ``models``,
  ``device``, ``errors``, ``atomic``, ``render``: numpy/torch/scipy/SimpleITK/VTK-data only,
  never ``slicer``;
* MRML layer — ``headless`` (a Slicer scene and application logic without the GUI) and
  ``mrml`` (MRML node <-> numpy adapters), built on real Slicer nodes;
* front ends — ``cli`` (the ``mskquant`` command) and each module's panel.
"""

__version__ = "0.1.0"
