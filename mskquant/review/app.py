"""The review server: one Slicer scene (trame-slicer's SlicerApp) shared by the views and the modules'
logic, a case list, and one review panel per pipeline.

The scene is made by :class:`trame_slicer.core.SlicerApp` (it must be: its views and segment editor
observe it) and handed to the project logic through :func:`mskquant.headless.runtime_on`, which adds
the module logics the project needs, so there is one scene and no copy of any data.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import List, Optional

from trame.app import TrameApp
from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
from undo_stack import UndoStack

from mskquant.headless import runtime_on

from .cases import Case, first_unreviewed
from .security import AccessPolicy

AUTOSAVE_DELAY_S = 2.0
EVENT_THROTTLE_S = 0.05
FRAMES_PER_S = 2.0
FRAME_QUALITY = 90  # the encoder's still quality
LAYOUTS = {
    "one": Layout(LayoutDirection.Horizontal, [ViewLayoutDefinition.axial_view("Red")]),
    "two": Layout(LayoutDirection.Horizontal, [ViewLayoutDefinition.axial_view("Red"),
                                               ViewLayoutDefinition.slice_view("Axial", label="Yellow",
                                                                               color="#EFD64D")]),
}


class ReviewApp(TrameApp):
    """Cases, navigation, security and autosave; the pipeline panel does the rest."""

    def __init__(self, cases: List[Case], reader: str, policy: AccessPolicy, server=None) -> None:
        super().__init__(server)
        self.cases, self.reader, self.policy = cases, reader, policy
        self.slicer_app = SlicerApp()
        self.rt = runtime_on(self.slicer_app.scene, self.slicer_app.app_logic)
        # Software rendering on a few cores takes 0.05-0.3 s a frame and blocks the server meanwhile. So: mouse
        # moves closer than 50 ms apart are merged in the browser, a view renders at most FRAMES_PER_S times a
        # second (events in between are handled without a frame), and each frame is encoded once at full
        # quality (no second "still" frame after an interaction). Measured on the shared 2-core machine
        # (benchmarks/bench_review.py): at 2 frames a second a stroke's V_HI is on screen in ~0.3 s; at 3 or 4
        # the frames take all the time under load and it waits 1.3-2 s.
        register_rca_factories(self.slicer_app.view_manager, self.server, rca_event_throttle_s=EVENT_THROTTLE_S,
                               target_fps=FRAMES_PER_S, blur_fps=FRAMES_PER_S, interactive_quality=FRAME_QUALITY)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout_dict(LAYOUTS)
        self.layout_manager.set_layout("one")
        self.undo_stack = UndoStack(undo_limit=50)
        self.editor.set_undo_stack(self.undo_stack)
        self.session = None
        self.panel = None
        self._autosave_handle: Optional[asyncio.TimerHandle] = None
        self.server.controller.on_server_bind.add(lambda wslink: policy.install(wslink.app))
        self.state.update({"trame__title": "MSKQuant Review", "reader": reader, "busy": False, "status": "",
                           "case_index": 0, "cases": [], "autosave_pending": False, "message": ""})
        self.open_case(first_unreviewed(cases, reader))
        self._build_ui()
        self.panel.show()

    @property
    def editor(self):
        return self.slicer_app.segmentation_editor

    # --- cases ----------------------------------------------------------------------------------
    def case_rows(self) -> list:
        return [{"index": i, "id": c.id, "kind": c.kind, "measure": c.main_measure(),
                 "reviewed": c.reviewed_by(self.reader)} for i, c in enumerate(self.cases)]

    def open_case(self, index: int, restore_autosave: bool = False) -> None:
        from .panels import panel_for

        t0 = time.monotonic()
        self.close_case()
        case = self.cases[index]
        self.panel = panel_for(case.kind)(self, case, restore_autosave)
        self.session = self.panel.session
        self.state.update({"case_index": index, "case_id": case.id, "case_kind": case.kind,
                           "cases": self.case_rows(), "status": f"opened in {time.monotonic() - t0:.1f} s"})
        self.panel.refresh()

    def close_case(self) -> None:
        if self.panel is not None:
            self.autosave_now()
            self.panel.close()
        self.undo_stack.clear()
        self.panel = self.session = None

    async def go_to_case(self, index: int, restore_autosave: bool = False) -> None:
        if not 0 <= index < len(self.cases):
            return
        self.state.busy, self.state.status = True, "loading case..."
        self.state.flush()
        await asyncio.sleep(0.05)  # let the progress bar reach the browser before the load blocks
        try:
            self.open_case(index, restore_autosave)
            self.panel.show()
        finally:
            self.state.busy = False

    # --- autosave -------------------------------------------------------------------------------
    def schedule_autosave(self) -> None:
        if self._autosave_handle is not None:
            self._autosave_handle.cancel()
        try:
            self._autosave_handle = asyncio.get_running_loop().call_later(AUTOSAVE_DELAY_S, self.autosave_now)
        except RuntimeError:  # no loop (tests driving the app without a server)
            self._autosave_handle = None

    def autosave_now(self) -> None:
        self._autosave_handle = None
        if self.session is None:
            return
        try:
            if self.session.autosave() is not None:
                self.state.autosave_time = time.strftime("%H:%M:%S")
        except Exception as exc:  # an autosave must never take the editor down
            print(f"mskquant review: autosave failed: {exc}", file=sys.stderr)

    # --- UI -------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        with SinglePageWithDrawerLayout(self.server, width=330) as self.ui:
            self.ui.title.set_text("MSKQuant Review")
            with self.ui.toolbar:
                v3.VSpacer()
                html.Span("{{ case_id }} ({{ case_kind }}) - reader {{ reader }}", id="case-title", classes="mx-2")
                v3.VBtn("Previous", id="prev-case", click=lambda: self.go_to_case(self.state.case_index - 1),
                        disabled=("case_index <= 0",), variant="text")
                v3.VBtn("Next", id="next-case", click=lambda: self.go_to_case(self.state.case_index + 1),
                        disabled=("case_index >= cases.length - 1",), variant="text")
            with self.ui.drawer:
                v3.VProgressLinear(indeterminate=True, v_show=("busy",), id="progress")
                html.Div("{{ status }}", id="status", classes="text-caption px-3")
                html.Div("{{ message }}", id="message", classes="text-caption text-error px-3", v_show=("message",))
                from .panels import build_drawers

                build_drawers(self, {c.kind for c in self.cases})
                with v3.VList(density="compact", id="case-list", v_show=("cases.length > 1",)):
                    v3.VListSubheader("Cases")
                    v3.VListItem(v_for="c in cases", key="c.index", click=(self.go_to_case, "[c.index]"),
                                 title=("c.id",), subtitle=("c.measure + (c.reviewed ? ' - reviewed' : '')",),
                                 active=("c.index === case_index",))
            with self.ui.content:
                with html.Div(style="height: 100%;", tabindex=0, id="views",
                              keydown=(self.on_key, "[$event.key]")):
                    self.layout_manager.initialize_layout_grid(self.ui)

    def on_key(self, key: str) -> None:
        if self.panel is not None:
            self.panel.on_key(key)


def serve(path: Path, cases: List[Case], reader: str, host: str, port: int) -> int:
    policy = AccessPolicy(path, host)
    app = ReviewApp(cases, reader, policy)
    query = f"?token={policy.token}" if policy.needs_token else ""
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host

    def ready(**_):
        print(f"MSKQuant Review of {path} (reader {reader}) at http://{shown_host}:{app.server.port}/{query}",
              flush=True)
        if policy.needs_token:
            print(f"Listening on {host}: open the address above (the access token is required from any other "
                  f"machine too).", flush=True)

    app.server.controller.on_server_ready.add(ready)
    sys.argv = sys.argv[:1]  # the server's own command-line parser must not read the review's options
    app.server.start(port=port, host=host, open_browser=False, timeout=0, show_connection_info=False)
    app.close_case()
    return 0
