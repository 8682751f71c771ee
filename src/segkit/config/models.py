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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo

from segkit.conventions import OVERLAY_ALPHA, WINDOW_PERCENTILES

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


def _resolve_plans(value: str | None, info: ValidationInfo) -> str | None:
    """Anchor a plans path like any path; a dataset id or name (``501``, ``Dataset501_X``) stays as it is."""
    if value is None or (re.fullmatch(r"\d+|Dataset\d{3}_[^/\\]+", value) and not value.endswith(".json")):
        return value
    return str(_resolve_path(Path(value), info))


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
DatasetName = Annotated[str, AfterValidator(_check_dataset_name)]
Triple = tuple[float, float, float]
Workers = Annotated[int, Field(ge=0, description="Processes for per-case work; 0 picks one per core (at most 8).")]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
"""numpy's seed range (``RandomState`` and ``SeedSequence`` take 0 to 2**32 - 1)."""
# Finite and at least 1 um: inf, NaN or a vanishing spacing make an affine that NIfTI writers cannot decompose.
_Spacing = Annotated[float, Field(ge=1e-3, allow_inf_nan=False)]
PositiveTriple = tuple[_Spacing, _Spacing, _Spacing]
LayoutOption = Literal["brats2024", "brats2021"]
_LAYOUT_HELP = (
    "Case file layout: brats2024 (<case>-{t1c,t1n,t2f,t2w,seg}, labels 1-4) or brats2021 "
    "(<case>_{t1ce,t1,flair,t2,seg}, labels 1 NCR, 2 ED, 4 ET)."
)


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
    spacing: PositiveTriple = Field(
        (1.0, 1.0, 1.0), description="Voxel size in mm along X Y Z (each finite and at least 0.001)."
    )
    seed: Seed = Field(0, description="Cohort seed (0 to 2^32-1); a case depends only on the seed and its number.")
    unlabelled: int = Field(
        0,
        ge=0,
        description="How many more cases (no -seg) to write into <output>/unlabelled/, a separate root "
        "for `data prepare --unlabelled-sources`.",
    )
    without_labels: int = Field(
        0, ge=0, description="How many of the cases (the last ones) have no -seg file in the output root itself."
    )
    start: int = Field(0, ge=0, le=99999, description="Number of the first case, for disjoint cohorts.")
    overwrite: bool = Field(False, description="Replace the output folder if it holds an earlier synthetic cohort.")


class CheckConfig(Strict):
    """`segkit data check`: validate BraTS case folders."""

    roots: list[ConfigPath] | None = Field(
        None,
        description="Data roots (default: training_data, training_data_additional, validation_data, those that exist).",
    )
    require_labels: bool = Field(False, description="A case without -seg is an error.")
    layout: LayoutOption = Field("brats2024", description=_LAYOUT_HELP)
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
        False,
        description="Rebuild the dataset folder even if it holds cases no longer in the sources "
        "(only a folder segkit built; see --force).",
    )
    force: bool = Field(
        False, description="Also replace a dataset folder that segkit did not build (its files are deleted)."
    )
    layout: LayoutOption = Field("brats2024", description=_LAYOUT_HELP)
    require_test_labels: bool = Field(False, description="Every test case must have -seg; all go to labelsTs.")
    verify: bool = Field(True, description="Read and check every file before exporting.")
    regions: bool = Field(
        False, description="Region-based labels (WT, TC, ET, RC as overlapping sigmoid outputs) for nnU-Net."
    )
    unlabelled_sources: list[ConfigPath] | None = Field(
        None,
        description="Roots of image-only cases (no -seg) for semi-supervised training: exported to imagesTr "
        "with all-zero placeholder labels and listed in dataset.json's segkit_unlabelled.",
    )
    workers: Workers = 0


