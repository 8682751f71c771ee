"""Pydantic models for every segkit option: the single source of truth for names, defaults and help.

A run config (YAML) is one `SegkitConfig`; each command reads its own section plus the shared
``dataset`` and ``nnunet`` settings. Models are strict (unknown keys are errors) and frozen.
Relative paths written in a YAML file are resolved against that file's folder by the loader; paths
given on the command line are relative to the working directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

DATASET_NAME_PATTERN = r"^Dataset\d{3}_[A-Za-z0-9][A-Za-z0-9_.\-]*$"


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Anchor a relative path to the YAML file's folder (passed as validation context)."""
    value = value.expanduser()
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return value


def _check_dataset_name(value: str) -> str:
    if not re.match(DATASET_NAME_PATTERN, value):
        msg = "must be of the form DatasetNNN_Name with three digits, e.g. Dataset501_BraTSPostTx"
        raise ValueError(msg)
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
DatasetName = Annotated[str, AfterValidator(_check_dataset_name)]
Triple = tuple[float, float, float]
Workers = Annotated[int, Field(ge=0, description="Processes for per-case work; 0 picks one per core (at most 8).")]


class Strict(BaseModel):
    """Base of all config models: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NnUNetPaths(Strict):
    """The three nnU-Net folders. segkit passes them to nnU-Net itself; nobody exports variables."""

    raw: ConfigPath = Field(Path("outputs/nnunet/nnUNet_raw"), description="nnUNet_raw: exported datasets.")
    preprocessed: ConfigPath = Field(
        Path("outputs/nnunet/nnUNet_preprocessed"), description="nnUNet_preprocessed: plans, splits, preprocessed data."
    )
    results: ConfigPath = Field(Path("outputs/nnunet/nnUNet_results"), description="nnUNet_results: trained models.")

    def dataset_dir(self, kind: Literal["raw", "preprocessed", "results"], dataset: str) -> Path:
        """Folder of `dataset` under one of the three roots."""
        return getattr(self, kind) / dataset


class SynthConfig(Strict):
    """`segkit data synth`: write a synthetic BraTS post-treatment cohort."""

    output: ConfigPath | None = Field(None, description="Data root to create (one folder per case).")
    cases: int = Field(10, ge=1, description="Number of cases.")
    shape: tuple[int, int, int] = Field(
        (128, 128, 128), description="Voxels along X Y Z (BraTS 2024 grid: 182 218 182)."
    )
    spacing: Triple = Field((1.0, 1.0, 1.0), description="Voxel size in mm along X Y Z.")
    seed: int = Field(0, description="Cohort seed; a case depends only on the seed and its number.")
    unlabelled: int = Field(0, ge=0, description="How many of the cases (the last ones) have no -seg file.")
    start: int = Field(0, ge=0, le=99999, description="Number of the first case, for disjoint cohorts.")
    overwrite: bool = Field(False, description="Replace the output folder if it holds an earlier synthetic cohort.")


class CheckConfig(Strict):
    """`segkit data check`: validate BraTS case folders."""

    roots: list[ConfigPath] | None = Field(
        None,
        description="Data roots (default: training_data, training_data_additional, validation_data, those that exist).",
    )
    require_labels: bool = Field(False, description="A case without -seg is an error.")
    affine_tolerance: float = Field(1e-4, gt=0, description="Largest allowed difference between a case's affines.")
    workers: Workers = 0


class PrepareConfig(Strict):
    """`segkit data prepare`: export BraTS case folders to an nnU-Net v2 raw dataset."""

    train_sources: list[ConfigPath] | None = Field(
        None, description="Labelled case roots (default: training_data and training_data_additional, those that exist)."
    )
    test_sources: list[ConfigPath] | None = Field(
        None, description="Test case roots for imagesTs (default: validation_data if it exists)."
    )
    clean: bool = Field(
        False, description="Rebuild the dataset folder even if it holds cases no longer in the sources."
    )
    require_test_labels: bool = Field(False, description="Every test case must have -seg; all go to labelsTs.")
    verify: bool = Field(True, description="Read and check every file before exporting.")
    regions: bool = Field(
        False, description="Region-based labels (WT, TC, ET, RC as overlapping sigmoid outputs) for nnU-Net."
    )
    workers: Workers = 0


class SplitsConfig(Strict):
    """`segkit data splits`: write nnU-Net's cross-validation folds."""

    folds: int = Field(5, ge=2, description="Number of folds (nnU-Net: 5).")
    seed: int = Field(12345, description="Shuffle seed (nnU-Net: 12345).")
    output: ConfigPath | None = Field(
        None, description="Where to write (default: <nnunet.preprocessed>/<dataset>/splits_final.json)."
    )
    overwrite: bool = Field(False, description="Replace an existing, different splits file.")


