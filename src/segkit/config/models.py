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
    workers: Workers = 0


class SplitsConfig(Strict):
    """`segkit data splits`: write nnU-Net's cross-validation folds."""

    folds: int = Field(5, ge=2, description="Number of folds (nnU-Net: 5).")
    seed: int = Field(12345, description="Shuffle seed (nnU-Net: 12345).")
    output: ConfigPath | None = Field(
        None, description="Where to write (default: <nnunet.preprocessed>/<dataset>/splits_final.json)."
    )
    overwrite: bool = Field(False, description="Replace an existing, different splits file.")


class EvalConfig(Strict):
    """`segkit eval`: lesion-wise BraTS metrics and nnU-Net voxel metrics of a prediction folder."""

    gt: ConfigPath | None = Field(
        None, description="Reference: a folder of label files or a BraTS root of case folders (<case>/<case>-seg)."
    )
    pred: ConfigPath | None = Field(
        None, description="Prediction folder: <case>.nii.gz, or with a -seg, _seg or _pred suffix."
    )
    output_dir: ConfigPath = Field(Path("outputs/eval"), description="Folder for the reports.")
    lesion_output: ConfigPath | None = Field(
        None, description="Lesion-wise report (default: <output-dir>/lesion_metrics.json)."
    )
    nnunet_output: ConfigPath | None = Field(
        None, description="Voxel metrics in nnU-Net's summary.json layout (default: <output-dir>/nnunet_metrics.json)."
    )
    combined_output: ConfigPath | None = Field(
        None,
        description="Manifest: inputs, settings, timing, both summaries (default: <output-dir>/full_metrics.json).",
    )
    protocol: Literal["brats2024"] = Field(
        "brats2024", description="Lesion-wise protocol (the official BraTS 2024 GLI scorer)."
    )
    labels: list[Annotated[int, Field(ge=1, le=4)]] = Field(
        [1, 2, 3, 4], min_length=1, description="Labels to score as regions (1 NETC, 2 SNFH, 3 ET, 4 RC)."
    )
    omit_aggregates: bool = Field(False, description="Skip the WT and TC aggregate regions.")
    hd95_penalty: Literal["auto"] | Annotated[float, Field(gt=0)] = Field(
        "auto",
        description="HD95 of a missed or spurious lesion in mm: auto = 337 on 182x218x182, 374 on 240x240x155, "
        "else the volume diagonal; or a number (the official 2024 scorer uses 337 everywhere).",
    )
    affine_tolerance: float = Field(
        1e-4, gt=0, description="Largest allowed difference between GT and prediction affines."
    )
    skip_nnunet: bool = Field(False, description="Do not cross-check the voxel metrics with nnU-Net's own evaluator.")
    nnunet_cmd: str = Field(
        "nnUNetv2_evaluate_simple",
        description="nnU-Net evaluator command (labels only), or 'api' for nnU-Net's Python API (labels and regions).",
    )
    figure: bool = Field(True, description="Also write a PNG figure of lesion-wise Dice and HD95 across cases.")
    pretty: bool = Field(False, description="Indent the JSON reports.")
    strict: bool = Field(False, description="Any unusable case (bad file, grid, labels, duplicate id) is fatal.")
    workers: Workers = 0


class SegkitConfig(Strict):
    """A segkit run config: shared settings plus one section per command."""

    version: Literal[1] = Field(1, description="Config format version.")
    dataset: DatasetName = Field("Dataset501_BraTSPostTx", description="nnU-Net dataset name, DatasetNNN_Name.")
    nnunet: NnUNetPaths = Field(default_factory=NnUNetPaths, description="nnU-Net folders.")
    synth: SynthConfig = Field(default_factory=SynthConfig, description="`segkit data synth`.")
    check: CheckConfig = Field(default_factory=CheckConfig, description="`segkit data check`.")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig, description="`segkit data prepare`.")
    splits: SplitsConfig = Field(default_factory=SplitsConfig, description="`segkit data splits`.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="`segkit eval`.")


def field_description(model: type[BaseModel], name: str) -> str:
    """The `description` of a field, for CLI help texts (one definition of every option)."""
    info = model.model_fields[name]
    return info.description or ""


def section_of(config: SegkitConfig, name: str) -> Any:
    """The section `name` of `config` (e.g. ``"prepare"``)."""
    return getattr(config, name)
