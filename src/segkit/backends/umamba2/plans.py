"""The UMamba2 configuration of nnU-Net plans: added after planning, checked before training and inference.

`add_umamba2_configuration` turns the plans nnU-Net's residual-encoder planner wrote into plans with one more
configuration, `CONFIGURATION`, that ``inherits_from`` ``3d_fullres`` and names `NETWORK_CLASS` (nnU-Net
builds it by that dotted name). nnU-Net resolves inheritance with a shallow ``dict.update`` of the child onto
its parent (``PlansManager._internal_resolve_configuration_inheritance``), so the child stores only the keys
that differ, and the ``architecture`` block whole: a partial block would replace the parent's and lose the
rest of it.

Two layouts:

- ``planner``: the planner's own residual encoder U-Net for this dataset (stages, features, kernels,
  strides, blocks), with the Mamba2 layer on its bottleneck.
- ``stsr2025``: the 7-stage network of U-Mamba2's STSR 2025 recipe (features 32..320, strides ending
  ``[1, 2, 2]``, 142.1 M parameters), patch 160x256x256, batch 1, ``batch_dice`` off, unless a patch or
  batch size is given.

`check_umamba2_configuration` is the same structural check on plans read from disk, so that training and
inference fail in one line before any work.

Pure JSON: this module imports neither torch nor nnunetv2.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from segkit.data.nnunet_plans import resolve_configuration
from segkit.errors import ConfigError, DataError

CONFIGURATION = "3d_fullres_umamba2"
"""Key of the UMamba2 configuration in the plans."""
PARENT = "3d_fullres"
"""The configuration it inherits from (spacing, resampling, preprocessing, and with layout ``planner`` the network)."""
NETWORK_CLASS = "segkit.backends.umamba2.network.UMambaBot2"
"""``architecture.network_class_name`` of the configuration."""
LAYOUTS = ("planner", "stsr2025")
"""Where the stages come from: the planner's residual encoder U-Net, or the seed's STSR 2025 network."""
NORMALIZATIONS: dict[str, str] = {
    "zscore": "ZScoreNormalization",
    "ct": "CTNormalization",
    "none": "NoNormalization",
    "rescale01": "RescaleTo01Normalization",
}
"""segkit name -> nnU-Net normalisation scheme (class name in ``nnunetv2.preprocessing.normalization``)."""

KW_REQUIRES_IMPORT = ("conv_op", "norm_op", "dropout_op", "nonlin")
"""nnU-Net's ``_kw_requires_import``: the ``arch_kwargs`` that are dotted names of classes."""
MIXER_DEFAULTS: dict[str, int] = {"d_state": 32, "d_conv": 4, "expand": 2, "headdim": 80}
"""U-Mamba2's Mamba2 sizes (also `UMambaBot2`'s defaults, used when a plans' ``arch_kwargs`` omit them)."""

STSR2025_PATCH = (160, 256, 256)
STSR2025_BATCH = 1
# The architecture of the seed's plans edit (reference nnunet_umamba2.md 5.1), strides in nnU-Net's axis
# order (after transpose_forward): the last stage halves only the two in-plane axes.
STSR2025_ARCH: dict[str, Any] = {
    "n_stages": 7,
    "features_per_stage": [32, 64, 128, 256, 320, 320, 320],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 7,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
    "n_blocks_per_stage": [1, 3, 4, 6, 6, 6, 6],
    "n_conv_per_stage_decoder": [1, 1, 1, 1, 1, 1],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}

_HINT = "run `segkit data plan --backend umamba2`"
_RESENC_PLANNERS = "plan with --planner resenc-m (or resenc-l, resenc-xl, nnUNetPlannerResEncL_torchres)"
_ZSCORE = "ZScoreNormalization"


