"""Knee morphometry (Morales et al., qMRI biomarkers): multi-tissue segmentation of a 3D knee
MRI, cartilage thickness, and thickness and T2 projected onto the articular bone surface.

Numeric core (no Slicer import), one module per responsibility:

* :mod:`.labels` - the label numbering (the shared OAI label maps'), plates, colour table;
* :mod:`.segment` - the ensemble of small networks (softmax averaging), tiled, with progress and cancel;
* :mod:`.mesh` - sub-voxel surfaces of masks in RAS mm (blur, flying edges, sampling, areas);
* :mod:`.regions` - region codes of the plates (femoral subregions, tibial medial/lateral split), summary rows;
* :mod:`.thickness` - cartilage thickness per plate and region, thickness map;
* :mod:`.surface` - bone meshes, articular surface, areas and volumes;
* :mod:`.projection` - thickness and per-voxel measures (T2) onto the articular vertices, .vtp files;
* :mod:`.shape` - volume, area and articular area per bone (morph.json);
* :mod:`.phantoms` - label maps of known thickness (shell, tilted slab) for tests and checks;
* :mod:`.maps` - 2D maps of a bone's articular surface (documented parameterisation), PNG and NumPy;
* :mod:`.training` - training of the ensemble on DESS-like volumes (:mod:`..dess`), resumable;
* :mod:`.t2` - the cartilage carried to a MESE series of the same knee (rigid registration), T2 there;
* :mod:`.pipeline` - the whole measurement of one knee (what the CLI, batch and panel call);
* :mod:`.export` - the ``knee-morph`` files; :mod:`.cli` - the ``knee-morph`` command.

Then the MRML layer :mod:`.logic` (real slicer-core nodes) and the GUI layer :mod:`.panel` (the
KneeT2Segment panel's Morphometry section, only in the Slicer application).
"""
