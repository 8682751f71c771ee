"""Backends are plugins found through the ``segkit.backends`` entry-point group (segkit's own too).

`discover` lists entry points without importing anything. `describe` imports an adapter module, which
by contract imports no framework, and asks the adapter whether its framework is installed
(`find_spec`, never an import). Only `load_backend` instantiates an adapter. A plugin that fails to
import is reported as unavailable instead of breaking unrelated commands.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from segkit.errors import BackendError, BackendNotFoundError, did_you_mean

GROUP = "segkit.backends"


def discover() -> dict[str, EntryPoint]:
    """Backend name -> entry point, for every installed backend. Imports nothing.

    When two distributions declare the same name with different targets, the first wins and a
    warning names both.
    """
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        previous = found.get(ep.name)
        if previous is not None:
            if previous.value != ep.value:
                warnings.warn(
                    f"backend {ep.name!r} is declared twice ({previous.value} and {ep.value}); using {previous.value}",
                    stacklevel=2,
                )
            continue
        found[ep.name] = ep
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class BackendInfo:
    """One row of ``segkit backends``."""

    name: str
    target: str
    available: bool
    reason: str | None = None
    summary: str = ""
    note: str = ""
    """What the backend says about this machine (e.g. the kernel it will use), when available."""

    @property
    def status(self) -> str:
        """``available`` or ``unavailable: <reason>``."""
        return "available" if self.available else f"unavailable: {self.reason}"


def describe(name: str, ep: EntryPoint) -> BackendInfo:
    """Import the adapter class (not its framework) and ask whether it can run here."""
    try:
        cls = ep.load()
    except Exception as err:  # a broken plugin must not break `segkit backends`
        return BackendInfo(name, ep.value, False, f"cannot import {ep.value}: {err}")
    summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    check = getattr(cls, "unavailable_reason", None)
    try:
        reason = check() if callable(check) else None
    except Exception as err:  # a plugin's own check must not break the listing either
        reason = f"its availability check failed: {err}"
    note = ""
    describe_here = getattr(cls, "environment_note", None)
    if reason is None and callable(describe_here):
        try:
            note = str(describe_here())
        except Exception as err:  # as above: one backend's note must not break the listing
            note = f"(cannot tell: {err})"
    return BackendInfo(name, ep.value, reason is None, reason, summary, note)


def list_backends(available: Mapping[str, EntryPoint] | None = None) -> list[BackendInfo]:
    """Every installed backend with its availability."""
    available = discover() if available is None else available
    return [describe(name, ep) for name, ep in available.items()]


def load_backend(name: str, *, available: Mapping[str, EntryPoint] | None = None) -> Any:
    """Instantiate the backend called `name`.

    Raises:
        BackendNotFoundError: No backend of that name (the message suggests the closest name).
        BackendError: The adapter cannot be imported, or its framework is missing.
    """
    available = discover() if available is None else available
    if name not in available:
        known = ", ".join(available) or "none"
        msg = f"unknown backend {name!r}{did_you_mean(name, available)} (installed: {known})"
        raise BackendNotFoundError(msg)
    info = describe(name, available[name])
    if not info.available:
        msg = f"backend {name!r} is {info.status}"
        raise BackendError(msg)
    from segkit.backends.base import Backend

    backend = available[name].load()()
    if not isinstance(backend, Backend):
        msg = f"{available[name].value} does not implement segkit's Backend protocol"
        raise BackendError(msg)
    return backend
