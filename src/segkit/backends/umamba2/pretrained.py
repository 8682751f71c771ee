"""Pretrained weights for a UMamba2 (or any nnU-Net) network, matched by name and shape.

nnU-Net's own loader (``load_pretrained_weights``) always re-initialises the segmentation heads and
rejects a checkpoint that lacks any other tensor, so neither the recipe's stage-2 start (a full UMamba2
checkpoint, heads included) nor encoder-only / self-supervised weights load with it. `load_pretrained`
does both:

* ``keep_heads=True``: every tensor of the network, ``.seg_layers.`` included, must be in the checkpoint
  with its shape (anything else is an error naming the tensor);
* ``keep_heads=False``: the heads are never loaded; every other tensor found with the same name and shape
  is, the rest keeps its initialisation. A checkpoint of which nothing fits (or, for a network with an
  ``encoder``, nothing of the encoder: another architecture) is an error.

Files are read with ``torch.load(weights_only=True)``. Accepted layouts: an nnU-Net checkpoint
(``network_weights``), a ``{"state_dict": ...}`` or ``{"model": ...}`` dict (MONAI, Lightning) or a bare
state dict; ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) key prefixes are removed.

Counts are of distinct tensors: nnU-Net's networks reach one parameter under several names (``conv`` and
``all_modules.0``; the decoder keeps a reference to the encoder, so every encoder tensor appears again
under ``decoder.encoder.``), and a tensor is loaded when any of its names is in the checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.errors import BackendError

if TYPE_CHECKING:
    import torch

HEAD_MARKER = ".seg_layers."
"""Names of segmentation-head tensors contain this (nnU-Net's own rule in ``load_pretrained_weights``)."""

_PREFIXES = ("module.", "_orig_mod.")
_CONTAINERS = ("network_weights", "state_dict", "model")


@dataclass(frozen=True)
class PretrainedReport:
    """What `load_pretrained` did. Names are the network's (first name of each tensor) or the checkpoint's.

    Attributes:
        path: The checkpoint.
        total: Distinct tensors of the network.
        loaded: Network tensors loaded from the checkpoint.
        skipped_heads: Segmentation-head tensors left re-initialised (``keep_heads=False``).
        mismatched: Network tensors whose name is in the checkpoint with another shape (kept as initialised).
        missing: Network tensors not in the checkpoint (kept as initialised).
        unused: Checkpoint tensors not loaded into the network.
    """

    path: str
    total: int
    loaded: tuple[str, ...]
    skipped_heads: tuple[str, ...]
    mismatched: tuple[str, ...]
    missing: tuple[str, ...]
    unused: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        """The counts, e.g. for a progress event."""
        return {
            "total": self.total,
            "loaded": len(self.loaded),
            "skipped_heads": len(self.skipped_heads),
            "mismatched": len(self.mismatched),
            "missing": len(self.missing),
            "unused": len(self.unused),
        }

    def summary(self) -> str:
        """One line: ``loaded N of M tensors from PATH (K seg-head tensors re-initialised, ...)``."""
        other = f"{len(self.mismatched)} of another shape, " if self.mismatched else ""
        return (
            f"loaded {len(self.loaded)} of {self.total} tensors from {self.path} "
            f"({len(self.skipped_heads)} seg-head tensors re-initialised, {len(self.missing)} not in the checkpoint, "
            f"{other}{len(self.unused)} of its tensors unused)"
        )


def _safe_globals() -> list[Any]:
    """The non-tensor types of an nnU-Net checkpoint, allowed for ``torch.load(weights_only=True)``.

    nnU-Net saves its training log in the checkpoint (``logging``, ``_best_ema``): numpy float32/float64
    scalars, pickled as ``numpy._core.multiarray.scalar(dtype, bytes)``. Allowing that constructor and the
    numpy dtype classes lets those numbers be rebuilt as data; nothing else in such a file (dicts, lists,
    strings, ``torch.device``, tensors) needs allowing, and every other global still fails to load.
    Unlike ``weights_only=False`` this never runs code named by the file. ``numpy.core`` is the same
    constructor's name in files written with numpy 1.x.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtypes = [type(np.dtype(t)) for t in (np.float32, np.float64, np.int64)]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def _reason(err: Exception) -> str:
    """The informative part of torch's (long, multi-line) load error."""
    text = str(err)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it refers to {found.group(1)}, which is not plain data"
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].split(". ")[0] if lines else type(err).__name__