FoldValue = Annotated[int, Field(ge=0)] | Literal["all"]
Device = Literal["auto", "cuda", "cpu", "mps"]


class PlanConfig(Strict):
    """`segkit data plan`: nnU-Net fingerprint, experiment planning and preprocessing."""

    configurations: list[str] | None = Field(
        None, description="Configurations to preprocess (default: the backend's training configuration)."
    )
    verify_dataset_integrity: bool = Field(False, description="Run nnU-Net's own dataset integrity check first.")
    num_processes: int = Field(
        0, ge=0, description="Processes for fingerprint and preprocessing; 0 picks min(cores, 4)."
    )
    clean: bool = Field(False, description="Recompute the fingerprint even if one exists.")
    preprocess: bool = Field(True, description="Preprocess after planning (False: plan only).")
    gpu_memory_target: float | None = Field(
        None, gt=0, description="GPU memory target in GB for the planner (default: the planner's own)."
    )
    backend: str = Field("nnunet", description="Backend whose planning to run.")


class TrainConfig(Strict):
    """`segkit train`: backend-independent settings (backend knobs live under `backends.<name>`)."""

    backend: str = Field("nnunet", description="Backend name (see `segkit backends`).")
    fold: FoldValue | list[FoldValue] = Field(
        0, description="Fold 0-4, 'all', or a list trained one after another ('all': see the backend)."
    )
    device: Device = Field("auto", description="auto (CUDA, then MPS, then CPU), cuda, cpu or mps.")


class InferConfig(Strict):
    """`segkit infer`: predict label maps for BraTS cases."""

    backend: str = Field("nnunet", description="Backend name (see `segkit backends`).")
    input: list[ConfigPath] | None = Field(
        None,
        description="BraTS roots, case folders or an nnU-Net images folder (default: the dataset's imagesTs).",
    )
    output: ConfigPath | None = Field(
        None,
        description="Prediction folder (default: outputs/predictions/<backend>); '{fold}' in it: one folder per fold.",
    )
    fold: FoldValue | list[FoldValue] | None = Field(
        None, description="Fold(s) whose models predict; several are ensembled (default: every trained fold)."
    )
    device: Device = Field("auto", description="auto (CUDA, then MPS, then CPU), cuda, cpu or mps.")
    ensemble: bool = Field(
        False, description="Average the folds' probabilities into one prediction (nnU-Net does so for several folds)."
    )
    save_probabilities: bool = Field(False, description="Also write class probabilities (.npz + .pkl).")
    skip_existing: bool = Field(False, description="Keep predictions that already exist instead of redoing them.")
    run_evaluation: bool = Field(False, description="Score the predictions against --ground-truth afterwards.")
    ground_truth: ConfigPath | None = Field(None, description="Ground-truth labels for --run-evaluation.")
    evaluation_output: ConfigPath | None = Field(
        None, description="Report folder for --run-evaluation (default: <output>/evaluation)."
    )


class SegkitConfig(Strict):
    """A segkit run config: shared settings plus one section per command."""

    version: Literal[1] = Field(1, description="Config format version.")
    dataset: DatasetName = Field("Dataset501_BraTSPostTx", description="nnU-Net dataset name, DatasetNNN_Name.")
    nnunet: NnUNetPaths = Field(default_factory=NnUNetPaths, description="nnU-Net folders.")
    synth: SynthConfig = Field(default_factory=SynthConfig, description="`segkit data synth`.")
    check: CheckConfig = Field(default_factory=CheckConfig, description="`segkit data check`.")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig, description="`segkit data prepare`.")
    splits: SplitsConfig = Field(default_factory=SplitsConfig, description="`segkit data splits`.")
    plan: PlanConfig = Field(default_factory=PlanConfig, description="`segkit data plan`.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="`segkit train`.")
    infer: InferConfig = Field(default_factory=InferConfig, description="`segkit infer`.")
    backends: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Options per backend (backends.<name>.<option>), validated by that backend's Options model.",
    )


def field_description(model: type[BaseModel], name: str) -> str:
    """The `description` of a field, for CLI help texts (one definition of every option)."""
    info = model.model_fields[name]
    return info.description or ""


def section_of(config: SegkitConfig, name: str) -> Any:
    """The section `name` of `config` (e.g. ``"prepare"``)."""
    return getattr(config, name)
