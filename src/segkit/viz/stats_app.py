"""`segkit viz stats`: the statistics inspector (Dash). It composes `segkit.data.stats` and the viewer.

Two tabs. *Case statistics*: a preview of the case (slice slider), per-modality intensity histograms and
the label volume table, computed for the chosen case on demand. *Dataset statistics*: shapes and
spacings, intensity percentiles per modality, label volume distributions and the cases with missing or
unreadable files, computed for all cases in a process pool and cached as JSON (*Recompute*, *Load
cached*). As in the viewer, the page sends case ids only; files come from a server-side index.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.conventions import MODALITIES
from segkit.data.stats import (
    PERCENTILES,
    SUMMARY_REGIONS,
    CaseStats,
    StatsResult,
    case_statistics,
    dataset_stats,
    load_cached,
    percentile_key,
)
from segkit.errors import SegkitError
from segkit.viz.app import case_options, control, dash_options
from segkit.viz.viewer import ALL_MODALITIES, CaseIndex, Viewer, ViewRequest, finite_number

if TYPE_CHECKING:
    import dash


@dataclass(frozen=True)
class StatsSettings:
    """Where the inspector's numbers come from.

    Attributes:
        roots: Data roots.
        cache_dir: Cache folder of dataset statistics.
        bins: Histogram bins.
        workers: Processes for *Recompute* (0: one per core, at most 8).
    """

    roots: tuple[Path, ...]
    cache_dir: Path
    bins: int = 64
    workers: int = 0


class StatsService:
    """Server side of the inspector, without Dash (thread-safe)."""

    def __init__(self, settings: StatsSettings) -> None:
        self.settings = settings
        self.index = CaseIndex.build(list(settings.roots))
        self.viewer = Viewer(self.index, cache_cases=2)
        self._cases: OrderedDict[str, CaseStats] = OrderedDict()
        self._lock = threading.Lock()

    def case(self, case_id: object) -> CaseStats:
        """Statistics of one case of the index (computed on first use, a few kept).

        Raises:
            UnknownCaseError: Not a case id of the index.
        """
        case = self.index.resolve(case_id)
        with self._lock:
            if case.case_id in self._cases:
                return self._cases[case.case_id]
        stats = case_statistics(case, bins=self.settings.bins)
        with self._lock:
            self._cases[case.case_id] = stats
            while len(self._cases) > 16:
                self._cases.popitem(last=False)
        return stats

    def cached(self) -> StatsResult | None:
        """Dataset statistics from the cache (the newest for these roots if the files changed), or None."""
        s = self.settings
        return load_cached(list(s.roots), s.cache_dir, bins=s.bins, stale_ok=True)

    def recompute(self) -> StatsResult:
        """Compute the dataset statistics now and update the cache."""
        s = self.settings
        return dataset_stats(list(s.roots), cache_dir=s.cache_dir, recompute=True, bins=s.bins, workers=s.workers)


def create_stats_app(settings: StatsSettings) -> dash.Dash:
    """Create the statistics inspector.

    Raises:
        DataError: A root is missing or holds no case.
    """
    import dash
    from dash import Input, Output, ctx, dcc, html

    service = StatsService(settings)
    app = dash.Dash(__name__, title="segkit statistics", **dash_options())
    first = next(iter(service.index.cases))
    case_tab = html.Div(
        className="tab-body",
        children=[
            html.Div(
                className="controls",
                children=[
                    control(
                        "case",
                        dcc.Dropdown(
                            id="stats-case",
                            options=case_options(service.index, note_missing_seg=True),
                            value=first,
                            clearable=False,
                        ),
                    ),
                    control(
                        "preview slice (axial, % of the volume)",
                        dcc.Slider(id="preview-slice", min=0, max=100, step=1, value=50, marks=None),
                        style={"minWidth": "360px"},
                    ),
                ],
            ),
            html.Div(id="case-problems", role="status"),
            html.Img(id="case-preview", alt="case preview", style={"imageRendering": "pixelated", "height": "220px"}),
            dcc.Graph(id="case-histograms", config={"displaylogo": False}),
            html.H4("label volumes"),
            html.Div(id="case-labels"),
        ],
    )
    dataset_tab = html.Div(
        className="tab-body",
        children=[
            html.Div(
                className="slice-row",
                children=[
                    html.Button("Recompute", id="recompute"),
                    html.Button("Load cached", id="load-cached"),
                    html.Span(id="dataset-status", className="muted"),
                ],
            ),
            dcc.Loading(html.Div(id="dataset-body")),
        ],
    )
    app.layout = html.Div(
        className="segkit",
        children=[
            html.H2("segkit statistics"),
            html.Div(f"roots: {', '.join(str(r) for r in settings.roots)}", className="muted"),
            dcc.Tabs(
                id="tabs",
                value="case",
                children=[
                    dcc.Tab(label="Case statistics", value="case", children=case_tab),
                    dcc.Tab(label="Dataset statistics", value="dataset", children=dataset_tab),
                ],
            ),
        ],
    )

    @app.callback(
        Output("case-histograms", "figure"),
        Output("case-labels", "children"),
        Output("case-problems", "children"),
        Input("stats-case", "value"),
    )
    def _case(case_id: Any) -> tuple[Any, Any, Any]:
        return case_view(service, case_id)

    @app.callback(Output("case-preview", "src"), Input("stats-case", "value"), Input("preview-slice", "value"))
    def _preview(case_id: Any, percent: Any) -> Any:
        return preview(service, case_id, percent)

    @app.callback(
        Output("dataset-body", "children"),
        Output("dataset-status", "children"),
        Input("recompute", "n_clicks"),
        Input("load-cached", "n_clicks"),
    )
    def _dataset(_recompute: Any, _load: Any) -> tuple[Any, Any]:
        return dataset_view(service, recompute=ctx.triggered_id == "recompute")

    app.segkit_stats = service  # type: ignore[attr-defined]  # for tests and notebooks
    return app


# --- views (plain functions: easy to test without a browser) ------------------------------------------


def case_view(service: StatsService, case_id: Any) -> tuple[dict[str, Any], Any, Any]:
    """Histogram figure, label table and problems of one case; a bad id or file becomes a message."""
    from dash import html

    try:
        stats = service.case(case_id)
    except SegkitError as err:
        return _no_figure(), "", html.Div(str(err), className="error")
    problems = [f"{m} missing" for m in stats.missing] + list(stats.errors)
    status = html.Div("; ".join(problems), className="warning") if problems else ""
    return histogram_figure(stats), label_table(stats), status


def preview(service: StatsService, case_id: Any, percent: Any) -> str:
    """A data URI of the case's modalities at `percent` of the axial extent ('' when not possible)."""
    from segkit.viz.export import png_data_uri

    try:
        volumes = service.viewer.volumes(case_id)
        count = volumes.ras_shape[2]
        position = min(max(finite_number(0 if percent is None else percent, "preview slice"), 0.0), 100.0)
        index = round(position / 100.0 * (count - 1))
        rendered = service.viewer.render(ViewRequest(str(case_id), modality=ALL_MODALITIES, index=index))
    except SegkitError:
        return ""
    return png_data_uri(rendered.image)


