"""Slim nnU-Net checkpoints: keep what prediction needs, drop the optimizer state and training logs.

nnU-Net's ``checkpoint_*.pth`` holds, besides the network weights, the optimizer's momentum buffers
(as large as the weights again), the grad scaler, the training log and the trainer's init arguments
(the whole plans and dataset.json). Its predictor (``nnUNetPredictor.initialize_from_trained_model_folder``,
nnU-Net 2.8.1) reads four entries only: ``network_weights``, ``trainer_name``, ``init_args['configuration']``
and ``inference_allowed_mirroring_axes``. A slim checkpoint keeps exactly those four, the tensors
untouched (same dtype and values, so predictions are bit-identical) and ``init_args`` as plain Python
values, so that it loads with ``torch.load(weights_only=True)``. segkit's nnU-Net adapter also reads
``init_args['plans']['plans_name']`` to check a checkpoint's origin, which the slim file keeps.

A slim checkpoint cannot resume a training (``--continue`` needs the optimizer state); it can still
start one as ``--pretrained-weights``, which reads ``network_weights`` only.

Every nnU-Net-based backend (``nnunet``, ``umamba2``) trains model folders of this shape, so this
works for all of them. Importing this module imports no framework; torch is imported when slimming.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from segkit.errors import ConfigError, DataError, OutputError
from segkit.io import refuse_inside, staged_dir

if TYPE_CHECKING:
    from collections.abc import Iterator

CHECKPOINTS: Final = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")
"""The checkpoints slimmed by default: every one nnU-Net writes."""

SLIM_KEYS: Final = ("network_weights", "init_args", "trainer_name", "inference_allowed_mirroring_axes")
"""The entries of a slim checkpoint: what nnU-Net's predictor reads, nothing else."""

MODEL_FILES: Final = ("plans.json", "dataset.json", "dataset_fingerprint.json")
"""Files of the model folder that a slim copy takes along (the fingerprint only where it exists)."""

FOLD_FILES: Final = ("segkit_config.yaml",)
"""Small files of a fold folder that a slim copy keeps: segkit's record of how the fold was trained."""


@dataclass(frozen=True)
class SlimFile:
    """One checkpoint: where it was read, where its slim version is, and both sizes in bytes."""

    source: Path
    target: Path
    size_before: int
    size_after: int
    already_slim: bool

    @property
    def saved(self) -> int:
        """Bytes saved by slimming this checkpoint."""
        return self.size_before - self.size_after


@dataclass(frozen=True)
class SlimReport:
    """What `slim_model` did: one `SlimFile` per checkpoint, in place or into a copy."""

    model_dir: Path
    output: Path
    files: tuple[SlimFile, ...]

    @property
    def in_place(self) -> bool:
        """Whether the checkpoints were replaced inside `model_dir` (no ``--output``)."""
        return self.output == self.model_dir

    @property
    def nothing_to_do(self) -> bool:
        """Every checkpoint was slim already (in place: nothing was written)."""
        return all(f.already_slim for f in self.files)

    @property
    def size_before(self) -> int:
        return sum(f.size_before for f in self.files)

    @property
    def size_after(self) -> int:
        return sum(f.size_after for f in self.files)


def slim_model(
    model_dir: Path,
    *,
    output: Path | None = None,
    checkpoints: Iterable[str] = CHECKPOINTS,
    overwrite: bool = False,
) -> SlimReport:
    """Slim the checkpoints of an nnU-Net model folder ``<trainer>__<plans>__<configuration>``.

    Without `output` the checkpoints are replaced in place, each through a temporary file in its own
    folder and `os.replace`, and only once every checkpoint has been read and converted. With `output`,
    a slim copy of the model folder is written there (`MODEL_FILES`, and per fold its slim checkpoints
    and `FOLD_FILES`; no validation folder, no logs), built beside it and renamed into place at the
    end; the model folder is left as it is.

    Args:
        model_dir: The model folder (with ``plans.json``, ``dataset.json`` and ``fold_*/checkpoint_*.pth``).
        output: Folder for a slim copy; it must not exist or be empty unless `overwrite`.
        checkpoints: Checkpoint file names to slim in each fold (those that exist are taken).
        overwrite: Replace a non-empty `output`.

    Returns:
        One `SlimFile` per checkpoint found, fold by fold.

    Raises:
        ConfigError: A checkpoint name that is not a plain ``.pth`` file name.
        DataError: Not a model folder, no checkpoint, an unreadable checkpoint or one that is not
            nnU-Net's; nothing is written.
        OutputError: `output` is not empty (without `overwrite`), overlaps the model folder, or
            cannot be written.
    """
    model_dir = Path(model_dir)
    names = _checkpoint_names(checkpoints)
    sources = _find_checkpoints(model_dir, names)
    if output is None:
        return _slim_in_place(model_dir, sources)
    output = Path(output)
    _check_output(output, model_dir, overwrite=overwrite)
    return _slim_copy(model_dir, output, sources)


