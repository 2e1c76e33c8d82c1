"""The V_HI cleaning panel: segments overlaid on STIR (and T1W, linked), Segment Editor tools on the
real slice views, live thresholds and V_HI, Save per reader.

Editing keeps the result nested as in the Slicer panel (:class:`VHIWorkflowLib.editing.NestedEditing`
on trame-slicer's own segment editor node): a stroke changes only the selected segment, and an
inflammation segment can only be painted inside the segment it nests in.
"""

from __future__ import annotations

import numpy as np
from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer.segmentation import (BrushDiameterMode, SegmentationEffectErase, SegmentationEffectNoTool,
                                       SegmentationEffectPaint, SegmentationEffectScissors)

from .panels import build_autosave_offer, shown_slice
from .vhi_session import VHIReviewSession

SEGMENTS = ("Disease region", "Normal bone", "Inflammation (sensitive)", "Inflammation (conservative)")
TOOLS = {"none": SegmentationEffectNoTool, "paint": SegmentationEffectPaint, "erase": SegmentationEffectErase,
         "scissors": SegmentationEffectScissors}
SLICE_KEYS = {"ArrowUp": 1, "ArrowRight": 1, "PageUp": 1, "f": 1, "ArrowDown": -1, "ArrowLeft": -1,
              "PageDown": -1, "b": -1}


