"""Knee morphometry on MRML nodes (no GUI): what the panel's Morphometry section calls.

* :meth:`KneeMorphLogic.segment` - the ensemble's labels as a new segmentation node with one
  segment per tissue (never replacing an earlier, possibly edited, one);
* :meth:`KneeMorphLogic.labels_from_segmentation` - the segments as they are now (after edits in
  Segment Editor) back into a label map on the 3D image's grid;
* :meth:`KneeMorphLogic.compute` (worker thread: numbers only) and :meth:`make_nodes` (GUI thread):
  the thickness table, a bone table, the thickness map volume, one model node per bone
  coloured by thickness (or T2), and one 2D map volume per bone and measure;
* :meth:`KneeMorphLogic.export` - the ``knee-morph`` files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from mskquant import mrml
from mskquant.errors import InputError
from mskquant.image import Image
from mskquant.progress import Progress, as_progress

from . import labels as lb
from ..logic import T2_COLOR_NODE, t2_color_points  # the T2 map's colours, one node per scene
from .export import THICKNESS_COLUMNS
from .pipeline import MorphParameters, MorphResult

MODULE_ATTRIBUTE = "MSKQuant.Module"
AUTOMATIC_ATTRIBUTE = "MSKQuant.KneeMorphAutomatic"  # JSON of the segmentation info on an automatic segmentation
THICKNESS_COLOR_NODE = "MSKQuant thickness 0-4 mm"
THICKNESS_RANGE_MM = (0.0, 4.0)



@dataclass
class MorphNodes:
    result: MorphResult
    thickness_table: object
    bone_table: object
    thickness_volume: object
    models: Dict[str, object] = field(default_factory=dict)
    map_volumes: Dict[str, object] = field(default_factory=dict)  # "<bone> <measure>" -> volume node


class KneeMorphLogic:
    def __init__(self, runtime) -> None:
        self.rt = runtime

    # --- segmentation ---------------------------------------------------------------------------
    def segment(self, image: Image, params: Optional[MorphParameters] = None, progress: "Progress | None" = None):
        """(the image segmented, labels, info, warnings) by the ensemble, super-resolved first when asked
        (worker thread: no nodes)."""
        from .pipeline import segment_image

        return segment_image(image, (params or MorphParameters()).validate(), progress)

    def super_resolved_node(self, image: Image, name: str):
        """The super-resolved image as a new volume node (what the segmentation and Measure use)."""
        node = mrml.volume_from_image(self.rt, image, name)
        node.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
        node.SetAttribute("MSKQuant.Note", "super-resolved (trained on simulated images; not validated on real scans)")
        return node

    def segmentation_node(self, labels: Image, name: str, reference_volume=None, info: Optional[dict] = None):
        """A new segmentation node with one segment per tissue present."""
        specs = [mrml.SegmentSpec(lb.NAMES[v].capitalize(), labels.array == v,
                                  tuple(c / 255.0 for c in lb.COLOURS[v]))
                 for v in range(1, lb.N_LABELS) if np.any(labels.array == v)]
        if not specs:
            raise InputError("The segmentation found no knee tissue in the image: check that it is a knee MRI.")
        seg = mrml.segmentation_from_masks(self.rt, name, specs, labels.geometry, reference_volume)
        seg.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
        seg.SetAttribute(AUTOMATIC_ATTRIBUTE, json.dumps(info or {}))
        return seg

    @staticmethod
    def labels_from_segmentation(seg_node, geometry) -> Image:
        """The segments named after the tissues (as :meth:`segmentation_node` names them) as labels 0-6."""
        if seg_node is None or not seg_node.IsA("vtkMRMLSegmentationNode"):
            raise InputError("Select a segmentation of the knee (made by Segment, or with segments named Femur, "
                             "Femoral cartilage, Tibia, Tibial cartilage, Patella, Patellar cartilage).")
        names = {n.lower(): n for n in mrml.segment_names(seg_node)}
        out = np.zeros(geometry.shape_kji, np.uint8)
        found = []
        for v in range(1, lb.N_LABELS):
            name = names.get(lb.NAMES[v])
            if name is None:
                continue
            out[mrml.segment_mask(seg_node, name, geometry)] = v
            found.append(lb.NAMES[v])
        if not any(n in found for n in ("femoral cartilage", "tibial cartilage", "patellar cartilage")):
            raise InputError(f"Segmentation '{seg_node.GetName()}' has no cartilage segment (it has: "
                             f"{', '.join(names.values()) or 'none'}): name them Femoral cartilage, Tibial cartilage, "
                             f"Patellar cartilage.")
        return Image(out, geometry)

    # --- measurement ------------------------------------------------------------------------------
    def compute(self, image: Optional[Image], labels: Image, series=None, params: Optional[MorphParameters] = None,
                t2_params=None, progress: "Progress | None" = None) -> MorphResult:
        from .pipeline import measure

        return measure(labels, image, series, params, t2_params, as_progress(progress))

    def _color(self, name: str, vmax: float):
        node = self.rt.scene.GetFirstNodeByName(name)
        if node is None or not node.IsA("vtkMRMLProceduralColorNode"):
            node = mrml.continuous_color_node(self.rt, name, t2_color_points(vmax))  # as the PNG maps
        return node

    def make_nodes(self, result: MorphResult, name: str) -> MorphNodes:
        """The result's nodes (GUI thread)."""
        thick_color = self._color(THICKNESS_COLOR_NODE, THICKNESS_RANGE_MM[1])
        rows = result.thickness.rows()
        table = mrml.table_from_rows(self.rt, f"{name} thickness", THICKNESS_COLUMNS,
                                     ([r.get(c) for c in THICKNESS_COLUMNS] for r in rows))
        table.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
        summary = result.summary()
        table.SetAttribute("MSKQuant.KneeMorphSummary", json.dumps(_jsonable(summary)))
        bones = summary["bones"]
        keys = sorted({k for b in bones.values() for k, v in b.items() if isinstance(v, (int, float))})
        bone_table = mrml.table_from_columns(self.rt, f"{name} bones", {
            "bone": list(bones), **{k: [float(bones[b].get(k, float("nan"))) for b in bones] for k in keys},
            "note": [str(bones[b].get("message", "")) for b in bones]})
        bone_table.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
        vol = mrml.volume_from_image(self.rt, result.thickness.map, f"{name} thickness (mm)", color_node=thick_color,
                                     window_level=(THICKNESS_RANGE_MM[1], THICKNESS_RANGE_MM[1] / 2.0))
        vol.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
        nodes = MorphNodes(result, table, bone_table, vol)
        measure = "t2_ms" if result.t2 is not None else "thickness_mm"
        colour = self._color(T2_COLOR_NODE, 100.0) if measure == "t2_ms" else thick_color
        for bone, surf in result.surfaces.items():
            model = self.rt.scene.AddNewNodeByClass("vtkMRMLModelNode", f"{name} {bone} surface")
            model.SetAndObservePolyData(surf.polydata)
            model.CreateDefaultDisplayNodes()
            d = model.GetDisplayNode()
            d.SetActiveScalarName("thickness_mm")
            d.SetScalarVisibility(True)
            d.SetAndObserveColorNodeID(thick_color.GetID())
            d.SetScalarRangeFlag(0)  # manual range
            d.SetScalarRange(*THICKNESS_RANGE_MM)
            model.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
            nodes.models[bone] = model
        for bone, measures in result.maps.items():
            for m, bmap in measures.items():
                img = map_image(bmap)
                c, wl = (colour, (100.0, 50.0)) if m == "t2_ms" else (thick_color, (4.0, 2.0))
                node = mrml.volume_from_image(self.rt, img, f"{name} {bone} map {m}", color_node=c, window_level=wl)
                node.SetAttribute(MODULE_ATTRIBUTE, "KneeT2Segment")
                nodes.map_volumes[f"{bone} {m}"] = node
        return nodes

    def export(self, nodes_or_result, folder: Path) -> List[Path]:
        from .export import write_outputs

        result = nodes_or_result.result if isinstance(nodes_or_result, MorphNodes) else nodes_or_result
        return write_outputs(result, Path(folder))


def map_image(bmap) -> Image:
    """A 2D map as a one-slice volume to view in a slice view: columns along I, rows along -S so that row 0
    is at the top (as in the PNG); the steps (mm or degrees) as spacing."""
    from mskquant.image import Geometry

    rows, cols = bmap.values.shape
    g = Geometry.from_spacing((cols, rows, 1), (float(bmap.columns[2]), float(bmap.rows[2]), 1.0),
                              directions=np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]))
    return Image(np.nan_to_num(bmap.values, nan=0.0).astype(np.float32)[None], g)


def _jsonable(obj):
    from mskquant.cli.common import _clean

    return _clean(obj)
