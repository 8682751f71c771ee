"""`segkit viz arch`: read an nnU-Net plans file and describe (and draw) the network of one configuration.

nnU-Net v2 plans hold, per configuration, the network class and its constructor arguments
(``architecture.network_class_name`` and ``architecture.arch_kwargs``: stages, features, kernels, strides,
convolutions or residual blocks per stage). A configuration may inherit from another
(``inherits_from``); like nnU-Net, the child is applied to its parent with a shallow ``dict.update``.

Known classes: ``PlainConvUNet`` (plain convolution stages), ``ResidualEncoderUNet`` (residual encoder
blocks, ``n_blocks_per_stage``) and any class whose name contains ``Mamba`` (a residual-encoder U-Net
with a Mamba block on the flattened bottleneck, e.g. segkit's UMambaBot2 in the ``3d_fullres_umamba2``
configuration that ``segkit data plan --backend umamba2`` adds), which is drawn with the Mamba block as
its own stage. Any other class is described
generically from its arguments, with a warning.

This module only reads JSON; figures are drawn in `segkit.viz.arch_figures`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from segkit.data.nnunet_plans import load_plans, resolve_configuration
from segkit.errors import DataError

NetworkKind = Literal["PlainConvUNet", "ResidualEncoderUNet", "Mamba", "generic"]
PLANS_FILE_IN_RESULTS = "plans.json"
_DATASET_ID = re.compile(r"^(?:Dataset)?(\d{1,3})(?:_.*)?$")


# --- finding the plans -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlansLocation:
    """Where the plans were found.

    Attributes:
        path: The chosen plans file.
        alternatives: Other candidates that were found, best first.
        searched: Folders that were searched (for messages).
    """

    path: Path
    alternatives: tuple[Path, ...] = ()
    searched: tuple[Path, ...] = ()


def _is_plans_name(name: str) -> bool:
    return name == PLANS_FILE_IN_RESULTS or (name.endswith(".json") and "Plans" in name)


def _candidates_in(folder: Path, configuration: str) -> list[Path]:
    """Plans files in a folder, best first: a trained model's plans.json, then nnUNetPlans, then others.

    A results dataset folder holds ``<Trainer>__<Plans>__<configuration>/plans.json``: those of the
    requested configuration and of the default trainer come first, newest first.
    """
    direct = sorted((p for p in folder.iterdir() if p.is_file() and _is_plans_name(p.name)), key=_plans_rank)
    nested = []
    for sub in folder.iterdir():
        plans = sub / PLANS_FILE_IN_RESULTS
        if sub.is_dir() and plans.is_file():
            parts = sub.name.split("__")
            config_match = len(parts) == 3 and parts[2] == configuration
            default_trainer = parts[0] == "nnUNetTrainer"
            nested.append((not config_match, not default_trainer, -plans.stat().st_mtime, plans))
    return [*direct, *(p for *_, p in sorted(nested))]


def _plans_rank(path: Path) -> tuple[int, str]:
    order = {PLANS_FILE_IN_RESULTS: 0, "nnUNetPlans.json": 1}
    return (order.get(path.name, 2), path.name)


def _dataset_folders(hint: str, roots: Sequence[Path]) -> list[Path]:
    """Dataset folders under the roots named by a dataset id (``501``) or name (``Dataset501_X``)."""
    match = _DATASET_ID.match(hint)
    found = []
    for root in roots:
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir()):
            if not entry.is_dir():
                continue
            if entry.name == hint or (match and re.match(rf"^Dataset{int(match.group(1)):03d}_", entry.name)):
                found.append(entry)
    return found


def locate_plans(
    target: str | Path, *, configuration: str = "3d_fullres", search_roots: Sequence[Path] = ()
) -> PlansLocation:
    """Find a plans file from a file, a folder, a dataset id or name, or a plans file name.

    Args:
        target: A plans ``.json``; a folder holding one (a trained model's folder with ``plans.json``, a
            results dataset folder with trainer folders, or a preprocessed dataset folder with
            ``nnUNetPlans.json``); a dataset id (``501``) or name (``Dataset501_BraTSPostTx``); or a
            plans file name (``nnUNetResEncUNetMPlans.json``) searched in the dataset folders.
        configuration: Preferred configuration when trained models of several exist.
        search_roots: Where to look for datasets: nnUNet_results first, then nnUNet_preprocessed.

    Raises:
        DataError: Nothing found; the message says where it looked and which datasets exist.
    """
    path = Path(target).expanduser()
    if path.is_file():
        return PlansLocation(path)
    if path.is_dir():
        found = _candidates_in(path, configuration)
        if not found:
            msg = f"{path}: no plans file here (expected plans.json, nnUNetPlans.json or <Trainer>__*/plans.json)"
            raise DataError(msg)
        return PlansLocation(found[0], tuple(found[1:]), (path,))
    roots = [Path(r) for r in search_roots]
    hint = str(target)
    folders = _dataset_folders(hint, roots)
    found = []
    for folder in folders:
        found.extend(_candidates_in(folder, configuration))
    if not found and _is_plans_name(Path(hint).name if hint.endswith(".json") else f"{hint}.json"):
        name = hint if hint.endswith(".json") else f"{hint}.json"
        for root in roots:
            if root.is_dir():
                found.extend(sorted(root.glob(f"Dataset*/{name}")))
    if found:
        return PlansLocation(found[0], tuple(found[1:]), tuple(folders) or tuple(roots))
    datasets = sorted({p.name for r in roots if r.is_dir() for p in r.iterdir() if p.name.startswith("Dataset")})
    where = ", ".join(str(r) for r in roots) or "(no nnU-Net folders configured)"
    known = f"; datasets there: {', '.join(datasets)}" if datasets else "; no datasets there"
    msg = f"no plans found for {hint!r}: not a file or folder, and no matching dataset under {where}{known}"
    raise DataError(msg, hint="pass a plans.json, a results folder, or a dataset id such as 501")


# --- reading them ----------------------------------------------------------------------------------


# --- describing the network ------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One resolution level of the network.

    Attributes:
        part: ``"encoder"``, ``"bottleneck"``, ``"mamba"`` or ``"decoder"``.
        index: Stage number (encoder 0 = full resolution; decoder numbered from the bottom).
        features: Output channels.
        kernel: Convolution kernel size per spatial axis.
        stride: Down-sampling stride of the first convolution (encoder) or up-sampling stride of the
            transposed convolution (decoder).
        blocks: Convolutions (plain), residual blocks (encoder of residual nets) or convolutions after
            the skip concatenation (decoder).
        size: Feature-map size (voxels per axis) for the planned patch.
        residual: Whether the blocks are residual.
    """

    part: Literal["encoder", "bottleneck", "mamba", "decoder"]
    index: int
    features: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    blocks: int
    size: tuple[int, ...]
    residual: bool = False


