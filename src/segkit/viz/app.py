"""`segkit viz app`: the Dash slice viewer. It only composes: `Viewer` does the loading and rendering.

Build it with `create_app`; nothing is created at import. Slices are rendered on the server to PNG data
URIs and shown as a plotly image, so hovering reports the pixel and the server answers with the voxel,
its intensities and labels. The page sends case ids, never paths (see `CaseIndex.resolve`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.conventions import MODALITIES, OVERLAY_ALPHA, WINDOW_PERCENTILES
from segkit.errors import SegkitError
from segkit.viz.render import AXES, ERROR_COLOURS, ERROR_NAMES, legend
from segkit.viz.viewer import ALL_MODALITIES, CaseIndex, Rendered, Viewer, ViewRequest, finite_number

if TYPE_CHECKING:
    import dash

ASSETS = Path(__file__).parent / "assets"
STEP_BUTTONS = {"slice-prev10": -10, "slice-prev": -1, "slice-next": 1, "slice-next10": 10}


def create_app(
    index: CaseIndex, *, cache_cases: int = 4, percentiles: tuple[float, float] = WINDOW_PERCENTILES
) -> dash.Dash:
    """Create the slice viewer for the cases of `index`.

    Args:
        index: The cases (and predictions) the page may show.
        cache_cases: Cases kept loaded.
        percentiles: Intensity window percentiles.

    Returns:
        The Dash app; ``app.server`` is its WSGI (Flask) application.
    """
    import dash
    from dash import Input, Output, State, ctx, dcc, html

    viewer = Viewer(index, cache_cases=cache_cases, percentiles=percentiles)
    app = dash.Dash(__name__, title="segkit viewer", **dash_options())
    first = next(iter(index.cases))
    app.layout = html.Div(
        className="segkit",
        children=[
            html.H2("segkit viewer"),
            html.Div(f"roots: {', '.join(str(r) for r in index.roots)}", className="muted"),
            html.Div(
                className="controls",
                children=[
                    control("case", dcc.Dropdown(id="case", options=case_options(index), value=first, clearable=False)),
                    control(
                        "modality",
                        dcc.RadioItems(
                            id="modality", options=[*MODALITIES, ALL_MODALITIES], value=ALL_MODALITIES, inline=True
                        ),
                    ),
                    control("plane", dcc.RadioItems(id="axis", options=list(AXES), value="axial", inline=True)),
                    control(
                        "overlay",
                        dcc.Checklist(
                            id="overlay", options=[{"label": "ground truth", "value": "on"}], value=["on"], inline=True
                        ),
                    ),
                    control(
                        "style",
                        dcc.RadioItems(id="style", options=["fill", "contour", "both"], value="fill", inline=True),
                    ),
                    control(
                        "opacity",
                        dcc.Slider(
                            id="alpha",
                            min=0,
                            max=1,
                            step=0.05,
                            value=OVERLAY_ALPHA,
                            marks=None,
                            allow_direct_input=False,
                        ),
                    ),
                    control(
                        "prediction",
                        dcc.RadioItems(id="pred-mode", options=_pred_options(index, first), value="off", inline=True),
                    ),
                ],
            ),
            html.Div(
                className="slice-row",
                children=[
                    html.Button("−10", id="slice-prev10", title="PageDown / Shift+←"),
                    html.Button("−1", id="slice-prev", title="← or ↓"),
                    html.Div(
                        dcc.Slider(id="slice", min=0, max=1, step=1, value=0, marks=None, updatemode="drag"),
                        className="slice-slider",
                    ),
                    html.Button("+1", id="slice-next", title="→ or ↑"),
                    html.Button("+10", id="slice-next10", title="PageUp / Shift+→"),
                    html.Span(id="slice-label", className="muted"),
                ],
            ),
            html.Div(id="status", role="status"),
            dcc.Graph(id="view", config={"displaylogo": False, "scrollZoom": True}, figure=_empty_figure()),
            html.Div(id="hover-info", className="hover-info"),
            _legend(),
        ],
    )

    @app.callback(
        Output("slice", "max"),
        Output("slice", "value"),
        Input("case", "value"),
        Input("axis", "value"),
        *(Input(name, "n_clicks") for name in STEP_BUTTONS),
        State("slice", "value"),
        State("slice", "max"),
    )
    def _slice_range(case_id: Any, axis: Any, *args: Any) -> tuple[Any, Any]:
        answer = slice_range(viewer, case_id, axis, ctx.triggered_id, args[-2], args[-1])
        return (dash.no_update, dash.no_update) if answer is None else answer

    @app.callback(
        Output("pred-mode", "options"),
        Output("pred-mode", "value"),
        Input("case", "value"),
        State("pred-mode", "value"),
    )
    def _pred_availability(case_id: Any, mode: Any) -> tuple[Any, Any]:
        options = _pred_options(index, case_id)
        available = {o["value"] for o in options if not o.get("disabled")}
        return options, mode if mode in available else "off"

    @app.callback(
        Output("view", "figure"),
        Output("status", "children"),
        Output("slice-label", "children"),
        Input("case", "value"),
        Input("modality", "value"),
        Input("axis", "value"),
        Input("slice", "value"),
        Input("overlay", "value"),
        Input("alpha", "value"),
        Input("style", "value"),
        Input("pred-mode", "value"),
    )
    def _render(*values: Any) -> tuple[Any, Any, Any]:
        return render_view(viewer, *values)

    @app.callback(
        Output("hover-info", "children"),
        Input("view", "hoverData"),
        State("case", "value"),
        State("modality", "value"),
        State("axis", "value"),
        State("slice", "value"),
        State("overlay", "value"),
        State("alpha", "value"),
        State("style", "value"),
        State("pred-mode", "value"),
    )
    def _hover(hover: Any, *values: Any) -> str:
        return probe_view(viewer, hover, *values)

    app.segkit_viewer = viewer  # type: ignore[attr-defined]  # for tests and notebooks
    return app


def dash_options() -> dict[str, Any]:
    """Constructor options shared by segkit's Dash apps: local assets only, no MCP endpoint."""
    import inspect

    import dash

    options: dict[str, Any] = {"update_title": None, "assets_folder": str(ASSETS), "serve_locally": True}
    # Dash 4 can expose callbacks to AI agents over MCP (off by default, but an environment variable can
    # turn it on); these apps never do. Older Dash has no such option.
    if "enable_mcp" in inspect.signature(dash.Dash.__init__).parameters:
        options["enable_mcp"] = False
    return options


