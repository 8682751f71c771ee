"""``segkit viz``: static panels, GIFs, the slice viewer, the statistics inspector, architecture figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from segkit.cli._common import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    print_json,
    progress_sink,
    relpath,
    resolve,
    stdout,
)
from segkit.config.models import (
    StatsConfig,
    VizAppConfig,
    VizArchConfig,
    VizGifConfig,
    VizStaticConfig,
    VizStatsConfig,
)
from segkit.config.models import field_description as _d

if TYPE_CHECKING:
    import dash

app = typer.Typer(
    help="Look at the data: static panels, GIFs, an interactive viewer, cohort statistics, network figures.",
    no_args_is_help=True,
)

HostOpt = Annotated[str | None, typer.Option("--host", help=_d(VizAppConfig, "host"))]
PortOpt = Annotated[int | None, typer.Option("--port", help=_d(VizAppConfig, "port"))]
DebugOpt = Annotated[bool | None, typer.Option("--debug", help=_d(VizAppConfig, "debug"))]
OpenOpt = Annotated[bool | None, typer.Option("--open-browser", help=_d(VizAppConfig, "open_browser"))]
DataRootOpt = Annotated[
    list[Path] | None,
    typer.Option("--data-root", help=_d(VizAppConfig, "data_roots"), metavar="DIR...", show_default=False),
]
OverwriteOpt = Annotated[bool | None, typer.Option("--overwrite", help="Replace existing output files.")]


@app.command()
def static(
    case_dir: Annotated[Path | None, typer.Option("--case-dir", help=_d(VizStaticConfig, "case_dir"))] = None,
    layout: Annotated[
        str | None, typer.Option(help=_d(VizStaticConfig, "layout"), metavar="modalities|orthogonal")
    ] = None,
    axis: Annotated[
        str | None, typer.Option(help=_d(VizStaticConfig, "axis"), metavar="sagittal|coronal|axial")
    ] = None,
    fraction: Annotated[float | None, typer.Option(help=_d(VizStaticConfig, "fraction"))] = None,
    index: Annotated[int | None, typer.Option(help=_d(VizStaticConfig, "index"))] = None,
    modality: Annotated[
        str | None, typer.Option(help=_d(VizStaticConfig, "modality"), metavar="t1c|t1n|t2f|t2w")
    ] = None,
    indices: Annotated[
        list[int] | None, typer.Option("--indices", help=_d(VizStaticConfig, "indices"), metavar="S C A")
    ] = None,
    overlay: Annotated[bool | None, typer.Option("--overlay/--no-overlay", help=_d(VizStaticConfig, "overlay"))] = None,
    style: Annotated[str | None, typer.Option(help=_d(VizStaticConfig, "style"), metavar="fill|contour|both")] = None,
    alpha: Annotated[float | None, typer.Option(help=_d(VizStaticConfig, "alpha"))] = None,
    pred: Annotated[Path | None, typer.Option("--pred", help=_d(VizStaticConfig, "pred"))] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help=_d(VizStaticConfig, "output"))] = None,
    show: Annotated[bool | None, typer.Option("--show", help=_d(VizStaticConfig, "show"))] = None,
    dpi: Annotated[int | None, typer.Option(help=_d(VizStaticConfig, "dpi"))] = None,
    overwrite: OverwriteOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a figure of one case: every modality on one slice, or three orthogonal slices.

    Example: segkit viz static --case-dir training_data/BraTS-GLI-00001-000 --layout modalities
    --axis axial --fraction 0.55 --output outputs/figures/BraTS-GLI-00001-000_modalities.png
    """
    from segkit import api

    cfg = resolve(
        config,
        sets,
        viz__static__case_dir=case_dir,
        viz__static__layout=layout,
        viz__static__axis=axis,
        viz__static__fraction=fraction,
        viz__static__index=index,
        viz__static__modality=modality,
        viz__static__indices=indices or None,
        viz__static__overlay=overlay,
        viz__static__style=style,
        viz__static__alpha=alpha,
        viz__static__pred=pred,
        viz__static__output=output,
        viz__static__show=show,
        viz__static__dpi=dpi,
        viz__static__overwrite=overwrite,
    )
    result = api.viz_static(cfg)
    slices = [{"axis": s.axis, "index": s.file_index, "count": s.count} for s in result.slices]
    if json_out:
        print_json({"case": result.case_id, "output": result.output, "slices": slices})
        return
    where = ", ".join(f"{s['axis']} {s['index']}" for s in slices)
    stdout().print(f"wrote {relpath(result.output) if result.output else '(no file)'} ({result.case_id}, {where})")