def add_umamba2_configuration(
    plans: dict[str, Any],
    *,
    layout: str = "planner",
    patch_size: list[int] | None = None,
    batch_size: int | None = None,
    normalization: str | None = None,
    features_per_stage: list[int] | None = None,
    d_state: int = 32,
    d_conv: int = 4,
    expand: int = 2,
    headdim: int = 80,
    plans_identifier: str | None = None,
) -> dict[str, Any]:
    """Plans with the `CONFIGURATION` configuration added (or replaced: applying it again is harmless).

    Args:
        plans: nnU-Net plans with a ``3d_fullres`` configuration (not modified).
        layout: ``"planner"`` (the ``3d_fullres`` residual encoder U-Net; needs a residual-encoder planner)
            or ``"stsr2025"`` (the seed's 7-stage network).
        patch_size: Training patch in nnU-Net's axis order (default: the layout's); every axis must be a
            multiple of the network's total stride.
        batch_size: Training batch size (default: the layout's).
        normalization: A key of `NORMALIZATIONS` for every channel; None keeps the planner's schemes
            (ZScore for MRI). Schemes other than ``3d_fullres``'s give the configuration its own
            preprocessed data (``data_identifier``); equal ones share ``3d_fullres``'s.
        features_per_stage: Channels per stage (one per stage), e.g. a tiny network for a demo.
        d_state, d_conv, expand, headdim: The Mamba2 mixer's sizes, stored in ``arch_kwargs``.
        plans_identifier: Prefix of an own ``data_identifier`` (default: the plans' ``plans_name``).

    Returns:
        A new plans dict.

    Raises:
        ConfigError: Unknown layout or normalisation, a ``3d_fullres`` that is not a residual encoder U-Net
            (layout ``planner``), or sizes that do not fit (see `check_umamba2_configuration`).
    """
    where = f"{CONFIGURATION} (layout {layout})"
    if layout not in LAYOUTS:
        msg = f"unknown UMamba2 layout {layout!r}; choose one of {', '.join(LAYOUTS)}"
        raise ConfigError(msg)
    if normalization is not None and normalization not in NORMALIZATIONS:
        msg = f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}"
        raise ConfigError(msg)
    configurations = plans.get("configurations")
    if not isinstance(configurations, Mapping) or PARENT not in configurations:
        known = ", ".join(sorted(configurations)) if isinstance(configurations, Mapping) else "none"
        msg = f"{where}: the plans have no {PARENT} configuration to inherit from (they have {known})"
        raise ConfigError(msg)
    parent = resolve_configuration(plans, PARENT, source=where)
    parent_arch = parent.get("architecture")
    if not isinstance(parent_arch, Mapping) or not isinstance(parent_arch.get("arch_kwargs"), Mapping):
        msg = f"{where}: {PARENT} has no architecture.arch_kwargs (old-format plans: plan again with this nnU-Net)"
        raise ConfigError(msg)
    requires = parent_arch.get("_kw_requires_import") or list(KW_REQUIRES_IMPORT)

    if layout == "planner":
        class_name = str(parent_arch.get("network_class_name", "unknown"))
        kw = copy.deepcopy(dict(parent_arch["arch_kwargs"]))
        if class_name.rsplit(".", 1)[-1] != "ResidualEncoderUNet" or "n_blocks_per_stage" not in kw:
            msg = (
                f"{where}: {PARENT} is a {class_name.rsplit('.', 1)[-1]} (no residual encoder, n_blocks_per_stage); "
                f"UMambaBot2 builds on a residual encoder U-Net: {_RESENC_PLANNERS}, or use layout stsr2025"
            )
            raise ConfigError(msg)
        default_patch = parent.get("patch_size")
        default_batch = parent.get("batch_size")
    else:
        kw = copy.deepcopy(STSR2025_ARCH)
        default_patch = list(STSR2025_PATCH)
        default_batch = STSR2025_BATCH
    if features_per_stage is not None:
        n_stages = kw.get("n_stages")
        if not _is_int_list(features_per_stage, positive=True) or len(features_per_stage) != n_stages:
            msg = (
                f"{where}: features_per_stage should be {n_stages} positive integers (one per stage), "
                f"got {features_per_stage!r}"
            )
            raise ConfigError(msg)
        kw["features_per_stage"] = list(features_per_stage)
    kw.update(d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim)

    config: dict[str, Any] = {
        "inherits_from": PARENT,
        "architecture": {
            "network_class_name": NETWORK_CLASS,
            "arch_kwargs": kw,
            "_kw_requires_import": list(requires),
        },
    }
    patch = list(patch_size) if patch_size is not None else default_patch
    if patch != parent.get("patch_size"):
        config["patch_size"] = patch
    batch = batch_size if batch_size is not None else default_batch
    if batch != parent.get("batch_size"):
        config["batch_size"] = batch
    if layout == "stsr2025" and parent.get("batch_dice") is not False:
        config["batch_dice"] = False  # the seed's setting (with batch 1, a batch Dice is a per-case Dice)
    if normalization is not None:
        config.update(_normalization_keys(plans, parent, NORMALIZATIONS[normalization], plans_identifier, where))

    new = copy.deepcopy(plans)
    new["configurations"][CONFIGURATION] = config
    _check_structure(resolve_configuration(new, CONFIGURATION, source=where), where)
    return new


