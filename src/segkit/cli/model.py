"""``segkit model``: work on trained models (slim nnU-Net checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from segkit.cli._common import relpath, stdout

if TYPE_CHECKING:
    from segkit.backends.nnunet.slim import SlimReport

app = typer.Typer(help="Manage trained models (slim checkpoints).", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Manage trained models (slim checkpoints)."""
    # A callback keeps `model` a group with `slim` as its sub-command (typer collapses a one-command app).


@app.command()
def slim(
    model_dir: Annotated[
        Path,
        typer.Argument(
            help="An nnU-Net model folder <trainer>__<plans>__<configuration> (nnunet and umamba2 backends).",
            metavar="MODEL_DIR",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write a slim copy of the model folder here (must not exist or be empty) instead of in place.",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --output folder.")] = False,
    checkpoints: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint",
            metavar="NAME",
            help="Checkpoint to slim in each fold (repeat for several). "
            "Default: checkpoint_final.pth, checkpoint_best.pth, checkpoint_latest.pth.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Keep only what prediction needs in each fold's checkpoints: the weights, no optimizer state or logs.

    Slim checkpoints load with torch.load(weights_only=True) and predict exactly what the full ones did.

    Without -o the checkpoints are replaced in place, once every one is converted; -o leaves them as they are.

    A slim checkpoint can start a training (--pretrained-weights) but not resume one (--continue).
    """
    from segkit.backends.nnunet.slim import CHECKPOINTS, slim_model

    report = slim_model(model_dir, output=output, checkpoints=checkpoints or CHECKPOINTS, overwrite=overwrite)
    _print_report(report)


def _print_report(report: SlimReport) -> None:
    from rich.table import Table

    console = stdout()
    table = Table(title=f"{len(report.files)} checkpoint(s) of {relpath(report.model_dir)}")
    table.add_column("checkpoint")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("status")
    for f in report.files:
        name = relpath(f.source.relative_to(report.model_dir))
        status = "already slim" if f.already_slim else f"slimmed ({_size(f.saved)} saved)"
        table.add_row(name, _size(f.size_before), _size(f.size_after), status)
    console.print(table)
    if report.in_place and report.nothing_to_do:
        console.print("nothing to do: every checkpoint is slim already")
    elif report.in_place:
        console.print(f"slimmed in place: {_size(report.size_before)} -> {_size(report.size_after)}")
    else:
        console.print(
            f"slim copy written: {relpath(report.output)} ({_size(report.size_after)}; "
            f"the checkpoints in {relpath(report.model_dir)} take {_size(report.size_before)})"
        )


def _size(n: int) -> str:
    """Bytes as B, KiB, MiB or GiB with three significant digits."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} GiB"