class VHIPanel:
    def __init__(self, app, case, restore_autosave: bool = False) -> None:
        from VHIWorkflowLib.editing import NestedEditing

        self.app, self.state, self.ed = app, app.state, app.editor
        self.session = VHIReviewSession(app.rt, case, app.reader, restore_autosave)
        self.ed.set_active_segmentation(self.session.segmentation, self.session.result.stir)
        self.nested = NestedEditing(self.ed.editor_node, self.session.segmentation)
        self.nested.begin()
        self._slot = self.ed.segmentation_modified.connect(self._on_modified)
        self._observers = []
        self._handled_mtime = None
        self.set_segment(2)
        self.state.update({"vhi_tool": "none", "vhi_visible": [True] * 4, "brush_mm": 5.0,
                           "autosave_pending": VHIReviewSession.autosave_pending(case, app.reader)
                           and not restore_autosave})

    # --- views ----------------------------------------------------------------------------------
    def _views(self):
        vm = self.app.slicer_app.view_manager
        return vm.get_view("Red"), (vm.get_view("Yellow") if "Yellow" in vm.get_current_view_ids() else None)

    def show(self) -> None:
        from trame_slicer.views import ViewProps

        s = self.session
        self.app.layout_manager.set_layout("two" if s.result.t1 is not None else "one")
        red, yellow = self._views()
        # The acquired plane (semi-coronal for SIJ STIR): the named orientation nearest to it, then the
        # view snaps to the volume's own axes (trame-slicer does this on every resize).
        orientation = ("Sagittal", "Coronal", "Axial")[s.geometry.nearest_world_axis(2)[0]]
        for view, volume, label, color in ((red, s.result.stir, "Red", "#F34A33"), (yellow, s.result.t1, "Yellow",
                                                                                    "#EFD64D")):
            if view is None or volume is None:
                continue
            view.set_view_properties(ViewProps(orientation=orientation, label=label, color=color))
            view.set_background_volume_id(volume.GetID())
            view.set_foreground_volume_id(None)
            view.fit_view_to_content()
            view.get_view_node().RotateToVolumePlane(s.result.stir)  # exactly the acquired slices
        red_node = red.get_view_node()
        self._observers.append((red_node, red_node.AddObserver("ModifiedEvent",
                                                               lambda *_: self._on_slice_moved(red, yellow))))
        self.jump_to_most_inflamed_slice()
        d = s.result.stir.GetDisplayNode()
        lo, hi = (float(x) for x in s.result.stir.GetImageData().GetScalarRange())
        self.state.update({"wl_range": [lo, hi], "window": round(d.GetWindow(), 1), "level": round(d.GetLevel(), 1)})

    def _on_slice_moved(self, red, yellow) -> None:
        """Slider, wheel or keys moved the STIR view: the T1W view follows, the slice number updates."""
        if yellow is not None and abs(yellow.get_slice_value() - red.get_slice_value()) > 1e-6:
            yellow.set_slice_value(red.get_slice_value())
        previous = self.state.slice_index
        self._update_slice_label()
        if self.state.slice_index != previous:
            self.state.flush()

    def jump_to_most_inflamed_slice(self) -> None:
        s = self.session
        mask = np.moveaxis(s.masks()["Inflammation (sensitive)"], s.axis, 0)
        k = int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))
        self.jump_to_slice(k)

    def jump_to_slice(self, k: int) -> None:
        g, s = self.session.geometry, self.session
        ijk = (np.array(g.shape_ijk) - 1) / 2.0
        ijk[2 - s.axis] = k
        r, a, sup = (g.ijk_to_ras @ np.append(ijk, 1.0))[:3]
        self._views()[0].get_view_node().JumpSliceByOffsetting(r, a, sup)
        self._update_slice_label()

    def step_slice(self, step: int) -> None:
        """One acquired slice up (+1) or down (-1), by slice number (the view's offset may run either way)."""
        self._update_slice_label()
        n = self.session.geometry.shape_kji[self.session.axis]
        self.jump_to_slice(int(np.clip(self.state.slice_index + step, 0, n - 1)))

    def _update_slice_label(self) -> None:
        """The acquired slice at the centre of the STIR view (its slice layer's XY -> IJK)."""
        self.state.slice_index = shown_slice(self._views()[0], self.session.result.stir, self.session.axis)

    def on_key(self, key: str) -> None:
        if key in ("[", "]"):
            self.set_brush(max(1.0, min(40.0, float(self.state.brush_mm) + (1 if key == "]" else -1))))
        elif key in SLICE_KEYS:
            self.step_slice(SLICE_KEYS[key])
        elif key in ("z", "Z"):
            self.undo()
        elif key in ("y", "Y"):
            self.redo()

    # --- editing --------------------------------------------------------------------------------
    def set_segment(self, index: int) -> None:
        seg = self.session.segmentation.GetSegmentation()
        segment_id = seg.GetSegmentIdBySegmentName(SEGMENTS[int(index)])
        self.ed.set_active_segment_id(segment_id)
        self.ed.editor_node.SetSelectedSegmentID(segment_id)  # NestedEditing masks by the selected segment
        self.state.vhi_segment = int(index)
        self.set_tool(self.state.vhi_tool or "none")

    def set_tool(self, name: str) -> None:
        effect = self.ed.set_active_effect_type(TOOLS[name])
        if name in ("paint", "erase") and effect is not None:
            effect.set_brush_diameter(float(self.state.brush_mm), BrushDiameterMode.Absolute)
        self.state.vhi_tool = name

    def set_brush(self, mm: float) -> None:
        self.state.brush_mm = float(mm)
        if self.state.vhi_tool in ("paint", "erase"):
            self.set_tool(self.state.vhi_tool)

    def set_visible(self, index: int, visible: bool) -> None:
        seg = self.session.segmentation
        seg.GetDisplayNode().SetSegmentVisibility(seg.GetSegmentation().GetSegmentIdBySegmentName(SEGMENTS[index]),
                                                  bool(visible))
        vis = list(self.state.vhi_visible)
        vis[index] = bool(visible)
        self.state.vhi_visible = vis

    def set_window_level(self, window: float, level: float) -> None:
        d = self.session.result.stir.GetDisplayNode()
        d.SetAutoWindowLevel(False)
        d.SetWindowLevel(float(window), float(level))

    def _on_modified(self, *_):
        """A stroke emits several modified signals: handle the first at once (before the view is rendered
        again, so the figures reach the page first) and skip those that follow with nothing new."""
        if self._labelmaps_mtime() == self._handled_mtime:
            return
        self._apply_modified()

    def _labelmaps_mtime(self) -> int:
        seg = self.session.segmentation.GetSegmentation()
        return max(seg.GetNthSegment(i).GetRepresentation("Binary labelmap").GetMTime()
                   for i in range(seg.GetNumberOfSegments()))

    def _apply_modified(self) -> None:
        if self.session.on_segmentation_modified():
            self._handled_mtime = self._labelmaps_mtime()
            with self.state:
                self.refresh()
            self.app.schedule_autosave()

    def undo(self) -> None:
        if self.app.undo_stack.can_undo():
            self.app.undo_stack.undo()
            self._apply_modified()

    def redo(self) -> None:
        if self.app.undo_stack.can_redo():
            self.app.undo_stack.redo()
            self._apply_modified()

    def restore_automatic(self) -> None:
        self.session.restore_automatic()
        self.app.undo_stack.clear()
        self.refresh()
        self.app.schedule_autosave()

    def save(self) -> None:
        from .panels import save_for_reader

        save_for_reader(self)

    def refresh(self) -> None:
        self.state.update({"vhi": self.session.figures(), "message": self.session.message,
                           "comparison": self.session.reader_comparison(), "dirty": self.session.dirty,
                           "can_undo": self.app.undo_stack.can_undo(), "can_redo": self.app.undo_stack.can_redo()})

    def close(self) -> None:
        self.ed.segmentation_modified.disconnect(self._slot)
        self.ed.set_active_effect_type(SegmentationEffectNoTool)
        self.nested.end()
        for node, tag in self._observers:
            node.RemoveObserver(tag)
        r = self.session.result
        for node in (r.segmentation, r.automatic, r.table, r.stir, r.t1):
            if node is not None and node.GetScene() is not None:
                node.GetScene().RemoveNode(node)