class SplitsConfig(Strict):
    """`segkit data splits`: write nnU-Net's cross-validation folds."""

    folds: int = Field(5, ge=2, description="Number of folds (nnU-Net: 5).")
    seed: Seed = Field(12345, description="Shuffle seed, 0 to 2^32-1 (nnU-Net: 12345).")
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
    save_probabilities: bool = Field(
        False, description="Also write class probabilities (<case>.npz; nnU-Net adds a .pkl of its properties)."
    )
    skip_existing: bool = Field(False, description="Keep predictions that already exist instead of redoing them.")
    run_evaluation: bool = Field(False, description="Score the predictions against --ground-truth afterwards.")
    ground_truth: ConfigPath | None = Field(None, description="Ground-truth labels for --run-evaluation.")
    evaluation_output: ConfigPath | None = Field(
        None, description="Report folder for --run-evaluation (default: <output>-evaluation, beside the predictions)."
    )


AxisName = Literal["sagittal", "coronal", "axial"]
ModalityName = Literal["t1c", "t1n", "t2f", "t2w"]
OverlayStyleName = Literal["fill", "contour", "both"]
Percentiles = tuple[float, float]
_PERCENTILES_HELP = "Intensity window: lower and upper percentile of each volume's non-zero voxels."
_HOST_HELP = "Interface to bind; 127.0.0.1 keeps the app private to this machine."


class StatsConfig(Strict):
    """`segkit data stats` (and the numbers behind `segkit viz stats`): cohort statistics."""

    roots: list[ConfigPath] | None = Field(
        None,
        description="Data roots (default: training_data, training_data_additional, validation_data, those that exist).",
    )
    cache_dir: ConfigPath = Field(
        Path("outputs/statistics_cache"), description="Folder of cached statistics (keyed by roots and file mtimes)."
    )
    cache: bool = Field(True, description="Read and write the statistics cache.")
    recompute: bool = Field(False, description="Ignore a cached result and compute again (the cache is updated).")
    bins: int = Field(64, ge=4, le=1024, description="Histogram bins per modality and case.")
    workers: Workers = 0


class VizStaticConfig(Strict):
    """`segkit viz static`: a PNG/SVG/PDF panel of one case."""

    case_dir: ConfigPath | None = Field(None, description="Case folder to render (holds <case>-t1c.nii.gz, ...).")
    layout: Literal["modalities", "orthogonal"] = Field(
        "modalities",
        description="modalities: every modality on one slice; orthogonal: sagittal, coronal and axial slices of "
        "--modality.",
    )
    axis: AxisName = Field("axial", description="Slice plane of the modalities layout.")
    fraction: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Slice position, 0-1 from the patient's left/posterior/inferior edge (default 0.5).",
    )
    index: int | None = Field(None, ge=0, description="Slice index in the file's voxel grid (instead of --fraction).")
    modality: ModalityName = Field("t1c", description="Modality of the orthogonal layout.")
    indices: tuple[int, int, int] | None = Field(
        None, description="Orthogonal layout: sagittal, coronal and axial slice indices in the file's voxel grid."
    )
    overlay: bool = Field(True, description="Draw the segmentation over the images.")
    style: OverlayStyleName = Field("fill", description="Overlay style: translucent fill, contour, or both.")
    alpha: float = Field(OVERLAY_ALPHA, ge=0.0, le=1.0, description="Overlay opacity.")
    pred: ConfigPath | None = Field(
        None, description="A predicted label map of the case: adds prediction and error (TP/FP/FN) rows."
    )
    output: ConfigPath | None = Field(
        None, description="Figure file; .png, .svg or .pdf (default: outputs/figures/<case>_<layout>.png)."
    )
    show: bool = Field(False, description="Also open the figure in a window (needs a display).")
    percentiles: Percentiles = Field(WINDOW_PERCENTILES, description=_PERCENTILES_HELP)
    dpi: int = Field(150, ge=30, le=1200, description="Resolution of raster output.")
    overwrite: bool = Field(False, description="Replace an existing output file.")