@app.command()
def gif(
    ctx: typer.Context,
    root: Annotated[Path | None, typer.Option("--root", help=_d(VizGifConfig, "root"))] = None,
    case: Annotated[str | None, typer.Option("--case", help=_d(VizGifConfig, "case"))] = None,
    max_cases: Annotated[int | None, typer.Option("--max-cases", help=_d(VizGifConfig, "max_cases"))] = None,
    axis: Annotated[str | None, typer.Option(help=_d(VizGifConfig, "axis"), metavar="sagittal|coronal|axial")] = None,
    modality: Annotated[str | None, typer.Option(help=_d(VizGifConfig, "modality"), metavar="t1c|t1n|t2f|t2w")] = None,
    step: Annotated[int | None, typer.Option(help=_d(VizGifConfig, "step"))] = None,
    overlay: Annotated[bool | None, typer.Option("--overlay/--no-overlay", help=_d(VizGifConfig, "overlay"))] = None,
    style: Annotated[str | None, typer.Option(help=_d(VizGifConfig, "style"), metavar="fill|contour|both")] = None,
    alpha: Annotated[float | None, typer.Option(help=_d(VizGifConfig, "alpha"))] = None,
    frame_ms: Annotated[int | None, typer.Option("--frame-ms", help=_d(VizGifConfig, "frame_ms"))] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help=_d(VizGifConfig, "output_dir"))] = None,
    overwrite: OverwriteOpt = None,
    workers: Annotated[int | None, typer.Option("--workers", "-j", help=_d(VizGifConfig, "workers"))] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write slice-sweep GIFs (<case>_<modality>_<axis>.gif) of one case or of every case in a root.

    Example: segkit viz gif --root training_data --case BraTS-GLI-00001-000 --axis axial --modality t2f
    --step 3 --overlay --output-dir outputs/gifs
    """
    from segkit import api

    cfg = resolve(
        config,
        sets,
        viz__gif__root=root,
        viz__gif__case=case,
        viz__gif__max_cases=max_cases,
        viz__gif__axis=axis,
        viz__gif__modality=modality,
        viz__gif__step=step,
        viz__gif__overlay=overlay,
        viz__gif__style=style,
        viz__gif__alpha=alpha,
        viz__gif__frame_ms=frame_ms,
        viz__gif__output_dir=output_dir,
        viz__gif__overwrite=overwrite,
        viz__gif__workers=workers,
    )
    with progress_sink(ctx) as sink:
        outcomes = api.viz_gif(cfg, progress=sink)
    if json_out:
        print_json(
            [
                {
                    "case": o.case_id,
                    "path": o.path,
                    "frames": o.frames,
                    "width": o.width,
                    "height": o.height,
                    "seconds": round(o.seconds, 3),
                }
                for o in outcomes
            ]
        )
        return
    console = stdout()
    for o in outcomes:
        console.print(f"{relpath(o.path)}  {o.frames} frames {o.width}x{o.height}  {o.seconds:.2f} s")
    console.print(f"wrote {len(outcomes)} GIF{'s' * (len(outcomes) != 1)}")


@app.command("app")
def app_cmd(
    data_root: DataRootOpt = None,
    pred_dir: Annotated[Path | None, typer.Option("--pred-dir", help=_d(VizAppConfig, "pred_dir"))] = None,
    host: HostOpt = None,
    port: PortOpt = None,
    debug: DebugOpt = None,
    open_browser: OpenOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Browse cases in the browser: modalities, planes, slices, overlays, predictions, voxel values.

    Example: segkit viz app --data-root training_data validation_data --pred-dir outputs/predictions
    --open-browser. Keys: arrows step one slice, PageUp/PageDown ten.
    """
    from segkit import api

    cfg = resolve(
        config,
        sets,
        viz__app__data_roots=data_root or None,
        viz__app__pred_dir=pred_dir,
        viz__app__host=host,
        viz__app__port=port,
        viz__app__debug=debug,
        viz__app__open_browser=open_browser,
    )
    _serve("viewer", lambda: api.viz_app(cfg), cfg.viz.app)


def _serve(what: str, build: Callable[[], dash.Dash], opts: VizAppConfig | VizStatsConfig) -> None:
    """Refuse --debug off loopback (before any work), build the app, say where it is, serve it."""
    from segkit.viz.server import app_url, check_debug_host, serve

    check_debug_host(opts.host, opts.debug)
    dash_app = build()
    stdout().print(f"segkit {what} on {app_url(opts.host, opts.port)} (Ctrl+C to stop)")
    serve(dash_app, host=opts.host, port=opts.port, debug=opts.debug, open_browser=opts.open_browser)


