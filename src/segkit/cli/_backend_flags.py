"""Backend-specific command-line flags of segkit's own backends, mapped onto ``backends.<name>.<option>``.

`segkit train` and `segkit infer` accept the seed scripts' flags of every built-in backend; a flag
is routed to the selected backend's options, and a flag that belongs to another backend is a usage
error. Third-party backends are configured with ``--option KEY=VALUE`` (or ``--set backends.x.KEY=...``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from segkit.config.load import load_config
from segkit.config.models import SegkitConfig
from segkit.errors import ConfigError

FLAG_OWNERS: dict[str, dict[str, str]] = {
    # flag parameter name -> {backend: option field}
    "configuration": {"nnunet": "configuration"},
    "planner": {"nnunet": "planner"},
    "plans": {"nnunet": "plans"},
    "trainer": {"nnunet": "trainer"},
    "epochs": {"nnunet": "epochs"},
    "iterations_per_epoch": {"nnunet": "iterations_per_epoch"},
    "val_iterations_per_epoch": {"nnunet": "val_iterations_per_epoch"},
    "checkpoint_every": {"nnunet": "checkpoint_every"},
    "mirroring": {"nnunet": "mirroring"},
    "final_validation": {"nnunet": "final_validation"},
    "npz": {"nnunet": "npz"},
    "continue_training": {"nnunet": "continue_training"},
    "pretrained_weights": {"nnunet": "pretrained_weights"},
    "num_gpus": {"nnunet": "num_gpus"},
    "da_processes": {"nnunet": "data_augmentation_processes"},
    "num_processes": {"nnunet": "num_processes"},
    "checkpoint": {"nnunet": "checkpoint"},
    "tile_step_size": {"nnunet": "tile_step_size"},
    "tta": {"nnunet": "test_time_mirroring"},
}


def _flag(param: str) -> str:
    return "--" + param.replace("_", "-")


def backend_flags(backend: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted config keys (``backends.<backend>.<option>``) for the flags given on the command line.

    Raises:
        ConfigError: A flag of another backend was given.
    """
    out: dict[str, Any] = {}
    for param, value in given.items():
        if value is None:
            continue
        owners = FLAG_OWNERS[param]
        if backend not in owners:
            names = ", ".join(owners)
            msg = f"{_flag(param)} is an option of the {names} backend, not of {backend!r}"
            raise ConfigError(msg, hint=f"use --option KEY=VALUE for options of {backend!r}")
        out[f"backends.{backend}.{owners[backend]}"] = value
    return out


def option_items(backend: str, items: Iterable[str] | None) -> list[str]:
    """``--option KEY=VALUE`` -> ``--set backends.<backend>.KEY=VALUE`` items."""
    out = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            msg = f"--option {item!r}: expected KEY=VALUE"
            raise ConfigError(msg)
        out.append(f"backends.{backend}.{key.strip()}={value}")
    return out


def parse_folds(values: Sequence[str] | None) -> Any:
    """``--fold 0 1`` / ``--fold all`` -> 0, "all" or a list; None when not given.

    Raises:
        ConfigError: A value that is neither an integer nor ``all``.
    """
    if not values:
        return None
    folds: list[Any] = []
    for value in values:
        if value == "all":
            folds.append("all")
            continue
        try:
            folds.append(int(value))
        except ValueError:
            msg = f"--fold {value!r}: expected a fold index (0-4) or 'all'"
            raise ConfigError(msg) from None
    return folds[0] if len(folds) == 1 else folds


def resolve_with_backend(
    config: Path | None,
    sets: list[str] | None,
    options: list[str] | None,
    section: str,
    common: dict[str, Any],
    flags: dict[str, Any],
) -> SegkitConfig:
    """Resolve the run config, routing backend flags to the backend the command will use.

    The backend is known only after the YAML and ``--set`` are applied, so resolution runs twice.
    """
    sets = list(sets or [])
    first = load_config(config, sets=sets, flags=common)
    name = getattr(first, section).backend
    dotted = {**common, **backend_flags(name, flags)}
    return load_config(config, sets=[*sets, *option_items(name, options)], flags=dotted)
