"""The ``segkit`` command: a thin shell over `segkit.api`.

Importing this package loads typer, rich and pydantic only; every command imports what it needs when
it runs, so ``segkit --help`` and ``segkit eval`` start fast (a test checks this in a fresh process).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

import segkit
from segkit.cli import config_cmd, data, demo, infer, train, viz
from segkit.cli import eval as eval_
from segkit.cli._common import expand_multi_value, stderr, stdout
from segkit.errors import SegkitError

app = typer.Typer(
    name="segkit",
    help="BraTS-style brain-tumour segmentation: data, train, infer, eval, viz.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("demo")(demo.demo)
app.add_typer(data.app, name="data")
app.command("train")(train.train)
app.command("infer")(infer.infer)
app.add_typer(config_cmd.app, name="config")
app.add_typer(viz.app, name="viz")
app.command("eval")(eval_.eval_cmd)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segkit {segkit.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv for debug).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.")] = False,
) -> None:
    """segkit: stage data, train, predict, score and look at BraTS-style segmentations."""
    ctx.obj = {"verbose": verbose, "quiet": quiet}
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    from rich.logging import RichHandler

    logger = logging.getLogger("segkit")
    logger.handlers[:] = [RichHandler(console=stderr(), show_path=False)]
    logger.setLevel(level)


@app.command("backends")
def backends_cmd() -> None:
    """List installed training/inference backends and whether each can run here."""
    from rich.table import Table

    from segkit.backends.registry import list_backends

    rows = list_backends()
    console = stdout()
    if not rows:
        console.print("no backends installed")
        return
    table = Table()
    for column in ("backend", "status", "entry point", "description"):
        table.add_column(column)
    for info in rows:
        status = "[green]available[/]" if info.available else f"[yellow]{info.status}[/]"
        table.add_row(info.name, status, info.target, info.summary)
    console.print(table)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the app and turn `SegkitError` into one line and an exit code."""
    args = expand_multi_value(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="segkit")
    except SegkitError as err:
        console = stderr()
        console.print(f"[bold red]error:[/] {_escape(str(err))}", soft_wrap=True)
        if err.hint:
            console.print(f"[dim]hint: {_escape(err.hint)}[/]", soft_wrap=True)
        if os.environ.get("SEGKIT_DEBUG"):
            console.print_exception()
        raise SystemExit(err.exit_code) from None
    except (KeyboardInterrupt, SystemExit) as stop:
        # typer turns a Ctrl-C inside a command into a silent SystemExit(130); both end with one line.
        if isinstance(stop, SystemExit) and stop.code != 130:
            raise
        from segkit.__main__ import interrupted

        interrupted()


def _escape(text: str) -> str:
    """Escape rich markup in user-facing text (paths may contain ``[``)."""
    from rich.markup import escape

    return escape(text)