def _normalization_keys(
    plans: Mapping[str, Any], parent: Mapping[str, Any], scheme: str, plans_identifier: str | None, where: str
) -> dict[str, Any]:
    """``normalization_schemes``, ``use_mask_for_norm`` and ``data_identifier`` when they differ from the parent's."""
    schemes = parent.get("normalization_schemes")
    masks = parent.get("use_mask_for_norm")
    if not isinstance(schemes, list) or not schemes or not isinstance(masks, list) or len(masks) != len(schemes):
        msg = f"{where}: {PARENT} has no normalization_schemes/use_mask_for_norm per channel"
        raise ConfigError(msg)
    if scheme == "CTNormalization":
        intensities = plans.get("foreground_intensity_properties_per_channel")
        if not isinstance(intensities, Mapping) or any(str(c) not in intensities for c in range(len(schemes))):
            msg = f"{where}: CT normalisation needs the plans' foreground_intensity_properties_per_channel"
            raise ConfigError(msg)
    # The planner decides once per dataset (from how much cropping to the nonzero region shrank the images)
    # whether ZScore normalises inside the nonzero mask only, and sets False for every other scheme, which
    # would not leave the background at zero. Reuse that decision; with no ZScore channel to read it from,
    # normalise the whole image.
    zscore_masks = [bool(m) for s, m in zip(schemes, masks, strict=True) if s == _ZSCORE]
    mask = (zscore_masks[0] if zscore_masks else False) if scheme == _ZSCORE else False
    new_schemes = [scheme] * len(schemes)
    new_masks = [mask] * len(schemes)
    if new_schemes == schemes and new_masks == masks:
        return {}  # same preprocessing: share 3d_fullres's data instead of a second copy
    identifier = plans_identifier or plans.get("plans_name")
    if not identifier:
        msg = f"{where}: the plans have no plans_name to name the configuration's own data; pass plans_identifier"
        raise ConfigError(msg)
    return {
        "normalization_schemes": new_schemes,
        "use_mask_for_norm": new_masks,
        "data_identifier": f"{identifier}_{CONFIGURATION}",
    }


