"""The pain-CAM review panel: left and right knee side by side with their CAMs (heat colours, opacity),
jump to each knee's max-CAM slice, probability and painful side, and the reader's verdict."""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from .cam_session import VERDICTS, CAMReviewSession

SIDE_VIEWS = (("left", "Red", "#F34A33"), ("right", "Yellow", "#EFD64D"))


class CAMPanel:
    def __init__(self, app, case, restore_autosave: bool = False) -> None:
        self.app, self.state = app, app.state
        self.session = CAMReviewSession(app.rt, case, app.reader)
        self.state.update({"cam_opacity": 0.6, "cam_verdict": self.session.verdict(),
                           "cam_shown_slice": {"left": None, "right": None}})

    def _views(self):
        vm = self.app.slicer_app.view_manager
        return {side: vm.get_view(tag) for side, tag, _ in SIDE_VIEWS}

    def show(self) -> None:
        from trame_slicer.views import ViewProps

        from mskquant import mrml

        self.app.layout_manager.set_layout("two")
        r = self.session.result
        for side, tag, color in SIDE_VIEWS:
            view = self._views()[side]
            knee = r.knees[side]
            axis = int(self.session.summary["preprocessing"][side]["slice_axis_kji"])
            orientation = ("Sagittal", "Coronal", "Axial")[mrml.geometry_of(knee).nearest_world_axis(2 - axis)[0]]
            view.set_view_properties(ViewProps(orientation=orientation, label=tag, color=color))
            view.set_background_volume_id(knee.GetID())
            view.set_foreground_volume_id(r.cams[side].GetID())
            view.fit_view_to_content()
            view.get_view_node().RotateToVolumePlane(knee)
        self.set_opacity(self.state.cam_opacity)
        self.jump_to_max_cam()

    def set_opacity(self, value: float) -> None:
        self.state.cam_opacity = float(value)
        for view in self._views().values():
            view.set_foreground_opacity(float(value))

    def jump_to_max_cam(self) -> None:
        from .panels import shown_slice

        shown = {}
        for side, view in self._views().items():
            view.get_view_node().JumpSliceByOffsetting(*self.session.hot_spot(side))
            axis = int(self.session.summary["preprocessing"][side]["slice_axis_kji"])
            shown[side] = shown_slice(view, self.session.result.knees[side], axis)
        self.state.cam_shown_slice = shown  # read back from the views: where the jump really landed

    def save(self, verdict: str) -> None:
        from mskquant.errors import MSKQuantError

        try:
            path = self.session.save(verdict)
            self.state.cam_verdict = verdict
            self.state.status = f"review saved as reader {self.app.reader} in {path.name}"
        except MSKQuantError as exc:
            self.state.message = str(exc)
        self.state.cases = self.app.case_rows()

    def on_key(self, key: str) -> None:
        pass

    def refresh(self) -> None:
        self.state.cam = self.session.figures()

    def close(self) -> None:
        for view in self._views().values():
            view.set_foreground_volume_id(None)
        r = self.session.result
        for node in (*r.knees.values(), *r.cams.values()):
            if node.GetScene() is not None:
                node.GetScene().RemoveNode(node)


def build_cam_drawer(app) -> None:
    def panel():
        return app.panel

    html.Div("Right knee painful with p = {{ cam.p_right_painful }}: {{ cam.painful_side }} knee",
             id="cam-result", classes="text-body-2 mb-2")
    html.Div("max-CAM slice: left {{ cam.max_cam_slice.left }}, right {{ cam.max_cam_slice.right }}",
             classes="text-caption")
    v3.VSlider(label="CAM opacity", model_value=("cam_opacity",), min=0, max=1, step=0.05, hide_details=True,
               id="cam-opacity", update_modelValue=(lambda v: panel().set_opacity(v), "[$event]"))
    html.Div("opacity {{ cam_opacity }}", id="cam-opacity-value", classes="text-caption")
    v3.VBtn("Max-CAM slice", id="cam-max", size="small", classes="ma-1", click=lambda: panel().jump_to_max_cam())
    html.Div("shown: left {{ cam_shown_slice.left }}, right {{ cam_shown_slice.right }}", id="cam-shown",
             classes="text-caption")
    html.Div("Where does the CAM point?", classes="text-subtitle-2 mt-2")
    for i, verdict in enumerate(VERDICTS):
        v3.VBtn(verdict, id=f"cam-verdict-{i}", size="small", classes="ma-1", block=True,
                variant=(f"cam_verdict === '{verdict}' ? 'flat' : 'outlined'",),
                color=(f"cam_verdict === '{verdict}' ? 'primary' : ''",),
                click=lambda verdict=verdict: panel().save(verdict))
    html.Div("your verdict: {{ cam_verdict || 'none yet' }}", id="cam-verdict", classes="text-caption")
