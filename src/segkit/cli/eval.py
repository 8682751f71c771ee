"""``segkit eval``: BraTS lesion-wise metrics (one or more protocols) and nnU-Net voxel metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from segkit.cli._common import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    print_json,
    progress_sink,
    relpath,
    resolve,
    stderr,
    stdout,
)
from segkit.config.models import EvalConfig
from segkit.config.models import field_description as _d

_MAX_WARNINGS = 10


def eval_cmd(
    ctx: typer.Context,
    gt: Annotated[Path | None, typer.Argument(help=_d(EvalConfig, "gt"), show_default=False, metavar="GT")] = None,
    pred: Annotated[
        Path | None, typer.Argument(help=_d(EvalConfig, "pred"), show_default=False, metavar="PRED")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help=_d(EvalConfig, "output_dir"), show_default=False)
    ] = None,
    labels: Annotated[
        list[int] | None,
        typer.Option("--labels", help=_d(EvalConfig, "labels"), metavar="LABEL...", show_default=False),
    ] = None,
    omit_aggregates: Annotated[
        bool | None, typer.Option("--omit-aggregates", help=_d(EvalConfig, "omit_aggregates"))
    ] = None,
    hd95_penalty: Annotated[
        str | None, typer.Option("--hd95-penalty", help=_d(EvalConfig, "hd95_penalty"), metavar="auto|MM")
    ] = None,
    protocol: Annotated[
        list[str] | None,
        typer.Option("--protocol", help=_d(EvalConfig, "protocol"), metavar="NAME...", show_default=False),
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help=_d(EvalConfig, "task"), show_default=False)] = None,
    nsd_tolerance: Annotated[
        str | None, typer.Option("--nsd-tolerance", help=_d(EvalConfig, "nsd_tolerance"), metavar="auto|MM")
    ] = None,
    vol_threshold: Annotated[
        float | None, typer.Option("--vol-threshold", help=_d(EvalConfig, "vol_threshold"), show_default=False)
    ] = None,
    overlap_threshold: Annotated[
        float | None,
        typer.Option("--overlap-threshold", help=_d(EvalConfig, "overlap_threshold"), show_default=False),
    ] = None,
    skip_nnunet: Annotated[bool | None, typer.Option("--skip-nnunet", help=_d(EvalConfig, "skip_nnunet"))] = None,
    nnunet_cmd: Annotated[str | None, typer.Option("--nnunet-cmd", help=_d(EvalConfig, "nnunet_cmd"))] = None,
    lesion_output: Annotated[
        Path | None,
        typer.Option(
            "--lesion-output",
            "--output",
            help=_d(EvalConfig, "lesion_output") + " --output is the old script's name for it.",
            show_default=False,
        ),
    ] = None,
    nnunet_output: Annotated[
        Path | None, typer.Option("--nnunet-output", help=_d(EvalConfig, "nnunet_output"), show_default=False)
    ] = None,
    combined_output: Annotated[
        Path | None, typer.Option("--combined-output", help=_d(EvalConfig, "combined_output"), show_default=False)
    ] = None,
    figure: Annotated[bool | None, typer.Option("--figure/--no-figure", help=_d(EvalConfig, "figure"))] = None,
    pretty: Annotated[bool | None, typer.Option("--pretty", help=_d(EvalConfig, "pretty"))] = None,
    strict: Annotated[bool | None, typer.Option("--strict", help=_d(EvalConfig, "strict"))] = None,
    overwrite: Annotated[bool | None, typer.Option("--overwrite", help=_d(EvalConfig, "overwrite"))] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-j", help=_d(EvalConfig, "workers"))] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score predictions like the official BraTS scorers (2024, 2025), plus nnU-Net voxel metrics.

    --protocol brats2024 (default) is the official 2024 GLI scorer; brats2025 is brats-evaluation 0.0.10 on
    panoptica (--task gli|mets|ped|MenRT|MenPre|GoAT). Several protocols score each file decoded once, and
    each writes its lesion report (lesion_metrics.json, then lesion_metrics_<protocol>.json). Also writes
    nnunet_metrics.json, full_metrics.json, per_case.csv and a PNG figure, never inside GT or PRED; an earlier
    run's reports are replaced only with --overwrite.

    Every reference case counts. A prediction that is missing or cannot be used (unreadable, truncated,
    other grid, NaN, non-integer or out-of-range labels, duplicate ids) is scored as an empty prediction,
    in the lesion-wise and the voxel metrics alike, and marked with its reason in the reports. A reference
    that cannot be read is not scored: the reports list it and the run exits 1. --strict stops at the
    first unusable file instead, before any report is written.

    Example: segkit eval labelsTs predictions/fold0 --output-dir reports/fold0 --pretty
    """
    from segkit import api

    cfg = resolve(
        config,
        sets,
        eval__gt=gt,
        eval__pred=pred,
        eval__output_dir=output_dir,
        eval__labels=labels or None,
        eval__omit_aggregates=omit_aggregates,
        eval__hd95_penalty=hd95_penalty,
        eval__protocol=protocol or None,
        eval__task=task,
        eval__nsd_tolerance=nsd_tolerance,
        eval__vol_threshold=vol_threshold,
        eval__overlap_threshold=overlap_threshold,
        eval__skip_nnunet=skip_nnunet,
        eval__nnunet_cmd=nnunet_cmd,
        eval__lesion_output=lesion_output,
        eval__nnunet_output=nnunet_output,
        eval__combined_output=combined_output,
        eval__figure=figure,
        eval__pretty=pretty,
        eval__strict=strict,
        eval__overwrite=overwrite,
        eval__workers=workers,
    )
    from segkit.evaluation.reports import UnscoredReferencesError

    unscored: UnscoredReferencesError | None = None
    with progress_sink(ctx) as sink:
        try:
            result = api.evaluate(cfg, progress=sink)
        except UnscoredReferencesError as err:
            # The reports are written: show them, then fail with the one-line error.
            result, unscored = err.result, err
    if json_out:
        print_json(result.summary)
    else:
        render_summary(result.summary)
    if unscored is not None:
        raise unscored


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def render_summary(summary: dict[str, Any]) -> None:
    """Print the summary table of an evaluation (also used by ``segkit infer --run-evaluation``)."""
    console = stdout()
    voxel = summary["voxel"]["mean"]
    counts = summary["cases"]
    names = summary.get("protocols") or ["brats2024"]
    by_protocol = {names[0]: summary["lesion"], **summary.get("lesion_by_protocol", {})}
    region_labels = summary.get("region_labels", {})
    for name in names:
        _render_protocol(console, name, by_protocol[name], voxel, counts["scored"], region_labels.get(name, {}))
    penalty = ", ".join(f"{value} mm ({why})" for value, why in summary["hd95_penalty"]["used"].items()) or "-"
    console.print(
        f"{counts['scored']} of {counts['reference']} reference cases scored "
        f"({counts['missing_predictions']} without prediction and {counts.get('unusable_predictions', 0)} with an "
        f"unusable prediction scored as empty, {counts['failed']} failed, "
        f"{counts['extra_predictions']} extra predictions ignored); HD95 penalty {penalty}"
    )
    warnings = summary["warnings"]
    err = stderr()
    for line in warnings[:_MAX_WARNINGS]:
        err.print(f"[yellow]warning[/]: {_escape(line)}", soft_wrap=True)
    if len(warnings) > _MAX_WARNINGS:
        err.print(f"[yellow]warning[/]: ... {len(warnings) - _MAX_WARNINGS} more in full_metrics.json")
    check = summary["nnunet_check"]
    if check is not None:
        colour = {"agreed": "green", "disagreed": "red"}.get(check, "yellow")
        console.print(f"nnU-Net cross-check: [{colour}]{check}[/]")
    outputs = summary["outputs"] or {}
    if outputs.get("full_metrics"):
        console.print(f"reports: {relpath(Path(outputs['full_metrics']).parent)}")