@dataclass(frozen=True)
class Architecture:
    """Everything the table and the figures show about one configuration.

    Attributes:
        plans_path: The plans file.
        plans_name: ``plans_name`` of the plans.
        dataset: ``dataset_name`` of the plans.
        configuration: The configuration key.
        network_class: Full network class name from the plans.
        kind: How it is drawn.
        patch_size: Training patch (voxels per axis).
        spacing: Target spacing (mm per axis).
        batch_size: Training batch size.
        input_channels: Image channels, if known (from the plans' intensity properties).
        num_classes: Output channels, if known (from a dataset.json beside the plans).
        conv: Convolution op (short name).
        norm: Normalisation op (short name).
        nonlin: Non-linearity (short name).
        stages: Encoder stages (the last one is the bottleneck), the Mamba block if any, decoder stages.
        warnings: Things the reader should know (e.g. an unknown network class).
    """

    plans_path: Path
    plans_name: str
    dataset: str
    configuration: str
    network_class: str
    kind: NetworkKind
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    batch_size: int | None
    input_channels: int | None
    num_classes: int | None
    conv: str
    norm: str
    nonlin: str
    stages: tuple[Stage, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def class_short(self) -> str:
        """Network class name without its module."""
        return self.network_class.rsplit(".", 1)[-1]

    @property
    def encoder(self) -> list[Stage]:
        """Encoder stages including the bottleneck."""
        return [s for s in self.stages if s.part in ("encoder", "bottleneck")]

    @property
    def decoder(self) -> list[Stage]:
        """Decoder stages, bottom (coarsest) first."""
        return [s for s in self.stages if s.part == "decoder"]

    @property
    def mamba(self) -> Stage | None:
        """The Mamba bottleneck block, if the network has one."""
        return next((s for s in self.stages if s.part == "mamba"), None)

    def rows(self) -> list[dict[str, str]]:
        """Table rows: stage, features, kernel, stride, blocks, feature-map size."""
        out = []
        for s in self.stages:
            if s.part == "mamba":
                tokens = math.prod(s.size)
                out.append(
                    {
                        "stage": "Mamba bottleneck",
                        "features": str(s.features),
                        "kernel": "-",
                        "stride": "-",
                        "blocks": f"LayerNorm + Mamba2, {tokens} tokens",
                        "size": _x(s.size),
                    }
                )
                continue
            name = {"encoder": "encoder", "bottleneck": "bottleneck", "decoder": "decoder"}[s.part]
            blocks = f"{s.blocks} residual" if s.residual else f"{s.blocks} conv"
            out.append(
                {
                    "stage": f"{name} {s.index}",
                    "features": str(s.features),
                    "kernel": _x(s.kernel),
                    "stride": ("up " if s.part == "decoder" else "") + _x(s.stride),
                    "blocks": blocks,
                    "size": _x(s.size),
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "plans": str(self.plans_path),
            "plans_name": self.plans_name,
            "dataset": self.dataset,
            "configuration": self.configuration,
            "network_class": self.network_class,
            "kind": self.kind,
            "patch_size": list(self.patch_size),
            "spacing": list(self.spacing),
            "batch_size": self.batch_size,
            "input_channels": self.input_channels,
            "num_classes": self.num_classes,
            "conv": self.conv,
            "norm": self.norm,
            "nonlin": self.nonlin,
            "stages": self.rows(),
            "warnings": list(self.warnings),
        }


def _x(values: Sequence[Any]) -> str:
    return "x".join(str(v) for v in values)


def _short(name: Any) -> str:
    return str(name).rsplit(".", 1)[-1] if name else "-"


def network_kind(class_name: str) -> NetworkKind:
    """How a network class is drawn, from its name."""
    short = class_name.rsplit(".", 1)[-1]
    if "mamba" in short.lower():
        return "Mamba"
    if short == "ResidualEncoderUNet":
        return "ResidualEncoderUNet"
    if short == "PlainConvUNet":
        return "PlainConvUNet"
    return "generic"


def _per_stage(value: Any, n: int, what: str, source: str) -> list[Any]:
    if isinstance(value, int | float):
        return [value] * n
    if not isinstance(value, list | tuple) or len(value) != n:
        msg = f"{source}: {what} should have {n} entries, found {value!r}"
        raise DataError(msg)
    return list(value)


def _arch_kwargs(config: Mapping[str, Any], source: str) -> tuple[str, dict[str, Any]]:
    """Network class and constructor arguments, also from pre-2.2 plans (UNet_class_name, pool kernels)."""
    arch = config.get("architecture")
    if isinstance(arch, Mapping) and isinstance(arch.get("arch_kwargs"), Mapping):
        return str(arch.get("network_class_name", "unknown")), dict(arch["arch_kwargs"])
    if "conv_kernel_sizes" in config and "pool_op_kernel_sizes" in config:
        kernels = config["conv_kernel_sizes"]
        n = len(kernels)
        base = int(config.get("UNet_base_num_features", 32))
        cap = int(config.get("unet_max_num_features", 320))
        return str(config.get("UNet_class_name", "PlainConvUNet")), {
            "n_stages": n,
            "features_per_stage": [min(base * 2**i, cap) for i in range(n)],
            "kernel_sizes": kernels,
            "strides": config["pool_op_kernel_sizes"],
            "n_conv_per_stage": config.get("n_conv_per_stage_encoder", 2),
            "n_conv_per_stage_decoder": config.get("n_conv_per_stage_decoder", 2),
        }
    msg = f"{source}: the configuration has no architecture description (architecture.arch_kwargs)"
    raise DataError(msg)


def describe(
    plans: Mapping[str, Any],
    configuration: str = "3d_fullres",
    *,
    plans_path: Path = Path("plans.json"),
    dataset_json: Mapping[str, Any] | None = None,
) -> Architecture:
    """Describe the network of one configuration of a plans dict.

    Args:
        plans: Parsed plans (see `load_plans`).
        configuration: Configuration key; ``inherits_from`` is resolved.
        plans_path: Where the plans came from (for messages and the summary).
        dataset_json: The dataset.json, for the number of output classes (optional).

    Raises:
        ConfigError: Unknown configuration.
        DataError: The configuration does not describe a network segkit can read.
    """
    source = str(plans_path)
    config = resolve_configuration(plans, configuration, source=source)
    class_name, kw = _arch_kwargs(config, source)
    kind = network_kind(class_name)
    warnings: list[str] = []
    if kind == "generic":
        warnings.append(f"unknown network class {class_name}: drawn as a generic U-Net from its plans arguments")
    try:
        kernels = [tuple(int(v) for v in k) for k in kw["kernel_sizes"]]
        strides = [tuple(int(v) for v in s) for s in kw["strides"]]
        n = int(kw.get("n_stages", len(kernels)))
        features = [int(f) for f in _per_stage(kw["features_per_stage"], n, "features_per_stage", source)]
    except (KeyError, TypeError, ValueError) as err:
        msg = f"{source}: configuration {configuration!r} lacks a readable {err} in architecture.arch_kwargs"
        raise DataError(msg) from err
    if not (len(kernels) == len(strides) == n):
        msg = f"{source}: kernel_sizes, strides and n_stages disagree ({len(kernels)}, {len(strides)}, {n})"
        raise DataError(msg)
    residual = kind in ("ResidualEncoderUNet", "Mamba") or "n_blocks_per_stage" in kw
    enc_blocks = _per_stage(kw.get("n_blocks_per_stage", kw.get("n_conv_per_stage", 2)), n, "blocks per stage", source)
    dec_convs = _per_stage(kw.get("n_conv_per_stage_decoder", 2), n - 1, "n_conv_per_stage_decoder", source)
    patch = tuple(int(p) for p in config.get("patch_size", [0] * len(kernels[0])))
    sizes = []
    current = patch
    for s in strides:
        current = tuple(max(1, c // st) if c else 0 for c, st in zip(current, s, strict=False))
        sizes.append(current)
    stages: list[Stage] = []
    for i in range(n):
        part: Literal["encoder", "bottleneck"] = "bottleneck" if i == n - 1 else "encoder"
        stages.append(Stage(part, i, features[i], kernels[i], strides[i], int(enc_blocks[i]), sizes[i], residual))
    if kind == "Mamba":
        stages.append(Stage("mamba", n - 1, features[-1], (), (), 1, sizes[-1]))
    for d in range(n - 1):
        level = n - 2 - d  # encoder stage whose skip this decoder stage joins
        stages.append(
            Stage("decoder", d, features[level], kernels[level], strides[level + 1], int(dec_convs[d]), sizes[level])
        )
    channels = plans.get("foreground_intensity_properties_per_channel")
    input_channels = len(channels) if isinstance(channels, Mapping) and channels else None
    num_classes = None
    if dataset_json and isinstance(dataset_json.get("labels"), Mapping):
        num_classes = len(dataset_json["labels"])
    batch = config.get("batch_size")
    return Architecture(
        plans_path=Path(plans_path),
        plans_name=str(plans.get("plans_name", Path(plans_path).stem)),
        dataset=str(plans.get("dataset_name", "")),
        configuration=configuration,
        network_class=class_name,
        kind=kind,
        patch_size=patch,
        spacing=tuple(float(s) for s in config.get("spacing", [])),
        batch_size=int(batch) if isinstance(batch, int | float) else None,
        input_channels=input_channels,
        num_classes=num_classes,
        conv=_short(kw.get("conv_op", "Conv3d" if len(kernels[0]) == 3 else "Conv2d")),
        norm=_short(kw.get("norm_op")),
        nonlin=_short(kw.get("nonlin")),
        stages=tuple(stages),
        warnings=tuple(warnings),
    )


def read_architecture(path: Path, configuration: str = "3d_fullres") -> Architecture:
    """Load a plans file (and a dataset.json beside it, if any) and describe one configuration.

    Raises:
        DataError, ConfigError: See `load_plans` and `describe`.
    """
    plans = load_plans(path)
    dataset_json = None
    beside = Path(path).parent / "dataset.json"
    if beside.is_file():
        try:
            dataset_json = json.loads(beside.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            dataset_json = None  # only used for the class count; the plans are what matters
    return describe(plans, configuration, plans_path=Path(path), dataset_json=dataset_json)
