"""Reading nnU-Net v2 plans files: pure JSON, no framework import.

One reader for everything in segkit that looks at plans: the nnU-Net backends (checks before training)
and `segkit viz arch`. A plans file maps configuration names (``2d``, ``3d_fullres``, ...) to settings;
a configuration may inherit from another (``inherits_from``), which nnU-Net applies as a shallow
``dict.update`` of the child onto its parent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segkit.errors import ConfigError, DataError


def load_plans(path: Path) -> dict[str, Any]:
    """Read a plans file.

    Raises:
        DataError: Unreadable, not JSON, or not nnU-Net plans (no ``configurations``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        msg = f"{path}: cannot read plans ({err.strerror or err})"
        raise DataError(msg) from err
    try:
        plans = json.loads(text)
    except ValueError as err:
        msg = f"{path}: not valid JSON ({err})"
        raise DataError(msg) from err
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        msg = f"{path}: not an nnU-Net plans file (no 'configurations' mapping)"
        raise DataError(msg)
    return plans


def resolve_configuration(plans: Mapping[str, Any], key: str, *, source: Path | str = "plans") -> dict[str, Any]:
    """A configuration with its ``inherits_from`` chain applied (parent first, shallow update, as nnU-Net).

    Raises:
        ConfigError: The key (or a parent) is not in the plans (the message lists the keys), or the
            inheritance is circular.
    """
    configurations = plans["configurations"]
    chain: list[str] = []
    current = key
    while True:
        if current not in configurations:
            known = ", ".join(sorted(configurations))
            what = f"configuration {current!r}" if current == key else f"parent configuration {current!r} of {key!r}"
            msg = f"{source}: no {what}; the plans have {known}"
            raise ConfigError(msg)
        if current in chain:
            msg = f"{source}: configurations inherit in a circle: {' -> '.join([*chain, current])}"
            raise ConfigError(msg)
        chain.append(current)
        parent = configurations[current].get("inherits_from")
        if parent is None:
            break
        current = parent
    resolved: dict[str, Any] = {}
    for name in reversed(chain):
        resolved.update(configurations[name])
    resolved.pop("inherits_from", None)
    return resolved