def _render_protocol(
    console: Any, name: str, lesion: dict[str, Any], voxel: dict[str, Any], scored: int, labels: dict[str, list[int]]
) -> None:
    """One table: the protocol's console columns (means ± std; counts as sums over cases)."""
    from segkit.metrics.protocols import PROTOCOLS

    columns = PROTOCOLS[name].console
    table = Table(title=f"{name} lesion-wise metrics ({scored} cases; mean ± std)")
    for column in ("region", *(title for title, _, _ in columns), "voxel Dice"):
        table.add_column(column, justify="left" if column == "region" else "right")
    for region, stats in lesion.items():
        cells = []
        for _, stem, digits in columns:
            value = stats[stem]
            if digits == 0:
                cells.append(f"{value['mean'] * value['n']:.0f}" if value["n"] else "-")
            elif digits >= 3:
                cells.append(f"{_fmt(value['mean'], digits)}±{_fmt(value['std'], 3)}")
            else:
                cells.append(_fmt(value["mean"], digits))
        values = labels.get(region, [])
        key = str(values[0]) if len(values) == 1 else str(tuple(values))
        cells.append(_fmt(voxel[key]["Dice"]) if values and key in voxel else "-")
        table.add_row(region, *cells)
    console.print(table)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


app = typer.Typer()
app.command("eval")(eval_cmd)
