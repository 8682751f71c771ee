"""Progress reporting without a UI dependency.

Long-running library functions take a `ProgressSink` and report events to it; they never print. The CLI
passes a rich-backed sink (`segkit.cli._progress`), notebooks and tests use `NullProgress` or their own.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ProgressSink(Protocol):
    """Receiver of progress events.

    Contract:
        - `start` opens a task; a sink shows at most one task at a time, and a new `start` replaces it.
        - `advance` moves the open task forward by `n` units; `fields` are short status values
          (e.g. ``loss=0.41``) that a sink may display next to the bar.
        - `log` records a line that should stay visible after the task ends (e.g. an epoch summary).
        - `finish` closes the open task. Calling it with no task open is allowed.
        - Sinks never raise; a failing display must not break the work it reports.
    """

    def start(self, description: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1, **fields: Any) -> None: ...

    def log(self, message: str) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """A sink that ignores every event (the default for library calls)."""

    def start(self, description: str, total: int | None = None) -> None:
        """Ignore the start of a task."""

    def advance(self, n: int = 1, **fields: Any) -> None:
        """Ignore progress."""

    def log(self, message: str) -> None:
        """Ignore a message."""

    def finish(self) -> None:
        """Ignore the end of a task."""


class RecordingProgress:
    """A sink that records events as tuples; handy in tests and notebooks."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def start(self, description: str, total: int | None = None) -> None:
        """Record ``("start", description, total)``."""
        self.events.append(("start", description, total))

    def advance(self, n: int = 1, **fields: Any) -> None:
        """Record ``("advance", n, fields)``."""
        self.events.append(("advance", n, fields))

    def log(self, message: str) -> None:
        """Record ``("log", message)``."""
        self.events.append(("log", message))

    def finish(self) -> None:
        """Record ``("finish",)``."""
        self.events.append(("finish",))