class VizGifConfig(Strict):
    """`segkit viz gif`: animated slice sweeps."""

    root: ConfigPath | None = Field(
        None, description="Data root (default: the first of training_data, training_data_additional, validation_data)."
    )
    case: str | None = Field(None, description="One case id under the root (default: every case).")
    max_cases: int | None = Field(None, ge=1, description="At most this many cases (in id order).")
    axis: AxisName = Field("axial", description="Sweep direction.")
    modality: ModalityName = Field("t1c", description="Modality to animate.")
    step: int = Field(1, ge=1, description="Use every n-th slice.")
    overlay: bool = Field(False, description="Draw the segmentation over the frames.")
    style: OverlayStyleName = Field("fill", description="Overlay style: translucent fill, contour, or both.")
    alpha: float = Field(OVERLAY_ALPHA, ge=0.0, le=1.0, description="Overlay opacity.")
    frame_ms: int = Field(80, ge=10, le=10_000, description="Display time per frame in milliseconds.")
    output_dir: ConfigPath = Field(
        Path("outputs/gifs"), description="Output folder; files are <case>_<modality>_<axis>.gif."
    )
    percentiles: Percentiles = Field(WINDOW_PERCENTILES, description=_PERCENTILES_HELP)
    overwrite: bool = Field(False, description="Replace existing GIFs.")
    workers: Workers = 0


class VizAppConfig(Strict):
    """`segkit viz app`: the interactive slice viewer."""

    data_roots: list[ConfigPath] | None = Field(
        None,
        description="Data roots (default: training_data, training_data_additional, validation_data, those that exist).",
    )
    pred_dir: ConfigPath | None = Field(
        None, description="Folder of predictions <case>.nii.gz to show beside or over the ground truth."
    )
    host: str = Field("127.0.0.1", description=_HOST_HELP)
    port: int = Field(8050, ge=1, le=65535, description="Port to listen on.")
    debug: bool = Field(False, description="Dash debug mode with hot reload (development only; loopback --host only).")
    open_browser: bool = Field(False, description="Open the app in the default browser once it runs.")
    cache_cases: int = Field(4, ge=1, le=64, description="Cases kept loaded in memory (least recently used dropped).")
    percentiles: Percentiles = Field(WINDOW_PERCENTILES, description=_PERCENTILES_HELP)


class VizStatsConfig(Strict):
    """`segkit viz stats`: the statistics inspector (cohort numbers come from the `stats` section)."""

    host: str = Field("127.0.0.1", description=_HOST_HELP)
    port: int = Field(8050, ge=1, le=65535, description="Port to listen on.")
    debug: bool = Field(False, description="Dash debug mode with hot reload (development only; loopback --host only).")
    open_browser: bool = Field(False, description="Open the app in the default browser once it runs.")


class VizArchConfig(Strict):
    """`segkit viz arch`: network figures and a table from nnU-Net plans."""

    plans: Annotated[str | None, AfterValidator(_resolve_plans)] = Field(
        None,
        description="A plans .json file, a folder holding one, a dataset id (501) or name (Dataset501_X) "
        "searched under nnunet.results and nnunet.preprocessed (default: the run config's dataset).",
    )
    configuration: str = Field("3d_fullres", description="Configuration key in the plans.")
    output: ConfigPath | None = Field(
        None,
        description="Overview figure (default: outputs/figures/architecture/<plans>_<configuration>_overview.png).",
    )
    detailed_output: ConfigPath | None = Field(
        None, description="Detailed block diagram (default: <output>_detailed.png)."
    )
    vector_output: ConfigPath | None = Field(None, description="Also write the overview as vector (.svg or .pdf).")
    detailed_vector_output: ConfigPath | None = Field(
        None, description="Also write the detailed diagram as vector (.svg or .pdf)."
    )
    dpi: int = Field(150, ge=30, le=1200, description="Resolution of raster output.")
    overwrite: bool = Field(False, description="Replace existing figure files.")