def make_request(
    case_id: Any, modality: Any, axis: Any, index: Any, overlay: Any, alpha: Any, style: Any, pred_mode: Any
) -> ViewRequest:
    """Validate the values a page sent and build a `ViewRequest` (the case id is checked by the index).

    Raises:
        SegkitError: A value of the wrong type or outside its choices.
    """
    from segkit.errors import DataError

    if modality not in (*MODALITIES, ALL_MODALITIES):
        msg = f"unknown modality {str(modality)[:40]!r}"
        raise DataError(msg)
    if style not in ("fill", "contour", "both"):
        msg = f"unknown overlay style {str(style)[:40]!r}"
        raise DataError(msg)
    if pred_mode not in ("off", "beside", "errors"):
        msg = f"unknown prediction mode {str(pred_mode)[:40]!r}"
        raise DataError(msg)
    # Values are checked here and clamped by the viewer: NaN, infinities or 1e400 become a message.
    number = int(finite_number(0 if index is None else index, "slice"))
    opacity = min(max(finite_number(OVERLAY_ALPHA if alpha is None else alpha, "opacity"), 0.0), 1.0)
    show_overlay = isinstance(overlay, list) and "on" in overlay
    return ViewRequest(str(case_id), modality, _axis(axis), number, show_overlay, opacity, style, pred_mode)


def slice_range(
    viewer: Viewer, case_id: Any, axis: Any, trigger: Any, current: Any, old_max: Any
) -> tuple[int, int] | None:
    """The slice slider callback: its new maximum and value, or None to leave it as it is.

    A step button moves the current slice; a new case keeps the relative position; anything else goes
    to the middle. Values that are not finite numbers count as absent, never as an exception.
    """
    try:
        count = viewer.slice_count(case_id, _axis(axis))
    except SegkitError:
        return None
    try:
        position: float | None = finite_number(current, "slice")
    except SegkitError:
        position = None
    try:
        scale = finite_number(old_max, "slice maximum")
    except SegkitError:
        scale = 0.0
    if trigger in STEP_BUTTONS:
        value = int(position or 0) + STEP_BUTTONS[trigger]
    elif trigger == "case" and position is not None and scale > 0:
        value = round(position / scale * (count - 1))  # keep the relative position
    else:
        value = count // 2
    return count - 1, int(min(max(value, 0), count - 1))


