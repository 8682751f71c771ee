"""The ``segkit`` command: a thin shell over `segkit.api`.

Importing this package loads typer, rich and pydantic only; every command imports what it needs when
it runs, so ``segkit --help`` and ``segkit eval`` start fast (a test checks this in a fresh process).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

import segkit
from segkit.errors import SegkitError

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "segkit.cli.demo",
        "Synthesise a cohort, train MONAI (or UMamba2) on it, predict held-out cases, score them and draw them.",
    ),
    "train": (
        "segkit.cli.train",
        "Train a backend on one or more folds (nnU-Net: results go to nnUNet_results; MONAI: to --output-root).",
    ),
    "infer": ("segkit.cli.infer", "Predict <case>.nii.gz label maps for BraTS cases (several folds: ensemble)."),
    "eval": (
        "segkit.cli.eval",
        "Score predictions like the official BraTS scorers (2024, 2025), plus nnU-Net voxel metrics.",
    ),
    "backends": (
        "segkit.cli.backends_cmd",
        "List installed training/inference backends and whether each can run here.",
    ),
    "data": ("segkit.cli.data", "Stage data: synthesise, check, export to nnU-Net, write folds."),
    "config": ("segkit.cli.config_cmd", "Inspect run configs: JSON schema and resolved values."),
    "model": ("segkit.cli.model", "Manage trained models (slim checkpoints)."),
    "viz": (
        "segkit.cli.viz",
        "Look at the data: static panels, GIFs, an interactive viewer, cohort statistics, network figures.",
    ),
}
"""Command -> (module whose ``app`` holds it, short help for ``segkit --help``).

The modules are imported only when their command runs (or its help is shown), so ``segkit --help``
imports typer and nothing heavy; a test checks that each short help equals the command's own.
"""


class LazyGroup(TyperGroup):
    """The root group: commands are loaded from `COMMANDS` when they run; the listing imports none of them."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        return load_command(cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        from typer._click.exceptions import UsageError

        try:
            return super().resolve_command(ctx, args)
        except UsageError as err:
            from difflib import get_close_matches

            matches = get_close_matches(args[0], list(COMMANDS)) if args else []
            if matches and "Did you mean" not in err.message:
                err.message = err.message.rstrip(".") + ". Did you mean " + ", ".join(map(repr, matches)) + "?"
            raise

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The root help, drawn with a rich table and panels only.

        Typer's own rich help formatter imports rich's markdown, syntax and traceback modules (about
        0.2 s); the listing needs none of them, and no command module is imported for it.
        """
        from rich.console import Console, Group
        from rich.markup import escape
        from rich.panel import Panel
        from rich.table import Table

        def panel(title: str, rows: list[tuple[str, str]]) -> Panel:
            table = Table.grid(padding=(0, 2))
            table.add_column(style="bold cyan", no_wrap=True)
            table.add_column()
            for name, text in rows:
                table.add_row(escape(name), escape(text))
            return Panel(table, title=title, title_align="left", border_style="dim")

        options = [
            (
                ", ".join(sorted([*p.opts, *p.secondary_opts], key=lambda o: not o.startswith("--"))),
                getattr(p, "help", "") or "",
            )
            for p in self.get_params(ctx)
            if not getattr(p, "hidden", False)
        ]
        commands = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        usage = f" Usage: {escape(ctx.command_path)} [OPTIONS] COMMAND [ARGS]...\n\n {escape(self.help or '')}\n"
        console = Console(file=sys.stdout, highlight=False)
        console.print(Group(usage, panel("Options", options), panel("Commands", commands)))


def load_command(name: str) -> Any:
    """The click command `name`, built from its module's Typer ``app``."""
    import importlib

    module = importlib.import_module(COMMANDS[name][0])
    command = typer.main.get_command(module.app)
    command.name = name
    # shell completion is not offered (the root app disables it); sub-apps would add it again
    command.params = [p for p in command.params if p.name not in ("install_completion", "show_completion")]
    return command


app = typer.Typer(
    name="segkit",
    cls=LazyGroup,
    help="BraTS-style brain-tumour segmentation: data, train, infer, eval, viz.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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

    from segkit.cli._common import stderr

    logger = logging.getLogger("segkit")
    logger.handlers[:] = [RichHandler(console=stderr(), show_path=False)]
    logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the app and turn errors into one line (plus a hint) and an exit code.

    Click's usage errors (unknown option, bad value, missing argument) are rendered like `SegkitError`
    and exit 2; the app runs outside click's standalone mode so that they reach this boundary.
    """
    from typer import Abort
    from typer._click.exceptions import ClickException, UsageError

    from segkit.cli._argv import expand_multi_value

    args = expand_multi_value(list(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args=args, prog_name="segkit", standalone_mode=False)
    except SegkitError as err:
        _error(str(err), err.hint)
        if os.environ.get("SEGKIT_DEBUG"):
            from segkit.cli._common import stderr

            stderr().print_exception()
        raise SystemExit(err.exit_code) from None
    except ClickException as err:
        if type(err).__name__ == "NoArgsIsHelpError":
            raise SystemExit(err.exit_code) from None  # the help is already printed
        ctx = getattr(err, "ctx", None)
        hint = None
        if isinstance(err, UsageError):
            words = ["segkit", *(a for a in args[:2] if a in COMMANDS or not a.startswith("-"))][:3]
            hint = f"see '{ctx.command_path if ctx is not None else ' '.join(words)} --help'"
        _error(" ".join(err.format_message().split()), hint)
        raise SystemExit(err.exit_code) from None
    except Abort:
        _error("aborted", None)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        from segkit.__main__ import interrupted

        interrupted()
    if code == 130:
        # typer turns a Ctrl-C inside a command into a silent exit code 130; it ends with one line too.
        from segkit.__main__ import interrupted

        interrupted()
    if isinstance(code, int) and code:
        raise SystemExit(code)


def _error(message: str, hint: str | None) -> None:
    from segkit.cli._common import stderr

    console = stderr()
    console.print(f"[bold red]error:[/] {_escape(message)}", soft_wrap=True)
    if hint:
        console.print(f"[dim]hint: {_escape(hint)}[/]", soft_wrap=True)


def _escape(text: str) -> str:
    """Escape rich markup in user-facing text (paths may contain ``[``)."""
    from rich.markup import escape

    return escape(text)
