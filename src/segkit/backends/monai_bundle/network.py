"""SegResNet construction, bundle-weight transfer, head replacement and encoder freezing.

Module names of MONAI 1.6.1's SegResNet (``reference/monai_bundle.md`` §1.5): the encoder is ``convInit``
and ``down_layers.{0..3}``, the decoder ``up_samples`` and ``up_layers``, the head ``conv_final``
(GroupNorm, ReLU, ``conv_final.2`` a 1x1x1 convolution). segkit builds the network with 5 output
channels, so "replacing the head" means that ``conv_final.2`` is freshly initialised while every other
tensor whose name and shape match is copied from the bundle.

torch and monai are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.backends.monai_bundle.options import NUM_CLASSES
from segkit.errors import BackendError, ConfigError, DataError

if TYPE_CHECKING:
    import torch

HEAD = "conv_final.2"
"""Prefix of the output convolution, the only module whose shape changes with the number of classes."""


def network_args(bundle_args: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The SegResNet arguments segkit builds: the bundle's, then the user's overrides, with 5 outputs.

    Returns a JSON-serialisable dict (lists, not tuples), recorded in every checkpoint so that
    inference can rebuild the network without the bundle.
    """
    args: dict[str, Any] = {"spatial_dims": 3, **dict(bundle_args), **dict(overrides)}
    args["out_channels"] = NUM_CLASSES
    return _jsonable(args)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def build_network(args: Mapping[str, Any]) -> torch.nn.Module:
    """A SegResNet from literal arguments (input (B, 4, X, Y, Z) with X, Y, Z multiples of 8; output (B, 5, X, Y, Z)).

    Raises:
        ConfigError: Arguments SegResNet rejects.
    """
    from monai.networks.nets import SegResNet

    kwargs = dict(args)
    for key in ("act", "norm"):
        # JSON has no tuples; MONAI's layer factories want ("NAME", {args}) tuples
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    try:
        return SegResNet(**kwargs)
    except (TypeError, ValueError, KeyError, AssertionError) as err:
        msg = f"SegResNet rejects the network arguments {dict(args)}: {err}"
        raise ConfigError(msg) from err


def read_state_dict(path: Path, *, what: str) -> dict[str, torch.Tensor]:
    """Load a state dict with ``torch.load(weights_only=True)``: a plain one, or one under ``model``/``state_dict``.

    Raises:
        DataError: The file is missing, is not a weights-only pickle, or holds no tensors.
    """
    from segkit.backends.monai_bundle.checkpoints import load_weights_only

    obj = load_weights_only(path, what=what)
    return state_dict_of(obj, Path(path), what=what)


def state_dict_of(obj: Any, path: Path, *, what: str) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint object."""
    import torch

    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "network", "network_weights"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    msg = f"{path}: {what} holds no state dict (expected tensors, or a 'model' entry of tensors)"
    raise DataError(msg)


def first_mismatch(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str | None:
    """Describe the first tensor whose name or shape differs between two state dicts, or None.

    Args:
        expected: The network's state dict (name -> tensor).
        found: The checkpoint's state dict.
    """
    for key, tensor in expected.items():
        if key not in found:
            return f"{key} is missing from the checkpoint"
        if tuple(found[key].shape) != tuple(tensor.shape):
            return f"{key} has shape {tuple(found[key].shape)} in the checkpoint but {tuple(tensor.shape)} here"
    for key in found:
        if key not in expected:
            return f"the checkpoint has {key}, which this network does not"
    return None


def load_strict(net: torch.nn.Module, state: Mapping[str, Any], source: Path) -> None:
    """Copy every tensor of `state` into `net`; all names and shapes must match.

    Raises:
        DataError: Names the first mismatching key (another architecture, another number of classes).
    """
    check_fit(net, state, source)
    net.load_state_dict(dict(state))


def check_fit(
    net: torch.nn.Module,
    state: Mapping[str, Any],
    source: Path,
    *,
    network: str = "this network",
    hint: str = "use a checkpoint of the same SegResNet arguments (see network_overrides)",
) -> None:
    """Raise unless every tensor name and shape of `state` matches `net` (`network` names it in the message).

    Raises:
        DataError: ``<source>: checkpoint does not fit <network>: <first mismatch>``.
    """
    problem = first_mismatch(net.state_dict(), state)
    if problem:
        msg = f"{source}: checkpoint does not fit {network}: {problem}"
        raise DataError(msg, hint=hint)


def load_bundle_weights(net: torch.nn.Module, weights: Path) -> tuple[int, int]:
    """Copy the bundle's tensors whose names and shapes match into `net` (the new head keeps its init).

    This is what ``monai.bundle.load(..., model=net)`` does through ``copy_model_state``, done here so
    that loading never falls through to a download and MONAI's logger stays quiet.

    Returns:
        (tensors loaded, tensors in the network).

    Raises:
        BackendError: Not a single tensor fits (the bundle's weights belong to another network).
    """
    import torch

    state = read_state_dict(weights, what="bundle weights")
    target = net.state_dict()
    matching = {k: v for k, v in state.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    if not matching:
        msg = f"{weights}: none of the bundle's {len(state)} tensors fits the SegResNet built from its network_def"
        raise BackendError(msg)
    with torch.no_grad():
        for key, value in matching.items():
            target[key].copy_(value)
    return len(matching), len(target)


def parameter_groups(net: torch.nn.Module, prefixes: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split parameter names into (encoder, rest) by name prefix (``down_layers`` matches ``down_layers.0.*``).

    Raises:
        ConfigError: A prefix that matches no parameter (lists the top-level modules).
    """
    names = [name for name, _ in net.named_parameters()]
    encoder: list[str] = []
    for prefix in prefixes:
        hits = [n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")]
        if not hits:
            tops = sorted({n.split(".")[0] for n in names})
            msg = f"--encoder-prefix {prefix!r} matches no parameter (top-level modules: {', '.join(tops)})"
            raise ConfigError(msg)
        encoder.extend(h for h in hits if h not in encoder)
    rest = [n for n in names if n not in encoder]
    return encoder, rest


def stage1_frozen(net: torch.nn.Module, prefixes: Sequence[str]) -> list[str]:
    """The parameters stage 1 freezes (`parameter_groups`' encoder), provided some are left to train.

    Raises:
        ConfigError: A prefix that matches no parameter, or prefixes that together freeze every parameter
            (AdamW would be handed an empty parameter list).
    """
    encoder, rest = parameter_groups(net, prefixes)
    if not rest:
        msg = f"--encoder-prefix {', '.join(prefixes)} freezes every parameter, so stage 1 would train nothing"
        tops = sorted({n.split(".")[0] for n in encoder})
        raise ConfigError(
            msg, hint=f"name only encoder modules (top-level modules: {', '.join(tops)}), or pass --stage1-epochs 0"
        )
    return encoder


def set_trainable(net: torch.nn.Module, frozen: Sequence[str]) -> int:
    """Freeze the named parameters and unfreeze all others; return the number of trainable values."""
    frozen_set = set(frozen)
    count = 0
    for name, param in net.named_parameters():
        param.requires_grad_(name not in frozen_set)
        if param.requires_grad:
            count += param.numel()
    return count
