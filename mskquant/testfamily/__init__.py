"""The independent test family: knee MRI simulated differently from every training generator.

**Used only to test.** Nothing here may train a model or tune a threshold (a static test
checks that no training code imports it). It exists because a model tested on images of the
generator it was trained on measures that generator, not the world: the first cartilage model
scored Dice 0.95 on its own simulator and 0.63-0.70 on an independent one.

What differs from the training generators (:mod:`mskquant.synth`, the MESE phantom, the pain
pair simulator), by construction:

* anatomy (:mod:`.anatomy`): its own tissue rules on the label map - a cortex of random
  0.6-1.4 mm, a round body outline 18-30 mm around the bones with skin and a 3-10 mm fat
  layer, fatty striations in muscle, menisci where femoral and tibial cartilage face each
  other, Hoffa's fat pad, popliteal vessels, a joint-fluid film, marrow texture; the label
  maps' own bone lesions (labels 7-9) as marrow oedema;
* signal (:mod:`.signal`): MESE by the extended phase graph of a CPMG train with a smoothly
  varying transmit field (B1 0.8-1.1: stimulated echoes in every echo, not a factor on the
  first), literature T1/T2/PD; intermediate-weighted fat-suppressed TSE for knee-pain pairs;
* acquisition (:mod:`.acquire`): a Hann-windowed sinc slice profile, a 2x finer image
  Fourier-truncated to the matrix (Gibbs ringing), phase-encode motion ghosts, 4 receive
  coils with complex Gaussian noise combined by root-sum-of-squares (a non-central chi noise
  floor), its own fields of view, slice thicknesses and obliquities;
* the left knee is the mirrored anatomy of the right one (:mod:`.cases`).
"""
