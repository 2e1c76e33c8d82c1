"""Label numbering of the knee morphometry: the shared OAI label maps' convention.

0 background, 1 femur, 2 femoral cartilage, 3 tibia, 4 tibial cartilage, 5 patella,
6 patellar cartilage. Label maps with bone-lesion labels (7-9: femoral, tibial, patellar
bone lesions) are read as the bone they lie in (:func:`tissue_labels`).
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

BACKGROUND, FEMUR, FEMORAL_CARTILAGE, TIBIA, TIBIAL_CARTILAGE, PATELLA, PATELLAR_CARTILAGE = range(7)
N_LABELS = 7
NAMES: Tuple[str, ...] = ("background", "femur", "femoral cartilage", "tibia", "tibial cartilage", "patella",
                          "patellar cartilage")
# RGB 0-255: bones bone-coloured shades, cartilages the KneeT2Segment cartilage colours' family
COLOURS: Tuple[Tuple[int, int, int], ...] = ((0, 0, 0), (241, 214, 145), (111, 184, 210), (216, 101, 79),
                                             (220, 200, 60), (144, 238, 144), (183, 156, 220))
BONES: Dict[str, int] = {"femur": FEMUR, "tibia": TIBIA, "patella": PATELLA}
CARTILAGE_OF: Dict[str, int] = {"femur": FEMORAL_CARTILAGE, "tibia": TIBIAL_CARTILAGE, "patella": PATELLAR_CARTILAGE}
# cartilage plates of the thickness measurement (the tibial cartilage is split medial/lateral)
PLATES: Tuple[str, ...] = ("femoral", "medial tibial", "lateral tibial", "patellar")
LESION_TO_BONE = {7: FEMUR, 8: TIBIA, 9: PATELLA}


def tissue_labels(labels: np.ndarray) -> np.ndarray:
    """A label array in 0-6: bone-lesion labels 7-9 become their bone, anything else above 9 background."""
    a = np.asarray(labels)
    out = np.where(a <= PATELLAR_CARTILAGE, a, 0).astype(np.uint8)
    for lesion, bone in LESION_TO_BONE.items():
        out[a == lesion] = bone
    out[a < 0] = 0
    return out


def colour_table_lines() -> str:
    """The colour table as a Slicer ``.ctbl`` text (``index name R G B A``)."""
    lines = ["# MSKQuant knee morphometry labels"]
    for i, (name, rgb) in enumerate(zip(NAMES, COLOURS)):
        alpha = 0 if i == 0 else 255
        lines.append(f"{i} {name.replace(' ', '_')} {rgb[0]} {rgb[1]} {rgb[2]} {alpha}")
    return "\n".join(lines) + "\n"