def build_vhi_drawer(app) -> None:
    """Widgets bound to the open VHIPanel (``app.panel``); ids are what the browser tests look for."""
    def panel():
        return app.panel

    build_autosave_offer(app)
    html.Div("Segments", classes="text-subtitle-2")
    for i, name in enumerate(SEGMENTS):
        with html.Div(classes="d-flex align-center"):
            v3.VCheckbox(model_value=(f"vhi_visible[{i}]",), density="compact", hide_details=True, id=f"visible-{i}",
                         update_modelValue=(lambda v, i=i: panel().set_visible(i, v), "[$event]"))
            v3.VBtn(name, id=f"segment-{i}", size="small", variant=(f"vhi_segment === {i} ? 'flat' : 'text'",),
                    color=(f"vhi_segment === {i} ? 'primary' : ''",), click=lambda i=i: panel().set_segment(i))
    html.Div("Tools", classes="text-subtitle-2 mt-2")
    with html.Div(classes="d-flex flex-wrap"):
        for name in TOOLS:
            v3.VBtn(name, id=f"tool-{name}", size="small", variant=(f"vhi_tool === '{name}' ? 'flat' : 'outlined'",),
                    color=(f"vhi_tool === '{name}' ? 'primary' : ''",), classes="ma-1",
                    click=lambda name=name: panel().set_tool(name))
    v3.VSlider(label="Brush (mm)", model_value=("brush_mm",), min=1, max=40, step=1, thumb_label=True,
               hide_details=True, id="brush-size", update_modelValue=(lambda v: panel().set_brush(v), "[$event]"))
    with html.Div(classes="d-flex flex-wrap"):
        v3.VBtn("Undo", id="undo", size="small", classes="ma-1", disabled=("!can_undo",), click=lambda: panel().undo())
        v3.VBtn("Redo", id="redo", size="small", classes="ma-1", disabled=("!can_redo",), click=lambda: panel().redo())
        v3.VBtn("Previous slice", id="slice-prev", size="small", classes="ma-1", click=lambda: panel().step_slice(-1))
        v3.VBtn("Next slice", id="slice-next", size="small", classes="ma-1", click=lambda: panel().step_slice(1))
        v3.VBtn("Most inflamed slice", id="slice-max", size="small", classes="ma-1",
                click=lambda: panel().jump_to_most_inflamed_slice())
    html.Div("slice {{ slice_index }}", id="slice-index", classes="text-caption")
    v3.VSlider(label="Window", model_value=("window",), min=1, max=("wl_range[1] - wl_range[0]",), hide_details=True,
               id="window", update_modelValue=(lambda v: panel().set_window_level(v, app.state.level), "[$event]"))
    v3.VSlider(label="Level", model_value=("level",), min=("wl_range[0]",), max=("wl_range[1]",), hide_details=True,
               id="level", update_modelValue=(lambda v: panel().set_window_level(app.state.window, v), "[$event]"))
    with v3.VTable(density="compact", id="vhi-table"):
        with html.Tbody():
            for label, key in (("V_HI sensitive (mL)", "sensitive_ml"), ("sensitive voxels", "sensitive_voxels"),
                               ("V_HI conservative (mL)", "conservative_ml"),
                               ("conservative voxels", "conservative_voxels"), ("Q1", "q1"), ("Q3", "q3"),
                               ("n", "n"), ("L_lower", "lower"), ("L_upper", "upper"), ("ROI voxels", "roi_voxels")):
                with html.Tr():
                    html.Td(label)
                    html.Td(f"{{{{ vhi.{key} }}}}", id=f"vhi-{key.replace('_', '-')}")
    html.Div("Readers {{ comparison.a }} / {{ comparison.b }}: Dice {{ comparison.dice }}, "
             "{{ comparison.volume_a_ml }} / {{ comparison.volume_b_ml }} mL", id="reader-comparison",
             v_if=("comparison",), classes="text-caption")
    with html.Div(classes="d-flex flex-wrap mt-2"):
        v3.VBtn("Save", id="save", color="primary", classes="ma-1", click=lambda: panel().save())
        v3.VBtn("Restore automatic result", id="restore-automatic", size="small", classes="ma-1",
                click=lambda: panel().restore_automatic())
