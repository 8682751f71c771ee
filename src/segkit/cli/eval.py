"""``segkit eval``: BraTS 2024 lesion-wise metrics and nnU-Net voxel metrics of a prediction folder."""

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
    protocol: Annotated[str | None, typer.Option("--protocol", help=_d(EvalConfig, "protocol"))] = None,
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
    """Score predictions like the official BraTS 2024 scorer, plus nnU-Net voxel metrics.

    Writes lesion_metrics.json, nnunet_metrics.json, full_metrics.json, per_case.csv and a PNG figure,
    never inside GT or PRED; an earlier run's reports are replaced only with --overwrite.

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
        eval__protocol=protocol,
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
    from segkit.evaluation.reports import voxel_key

    console = stdout()
    lesion = summary["lesion"]
    voxel = summary["voxel"]["mean"]
    counts = summary["cases"]
    table = Table(title=f"lesion-wise metrics ({counts['scored']} cases; mean ± std)")
    for column in ("region", "LW Dice", "LW HD95 (mm)", "legacy Dice", "legacy HD95", "TP", "FP", "FN", "voxel Dice"):
        table.add_column(column, justify="left" if column == "region" else "right")
    for region, stats in lesion.items():
        dice, hd = stats["LesionWise_Score_Dice"], stats["LesionWise_Score_HD95"]
        n = dice["n"]
        key = voxel_key(region)
        table.add_row(
            region,
            f"{_fmt(dice['mean'])}±{_fmt(dice['std'], 3)}",
            f"{_fmt(hd['mean'], 1)}±{_fmt(hd['std'], 1)}",
            _fmt(stats["Legacy_Dice"]["mean"]),
            _fmt(stats["Legacy_HD95"]["mean"], 2),
            *(f"{stats[k]['mean'] * n:.0f}" if n else "-" for k in ("Num_TP", "Num_FP", "Num_FN")),
            _fmt(voxel[key]["Dice"]) if key in voxel else "-",
        )
    console.print(table)
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


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


app = typer.Typer()
app.command("eval")(eval_cmd)