class VizConfig(Strict):
    """`segkit viz`: one section per command."""

    static: VizStaticConfig = Field(default_factory=VizStaticConfig, description="`segkit viz static`.")
    gif: VizGifConfig = Field(default_factory=VizGifConfig, description="`segkit viz gif`.")
    app: VizAppConfig = Field(default_factory=VizAppConfig, description="`segkit viz app`.")
    stats: VizStatsConfig = Field(default_factory=VizStatsConfig, description="`segkit viz stats`.")
    arch: VizArchConfig = Field(default_factory=VizArchConfig, description="`segkit viz arch`.")


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
    hd95_penalty: Literal["auto"] | Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        "auto",
        description="HD95 of a missed or spurious lesion in mm: auto = 337 on the 182x218x182 and 374 on the "
        "240x240x155 1 mm grids, else the volume diagonal; or a number (the official 2024 scorer uses 337 everywhere).",
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
    strict: bool = Field(
        False, description="Stop at the first unusable file (bad file, grid, labels, duplicate id); no reports."
    )
    overwrite: bool = Field(False, description="Replace the reports of an earlier segkit eval in the output folder.")
    workers: Workers = 0


class DemoConfig(Strict):
    """`segkit demo`: the whole loop on a synthetic cohort (synth, prepare, splits, train, infer, eval, viz)."""

    output_dir: ConfigPath = Field(Path("outputs/demo"), description="Folder for everything the demo writes.")
    fast: bool = Field(False, description="A smoke run in well under a minute (every step, too short to learn).")
    overwrite: bool = Field(False, description="Replace the output folder of an earlier demo run.")
    cases: int | None = Field(None, ge=5, description="Training cases (default 10; --fast 6).")
    test_cases: int | None = Field(None, ge=1, description="Held-out cases predicted and scored (default 4; --fast 2).")
    shape: int | None = Field(None, ge=32, description="Cube size of the synthetic volumes (default 48; --fast 32).")
    stage1_epochs: int | None = Field(None, ge=0, description="MONAI stage-1 epochs (default 5; --fast 1).")
    stage2_epochs: int | None = Field(None, ge=0, description="MONAI stage-2 epochs (default 45; --fast 1).")
    backend: Literal["monai", "umamba2"] = Field(
        "monai", description="Backend to train: monai (a small SegResNet) or umamba2 (nnU-Net, Mamba2 bottleneck)."
    )
    epochs: int | None = Field(None, ge=1, description="UMamba2 epochs (default: the measured recipe; --fast 1).")
    device: Device = Field("auto", description="Device for training and prediction: auto (CUDA if present), cuda, cpu.")
    seed: int = Field(0, description="Seed of the cohort and of training.")


class SegkitConfig(Strict):
    """A segkit run config: shared settings plus one section per command."""

    version: Literal[1] = Field(1, description="Config format version.")
    dataset: DatasetName = Field(
        "Dataset501_BraTSPostTx",
        description="nnU-Net dataset: DatasetNNN_Name, or its number (501, Dataset501) when it exists.",
    )
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
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    """Dotted key -> the layer that set it (environment, the YAML file, --set, flag); see `load.source_of`."""
    _backend_yaml: dict[str, tuple[Path, dict[str, Any]]] = PrivateAttr(default_factory=dict)
    """Per backend: the YAML file and the keys it set (`segkit.config.load.backend_options` anchors them)."""
    stats: StatsConfig = Field(default_factory=StatsConfig, description="`segkit data stats` and `segkit viz stats`.")
    viz: VizConfig = Field(default_factory=VizConfig, description="`segkit viz` commands.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="`segkit eval`.")
    demo: DemoConfig = Field(default_factory=DemoConfig, description="`segkit demo`.")


def field_description(model: type[BaseModel], name: str) -> str:
    """The `description` of a field, for CLI help texts (one definition of every option)."""
    info = model.model_fields[name]
    return info.description or ""