def dataset_view(service: StatsService, *, recompute: bool) -> tuple[Any, str]:
    """Dataset tab content and status line, from a recomputation or the cache."""
    from dash import html

    try:
        result = service.recompute() if recompute else service.cached()
    except SegkitError as err:
        return html.Div(str(err), className="error"), ""
    if result is None:
        return html.Div("No cached statistics for these roots yet: press Recompute."), "no cache"
    stale = " — files changed since; press Recompute" if result.source == "stale-cache" else ""
    where = f" ({result.cache_path})" if result.cache_path else ""
    status = f"{result.source}{where}{stale}"
    return dataset_body(result), status


def histogram_figure(stats: CaseStats) -> dict[str, Any]:
    """Per-modality intensity histograms (non-zero voxels), one panel each, as a plotly figure dict."""
    data = []
    layout: dict[str, Any] = {
        "grid": {"rows": 1, "columns": len(MODALITIES), "pattern": "independent"},
        "margin": {"l": 40, "r": 10, "t": 30, "b": 30},
        "height": 260,
        "showlegend": False,
        "annotations": [],
    }
    for n, m in enumerate(MODALITIES, start=1):
        suffix = "" if n == 1 else str(n)
        layout[f"xaxis{suffix}"] = {"title": {"text": m}}
        layout[f"yaxis{suffix}"] = {"rangemode": "tozero"}
        mod = stats.modalities.get(m)
        if mod is None or not mod.hist_counts:
            continue
        centres = [(a + b) / 2 for a, b in zip(mod.hist_edges[:-1], mod.hist_edges[1:], strict=True)]
        data.append(
            {
                "type": "bar",
                "x": centres,
                "y": mod.hist_counts,
                "name": m,
                "xaxis": f"x{suffix}",
                "yaxis": f"y{suffix}",
                "marker": {"line": {"width": 0}},
            }
        )
    layout["title"] = {"text": f"{stats.case_id}: intensity histograms (non-zero voxels)", "font": {"size": 13}}
    return {"data": data, "layout": layout}


