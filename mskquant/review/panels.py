"""One review panel per pipeline (``kind`` of a case folder)."""

from __future__ import annotations


def save_for_reader(panel) -> None:
    """Save the panel's session as the app's reader (per-reader folder), report it, refresh the case list."""
    from mskquant.errors import MSKQuantError

    try:
        folder = panel.session.save()
        panel.state.status = f"saved as reader {panel.app.reader} in {folder.relative_to(panel.session.case.folder)}"
    except MSKQuantError as exc:
        panel.state.message = str(exc)
    panel.state.cases = panel.app.case_rows()
    panel.refresh()


def shown_slice(view, volume_node, axis_kji: int) -> int:
    """The acquired slice of ``volume_node`` at the centre of a slice view (its layer's XY -> IJK)."""
    layer = view.get_volume_layer_logic(volume_node)
    w, h, _ = view.get_view_node().GetDimensions()
    ijk = layer.GetXYToIJKTransform().TransformPoint(w / 2.0, h / 2.0, 0.0)
    return int(round(ijk[2 - axis_kji]))


def build_autosave_offer(app) -> None:
    """The offer to bring back an earlier session's unsaved edits (shown while ``autosave_pending``)."""
    from trame.widgets import html
    from trame.widgets import vuetify3 as v3

    with v3.VAlert(v_if=("autosave_pending",), type="warning", density="compact", classes="mb-2"):
        html.Div("Unsaved edits of a previous session were kept.")
        v3.VBtn("Restore them", id="restore-autosave", size="small",
                click=lambda: app.go_to_case(app.state.case_index, restore_autosave=True))


def panel_for(kind: str):
    if kind == "vhi":
        from .vhi_panel import VHIPanel

        return VHIPanel
    if kind == "pain-cam":
        from .cam_panel import CAMPanel

        return CAMPanel
    if kind == "knee-t2":
        from .knee_panel import KneePanel

        return KneePanel
    from mskquant.errors import InputError

    raise InputError(f"Reviewing {kind} results in the browser is not available yet: 'mskquant review' opens "
                     f"vhi and pain-cam case folders.")


def build_drawers(app, kinds) -> None:
    """The drawer of every pipeline present, each shown while a case of its kind is open."""
    from trame.widgets import vuetify3 as v3

    for kind in sorted(kinds):
        if kind == "vhi":
            from .vhi_panel import build_vhi_drawer

            with v3.VContainer(v_if=("case_kind === 'vhi'",), classes="pa-2"):
                build_vhi_drawer(app)
        elif kind == "pain-cam":
            from .cam_panel import build_cam_drawer

            with v3.VContainer(v_if=("case_kind === 'pain-cam'",), classes="pa-2"):
                build_cam_drawer(app)
        elif kind == "knee-t2":
            from .knee_panel import build_knee_drawer

            with v3.VContainer(v_if=("case_kind === 'knee-t2'",), classes="pa-2"):
                build_knee_drawer(app)
