"""Import optional or heavy dependencies inside the functions that need them."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from segkit.errors import MissingDependencyError


def require(module: str, *, extra: str | None = None, dist: str | None = None) -> ModuleType:
    """Import `module`, or raise `MissingDependencyError` naming how to install it.

    Args:
        module: Dotted module name, e.g. ``"mamba_ssm"``.
        extra: The segkit extra that provides it, if any, e.g. ``"mamba"``.
        dist: The distribution name when it differs from the module name.

    Raises:
        MissingDependencyError: If the module is not installed or fails to import.
    """
    name = dist or module.split(".")[0]
    hint = f"uv pip install 'segkit[{extra}]'" if extra else f"uv pip install {name}"
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        msg = f"{name} is not installed"
        raise MissingDependencyError(msg, hint=hint)
    try:
        return importlib.import_module(module)
    except ImportError as err:
        msg = f"{name} is installed but cannot be imported: {err}"
        raise MissingDependencyError(msg, hint=hint) from err
