"""The knee T2 review panel: the MESE echo with the T2 map (0-100 ms) and the 12 subregions, the
subregion table, the femoral cartilage editable (paint / erase) and "Recompute T2"."""

from __future__ import annotations

import asyncio

from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer.segmentation import (BrushDiameterMode, SegmentationEffectErase, SegmentationEffectNoTool,
                                       SegmentationEffectPaint)

from .knee_session import KneeReviewSession
from .panels import build_autosave_offer

TOOLS = {"none": SegmentationEffectNoTool, "paint": SegmentationEffectPaint, "erase": SegmentationEffectErase}


class KneePanel:
    def __init__(self, app, case, restore_autosave: bool = False) -> None:
        self.app, self.state, self.ed = app, app.state, app.editor
        self.session = KneeReviewSession(app.rt, case, app.reader, restore_autosave)
        r = self.session.reopened
        self.ed.set_active_segmentation(r.cartilage, r.echo)
        self.ed.editor_node.SetOverwriteMode(self.ed.editor_node.OverwriteNone)  # subregions stay as computed
        self._slot = self.ed.segmentation_modified.connect(self._on_modified)
        seg = r.cartilage.GetSegmentation()
        self.ed.set_active_segment_id(seg.GetSegmentIdBySegmentName(self.session.segment))
        self.state.update({"knee_tool": "none", "knee_brush_mm": 3.0, "t2_opacity": 0.7, "knee_subregions": True,
                           "autosave_pending": KneeReviewSession.autosave_pending(case, app.reader)
                           and not restore_autosave})

    def show(self) -> None:
        from trame_slicer.views import ViewProps

        self.app.layout_manager.set_layout("one")
        r = self.session.reopened
        view = self.app.slicer_app.view_manager.get_view("Red")
        g = self.session.geometry
        axis = int(self.session.reopened.summary.get("subregions", {}).get("slice_axis", 0))
        orientation = ("Sagittal", "Coronal", "Axial")[g.nearest_world_axis(2 - axis)[0]]
        view.set_view_properties(ViewProps(orientation=orientation, label="Red", color="#F34A33"))
        view.set_background_volume_id(r.echo.GetID())
        view.set_foreground_volume_id(r.t2.GetID())
        view.set_foreground_opacity(float(self.state.t2_opacity))
        view.fit_view_to_content()
        view.get_view_node().RotateToVolumePlane(r.echo)
        display = r.cartilage.GetDisplayNode()
        display.SetOpacity2DFill(0.0)  # outlines only: the T2 colours show inside them
        display.SetOpacity2DOutline(1.0)
        self.jump_to_cartilage()

    def jump_to_cartilage(self) -> None:
        import numpy as np

        mask = self.session.cartilage_mask()
        if not mask.any():
            return
        kji = np.argwhere(mask).mean(axis=0)
        ras = self.session.geometry.ijk_to_ras @ np.array([kji[2], kji[1], kji[0], 1.0])
        node = self.app.slicer_app.view_manager.get_view("Red").get_view_node()
        node.SetJumpModeToCentered()
        node.JumpSlice(*ras[:3])  # the cartilage in the middle of the view

    def set_opacity(self, value: float) -> None:
        self.state.t2_opacity = float(value)
        self.app.slicer_app.view_manager.get_view("Red").set_foreground_opacity(float(value))

    def set_tool(self, name: str) -> None:
        effect = self.ed.set_active_effect_type(TOOLS[name])
        if name != "none" and effect is not None:
            effect.set_brush_diameter(float(self.state.knee_brush_mm), BrushDiameterMode.Absolute)
        self.state.knee_tool = name

    def _on_modified(self, *_):
        with self.state:
            self.session.dirty = True
            self.refresh()
        self.app.schedule_autosave()

    async def recompute(self) -> None:
        from mskquant.errors import MSKQuantError

        self.state.busy, self.state.status = True, "recomputing T2..."
        self.state.flush()
        await asyncio.sleep(0.05)  # the progress bar reaches the page before the fit blocks
        try:
            self.session.recompute()
            self.state.status = "T2 recomputed"
        except MSKQuantError as exc:
            self.state.message = str(exc)
        finally:
            self.state.busy = False
        self.refresh()

    def save(self) -> None:
        from .panels import save_for_reader

        save_for_reader(self)

    def on_key(self, key: str) -> None:
        pass

    def refresh(self) -> None:
        self.state.knee = self.session.figures()

    def close(self) -> None:
        self.ed.segmentation_modified.disconnect(self._slot)
        self.ed.set_active_effect_type(SegmentationEffectNoTool)
        self.app.slicer_app.view_manager.get_view("Red").set_foreground_volume_id(None)
        self.session.close()


def build_knee_drawer(app) -> None:
    def panel():
        return app.panel

    build_autosave_offer(app)
    html.Div("Femoral cartilage: {{ knee.cartilage_voxels }} voxels", id="knee-cartilage", classes="text-body-2")
    with html.Div(classes="d-flex flex-wrap"):
        for name in TOOLS:
            v3.VBtn(name, id=f"knee-tool-{name}", size="small", classes="ma-1",
                    variant=(f"knee_tool === '{name}' ? 'flat' : 'outlined'",),
                    color=(f"knee_tool === '{name}' ? 'primary' : ''",), click=lambda name=name: panel().set_tool(name))
    v3.VSlider(label="T2 opacity", model_value=("t2_opacity",), min=0, max=1, step=0.05, hide_details=True,
               id="t2-opacity", update_modelValue=(lambda v: panel().set_opacity(v), "[$event]"))
    with html.Div(classes="d-flex flex-wrap"):
        v3.VBtn("Recompute T2", id="knee-recompute", color="primary", classes="ma-1",
                click=lambda: panel().recompute())
        v3.VBtn("Save", id="knee-save", classes="ma-1", click=lambda: panel().save())
    html.Div("T2 colour map 0-100 ms", classes="text-caption")
    with v3.VTable(density="compact", id="knee-table"):
        with html.Tbody():
            with html.Tr(v_for="(r, i) in knee.regions", key="i"):
                html.Td("{{ r.region }}")
                html.Td("{{ r.mean }}", id=("`knee-t2-${i}`",))
                html.Td("{{ r.n }}")