def render_view(viewer: Viewer, *values: Any) -> tuple[dict[str, Any], Any, str]:
    """The render callback: figure, status and slice label; problems become a message, never an exception."""
    from dash import html

    from segkit.viz.export import png_data_uri

    case_id = values[0]
    try:
        request = make_request(*values)
        viewer.index.resolve(request.case_id)
        rendered = viewer.render(request)
    except SegkitError as err:
        return _empty_figure(), html.Div(str(err), className="error"), ""
    problems = viewer.index.problems(request.case_id)
    status = html.Div("; ".join(problems), className="warning") if problems else ""
    figure = _figure(png_data_uri(rendered.image), rendered, uirevision=f"{case_id}|{request.axis}|{request.modality}")
    label = f"{request.axis} {rendered.index}/{rendered.count - 1} (file index {rendered.file_index})"
    return figure, status, label


def probe_view(viewer: Viewer, hover: Any, *values: Any) -> str:
    """The hover callback: describe the voxel under the cursor (empty when there is nothing to say)."""
    try:
        point = (hover or {}).get("points", [{}])[0]
        col, row = round(float(point["x"])), round(float(point["y"]))
        request = make_request(*values)
        return viewer.probe(request, row, col)
    except (SegkitError, KeyError, IndexError, TypeError, ValueError, AttributeError):
        return ""


def _axis(value: Any) -> Any:
    from segkit.errors import DataError

    if value not in AXES:
        msg = f"unknown plane {str(value)[:40]!r}"
        raise DataError(msg)
    return value


def control(title: str, component: Any, **kwargs: Any) -> Any:
    """A titled control of the controls bar (shared by segkit's Dash apps); `kwargs` go to its ``Div``."""
    from dash import html

    return html.Div([html.Div(title, className="control-title"), component], className="control", **kwargs)


def case_options(index: CaseIndex, *, note_missing_seg: bool = False) -> list[dict[str, str]]:
    """Options of a case dropdown (shared by segkit's Dash apps): ``<case>  (<root>)`` plus missing files.

    Args:
        index: The cases.
        note_missing_seg: Also mark cases without a segmentation (the statistics inspector does; in the
            viewer an unlabelled case is normal).
    """
    options = []
    for case_id, case in index.cases.items():
        missing = list(case.missing_modalities)
        if note_missing_seg and case.seg is None:
            missing.append("seg")
        note = f"  ⚠ missing {', '.join(missing)}" if missing else ""
        options.append({"label": f"{case_id}  ({case.root.name}){note}", "value": case_id})
    return options


def _pred_options(index: CaseIndex, case_id: Any) -> list[dict[str, Any]]:
    has_pred = isinstance(case_id, str) and case_id in index.predictions
    return [
        {"label": "off", "value": "off"},
        {"label": "beside", "value": "beside", "disabled": not has_pred},
        {"label": "errors over image", "value": "errors", "disabled": not has_pred},
    ]


def _empty_figure() -> dict[str, Any]:
    return {
        "data": [],
        "layout": {
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
            "height": 200,
        },
    }


def _figure(uri: str, rendered: Rendered, *, uirevision: str) -> dict[str, Any]:
    height, width = rendered.image.shape[:2]
    scale = min(3.0, 640.0 / height, 1400.0 / width)  # enlarge small volumes, keep big ones on screen
    return {
        "data": [{"type": "image", "source": uri, "hoverinfo": "none", "x0": 0, "y0": 0, "dx": 1, "dy": 1}],
        "layout": {
            "xaxis": {"visible": False, "range": [-0.5, width - 0.5]},
            "yaxis": {"visible": False, "range": [height - 0.5, -0.5], "scaleanchor": "x"},
            "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
            "height": max(200, round(height * scale)),
            "width": max(200, round(width * scale)),
            "dragmode": "pan",
            "uirevision": uirevision,
            "paper_bgcolor": "#111",
            "plot_bgcolor": "#111",
        },
    }


def _legend() -> Any:
    from dash import html

    def swatch(name: str, colour: tuple[int, int, int]) -> Any:
        return html.Span(
            [html.Span(className="swatch", style={"background": f"rgb{colour}"}), name], className="legend-item"
        )

    labels = [swatch(name, colour) for name, colour in legend()]
    errors = [swatch(ERROR_NAMES[k], ERROR_COLOURS[k]) for k in ERROR_NAMES]
    return html.Div(
        [html.Div(["labels: ", *labels]), html.Div(["errors: ", *errors])],
        className="legend",
    )