def is_slim(checkpoint: Mapping[str, Any]) -> bool:
    """Whether a loaded checkpoint has only `SLIM_KEYS`, with plain `init_args` and mirroring axes."""
    return (
        set(checkpoint) <= set(SLIM_KEYS)
        and "network_weights" in checkpoint
        and _is_plain(checkpoint.get("init_args"))
        and _is_plain(checkpoint.get("inference_allowed_mirroring_axes"))
    )


def slim_checkpoint(checkpoint: Mapping[str, Any], *, path: Path) -> dict[str, Any]:
    """The slim form of a loaded nnU-Net checkpoint (see the module docstring).

    Args:
        checkpoint: What ``torch.load`` returned for `path`.
        path: The checkpoint's file, for error messages.

    Raises:
        DataError: `checkpoint` is not an nnU-Net checkpoint, or its init arguments hold a value
            that has no plain form.
    """
    import torch

    if not isinstance(checkpoint, Mapping) or "network_weights" not in checkpoint:
        msg = f"{path}: not an nnU-Net checkpoint (no network_weights)"
        raise DataError(msg)
    weights = checkpoint["network_weights"]
    if not isinstance(weights, Mapping) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        msg = f"{path}: not an nnU-Net checkpoint (network_weights is not a state dict of tensors)"
        raise DataError(msg)
    trainer = checkpoint.get("trainer_name")
    init_args = checkpoint.get("init_args")
    if not isinstance(trainer, str) or not isinstance(init_args, Mapping):
        missing = "trainer_name" if not isinstance(trainer, str) else "init_args"
        msg = f"{path}: not an nnU-Net checkpoint (no {missing}, which nnU-Net's predictor needs)"
        raise DataError(msg)
    if not isinstance(init_args.get("configuration"), str):
        msg = f"{path}: not an nnU-Net checkpoint (init_args has no configuration, which nnU-Net's predictor needs)"
        raise DataError(msg)
    # The state dict is kept as saved (an OrderedDict with the modules' version `_metadata`, which
    # load_state_dict consults); a tensor that views a larger storage is copied, or torch.save would
    # write the whole storage.
    for key, tensor in weights.items():
        if tensor.untyped_storage().nbytes() > tensor.nbytes:
            weights[key] = tensor.clone()  # type: ignore[index]
    return {
        "network_weights": weights,
        "init_args": _plain(init_args, path=path, where="init_args"),
        "trainer_name": trainer,
        "inference_allowed_mirroring_axes": _plain(
            checkpoint.get("inference_allowed_mirroring_axes"), path=path, where="inference_allowed_mirroring_axes"
        ),
    }


# ------------------------------------------------------------------ finding and reading


