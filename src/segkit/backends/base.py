"""The contract between segkit and a segmentation framework.

A backend is a class registered in the ``segkit.backends`` entry-point group. segkit's CLI and
`segkit.api` know only this module: they build frozen request records, validate the backend's own
options with its pydantic `Options` model, and call `prepare`, `train` and `predict`.

Folds: ``0..k-1`` select one cross-validation fold of ``splits_final.json``; ``"all"`` is the
backend's "everything" fold, whose meaning the backend states in `Capabilities.fold_all` (nnU-Net: one
model trained on every case; MONAI fine-tuning: every fold in turn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from segkit.progress import ProgressSink

Fold = int | Literal["all"]
Device = Literal["auto", "cuda", "cpu", "mps"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the CLI uses this to refuse impossible requests early.

    Attributes:
        train: Implements `train`.
        predict: Implements `predict`.
        prepare: `prepare` does real work (e.g. nnU-Net planning); otherwise it only validates.
        ensemble: `predict` accepts several folds and averages them.
        implicit_ensemble: Several folds without ``--ensemble`` are averaged (nnU-Net's ``-f 0 1 2 3 4``);
            otherwise ``--ensemble`` or a ``{fold}`` output template is required.
        multi_gpu: Training can use several GPUs.
        fold_all: What ``--fold all`` means: ``"train_on_all"`` (one model on every case) or
            ``"every_fold"`` (each fold of the splits in turn).
        devices: Devices the backend supports.
    """

    train: bool = True
    predict: bool = True
    prepare: bool = False
    ensemble: bool = False
    implicit_ensemble: bool = False
    multi_gpu: bool = False
    fold_all: Literal["train_on_all", "every_fold"] = "train_on_all"
    devices: tuple[str, ...] = ("cpu", "cuda")


@dataclass(frozen=True)
class DatasetRef:
    """Where a prepared dataset lives.

    Attributes:
        name: nnU-Net dataset name, ``DatasetNNN_Name``.
        raw: ``nnUNet_raw`` root.
        preprocessed: ``nnUNet_preprocessed`` root (holds ``splits_final.json``).
        results: ``nnUNet_results`` root.
    """

    name: str
    raw: Path
    preprocessed: Path
    results: Path

    @property
    def raw_dir(self) -> Path:
        """``<raw>/<name>``."""
        return self.raw / self.name

    @property
    def preprocessed_dir(self) -> Path:
        """``<preprocessed>/<name>``."""
        return self.preprocessed / self.name

    @property
    def results_dir(self) -> Path:
        """``<results>/<name>``."""
        return self.results / self.name

    @property
    def splits_file(self) -> Path:
        """``<preprocessed>/<name>/splits_final.json``: the folds every backend shares."""
        return self.preprocessed_dir / "splits_final.json"


