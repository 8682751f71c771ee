"""``segkit backends``: list the installed backends."""

from __future__ import annotations

import typer

from segkit.cli._common import stdout

app = typer.Typer()


@app.command("backends")
def backends_cmd() -> None:
    """List installed training/inference backends and whether each can run here."""
    from rich.markup import escape
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
        status = "[green]available[/]" if info.available else f"[yellow]{escape(info.status)}[/]"
        description = f"{info.summary}\n{info.note}" if info.note else info.summary
        table.add_row(escape(info.name), status, escape(info.target), escape(description))
    console.print(table)