@app.command("stats")
def stats_cmd(
    data_root: Annotated[
        list[Path] | None,
        typer.Option("--data-root", help=_d(StatsConfig, "roots"), metavar="DIR...", show_default=False),
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help=_d(StatsConfig, "cache_dir"))] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-j", help=_d(StatsConfig, "workers"))] = None,
    host: Annotated[str | None, typer.Option("--host", help=_d(VizStatsConfig, "host"))] = None,
    port: Annotated[int | None, typer.Option("--port", help=_d(VizStatsConfig, "port"))] = None,
    debug: Annotated[bool | None, typer.Option("--debug", help=_d(VizStatsConfig, "debug"))] = None,
    open_browser: Annotated[
        bool | None, typer.Option("--open-browser", help=_d(VizStatsConfig, "open_browser"))
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Inspect cohort statistics in the browser: per-case histograms and label volumes, dataset tables.

    Dataset statistics are cached under outputs/statistics_cache/ (Recompute / Load cached buttons); the
    same numbers without a browser: segkit data stats ROOT... --json
    """
    from segkit import api

    cfg = resolve(
        config,
        sets,
        stats__roots=data_root or None,
        stats__cache_dir=cache_dir,
        stats__workers=workers,
        viz__stats__host=host,
        viz__stats__port=port,
        viz__stats__debug=debug,
        viz__stats__open_browser=open_browser,
    )
    _serve("statistics", lambda: api.viz_stats_app(cfg), cfg.viz.stats)


@app.command("arch")
def arch_cmd(
    plans: Annotated[
        str | None, typer.Argument(help=_d(VizArchConfig, "plans"), metavar="PLANS", show_default=False)
    ] = None,
    configuration: Annotated[
        str | None,
        typer.Option(
            "--configuration",
            "-C",
            help="Configuration key in the plans, default 3d_fullres (the old script's --config; in segkit "
            "--config is the run config).",
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help=_d(VizArchConfig, "output"))] = None,
    detailed_output: Annotated[
        Path | None, typer.Option("--detailed-output", help=_d(VizArchConfig, "detailed_output"))
    ] = None,
    vector_output: Annotated[
        Path | None, typer.Option("--vector-output", help=_d(VizArchConfig, "vector_output"))
    ] = None,
    detailed_vector_output: Annotated[
        Path | None, typer.Option("--detailed-vector-output", help=_d(VizArchConfig, "detailed_vector_output"))
    ] = None,
    dpi: Annotated[int | None, typer.Option(help=_d(VizArchConfig, "dpi"))] = None,
    overwrite: OverwriteOpt = None,
    nnunet_results: Annotated[Path | None, typer.Option("--nnunet-results", help="nnUNet_results folder.")] = None,
    nnunet_preprocessed: Annotated[
        Path | None, typer.Option("--nnunet-preprocessed", help="nnUNet_preprocessed folder.")
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the network of an nnU-Net plans configuration: a table and two figures (overview, detailed).

    PLANS is a plans .json, a folder holding one (a trained model, a results or preprocessed dataset
    folder), or a dataset id/name searched under nnUNet_results and nnUNet_preprocessed.
    Example: segkit viz arch 501 -C 3d_fullres -o outputs/figures/architecture/3d_fullres_overview.png
    """
    from segkit import api

    cfg = resolve(
        config,
        sets,
        nnunet__results=nnunet_results,
        nnunet__preprocessed=nnunet_preprocessed,
        viz__arch__plans=plans,
        viz__arch__configuration=configuration,
        viz__arch__output=output,
        viz__arch__detailed_output=detailed_output,
        viz__arch__vector_output=vector_output,
        viz__arch__detailed_vector_output=detailed_vector_output,
        viz__arch__dpi=dpi,
        viz__arch__overwrite=overwrite,
    )
    result = api.viz_arch(cfg)
    arch = result.architecture
    if json_out:
        print_json({**arch.to_dict(), "outputs": result.outputs, "alternatives": result.location.alternatives})
        return
    from rich.table import Table

    console = stdout()
    table = Table(title=f"{arch.class_short} · {arch.configuration} · {relpath(arch.plans_path)}")
    for column in ("stage", "features", "kernel", "stride", "blocks", "feature map"):
        table.add_column(column, justify="left" if column in ("stage", "blocks") else "right")
    for row in arch.rows():
        table.add_row(row["stage"], row["features"], row["kernel"], row["stride"], row["blocks"], row["size"])
    console.print(table)
    facts = [f"patch {'x'.join(map(str, arch.patch_size))}", f"{arch.conv}, {arch.norm}, {arch.nonlin}"]
    if arch.batch_size is not None:
        facts.insert(1, f"batch {arch.batch_size}")
    console.print("  ".join(facts))
    for warning in arch.warnings:
        console.print(f"[yellow]warning[/]: {warning}")
    if result.location.alternatives:
        others = ", ".join(relpath(p) for p in result.location.alternatives[:3])
        console.print(f"also found: {others}")
    for path in result.outputs.values():
        console.print(f"wrote {relpath(path)}")
