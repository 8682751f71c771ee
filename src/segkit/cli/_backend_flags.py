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
    "overwrite": {"nnunet": "overwrite", "monai": "overwrite"},
    "pretrained_weights": {"nnunet": "pretrained_weights"},
    "num_gpus": {"nnunet": "num_gpus"},
    "da_processes": {"nnunet": "data_augmentation_processes"},
    "num_processes": {"nnunet": "num_processes"},
    "checkpoint": {"nnunet": "checkpoint", "monai": "checkpoint"},
    "tile_step_size": {"nnunet": "tile_step_size"},
    "tta": {"nnunet": "test_time_mirroring"},
    # MONAI bundle backend (train_monai_finetune.py / infer_monai_finetune.py)
    "data_root": {"monai": "data_root"},
    "split_json": {"monai": "split_json"},
    "dataset_json": {"monai": "dataset_json"},
    "output_root": {"monai": "output_root"},
    "stage1_epochs": {"monai": "stage1_epochs"},
    "stage2_epochs": {"monai": "stage2_epochs"},
    "stage1_lr": {"monai": "stage1_lr"},
    "stage2_lr": {"monai": "stage2_lr"},
    "batch_size": {"monai": "batch_size"},
    "stage1_accum": {"monai": "stage1_accum"},
    "stage2_accum": {"monai": "stage2_accum"},
    "patch_size": {"monai": "patch_size"},
    "spacing": {"monai": "spacing"},
    "class_weights": {"monai": "class_weights"},
    "encoder_prefix": {"monai": "encoder_prefix"},
    "resume": {"monai": "resume"},
    "resume_stage": {"monai": "resume_stage"},
    "load_weights": {"monai": "load_weights"},
    "amp": {"monai": "amp"},
    "cache_rate": {"monai": "cache_rate"},
    "save_checkpoint_frequency": {"monai": "save_checkpoint_frequency"},
    "bundle_name": {"monai": "bundle_name"},
    "bundle_dir": {"monai": "bundle_dir"},
    "bundle_url": {"monai": "bundle_url"},
    "trust_bundle": {"monai": "trust_bundle"},
    "roi_size": {"monai": "roi_size"},
    "sw_batch_size": {"monai": "sw_batch_size"},
    "sw_overlap": {"monai": "sw_overlap"},
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
