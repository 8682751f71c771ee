"""Errors written for the end user.

Library code raises these and never prints or exits; the CLI renders one line (plus an optional hint)
and exits with `exit_code`. Anything that is not a `SegkitError` is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import ClassVar


class SegkitError(Exception):
    """An error whose message is meant to be shown to the user as one line."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(SegkitError):
    """Invalid configuration, flag combination or command-line usage."""

    exit_code = 2


class DataError(SegkitError):
    """Input data that cannot be used: missing, unreadable or inconsistent files."""


class OutputError(SegkitError):
    """An output location that cannot be written or would clobber something."""


class BackendError(SegkitError):
    """A training/inference backend failed or cannot be used."""


class BackendNotFoundError(BackendError):
    """No backend of that name is installed."""

    exit_code = 2


class MissingDependencyError(BackendError):
    """An optional dependency is not installed."""


class BackendRuntimeError(BackendError):
    """The framework behind a backend failed while running."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """Return the choice closest to `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return `"; did you mean 'x'?"` for the closest choice, or an empty string."""
    match = closest(name, choices)
    return f"; did you mean {match!r}?" if match else ""
