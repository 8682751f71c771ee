"""The segkit library API: one function per command, usable from a notebook without the CLI.

Each function takes a resolved `SegkitConfig` (see `segkit.config.load_config`) and an optional
`ProgressSink`, does the work and returns a result object; it never prints or exits. Heavy modules are
imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit import __version__
from segkit.conventions import DEFAULT_DATA_ROOTS, DEFAULT_TEST_ROOTS, DEFAULT_TRAIN_ROOTS
from segkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    import dash

    from segkit.backends.base import Backend, DatasetRef, Fold, PredictResult, PrepareResult, TrainResult
    from segkit.config.models import SegkitConfig
    from segkit.data.check import CheckReport
    from segkit.data.nnunet_dataset import PrepareResult as ExportResult
    from segkit.data.splits import SplitsResult
    from segkit.data.stats import StatsResult
    from segkit.data.synth import SynthResult
    from segkit.evaluation.reports import EvalResult
    from segkit.progress import ProgressSink
    from segkit.viz.arch_figures import ArchResult
    from segkit.viz.gif import GifOutcome
    from segkit.viz.static import StaticResult


def _roots_or_defaults(given: list[Path] | None, defaults: tuple[str, ...], *, hint: str | None = None) -> list[Path]:
    """The roots given explicitly (which must exist), else the default roots that exist.

    Raises:
        DataError: With a `hint` (how to pass roots), when there is no root at all.
    """
    from segkit.data.cases import existing_roots

    roots = list(given) if given is not None else existing_roots(defaults)
    if not roots and hint is not None:
        msg = f"no data roots found (looked for {', '.join(defaults)} in {Path.cwd()})"
        raise DataError(msg, hint=hint)
    return roots


def synth(config: SegkitConfig, *, progress: ProgressSink | None = None) -> SynthResult:
    """Write a synthetic BraTS post-treatment cohort (`segkit data synth`)."""
    from segkit.data.synth import write_cohort

    cfg = config.synth
    if cfg.output is None:
        msg = "no output folder given"
        raise ConfigError(msg, hint="segkit data synth OUT, or set synth.output in the run config")
    return write_cohort(
        cfg.output,
        cases=cfg.cases,
        shape=cfg.shape,
        spacing=cfg.spacing,
        seed=cfg.seed,
        unlabelled=cfg.unlabelled,
        without_labels=cfg.without_labels,
        start=cfg.start,
        overwrite=cfg.overwrite,
        progress=progress,
        version=__version__,
    )


def check(config: SegkitConfig, *, progress: ProgressSink | None = None) -> CheckReport:
    """Validate BraTS case folders (`segkit data check`)."""
    from segkit.data.check import check_roots
    from segkit.data.layouts import get_layout

    cfg = config.check
    roots = _roots_or_defaults(
        cfg.roots, DEFAULT_DATA_ROOTS, hint="pass the roots to check: segkit data check ROOT [ROOT ...]"
    )
    return check_roots(
        roots,
        require_labels=cfg.require_labels,
        affine_tolerance=cfg.affine_tolerance,
        workers=cfg.workers,
        progress=progress,
        layout=get_layout(cfg.layout),
    )


def prepare(config: SegkitConfig, *, progress: ProgressSink | None = None) -> ExportResult:
    """Export BraTS case folders to an nnU-Net v2 raw dataset (`segkit data prepare`)."""
    from segkit.data.layouts import get_layout
    from segkit.data.nnunet_dataset import prepare_dataset

    cfg = config.prepare
    train = _roots_or_defaults(cfg.train_sources, DEFAULT_TRAIN_ROOTS)
    test = _roots_or_defaults(cfg.test_sources, DEFAULT_TEST_ROOTS)
    if cfg.test_sources is None:
        # The default test root is no test root when it is also given for training (--train-sources validation_data).
        trained = {Path(r).resolve() for r in train}
        test = [r for r in test if Path(r).resolve() not in trained]
    return prepare_dataset(
        dataset=config.dataset,
        nnunet_raw=config.nnunet.raw,
        train_sources=train,
        test_sources=test,
        unlabelled_sources=list(cfg.unlabelled_sources or ()),
        clean=cfg.clean,
        force=cfg.force,
        layout=get_layout(cfg.layout),
        require_test_labels=cfg.require_test_labels,
        verify=cfg.verify,
        workers=cfg.workers,
        progress=progress,
        version=__version__,
        regions=cfg.regions,
    )


def splits(config: SegkitConfig) -> SplitsResult:
    """Write nnU-Net's cross-validation folds for a prepared dataset (`segkit data splits`).

    The case identifiers are those of ``imagesTr`` in the raw dataset, i.e. exactly the identifiers
    nnU-Net's trainer would split; unlabelled cases (``prepare --unlabelled-sources``) are left out of
    ``train``/``val`` and listed in each fold's ``"unlabeled"``.
    """
    from segkit.data.nnunet_dataset import write_dataset_splits

    raw_dir = config.nnunet.dataset_dir("raw", config.dataset)
    if not raw_dir.is_dir():
        msg = f"dataset {config.dataset} is not prepared (no folder {raw_dir})"
        raise DataError(msg, hint="run `segkit data prepare` first")
    cfg = config.splits
    dest = cfg.output or config.nnunet.dataset_dir("preprocessed", config.dataset) / "splits_final.json"
    return write_dataset_splits(raw_dir, dest, n_folds=cfg.folds, seed=cfg.seed, overwrite=cfg.overwrite)


# --------------------------------------------------------------------------- backends


def dataset_ref(config: SegkitConfig) -> DatasetRef:
    """The dataset of a run config, as backends see it."""
    from segkit.backends.base import DatasetRef

    paths = config.nnunet
    return DatasetRef(config.dataset, paths.raw, paths.preprocessed, paths.results)


def backend_and_options(
    config: SegkitConfig, name: str, *, available: Mapping[str, EntryPoint] | None = None
) -> tuple[Backend, Any]:
    """Load backend `name` and validate its ``backends.<name>`` options.

    Raises:
        BackendNotFoundError: Unknown name (with a suggestion).
        BackendError: The backend's framework is not installed.
        ConfigError: Invalid options, named ``backends.<name>.<key>``.
    """
    from segkit.backends.registry import load_backend
    from segkit.config.load import backend_options

    backend = load_backend(name, available=available)
    options = backend_options(config, name, backend.Options)
    return backend, options


def plan(config: SegkitConfig, *, progress: ProgressSink | None = None) -> PrepareResult:
    """Plan and preprocess the dataset for a backend (`segkit data plan`; nnU-Net's plan_and_preprocess).

    A dataset with unlabelled cases gets its ``splits_final.json`` (labelled folds plus ``"unlabeled"``)
    right after preprocessing, before nnU-Net's first training could write one over every case; an
    existing file that would let placeholder labels into train/val is refused before any work.
    """
    from segkit.backends.base import PrepareRequest
    from segkit.progress import NullProgress

    sink = progress or NullProgress()
    cfg = config.plan
    backend, options = backend_and_options(config, cfg.backend)
    if not backend.capabilities.prepare:
        msg = f"backend {cfg.backend!r} needs no planning"
        raise ConfigError(msg)
    unlabelled = _check_unlabelled_splits(config)
    request = PrepareRequest(
        dataset=dataset_ref(config),
        configurations=tuple(cfg.configurations or ()),
        verify_dataset_integrity=cfg.verify_dataset_integrity,
        num_processes=cfg.num_processes,
        clean=cfg.clean,
        preprocess=cfg.preprocess,
        gpu_memory_target_gb=cfg.gpu_memory_target,
    )
    result = backend.prepare(request, options, progress=sink)
    if unlabelled:
        _write_unlabelled_splits(config, sink)
    return result


def _check_unlabelled_splits(config: SegkitConfig) -> list[str]:
    """The dataset's unlabelled case ids, after refusing a splits file that would train on them."""
    from segkit.data.nnunet_dataset import check_dataset_splits

    raw_dir = config.nnunet.dataset_dir("raw", config.dataset)
    if not (raw_dir / "dataset.json").is_file():
        return []  # the backend's own check says what is missing
    splits_file = config.nnunet.dataset_dir("preprocessed", config.dataset) / "splits_final.json"
    return check_dataset_splits(raw_dir, splits_file)


def _write_unlabelled_splits(config: SegkitConfig, progress: ProgressSink) -> None:
    """Write the folds of a dataset with unlabelled cases (kept when already right; too few labelled: a note)."""
    from segkit.data.nnunet_dataset import ensure_dataset_splits

    raw_dir = config.nnunet.dataset_dir("raw", config.dataset)
    dest = config.nnunet.dataset_dir("preprocessed", config.dataset) / "splits_final.json"
    try:
        result = ensure_dataset_splits(raw_dir, dest, n_folds=config.splits.folds, seed=config.splits.seed)
    except DataError as err:
        # Too few labelled cases for the folds: --fold all still trains (its trainer keeps the unlabelled out).
        progress.log(f"no splits_final.json written: {err}")
        return
    if result.status != "unchanged":
        progress.log(f"wrote {dest} (labelled folds, plus the unlabelled cases under 'unlabeled')")


def _expand_folds(backend: Backend, dataset: DatasetRef, options: Any, folds: tuple[Fold, ...]) -> tuple[Fold, ...]:
    """Replace ``all`` by the backend's folds when ``all`` means "every fold" for it."""
    if "all" not in folds or backend.capabilities.fold_all != "every_fold":
        return folds
    indices = tuple(backend.fold_indices(dataset, options))
    out: list[Fold] = []
    for fold in folds:
        for f in indices if fold == "all" else (fold,):
            if f not in out:
                out.append(f)
    return tuple(out)


def train(config: SegkitConfig, *, progress: ProgressSink | None = None) -> list[TrainResult]:
    """Train the configured backend on each requested fold (`segkit train`).

    Every fold is checked before the first one starts, so a bad fold fails in seconds, not hours.
    """
    from segkit.backends._device import resolve_device
    from segkit.backends.base import TrainRequest, folds_of
    from segkit.config.load import dump_config
    from segkit.progress import NullProgress

    cfg = config.train
    backend, options = backend_and_options(config, cfg.backend)
    if not backend.capabilities.train:
        msg = f"backend {cfg.backend!r} cannot train"
        raise ConfigError(msg)
    device = resolve_device(cfg.device, supported=backend.capabilities.devices)
    dataset = dataset_ref(config)
    folds = _expand_folds(backend, dataset, options, folds_of(cfg.fold))
    requests = [
        TrainRequest(
            dataset=dataset, fold=fold, device=device, config_yaml=dump_config(config, backends={cfg.backend: options})
        )
        for fold in folds
    ]
    for request in requests:
        backend.check(request, options)
    sink = progress or NullProgress()
    return [backend.train(request, options, progress=sink) for request in requests]


@dataclass(frozen=True)
class InferResult:
    """One prediction folder of `predict`, and its scores when ``--run-evaluation`` was asked for.

    Attributes:
        prediction: What the backend wrote.
        folds: The folds the predictions come from.
        evaluation: The reports of ``--run-evaluation`` (None without it).
    """

    prediction: PredictResult
    folds: tuple[Fold, ...]
    evaluation: EvalResult | None = None

    @property
    def output_dir(self) -> Path:
        """The prediction folder."""
        return self.prediction.output_dir

    @property
    def files(self) -> tuple[Path, ...]:
        """The ``<case>.nii.gz`` files written."""
        return self.prediction.files

    @property
    def skipped(self) -> tuple[str, ...]:
        """Case ids whose existing prediction was kept."""
        return self.prediction.skipped


def predict(config: SegkitConfig, *, progress: ProgressSink | None = None) -> list[InferResult]:
    """Predict label maps with a trained backend (`segkit infer`), optionally scoring them afterwards.

    Several folds are averaged into one prediction (``--ensemble``, or implicitly for backends such as
    nnU-Net), unless the output folder contains ``{fold}``: then each fold predicts into its own folder,
    and the reports of ``--run-evaluation`` go to one folder per fold too (``{fold}`` in
    ``--evaluation-output``, else ``<evaluation-output>/fold<k>``; default ``<predictions>/evaluation``).
    Returns one result per output folder.
    """
    from segkit.backends._device import resolve_device
    from segkit.backends.base import PredictRequest, fill_fold, folds_of
    from segkit.data.inputs import resolve_inputs
    from segkit.data.nnunet_dataset import read_dataset_json
    from segkit.io import refuse_inside
    from segkit.progress import NullProgress

    cfg = config.infer
    backend, options = backend_and_options(config, cfg.backend)
    if not backend.capabilities.predict:
        msg = f"backend {cfg.backend!r} cannot predict"
        raise ConfigError(msg)
    if cfg.run_evaluation:
        _require_evaluation(config)
    dataset = dataset_ref(config)
    channel_names = None
    if dataset.raw_dir.is_dir():
        channel_names = read_dataset_json(dataset.raw_dir).get("channel_names")
    inputs = list(cfg.input) if cfg.input else [dataset.raw_dir / "imagesTs"]
    cases = tuple(resolve_inputs(inputs, channel_names=channel_names))
    folds = folds_of(cfg.fold) if cfg.fold is not None else _trained_folds(backend, config, options)
    folds = _expand_folds(backend, dataset, options, folds)
    output = str(cfg.output or Path("outputs") / "predictions" / cfg.backend)
    device = resolve_device(cfg.device, supported=backend.capabilities.devices)
    groups: list[tuple[tuple[Fold, ...], Path]]
    if "{fold}" in output:
        groups = [((fold,), Path(fill_fold(output, fold))) for fold in folds]
    else:
        if len(folds) > 1:
            if not backend.capabilities.ensemble:
                msg = f"backend {cfg.backend!r} cannot ensemble folds; pass one --fold or put {{fold}} in --output-dir"
                raise ConfigError(msg)
            if not (cfg.ensemble or backend.capabilities.implicit_ensemble):
                msg = f"{len(folds)} folds but no '{{fold}}' in the output folder {output}"
                raise ConfigError(msg, hint="put {fold} in --output-dir (and --checkpoint) or pass --ensemble")
        groups = [(folds, Path(output))]
    for _, out in groups:
        refuse_inside(out, inputs, what="input folder", hint="choose another --output-dir")
    reports = [_evaluation_output(config, group, out, per_fold=len(groups) > 1) for group, out in groups]
    requests = [
        PredictRequest(
            dataset=dataset,
            cases=cases,
            output_dir=out,
            folds=group,
            device=device,
            save_probabilities=cfg.save_probabilities,
            overwrite=not cfg.skip_existing,
        )
        for group, out in groups
    ]
    for request in requests:
        backend.check(request, options)
    sink = progress or NullProgress()
    results = []
    for request, report_dir in zip(requests, reports, strict=True):
        prediction = backend.predict(request, options, progress=sink)
        evaluation = None
        if cfg.run_evaluation:
            evaluation = _evaluate_predictions(config, prediction.output_dir, report_dir, progress)
        results.append(InferResult(prediction, request.folds, evaluation))
    return results


def _trained_folds(backend: Backend, config: SegkitConfig, options: Any) -> tuple[Fold, ...]:
    """Folds with a trained model, as the backend lists them.

    Raises:
        DataError: No trained fold.
    """
    folds = tuple(backend.trained_folds(dataset_ref(config), options))
    if not folds:
        msg = f"no trained folds found for backend {config.infer.backend!r} and dataset {config.dataset}"
        raise DataError(msg, hint="train first, or pass --fold")
    return folds


def _require_evaluation(config: SegkitConfig) -> None:
    """Refuse ``--run-evaluation`` before any prediction when it cannot run afterwards."""
    gt = config.infer.ground_truth
    if gt is None:
        msg = "--run-evaluation needs --ground-truth"
        raise ConfigError(msg)
    if not Path(gt).is_dir():
        msg = f"{gt}: ground-truth folder not found"
        raise DataError(msg)


def _evaluation_output(config: SegkitConfig, folds: tuple[Fold, ...], predictions: Path, *, per_fold: bool) -> Path:
    """The report folder of one prediction folder (see `predict`).

    Raises:
        ConfigError: ``{fold}`` in ``--evaluation-output`` for an ensemble of several folds.
    """
    from segkit.backends.base import fill_fold

    output = config.infer.evaluation_output
    if output is None:
        # Beside the predictions, not inside: segkit never writes into a folder it reads.
        return predictions.with_name(f"{predictions.name}-evaluation")
    if "{fold}" in str(output):
        if len(folds) != 1:
            msg = f"--evaluation-output {output} has {{fold}} but the prediction ensembles folds {folds}"
            raise ConfigError(msg, hint="put {fold} in --output-dir too, or drop it from --evaluation-output")
        return Path(fill_fold(output, folds[0]))
    # One report folder per fold, so that a later fold's reports never replace an earlier fold's.
    return Path(output) / f"fold{folds[0]}" if per_fold else Path(output)


def _evaluate_predictions(
    config: SegkitConfig, predictions: Path, output: Path, progress: ProgressSink | None
) -> EvalResult:
    """Score one prediction folder after ``segkit infer --run-evaluation``."""
    cfg = config.infer
    # The predictions were just (re)made, so their earlier evaluation is replaced.
    update = {"gt": cfg.ground_truth, "pred": predictions, "output_dir": output, "overwrite": True}
    eval_cfg = config.eval.model_copy(update=update)
    return evaluate(config.model_copy(update={"eval": eval_cfg}), progress=progress)


# --- visualisation (segkit viz) ---------------------------------------------------------------------


def viz_static(config: SegkitConfig) -> StaticResult:
    """Write (and optionally show) a figure of one case (`segkit viz static`).

    The output defaults to ``outputs/figures/<case>_<layout>.png``.
    """
    from segkit.io import refuse_inside
    from segkit.viz.static import render_static

    cfg = config.viz.static
    if cfg.case_dir is None:
        msg = "no case folder given"
        raise ConfigError(msg, hint="segkit viz static --case-dir training_data/BraTS-GLI-00001-000")
    output = cfg.output or Path("outputs/figures") / f"{Path(cfg.case_dir).name}_{cfg.layout}.png"
    refuse_inside(output, [cfg.case_dir], what="case folder", hint="choose another -o")
    return render_static(
        cfg.case_dir,
        output=output,
        layout=cfg.layout,
        axis=cfg.axis,
        fraction=cfg.fraction,
        index=cfg.index,
        modality=cfg.modality,
        indices=cfg.indices,
        overlay=cfg.overlay,
        style=cfg.style,
        alpha=cfg.alpha,
        prediction=cfg.pred,
        percentiles=cfg.percentiles,
        dpi=cfg.dpi,
        overwrite=cfg.overwrite,
        show=cfg.show,
    )


def viz_gif(config: SegkitConfig, *, progress: ProgressSink | None = None) -> list[GifOutcome]:
    """Write slice-sweep GIFs of one case or a whole root (`segkit viz gif`)."""
    from segkit.viz.gif import make_gifs

    cfg = config.viz.gif
    root = cfg.root
    if root is None:
        root = _roots_or_defaults(None, DEFAULT_DATA_ROOTS, hint="pass --root DIR")[0]
    return make_gifs(
        root,
        cfg.output_dir,
        case=cfg.case,
        max_cases=cfg.max_cases,
        modality=cfg.modality,
        axis=cfg.axis,
        step=cfg.step,
        overlay=cfg.overlay,
        style=cfg.style,
        alpha=cfg.alpha,
        frame_ms=cfg.frame_ms,
        percentiles=cfg.percentiles,
        overwrite=cfg.overwrite,
        workers=cfg.workers,
        progress=progress,
    )


def data_stats(config: SegkitConfig, *, progress: ProgressSink | None = None) -> StatsResult:
    """Cohort statistics of the data roots, from the cache when the files are unchanged (`segkit data stats`)."""
    from segkit.data.stats import dataset_stats

    cfg = config.stats
    roots = _roots_or_defaults(cfg.roots, DEFAULT_DATA_ROOTS, hint="pass the roots: segkit data stats ROOT [ROOT ...]")
    return dataset_stats(
        roots,
        cache_dir=cfg.cache_dir if cfg.cache else None,
        recompute=cfg.recompute,
        bins=cfg.bins,
        workers=cfg.workers,
        progress=progress,
    )


def _viz_roots(given: list[Path] | None) -> list[Path]:
    return _roots_or_defaults(given, DEFAULT_DATA_ROOTS, hint="pass --data-root DIR (repeatable)")


def viz_app(config: SegkitConfig) -> dash.Dash:
    """Build the interactive slice viewer over the data roots (`segkit viz app`); serve it with `app.run`."""
    from segkit.viz.app import create_app
    from segkit.viz.viewer import CaseIndex

    cfg = config.viz.app
    index = CaseIndex.build(_viz_roots(cfg.data_roots), cfg.pred_dir)
    return create_app(index, cache_cases=cfg.cache_cases, percentiles=cfg.percentiles)


def viz_stats_app(config: SegkitConfig) -> dash.Dash:
    """Build the statistics inspector over the data roots (`segkit viz stats`); serve it with `app.run`."""
    from segkit.viz.stats_app import StatsSettings, create_stats_app

    cfg = config.stats
    settings = StatsSettings(tuple(_viz_roots(cfg.roots)), cfg.cache_dir, bins=cfg.bins, workers=cfg.workers)
    return create_stats_app(settings)


def viz_arch(config: SegkitConfig) -> ArchResult:
    """Describe and draw the network of an nnU-Net plans configuration (`segkit viz arch`).

    The plans are found from ``viz.arch.plans`` (a file, a folder, a dataset id or name; default: the
    run config's dataset) under ``nnunet.results`` and ``nnunet.preprocessed``.
    """
    from segkit.viz.arch_figures import render_architecture

    cfg = config.viz.arch
    return render_architecture(
        cfg.plans or config.dataset,
        configuration=cfg.configuration,
        search_roots=[config.nnunet.results, config.nnunet.preprocessed],
        output=cfg.output,
        detailed_output=cfg.detailed_output,
        vector_output=cfg.vector_output,
        detailed_vector_output=cfg.detailed_vector_output,
        dpi=cfg.dpi,
        overwrite=cfg.overwrite,
    )


def evaluate(config: SegkitConfig, *, progress: ProgressSink | None = None) -> EvalResult:
    """Score a prediction folder against a reference and write the reports (`segkit eval`).

    Reads ``config.eval``: ``gt`` and ``pred`` are required; the reports go to ``output_dir`` (or the
    explicit ``*_output`` paths). Usable from other commands (``segkit infer --run-evaluation``) by
    building the config with ``eval.gt``, ``eval.pred`` and ``eval.output_dir`` set.

    Raises:
        ConfigError: Missing folders in the config, invalid settings.
        DataError: Unusable inputs (with ``eval.strict``, any unusable file). `UnscoredReferencesError` (a
            DataError carrying the result) when a reference case could not be scored: the reports are written.
        OutputError: The output folder cannot be written, overlaps GT or PRED, or holds earlier reports
            (without ``eval.overwrite``).
    """
    from segkit.evaluation.reports import EvalResult, ReportPaths, UnscoredReferencesError, summary, write_reports
    from segkit.evaluation.run import evaluate_folders
    from segkit.io import output_dirs

    cfg = config.eval
    if cfg.gt is None or cfg.pred is None:
        missing = "reference folder" if cfg.gt is None else "prediction folder"
        msg = f"no {missing} given"
        raise ConfigError(msg, hint="segkit eval GT PRED, or set eval.gt and eval.pred in the run config")
    paths = ReportPaths.in_folder(
        cfg.output_dir,
        lesion=cfg.lesion_output,
        nnunet=cfg.nnunet_output,
        combined=cfg.combined_output,
        figure=cfg.figure,
    )
    # Fail before the (long) scoring when a report cannot be written; a failed run leaves no empty folder.
    paths.check(Path(cfg.gt), Path(cfg.pred), overwrite=cfg.overwrite)
    with output_dirs({paths.lesion.parent, paths.nnunet.parent, paths.combined.parent, paths.csv.parent}):
        evaluation = evaluate_folders(cfg.gt, cfg.pred, cfg, progress=progress)
        write_reports(evaluation, paths, version=__version__, pretty=cfg.pretty)
    result = EvalResult(evaluation, paths, summary(evaluation, paths))
    if evaluation.failed:
        raise UnscoredReferencesError(result)
    return result
