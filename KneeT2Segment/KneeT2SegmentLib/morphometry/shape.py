"""Bone shape numbers for morph.json: volume, surface area and articular area per bone.

``volume_mm3`` is the bone label's voxel count x voxel volume; ``mesh_volume_mm3`` the closed
smoothed mesh's volume (vtkMassProperties); ``area_mm2`` and ``articular_area_mm2`` come from
the mesh (:mod:`.surface`). A missing bone has None values and its message.
"""

from __future__ import annotations

from typing import Dict

from .surface import BoneSurface


def bone_shape(surface: BoneSurface) -> dict:
    if surface.missing:
        return {"volume_mm3": None, "mesh_volume_mm3": None, "area_mm2": None, "articular_area_mm2": None,
                "n_vertices": 0, "message": surface.message}
    out = {"volume_mm3": round(surface.volume_mm3, 1), "mesh_volume_mm3": round(surface.mesh_volume_mm3, 1),
           "area_mm2": round(surface.area_mm2, 1), "articular_area_mm2": round(surface.articular_area_mm2, 1),
           "n_vertices": int(surface.polydata.GetNumberOfPoints())}
    if surface.message:
        out["message"] = surface.message
    return out


def shape_summary(surfaces: Dict[str, BoneSurface]) -> Dict[str, dict]:
    """Per bone (femur, tibia, patella) its :func:`bone_shape` dict."""
    return {bone: bone_shape(s) for bone, s in surfaces.items()}
