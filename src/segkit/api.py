"""The segkit library API: one function per command, usable from a notebook without the CLI.

Each function takes a resolved `SegkitConfig` (see `segkit.config.load_config`) and an optional
`ProgressSink`, does the work and returns a result object; it never prints or exits. Heavy modules are
imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segkit import __version__
from segkit.conventions import DEFAULT_DATA_ROOTS, DEFAULT_TEST_ROOTS, DEFAULT_TRAIN_ROOTS
from segkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from segkit.config.models import SegkitConfig
    from segkit.data.check import CheckReport
    from segkit.data.nnunet_dataset import PrepareResult
    from segkit.data.splits import SplitsResult
    from segkit.data.synth import SynthResult
    from segkit.evaluation.reports import EvalResult
    from segkit.progress import ProgressSink


def _roots_or_defaults(given: list[Path] | None, defaults: tuple[str, ...]) -> list[Path]:
    """The roots given explicitly (which must exist), else the default roots that exist."""
    from segkit.data.cases import existing_roots

    if given is not None:
        return list(given)
    return existing_roots(defaults)


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
        start=cfg.start,
        overwrite=cfg.overwrite,
        progress=progress,
        version=__version__,
    )


def check(config: SegkitConfig, *, progress: ProgressSink | None = None) -> CheckReport:
    """Validate BraTS case folders (`segkit data check`)."""
    from segkit.data.check import check_roots

    cfg = config.check
    roots = _roots_or_defaults(cfg.roots, DEFAULT_DATA_ROOTS)
    if not roots:
        msg = f"no data roots found (looked for {', '.join(DEFAULT_DATA_ROOTS)} in {Path.cwd()})"
        raise DataError(msg, hint="pass the roots to check: segkit data check ROOT [ROOT ...]")
    return check_roots(
        roots,
        require_labels=cfg.require_labels,
        affine_tolerance=cfg.affine_tolerance,
        workers=cfg.workers,
        progress=progress,
    )


def prepare(config: SegkitConfig, *, progress: ProgressSink | None = None) -> PrepareResult:
    """Export BraTS case folders to an nnU-Net v2 raw dataset (`segkit data prepare`)."""
    from segkit.data.nnunet_dataset import prepare_dataset

    cfg = config.prepare
    return prepare_dataset(
        dataset=config.dataset,
        nnunet_raw=config.nnunet.raw,
        train_sources=_roots_or_defaults(cfg.train_sources, DEFAULT_TRAIN_ROOTS),
        test_sources=_roots_or_defaults(cfg.test_sources, DEFAULT_TEST_ROOTS),
        clean=cfg.clean,
        require_test_labels=cfg.require_test_labels,
        verify=cfg.verify,
        workers=cfg.workers,
        progress=progress,
        version=__version__,
    )


def splits(config: SegkitConfig) -> SplitsResult:
    """Write nnU-Net's cross-validation folds for a prepared dataset (`segkit data splits`).

    The case identifiers are those of ``imagesTr`` in the raw dataset, i.e. exactly the identifiers
    nnU-Net's trainer would split.
    """
    from segkit.data.nnunet_dataset import dataset_case_ids
    from segkit.data.splits import write_splits

    raw_dir = config.nnunet.dataset_dir("raw", config.dataset)
    if not raw_dir.is_dir():
        msg = f"dataset {config.dataset} is not prepared (no folder {raw_dir})"
        raise DataError(msg, hint="run `segkit data prepare` first")
    ids = dataset_case_ids(raw_dir)
    cfg = config.splits
    dest = cfg.output or config.nnunet.dataset_dir("preprocessed", config.dataset) / "splits_final.json"
    return write_splits(ids, dest, n_folds=cfg.folds, seed=cfg.seed, overwrite=cfg.overwrite)


def evaluate(config: SegkitConfig, *, progress: ProgressSink | None = None) -> EvalResult:
    """Score a prediction folder against a reference and write the reports (`segkit eval`).

    Reads ``config.eval``: ``gt`` and ``pred`` are required; the reports go to ``output_dir`` (or the
    explicit ``*_output`` paths). Usable from other commands (``segkit infer --run-evaluation``) by
    building the config with ``eval.gt``, ``eval.pred`` and ``eval.output_dir`` set.

    Raises:
        ConfigError: Missing folders in the config, invalid settings.
        DataError: Unusable inputs (with ``eval.strict``, any unusable case).
        OutputError: The output folder cannot be written.
    """
    from segkit.evaluation.reports import EvalResult, ReportPaths, summary, write_reports
    from segkit.evaluation.run import EvalSettings, evaluate_folders
    from segkit.io import ensure_writable_dir

    cfg = config.eval
    if cfg.gt is None or cfg.pred is None:
        missing = "reference folder" if cfg.gt is None else "prediction folder"
        msg = f"no {missing} given"
        raise ConfigError(msg, hint="segkit eval GT PRED, or set eval.gt and eval.pred in the run config")
    settings = EvalSettings(
        protocol=cfg.protocol,
        labels=tuple(dict.fromkeys(cfg.labels)),
        omit_aggregates=cfg.omit_aggregates,
        penalty=None if cfg.hd95_penalty == "auto" else float(cfg.hd95_penalty),
        affine_tolerance=cfg.affine_tolerance,
        workers=cfg.workers,
        strict=cfg.strict,
        nnunet_cmd=None if cfg.skip_nnunet else cfg.nnunet_cmd,
    )
    paths = ReportPaths.in_folder(
        cfg.output_dir,
        lesion=cfg.lesion_output,
        nnunet=cfg.nnunet_output,
        combined=cfg.combined_output,
        figure=cfg.figure,
    )
    # Fail before the (long) scoring when a report cannot be written.
    for folder in {paths.lesion.parent, paths.nnunet.parent, paths.combined.parent, paths.csv.parent}:
        ensure_writable_dir(folder)
    evaluation = evaluate_folders(cfg.gt, cfg.pred, settings, progress=progress)
    write_reports(evaluation, paths, version=__version__, pretty=cfg.pretty)
    return EvalResult(evaluation, paths, summary(evaluation, paths))