def _checkpoint_names(checkpoints: Iterable[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(checkpoints))
    if not names:
        msg = "no checkpoint names given"
        raise ConfigError(msg)
    for name in names:
        if Path(name).name != name or not name.endswith(".pth") or name.startswith("."):
            msg = f"{name}: not a checkpoint file name (expected e.g. checkpoint_final.pth)"
            raise ConfigError(msg)
    return names


def _find_checkpoints(model_dir: Path, names: tuple[str, ...]) -> list[Path]:
    if not model_dir.is_dir():
        what = "not a folder" if model_dir.exists() else "folder not found"
        msg = f"{model_dir}: {what}"
        raise DataError(msg)
    for required in ("plans.json", "dataset.json"):
        if not (model_dir / required).is_file():
            msg = f"{model_dir}: not an nnU-Net model folder ({required} missing)"
            raise DataError(msg, hint="pass a folder <trainer>__<plans>__<configuration> from nnUNet_results")
    folds = sorted((p for p in model_dir.glob("fold_*") if p.is_dir()), key=_fold_key)
    found = [fold / name for fold in folds for name in names if (fold / name).is_file()]
    if not found:
        msg = f"{model_dir}: not an nnU-Net model folder (no fold_*/{' or '.join(names)})"
        raise DataError(msg, hint="train a fold first, or name the checkpoints with --checkpoint")
    return found


def _fold_key(fold: Path) -> tuple[int, str]:
    suffix = fold.name[len("fold_") :]
    return (int(suffix), "") if suffix.isdigit() else (1 << 30, suffix)


def _load_full(path: Path) -> Any:
    import torch

    try:
        # nnU-Net writes its checkpoints as pickles of Python objects (torch.device, numpy scalars in
        # the training log, ...), which weights_only=True refuses. Loading them in full is what
        # nnU-Net's own predictor and trainer do with the same files: the user's own model folder, of
        # the same trust as predicting with it. The slim file written from it needs no such trust.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises anything from EOFError to zipfile/pickle errors here
        msg = f"{path}: cannot read checkpoint ({type(err).__name__}: {err})"
        raise DataError(msg) from err


def _plain(value: Any, *, path: Path, where: str) -> Any:
    """`value` rebuilt from plain Python types (what ``torch.load(weights_only=True)`` accepts everywhere)."""
    import numpy as np
    import torch

    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.device | torch.dtype | Path):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool):
                msg = f"{path}: {where} has a key of type {type(key).__name__}, which a slim checkpoint cannot keep"
                raise DataError(msg)
            out[key] = _plain(item, path=path, where=f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        items = [_plain(item, path=path, where=f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    msg = f"{path}: {where} is a {type(value).__name__}, which a slim checkpoint cannot keep as a plain value"
    raise DataError(msg)


def _is_plain(value: Any) -> bool:
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) is dict:
        return all(type(k) in (str, int, float, bool) and _is_plain(v) for k, v in value.items())
    if type(value) in (list, tuple):
        return all(_is_plain(v) for v in value)
    return False


@dataclass(frozen=True)
class _Converted:
    source: Path
    size_before: int
    slim: dict[str, Any] | None  # None: the checkpoint is slim already


def _convert(sources: list[Path]) -> Iterator[_Converted]:
    """Read each checkpoint and yield its slim form, one at a time (a full one may be gigabytes)."""
    for source in sources:
        loaded = _load_full(source)
        size = source.stat().st_size
        if isinstance(loaded, Mapping) and is_slim(loaded):
            slim_checkpoint(loaded, path=source)  # still a checkpoint nnU-Net's predictor can use
            yield _Converted(source, size, None)
        else:
            yield _Converted(source, size, slim_checkpoint(loaded, path=source))
        del loaded  # before the next checkpoint is read


def _save(slim: dict[str, Any], dest: Path, *, source: Path) -> int:
    """Write `slim` to `dest` (a temporary path) and prove it loads with weights_only=True."""
    import torch

    try:
        torch.save(slim, dest)
    except OSError as err:
        msg = f"{dest.parent}: cannot write the slim checkpoint ({err.strerror or err})"
        raise OutputError(msg) from err
    try:
        torch.load(dest, map_location="cpu", weights_only=True)
    except Exception as err:
        msg = f"{source}: its slim form does not load with weights_only=True ({type(err).__name__}: {err})"
        raise DataError(msg) from err
    return dest.stat().st_size


# ------------------------------------------------------------------ in place


def _slim_in_place(model_dir: Path, sources: list[Path]) -> SlimReport:
    """Write every slim checkpoint to a temporary file beside its original, then move them all over.

    No original is replaced before every checkpoint has been read and converted, so a bad checkpoint
    in the last fold leaves the whole folder as it was.
    """
    files: list[SlimFile] = []
    pending: list[tuple[Path, Path]] = []
    try:
        for item in _convert(sources):
            if item.slim is None:
                files.append(SlimFile(item.source, item.source, item.size_before, item.size_before, True))
                continue
            tmp = _temp_beside(item.source)
            pending.append((tmp, item.source))
            size = _save(item.slim, tmp, source=item.source)
            shutil.copymode(item.source, tmp)
            files.append(SlimFile(item.source, item.source, item.size_before, size, False))
        for tmp, dest in pending:
            os.replace(tmp, dest)
    except BaseException:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        raise
    return SlimReport(model_dir, model_dir, tuple(files))


def _temp_beside(path: Path) -> Path:
    """A new hidden file in the folder of `path` (same file system, so `os.replace` is atomic)."""
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.pth")
    except OSError as err:
        msg = f"{path.parent}: cannot write here ({err.strerror or err})"
        raise OutputError(msg) from err
    os.close(fd)
    return Path(name)


# ------------------------------------------------------------------ slim copy


def _check_output(output: Path, model_dir: Path, *, overwrite: bool) -> None:
    refuse_inside(
        output,
        [model_dir],
        what="model folder",
        containing=True,
        hint="choose an output folder outside the model folder (without -o the checkpoints are slimmed in place)",
    )
    if output.exists() and not output.is_dir():
        msg = f"{output}: exists and is not a folder"
        raise OutputError(msg)
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        msg = f"{output}: output folder is not empty"
        raise OutputError(msg, hint="choose another folder, or pass --overwrite to replace it")


def _slim_copy(model_dir: Path, output: Path, sources: list[Path]) -> SlimReport:
    files: list[SlimFile] = []
    with staged_dir(output) as staging:
        for name in MODEL_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, staging / name)
        for item in _convert(sources):
            fold = item.source.parent.name
            target_dir = staging / fold
            if not target_dir.is_dir():
                target_dir.mkdir()
                for name in FOLD_FILES:
                    if (item.source.parent / name).is_file():
                        shutil.copy2(item.source.parent / name, target_dir / name)
            staged = target_dir / item.source.name
            if item.slim is None:
                shutil.copy2(item.source, staged)
                size = item.size_before
            else:
                size = _save(item.slim, staged, source=item.source)
            files.append(
                SlimFile(item.source, output / fold / item.source.name, item.size_before, size, item.slim is None)
            )
    return SlimReport(model_dir, output, tuple(files))
