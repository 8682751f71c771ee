"""A `ProgressSink` rendered with rich on stderr."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgressSink:
    """Shows the current task as a transient bar; `log` lines stay on screen (unless quiet).

    Use as a context manager so that the display is torn down even when the work fails.
    """

    def __init__(self, console: Console, *, show_bar: bool, quiet: bool = False) -> None:
        self._console = console
        self._quiet = quiet
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not show_bar or quiet,
        )
        self._task: TaskID | None = None
        self._running = False

    def __enter__(self) -> RichProgressSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()
        if self._running:
            self._progress.stop()
            self._running = False

    def start(self, description: str, total: int | None = None) -> None:
        """Open a task (replacing any open one)."""
        try:
            if not self._running:
                self._progress.start()
                self._running = True
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(description, total=total, status="")
        except Exception:  # a broken display must never break the work
            self._task = None

    def advance(self, n: int = 1, **fields: Any) -> None:
        """Advance the open task; `fields` are shown as ``key=value``."""
        if self._task is None:
            return
        status = "  ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        try:
            if status:
                self._progress.update(self._task, advance=n, status=status)
            else:
                self._progress.update(self._task, advance=n)
        except Exception:
            pass

    def log(self, message: str) -> None:
        """Print a line above the bar (kept after the bar disappears)."""
        if not self._quiet:
            self._console.print(message, highlight=False)

    def finish(self) -> None:
        """Close the open task."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                self._progress.remove_task(self._task)
            self._task = None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