def _strip(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _tensors(obj: Any) -> dict[str, torch.Tensor] | None:
    import torch

    if not isinstance(obj, Mapping):
        return None
    found = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return found or None


def read_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """The state dict in checkpoint `path`, keys without ``module.`` / ``_orig_mod.`` prefixes.

    Raises:
        BackendError: Missing or unreadable file, one that needs more than tensors and plain data to load,
            or one without network weights.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        msg = f"{path}: pretrained weights not found"
        raise BackendError(msg)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        msg = f"{path}: cannot read pretrained weights with weights_only=True ({_reason(err)})"
        raise BackendError(msg) from err
    weights = None
    if isinstance(obj, Mapping):
        for key in _CONTAINERS:
            weights = _tensors(obj.get(key))
            if weights is not None:
                break
    if weights is None:
        weights = _tensors(obj)
    if weights is None:
        msg = (
            f"{path}: no network weights in it (expected an nnU-Net checkpoint, a dict with 'state_dict' "
            "or 'model', or a state dict)"
        )
        raise BackendError(msg)
    stripped: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        stripped.setdefault(_strip(key), value)
    return stripped


def _distinct(names: list[str], tensors: Mapping[str, torch.Tensor]) -> tuple[str, ...]:
    """`names` less those naming a tensor already named (shared storage, as torch.save keeps it)."""
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for name in names:
        t = tensors[name]
        ident = (
            (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
            if t.numel()
            else (name,)
        )
        if ident not in seen:
            seen.add(ident)
            kept.append(name)
    return tuple(kept)


def load_pretrained(
    network: torch.nn.Module,
    path: Path | str,
    *,
    keep_heads: bool,
    log: Callable[[str], Any] = print,
) -> PretrainedReport:
    """Load the tensors of checkpoint `path` that fit `network` by name and shape, in place.

    Args:
        network: The bare network (not DDP- or compile-wrapped; see `apply_pretrained`).
        path: An nnU-Net checkpoint, a ``{"state_dict"|"model": ...}`` dict or a state dict.
        keep_heads: Load the segmentation heads too, and require every network tensor to fit (the recipe's
            stage 2). False: never load the heads, load whatever else fits (encoder-only, self-supervised).
        log: Receives the one-line summary.

    Returns:
        What was loaded and what was not.

    Raises:
        BackendError: Unreadable file; with `keep_heads`, a network tensor missing or of another shape;
            without, nothing fitting at all, or nothing of the network's encoder (another architecture).
    """
    import torch

    weights = read_weights(path)
    state = network.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}
    for key, tensor in state.items():
        groups.setdefault(id(tensor), []).append(key)

    loaded: list[str] = []
    heads: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    missing: list[str] = []
    used: set[str] = set()
    to_load: dict[str, torch.Tensor] = {}
    encoder_loaded = 0
    for keys in groups.values():
        name, shape = keys[0], tuple(state[keys[0]].shape)
        if not keep_heads and any(HEAD_MARKER in k for k in keys):
            heads.append(name)
            continue
        present = [k for k in keys if k in weights]
        fitting = [k for k in present if tuple(weights[k].shape) == shape]
        if fitting:
            loaded.append(name)
            used.update(fitting)
            to_load.update(dict.fromkeys(keys, weights[fitting[0]]))
            encoder_loaded += any(k.startswith("encoder.") for k in keys)
        elif present:
            mismatched.append((name, tuple(weights[present[0]].shape), shape))
        else:
            missing.append(name)

    where = f"{path}: does not fit this network"
    if not loaded:
        msg = f"{where}: none of its {len(weights)} tensors matches one of the network's by name and shape"
        raise BackendError(msg, hint="is it a checkpoint of another architecture or configuration?")
    encoder = getattr(network, "encoder", None)
    if isinstance(encoder, torch.nn.Module) and not encoder_loaded:
        msg = (
            f"{where}: none of its tensors fits the network's encoder by name and shape "
            f"(only {len(loaded)} others would), so it is a checkpoint of another architecture"
        )
        raise BackendError(msg)

    if keep_heads and (missing or mismatched):
        more = len(missing) + len(mismatched) - 1
        also = f" (and {more} more)" if more else ""
        if mismatched:
            name, got, want = mismatched[0]
            problem = f"{name} has shape {got} in the checkpoint, the network expects {want}"
        else:
            problem = f"{missing[0]} is not in the checkpoint"
        msg = f"{where} with its seg heads: {problem}{also}"
        raise BackendError(msg, hint="without --keep-heads the tensors that fit are loaded and the rest initialised")

    result = network.load_state_dict(to_load, strict=False)
    if result.unexpected_keys:  # cannot happen: every key came from the network's own state dict
        msg = f"{path}: unexpected keys {result.unexpected_keys[:3]}"
        raise BackendError(msg)
    report = PretrainedReport(
        path=str(path),
        total=len(groups),
        loaded=tuple(loaded),
        skipped_heads=tuple(heads),
        mismatched=tuple(m[0] for m in mismatched),
        missing=tuple(missing),
        unused=_distinct([k for k in weights if k not in used], weights),
    )
    log(report.summary())
    return report


def apply_pretrained(
    trainer: Any, path: Path | str, keep_heads: bool, log: Callable[[str], Any] = print
) -> PretrainedReport:
    """`load_pretrained` into an nnU-Net trainer's network (initialising the trainer first if needed).

    Used by the worker in place of nnU-Net's ``load_pretrained_weights`` (on a fresh start only: resuming
    loads the trainer's own checkpoint). The network is loaded in place, so the optimizer that
    ``initialize()`` built keeps pointing at its parameters.
    """
    from torch._dynamo import OptimizedModule
    from torch.nn.parallel import DistributedDataParallel

    if not trainer.was_initialized:
        trainer.initialize()
    network = trainer.network
    if isinstance(network, DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return load_pretrained(network, path, keep_heads=keep_heads, log=log)