@dataclass(frozen=True)
class PrepareRequest:
    """Make a dataset ready for training with this backend (e.g. nnU-Net planning).

    Attributes:
        dataset: The dataset.
        configurations: Configurations to preprocess (backend-specific names).
        verify_dataset_integrity: Run the framework's own integrity check.
        num_processes: Worker processes (0: backend default for this machine).
        clean: Redo work whose results exist (e.g. the fingerprint).
        preprocess: Also preprocess, not only plan.
        gpu_memory_target_gb: Planner's GPU memory target, if the backend plans for a GPU.
    """

    dataset: DatasetRef
    configurations: tuple[str, ...] = ()
    verify_dataset_integrity: bool = False
    num_processes: int = 0
    clean: bool = False
    preprocess: bool = True
    gpu_memory_target_gb: float | None = None


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare` produced."""

    plans_file: Path | None
    configurations: tuple[str, ...]
    log_file: Path | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainRequest:
    """Train one fold.

    Attributes:
        dataset: The dataset.
        fold: Fold index or ``"all"`` (see `Capabilities.fold_all`).
        device: Resolved device, ``"cuda"``, ``"cpu"`` or ``"mps"`` (never ``"auto"``).
        output_dir: Folder for this backend's runs when it does not use nnU-Net's results folder.
        config_yaml: The fully resolved run config, to save beside the model.
    """

    dataset: DatasetRef
    fold: Fold
    device: str
    output_dir: Path | None = None
    config_yaml: str = ""


@dataclass(frozen=True)
class TrainResult:
    """A trained fold."""

    fold: Fold
    model_dir: Path
    checkpoint: Path | None = None
    log_file: Path | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CaseImages:
    """One case to predict: its id and the file of each BraTS modality (``t1c t1n t2f t2w``)."""

    case_id: str
    images: Mapping[str, Path]


@dataclass(frozen=True)
class PredictRequest:
    """Predict label maps for a set of cases.

    Attributes:
        dataset: The dataset the model was trained on.
        cases: Cases to predict.
        output_dir: Where ``<case>.nii.gz`` files go.
        folds: Folds whose models are used (several: averaged when the backend can ensemble).
        device: Resolved device.
        save_probabilities: Also write class probabilities.
        overwrite: Replace existing predictions (otherwise existing ones are kept and skipped).
    """

    dataset: DatasetRef
    cases: tuple[CaseImages, ...]
    output_dir: Path
    folds: tuple[Fold, ...]
    device: str
    save_probabilities: bool = False
    overwrite: bool = True


@dataclass(frozen=True)
class PredictResult:
    """Prediction files written.

    Attributes:
        output_dir: The prediction folder.
        files: ``<case>.nii.gz`` files written by this run.
        skipped: Case ids whose existing prediction was kept.
        log_file: The framework's log, if any.
    """

    output_dir: Path
    files: tuple[Path, ...]
    skipped: tuple[str, ...] = ()
    log_file: Path | None = None


@runtime_checkable
class Backend(Protocol):
    """Adapter between segkit and one segmentation framework.

    Contract:
        - Importing the adapter module imports no framework (torch, monai, nnunetv2, ...).
        - `unavailable_reason` never imports the framework (use ``importlib.util.find_spec``).
        - `Options` is a pydantic model with ``extra="forbid"``; every field has a default and a description.
        - `check` raises a `SegkitError` for every problem that can be found before work starts
          (missing dataset, unknown configuration, fold out of range, missing checkpoint, device
          unavailable) and is cheap; `prepare`, `train` and `predict` call it first.
        - `prepare` is idempotent for identical inputs and writes only under the dataset's folders.
        - `predict` writes one ``<case>.nii.gz`` per case, on the case's own grid (shape and affine
          of its input images), each file atomically.
        - User-facing failures are raised as `BackendError` subclasses, chaining the cause.
        - Long work reports to the `ProgressSink`; nothing is printed.
        - `fold_indices` and `trained_folds` only read files (no framework import, no writes).
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    capabilities: ClassVar[Capabilities]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when the framework is installed, else a short reason."""
        ...

    def check(self, request: PrepareRequest | TrainRequest | PredictRequest, options: BaseModel) -> None:
        """Raise for any problem found without running the framework."""
        ...

    def fold_indices(self, dataset: DatasetRef, options: BaseModel) -> tuple[int, ...]:
        """The cross-validation folds of `dataset` (what ``--fold all`` stands for when ``fold_all`` is
        ``"every_fold"``): those of ``splits_final.json``, else the backend's default folds."""
        ...

    def trained_folds(self, dataset: DatasetRef, options: BaseModel) -> tuple[Fold, ...]:
        """Folds with a model that `predict` can use with these options (empty: none); the default folds
        of ``segkit infer``."""
        ...

    def prepare(self, request: PrepareRequest, options: BaseModel, *, progress: ProgressSink) -> PrepareResult:
        """Make the dataset ready for training."""
        ...

    def train(self, request: TrainRequest, options: BaseModel, *, progress: ProgressSink) -> TrainResult:
        """Train one fold."""
        ...

    def predict(self, request: PredictRequest, options: BaseModel, *, progress: ProgressSink) -> PredictResult:
        """Predict every case of the request."""
        ...


def validate_options(backend: Backend, raw: Mapping[str, Any] | None, *, where: str) -> BaseModel:
    """Validate a backend's options, re-rooting errors at `where` (e.g. ``backends.nnunet``).

    Raises:
        ConfigError: One ``where.key: reason`` per problem.
    """
    from pydantic import ValidationError

    from segkit.config.load import render_validation_error
    from segkit.errors import ConfigError

    try:
        return backend.Options.model_validate(dict(raw or {}))
    except ValidationError as err:
        raise ConfigError(render_validation_error(err, backend.Options, prefix=f"{where}.")) from None


def missing_module(*modules: str) -> str | None:
    """``"<module> is not installed"`` for the first module that cannot be found, else None (imports nothing)."""
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


def splits_fold_indices(dataset: DatasetRef, *, default: int = 5) -> tuple[int, ...]:
    """The fold indices of the dataset's ``splits_final.json``, else nnU-Net's `default` five."""
    from segkit.data.splits import read_splits

    if dataset.splits_file.is_file():
        return tuple(range(len(read_splits(dataset.splits_file))))
    return tuple(range(default))


def fill_fold(template: str | Path, fold: Fold) -> str:
    """Replace ``{fold}`` in a path template (other braces are left alone)."""
    return str(template).replace("{fold}", str(fold))


def folds_of(spec: Fold | Sequence[Fold]) -> tuple[Fold, ...]:
    """Normalise a fold spec (one fold or a list) to a tuple."""
    if isinstance(spec, (list, tuple)):
        return tuple(spec)
    return (spec,)  # type: ignore[return-value]