def bottleneck_tokens(arch_kwargs: Mapping[str, Any], patch_size: Sequence[int]) -> int:
    """Tokens the Mamba layer sees for a patch: the voxels of the bottleneck feature map.

    That is ``prod(patch // total_stride)`` per axis: exact for a patch that nnU-Net accepts (a multiple of
    the total stride on every axis), and 0 when an axis is shorter than its total stride.

    Raises:
        ConfigError: The strides and the patch do not have the same number of axes, or are malformed.
    """
    total = _total_stride(arch_kwargs, len(patch_size), "arch_kwargs")
    return math.prod(int(p) // s for p, s in zip(patch_size, total, strict=True))


def check_umamba2_configuration(plans: Mapping[str, Any], configuration: str, source: str) -> None:
    """Check that plans hold a UMamba2 configuration nnU-Net can build and train, before any work.

    Args:
        plans: Parsed plans (`segkit.data.nnunet_plans.load_plans`).
        configuration: The configuration key (normally `CONFIGURATION`).
        source: The plans file, for messages.

    Raises:
        DataError: The configuration is missing or is not a UMambaBot2 network (the hint says how to add it).
        ConfigError: Its sizes do not fit: stage lists of the wrong length, a patch that is not a multiple
            of the total stride or leaves no bottleneck tokens, ``d_model*expand`` not a multiple of
            ``headdim``, a batch size below 1.
    """
    configurations = plans.get("configurations")
    if not isinstance(configurations, Mapping) or configuration not in configurations:
        known = ", ".join(sorted(configurations)) if isinstance(configurations, Mapping) else "none"
        msg = f"{source}: plans have no {configuration} configuration (they have {known})"
        raise DataError(msg, hint=_HINT)
    resolved = resolve_configuration(plans, configuration, source=source)
    arch = resolved.get("architecture")
    class_name = arch.get("network_class_name") if isinstance(arch, Mapping) else None
    if class_name != NETWORK_CLASS:
        msg = f"{source}: configuration {configuration} is not a UMambaBot2 network (network_class_name {class_name})"
        raise DataError(msg, hint=_HINT)
    _check_structure(resolved, f"{source}: configuration {configuration}")


# --- checks -----------------------------------------------------------------------------------------


def _is_int(value: Any, *, positive: bool = False) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and (value >= 1 or not positive)


def _is_int_list(value: Any, *, positive: bool = False) -> TypeGuard[list[int] | tuple[int, ...]]:
    return isinstance(value, list | tuple) and all(_is_int(v, positive=positive) for v in value)


def _x(values: Sequence[Any]) -> str:
    return "x".join(str(v) for v in values)


def _per_stage(kw: Mapping[str, Any], key: str, n: int, where: str) -> list[Any]:
    """A per-stage argument as a list of n (`ResidualEncoderUNet` also takes one value for all stages)."""
    value = kw.get(key)
    if _is_int(value, positive=True):
        return [value] * n
    if not isinstance(value, list | tuple) or len(value) != n:
        msg = f"{where}: arch_kwargs.{key} should have {n} entries, found {value!r}"
        raise ConfigError(msg)
    return list(value)


def _total_stride(kw: Mapping[str, Any], dims: int, where: str) -> list[int]:
    n = kw.get("n_stages")
    if not _is_int(n, positive=True):
        msg = f"{where}: arch_kwargs.n_stages should be a positive integer, found {n!r}"
        raise ConfigError(msg)
    total = [1] * dims
    for i, stride in enumerate(_per_stage(kw, "strides", n, where)):
        axes = [stride] * dims if _is_int(stride) else stride
        if not _is_int_list(axes, positive=True) or len(axes) != dims:
            msg = (
                f"{where}: arch_kwargs.strides[{i}] should be {dims} positive integers (one per axis), found {stride!r}"
            )
            raise ConfigError(msg)
        total = [t * s for t, s in zip(total, axes, strict=True)]
    return total


def _check_structure(config: Mapping[str, Any], where: str) -> None:
    """What nnU-Net and UMambaBot2 need of a resolved UMamba2 configuration (ConfigError otherwise)."""
    kw = config["architecture"].get("arch_kwargs")
    if not isinstance(kw, Mapping):
        msg = f"{where}: the architecture has no arch_kwargs"
        raise ConfigError(msg)
    patch = config.get("patch_size")
    if not _is_int_list(patch, positive=True) or len(patch) not in (2, 3):
        msg = f"{where}: patch_size should be 2 or 3 positive integers, found {patch!r}"
        raise ConfigError(msg)
    batch = config.get("batch_size")
    if not _is_int(batch, positive=True):
        msg = f"{where}: batch_size should be a positive integer, found {batch!r}"
        raise ConfigError(msg)
    total = _total_stride(kw, len(patch), where)
    n = kw["n_stages"]
    features = _per_stage(kw, "features_per_stage", n, where)
    if not _is_int_list(features, positive=True):
        msg = f"{where}: arch_kwargs.features_per_stage should be positive integers, found {features!r}"
        raise ConfigError(msg)
    _per_stage(kw, "kernel_sizes", n, where)
    if "n_blocks_per_stage" not in kw:
        msg = f"{where}: arch_kwargs has no n_blocks_per_stage (UMambaBot2 is a residual encoder U-Net)"
        raise ConfigError(msg)
    _per_stage(kw, "n_blocks_per_stage", n, where)
    if n > 1:
        _per_stage(kw, "n_conv_per_stage_decoder", n - 1, where)
    if bottleneck_tokens(kw, patch) < 1:
        msg = (
            f"{where}: patch {_x(patch)} leaves no bottleneck tokens for the Mamba layer: the network's total "
            f"stride is {_x(total)}; use a patch of at least that on every axis"
        )
        raise ConfigError(msg)
    if any(p % s for p, s in zip(patch, total, strict=True)):
        fitting = [math.ceil(p / s) * s for p, s in zip(patch, total, strict=True)]
        msg = (
            f"{where}: patch {_x(patch)} is not a multiple of the network's total stride {_x(total)} on every "
            f"axis, as nnU-Net needs (e.g. {_x(fitting)})"
        )
        raise ConfigError(msg)
    mixer = {key: kw.get(key, default) for key, default in MIXER_DEFAULTS.items()}
    bad = {key: value for key, value in mixer.items() if not _is_int(value, positive=True)}
    if bad:
        listed = ", ".join(f"{key} {value!r}" for key, value in bad.items())
        msg = f"{where}: the Mamba2 sizes should be positive integers, found {listed}"
        raise ConfigError(msg)
    d_model, expand, headdim = features[-1], mixer["expand"], mixer["headdim"]
    if (d_model * expand) % headdim:
        msg = (
            f"{where}: Mamba2 d_model*expand ({d_model}*{expand} = {d_model * expand}) is not a multiple of "
            f"headdim {headdim} (d_model is the last stage's features)"
        )
        width = d_model * expand
        fits = [h for h in (128, 96, 80, 64, 48, 40, 32, 16) if width % h == 0][:2]
        hint = f"set backends.umamba2.headdim to {' or '.join(map(str, fits))}" if fits else None
        raise ConfigError(msg, hint=hint)
    ngroups = kw.get("ngroups", 1)
    nheads = d_model * expand // headdim
    if not _is_int(ngroups, positive=True) or nheads % ngroups:
        msg = f"{where}: Mamba2 ngroups {ngroups!r} does not divide the {nheads} heads"
        raise ConfigError(msg)
