"""Pieces every command shares: option aliases, config resolution, consoles, progress, JSON output.

Help texts of options that map to config fields come from the pydantic field descriptions, so each
option is described once (in `segkit.config.models`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from segkit.errors import ConfigError

if TYPE_CHECKING:
    from segkit.cli._progress import RichProgressSink
    from segkit.config.models import SegkitConfig

YAML_SUFFIXES = (".yml", ".yaml")
CONFIG_HINT = "the plans configuration is -C/--configuration (--config is a run-config YAML)"


def check_config_path(value: Path | None) -> Path | None:
    """Callback of ``--config``: the run config must be an existing file.

    A bad value is a one-line `ConfigError` naming the file (exit 2), not click's usage block. The old
    scripts' ``--config 3d_fullres`` meant a plans configuration, so a value that is not a YAML file name
    gets a hint pointing to ``-C/--configuration``.

    Raises:
        ConfigError: The file does not exist or is a folder.
    """
    if value is None:
        return None
    hint = None if value.suffix.lower() in YAML_SUFFIXES else CONFIG_HINT
    if value.is_dir():
        msg = f"{value}: --config needs a run-config YAML file, not a folder"
        raise ConfigError(msg, hint=hint)
    if not value.is_file():
        msg = f"{value}: run config not found (--config)"
        raise ConfigError(msg, hint=hint)
    return value


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        callback=check_config_path,
        metavar="RUN.YAML",
        help="Run config (YAML); relative paths in it resolve against its folder.",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config value, e.g. --set prepare.clean=true (repeatable; beats the YAML).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def resolve(config: Path | None, sets: list[str] | None, **flags: Any) -> SegkitConfig:
    """Load the run config with precedence default < YAML < --set < flags.

    `flags` map dotted config keys, written with ``__`` for dots (``prepare__clean=True``), to the
    values of explicit flags; None means the flag was not given.
    """
    from segkit.config.load import load_config

    dotted = {key.replace("__", "."): value for key, value in flags.items()}
    return load_config(config, sets=sets or (), flags=dotted)


def is_quiet(ctx: typer.Context) -> bool:
    """Whether ``-q`` was given (the root callback stores the global flags in ``ctx.obj``)."""
    obj = ctx.find_root().obj
    return bool(obj.get("quiet", False)) if isinstance(obj, dict) else False


def stdout() -> Console:
    """Console for results (stdout). Created per call so that tests capturing stdout see it."""
    return Console(file=sys.stdout, soft_wrap=True, highlight=False)


def stderr() -> Console:
    """Console for progress, warnings and errors (stderr)."""
    return Console(file=sys.stderr, highlight=False)


def progress_sink(ctx: typer.Context) -> RichProgressSink:
    """A rich progress display on stderr; the bar shows only on a terminal and without ``-q``."""
    from segkit.cli._progress import RichProgressSink

    console = stderr()
    show = console.is_terminal and not os.environ.get("SEGKIT_NO_PROGRESS")
    return RichProgressSink(console, show_bar=show, quiet=is_quiet(ctx))


def print_json(obj: Any) -> None:
    """Write `obj` as indented JSON to stdout (NaN written as NaN, like nnU-Net's JSON files)."""
    from segkit.io import json_text

    sys.stdout.write(json_text(obj))


def relpath(path: Path | str) -> str:
    """`path` for printing through rich: relative to the working directory when below it, markup escaped.

    Escaped so that a folder named ``cohort [backup]`` prints as such and one containing ``[/]`` does
    not break the output; use it for every path in a console line or table cell.
    """
    from rich.markup import escape

    p = Path(path)
    try:
        shown = str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(p)
    return escape(shown)