def label_table(stats: CaseStats) -> Any:
    """An HTML table of label and region volumes of one case."""
    if stats.labels is None:
        return "no segmentation"
    header = ["label", "voxels", "volume (ml)"]
    rows = [[name, f"{v['voxels']:.0f}", f"{v['ml']:.3f}"] for name, v in stats.labels.items()]
    return _table(header, rows)


def dataset_body(result: StatsResult) -> Any:
    """The Dataset tab: geometry, intensity percentiles, label volume distributions, problems."""
    from dash import dcc, html

    cases, summary = result.stats.cases, result.summary
    geometry = (
        _table(["shape", "cases"], [[k, str(v)] for k, v in summary["shapes"].items()]),
        _table(["spacing (mm)", "cases"], [[k, str(v)] for k, v in summary["spacings"].items()]),
    )
    keys = [percentile_key(p) for p in PERCENTILES]
    intensity_rows = [[m, *(f"{values[k]['median']:.4g}" for k in keys)] for m, values in summary["intensity"].items()]
    volume_rows = [
        [name, str(d["present"]), *(f"{d[k]:.3g}" if k in d else "-" for k in ("min", "median", "mean", "max"))]
        for name, d in summary["label_volumes"].items()
    ]
    labelled = [c for c in cases if c.labels is not None]
    boxes = {
        "data": [
            {
                "type": "box",
                "name": name,
                "y": [c.labels[name]["ml"] for c in labelled if c.labels],
                "boxpoints": "all",
                "jitter": 0.4,
                "pointpos": 0,
            }
            for name in SUMMARY_REGIONS
        ],
        "layout": {
            "height": 320,
            "margin": {"l": 50, "r": 10, "t": 30, "b": 30},
            "showlegend": False,
            "yaxis": {"title": {"text": "ml"}},
            "title": {"text": "label volumes per case", "font": {"size": 13}},
        },
    }
    problems = [
        [p["case"], p["root"], ", ".join(p["missing"]) or "-", "; ".join(p["errors"]) or "-"]
        for p in summary["problems"]
    ]
    return html.Div(
        [
            html.P(
                f"{summary['cases']} cases: {summary['labelled']} labelled, "
                f"{summary['unlabelled']} without segmentation."
            ),
            html.H4("shapes and spacings"),
            html.Div(list(geometry), style={"display": "flex", "gap": "24px"}),
            html.H4("intensity percentiles per modality (median over cases, non-zero voxels)"),
            _table(["modality", *keys], intensity_rows),
            html.H4("label volumes (ml)"),
            _table(["label", "present in", "min", "median", "mean", "max"], volume_rows),
            dcc.Graph(id="dataset-volumes", figure=boxes, config={"displaylogo": False}),
            html.H4("cases with missing or unreadable files"),
            _table(["case", "root", "missing", "errors"], problems) if problems else html.P("none"),
        ],
        id="dataset-tables",
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    from dash import html

    return html.Table(
        [
            html.Thead(html.Tr([html.Th(h) for h in header])),
            html.Tbody([html.Tr([html.Td(c) for c in r]) for r in rows]),
        ],
        className="stats",
    )


def _no_figure() -> dict[str, Any]:
    return {"data": [], "layout": {"height": 60, "xaxis": {"visible": False}, "yaxis": {"visible": False}}}
